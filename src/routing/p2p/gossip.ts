import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import type { Logger } from '../../observability/logger.js'
import {
  CodecError, FrameType, decodeDeltaPayload, decodePush, type DeltaBody, type GoodbyeFrame, type HaveFrame,
  type HeartbeatFrame, type PushFrame, type Statement
} from './codec.js'
import { MAX_CONTROL_FRAME_BYTES, MAX_PUSH_STREAMS_PER_CONNECTION, PUSH_PROTOCOL } from './constants.js'
import type { ContentIndex } from './content-index.js'
import type { P2PNode } from './node.js'
import { PeerLink } from './peer-link.js'
import type { RecordAuth, Refusals } from './record-auth.js'
import type { P2PRouterCounters, P2PRouterHooks } from './types.js'

/** Where the frames gossip does not handle itself go. */
export interface PushHandlers {
  onHeartbeat(frame: HeartbeatFrame, from: string): void
  /** A goodbye frame (unverified): `frame` is the bytes to relay once it checks out. */
  onGoodbye(goodbye: GoodbyeFrame, frame: Uint8Array, from: string): void
  onHave(frame: HaveFrame, from: string): void
  /** A verified delta this node cannot apply yet (its base is missing): pull from `from`. */
  onGap(origin: string, epoch: number, seq: number, from: string): void
  /** A verified statement this node signed itself (an earlier run of it). */
  onOwnStatement(statement: Statement): void
  /** This node's current epoch: only its own statements from a later one are news. */
  ownEpoch(): number
}

export interface GossipComponents {
  node: P2PNode
  index: ContentIndex
  auth: RecordAuth
  refusals: Refusals
  log: Logger
  counters: P2PRouterCounters
  handlers: PushHandlers
}

export interface GossipInit {
  hooks?: P2PRouterHooks
}

/**
 * The push side of the index: one outbound PeerLink per connected peer for broadcasts, and the
 * inbound push streams. A delta is verified before anything else looks at it (the origin's
 * signature over the change), then applied and relayed as the very bytes that arrived, so every
 * node checks the origin's own signature and no relay can alter what it passes on.
 */
export class Gossip {
  readonly #c: GossipComponents
  readonly #init: GossipInit
  readonly #links = new Map<string, PeerLink>()
  #isOpen = false

  constructor (components: GossipComponents, init: GossipInit = {}) {
    this.#c = components
    this.#init = init
  }

  async start (): Promise<void> {
    // One long-lived stream per direction and peer, and a new one when a link is reopened: a few
    // per connection, each able to buffer one frame, is all an honest peer uses.
    await this.#c.node.libp2p.handle(PUSH_PROTOCOL, (stream, connection) => this.#serve(stream, connection), { maxInboundStreams: MAX_PUSH_STREAMS_PER_CONNECTION })
    this.#isOpen = true
  }

  /** Stops sending; queued frames are dropped. */
  stop (): void {
    this.#isOpen = false
    for (const link of this.#links.values()) link.close()
    this.#links.clear()
  }

  /** Queues `frame` for every connected peer but `except`. */
  broadcast (frame: Uint8Array, except?: string): void {
    if (!this.#isOpen) return
    for (const peer of this.#c.node.peers()) {
      const id = peer.toString()
      if (id === except) continue
      this.#link(peer).enqueue(frame)
      this.#c.counters.pushesOut++
    }
  }

  /** Resolves once everything queued so far was written (or dropped). */
  async whenIdle (): Promise<void> {
    await Promise.all([...this.#links.values()].map(async (l) => { await l.whenIdle() }))
  }

  /** The peer went away: its link goes with it. */
  dropLink (peer: string): void {
    this.#links.get(peer)?.close()
    this.#links.delete(peer)
  }

  #link (peer: PeerId): PeerLink {
    const id = peer.toString()
    let link = this.#links.get(id)
    if (link === undefined) {
      link = new PeerLink({
        log: this.#c.log,
        connection: () => this.#c.node.connection(id),
        onDropped: (n) => { this.#c.counters.pushesDropped += n }
      }, peer)
      this.#links.set(id, link)
    }
    return link
  }

  async #serve (stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString()
    // Push frames are small (MAX_CONTROL_FRAME_BYTES); the read buffer is set to match, so a peer
    // can make this stream hold one such frame and no more.
    const lp = lpStream(stream, { maxDataLength: MAX_CONTROL_FRAME_BYTES, maxBufferSize: MAX_CONTROL_FRAME_BYTES + 16 })
    try {
      for (;;) {
        const frame = (await lp.read()).subarray()
        this.#c.counters.pushesIn++
        this.#onFrame(frame, from)
      }
    } catch (err) {
      if (isOversized(err)) this.#c.refusals.refuse('oversized', from, { what: 'push frame longer than the limit', err })
      // Otherwise the usual end: the peer closed the stream or the connection went away.
      if (stream.status === 'open') {
        this.#c.log.debug({ peer: from, err }, 'push stream ended')
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      }
    }
  }

  #onFrame (frame: Uint8Array, from: string): void {
    let m: PushFrame
    try {
      m = decodePush(frame)
    } catch (err) {
      this.#c.refusals.refuse('malformed', from, { what: 'push frame does not decode', err })
      return
    }
    if (this.#init.hooks?.dropInbound?.(m, from) === true) return
    switch (m.type) {
      case FrameType.Delta:
        this.#onDelta(m.statement, frame, from)
        return
      case FrameType.Heartbeat:
        this.#c.handlers.onHeartbeat(m, from)
        return
      case FrameType.Goodbye:
        this.#c.handlers.onGoodbye(m, frame, from)
        return
      case FrameType.Have:
        this.#c.handlers.onHave(m, from)
    }
  }

  #onDelta (s: Statement, frame: Uint8Array, from: string): void {
    const { index, auth, refusals } = this.#c
    // Already applied or relayed (a verified copy came first), or this node's own from this run:
    // the cheap tests before any crypto.
    if (s.origin === auth.selfId ? s.epoch <= this.#c.handlers.ownEpoch() : index.isDeltaSeen(s.origin, s.epoch, s.seq)) return
    if (!auth.verify(s)) {
      refusals.refuse('bad-signature', from, { origin: s.origin, what: `delta ${s.epoch}/${s.seq} is not signed by its origin` })
      return
    }
    let body: DeltaBody
    try {
      body = decodeDeltaPayload(s.payload)
    } catch (err) {
      // Signed by its origin and still unreadable: that origin is broken or hostile.
      refusals.refuse('malformed', from, { origin: s.origin, what: 'signed delta does not decode', err: err instanceof CodecError ? err.message : err })
      return
    }
    if (s.origin === auth.selfId) {
      this.#c.handlers.onOwnStatement(s)
      return
    }
    const now = Date.now()
    if (!index.markDeltaSeen(s.origin, s.epoch, s.seq, now)) return
    const result = index.applyDelta({ origin: s.origin, epoch: s.epoch, seq: s.seq, body }, now)
    if (result === 'gap') {
      this.#c.counters.gaps++
      this.#c.log.debug({ origin: s.origin, seq: s.seq, peer: from }, 'delta gap, pulling')
      this.#c.handlers.onGap(s.origin, s.epoch, s.seq, from)
    }
    // A delta for an origin this node holds no record of is not passed on: deltas of made-up
    // identities (self-signed, so genuine) cost nothing to make and must not flood the cluster;
    // the nodes that hold the record relay it, and this node pulls the record (at most one pull
    // per peer per interval).
    if (result === 'applied' || (result === 'gap' && index.get(s.origin) !== undefined)) this.broadcast(frame, from)
  }
}

export function isOversized (err: unknown): boolean {
  const name = (err as Error | undefined)?.name
  return name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError' || name === 'InvalidMessageLengthError'
}
