export { Hedger, DEFAULT_HEDGE_INITIAL_MS, DEFAULT_HEDGE_PERCENTILES, DEFAULT_HEDGE_WINDOW, type HedgerInit } from './hedger.js'
export { backoffDelayMs, retry, type BackoffInit, type RetryOptions } from './backoff.js'
