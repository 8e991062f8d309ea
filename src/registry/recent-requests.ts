/** Where the bytes of a response came from. */
export type RequestSource = 'local' | 'peer' | 'none'

/** One finished /v2 request, as the web page lists it. */
export interface RecentRequest {
  /** Unix milliseconds when the request finished. */
  readonly atMs: number
  readonly method: string
  readonly kind: 'manifest' | 'blob' | 'other'
  /** Tag key (`registry/repository:tag`) or digest; the path when it did not parse. */
  readonly ref: string
  readonly registry: string
  /** `containerd` for requests from a client, `peer` for another node's mirror. */
  readonly client: 'containerd' | 'peer'
  readonly source: RequestSource
  readonly peer?: string
  readonly peerAddress?: string
  readonly status: number
  readonly bytes: number
  readonly durationMs: number
  /** The client went away (or we broke the response off) before the last byte. */
  readonly isAborted: boolean
  /** Short error text for failures; never a stack. */
  readonly error?: string
}

export const DEFAULT_RECENT_REQUESTS = 200

/**
 * A fixed-size ring of the latest requests, for operators looking at one node. Memory stays
 * constant whatever the request rate; the oldest entry is overwritten.
 */
export class RecentRequests {
  readonly #capacity: number
  readonly #ring: Array<RecentRequest | undefined>
  #next = 0
  #total = 0

  constructor (capacity = DEFAULT_RECENT_REQUESTS) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`)
    this.#capacity = capacity
    this.#ring = new Array<RecentRequest | undefined>(capacity)
  }

  /** Requests ever recorded, including those overwritten. */
  get total (): number {
    return this.#total
  }

  add (request: RecentRequest): void {
    this.#ring[this.#next] = request
    this.#next = (this.#next + 1) % this.#capacity
    this.#total++
  }

  /** Newest first, at most `limit`. */
  list (limit = this.#capacity): RecentRequest[] {
    const out: RecentRequest[] = []
    for (let i = 1; i <= this.#capacity && out.length < limit; i++) {
      const entry = this.#ring[(this.#next - i + this.#capacity) % this.#capacity]
      if (entry === undefined) break
      out.push(entry)
    }
    return out
  }
}
