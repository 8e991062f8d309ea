import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { FrameType, compactKey, type RecordFull } from './codec.js'
import { ContentIndex } from './content-index.js'

const EXPIRY = 1_000
const make = (): ContentIndex => new ContentIndex({ selfId: 'self', expiryMs: EXPIRY, tombstoneTtlMs: 5_000 })
const full = (origin: string, epoch: number, seq: number, keys: string[], ageMs = 0): RecordFull => ({
  type: FrameType.RecordFull, origin, epoch, seq, ageMs, registryAddress: `${origin}:5000`, addrs: [`/ip4/10.0.0.1/tcp/5001`], keys
})
const ids = (idx: ContentIndex, key: string, now = 0): string[] => idx.lookup(key, now).map((p) => p.id).sort()
const D = compactKey(`sha256:${'a'.repeat(64)}`)

describe('ContentIndex', () => {
  it('applies whole records, shares keys between holders and never holds itself', () => {
    const idx = make()
    assert.deepEqual(idx.applyFull([full('a', 1, 1, [D, 'k1']), full('b', 1, 3, [D]), full('self', 1, 1, ['k1'])], 0).sort(), ['a', 'b'])
    assert.deepEqual(ids(idx, D), ['a', 'b'])
    assert.deepEqual(ids(idx, 'k1'), ['a'])
    assert.deepEqual(idx.lookup(D, 0)[0], { id: idx.lookup(D, 0)[0]?.id, registryAddress: `${idx.lookup(D, 0)[0]?.id}:5000` })
    assert.equal(idx.distinctKeys, 2)
    assert.equal(idx.get('a')?.keyCount, 2)
    // Same or older versions change nothing.
    assert.deepEqual(idx.applyFull([full('a', 1, 1, []), full('b', 0, 9, [])], 0), [])
    assert.deepEqual(ids(idx, 'k1'), ['a'])
    // A newer version replaces the record's keys; a newer epoch too.
    idx.applyFull([full('a', 1, 2, ['k2'])], 0)
    assert.deepEqual(ids(idx, D), ['b'])
    assert.deepEqual(ids(idx, 'k1'), [])
    assert.deepEqual(ids(idx, 'k2'), ['a'])
    idx.applyFull([full('b', 2, 0, ['k2'])], 0)
    assert.deepEqual(ids(idx, D), [])
    assert.deepEqual(ids(idx, 'k2'), ['a', 'b'])
    assert.deepEqual([...idx.keysOf(['a', 'b', 'zz'])], [['a', ['k2']], ['b', ['k2']]])
  })

  it('applies deltas in order, reports duplicates and gaps, and remembers what it wants', () => {
    const idx = make()
    idx.applyFull([full('a', 1, 1, ['k1'])], 0)
    const delta = (seq: number, adds: string[], removes: string[] = [], epoch = 1) => ({ type: FrameType.Delta, origin: 'a', epoch, seq, adds, removes } as const)
    assert.equal(idx.applyDelta(delta(2, ['k2'], ['k1']), 0), 'applied')
    assert.deepEqual(ids(idx, 'k2'), ['a'])
    assert.deepEqual(ids(idx, 'k1'), [])
    assert.equal(idx.applyDelta(delta(2, ['k9']), 0), 'duplicate')
    assert.equal(idx.applyDelta(delta(4, ['k4']), 0), 'gap')
    assert.deepEqual(ids(idx, 'k4'), [])
    assert.deepEqual(idx.wanted(0), [{ origin: 'a', epoch: 1, seq: 4 }])
    assert.equal(idx.isWanted('a', 1, 3), true)
    assert.equal(idx.applyDelta(delta(1, ['x']), 0), 'duplicate')
    assert.equal(idx.applyDelta({ ...delta(1, ['x']), origin: 'unknown' }, 0), 'gap')
    idx.applyFull([full('a', 1, 4, ['k4'])], 0)
    assert.deepEqual(idx.wanted(0), [{ origin: 'unknown', epoch: 1, seq: 1 }])
    // Wishes older than the expiry bound are dropped.
    assert.deepEqual(idx.wanted(EXPIRY + 1), [])
  })

  it('de-duplicates floods per (origin, epoch) and ignores its own messages', () => {
    const idx = make()
    assert.equal(idx.markDeltaSeen('a', 1, 1, 0), true)
    assert.equal(idx.markDeltaSeen('a', 1, 1, 0), false)
    assert.equal(idx.markDeltaSeen('a', 1, 2, 0), true)
    assert.equal(idx.markDeltaSeen('a', 2, 1, 0), true)
    assert.equal(idx.markDeltaSeen('a', 1, 9, 0), false)
    assert.equal(idx.markDeltaSeen('self', 1, 1, 0), false)
  })

  it('expires silent records and keeps live ones, counting age reported by others', () => {
    const idx = make()
    idx.applyFull([full('a', 1, 1, ['k']), full('b', 1, 1, ['k'], 600)], 0)
    assert.deepEqual(ids(idx, 'k', 300), ['a', 'b'])
    // b was last heard 600 ms before it reached us, so lookups skip it 400 ms later, before any sweep.
    assert.deepEqual(ids(idx, 'k', 401), ['a'])
    idx.heard('a', 1, 900)
    idx.heard('a', 0, 5_000) // another epoch: no evidence for this record
    assert.deepEqual(idx.expire(1_500), ['b'])
    assert.deepEqual(ids(idx, 'k', 1_500), ['a'])
    assert.equal(idx.get('b'), undefined)
    assert.deepEqual(idx.expire(2_000), ['a'])
    assert.equal(idx.distinctKeys, 0)
    // Records already older than the bound are not taken from a sync.
    assert.deepEqual(idx.applyFull([full('c', 1, 1, ['k'], EXPIRY + 1)], 3_000), [])
  })

  it('a goodbye removes the record for good; a newer epoch may come back', () => {
    const idx = make()
    idx.applyFull([full('a', 5, 3, ['k'])], 0)
    assert.equal(idx.goodbye('a', 5, 0), true)
    assert.equal(idx.goodbye('a', 5, 0), false)
    assert.deepEqual(ids(idx, 'k'), [])
    assert.deepEqual(idx.applyFull([full('a', 5, 9, ['k'])], 0), [])
    assert.equal(idx.markDeltaSeen('a', 5, 10, 0), false)
    assert.equal(idx.isBehind('a', 5, 10), false)
    assert.deepEqual(idx.tombstones(), [{ origin: 'a', epoch: 5 }])
    assert.deepEqual(idx.applyFull([full('a', 6, 0, ['k'])], 0), ['a'])
    assert.deepEqual(ids(idx, 'k'), ['a'])
    idx.expire(10_000)
    assert.deepEqual(idx.tombstones(), [])
  })

  it('reuses the slots of dropped records without mixing up keys', () => {
    const idx = make()
    idx.applyFull([full('a', 1, 1, ['ka', 'shared']), full('b', 1, 1, ['kb', 'shared'])], 0)
    idx.goodbye('a', 1, 0)
    idx.applyFull([full('c', 1, 1, ['kc'])], 0)
    assert.equal(idx.get('c')?.slot, 0)
    assert.deepEqual(ids(idx, 'ka'), [])
    assert.deepEqual(ids(idx, 'shared'), ['b'])
    assert.deepEqual(ids(idx, 'kc'), ['c'])
  })
})
