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
