import { getHeapStatistics, setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import type { Logger } from './logger.js'
import { loadMallocTrim, type MallocTrim } from './malloc-trim.js'
import { loadExecutablePageOut, PAGE_OUT_AFTER_MS, type PageOutResult } from './page-out.js'

/**
 * Gives back the V8 heap a burst of work left committed and unused.
 *
 * Why: a node that indexes its containerd images (5,000 keys: every manifest read and parsed) or
 * takes in a cluster's index allocates fast for a few seconds, and with the image's 1 MiB young
 * generation most of that garbage is promoted. V8 grows the old space for it and then keeps the
 * pages: a full node with 5,000 keys of its own sat at 68 MiB of committed heap for 34 MiB used,
 * 25 s after the listing, and V8's own memory reducer had not run (bench: a single node after
 * `ctr images import` of 100 images × 50 keys). A full collection took the committed heap to
 * 34 MiB. An idle node runs too little JavaScript for V8 to collect on its own.
 *
 * So every HEAP_TRIM_CHECK_MS the heap's figures are read (a few µs), and when the committed part
 * exceeds the used part by HEAP_TRIM_SLACK_BYTES and by half the used part, or the used part grew
 * by HEAP_TRIM_GROWTH_BYTES since the last collection, one full collection runs, at most once in
 * HEAP_TRIM_MIN_INTERVAL_MS. A collection of such a heap takes tens of
 * milliseconds; a node serving blobs keeps serving meanwhile (the bytes move in the kernel and
 * in buffers outside the heap).
 *
 * Every check also calls glibc's malloc_trim(0) (src/native/malloc-trim.c) when the addon is
 * built: glibc keeps the free pages between live chunks of its heap, which V8's compiler zones
 * and a sync's socket reads leave behind, 2.4 to 7.5 MiB in a settled router process. The call
 * takes well under a millisecond, after the collection when there is one so that what it freed
 * goes back too.
 *
 * And the first check PAGE_OUT_AFTER_MS after the start pages out the node executable's start-up
 * pages, once (src/observability/page-out.ts).
 */
export const HEAP_TRIM_CHECK_MS = 30_000
export const HEAP_TRIM_SLACK_BYTES = 16 * 1024 * 1024
/**
 * Growth of the used heap since the last collection that is reason enough for one. Dead objects
 * count as used until a collection runs, so a burst's garbage (a sync of the cluster's index, a
 * relist of containerd) shows as a high used figure beside little slack, which the slack rule
 * alone never collects: 30 router processes × 5,000 keys read 101.3 and 101.6 MiB RSS (median)
 * 90 s after their sync without this rule, 90.1 and 90.7 with it (bench/datapath.ts, idle row).
 * An idle node grows its old space slowly, so this fires after real work, not at rest.
 */
export const HEAP_TRIM_GROWTH_BYTES = 8 * 1024 * 1024
export const HEAP_TRIM_MIN_INTERVAL_MS = 60_000

export interface HeapFigures {
  /** Committed heap (V8's total_heap_size). */
  committedBytes: number
  usedBytes: number
}

export interface HeapTrimmerInit {
  log: Logger
  checkMs?: number
  slackBytes?: number
  growthBytes?: number
  minIntervalMs?: number
  /** For tests; V8's heap statistics by default. */
  figures?: () => HeapFigures
  /** For tests; a full V8 collection by default. Returns false when none can run. */
  collect?: () => boolean
  /** glibc's malloc_trim(0) (src/observability/malloc-trim.ts) by default; null for none. */
  trimNative?: MallocTrim | null
  /** The executable's start-up pages, paged out once (src/observability/page-out.ts); null for none. */
  pageOut?: (() => PageOutResult | undefined) | null
  /** Time from the trimmer's start to that page-out; PAGE_OUT_AFTER_MS by default. */
  pageOutAfterMs?: number
  /**
   * Called at every check: memory outside V8's heap its owner lets go of now (idle pooled
   * buffers), in bytes. Only a collection frees it, so one runs (at most once per interval).
   */
  release?: () => number
  now?: () => number
}

export interface HeapTrimmer {
  /** Full collections run so far. */
  readonly collections: number
  /** glibc trims that gave memory back so far. */
  readonly nativeTrims: number
  /** True once the executable's start-up pages were paged out (or tried). */
  readonly isPagedOut: boolean
  /** One check, as the timer runs it (for tests). */
  check(): void
  stop(): void
}

export function startHeapTrimmer (init: HeapTrimmerInit): HeapTrimmer {
  const checkMs = init.checkMs ?? HEAP_TRIM_CHECK_MS
  const slackBytes = init.slackBytes ?? HEAP_TRIM_SLACK_BYTES
  const growthBytes = init.growthBytes ?? HEAP_TRIM_GROWTH_BYTES
  const minIntervalMs = init.minIntervalMs ?? HEAP_TRIM_MIN_INTERVAL_MS
  const figures = init.figures ?? v8Figures
  const collect = init.collect ?? fullCollection
  const now = init.now ?? Date.now
  const trimNative = init.trimNative === undefined ? loadMallocTrim() : init.trimNative ?? undefined
  const pageOut = init.pageOut === undefined ? loadExecutablePageOut() : init.pageOut ?? undefined
  const pageOutAtMs = now() + (init.pageOutAfterMs ?? PAGE_OUT_AFTER_MS)
  let isPagedOut = false
  let lastMs = Number.NEGATIVE_INFINITY
  /** The used heap right after the last collection; 0 before the first, so the first check after start-up's burst collects it. */
  let usedAfterLastBytes = 0
  let collections = 0
  let nativeTrims = 0
  let isDisabled = false
  /** Bytes let go of by `release` that no collection has freed yet. */
  let releasedBytes = 0

  const check = (): void => {
    releasedBytes += init.release?.() ?? 0
    collectIfWorthIt()
    if (trimNative?.() === true) nativeTrims++
    if (!isPagedOut && pageOut !== undefined && now() >= pageOutAtMs) {
      isPagedOut = true
      const result = pageOut()
      if (result !== undefined) init.log.info(result, 'paged out the start-up pages of the node executable')
    }
  }

  const collectIfWorthIt = (): void => {
    if (isDisabled) return
    const before = figures()
    const slack = before.committedBytes - before.usedBytes
    const isSlack = slack >= slackBytes && slack >= before.usedBytes / 2
    const hasGrown = before.usedBytes - usedAfterLastBytes >= growthBytes
    const hasReleased = releasedBytes > 0
    if (!isSlack && !hasGrown && !hasReleased) return
    const at = now()
    if (at - lastMs < minIntervalMs) return
    lastMs = at
    if (!collect()) {
      isDisabled = true
      init.log.debug('heap trimming off: no full collection available')
      return
    }
    collections++
    const after = figures()
    usedAfterLastBytes = after.usedBytes
    const reason = isSlack ? 'slack' : hasGrown ? 'growth' : 'released'
    init.log.debug({ committedBytes: before.committedBytes, usedBytes: before.usedBytes, committedAfterBytes: after.committedBytes, usedAfterBytes: after.usedBytes, releasedBytes, reason, durationMs: now() - at }, 'collected unused heap')
    releasedBytes = 0
  }

  const timer = setInterval(check, checkMs)
  timer.unref()
  return {
    get collections () { return collections },
    get nativeTrims () { return nativeTrims },
    get isPagedOut () { return isPagedOut },
    check,
    stop: () => { clearInterval(timer) }
  }
}

function v8Figures (): HeapFigures {
  const s = getHeapStatistics()
  return { committedBytes: s.total_heap_size, usedBytes: s.used_heap_size }
}

let gcFunction: (() => void) | undefined | null = null

/**
 * A full collection through V8's `gc`: the one NODE_OPTIONS=--expose-gc would give, or else
 * exposed here at run time (the flag only reaches contexts created after it is set, hence a new
 * one to fetch it from). False when neither works.
 */
export function fullCollection (): boolean {
  if (gcFunction === null) {
    const exposed = (globalThis as { gc?: unknown }).gc
    if (typeof exposed === 'function') {
      gcFunction = exposed as () => void
    } else {
      try {
        setFlagsFromString('--expose-gc')
        const fetched = runInNewContext('gc') as unknown
        gcFunction = typeof fetched === 'function' ? fetched as () => void : undefined
      } catch {
        gcFunction = undefined
      }
    }
  }
  if (gcFunction === undefined) return false
  gcFunction()
  return true
}
