import assert from 'node:assert/strict'
import { getHeapStatistics } from 'node:v8'
import { describe, it } from 'node:test'
import { createLogger } from './logger.js'
import { startHeapTrimmer, type HeapFigures, type HeapTrimmer } from './heap-trim.js'
import type { PageOutResult } from './page-out.js'

const MiB = 1024 * 1024
const log = createLogger({ level: 'silent' })

function fake (figures: HeapFigures[]): { figures: () => HeapFigures, collect: () => boolean, collected: () => number, clock: { ms: number } } {
  let collected = 0
  const clock = { ms: 1_000_000 }
  return {
    figures: () => figures[0]!,
    collect: () => { collected++; return true },
    collected: () => collected,
    clock
  }
}

/** Sets the heap figures the trimmer will read (MiB), runs one check, and returns the fake's collections so far. */
function checkAt (trimmer: HeapTrimmer, f: { collected: () => number }, figures: HeapFigures[], committedMiB: number, usedMiB: number): number {
  figures[0] = { committedBytes: committedMiB * MiB, usedBytes: usedMiB * MiB }
  trimmer.check()
  return f.collected()
}

describe('heap trimmer', () => {
  it('trims glibc\'s heap on every check, after the collection when one runs', () => {
    const figures: HeapFigures[] = [{ committedBytes: 30 * MiB, usedBytes: 25 * MiB }]
    const f = fake(figures)
    const calls: string[] = []
    let gives = false
    const trimmer = startHeapTrimmer({
      pageOut: null,
      log,
      figures: f.figures,
      collect: () => { calls.push('collect'); return f.collect() },
      trimNative: () => { calls.push('trim'); return gives },
      now: () => f.clock.ms,
      growthBytes: Number.POSITIVE_INFINITY
    })
    try {
      trimmer.check()
      assert.deepEqual(calls, ['trim'], 'no V8 slack: the glibc trim still runs')
      assert.equal(trimmer.nativeTrims, 0, 'a trim that gave nothing back is not counted')
      figures[0] = { committedBytes: 68 * MiB, usedBytes: 34 * MiB }
      gives = true
      trimmer.check()
      assert.deepEqual(calls, ['trim', 'collect', 'trim'])
      assert.equal(trimmer.nativeTrims, 1)
    } finally {
      trimmer.stop()
    }
  })

  it('runs without a glibc trim when told to (null)', () => {
    const f = fake([{ committedBytes: 68 * MiB, usedBytes: 34 * MiB }])
    const trimmer = startHeapTrimmer({ pageOut: null, log, figures: f.figures, collect: f.collect, trimNative: null, now: () => f.clock.ms })
    try {
      trimmer.check()
      assert.equal(f.collected(), 1)
      assert.equal(trimmer.nativeTrims, 0)
    } finally {
      trimmer.stop()
    }
  })

  it('collects only when the unused committed heap is both large and at least half the used heap', () => {
    const figures: HeapFigures[] = [{ committedBytes: 30 * MiB, usedBytes: 25 * MiB }]
    const f = fake(figures)
    const trimmer = startHeapTrimmer({ pageOut: null, log, figures: f.figures, collect: f.collect, now: () => f.clock.ms, slackBytes: 16 * MiB, growthBytes: Number.POSITIVE_INFINITY, minIntervalMs: 60_000 })
    try {
      assert.equal(checkAt(trimmer, f, figures, 30, 25), 0, '5 MiB unused is not worth a collection')
      assert.equal(checkAt(trimmer, f, figures, 120, 100), 0, '20 MiB unused beside 100 MiB used is ordinary headroom')
      assert.equal(checkAt(trimmer, f, figures, 68, 34), 1)
      assert.equal(trimmer.collections, 1)
    } finally {
      trimmer.stop()
    }
  })

  it('collects when the used heap grew since the last collection, though the slack is small', () => {
    // A burst's garbage counts as used until a collection: high used, little slack.
    const figures: HeapFigures[] = [{ committedBytes: 44 * MiB, usedBytes: 40 * MiB }]
    const f = fake(figures)
    const collect = (): boolean => {
      figures[0] = { committedBytes: 44 * MiB, usedBytes: 26 * MiB }
      return f.collect()
    }
    const trimmer = startHeapTrimmer({ pageOut: null, log, figures: f.figures, collect, now: () => f.clock.ms, trimNative: null, slackBytes: 16 * MiB, growthBytes: 8 * MiB, minIntervalMs: 60_000 })
    try {
      trimmer.check()
      assert.equal(f.collected(), 1, 'the first check collects what start-up left (growth from nothing)')
      f.clock.ms += 60_000
      assert.equal(checkAt(trimmer, f, figures, 44, 33), 1, '7 MiB of growth since the collection (26 -> 33) is not enough')
      assert.equal(checkAt(trimmer, f, figures, 44, 34), 2, '8 MiB of growth is')
      assert.equal(checkAt(trimmer, f, figures, 44, 40), 2, 'within the interval, growth waits')
    } finally {
      trimmer.stop()
    }
  })

  it('collects when memory outside the heap was let go of, once per interval, and not again for it', () => {
    const figures: HeapFigures[] = [{ committedBytes: 30 * MiB, usedBytes: 28 * MiB }]
    const f = fake(figures)
    let toRelease = 0
    const trimmer = startHeapTrimmer({ pageOut: null, log, figures: f.figures, collect: f.collect, now: () => f.clock.ms, trimNative: null, slackBytes: 16 * MiB, growthBytes: 8 * MiB, minIntervalMs: 60_000, release: () => { const n = toRelease; toRelease = 0; return n } })
    try {
      trimmer.check()
      assert.equal(f.collected(), 1, 'start-up')
      toRelease = 96 * MiB
      f.clock.ms += 30_000
      trimmer.check()
      assert.equal(f.collected(), 1, 'within the interval the released bytes wait')
      f.clock.ms += 30_000
      trimmer.check()
      assert.equal(f.collected(), 2, 'then they are collected')
      f.clock.ms += 60_000
      trimmer.check()
      assert.equal(f.collected(), 2, 'a quiet heap and nothing let go of since: no collection')
    } finally {
      trimmer.stop()
    }
  })

  it('collects at most once per interval, and stops trying when no collection can run', () => {
    const figures: HeapFigures[] = [{ committedBytes: 68 * MiB, usedBytes: 34 * MiB }]
    const f = fake(figures)
    let available = true
    const trimmer = startHeapTrimmer({
      pageOut: null,
      log,
      figures: f.figures,
      collect: () => available && f.collect(),
      now: () => f.clock.ms,
      minIntervalMs: 60_000
    })
    try {
      trimmer.check()
      f.clock.ms += 59_000
      trimmer.check()
      assert.equal(f.collected(), 1, 'a second collection inside the interval')
      f.clock.ms += 1_000
      trimmer.check()
      assert.equal(f.collected(), 2)
      available = false
      f.clock.ms += 60_000
      trimmer.check()
      available = true
      f.clock.ms += 60_000
      trimmer.check()
      assert.equal(f.collected(), 2, 'kept trying after the collection was found unavailable')
    } finally {
      trimmer.stop()
    }
  })

  it('pages out the executable once, at the first check after its delay', () => {
    const f = fake([{ committedBytes: 30 * MiB, usedBytes: 25 * MiB }])
    let pageOuts = 0
    const pageOut = (): PageOutResult => {
      pageOuts++
      return { mappings: 3, bytes: 60 * MiB, errno: 0, fileKiBBefore: 56_000, fileKiBAfter: 11_000 }
    }
    const trimmer = startHeapTrimmer({ log, figures: f.figures, collect: f.collect, trimNative: null, now: () => f.clock.ms, pageOut, pageOutAfterMs: 90_000 })
    try {
      f.clock.ms += 30_000
      trimmer.check()
      f.clock.ms += 30_000
      trimmer.check()
      assert.equal(pageOuts, 0, 'not while start-up may still run')
      assert.equal(trimmer.isPagedOut, false)
      f.clock.ms += 30_000
      trimmer.check()
      assert.equal(pageOuts, 1, 'at the check 90 s after the start')
      assert.equal(trimmer.isPagedOut, true)
      for (let i = 0; i < 5; i++) {
        f.clock.ms += 30_000
        trimmer.check()
      }
      assert.equal(pageOuts, 1, 'once: what the node runs afterwards is its working set')
    } finally {
      trimmer.stop()
    }
  })

  it('runs a real full V8 collection without --expose-gc', () => {
    assert.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined', 'this test must run without --expose-gc')
    // The figures claim a large unused heap so the check decides to collect; the collection is V8's.
    let garbage: unknown[] | undefined = Array.from({ length: 200_000 }, (_, i) => ({ i, s: `x${i}` }))
    const usedWithGarbage = getHeapStatistics().used_heap_size
    garbage = undefined
    const trimmer = startHeapTrimmer({ pageOut: null, log, figures: () => ({ committedBytes: 100 * MiB, usedBytes: 10 * MiB }) })
    try {
      trimmer.check()
      assert.equal(trimmer.collections, 1)
      assert.equal(garbage, undefined)
      assert.ok(getHeapStatistics().used_heap_size < usedWithGarbage, 'the collection freed the dropped objects')
    } finally {
      trimmer.stop()
    }
  })
})
