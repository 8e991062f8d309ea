import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { backoffDelayMs, retry } from './backoff.js'

describe('backoffDelayMs', () => {
  it('doubles from the initial delay up to the cap (Spegel: 10, 20, 40, 80, 140)', () => {
    const delays = [1, 2, 3, 4, 5, 6].map((attempt) => backoffDelayMs(attempt, { initialMs: 10, maxMs: 140 }))
    assert.deepEqual(delays, [10, 20, 40, 80, 140, 140])
  })

  it('does not overflow for huge attempt numbers', () => {
    assert.equal(backoffDelayMs(10_000, { initialMs: 10, maxMs: 5000 }), 5000)
  })

  it('takes up to the jitter fraction off at random', () => {
    assert.equal(backoffDelayMs(3, { initialMs: 100, maxMs: 10_000, jitter: 0.5, random: () => 0 }), 400)
    assert.equal(backoffDelayMs(3, { initialMs: 100, maxMs: 10_000, jitter: 0.5, random: () => 1 }), 200)
    assert.equal(backoffDelayMs(3, { initialMs: 100, maxMs: 10_000, jitter: 1, random: () => 1 }), 0)
  })
})

describe('retry', () => {
  it('returns the first success', async () => {
    let calls = 0
    const value = await retry(async (attempt) => {
      calls++
      if (attempt < 3) throw new Error(`fail ${attempt}`)
      return 'ok'
    }, { attempts: 5 })
    assert.equal(value, 'ok')
    assert.equal(calls, 3)
  })

  it('gives up after the attempts with every error, the last as cause', async () => {
    const retried: number[] = []
    const err = await retry(async (attempt) => { throw new Error(`fail ${attempt}`) }, {
      attempts: 3,
      delayMs: () => 1,
      onRetry: (attempt) => { retried.push(attempt) }
    }).then(() => undefined, (e: unknown) => e)
    assert.ok(err instanceof AggregateError)
    assert.deepEqual(err.errors.map((e: Error) => e.message), ['fail 1', 'fail 2', 'fail 3'])
    assert.equal((err.cause as Error).message, 'fail 3')
    assert.deepEqual(retried, [1, 2])
  })

  it('stops at once on a permanent error', async () => {
    let calls = 0
    await assert.rejects(retry(async () => { calls++; throw new TypeError('bad input') }, {
      attempts: 5,
      isPermanent: (e) => e instanceof TypeError
    }), TypeError)
    assert.equal(calls, 1)
  })

  it('throws the abort reason, also while sleeping, and never calls again', async () => {
    const controller = new AbortController()
    let calls = 0
    const reason = new Error('shutting down')
    const done = retry(async () => {
      calls++
      queueMicrotask(() => { controller.abort(reason) })
      throw new Error('fail')
    }, { delayMs: () => 60_000, signal: controller.signal })
    await assert.rejects(done, (e) => e === reason)
    assert.equal(calls, 1)
  })

  it('retries without limit when attempts is 0', async () => {
    let calls = 0
    const value = await retry(async () => {
      if (++calls < 50) throw new Error('not yet')
      return calls
    })
    assert.equal(value, 50)
  })
})
