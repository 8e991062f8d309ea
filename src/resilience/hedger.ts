import { lowerBound } from '../sorted.js'

/** Spegel's hedge percentiles (pkg/registry/registry.go): a new attempt at p80, p85 and p90 of past latencies. */
export const DEFAULT_HEDGE_PERCENTILES: readonly number[] = Object.freeze([80, 85, 90])
/** Hedge delay while nothing has been observed yet. */
export const DEFAULT_HEDGE_INITIAL_MS = 50
/** Latencies kept; old samples fall out so the delays follow the cluster's current state. */
export const DEFAULT_HEDGE_WINDOW = 1024

export interface HedgerInit {
  percentiles?: readonly number[]
  initialMs?: number
  windowSize?: number
}

/**
 * When to start another attempt at the same work: at given percentiles of the latencies of
 * earlier successful attempts, so that slow outliers are hedged and normal requests are not
 * duplicated.
 *
 * Unlike Spegel's HDR histogram (1 significant digit, all history) this keeps exact values
 * over a sliding window of recent samples; percentiles are nearest-rank.
 */
export class Hedger {
  readonly percentiles: readonly number[]
  readonly initialMs: number
  readonly #window: number[]
  readonly #windowSize: number
  #next = 0
  /**
   * The window's values in ascending order, kept so as each sample comes in. Sorting the window
   * again on the first lookup after every sample cost a relaying node 6 % of its CPU under
   * bench/load.ts (mirror target: every request records and the next one looks up, 1,024 values
   * sorted with a comparator each time); now a sample costs two binary searches and two moves of
   * at most 1,024 numbers.
   */
  readonly #sorted: number[] = []

  constructor (init: HedgerInit = {}) {
    this.percentiles = Object.freeze([...(init.percentiles ?? DEFAULT_HEDGE_PERCENTILES)])
    for (const p of this.percentiles) {
      if (!(p > 0 && p <= 100)) throw new RangeError(`hedge percentile must be in (0, 100], got ${p}`)
    }
    this.initialMs = init.initialMs ?? DEFAULT_HEDGE_INITIAL_MS
    if (!(this.initialMs >= 0)) throw new RangeError(`initial hedge delay must be >= 0, got ${this.initialMs}`)
    this.#windowSize = init.windowSize ?? DEFAULT_HEDGE_WINDOW
    if (!Number.isInteger(this.#windowSize) || this.#windowSize < 1) throw new RangeError(`window size must be a positive integer, got ${this.#windowSize}`)
    this.#window = []
  }

  /** Number of hedges per operation (one per percentile). */
  get size (): number {
    return this.percentiles.length
  }

  /** Records the latency of a successful attempt. */
  record (latencyMs: number): void {
    if (!Number.isFinite(latencyMs) || latencyMs < 0) return
    if (this.#window.length < this.#windowSize) {
      this.#window.push(latencyMs)
    } else {
      const old = this.#window[this.#next] as number
      this.#window[this.#next] = latencyMs
      this.#sorted.splice(lowerBound(this.#sorted, old), 1)
    }
    this.#sorted.splice(lowerBound(this.#sorted, latencyMs), 0, latencyMs)
    this.#next = (this.#next + 1) % this.#windowSize
  }

  /** Latency at percentile `p`; the initial delay with no data or when the value rounds to 0 ms. */
  durationMs (p: number): number {
    const sorted = this.#sorted
    if (sorted.length === 0) return this.initialMs
    const rank = Math.min(sorted.length, Math.max(1, Math.ceil(p / 100 * sorted.length)))
    const value = Math.round(sorted[rank - 1] ?? 0)
    // Sub-millisecond history would hedge instantly, doubling every request for no gain.
    return value === 0 ? this.initialMs : value
  }

  /** The delays, from the start of an operation, at which each hedge fires (ascending). */
  delaysMs (): number[] {
    return this.percentiles.map((p) => this.durationMs(p)).sort((a, b) => a - b)
  }

  highestPercentileMs (): number {
    if (this.percentiles.length === 0) return this.initialMs
    return this.durationMs(Math.max(...this.percentiles))
  }
}
