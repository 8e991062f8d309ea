import type { Descriptor } from '../store/index.js'

/** How long a peer's verified manifest answer is reused. */
export const DEFAULT_ANSWER_TTL_MS = 10_000
/** Entries kept; the oldest goes first. */
const MAX_ENTRIES = 256
/** Manifest bytes kept per entry at most (bigger ones keep only their descriptor). */
const MAX_BYTES_PER_ENTRY = 256 * 1024

interface Entry {
  descriptor: Descriptor
  bytes?: Buffer
  expiresMs: number
}

/**
 * Manifests peers served recently, by digest. A digest names its bytes for ever, so a descriptor
 * (and bytes hashed to it) checked once stays true; what can change is who holds it and what a tag
 * names, so the cache never answers those: the mirror still asks the router which peers hold the
 * content, and for a tag takes only the digest that a holder's signed record pins now. The time
 * limit bounds how long an answer outlives a holder that lost the content without saying so.
 */
export class AnswerCache {
  readonly #entries = new Map<string, Entry>()
  readonly #ttlMs: number
  readonly #now: () => number

  constructor (init: { ttlMs?: number, now?: () => number } = {}) {
    this.#ttlMs = init.ttlMs ?? DEFAULT_ANSWER_TTL_MS
    this.#now = init.now ?? Date.now
  }

  get size (): number {
    return this.#entries.size
  }

  /** A live entry for `digest`; with `needsBytes`, only one that holds the manifest's bytes. */
  get (digest: string, needsBytes: boolean): { descriptor: Descriptor, bytes?: Buffer } | undefined {
    const entry = this.#entries.get(digest)
    if (entry === undefined) return undefined
    if (entry.expiresMs <= this.#now()) {
      this.#entries.delete(digest)
      return undefined
    }
    if (needsBytes && entry.bytes === undefined) return undefined
    return entry
  }

  /** Whether anything is kept for `digest` (expired or not): worth a lookup at all. */
  has (digest: string): boolean {
    return this.#entries.has(digest)
  }

  /** Records a checked answer: `descriptor.digest` is what the bytes (or the request) were checked against. */
  set (descriptor: Descriptor, bytes?: Buffer): void {
    const previous = this.#entries.get(descriptor.digest)
    this.#entries.delete(descriptor.digest)
    const kept = bytes !== undefined && bytes.length <= MAX_BYTES_PER_ENTRY ? bytes : previous?.bytes
    this.#entries.set(descriptor.digest, { descriptor, ...(kept === undefined ? {} : { bytes: kept }), expiresMs: this.#now() + this.#ttlMs })
    while (this.#entries.size > MAX_ENTRIES) {
      const oldest = this.#entries.keys().next().value
      if (oldest === undefined) break
      this.#entries.delete(oldest)
    }
  }

  /** Forgets a digest whose answers proved wrong. */
  delete (digest: string): void {
    this.#entries.delete(digest)
  }
}
