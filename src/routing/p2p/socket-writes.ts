import { Socket } from 'node:net'
import type { MultiaddrConnection } from '@libp2p/interface'

/**
 * One socket write per libp2p send, for small sends.
 *
 * Why: `@libp2p/tcp` (11.0.28, the newest) writes every piece of a send's buffer list with a
 * `socket.write` of its own, and a noise message arrives there in pieces: its 2-byte length, then
 * the ciphertext of the yamux header, of our length prefix and of the payload, then the 16-byte
 * tag. So one heartbeat to one peer was 5 `write` system calls and 5 TCP segments, and the
 * window update the peer sends back 2 (strace of an idle router process in a 30-node cluster: 22
 * writes a second, most of them such runs). With a pre-shared key, pnet already encrypts a send
 * into one buffer, and this changes nothing. A send of up to COALESCE_MAX_BYTES is now copied into one
 * buffer and written once; larger sends (a pull answer's records, a sync) keep libp2p's own path,
 * where the pieces are large and a copy would cost more than the calls it saves.
 *
 * How: libp2p hands the raw TCP connection to the connection gater once it is encrypted
 * (`denyInbound/OutboundEncryptedConnection`), before any muxed stream exists; its `sendData`
 * is replaced there, on that object only. The TCP connection's shape (a net.Socket in `socket`,
 * `sendData(list)` returning `{ sentBytes, canSendMore }`) is libp2p's internal one, so anything
 * else is left alone: a different transport, or a libp2p release that changed it, just runs
 * unpatched (socket-writes.test.ts fails then, so the loss is seen).
 */
export const COALESCE_MAX_BYTES = 64 * 1024

/** A send's buffer list as libp2p passes it (a Uint8ArrayList). */
interface BufferList {
  readonly byteLength: number
  readonly bufs: Uint8Array[]
  subarray(): Uint8Array
}

type SendData = (data: BufferList) => { sentBytes: number, canSendMore: boolean }

const patched = new WeakSet<object>()

/** Makes small sends on `maConn` one socket write each; true when it did (or had already). */
export function coalesceSocketWrites (maConn: MultiaddrConnection | object): boolean {
  if (patched.has(maConn)) return true
  const conn = maConn as { socket?: unknown, sendData?: unknown }
  const socket = conn.socket
  const sendData = conn.sendData
  if (!(socket instanceof Socket) || typeof sendData !== 'function') return false
  const own = sendData as SendData
  conn.sendData = function (this: unknown, data: BufferList) {
    if (data.bufs.length < 2 || data.byteLength > COALESCE_MAX_BYTES) return own.call(this, data)
    const buf = data.subarray()
    return { sentBytes: buf.byteLength, canSendMore: socket.write(buf) }
  } satisfies SendData
  patched.add(maConn)
  return true
}
