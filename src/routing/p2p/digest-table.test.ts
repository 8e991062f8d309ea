import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { compactKey } from './codec.js'
import { DigestTable, isCompactDigest, KeySlots } from './digest-table.js'

const digest = (n: number): string => compactKey(`sha256:${createHash('sha256').update(String(n)).digest('hex')}`)
/** All multipliers zero: every digest hashes to 0, so every entry lands in one probe run. */
const COLLIDING = new Uint8Array(128)

/** Every held key is found with its value, and nothing else is. */
function assertHolds (t: DigestTable, model: Map<string, number>, absent: string[]): void {
  assert.equal(t.size, model.size)
  for (const [k, v] of model) {
    const e = t.find(k)
    assert.ok(e >= 0, `entry for ${JSON.stringify(k)} lost`)
    assert.equal(t.keyAt(e), k)
    assert.equal(t.valueAt(e), v)
  }
  for (const k of absent) assert.equal(t.find(k), -1)
  const keys = new Set<string>()
  for (let e = 0; e < t.size; e++) keys.add(t.keyAt(e))
  assert.deepEqual(keys, new Set(model.keys()))
}

describe('DigestTable', () => {
  it('finds digests when every one collides, and after removals from the middle of the probe run', () => {
    const t = new DigestTable(64, COLLIDING)
    const model = new Map<string, number>()
    for (let i = 0; i < 40; i++) {
      t.insert(digest(i), i)
      model.set(digest(i), i)
    }
    assertHolds(t, model, [digest(1000)])
    for (const i of [0, 17, 39, 5, 6, 7, 20]) {
      t.deleteAt(t.find(digest(i)))
      model.delete(digest(i))
      assertHolds(t, model, [digest(i)])
    }
  })

  it('grows past its capacity and shrinks when mostly emptied, keeping every entry', () => {
    const t = new DigestTable()
    const model = new Map<string, number>()
    const start = t.capacity
    for (let i = 0; i < 5_000; i++) {
      t.insert(digest(i), i)
      model.set(digest(i), i)
    }
    assert.ok(t.capacity >= 5_000 && t.capacity > start)
    // Packed: about 32 + 4 + 4..8 bytes an entry, with the slack of growing by half.
    assert.ok(t.byteLength < 5_000 * 40 * 1.6, `${t.byteLength} bytes for 5000 digests`)
    assertHolds(t, model, [digest(-1)])
    const grown = t.capacity
    for (let i = 0; i < 4_900; i++) {
      t.deleteAt(t.find(digest(i)))
      model.delete(digest(i))
    }
    t.shrinkIfSparse()
    assert.ok(t.capacity < grown / 4, `capacity ${t.capacity} after shrinking from ${grown}`)
    assertHolds(t, model, [digest(0), digest(4_899)])
  })

  it('agrees with a Map through random inserts and removals, colliding or not', () => {
    for (const seed of [COLLIDING, randomBytes(128)]) {
      const t = new DigestTable(64, seed)
      const model = new Map<string, number>()
      let x = 12345
      const rand = (n: number): number => { x = (Math.imul(x, 1103515245) + 12345) >>> 0; return x % n }
      for (let step = 0; step < 3_000; step++) {
        const k = digest(rand(300))
        const e = t.find(k)
        assert.equal(e >= 0, model.has(k))
        if (e >= 0 && rand(2) === 0) {
          t.deleteAt(e)
          model.delete(k)
          t.shrinkIfSparse()
        } else if (e < 0) {
          t.insert(k, step)
          model.set(k, step)
        } else {
          t.setValueAt(e, -step)
          model.set(k, -step)
        }
      }
      assertHolds(t, model, [])
    }
  })

  it('finds or adds in one call, and refuses to add a digest twice', () => {
    const t = new DigestTable()
    assert.equal(t.findOrInsert(digest(1), 7), -1)
    assert.equal(t.findOrInsert(digest(2), 8), -2)
    assert.equal(t.findOrInsert(digest(1), 9), 0)
    assert.equal(t.valueAt(0), 7)
    assert.throws(() => t.insert(digest(2), 1), /held already/)
    assert.equal(t.size, 2)
  })

  it('refuses a seed too short to key the hash', () => {
    assert.throws(() => new DigestTable(64, new Uint8Array(16)), /128 bytes/)
  })
})

describe('KeySlots', () => {
  const D1 = digest(1)
  const D2 = digest(2)
  const TAG = 'docker.io/library/nginx:1.27'
  const ARRIVING = `arriving:${D1}`
  /** Shaped like a compact digest but not one (a character above 0xff): kept as a string. */
  const ODD = '\0' + 'Ā'.repeat(32)

  it('tells compact digests from other keys', () => {
    assert.ok(isCompactDigest(D1))
    for (const k of [TAG, ARRIVING, ODD, '\0', `sha256:${'a'.repeat(64)}`, D1.slice(0, 32)]) assert.ok(!isCompactDigest(k), k)
  })

  it('maps digests and other keys to one slot or several, and forgets them when no slot is left', () => {
    const ks = new KeySlots()
    for (const k of [D1, TAG, ARRIVING, ODD]) {
      assert.equal(ks.add(k, 3), true)
      assert.equal(ks.add(k, 3), false)
      assert.equal(ks.get(k), 3)
      assert.equal(ks.add(k, 5), true)
      assert.equal(ks.add(k, 7), true)
      assert.deepEqual(ks.get(k), [3, 5, 7])
      assert.equal(ks.remove(k, 9), false)
      assert.equal(ks.remove(k, 5), true)
      assert.deepEqual(ks.get(k), [3, 7])
      assert.equal(ks.remove(k, 3), true)
      assert.equal(ks.get(k), 7)
    }
    assert.equal(ks.size, 4)
    assert.equal(ks.get(D2), undefined)
    assert.equal(ks.remove(D2, 7), false)
    for (const k of [D1, TAG, ARRIVING, ODD]) assert.equal(ks.remove(k, 7), true)
    assert.equal(ks.size, 0)
    assert.equal(ks.get(D1), undefined)
    assert.equal(ks.get(ODD), undefined)
  })

  it('drops slots from every key in one scan and collects keys per slot', () => {
    const ks = new KeySlots()
    const keysOf = (slots: number[]): Map<number, string[]> => {
      const bySlot = new Map(slots.map((s) => [s, [] as string[]]))
      ks.collect(bySlot)
      for (const list of bySlot.values()) list.sort()
      return bySlot
    }
    // Slot 0 holds many digests, slot 1 shares some of them, slot 2 a tag and one digest.
    for (let i = 0; i < 1_000; i++) ks.add(digest(i), 0)
    for (let i = 0; i < 1_000; i += 10) ks.add(digest(i), 1)
    ks.add(TAG, 1)
    ks.add(TAG, 2)
    ks.add(D2, 2)
    ks.add(ARRIVING, 0)
    assert.equal(ks.size, 1_002)
    const before = keysOf([0, 1, 2])
    assert.equal(before.get(0)?.length, 1_001)
    assert.equal(before.get(1)?.length, 101)
    assert.deepEqual(before.get(2), [D2, TAG].sort())

    ks.dropSlots(new Set([0]))
    assert.equal(ks.size, 102)
    const after = keysOf([0, 1, 2])
    assert.deepEqual(after.get(0), [])
    assert.deepEqual(after.get(1), before.get(1))
    assert.deepEqual(after.get(2), before.get(2))
    assert.equal(ks.get(digest(10)), 1)
    assert.equal(ks.get(D2), 2)
    assert.equal(ks.get(digest(11)), undefined)
    assert.equal(ks.get(ARRIVING), undefined)

    ks.dropSlots(new Set([1, 2]))
    assert.equal(ks.size, 0)
    // A slot freed and reused holds only what is added for it afterwards.
    ks.add(D1, 0)
    assert.deepEqual(keysOf([0]).get(0), [D1])
  })
})
