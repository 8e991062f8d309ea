import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../observability/logger.js'
import { advertisers, arrivingKey, fetchingKey, isAdvertised, wantKey, type KeyOverlay } from '../routing/key-overlay.js'
import type { Router } from '../routing/index.js'

/** How a wait for a blob nobody had ended. */
export type StormOutcome =
  /** A node now holds the blob or is downloading it: stream it from there. */
  | 'source'
  /** The nodes asking agreed on this one: answer 404 so its containerd fetches upstream. */
  | 'chosen'
  /** Nothing turned up within the wait: answer 404, containerd falls back to upstream as without us. */
  | 'timeout'
  /** Too many blobs are being waited for already: answer 404 at once. */
  | 'busy'

export const STORM_OUTCOMES: readonly StormOutcome[] = ['source', 'chosen', 'timeout', 'busy']

export interface PullStormInit {
  /** `--pull-storm-wait`: the longest a request waits; 0 switches the whole thing off. */
  waitMs: number
  /**
   * How long a node listens for other nodes' `want:` keys before the choice. Gossip takes a few
   * milliseconds between live nodes; the window also catches containerds that start a layer a
   * little later than the first.
   */
  collectMs?: number
  /** Between two looks at the (local) index while waiting. */
  pollMs?: number
  /**
   * How long `fetching:` stays advertised when this node's own download never shows (its
   * containerd had the blob after all, or gave up): others then stop waiting for it.
   */
  fetchingTtlMs?: number
  /** Blobs waited for at once; more get a 404 at once. */
  maxWaiting?: number
  /**
   * How long this node stays out of the choice after a download it was picked for failed
   * (its upstream refused it, say): it still waits for others, but never volunteers.
   */
  upstreamFailureMemoryMs?: number
  now?: () => number
}

export interface PullStormComponents {
  /** Lookups (other nodes' keys). */
  router: Router
  /** This node's extra keys (`want:`, `fetching:`). */
  keys: KeyOverlay
  /** This node's router identity; undefined until the router runs. */
  selfId: () => string | undefined
  log: Logger
  onOutcome?: (outcome: StormOutcome) => void
  /**
   * This node's containerd is about to fetch `digest` upstream. Its download may already be
   * under way (a resume after a broken relay), and is now first hand: offer it.
   */
  onFetching?: (digest: string) => void
  /**
   * False for a peer a request just failed to reach (the mirror's view). A node killed while it
   * fetched a blob stays in the index until the router notices; until then its keys must not
   * count as a source, a fetcher or a wanter, or everyone waits on the dead node.
   */
  isUsable?: (peerId: string) => boolean
}

/**
 * Two nodes can only both pick themselves when gossip between them takes longer than half of
 * this (docs/pull-storms.md); on nodes busy downloading and serving layers, deltas took over
 * 150 ms. A storm's pulls take tens of seconds, so half a second is cheap.
 */
export const DEFAULT_COLLECT_MS = 500
export const DEFAULT_POLL_MS = 20
export const DEFAULT_FETCHING_TTL_MS = 15_000
export const DEFAULT_MAX_WAITING = 256
export const DEFAULT_UPSTREAM_FAILURE_MEMORY_MS = 5 * 60_000
/** While a usable node advertises `fetching:`, a wait may last this many times `waitMs` in all. */
export const FETCHING_GRACE_FACTOR = 2
/** Longer than any layer download; after it, a download still under way is no longer called ours. */
const FIRST_HAND_TTL_MS = 30 * 60_000
const MAX_FIRST_HAND = 1024

/**
 * The first pull of a new image on many nodes at once (docs/pull-storms.md). A mirror asked for a
 * blob that no node holds or is downloading does not answer 404 at once: it says it wants the
 * blob (`want:<digest>`), listens a moment for the other nodes that want it too, and picks one of
 * them by rendezvous hashing of digest and node ID. The chosen node answers 404, so its containerd
 * fetches the blob upstream; while the download lands in containerd's ingest area, that node
 * advertises `arriving:<digest>` and serves it to the others, which wait (bounded) and then stream
 * it. A node that took the job says so (`fetching:<digest>`), so nodes that come later wait for
 * it instead of making their own choice. Different blobs hash to different nodes, so upstream
 * load spreads as well.
 *
 * Why the choice agrees without a coordinator: every node picks the highest score among the
 * wanters it has heard of, itself included. The node with the highest score of all always picks
 * itself; any other node picks some node with a higher score than its own, which in turn
 * fetches or waits for an even higher one. Views that differ for a moment cost waiting time,
 * never a deadlock: every wait ends after `waitMs` in a 404, and containerd then goes upstream
 * as it would without us.
 */
export class PullStorm {
  readonly #c: PullStormComponents
  readonly #waitMs: number
  readonly #collectMs: number
  readonly #pollMs: number
  readonly #fetchingTtlMs: number
  readonly #maxWaiting: number
  /** One wait per blob, shared by every request for it on this node. */
  readonly #waits = new Map<string, Promise<StormOutcome>>()
  /** Blobs this node took the job for, with the timer that gives it back. */
  readonly #fetching = new Map<string, NodeJS.Timeout>()
  readonly #upstreamFailureMemoryMs: number
  readonly #now: () => number
  /** Blobs this node's containerd fetched upstream (picked, or after a wait), oldest first; bounded. */
  readonly #firstHand = new Map<string, number>()
  /** When a download this node was picked for last failed. */
  #upstreamFailedAtMs: number | undefined
  #isClosed = false

  constructor (components: PullStormComponents, init: PullStormInit) {
    this.#c = components
    this.#waitMs = init.waitMs
    this.#collectMs = Math.min(init.collectMs ?? DEFAULT_COLLECT_MS, init.waitMs)
    this.#pollMs = init.pollMs ?? DEFAULT_POLL_MS
    this.#fetchingTtlMs = init.fetchingTtlMs ?? DEFAULT_FETCHING_TTL_MS
    this.#maxWaiting = init.maxWaiting ?? DEFAULT_MAX_WAITING
    this.#upstreamFailureMemoryMs = init.upstreamFailureMemoryMs ?? DEFAULT_UPSTREAM_FAILURE_MEMORY_MS
    this.#now = init.now ?? Date.now
  }

  /** A download this node was picked for failed recently: it does not volunteer for now. */
  get isUpstreamSuspect (): boolean {
    return this.#upstreamFailedAtMs !== undefined && this.#now() - this.#upstreamFailedAtMs < this.#upstreamFailureMemoryMs
  }

  get isEnabled (): boolean { return this.#waitMs > 0 }

  /** Some usable node holds `digest` or is receiving it. */
  async hasSource (digest: string, signal?: AbortSignal): Promise<boolean> {
    return await this.#isAdvertised(digest, signal) || await this.#isAdvertised(arrivingKey(digest), signal)
  }

  async #isAdvertised (key: string, signal?: AbortSignal): Promise<boolean> {
    const isUsable = this.#c.isUsable
    if (isUsable === undefined) return await isAdvertised(this.#c.router, key, signal)
    // Asked on every mirrored blob GET: stop at the first usable peer.
    for await (const peer of this.#c.router.lookup(key, signal === undefined ? {} : { signal })) if (isUsable(peer.id)) return true
    return false
  }
  get waiting (): number { return this.#waits.size }
  get fetching (): number { return this.#fetching.size }

  /**
   * Waits until another node can serve `digest` ('source') or this node should let its containerd
   * fetch it upstream (any other outcome). Rejects only with the signal's reason.
   */
  async await (digest: string, signal: AbortSignal): Promise<StormOutcome> {
    signal.throwIfAborted()
    let wait = this.#waits.get(digest)
    if (wait === undefined) {
      if (this.#isClosed || !this.isEnabled) return 'busy'
      if (this.#waits.size >= this.#maxWaiting) {
        this.#c.onOutcome?.('busy')
        return 'busy'
      }
      const started = this.#run(digest)
      wait = started
      this.#waits.set(digest, started)
      void started.finally(() => { if (this.#waits.get(digest) === started) this.#waits.delete(digest) })
    }
    return await untilAborted(wait, signal)
  }

  /**
   * Whether this node's containerd fetches `digest` from upstream itself: this node answered it
   * 404 to let it (picked, or after a wait that found no one), in the last FIRST_HAND_TTL_MS.
   */
  isFirstHand (digest: string): boolean {
    if (this.#fetching.has(digest)) return true
    const atMs = this.#firstHand.get(digest)
    return atMs !== undefined && this.#now() - atMs < FIRST_HAND_TTL_MS
  }

  /** This node's mirror let its containerd fetch `digest` upstream without a choice (a small blob). */
  noteUpstream (digest: string): void {
    this.#firstHand.delete(digest)
    if (this.#firstHand.size >= MAX_FIRST_HAND) this.#firstHand.delete(this.#firstHand.keys().next().value as string)
    this.#firstHand.set(digest, this.#now())
  }

  /** This node's containerd has started receiving `digest`: its `arriving:` key takes over. */
  onArriving (digest: string): void {
    const timer = this.#fetching.get(digest)
    if (timer === undefined) return
    clearTimeout(timer)
    this.#fetching.delete(digest)
    this.#c.keys.remove(fetchingKey(digest))
  }

  /**
   * This node's containerd gave up a download of `digest` without a blob. When this node was the one
   * picked to fetch it, the nodes waiting on it choose again at once (the `fetching:` key goes),
   * and this node stays out of the choice for a while: its upstream (or its way there) failed,
   * and a node that cannot fetch would only make the others wait and then fail its own pull again.
   */
  onAbandoned (digest: string): void {
    const timer = this.#fetching.get(digest)
    if (timer !== undefined) {
      clearTimeout(timer)
      this.#fetching.delete(digest)
      this.#c.keys.remove(fetchingKey(digest))
    } else if (!this.isFirstHand(digest)) {
      // A download fed by a peer that broke off: not this node's upstream failing.
      return
    }
    if (!this.isUpstreamSuspect) {
      this.#c.log.warn({ digest, forMs: this.#upstreamFailureMemoryMs }, 'pull storm: a download this node let its containerd fetch upstream failed; it leaves the fetching to other nodes for a while')
    }
    this.#upstreamFailedAtMs = this.#now()
  }

  close (): void {
    this.#isClosed = true
    for (const [digest, timer] of this.#fetching) {
      clearTimeout(timer)
      this.#c.keys.remove(fetchingKey(digest))
    }
    this.#fetching.clear()
  }

  async #run (digest: string): Promise<StormOutcome> {
    const { router, keys, log } = this.#c
    const self = this.#c.selfId()
    if (self === undefined) return 'busy'
    const want = wantKey(digest)
    // A node that cannot fetch does not ask to be picked; it only waits for the others.
    const isCandidate = !this.isUpstreamSuspect
    if (isCandidate && !keys.add(want)) return this.#end(digest, 'busy')
    const started = performance.now()
    try {
      for (;;) {
        if (this.#isClosed) return 'busy'
        // Asked again while our own containerd fetches it (a resumed download): upstream again.
        if (this.#fetching.has(digest)) return this.#end(digest, 'chosen')
        if (await this.hasSource(digest)) return this.#end(digest, 'source')
        const elapsed = performance.now() - started
        // A live node that took the job has got its 404 and its containerd is on the way
        // upstream; on busy nodes its download took more than 2 s to show (10 nodes on 2 cores,
        // bench/pull-storm.ts), and giving up then only sent one more copy upstream. So while one
        // is known, the wait may run as long again, and no longer.
        if (elapsed >= this.#waitMs && (elapsed >= FETCHING_GRACE_FACTOR * this.#waitMs || !await this.#isAdvertised(fetchingKey(digest)))) {
          return this.#take(digest, 'timeout')
        }
        if (isCandidate && elapsed >= this.#collectMs && !await this.#isAdvertised(fetchingKey(digest))) {
          const isUsable = this.#c.isUsable
          const wanters = (await advertisers(router, want, 256)).filter((p) => isUsable === undefined || isUsable(p.id))
          let best: string = self
          let bestScore = score(digest, self)
          for (const peer of wanters) {
            const s = score(digest, peer.id)
            if (s > bestScore) {
              best = peer.id
              bestScore = s
            }
          }
          if (best === self) {
            log.debug({ digest, wanters: wanters.length + 1, waitedMs: Math.round(elapsed) }, 'pull storm: this node fetches the blob upstream')
            return this.#take(digest, 'chosen')
          }
        }
        await sleep(this.#pollMs, undefined, { ref: false })
      }
    } finally {
      if (isCandidate) keys.remove(want)
    }
  }

  /** This node's containerd will fetch `digest` upstream: let late comers wait for it. */
  #take (digest: string, outcome: 'chosen' | 'timeout'): StormOutcome {
    this.noteUpstream(digest)
    if (!this.#fetching.has(digest) && this.#c.keys.add(fetchingKey(digest))) {
      const timer = setTimeout(() => {
        this.#fetching.delete(digest)
        this.#c.keys.remove(fetchingKey(digest))
      }, this.#fetchingTtlMs)
      timer.unref()
      this.#fetching.set(digest, timer)
    }
    this.#c.onFetching?.(digest)
    return this.#end(digest, outcome)
  }

  #end (digest: string, outcome: StormOutcome): StormOutcome {
    this.#c.onOutcome?.(outcome)
    if (outcome === 'timeout') this.#c.log.info({ digest, waitMs: this.#waitMs }, 'pull storm: no node fetched the blob in time; this node fetches it upstream')
    return outcome
  }
}

/** Rendezvous score of a node for a blob: the same on every node, spread evenly over blobs. */
export function score (digest: string, nodeId: string): bigint {
  return createHash('sha256').update(digest).update('\0').update(nodeId).digest().readBigUInt64BE(0)
}

async function untilAborted<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then((value) => {
      signal.removeEventListener('abort', onAbort)
      resolve(value)
    }, (err: unknown) => {
      signal.removeEventListener('abort', onAbort)
      reject(err)
    })
  })
}
