/**
 * Binary search in an ascending array: the first index whose value is not below `x` (where `x`
 * is, or would be inserted). Shared by the hedger's latency window and a node's own record keys.
 */
export function lowerBound<T extends number | string> (sorted: readonly T[], x: T): number {
  let lo = 0
  let hi = sorted.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if ((sorted[mid] as T) < x) lo = mid + 1
    else hi = mid
  }
  return lo
}
