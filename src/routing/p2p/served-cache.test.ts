import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ServedRecordCache } from './served-cache.js'

const bytes = (n: number): Uint8Array => new Uint8Array(n)

describe('ServedRecordCache', () => {
  it('answers only the exact version it holds', () => {
    const c = new ServedRecordCache(1000, 60_000)
    const b = bytes(10)
    c.set('a', 1, 5, b, 0)
    assert.equal(c.get('a', 1, 5, 1), b)
    assert.equal(c.get('a', 1, 6, 1), undefined)
    assert.equal(c.get('a', 2, 5, 1), undefined)
    assert.equal(c.get('b', 1, 5, 1), undefined)
  })

  it('replaces an origin\'s older statement and counts its bytes once', () => {
    const c = new ServedRecordCache(1000, 60_000)
    c.set('a', 1, 5, bytes(100), 0)
    c.set('a', 1, 6, bytes(30), 0)
    assert.equal(c.bytes, 30)
    assert.equal(c.size, 1)
    assert.equal(c.get('a', 1, 5, 0), undefined)
  })

  it('evicts the oldest to stay within its bytes, and keeps nothing bigger than the bound', () => {
    const c = new ServedRecordCache(100, 60_000)
    c.set('a', 1, 1, bytes(40), 0)
    c.set('b', 1, 1, bytes(40), 0)
    c.set('c', 1, 1, bytes(40), 0)
    assert.equal(c.get('a', 1, 1, 0), undefined)
    assert.notEqual(c.get('b', 1, 1, 0), undefined)
    assert.notEqual(c.get('c', 1, 1, 0), undefined)
    assert.equal(c.bytes, 80)
    c.set('d', 1, 1, bytes(101), 0)
    assert.equal(c.get('d', 1, 1, 0), undefined)
    assert.equal(c.bytes, 80)
  })

  it('drops what was not served for the idle time, and keeps what was', () => {
    const c = new ServedRecordCache(1000, 30_000)
    c.set('a', 1, 1, bytes(10), 0)
    c.set('b', 1, 1, bytes(20), 0)
    assert.equal(c.expire(29_999), 0)
    c.get('b', 1, 1, 20_000) // served: its idle time starts again
    assert.equal(c.expire(30_000), 1)
    assert.equal(c.get('a', 1, 1, 30_000), undefined)
    assert.equal(c.bytes, 20)
    assert.equal(c.expire(50_000), 1)
    assert.equal(c.bytes, 0)
    assert.equal(c.size, 0)
  })
})
