import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { BufferPool } from './buffer-pool.js'

describe('BufferPool', () => {
  it('never creates more than its bound and reuses what comes back', () => {
    const pool = new BufferPool(16, 2)
    const a = pool.tryAcquire()
    const b = pool.tryAcquire()
    assert.ok(a !== undefined && b !== undefined)
    assert.equal(pool.tryAcquire(), undefined)
    assert.equal(pool.created, 2)
    pool.release(a)
    assert.equal(pool.tryAcquire(), a)
    assert.equal(pool.created, 2)
  })

  it('serves waiters in arrival order', async () => {
    const pool = new BufferPool(8, 1)
    const only = pool.tryAcquire()
    assert.ok(only !== undefined)
    const order: number[] = []
    const first = pool.acquire().then((buf) => { order.push(1); return buf })
    const second = pool.acquire().then((buf) => { order.push(2); return buf })
    assert.equal(pool.waiting, 2)
    pool.release(only)
    pool.release(await first)
    await second
    assert.deepEqual(order, [1, 2])
  })

  it('lets an aborted waiter leave the line without taking a buffer', async () => {
    const pool = new BufferPool(8, 1)
    const only = pool.tryAcquire()
    assert.ok(only !== undefined)
    const controller = new AbortController()
    const gone = pool.acquire(controller.signal)
    const next = pool.acquire()
    controller.abort()
    await assert.rejects(gone)
    pool.release(only)
    assert.equal(await next, only)
    assert.equal(pool.waiting, 0)
  })

  it('replaces a forgotten buffer, for a waiter first', async () => {
    const pool = new BufferPool(8, 1)
    const lost = pool.tryAcquire()
    assert.ok(lost !== undefined)
    const waiter = pool.acquire()
    pool.forget(lost)
    const fresh = await waiter
    assert.notEqual(fresh, lost)
    assert.equal(pool.created, 1)
  })

  it('refuses buffers of another size and bad bounds', () => {
    const pool = new BufferPool(8, 1)
    assert.throws(() => { pool.release(Buffer.alloc(9)) }, /not a buffer of this pool/)
    assert.throws(() => new BufferPool(0, 1), /bufferBytes/)
    assert.throws(() => new BufferPool(8, 0), /maxBuffers/)
  })
})
