import type { Logger } from '../../observability/logger.js'
import { backoffDelayMs } from '../../resilience/backoff.js'
import { encodeHeartbeat, type GoodbyeFrame, type HeartbeatFrame, type LivenessEntry, type Statement, type VersionEntry } from './codec.js'
import type { ContentIndex } from './content-index.js'
import type { P2PNode } from './node.js'
import type { OwnRecord } from './own-record.js'
import type { RecordAuth, Refusals } from './record-auth.js'
import type { P2PRouterCounters } from './types.js'

export interface MembershipComponents {
  node: P2PNode
  index: ContentIndex
  auth: RecordAuth
  refusals: Refusals
  own: OwnRecord
  log: Logger
  counters: P2PRouterCounters
  broadcast(frame: Uint8Array, except?: string): void
  /** Asks `from` for versions this node lacks. */
  wantFrom(v: VersionEntry, from: string, nowMs: number): void
  pull(peer: string): void
  retryWanted(nowMs: number): void
  /** A verified statement this node signed itself (an earlier run of it). */
  onOwnStatement(statement: Statement): void
  /** Origins whose records are gone (goodbye or expiry). */
  onGone(origins: readonly string[]): void
  /** Dials `peer` now, whatever the number of connections; `done(true)` once connected. */
  check(peer: string, done: (isUp: boolean) => void): void
}

export interface MembershipInit {
  heartbeatIntervalMs: number
  expiryMs: number
}

/**
 * Who is in the cluster: heartbeats out and in, the expiry sweep, goodbyes.
 *
 * What a heartbeat may claim. It travels one hop and is never relayed, so its own fields are
 * authenticated by the connection (the handshake proved the peer id; a heartbeat whose origin is
 * not the connection's peer is refused). Its entries about other nodes are hearsay and are used
 * only as hints that cannot change a record: "I heard of X at version v, n ms ago" may extend the
 * liveness of a record this node already holds at that epoch, and may make this node pull from
 * the sender, whose answer is then verified record by record. An entry about this node itself
 * only causes a pull (a signed statement of ours from the pull is what moves the epoch). Phase 2
 * of the hardening bounds what such hints cost (pull rate) and how long hearsay keeps a dead node.
 */
export class Membership {
  readonly #c: MembershipComponents
  readonly #init: MembershipInit
  readonly #timers: NodeJS.Timeout[] = []
  readonly suspicion: Suspicion
  #lastAnnounceMs = 0

  constructor (components: MembershipComponents, init: MembershipInit) {
    this.#c = components
    this.#init = init
    this.suspicion = new Suspicion({
      node: components.node,
      index: components.index,
      log: components.log,
      check: components.check,
      announce: () => { this.#announce() }
    })
  }

  start (): void {
    this.#every(this.#init.heartbeatIntervalMs, () => { this.heartbeat() })
    this.#every(Math.max(50, Math.min(1000, Math.floor(this.#init.expiryMs / 4))), () => { this.#sweep() })
  }

  stop (): void {
    for (const t of this.#timers) clearInterval(t)
    this.#timers.length = 0
    this.suspicion.stop()
  }

  /** "Still here, at this version", with the liveness of every record held, to every direct peer. */
  heartbeat (): void {
    const { node, index, own } = this.#c
    if (node.peers().length === 0) return
    const now = Date.now()
    const others: LivenessEntry[] = []
    for (const rec of index.records()) {
      if (!index.isAlive(rec, now)) continue
      // A peer this node saw die is reported as not heard of within any bound: a receiver takes
      // that as "check it yourself" and never as liveness.
      const ageMs = this.suspicion.isReported(rec.origin, now) ? SUSPECT_AGE_MS : now - rec.lastHeardMs
      others.push({ origin: rec.origin, epoch: rec.epoch, seq: rec.seq, ageMs })
    }
    this.#c.broadcast(encodeHeartbeat({ origin: node.peerId, epoch: own.epoch, seq: own.seq, others }))
  }

  /** A heartbeat now, at most once a second, so neighbours hear of a lost peer at once. */
  #announce (): void {
    const now = Date.now()
    if (now - this.#lastAnnounceMs < ANNOUNCE_MIN_INTERVAL_MS) return
    this.#lastAnnounceMs = now
    this.heartbeat()
  }

  onHeartbeat (m: HeartbeatFrame, from: string): void {
    const { index, own, node } = this.#c
    if (m.origin !== from) {
      this.#c.refusals.refuse('wrong-sender', from, { origin: m.origin, what: 'heartbeat speaks for another node' })
      return
    }
    const now = Date.now()
    index.heard(m.origin, m.epoch, now)
    this.#c.wantFrom(m, from, now)
    for (const o of m.others) {
      if (o.origin === node.peerId) {
        if (o.epoch > own.epoch || (o.epoch === own.epoch && o.seq > own.seq)) this.#c.pull(from)
        continue
      }
      if (o.ageMs > this.#init.expiryMs) {
        // The sender has no live news of it (it saw it die): a reason to check, never to drop.
        this.suspicion.hinted(o.origin, o.epoch, now)
        continue
      }
      index.heard(o.origin, o.epoch, now, o.ageMs)
      this.suspicion.heardOf(o.origin, now - o.ageMs, now)
      this.#c.wantFrom(o, from, now)
    }
  }

  /** A pushed goodbye: verified, applied, and relayed as the bytes that came. */
  onGoodbyeFrame (m: GoodbyeFrame, frame: Uint8Array, from: string): void {
    const s = m.statement
    if (s.origin !== this.#c.node.peerId && this.#c.index.isTombstoned(s.origin, s.epoch)) return
    if (!this.#c.auth.verify(s)) {
      this.#c.refusals.refuse('bad-signature', from, { origin: s.origin, what: `goodbye for epoch ${s.epoch} is not signed by its origin` })
      return
    }
    if (s.origin === this.#c.node.peerId) {
      this.#c.onOwnStatement(s)
      return
    }
    if (this.acceptGoodbye(s, from)) this.#c.broadcast(frame, from)
  }

  /** Applies a verified goodbye; true when it was news. */
  acceptGoodbye (s: Statement, from: string): boolean {
    if (!this.#c.index.goodbye(s.origin, s.epoch, Date.now(), s.bytes)) return false
    this.#c.counters.goodbyes++
    this.#c.log.info({ origin: s.origin, peer: from }, 'peer said goodbye')
    this.suspicion.forget([s.origin])
    this.#c.onGone([s.origin])
    return true
  }

  #sweep (): void {
    const now = Date.now()
    const gone = this.#c.index.expire(now)
    if (gone.length > 0) {
      this.#c.counters.expired += gone.length
      this.#c.log.info({ origins: gone }, 'peers expired')
      this.suspicion.forget(gone)
      this.#c.onGone(gone)
    }
    this.suspicion.sweep(now)
    this.#c.retryWanted(now)
  }

  #every (ms: number, fn: () => void): void {
    const t = setInterval(() => {
      try {
        fn()
      } catch (err) {
        this.#c.log.error({ err }, 'periodic router task failed')
      }
    }, ms)
    t.unref()
    this.#timers.push(t)
  }
}

/**
 * Age a heartbeat reports for a peer its sender saw die: beyond any expiry bound, so older code
 * and this code alike take it as no liveness at all (and pull nothing for it).
 */
export const SUSPECT_AGE_MS = 2 ** 31 - 1
/** Checks of a suspected peer go on with this backoff while its record lives. */
export const SUSPECT_RECHECK_INITIAL_MS = 500
export const SUSPECT_RECHECK_MAX_MS = 10_000
/** A peer a neighbour reported lost but this node reached is not checked again for so long. */
export const HINT_COOLDOWN_MS = 30_000
/**
 * Hearsay must be this much newer than the loss to count as news: a relayed age leaves out the
 * time the heartbeat spent in queues, so news from before the loss can look a little younger.
 */
export const HEARSAY_MARGIN_MS = 1_000
/** Extra heartbeats that announce a lost peer are at most this frequent. */
const ANNOUNCE_MIN_INTERVAL_MS = 1_000

export interface SuspicionComponents {
  node: Pick<P2PNode, 'isConnected'>
  index: Pick<ContentIndex, 'get' | 'isAlive'>
  log: Logger
  /** Dials `peer` now; `done(true)` once connected. */
  check(peer: string, done: (isUp: boolean) => void): void
  /** Tell the neighbours now (a heartbeat reports suspected peers). */
  announce(): void
}

interface Suspect {
  /** When the last connection was cut (or a neighbour reported the loss). */
  sinceMs: number
  /** The record's version then: a newer signed version is news of the peer after the loss. */
  epoch: number
  seq: number
  /** Left out of lookups: a check found no answer. */
  isOut: boolean
  /**
   * This node saw the connection cut (not a neighbour's report): only such suspicions are told
   * to neighbours, so a report travels one hop and an overloaded node that misses a few checks
   * cannot be suspected cluster-wide by rumour.
   */
  isDirect: boolean
  isChecking: boolean
  attempt: number
  timer: NodeJS.Timeout | undefined
}

/**
 * Peers that went away without a word. A process that dies has its sockets closed by its kernel
 * at once; its peers see the connection cut (no orderly close) and dial it back at once: a
 * refused or timed-out dial leaves it out of lookups, while a busy node that lost a connection
 * is back as soon as the dial connects, and is never left out while any connection to it is up.
 * Checks go on with backoff while the record lives; any connection, or a newer signed version
 * of its record, brings it back. Hearsay (another node's "heard of it n ms ago") only makes this
 * node check again, and only when it is news from after the loss: a neighbour's stale liveness
 * must not resurrect a peer this node saw die. Silent losses (a cut cable, a frozen host: no
 * connection closes) are left to the heartbeat expiry.
 *
 * State is one entry per peer with a record, dropped with the record, on a connection, or when a
 * check succeeds (plus a cool-down time per peer a neighbour's report made this node check).
 */
export class Suspicion {
  readonly #c: SuspicionComponents
  readonly #suspects = new Map<string, Suspect>()
  /**
   * Peers a check reached: when, and how many times in a row a cut followed soon after. A
   * neighbour's report does not make this node check again soon, and a peer cut again soon is
   * checked after a growing delay (two busy nodes above their target could otherwise cut and
   * check each other in a loop: a close that times out under load is an abort, seen as a cut).
   */
  readonly #reached = new Map<string, { atMs: number, recuts: number }>()
  #stopped = false
  /** Peers ever left out of lookups (cumulative). */
  suspectedTotal = 0

  constructor (components: SuspicionComponents) {
    this.#c = components
  }

  /** Peers left out of lookups right now. */
  get count (): number {
    let n = 0
    for (const s of this.#suspects.values()) if (s.isOut) n++
    return n
  }

  /** Entries held (bounded by the records held). */
  get size (): number {
    return this.#suspects.size + this.#reached.size
  }

  /** The last connection to `peer` closed; `isOrderly` when one side closed it on purpose. */
  lost (peer: string, isOrderly: boolean, nowMs: number): void {
    if (isOrderly || this.#stopped) return
    const rec = this.#c.index.get(peer)
    if (rec === undefined || !this.#c.index.isAlive(rec, nowMs)) return
    const reached = this.#reached.get(peer)
    let delayMs = 0
    if (reached !== undefined && nowMs - reached.atMs < HINT_COOLDOWN_MS) {
      delayMs = backoffDelayMs(++reached.recuts, { initialMs: SUSPECT_RECHECK_INITIAL_MS, maxMs: SUSPECT_RECHECK_MAX_MS })
    }
    this.#c.log.debug({ peer, delayMs }, 'connection to peer cut: checking it')
    this.#open(peer, rec.epoch, rec.seq, nowMs, true, delayMs)
  }

  /** A connection to `peer` is up: it answers. */
  connected (peer: string): void {
    const s = this.#suspects.get(peer)
    if (s === undefined) return
    this.#drop(peer, s)
    if (s.isOut) this.#c.log.info({ event: 'peer_back', peer, suspectedMs: Date.now() - s.sinceMs }, 'suspected peer answered again')
  }

  /** A neighbour reports `peer` (at `epoch`) lost: check it, unless connected or reached lately. */
  hinted (peer: string, epoch: number, nowMs: number): void {
    if (this.#stopped || this.#suspects.has(peer) || this.#c.node.isConnected(peer)) return
    const rec = this.#c.index.get(peer)
    if (rec === undefined || rec.epoch !== epoch || !this.#c.index.isAlive(rec, nowMs)) return
    const reached = this.#reached.get(peer)
    if (reached !== undefined && nowMs - reached.atMs < HINT_COOLDOWN_MS) return
    this.#open(peer, rec.epoch, rec.seq, nowMs, false)
  }

  /** Hearsay: someone heard of `peer` at `heardAtMs`; news from after the loss makes a check now. */
  heardOf (peer: string, heardAtMs: number, nowMs: number): void {
    const s = this.#suspects.get(peer)
    if (s === undefined || !s.isOut || s.isChecking || heardAtMs <= s.sinceMs + HEARSAY_MARGIN_MS) return
    // Once per piece of news: later checks need news from after this one.
    s.sinceMs = nowMs
    this.#schedule(peer, s, 0)
  }

  /** Whether heartbeats report `peer` lost: left out after this node saw its connection cut. */
  isReported (peer: string, nowMs: number): boolean {
    return this.#suspects.get(peer)?.isDirect === true && this.isOut(peer, nowMs)
  }

  /**
   * Whether lookups leave `peer` out now. A newer signed version of its record than at the loss
   * is news from it after the loss: it is offered again while a check runs.
   */
  isOut (peer: string, nowMs: number): boolean {
    const s = this.#suspects.get(peer)
    if (s?.isOut !== true) return false
    const rec = this.#c.index.get(peer)
    if (rec === undefined) {
      this.#drop(peer, s)
      return false
    }
    if (rec.epoch !== s.epoch || rec.seq > s.seq) {
      this.#c.log.info({ event: 'peer_back', peer, epoch: rec.epoch, seq: rec.seq }, 'suspected peer signed news: offered again while it is checked')
      s.isOut = false
      s.epoch = rec.epoch
      s.seq = rec.seq
      s.sinceMs = nowMs
      s.attempt = 0
      this.#schedule(peer, s, 0)
      return false
    }
    return true
  }

  /** Drops the entries of records gone or expired. */
  sweep (nowMs: number): void {
    for (const [peer, s] of this.#suspects) {
      const rec = this.#c.index.get(peer)
      if (rec === undefined || !this.#c.index.isAlive(rec, nowMs)) this.#drop(peer, s)
    }
    for (const [peer, reached] of this.#reached) {
      if (nowMs - reached.atMs >= HINT_COOLDOWN_MS || this.#c.index.get(peer) === undefined) this.#reached.delete(peer)
    }
  }

  forget (origins: readonly string[]): void {
    for (const o of origins) {
      const s = this.#suspects.get(o)
      if (s !== undefined) this.#drop(o, s)
      this.#reached.delete(o)
    }
  }

  stop (): void {
    this.#stopped = true
    for (const s of this.#suspects.values()) clearTimeout(s.timer)
    this.#suspects.clear()
    this.#reached.clear()
  }

  #open (peer: string, epoch: number, seq: number, nowMs: number, isDirect: boolean, delayMs = 0): void {
    const old = this.#suspects.get(peer)
    if (old !== undefined) clearTimeout(old.timer)
    const s: Suspect = { sinceMs: nowMs, epoch, seq, isOut: old?.isOut ?? false, isDirect: isDirect || old?.isDirect === true, isChecking: false, attempt: 0, timer: undefined }
    this.#suspects.set(peer, s)
    // At the earliest on the next turn: libp2p may still count the connection that just closed.
    this.#schedule(peer, s, delayMs)
  }

  #drop (peer: string, s: Suspect): void {
    clearTimeout(s.timer)
    s.timer = undefined
    if (this.#suspects.get(peer) === s) this.#suspects.delete(peer)
  }

  #schedule (peer: string, s: Suspect, delayMs: number): void {
    clearTimeout(s.timer)
    s.timer = setTimeout(() => {
      s.timer = undefined
      this.#check(peer, s)
    }, delayMs)
    s.timer.unref()
  }

  #check (peer: string, s: Suspect): void {
    if (this.#stopped || s.isChecking || this.#suspects.get(peer) !== s) return
    if (this.#c.node.isConnected(peer)) {
      this.connected(peer)
      return
    }
    s.isChecking = true
    this.#c.check(peer, (isUp) => {
      s.isChecking = false
      if (this.#stopped || this.#suspects.get(peer) !== s) return
      if (isUp || this.#c.node.isConnected(peer)) {
        this.#reached.set(peer, { atMs: Date.now(), recuts: this.#reached.get(peer)?.recuts ?? 0 })
        this.connected(peer)
        return
      }
      if (!s.isOut) {
        s.isOut = true
        this.suspectedTotal++
        this.#c.log.info({ event: 'peer_suspected', peer, lostMs: Date.now() - s.sinceMs, isReported: s.isDirect }, 'lost peer does not answer: left out of lookups')
        if (s.isDirect) this.#c.announce()
      }
      this.#schedule(peer, s, backoffDelayMs(++s.attempt, { initialMs: SUSPECT_RECHECK_INITIAL_MS, maxMs: SUSPECT_RECHECK_MAX_MS, jitter: 0.5 }))
    })
  }
}
