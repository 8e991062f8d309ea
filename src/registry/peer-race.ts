import type { Hedger } from '../resilience/index.js'
import type { Peer } from '../routing/index.js'

interface PoolEntry {
  peer: Peer
  uses: number
  isAcquired: boolean
  /** Fixed per entry so equal peers are chosen in a random but stable order. */
  tiebreak: number
}

export interface PeerPoolInit {
  /** Lower is better; asked at every acquire (e.g. the node-wide load on a peer). */
  score?: (peer: Peer) => number
  random?: () => number
}

/**
 * The peers that may serve one request (Spegel's peer iterator, pkg/routing/iterator.go), filled by
 * a lookup and shared by the first race and every resume race of that request. A peer is acquired
 * while a request to it is in flight, so one race never sends two at once to it; a failed peer is
 * removed for the rest of the request.
 */
export class PeerPool {
  readonly #entries = new Map<string, PoolEntry>()
  readonly #listeners = new Set<() => void>()
  readonly #score: (peer: Peer) => number
  readonly #random: () => number
  #isClosed = false
  #lookupError: unknown

  constructor (init: PeerPoolInit = {}) {
    this.#score = init.score ?? (() => 0)
    this.#random = init.random ?? Math.random
  }

  get size (): number {
    return this.#entries.size
  }

  /** No more peers will be added (the lookup finished, or failed with `error`). */
  get isClosed (): boolean {
    return this.#isClosed
  }

  get lookupError (): unknown {
    return this.#lookupError
  }

  /** Closed and empty: waiting cannot bring a peer. */
  get isExhausted (): boolean {
    return this.#isClosed && this.#entries.size === 0
  }

  hasAvailable (): boolean {
    for (const entry of this.#entries.values()) if (!entry.isAcquired) return true
    return false
  }

  has (peerId: string): boolean {
    return this.#entries.has(peerId)
  }

  add (peer: Peer): void {
    const existing = this.#entries.get(peer.id)
    if (existing !== undefined) {
      existing.peer = peer
    } else {
      this.#entries.set(peer.id, { peer, uses: 0, isAcquired: false, tiebreak: this.#random() })
    }
    this.#changed()
  }

  close (error?: unknown): void {
    if (this.#isClosed) return
    this.#isClosed = true
    if (error !== undefined) this.#lookupError = error
    this.#changed()
  }

  /** The least used free peer (then the best scored), marked acquired; undefined when none is free. */
  acquire (): Peer | undefined {
    let best: { entry: PoolEntry, score: number } | undefined
    for (const entry of this.#entries.values()) {
      if (entry.isAcquired) continue
      const score = this.#score(entry.peer)
      if (best === undefined || entry.uses < best.entry.uses ||
        (entry.uses === best.entry.uses && (score < best.score || (score === best.score && entry.tiebreak < best.entry.tiebreak)))) {
        best = { entry, score }
      }
    }
    if (best === undefined) return undefined
    best.entry.uses++
    best.entry.isAcquired = true
    return best.entry.peer
  }

  release (peer: Peer): void {
    const entry = this.#entries.get(peer.id)
    if (entry === undefined || !entry.isAcquired) return
    entry.isAcquired = false
    this.#changed()
  }

  remove (peer: Pick<Peer, 'id'>): void {
    if (this.#entries.delete(peer.id)) this.#changed()
  }

  /** Calls `listener` after every change; returns the unsubscribe function. */
  onChange (listener: () => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  #changed (): void {
    for (const listener of [...this.#listeners]) listener()
  }
}

export type RaceFailure = 'no-peer' | 'exhausted' | 'idle' | 'inflight-timeout' | 'lookup' | 'aborted'

/** A race that produced no result; `attempts` is what Spegel reports as `detail.attempts`. */
export class RaceError extends Error {
  readonly code = 'RACE_FAILED'
  readonly reason: RaceFailure
  readonly attempts: number

  constructor (reason: RaceFailure, attempts: number, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'RaceError'
    this.reason = reason
    this.attempts = attempts
  }
}

export interface RaceInit<T> {
  pool: PeerPool
  hedger: Hedger
  /** Named in error messages. */
  key: string
  /** Distinct peers tried at most (`--mirror-resolve-retries`). */
  maxAttempts: number
  /** With nothing in flight and no free peer, how long to wait for the lookup (`--mirror-resolve-timeout`). */
  idleTimeoutMs: number
  /** Floor of the bound on in-flight attempts, `max(2 × hedger p90, floor)`. */
  inflightTimeoutMinMs: number
  signal: AbortSignal
  /** One attempt; its signal aborts when the attempt loses, the race ends without it, or `signal` aborts. */
  attempt: (peer: Peer, signal: AbortSignal) => Promise<T>
  /** Errors that end the race at once and are rethrown (the answer would be the same from every peer). */
  isTerminal?: (err: unknown) => boolean
  /** A failed attempt, or one still in flight when the race gives up on in-flight attempts. */
  onFailure?: (peer: Peer, err: unknown) => void
  /** Disposes of a result that arrived after the race was decided. */
  discard?: (value: T) => void
}

export interface RaceResult<T> {
  value: T
  peer: Peer
  attempts: number
}

type Settled<T> = { isOk: true, peer: Peer, value: T, latencyMs: number } | { isOk: false, peer: Peer, err: unknown }

/**
 * Spegel's hedged race (pkg/registry/registry.go): one attempt at once, another whenever an attempt
 * fails or a hedge delay (hedger percentiles) passes, at most `hedger.size` extra, never two at a
 * time to one peer. The first success wins and the others are aborted. Ends with a RaceError when
 * no peer is left, the budget is spent, no peer turns up within the idle timeout, or the attempts
 * in flight outlive their bound.
 */
export async function hedgedRace<T> (init: RaceInit<T>): Promise<RaceResult<T>> {
  const { pool, hedger, signal, key } = init
  const fail = (reason: RaceFailure, message: string, options?: ErrorOptions): RaceError =>
    new RaceError(reason, attempts, message, options)
  let attempts = 0
  if (signal.aborted) throw fail('aborted', `aborted before asking peers for ${key}`, { cause: signal.reason })

  const inflight = new Map<string, { peer: Peer, controller: AbortController }>()
  const settled: Array<Settled<T>> = []
  const budget = hedger.size
  let tokens = 1
  let granted = 0
  let isFinished = false
  let isIdleExpired = false
  let isInflightExpired = false
  let idleTimer: NodeJS.Timeout | undefined
  let inflightTimer: NodeJS.Timeout | undefined
  let wake = (): void => {}
  const notify = (): void => { wake() }
  const grant = (): void => {
    if (granted < budget) {
      granted++
      tokens++
    }
  }

  const hedgeTimers = hedger.delaysMs().map((ms) => setTimeout(() => { grant(); notify() }, ms))
  const unsubscribe = pool.onChange(notify)
  signal.addEventListener('abort', notify)

  const start = (peer: Peer): void => {
    const controller = new AbortController()
    const started = performance.now()
    inflight.set(peer.id, { peer, controller })
    init.attempt(peer, AbortSignal.any([signal, controller.signal])).then((value) => {
      if (isFinished) {
        init.discard?.(value)
        return
      }
      settled.push({ isOk: true, peer, value, latencyMs: performance.now() - started })
      notify()
    }, (err: unknown) => {
      if (isFinished) return
      settled.push({ isOk: false, peer, err })
      notify()
    })
  }

  try {
    for (;;) {
      const woken = new Promise<void>((resolve) => { wake = resolve })
      for (let s = settled.shift(); s !== undefined; s = settled.shift()) {
        inflight.delete(s.peer.id)
        pool.release(s.peer)
        if (s.isOk) {
          hedger.record(s.latencyMs)
          return { value: s.value, peer: s.peer, attempts }
        }
        if (init.isTerminal?.(s.err) === true) throw s.err
        pool.remove(s.peer)
        init.onFailure?.(s.peer, s.err)
        grant()
      }
      if (signal.aborted) throw fail('aborted', `aborted while asking peers for ${key}`, { cause: signal.reason })

      while (tokens > 0 && attempts < init.maxAttempts) {
        const peer = pool.acquire()
        if (peer === undefined) break
        tokens--
        attempts++
        start(peer)
      }

      if (inflight.size === 0) {
        const isSpent = attempts >= init.maxAttempts || (tokens === 0 && granted >= budget)
        if (pool.isExhausted || isSpent) {
          if (attempts === 0 && pool.lookupError !== undefined) {
            throw fail('lookup', `could not look up peers for ${key}: ${errorMessage(pool.lookupError)}`, { cause: pool.lookupError })
          }
          throw attempts === 0
            ? fail('no-peer', `could not find peer for ${key}`)
            : fail('exhausted', `all request retries exhausted for ${key}`)
        }
        if (isIdleExpired) throw fail('idle', `waited too long for new peer with no inflight fetches for ${key}`)
        idleTimer ??= setTimeout(() => { isIdleExpired = true; notify() }, init.idleTimeoutMs)
      } else {
        if (idleTimer !== undefined) {
          clearTimeout(idleTimer)
          idleTimer = undefined
          isIdleExpired = false
        }
        if (isInflightExpired) {
          const err = fail('inflight-timeout', `waited too long for inflight dials to complete for ${key}`)
          for (const { peer } of inflight.values()) init.onFailure?.(peer, err)
          throw err
        }
        // Armed once per race and never extended, so hung peers cannot hold the client.
        const boundMs = Math.max(2 * hedger.highestPercentileMs(), init.inflightTimeoutMinMs)
        inflightTimer ??= setTimeout(() => { isInflightExpired = true; notify() }, boundMs)
      }
      await woken
    }
  } finally {
    isFinished = true
    for (const timer of hedgeTimers) clearTimeout(timer)
    clearTimeout(idleTimer)
    clearTimeout(inflightTimer)
    unsubscribe()
    signal.removeEventListener('abort', notify)
    for (const { peer, controller } of inflight.values()) {
      controller.abort(new Error(`race for ${key} was decided without ${peer.id}`))
      pool.release(peer)
    }
    for (const s of settled) if (s.isOk) init.discard?.(s.value)
  }
}

function errorMessage (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
