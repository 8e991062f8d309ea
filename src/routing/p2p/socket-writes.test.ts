import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import type { Connection, Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { createLogger } from '../../observability/logger.js'
import { P2PNode } from './node.js'
import { COALESCE_MAX_BYTES, coalesceSocketWrites } from './socket-writes.js'

const log = createLogger({ level: 'silent' })
const TEST_PROTOCOL = '/spegel-ts/test/socket-writes/1'

/** A buffer list shaped as libp2p passes one to sendData. */
function list (...bufs: Uint8Array[]): { bufs: Uint8Array[], byteLength: number, subarray: () => Uint8Array } {
  return { bufs, byteLength: bufs.reduce((n, b) => n + b.byteLength, 0), subarray: () => Buffer.concat(bufs) }
}

/** Counts `socket.write` calls from now on. */
function countWrites (socket: net.Socket): () => number {
  let writes = 0
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean
  socket.write = ((...args: unknown[]) => { writes++; return write(...args) }) as typeof socket.write
  return () => writes
}

async function socketPair (): Promise<{ client: net.Socket, server: net.Socket, close: () => void }> {
  const srv = net.createServer()
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  const accepted = once(srv, 'connection')
  const client = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1')
  const [server] = await accepted as [net.Socket]
  return { client, server, close: () => { client.destroy(); server.destroy(); srv.close() } }
}

describe('coalesceSocketWrites', () => {
  it('writes a small send of several pieces once, and leaves large and single-piece sends to libp2p', async () => {
    const { client, server, close } = await socketPair()
    try {
      const ownCalls: number[] = []
      const conn = {
        socket: client,
        sendData (data: ReturnType<typeof list>) {
          ownCalls.push(data.byteLength)
          let canSendMore = true
          for (const b of data.bufs) canSendMore = client.write(b)
          return { sentBytes: data.byteLength, canSendMore }
        }
      }
      assert.equal(coalesceSocketWrites(conn), true)
      assert.equal(coalesceSocketWrites(conn), true, 'a second call is harmless')
      const writes = countWrites(client)
      const received: Buffer[] = []
      server.on('data', (b: Buffer) => received.push(b))

      const small = list(Buffer.from([0, 28]), Buffer.alloc(12, 1), Buffer.alloc(2, 2), Buffer.alloc(100, 3), Buffer.alloc(16, 4))
      assert.deepEqual(conn.sendData(small), { sentBytes: 132, canSendMore: true })
      assert.equal(writes(), 1, 'one write for five pieces')
      assert.deepEqual(ownCalls, [], 'libp2p\'s own sendData was not used')

      conn.sendData(list(Buffer.alloc(50, 5)))
      assert.deepEqual(ownCalls, [50], 'a single piece goes through as it was')
      const large = list(Buffer.alloc(COALESCE_MAX_BYTES, 6), Buffer.alloc(1, 7))
      conn.sendData(large)
      assert.deepEqual(ownCalls, [50, COALESCE_MAX_BYTES + 1], 'a large send is not copied')
      assert.equal(writes(), 4)

      const total = 132 + 50 + COALESCE_MAX_BYTES + 1
      while (received.reduce((n, b) => n + b.byteLength, 0) < total) await once(server, 'data')
      const bytes = Buffer.concat(received)
      assert.deepEqual(bytes, Buffer.concat([small.subarray(), Buffer.alloc(50, 5), large.subarray()]), 'every byte, in order')
    } finally {
      close()
    }
  })

  it('leaves alone what is not a TCP connection of libp2p\'s shape', () => {
    assert.equal(coalesceSocketWrites({}), false)
    assert.equal(coalesceSocketWrites({ socket: {}, sendData: () => ({ sentBytes: 0, canSendMore: true }) }), false)
    assert.equal(coalesceSocketWrites({ socket: new net.Socket() }), false)
  })
})

describe('P2PNode connections', () => {
  const dirs: string[] = []
  after(async () => { await Promise.all(dirs.map(async (d) => { await rm(d, { recursive: true, force: true }) })) })

  for (const withKey of [false, true]) {
    it(`send a small message as one socket write${withKey ? ' through a pre-shared key' : ''}`, async () => {
      let secretPath = ''
      if (withKey) {
        const dir = await mkdtemp(path.join(tmpdir(), 'spegel-psk-'))
        dirs.push(dir)
        secretPath = path.join(dir, 'psk')
        await writeFile(secretPath, `/key/swarm/psk/1.0.0/\n/base16/\n${'ab'.repeat(32)}\n`)
      }
      const a = await P2PNode.create({ log }, { listen: { host: '127.0.0.71', port: 0 }, dataDir: '', secretPath })
      const b = await P2PNode.create({ log }, { listen: { host: '127.0.0.72', port: 0 }, dataDir: '', secretPath })
      const got: Uint8Array[] = []
      let gotBytes = 0
      let arrived: (() => void) | undefined
      await b.libp2p.handle(TEST_PROTOCOL, (stream: Stream) => {
        stream.addEventListener('message', (evt) => {
          const data = evt.data.subarray()
          got.push(data)
          gotBytes += data.byteLength
          arrived?.()
        })
      })
      await a.libp2p.start()
      await b.libp2p.start()
      try {
        const conn: Connection = await a.libp2p.dial(multiaddr(b.multiaddrs()[0]!), { signal: AbortSignal.timeout(10_000) })
        const stream = await conn.newStream(TEST_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
        // The raw TCP connection under the muxer, noise and (with a key) pnet: libp2p's own field.
        const socket = (conn as unknown as { maConn: { socket: net.Socket } }).maConn.socket
        assert.ok(socket instanceof net.Socket, 'libp2p still keeps the TCP connection at conn.maConn.socket')
        // Let the stream's opening settle (multistream-select, the window) before counting.
        await new Promise((resolve) => setTimeout(resolve, 200))
        const writes = countWrites(socket)
        const message = Buffer.alloc(1500, 9)
        const done = new Promise<void>((resolve) => { arrived = () => { if (gotBytes >= message.byteLength) resolve() } })
        // A send runs through yamux, noise (and pnet) down to the socket synchronously, so the
        // writes it makes are the ones during the call; libp2p's own traffic (identify, yamux's
        // pings) on a slow machine falls outside it.
        const before = writes()
        stream.send(message)
        const sent = writes() - before
        await done
        assert.deepEqual(Buffer.concat(got), message)
        // Without the patch this is 4 with no key: noise's length, the ciphertext of yamux's
        // header, of the payload, and the tag, each written on its own. With a key, pnet already
        // hands TCP one buffer per send; the test then checks the patch changes nothing there.
        assert.equal(sent, 1, `${sent} socket writes for one message`)
      } finally {
        await a.stop()
        await b.stop()
      }
    })
  }
})
