import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { RecentRequests, type RecentRequest } from './recent-requests.js'

function entry (n: number): RecentRequest {
  return { atMs: n, method: 'GET', kind: 'blob', ref: `r${n}`, registry: '', client: 'containerd', source: 'local', status: 200, bytes: n, durationMs: 1, isAborted: false }
}

describe('RecentRequests', () => {
  it('lists newest first and keeps only the last `capacity` entries', () => {
    const ring = new RecentRequests(3)
    assert.deepEqual(ring.list(), [])
    for (let i = 1; i <= 5; i++) ring.add(entry(i))
    assert.deepEqual(ring.list().map((e) => e.atMs), [5, 4, 3])
    assert.deepEqual(ring.list(2).map((e) => e.atMs), [5, 4])
    assert.equal(ring.total, 5)
  })

  it('lists a partly filled ring without holes', () => {
    const ring = new RecentRequests(4)
    ring.add(entry(1))
    ring.add(entry(2))
    assert.deepEqual(ring.list().map((e) => e.atMs), [2, 1])
  })

  it('refuses a capacity that is not a positive integer', () => {
    assert.throws(() => new RecentRequests(0), RangeError)
    assert.throws(() => new RecentRequests(1.5), RangeError)
  })
})
