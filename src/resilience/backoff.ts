import { setTimeout as delay } from 'node:timers/promises'

export interface BackoffInit {
  /** Delay before the first retry. */
  initialMs: number
  /** Upper bound of any delay. */
  maxMs: number
  /**
   * Fraction of each delay drawn at random (0 = exact exponential curve, 1 = full jitter).
   * Jitter keeps a fleet of nodes that failed together from retrying together.
   */
  jitter?: number
  random?: () => number
}

/**
 * Delay before retry number `attempt` (1-based): `initialMs × 2^(attempt−1)` capped at
 * `maxMs` (Spegel's BackoffDelay in internal/resilient/retry.go: 10, 20, 40, 80, 140 ms for 10/140),
 * then reduced by up to `jitter` of itself at random.
 */
export function backoffDelayMs (attempt: number, init: BackoffInit): number {
  const { initialMs, maxMs } = init
  const jitter = Math.min(1, Math.max(0, init.jitter ?? 0))
  const exponent = Math.min(Math.max(0, attempt - 1), 30)
  const ceiling = Math.min(maxMs, initialMs * 2 ** exponent)
  if (jitter === 0) return ceiling
  const random = init.random ?? Math.random
  return Math.round(ceiling * (1 - jitter * random()))
}

export interface RetryOptions {
  /** Total calls, first included; 0 or undefined means until it succeeds or the signal aborts. */
  attempts?: number
  /** Delay before retry `attempt` (1-based); defaults to no delay. */
  delayMs?: (attempt: number) => number
  signal?: AbortSignal
  /** Called after each failure that will be retried, before the delay. */
  onRetry?: (attempt: number, err: unknown) => void
  /** Errors for which retrying is pointless; they are thrown at once. */
  isPermanent?: (err: unknown) => boolean
}

/**
 * Calls `fn` until it resolves. When every attempt fails, throws an AggregateError of all
 * failures (the last one is also its `cause`). An abort throws the signal's reason, not an
 * aggregate, so callers can tell giving up from being told to stop.
 */
export async function retry<T> (fn: (attempt: number, signal: AbortSignal | undefined) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = options.attempts ?? 0
  if (!Number.isInteger(attempts) || attempts < 0) throw new RangeError(`attempts must be a non-negative integer, got ${attempts}`)
  const errors: unknown[] = []
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted()
    try {
      return await fn(attempt, options.signal)
    } catch (err) {
      options.signal?.throwIfAborted()
      if (options.isPermanent?.(err) === true) throw err
      // Unlimited retries would otherwise keep every error ever seen.
      if (attempts === 0 && errors.length >= 10) errors.shift()
      errors.push(err)
      if (attempts !== 0 && attempt >= attempts) {
        throw new AggregateError(errors, `failed after ${attempt} attempts: ${errorMessage(err)}`, { cause: err })
      }
      options.onRetry?.(attempt, err)
    }
    const ms = options.delayMs?.(attempt) ?? 0
    if (ms > 0) {
      try {
        await delay(ms, undefined, options.signal === undefined ? undefined : { signal: options.signal })
      } catch (err) {
        // timers/promises wraps the reason in its own AbortError; callers expect the reason itself.
        options.signal?.throwIfAborted()
        throw err
      }
    }
  }
}

function errorMessage (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
