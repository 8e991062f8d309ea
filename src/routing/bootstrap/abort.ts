/**
 * One signal for a network call: the caller's (when given) and a timeout. The timeout's own
 * signal is returned apart so an error can say "timed out" instead of "aborted".
 */
export function callSignal (signal: AbortSignal | undefined, timeoutMs: number): { signal: AbortSignal, timeout: AbortSignal } {
  const timeout = AbortSignal.timeout(timeoutMs)
  return { signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]), timeout }
}

/**
 * Settles with `promise` or rejects with the signal's reason, whichever comes first. For calls
 * that cannot be cancelled (getaddrinfo runs on the libuv pool): we stop waiting, the lookup
 * finishes in the background and its result is dropped.
 */
export async function raceAbort<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  // Whatever a dropped call settles with later has nobody left to tell.
  promise.catch(() => {})
  signal.throwIfAborted()
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}
