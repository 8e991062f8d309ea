import { setTimeout as delay } from 'node:timers/promises'

export interface WaitForOptions {
  timeoutMs: number
  intervalMs?: number
  /** Names the condition in the timeout error, e.g. "containerd to answer ctr version". */
  what: string
  signal?: AbortSignal
}

/**
 * Polls `probe` until it returns something other than `undefined` or `false`, and returns that.
 * A probe that throws counts as "not yet"; its last error is reported (as `cause` too) when the
 * deadline passes, because that error usually explains why the condition never held.
 */
export async function waitFor<T> (
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  opts: WaitForOptions
): Promise<T> {
  const intervalMs = opts.intervalMs ?? 50
  const deadline = Date.now() + opts.timeoutMs
  let lastError: unknown
  let attempts = 0
  for (;;) {
    opts.signal?.throwIfAborted()
    attempts++
    try {
      const value = await probe()
      if (value !== undefined && value !== false) return value
      lastError = undefined
    } catch (err) {
      lastError = err
    }
    const remainingMs = deadline - Date.now()
    if (remainingMs <= 0) {
      const detail = lastError === undefined
        ? 'condition still false'
        : `last error: ${lastError instanceof Error ? lastError.message : String(lastError)}`
      throw new Error(`timed out after ${opts.timeoutMs} ms (${attempts} attempts) waiting for ${opts.what}; ${detail}`,
        lastError === undefined ? undefined : { cause: lastError })
    }
    await delay(Math.min(intervalMs, remainingMs), undefined, opts.signal === undefined ? undefined : { signal: opts.signal })
  }
}
