/** Exponential backoff with full jitter in [base/2, base], capped. `attempt` starts at 0. */
export function backoffMs (attempt: number, initialMs: number, maxMs: number): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30))
  return Math.round(base / 2 + Math.random() * base / 2)
}

/** Fisher–Yates, in place; returns its argument. */
export function shuffle<T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const tmp = items[i] as T
    items[i] = items[j] as T
    items[j] = tmp
  }
  return items
}

/** `base` ± `fraction` at random, so periodic work of many nodes does not fall into step. */
export function jitter (base: number, fraction = 0.2): number {
  return Math.round(base * (1 - fraction + Math.random() * 2 * fraction))
}
