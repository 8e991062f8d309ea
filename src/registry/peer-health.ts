/** How long a peer that served corrupt bytes for a key is not asked for that key again. */
export const DEFAULT_BAD_PEER_TTL_MS = 15 * 60_000
/** Keys remembered with bad peers; the oldest entry goes first when full. */
export const DEFAULT_BAD_PEER_MAX_KEYS = 4096
/** A peer that just failed is tried last by other requests for this long (Spegel shares removals for 5 s). */
export const DEFAULT_RECENT_FAILURE_MS = 5000
const MAX_RECENT_FAILURES = 4096
const MAX_PEERS_PER_KEY = 64

export interface BadPeersInit {
  ttlMs?: number
  maxKeys?: number
  now?: () => number
}

/**
 * Peers that served bytes not matching the digest, per key, for a while. Bounded in keys
 * and in peers per key so a hostile or broken cluster cannot grow it without limit.
 */
export class BadPeers {
  readonly #byKey = new Map<string, Map<string, number>>()
  readonly #ttlMs: number
  readonly #maxKeys: number
  readonly #now: () => number

  constructor (init: BadPeersInit = {}) {
    this.#ttlMs = init.ttlMs ?? DEFAULT_BAD_PEER_TTL_MS
    this.#maxKeys = init.maxKeys ?? DEFAULT_BAD_PEER_MAX_KEYS
    this.#now = init.now ?? Date.now
    if (!Number.isInteger(this.#maxKeys) || this.#maxKeys < 1) throw new RangeError(`maxKeys must be a positive integer, got ${this.#maxKeys}`)
  }

  add (key: string, peerId: string): void {
    let peers = this.#byKey.get(key)
    if (peers === undefined) {
      peers = new Map()
    } else {
      // Re-inserted below so the key counts as the newest.
      this.#byKey.delete(key)
    }
    this.#byKey.set(key, peers)
    peers.delete(peerId)
    peers.set(peerId, this.#now() + this.#ttlMs)
    if (peers.size > MAX_PEERS_PER_KEY) peers.delete(peers.keys().next().value as string)
    while (this.#byKey.size > this.#maxKeys) this.#byKey.delete(this.#byKey.keys().next().value as string)
  }

  has (key: string, peerId: string): boolean {
    const peers = this.#byKey.get(key)
    const expiresAt = peers?.get(peerId)
    if (peers === undefined || expiresAt === undefined) return false
    if (expiresAt > this.#now()) return true
    peers.delete(peerId)
    if (peers.size === 0) this.#byKey.delete(key)
    return false
  }

  /** Peers currently recorded as bad for `key` (expired ones included until next checked). */
  count (key: string): number {
    return this.#byKey.get(key)?.size ?? 0
  }

  get keyCount (): number {
    return this.#byKey.size
  }
}

/**
 * Node-wide view of peers for choosing among them: requests in flight to each (so parallel
 * layer pulls spread over the peers holding them) and recent failures (so every request
 * does not pay for the same dead peer first).
 */
export class PeerLoad {
  readonly #active = new Map<string, number>()
  readonly #failedUntil = new Map<string, number>()
  readonly #recentFailureMs: number
  readonly #now: () => number

  constructor (init: { recentFailureMs?: number, now?: () => number } = {}) {
    this.#recentFailureMs = init.recentFailureMs ?? DEFAULT_RECENT_FAILURE_MS
    this.#now = init.now ?? Date.now
  }

  /** Counts a request to `peerId` until the returned function is called (idempotent). */
  begin (peerId: string): () => void {
    this.#active.set(peerId, (this.#active.get(peerId) ?? 0) + 1)
    let isDone = false
    return () => {
      if (isDone) return
      isDone = true
      const n = (this.#active.get(peerId) ?? 1) - 1
      if (n <= 0) this.#active.delete(peerId)
      else this.#active.set(peerId, n)
    }
  }

  active (peerId: string): number {
    return this.#active.get(peerId) ?? 0
  }

  failed (peerId: string): void {
    this.#failedUntil.delete(peerId)
    this.#failedUntil.set(peerId, this.#now() + this.#recentFailureMs)
    if (this.#failedUntil.size > MAX_RECENT_FAILURES) this.#failedUntil.delete(this.#failedUntil.keys().next().value as string)
  }

  /** A request to the peer failed to connect or answer a moment ago. */
  isFailed (peerId: string): boolean {
    const until = this.#failedUntil.get(peerId)
    return until !== undefined && until > this.#now()
  }

  /** Lower is better: recently failed peers after all others, then by requests in flight. */
  score (peerId: string): number {
    const until = this.#failedUntil.get(peerId)
    let penalty = 0
    if (until !== undefined) {
      if (until > this.#now()) penalty = 1_000_000
      else this.#failedUntil.delete(peerId)
    }
    return penalty + this.active(peerId)
  }
}
