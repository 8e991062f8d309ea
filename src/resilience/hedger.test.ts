import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { Hedger } from './hedger.js'

describe('Hedger', () => {
  it('uses the initial delay for every percentile without data', () => {
    const hedger = new Hedger({ percentiles: [80, 85, 90], initialMs: 100 })
    assert.deepEqual(hedger.delaysMs(), [100, 100, 100])
    assert.equal(hedger.highestPercentileMs(), 100)
    assert.equal(hedger.size, 3)
  })

  it('defaults to Spegel’s percentiles and 50 ms', () => {
    const hedger = new Hedger()
    assert.deepEqual([...hedger.percentiles], [80, 85, 90])
    assert.deepEqual(hedger.delaysMs(), [50, 50, 50])
  })

  it('follows recorded latencies at nearest-rank percentiles', () => {
    const hedger = new Hedger({ percentiles: [80, 90, 95], initialMs: 100 })
    for (const ms of [100, 30, 70, 10, 90, 50, 20, 80, 40, 60]) hedger.record(ms)
    assert.deepEqual(hedger.delaysMs(), [80, 90, 100])
    assert.equal(hedger.durationMs(50), 50)
    assert.equal(hedger.highestPercentileMs(), 100)
  })

  it('returns the delays in ascending order whatever the percentile order', () => {
    const hedger = new Hedger({ percentiles: [90, 50], initialMs: 1 })
    for (let ms = 1; ms <= 100; ms++) hedger.record(ms)
    assert.deepEqual(hedger.delaysMs(), [50, 90])
  })

  it('treats sub-millisecond history as no data, so it never hedges at once', () => {
    const hedger = new Hedger({ initialMs: 40 })
    hedger.record(0.2)
    hedger.record(0.4)
    assert.deepEqual(hedger.delaysMs(), [40, 40, 40])
  })

  it('keeps only a window of recent samples', () => {
    const hedger = new Hedger({ percentiles: [100], windowSize: 3 })
    for (const ms of [1000, 10, 20, 30]) hedger.record(ms)
    assert.deepEqual(hedger.delaysMs(), [30])
  })

  it('gives the nearest-rank percentile of exactly the last windowSize samples, whatever they were', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 16 }),
      // Few distinct values, so that duplicates enter and leave the window.
      fc.array(fc.integer({ min: 1, max: 12 }), { maxLength: 80 }),
      (windowSize, samples) => {
        const hedger = new Hedger({ percentiles: [50], initialMs: 0, windowSize })
        for (const [i, ms] of samples.entries()) {
          hedger.record(ms)
          const window = samples.slice(Math.max(0, i + 1 - windowSize), i + 1).sort((a, b) => a - b)
          for (const p of [1, 25, 50, 80, 99, 100]) {
            const expected = window[Math.min(window.length, Math.max(1, Math.ceil(p / 100 * window.length))) - 1]
            assert.equal(hedger.durationMs(p), expected, `p${p} after ${i + 1} samples, window ${windowSize}`)
          }
        }
      }
    // A fixed seed keeps the run deterministic; a failure prints the shrunk case.
    ), { seed: 20261203, numRuns: 200 })
  })

  it('ignores nonsense samples and rejects nonsense settings', () => {
    const hedger = new Hedger({ percentiles: [100], initialMs: 7 })
    hedger.record(Number.NaN)
    hedger.record(-5)
    assert.deepEqual(hedger.delaysMs(), [7])
    assert.throws(() => new Hedger({ percentiles: [0] }), RangeError)
    assert.throws(() => new Hedger({ percentiles: [101] }), RangeError)
    assert.throws(() => new Hedger({ windowSize: 0 }), RangeError)
  })

  it('with no percentiles has no hedges and the initial delay as its highest', () => {
    const hedger = new Hedger({ percentiles: [], initialMs: 100 })
    assert.equal(hedger.size, 0)
    assert.deepEqual(hedger.delaysMs(), [])
    assert.equal(hedger.highestPercentileMs(), 100)
  })
})
