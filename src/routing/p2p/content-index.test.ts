import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compactKey, compareKeys } from './codec.js'
import { ContentIndex, type IncomingDelta, type IncomingRecord } from './content-index.js'
import { checkAddressClaims, type AddressClaims } from './record-auth.js'

const EXPIRY = 1_000
const SIG = new Uint8Array(64)
/** Each origin lives at its own IP, 10.0.0.<n>; the records here are already verified. */
const ipOf = (origin: string): string => `10.0.0.${origin.charCodeAt(0) % 250 + 1}`
const claims = (origin: string): AddressClaims => checkAddressClaims(`${ipOf(origin)}:5000`, [`/ip4/${ipOf(origin)}/tcp/5001`]) as AddressClaims
const make = (): ContentIndex => new ContentIndex({ selfId: 'self', expiryMs: EXPIRY, tombstoneTtlMs: 5_000 })
const full = (origin: string, epoch: number, seq: number, keys: string[], ageMs = 0, tagDigests = new Map<string, string>()): IncomingRecord => ({
  origin, epoch, seq, ageMs, claims: claims(origin), signature: SIG,
  body: { registryAddress: `${ipOf(origin)}:5000`, addrs: [`/ip4/${ipOf(origin)}/tcp/5001`], keys: [...keys].sort(compareKeys), tagDigests }
})
/** Applies records and proves their addresses, as the router does once it has seen their origins. */
const apply = (idx: ContentIndex, records: IncomingRecord[], now = 0): string[] => {
  const changed = idx.applyFull(records, now)
  for (const r of records) idx.proveAddress(r.origin, ipOf(r.origin))
  return changed
}
const ids = (idx: ContentIndex, key: string, now = 0): string[] => idx.lookup(key, now).map((p) => p.id).sort()
const D = compactKey(`sha256:${'a'.repeat(64)}`)
const GOODBYE = new Uint8Array([1, 2, 3])

describe('ContentIndex', () => {
  it('applies whole records, shares keys between holders and never holds itself', () => {
    const idx = make()
    assert.deepEqual(apply(idx, [full('a', 1, 1, [D, 'k1']), full('b', 1, 3, [D]), full('self', 1, 1, ['k1'])], 0).sort(), ['a', 'b'])
    assert.deepEqual(ids(idx, D), ['a', 'b'])
    assert.deepEqual(ids(idx, 'k1'), ['a'])
    assert.deepEqual(idx.lookup('k1', 0), [{ id: 'a', registryAddress: `${ipOf('a')}:5000` }])
    assert.equal(idx.distinctKeys, 2)
    assert.equal(idx.get('a')?.keyCount, 2)
    // Same or older versions change nothing.
    assert.deepEqual(apply(idx, [full('a', 1, 1, []), full('b', 0, 9, [])], 0), [])
    assert.deepEqual(ids(idx, 'k1'), ['a'])
    // A newer version replaces the record's keys; a newer epoch too.
    apply(idx, [full('a', 1, 2, ['k2'])], 0)
    assert.deepEqual(ids(idx, D), ['b'])
    assert.deepEqual(ids(idx, 'k1'), [])
    assert.deepEqual(ids(idx, 'k2'), ['a'])
    apply(idx, [full('b', 2, 0, ['k2'])], 0)
    assert.deepEqual(ids(idx, D), [])
    assert.deepEqual(ids(idx, 'k2'), ['a', 'b'])
    assert.deepEqual([...idx.keysOf(['a', 'b', 'zz'])], [['a', ['k2']], ['b', ['k2']]])
  })

  it('keeps signatures and goodbyes in buffers of their own, not views of the frame they came in', () => {
    // As a decoder hands them over: Buffers viewing a larger frame (Buffer's slice() is a view too).
    const frame = Buffer.alloc(64 * 1024, 7)
    const idx = make()
    apply(idx, [{ ...full('a', 1, 1, ['k1']), signature: frame.subarray(100, 164) }], 0)
    const kept = idx.get('a')!.signature
    assert.equal(kept.buffer.byteLength, 64)
    assert.deepEqual(kept, new Uint8Array(64).fill(7))
    frame.fill(9)
    assert.deepEqual(kept, new Uint8Array(64).fill(7))
    const delta: IncomingDelta = { origin: 'a', epoch: 1, seq: 2, body: { adds: ['k2'], removes: [], tagDigests: new Map(), recordSignature: frame.subarray(0, 64) } }
    assert.equal(idx.applyDelta(delta, 0), 'applied')
    assert.equal(idx.get('a')!.signature.buffer.byteLength, 64)
    assert.equal(idx.goodbye('a', 1, 0, frame.subarray(0, 10)), true)
    assert.equal(idx.goodbyeStatement('a')!.buffer.byteLength, 10)
  })

  it('applies deltas in order, reports duplicates and gaps, and remembers what it wants', () => {
    const idx = make()
    apply(idx, [full('a', 1, 1, ['k1'])], 0)
    const delta = (seq: number, adds: string[], removes: string[] = [], epoch = 1): IncomingDelta =>
      ({ origin: 'a', epoch, seq, body: { adds, removes, tagDigests: new Map(), recordSignature: SIG } })
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
    apply(idx, [full('a', 1, 4, ['k4'])], 0)
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
    apply(idx, [full('a', 1, 1, ['k']), full('b', 1, 1, ['k'], 600)], 0)
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
    assert.deepEqual(apply(idx, [full('c', 1, 1, ['k'], EXPIRY + 1)], 3_000), [])
  })

  it('a goodbye removes the record for good; a newer epoch may come back', () => {
    const idx = make()
    apply(idx, [full('a', 5, 3, ['k'])], 0)
    assert.equal(idx.goodbye('a', 5, 0, GOODBYE), true)
    assert.equal(idx.goodbye('a', 5, 0, GOODBYE), false)
    assert.deepEqual(ids(idx, 'k'), [])
    assert.deepEqual(apply(idx, [full('a', 5, 9, ['k'])], 0), [])
    assert.equal(idx.markDeltaSeen('a', 5, 10, 0), false)
    assert.equal(idx.isBehind('a', 5, 10), false)
    assert.deepEqual(idx.tombstones(), [{ origin: 'a', epoch: 5 }])
    assert.deepEqual(apply(idx, [full('a', 6, 0, ['k'])], 0), ['a'])
    assert.deepEqual(ids(idx, 'k'), ['a'])
    idx.expire(10_000)
    assert.deepEqual(idx.tombstones(), [])
  })

  it('reuses the slots of dropped records without mixing up keys', () => {
    const idx = make()
    apply(idx, [full('a', 1, 1, ['ka', 'shared']), full('b', 1, 1, ['kb', 'shared'])], 0)
    idx.goodbye('a', 1, 0, GOODBYE)
    apply(idx, [full('c', 1, 1, ['kc'])], 0)
    assert.equal(idx.get('c')?.slot, 0)
    assert.deepEqual(ids(idx, 'ka'), [])
    assert.deepEqual(ids(idx, 'shared'), ['b'])
    assert.deepEqual(ids(idx, 'kc'), ['c'])
  })

  it('offers a record only once its registry address is proven, and again after it moves', () => {
    const idx = make()
    idx.applyFull([full('a', 1, 1, ['k'])], 0)
    assert.deepEqual(ids(idx, 'k'), [], 'not offered before this node saw a at its IP')
    assert.equal(idx.proveAddress('a', '10.9.9.9'), false, 'another IP proves nothing')
    assert.equal(idx.proveAddress('a', ipOf('a')), true)
    assert.deepEqual(ids(idx, 'k'), ['a'])
    // A newer record at the same address stays proven; one at another address must be proven again.
    idx.applyFull([full('a', 1, 2, ['k'])], 0)
    assert.deepEqual(ids(idx, 'k'), ['a'])
    const moved = full('a', 1, 3, ['k'])
    moved.claims = checkAddressClaims('10.0.7.7:5000', ['/ip4/10.0.7.7/tcp/5001']) as AddressClaims
    moved.body.registryAddress = '10.0.7.7:5000'
    idx.applyFull([moved], 0)
    assert.deepEqual(ids(idx, 'k'), [])
    assert.equal(idx.get('a')?.registryAddress, '10.0.7.7:5000')
  })

  it('carries the digest a record names for a pinned tag, through records and deltas', () => {
    const idx = make()
    const [d1, d2] = [compactKey(`sha256:${'1'.repeat(64)}`), compactKey(`sha256:${'2'.repeat(64)}`)]
    apply(idx, [full('a', 1, 1, ['r/app:1', 'r/plain:1'], 0, new Map([['r/app:1', d1]]))])
    assert.deepEqual(idx.lookup('r/app:1', 0), [{ id: 'a', registryAddress: `${ipOf('a')}:5000`, digest: `sha256:${'1'.repeat(64)}` }])
    assert.equal(idx.lookup('r/plain:1', 0)[0]?.digest, undefined)
    const delta = (seq: number, adds: string[], tags: Array<[string, string]>, removes: string[] = []): IncomingDelta =>
      ({ origin: 'a', epoch: 1, seq, body: { adds, removes, tagDigests: new Map(tags), recordSignature: SIG } })
    // A re-pin replaces the digest; an unpinned re-add drops it; a removal drops the tag.
    assert.equal(idx.applyDelta(delta(2, ['r/app:1'], [['r/app:1', d2]]), 0), 'applied')
    assert.equal(idx.lookup('r/app:1', 0)[0]?.digest, `sha256:${'2'.repeat(64)}`)
    assert.equal(idx.get('a')?.keyCount, 2)
    assert.equal(idx.applyDelta(delta(3, ['r/app:1'], []), 0), 'applied')
    assert.equal(idx.lookup('r/app:1', 0)[0]?.digest, undefined)
    assert.equal(idx.applyDelta(delta(4, ['r/app:1'], [['r/app:1', d1]]), 0), 'applied')
    assert.equal(idx.applyDelta(delta(5, [], [], ['r/app:1']), 0), 'applied')
    assert.deepEqual(idx.lookup('r/app:1', 0), [])
    assert.equal(idx.get('a')?.tagDigests, undefined)
    // The state rebuilds to the body its origin would sign: sorted keys and the pins.
    assert.deepEqual(idx.recordBody(idx.get('a')!, idx.keysOf(['a']).get('a')!), { registryAddress: `${ipOf('a')}:5000`, addrs: [`/ip4/${ipOf('a')}/tcp/5001`], keys: ['r/plain:1'], tagDigests: new Map() })
  })

  it('tells seen deltas apart without marking anything, keeps goodbyes to serve, and drops inconsistent records', () => {
    const idx = make()
    apply(idx, [full('a', 2, 5, ['k'])])
    assert.equal(idx.isDeltaSeen('a', 2, 5), true)
    assert.equal(idx.isDeltaSeen('a', 1, 9), true, 'an older epoch is stale')
    assert.equal(idx.isDeltaSeen('a', 2, 6), false)
    assert.equal(idx.isDeltaSeen('a', 2, 6), false, 'asking does not mark')
    assert.equal(idx.isDeltaSeen('self', 9, 9), true)
    assert.equal(idx.isDeltaSeen('nobody', 1, 1), false)
    idx.drop('a', 0)
    assert.equal(idx.get('a'), undefined)
    assert.deepEqual(idx.wanted(0), [{ origin: 'a', epoch: 2, seq: 5 }], 'the dropped version is wanted back whole')
    assert.equal(idx.goodbye('b', 3, 0, GOODBYE), false, 'a goodbye for an origin without a record is not news to pass on')
    assert.deepEqual([...idx.goodbyeStatement('b') ?? []], [1, 2, 3], 'but it is kept, against a record of that epoch arriving later')
    assert.equal(idx.isDeltaSeen('b', 3, 1), true, 'nothing from a departed epoch is news')
  })

  it('holds at most its limits of records, keys per record and keys in all, and says which was reached', () => {
    const reached: string[] = []
    const idx = new ContentIndex({
      selfId: 'self', expiryMs: EXPIRY, tombstoneTtlMs: 5_000, maxRecords: 2, maxRecordKeys: 3, maxKeys: 5,
      onLimit: (limit) => { reached.push(limit) }
    })
    assert.deepEqual(apply(idx, [full('a', 1, 1, ['k1', 'k2', 'k3', 'k4'])]), [], 'four keys is one too many')
    assert.deepEqual(reached, ['record-keys'])
    assert.deepEqual(apply(idx, [full('a', 1, 1, ['k1', 'k2', 'k3']), full('b', 1, 1, ['k1', 'k2'])]).sort(), ['a', 'b'])
    assert.deepEqual(apply(idx, [full('c', 1, 1, ['k9'])]), [], 'a third record is one too many')
    assert.equal(reached.at(-1), 'index-records')
    assert.deepEqual(apply(idx, [full('b', 1, 2, ['k1', 'k2', 'k5'])]), [], 'six keys in all is one too many')
    assert.equal(reached.at(-1), 'index-keys')
    assert.deepEqual(apply(idx, [full('b', 1, 3, ['k1'])]), ['b'], 'a record that shrinks is always taken')
    assert.equal(idx.totalKeys, 4)

    const delta = (origin: string, seq: number, adds: string[]): IncomingDelta => ({ origin, epoch: 1, seq, body: { adds, removes: [], tagDigests: new Map(), recordSignature: SIG } })
    assert.equal(idx.applyDelta(delta('a', 2, ['k7']), 0), 'limit')
    assert.equal(reached.at(-1), 'record-keys')
    assert.deepEqual(ids(idx, 'k7'), [])
    assert.equal(idx.applyDelta(delta('b', 4, ['k7']), 0), 'applied')
    assert.equal(idx.applyDelta(delta('b', 5, ['k8']), 0), 'limit', 'the index holds five keys in all')
    assert.equal(reached.at(-1), 'index-keys')
    assert.equal(idx.get('b')?.seq, 4)

    // Bookkeeping for origins without a record (hearsay, self-signed deltas and goodbyes of made-up
    // identities) stays within the record limit.
    reached.length = 0
    for (let i = 0; i < 10; i++) idx.want(`ghost${i}`, 1, 1, 0)
    assert.ok(idx.wanted(0).length <= 2, 'wishes for unknown origins are bounded')
    for (let i = 0; i < 10; i++) idx.markDeltaSeen(`ghost${i}`, 1, 1, 0)
    for (let i = 0; i < 10; i++) idx.goodbye(`ghost${i}`, 1, 0, GOODBYE)
    assert.ok(idx.tombstones().length <= 2, 'tombstones for unknown origins are bounded')
    assert.ok(reached.length > 0 && reached.every((l) => l === 'unknown-origins'))
    // Known origins are never crowded out.
    idx.want('a', 1, 9, 0)
    assert.ok(idx.wanted(0).some((w) => w.origin === 'a'))
    assert.equal(idx.goodbye('a', 1, 0, GOODBYE), true)
  })
})
