/**
 * A peer with the wrong intentions: a real libp2p host with the router's own stack (TCP, Noise,
 * Yamux, optional pre-shared key) that speaks the index protocols by hand. It keeps what honest
 * nodes push to it, answers their pulls with whatever a test puts in `pullAnswer`, and can sign
 * statements with its own key while claiming any origin.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, Stream } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { byteStream, lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { createLogger } from '../../src/observability/logger.js'
import {
  FrameType, StatementKind, compactKey, compareKeys, decodePullResponse, decodePush, encodeHeartbeat, encodePullRequest,
  encodeRecordFrame, encodeRecordPayload, type LivenessEntry, type PullResponseFrame, type Statement, type VersionEntry
} from '../../src/routing/p2p/codec.js'
import { MAX_FRAME_BYTES, PULL_PROTOCOL, PUSH_PROTOCOL } from '../../src/routing/p2p/constants.js'
import { P2PNode } from '../../src/routing/p2p/node.js'
import { RecordAuth } from '../../src/routing/p2p/record-auth.js'

export interface HostilePeerInit {
  host: string
  /** The cluster's PSK file, or '' to come without it. */
  secretPath?: string
}

export interface ReceivedFrame {
  from: string
  frame: Uint8Array
}

export interface HostileRecord {
  registryAddress: string
  addrs: string[]
  keys: string[]
  /** Tag → digest, for pinned tags among `keys`. */
  pins?: Map<string, string>
}

export class HostilePeer {
  readonly node: P2PNode
  readonly peerId: string
  /** Frames honest nodes pushed here, in order. */
  readonly received: ReceivedFrame[] = []
  /** Frames to answer a pull with (a PullEnd is added); by default only an end. */
  pullAnswer: (from: string) => Uint8Array[] = () => []
  /** When set, raw bytes (no framing, no end) to answer a pull with instead, then the stream is left open. */
  pullAnswerRaw: ((from: string) => Uint8Array) | undefined
  readonly epoch = Date.now() * 1000
  seq = 0
  /** Pull requests honest nodes sent here. */
  pullsAnswered = 0
  readonly #streams: Stream[] = []
  readonly #pushLinks = new Map<string, { stream: Stream, lp: { write(data: Uint8Array): Promise<void> } }>()

  private constructor (node: P2PNode) {
    this.node = node
    this.peerId = node.peerId
  }

  static async start (init: HostilePeerInit): Promise<HostilePeer> {
    const log = createLogger({ level: 'silent' })
    const node = await P2PNode.create({ log }, { listen: { host: init.host, port: 0 }, dataDir: '', secretPath: init.secretPath ?? '' })
    const peer = new HostilePeer(node)
    await node.libp2p.handle(PUSH_PROTOCOL, (stream, connection) => { void peer.#takePushes(stream, connection) })
    await node.libp2p.handle(PULL_PROTOCOL, (stream, connection) => { void peer.#answerPull(stream, connection) })
    await node.libp2p.start()
    return peer
  }

  /** Announced addresses, without /p2p. */
  addrs (): string[] {
    return this.node.announcedAddrs()
  }

  async dial (addr: string): Promise<Connection> {
    return await this.node.libp2p.dial(multiaddr(addr), { signal: AbortSignal.timeout(10_000) })
  }

  /** A statement about `origin` signed with this peer's key: genuine when `origin` is this peer, forged otherwise. */
  sign (kind: StatementKind, origin: string, epoch: number, seq: number, payload: Uint8Array): Statement {
    return new RecordAuth({ privateKey: this.node.privateKey }, { selfId: origin }).statement(kind, epoch, seq, payload)
  }

  /** A Record frame (age 0) of `origin` at (epoch, seq) with `record`, signed with this peer's key. */
  recordFrame (origin: string, epoch: number, seq: number, record: HostileRecord): Uint8Array {
    const pins = new Map([...(record.pins ?? [])].map(([t, d]) => [compactKey(t), compactKey(d)]))
    const keys = record.keys.map(compactKey).sort(compareKeys)
    const payload = encodeRecordPayload({ registryAddress: record.registryAddress, addrs: record.addrs, keys, keyCount: keys.length, tagDigests: pins })
    return encodeRecordFrame(0, this.sign(StatementKind.Record, origin, epoch, seq, payload).bytes)
  }

  /** Pushes frames to `peer` on its push stream (one per peer, kept open and reused, as a node's link is). */
  async push (peer: string, frames: Uint8Array[]): Promise<void> {
    let link = this.#pushLinks.get(peer)
    if (link === undefined || link.stream.status !== 'open' || link.stream.writeStatus !== 'writable') {
      const stream = await this.#open(peer, PUSH_PROTOCOL)
      link = { stream, lp: lpStream(stream, { maxDataLength: MAX_FRAME_BYTES * 2 }) }
      this.#pushLinks.set(peer, link)
    }
    for (const f of frames) await link.lp.write(f)
  }

  /** Writes raw bytes (no framing) on a new stream of `protocol` to `peer`. */
  async pushRaw (peer: string, bytes: Uint8Array, protocol: string = PUSH_PROTOCOL): Promise<Stream> {
    const stream = await this.#open(peer, protocol)
    await byteStream(stream).write(bytes)
    return stream
  }

  /**
   * Opens a stream of `protocol` to `peer`, writes `firstFrame` (length-prefixed) if given, and
   * never reads: the stream is paused, so the muxer stops granting the other side window and
   * whatever it writes stalls, as with a peer that never reads its socket. Never closed either.
   */
  async openIdle (peer: string, protocol: string, firstFrame?: Uint8Array): Promise<Stream> {
    const stream = await this.#open(peer, protocol)
    stream.pause()
    if (firstFrame !== undefined) stream.send(Uint8Array.from([...varint(firstFrame.byteLength), ...firstFrame]))
    return stream
  }

  /** "Still here at this version": makes `peer` pull from this one when it lacks that version. */
  async heartbeat (peer: string, others: LivenessEntry[] = [], origin = this.peerId): Promise<void> {
    await this.push(peer, [encodeHeartbeat({ origin, epoch: this.epoch, seq: this.seq, others })])
  }

  /** Pulls from `peer` as a node would, holding `versions` (nothing by default); returns the decoded answer. */
  async pull (peer: string, versions: VersionEntry[] = []): Promise<PullResponseFrame[]> {
    return (await this.pullCounted(peer, versions)).frames
  }

  /**
   * `pull`, also counting the muxer messages the answer came in (yamux data frames, each with its
   * own noise message and a window update back), the end frame included in `frames`.
   */
  async pullCounted (peer: string, versions: VersionEntry[] = []): Promise<{ frames: PullResponseFrame[], framesWithEnd: number, messages: number }> {
    const stream = await this.#open(peer, PULL_PROTOCOL)
    let messages = 0
    stream.addEventListener('message', () => { messages++ })
    const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
    await lp.write(encodePullRequest(versions))
    const frames: PullResponseFrame[] = []
    for (;;) {
      const f = decodePullResponse((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())
      if (f.type === FrameType.PullEnd) break
      frames.push(f)
    }
    await stream.close()
    return { frames, framesWithEnd: frames.length + 1, messages }
  }

  /** Deltas pushed here so far whose origin is `origin`. */
  deltasOf (origin: string): Uint8Array[] {
    return this.received.filter((r) => {
      const m = decodePush(r.frame)
      return m.type === FrameType.Delta && m.statement.origin === origin
    }).map((r) => r.frame)
  }

  async stop (): Promise<void> {
    for (const s of this.#streams) s.abort(new Error('hostile peer stopped'))
    await this.node.libp2p.stop()
  }

  async #open (peer: string, protocol: string): Promise<Stream> {
    const conn = this.node.connection(peer)
    if (conn === undefined) throw new Error(`hostile peer is not connected to ${peer}`)
    const stream = await conn.newStream(protocol, { signal: AbortSignal.timeout(10_000) })
    this.#streams.push(stream)
    return stream
  }

  async #takePushes (stream: Stream, connection: Connection): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
    try {
      for (;;) this.received.push({ from: connection.remotePeer.toString(), frame: (await lp.read()).subarray().slice() })
    } catch {
      // The honest node closed its push link; nothing to learn from how.
    }
  }

  async #answerPull (stream: Stream, connection: Connection): Promise<void> {
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
      await lp.read({ signal: AbortSignal.timeout(10_000) })
      this.pullsAnswered++
      if (this.pullAnswerRaw !== undefined) {
        await byteStream(stream).write(this.pullAnswerRaw(connection.remotePeer.toString()))
        return
      }
      for (const f of this.pullAnswer(connection.remotePeer.toString())) await lp.write(f)
      await lp.write(Uint8Array.of(FrameType.PullEnd))
      await stream.close()
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }
}

/** Identities made on the spot: keys are free, which is what floods of made-up origins rely on. */
export interface MintedIdentity {
  readonly peerId: string
  /** Signs statements as this identity (genuinely: its own key). */
  sign(kind: StatementKind, epoch: number, seq: number, payload: Uint8Array): Statement
}

export async function mintIdentities (n: number): Promise<MintedIdentity[]> {
  const out: MintedIdentity[] = []
  for (let i = 0; i < n; i++) {
    const privateKey = await generateKeyPair('Ed25519')
    const peerId = peerIdFromPrivateKey(privateKey).toString()
    const auth = new RecordAuth({ privateKey }, { selfId: peerId })
    out.push({ peerId, sign: (kind, epoch, seq, payload) => auth.statement(kind, epoch, seq, payload) })
  }
  return out
}

/** An unsigned LEB128 varint, for hand-made length prefixes. */
export function varint (n: number): number[] {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return out
}
