import { setTimeout as delay } from 'node:timers/promises'
import type { Connection } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from '../../observability/logger.js'
import { backoffDelayMs } from '../../resilience/backoff.js'
import type { BootstrapPeer, Bootstrapper } from '../bootstrap/types.js'
import {
  BOOTSTRAP_BACKOFF_INITIAL_MS, BOOTSTRAP_BACKOFF_MAX_MS, DIAL_TIMEOUT_MS, DISCOVER_TIMEOUT_MS, MAINTAIN_INTERVAL_MS,
  PROOF_ATTEMPTS, PROOF_BACKOFF_INITIAL_MS, PROOF_BACKOFF_MAX_MS, PROOF_DIAL_CONCURRENCY, REDIAL_BACKOFF_INITIAL_MS,
  REDIAL_BACKOFF_MAX_MS, REDISCOVER_INTERVAL_MS
} from './constants.js'
import type { ContentIndex, IndexRecord } from './content-index.js'
import { hasTcp, hostPortOf, type P2PNode } from './node.js'
import { remoteIp, type AddressProofs, type Refusals } from './record-auth.js'
import type { P2PRouterCounters } from './types.js'
import { jitter, shuffle } from './util.js'

/**
 * Bound on the prompt dial of a peer whose connections were cut: a dead process's host refuses
 * at once, and a busy live node completes a handshake well within it.
 */
export const CHECK_DIAL_TIMEOUT_MS = 5_000

/** Half-jittered exponential backoff; `attempt` counts from 0. */
function backoffMs (attempt: number, initialMs: number, maxMs: number): number {
  return backoffDelayMs(attempt + 1, { initialMs, maxMs, jitter: 0.5 })
}

export interface DialerComponents {
  node: P2PNode
  index: ContentIndex
  proofs: AddressProofs
  refusals: Refusals
  log: Logger
  counters: P2PRouterCounters
  bootstrapper: Bootstrapper
  /** The first bootstrap round succeeded; `isAlone` when discovery named nobody else. */
  onBootstrapped(isAlone: boolean): void
}

export interface DialerInit {
  /** Connections to keep open. */
  targetPeers: number
}

interface ProofState {
  /** The address being proven; a record naming another one starts over. */
  hostPort: string
  attempts: number
}

/**
 * Every outbound connection: the bootstrap loop (until a first peer, then rediscovery while
 * below the target), the connection keeper, redials of lost live peers, and the dials that prove
 * a record's registry address (a connection to its origin at that IP). Every timer it starts is
 * tracked and ends in stop().
 */
export class Dialer {
  readonly #c: DialerComponents
  readonly #init: DialerInit
  readonly #controller = new AbortController()
  readonly #timers = new Set<NodeJS.Timeout>()
  readonly #tasks = new Set<Promise<unknown>>()
  readonly #redial = new Map<string, { attempt: number, nextMs: number }>()
  readonly #proofs = new Map<string, ProofState>()
  readonly #proofQueue: string[] = []
  #proofsInFlight = 0
  /** Peers being dialled only for a proof: their connect needs no pull, their close no redial. */
  readonly #probing = new Set<string>()
  readonly #closingProbes = new Set<string>()
  #isBootstrapped = false
  #isAlone = false

  constructor (components: DialerComponents, init: DialerInit) {
    this.#c = components
    this.#init = init
  }

  get isBootstrapped (): boolean {
    return this.#isBootstrapped
  }

  /** Discovery named nobody but this node: a one-node cluster, ready on its own. */
  get isAlone (): boolean {
    return this.#isAlone
  }

  start (self: () => { id: string, addrs: string[] }): void {
    const t = setInterval(() => { this.#maintain() }, MAINTAIN_INTERVAL_MS)
    t.unref()
    this.#timers.add(t)
    this.#track(this.#bootstrapLoop(this.#controller.signal))
    const serve = this.#c.bootstrapper.serve
    if (serve !== undefined) {
      this.#track(serve.call(this.#c.bootstrapper, self, this.#controller.signal).catch((err: unknown) => {
        if (!this.#controller.signal.aborted) this.#c.log.error({ err }, 'bootstrap server failed')
      }))
    }
  }

  async stop (): Promise<void> {
    this.#controller.abort(new Error('router stopped'))
    for (const t of this.#timers) {
      clearTimeout(t)
      clearInterval(t)
    }
    this.#timers.clear()
    await Promise.allSettled([...this.#tasks])
  }

  isProbing (peer: string): boolean {
    return this.#probing.has(peer)
  }

  /** An authenticated connection shows where its peer is: that may prove its record's address. */
  onConnectionOpen (conn: Connection): void {
    const ip = remoteIp(conn.remoteAddr)
    if (ip !== undefined) this.#saw(conn.remotePeer.toString(), ip)
  }

  /** Records that arrived or changed: offer them once proven, proving them when no connection did. */
  proveRecords (origins: readonly string[]): void {
    for (const origin of origins) {
      const rec = this.#c.index.get(origin)
      if (rec === undefined || rec.isAddressProven) continue
      if (this.#c.proofs.has(origin, rec.claims.address.ip)) this.#c.index.proveAddress(origin, rec.claims.address.ip)
      else this.prove(origin)
    }
  }

  #saw (peer: string, ip: string): void {
    this.#c.proofs.saw(peer, ip)
    this.#c.index.proveAddress(peer, ip)
  }

  onConnect (peer: string): void {
    this.#redial.delete(peer)
  }

  /** A lost peer that is still alive in the index is redialled, with backoff. */
  onDisconnect (peer: string): void {
    if (this.#closingProbes.delete(peer) || this.#controller.signal.aborted) return
    const rec = this.#c.index.get(peer)
    if (rec === undefined || !this.#c.index.isAlive(rec, Date.now())) return
    // If it is dead, the dials fail with backoff until its record expires.
    const state = this.#redial.get(peer) ?? { attempt: 0, nextMs: 0 }
    const waitMs = backoffMs(state.attempt, REDIAL_BACKOFF_INITIAL_MS, REDIAL_BACKOFF_MAX_MS)
    state.nextMs = Date.now() + waitMs
    this.#redial.set(peer, state)
    // Only below the target: above it, a lost neighbour is no loss worth a dial (and a peer that
    // closed a connection it needed only for a moment must not be dialled back at once).
    this.#after(waitMs, () => {
      if (this.#c.node.peers().length < this.#init.targetPeers) this.#track(this.#dialKnown(peer))
    })
  }

  /**
   * Dials `peer` at once, whatever the number of connections (a check that a peer whose
   * connections were cut still answers); `done(true)` once connected. Like a proof dial, the
   * connection is kept only while this node is below its target (it replaces the one that was
   * cut), needs no pull (the peer's next heartbeat names its version), and its close needs no
   * redial; the close is orderly, so the peer suspects nothing.
   */
  check (peer: string, done: (isUp: boolean) => void): void {
    this.#track(this.#checkOnce(peer).then(done))
  }

  async #checkOnce (peer: string): Promise<boolean> {
    const { node, index } = this.#c
    if (this.#controller.signal.aborted) return false
    if (node.isConnected(peer)) return true
    const rec = index.get(peer)
    if (rec === undefined || rec.addrs.length === 0) return false
    this.#probing.add(peer)
    try {
      const conn = await node.libp2p.dial(dialAddrs(peer, rec), { signal: AbortSignal.any([this.#controller.signal, AbortSignal.timeout(CHECK_DIAL_TIMEOUT_MS)]) })
      this.#redial.delete(peer)
      const ip = remoteIp(conn.remoteAddr)
      if (ip !== undefined) this.#saw(peer, ip)
      if (node.peers().length > this.#init.targetPeers && !node.hasOpenConnection(peer, conn)) {
        this.#closingProbes.add(peer)
        await conn.close().catch((err: unknown) => { conn.abort(err instanceof Error ? err : new Error(String(err))) })
      }
      return true
    } catch (err) {
      if (this.#controller.signal.aborted) return false
      this.#c.counters.dialFailures++
      this.#c.log.debug({ peer, err }, 'lost peer does not answer')
      return false
    } finally {
      this.#probing.delete(peer)
    }
  }

  /** The origin's record is gone: no more redials or proofs for it, and a later record is proven afresh. */
  forget (origin: string): void {
    this.#redial.delete(origin)
    this.#proofs.delete(origin)
    this.#c.proofs.forget(origin)
  }

  /**
   * Proves `origin`'s registry address: by a connection already open at its IP, else by dialling
   * the origin at the addresses it announced with that IP (the handshake checks the peer id),
   * again with backoff while it fails (counted as unverified after a few attempts).
   */
  prove (origin: string): void {
    const rec = this.#c.index.get(origin)
    if (rec === undefined || rec.isAddressProven || this.#controller.signal.aborted) return
    const { ip, hostPort } = rec.claims.address
    for (const c of this.#c.node.libp2p.getConnections()) {
      if (c.status === 'open' && c.remotePeer.toString() === origin && remoteIp(c.remoteAddr) === ip) {
        this.#saw(origin, ip)
        return
      }
    }
    const state = this.#proofs.get(origin)
    if (state !== undefined && state.hostPort === hostPort) return
    this.#proofs.set(origin, { hostPort, attempts: 0 })
    this.#proofQueue.push(origin)
    this.#pumpProofs()
  }

  #pumpProofs (): void {
    while (this.#proofsInFlight < PROOF_DIAL_CONCURRENCY && this.#proofQueue.length > 0) {
      const origin = this.#proofQueue.shift() as string
      this.#proofsInFlight++
      this.#track(this.#proveOnce(origin).finally(() => {
        this.#proofsInFlight--
        this.#pumpProofs()
      }))
    }
  }

  async #proveOnce (origin: string): Promise<void> {
    const { node, index } = this.#c
    const state = this.#proofs.get(origin)
    const rec = index.get(origin)
    if (state === undefined || rec === undefined || rec.isAddressProven || this.#controller.signal.aborted) return
    const targets = rec.claims.registryAddrs.map((a) => multiaddr(`${a}/p2p/${origin}`))
    const before = new Set(node.libp2p.getConnections().filter((c) => c.remotePeer.toString() === origin).map((c) => c.id))
    this.#probing.add(origin)
    this.#c.counters.proofDials++
    try {
      // A second connection when one exists (at another IP): that one proves nothing here.
      const conn = await node.libp2p.dial(targets, { signal: this.#dialSignal(), force: before.size > 0 })
      const ip = remoteIp(conn.remoteAddr)
      if (ip !== undefined) this.#saw(origin, ip)
      // A proof needs no connection of its own: keep a new one only when it is the one to this
      // peer and this node is below its target (then it is a neighbour like any other).
      if (!before.has(conn.id) && (before.size > 0 || node.peers().length > this.#init.targetPeers)) {
        if (before.size === 0) this.#closingProbes.add(origin)
        await conn.close().catch((err: unknown) => { conn.abort(err instanceof Error ? err : new Error(String(err))) })
      }
    } catch (err) {
      if (this.#controller.signal.aborted) return
      state.attempts++
      this.#c.log.debug({ peer: origin, attempt: state.attempts, err }, 'registry address proof failed')
      // Counted once per address; the attempts go on, slower, while the record lives: a busy
      // node that misses a few dials must not stay unoffered for good.
      if (state.attempts === PROOF_ATTEMPTS) {
        this.#c.refusals.refuse('unverified-address', origin, { origin, what: `not reachable as itself at ${rec.claims.address.ip}, the IP of its registry address ${rec.claims.address.hostPort}; its record is kept but not offered` })
      }
      this.#after(backoffMs(state.attempts - 1, PROOF_BACKOFF_INITIAL_MS, PROOF_BACKOFF_MAX_MS), () => {
        if (this.#proofs.get(origin) !== state) return
        this.#proofQueue.push(origin)
        this.#pumpProofs()
      })
    } finally {
      this.#probing.delete(origin)
    }
  }

  /** Keeps `targetPeers` connections, dialling live records' owners (random, with backoff). */
  #maintain (): void {
    const { node, index } = this.#c
    const connected = new Set(node.peers().map(String))
    if (connected.size >= this.#init.targetPeers) return
    const now = Date.now()
    const candidates: string[] = []
    const unproven: string[] = []
    for (const rec of index.records()) {
      if (connected.has(rec.origin) || rec.addrs.length === 0 || !index.isAlive(rec, now)) continue
      if ((this.#redial.get(rec.origin)?.nextMs ?? 0) > now) continue
      if (rec.isAddressProven) candidates.push(rec.origin)
      else unproven.push(rec.origin)
    }
    // Unproven records first: a neighbour dialled at its registry address's IP proves it for free.
    const picked = [...shuffle(unproven), ...shuffle(candidates)].slice(0, this.#init.targetPeers - connected.size)
    for (const id of picked) this.#track(this.#dialKnown(id))
  }

  async #dialKnown (id: string): Promise<void> {
    if (this.#controller.signal.aborted) return
    const rec = this.#c.index.get(id)
    if (rec === undefined || rec.addrs.length === 0 || this.#c.node.isConnected(id)) return
    try {
      await this.#c.node.libp2p.dial(dialAddrs(id, rec), { signal: this.#dialSignal() })
      this.#redial.delete(id)
    } catch (err) {
      this.#c.counters.dialFailures++
      const state = this.#redial.get(id) ?? { attempt: 0, nextMs: 0 }
      state.attempt++
      state.nextMs = Date.now() + backoffMs(state.attempt, REDIAL_BACKOFF_INITIAL_MS, REDIAL_BACKOFF_MAX_MS)
      this.#redial.set(id, state)
      if (!this.#controller.signal.aborted) this.#c.log.debug({ peer: id, err }, 'redial failed')
    }
  }

  #dialSignal (): AbortSignal {
    return AbortSignal.any([this.#controller.signal, AbortSignal.timeout(DIAL_TIMEOUT_MS)])
  }

  async #bootstrapLoop (signal: AbortSignal): Promise<void> {
    const started = Date.now()
    for (let attempt = 0; !signal.aborted; attempt++) {
      let outcome: 'alone' | 'connected' | 'failed'
      try {
        outcome = await this.#bootstrapRound(signal)
      } catch (err) {
        if (signal.aborted) return
        this.#c.log.warn({ err, attempt }, 'failed to run bootstrap')
        outcome = 'failed'
      }
      if (outcome !== 'failed') {
        this.#isAlone = outcome === 'alone'
        this.#isBootstrapped = true
        this.#c.log.info({ durationMs: Date.now() - started, alone: this.#isAlone, peers: this.#c.node.peers().length }, 'bootstrap completed')
        this.#c.onBootstrapped(this.#isAlone)
        break
      }
      if (attempt > 0 && attempt % 10 === 0) this.#c.log.warn({ attempt }, 'bootstrap has not reached any peer yet')
      await sleep(backoffMs(attempt, BOOTSTRAP_BACKOFF_INITIAL_MS, BOOTSTRAP_BACKOFF_MAX_MS), signal)
    }
    while (!signal.aborted) {
      await sleep(jitter(REDISCOVER_INTERVAL_MS), signal)
      if (signal.aborted || this.#c.node.peers().length >= this.#init.targetPeers) continue
      try {
        await this.#bootstrapRound(signal)
      } catch (err) {
        if (!signal.aborted) this.#c.log.warn({ err }, 'periodic bootstrap failed')
      }
    }
  }

  /**
   * One discovery and a dial of up to `targetPeers` random candidates. 'alone' when discovery
   * names nobody but this node (a one-node cluster is ready).
   */
  async #bootstrapRound (signal: AbortSignal): Promise<'alone' | 'connected' | 'failed'> {
    const { node, counters, log } = this.#c
    counters.bootstrapRounds++
    const found = await this.#c.bootstrapper.discover({ signal: AbortSignal.any([signal, AbortSignal.timeout(DISCOVER_TIMEOUT_MS)]) })
    const targets = this.#dialTargets(found)
    if (targets.length === 0) return node.peers().length > 0 ? 'connected' : 'alone'
    const picked = shuffle(targets).slice(0, this.#init.targetPeers)
    const results = await Promise.allSettled(picked.map(async (addrs) => await node.libp2p.dial(addrs, { signal: this.#dialSignal() })))
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    counters.dialFailures += failures.length
    if (failures.length > 0 && !signal.aborted) {
      log.debug({ failed: failures.length, of: picked.length, err: failures[0]?.reason }, 'bootstrap dials failed')
    }
    return node.peers().length > 0 ? 'connected' : 'failed'
  }

  /** Bootstrap answers → dialable multiaddr lists, without this node, ports completed. */
  #dialTargets (found: readonly BootstrapPeer[]): Multiaddr[][] {
    const { node, log } = this.#c
    const port = node.listenPort()
    const own = node.ownHostPorts()
    const targets: Multiaddr[][] = []
    for (const p of found) {
      if (p.id === node.peerId) continue
      const addrs: Multiaddr[] = []
      for (const text of p.addrs) {
        let ma: Multiaddr
        try {
          ma = multiaddr(text)
          if (!hasTcp(ma) && port !== undefined) ma = ma.encapsulate(`/tcp/${port}`)
        } catch (err) {
          log.warn({ addr: text, err }, 'ignoring invalid bootstrap address')
          continue
        }
        const hp = hostPortOf(ma)
        if (hp !== undefined && own.has(hp)) continue
        // With a known id libp2p checks it in the handshake; without one (DNS) it learns it there.
        addrs.push(p.id === undefined ? ma : ma.encapsulate(`/p2p/${p.id}`))
      }
      if (addrs.length > 0) targets.push(addrs)
    }
    return targets
  }

  /** A one-shot timer that stop() clears. */
  #after (ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.#timers.delete(t)
      if (!this.#controller.signal.aborted) fn()
    }, ms)
    t.unref()
    this.#timers.add(t)
  }

  #track (p: Promise<unknown>): void {
    const tracked = p.catch((err: unknown) => { this.#c.log.error({ err }, 'router task failed') })
      .finally(() => { this.#tasks.delete(tracked) })
    this.#tasks.add(tracked)
  }
}

/** A record's addresses to dial, the registry address's IP first (so the connection also proves it). */
function dialAddrs (id: string, rec: IndexRecord): Multiaddr[] {
  const addrs = [...rec.claims.registryAddrs, ...rec.addrs.filter((a) => !rec.claims.registryAddrs.includes(a))]
  return addrs.map((a) => multiaddr(`${a}/p2p/${id}`))
}

/** Resolves after `ms`, or at once when `signal` aborts (an abort is the normal way out of the loops). */
async function sleep (ms: number, signal: AbortSignal): Promise<void> {
  await delay(ms, undefined, { signal, ref: false }).catch(() => {})
}
