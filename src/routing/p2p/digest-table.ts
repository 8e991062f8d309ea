import { randomBytes } from 'node:crypto'

/**
 * The key → record-slots table of the content index, sized for a full replica of the cluster's
 * keys (150,000 at 30 nodes × 5,000, up to MAX_INDEX_KEYS).
 *
 * Nearly every key is a sha256 digest, and as a Map entry a compact digest cost about 100 bytes:
 * a 56-byte heap string plus 3 pointers of table and a share of the buckets. Here a digest is its
 * 32 bytes in one slab, plus a 4-byte value and 4 to 8 bytes of hash table, all outside the V8
 * heap (so the garbage collector never walks them either). Other keys (tags, the overlay's
 * prefixed keys) stay in a Map, as before. A key held by one record maps to its slot, a number
 * (the common case, no allocation); a key held by several records maps to an array of slots.
 */
export class KeySlots {
  readonly #digests = new DigestTable()
  /** Values of digest entries held by several records: a negative value -(i + 1) points here. */
  readonly #lists: Array<number[] | undefined> = []
  readonly #freeLists: number[] = []
  readonly #others = new Map<string, number | number[]>()

  /** Distinct keys. */
  get size (): number {
    return this.#digests.size + this.#others.size
  }

  /** The slots holding `key`: a slot, or an array of two or more (not to be changed). */
  get (key: string): number | readonly number[] | undefined {
    if (!isCompactDigest(key)) return this.#others.get(key)
    const e = this.#digests.find(key)
    if (e < 0) return undefined
    const v = this.#digests.valueAt(e)
    return v >= 0 ? v : this.#lists[-v - 1]
  }

  /** Adds `slot` to `key`'s holders; false when it was one already. */
  add (key: string, slot: number): boolean {
    if (!isCompactDigest(key)) return addToMap(this.#others, key, slot)
    const e = this.#digests.findOrInsert(key, slot)
    if (e < 0) return true
    const v = this.#digests.valueAt(e)
    if (v >= 0) {
      if (v === slot) return false
      this.#digests.setValueAt(e, this.#newList([v, slot]))
      return true
    }
    const list = this.#lists[-v - 1] as number[]
    if (list.includes(slot)) return false
    list.push(slot)
    return true
  }

  /** Removes `slot` from `key`'s holders; false when it was not one. */
  remove (key: string, slot: number): boolean {
    if (!isCompactDigest(key)) return removeFromMap(this.#others, key, slot)
    const e = this.#digests.find(key)
    if (e < 0) return false
    const v = this.#digests.valueAt(e)
    if (v >= 0) {
      if (v !== slot) return false
      this.#digests.deleteAt(e)
      this.#digests.shrinkIfSparse()
      return true
    }
    const list = this.#lists[-v - 1] as number[]
    const i = list.indexOf(slot)
    if (i < 0) return false
    list.splice(i, 1)
    if (list.length === 1) this.#digests.setValueAt(e, this.#freeList(v))
    return true
  }

  /** Removes every slot in `slots` from every key, in one scan. */
  dropSlots (slots: ReadonlySet<number>): void {
    // Backwards: deleteAt moves the last entry, already visited, into the hole.
    for (let e = this.#digests.size - 1; e >= 0; e--) {
      const v = this.#digests.valueAt(e)
      if (v >= 0) {
        if (slots.has(v)) this.#digests.deleteAt(e)
        continue
      }
      const list = this.#lists[-v - 1] as number[]
      const kept = list.filter((s) => !slots.has(s))
      if (kept.length === list.length) continue
      if (kept.length === 0) {
        this.#freeList(v)
        this.#digests.deleteAt(e)
      } else if (kept.length === 1) {
        this.#freeList(v)
        this.#digests.setValueAt(e, kept[0] as number)
      } else {
        this.#lists[-v - 1] = kept
      }
    }
    this.#digests.shrinkIfSparse()
    for (const [k, v] of this.#others) {
      if (typeof v === 'number') {
        if (slots.has(v)) this.#others.delete(k)
        continue
      }
      const kept = v.filter((s) => !slots.has(s))
      if (kept.length === v.length) continue
      if (kept.length === 0) this.#others.delete(k)
      else if (kept.length === 1) this.#others.set(k, kept[0] as number)
      else this.#others.set(k, kept)
    }
  }

  /** Appends every key to the list of each of its slots found in `bySlot`, in one scan. */
  collect (bySlot: ReadonlyMap<number, string[]>): void {
    for (let e = 0; e < this.#digests.size; e++) {
      const v = this.#digests.valueAt(e)
      if (v >= 0) {
        const out = bySlot.get(v)
        if (out !== undefined) out.push(this.#digests.keyAt(e))
        continue
      }
      let key: string | undefined
      for (const slot of this.#lists[-v - 1] as number[]) {
        const out = bySlot.get(slot)
        if (out !== undefined) out.push(key ??= this.#digests.keyAt(e))
      }
    }
    for (const [k, v] of this.#others) {
      if (typeof v === 'number') bySlot.get(v)?.push(k)
      else for (const slot of v) bySlot.get(slot)?.push(k)
    }
  }

  #newList (slots: number[]): number {
    const i = this.#freeLists.pop() ?? this.#lists.length
    this.#lists[i] = slots
    return -i - 1
  }

  /** Frees list value `v`; returns its one remaining slot (meaningful when one remains). */
  #freeList (v: number): number {
    const i = -v - 1
    const list = this.#lists[i] as number[]
    this.#lists[i] = undefined
    this.#freeLists.push(i)
    return list[0] as number
  }
}

function addToMap (map: Map<string, number | number[]>, k: string, slot: number): boolean {
  const v = map.get(k)
  if (v === undefined) {
    map.set(k, slot)
    return true
  }
  if (typeof v === 'number') {
    if (v === slot) return false
    map.set(k, [v, slot])
    return true
  }
  if (v.includes(slot)) return false
  v.push(slot)
  return true
}

function removeFromMap (map: Map<string, number | number[]>, k: string, slot: number): boolean {
  const v = map.get(k)
  if (v === undefined) return false
  if (typeof v === 'number') {
    if (v !== slot) return false
    map.delete(k)
    return true
  }
  const i = v.indexOf(slot)
  if (i < 0) return false
  v.splice(i, 1)
  if (v.length === 1) map.set(k, v[0] as number)
  return true
}

/** Length of a compact digest (codec.compactKey): a NUL, then the 32 bytes as latin1 characters. */
const COMPACT_DIGEST_LENGTH = 33
const DIGEST_BYTES = 32

/**
 * True for a compact sha256 digest. Anything else with the same shape (a character above 0xff)
 * cannot come from the codec, but is still kept apart, in the Map, rather than truncated.
 */
export function isCompactDigest (k: string): boolean {
  if (k.length !== COMPACT_DIGEST_LENGTH || k.charCodeAt(0) !== 0) return false
  for (let i = 1; i < COMPACT_DIGEST_LENGTH; i++) if (k.charCodeAt(i) > 0xff) return false
  return true
}

const MIN_CAPACITY = 64
/** Share of hash-table positions in use at most; linear probing stays short below this. */
const MAX_LOAD = 0.7

/**
 * Compact sha256 digests → an int32 value each, packed: entry i's digest is bytes [32i, 32i + 32)
 * of one slab and its value is values[i]; entries are dense (a deletion moves the last entry
 * into the hole). An open-addressing hash table (linear probing, entry index + 1, 0 for empty,
 * deletions by backward shift, so no tombstones) finds an entry from its digest.
 *
 * Digests come from peers, which can choose them: the hash is keyed with random multipliers
 * (vector multiply-shift, universal), so a peer that does not know them cannot make its keys
 * collide and turn lookups into scans. Every input's cost is bounded by the index's key limits;
 * the slab grows by half and shrinks when a quarter full; the hash table doubles at 70 % load.
 */
export class DigestTable {
  #size = 0
  #capacity: number
  #slab: Uint8Array
  #values: Int32Array
  #table: Uint32Array
  #mask: number
  /** A position is the hash's top bits, the best mixed ones of a multiply-shift hash. */
  #shift: number
  /** Two sets of 16 multipliers, one per 16-bit half of the hash. */
  readonly #mulA: Uint32Array
  readonly #mulB: Uint32Array

  constructor (capacity = MIN_CAPACITY, seed: Uint8Array = randomBytes(128)) {
    if (seed.byteLength < 128) throw new RangeError('a DigestTable seed is 128 bytes')
    // A copy: a Buffer from randomBytes views a shared pool, at any offset.
    const words = new Uint32Array(new Uint8Array(seed.subarray(0, 128)).buffer)
    this.#mulA = words.slice(0, 16)
    this.#mulB = words.slice(16, 32)
    this.#capacity = Math.max(MIN_CAPACITY, capacity)
    this.#slab = new Uint8Array(this.#capacity * DIGEST_BYTES)
    this.#values = new Int32Array(this.#capacity)
    this.#table = new Uint32Array(tableSizeFor(this.#capacity))
    this.#mask = this.#table.length - 1
    this.#shift = 32 - Math.log2(this.#table.length)
  }

  get size (): number {
    return this.#size
  }

  /** Entries the slab holds before it grows. */
  get capacity (): number {
    return this.#capacity
  }

  /** Bytes allocated for the slab, the values and the hash table (the slab's unused tail is never touched, so not resident). */
  get byteLength (): number {
    return this.#slab.byteLength + this.#values.byteLength + this.#table.byteLength
  }

  /** The entry holding compact digest `key`, or -1. */
  find (key: string): number {
    let pos = this.#hash(key) >>> this.#shift
    for (;;) {
      const t = this.#table[pos] as number
      if (t === 0) return -1
      if (this.#matches(t - 1, key)) return t - 1
      pos = (pos + 1) & this.#mask
    }
  }

  /** Adds compact digest `key` (not held yet) with `value`; returns its entry. */
  insert (key: string, value: number): number {
    const e = this.findOrInsert(key, value)
    if (e >= 0) throw new Error('DigestTable.insert: the digest is held already')
    return -e - 1
  }

  /**
   * The entry holding compact digest `key` (≥ 0), or, when there is none, adds `key` with `value`
   * and returns -(its entry) - 1: one hash and one probe run for both.
   */
  findOrInsert (key: string, value: number): number {
    // The table is sized by the entries, not by the slab's capacity: it is written all over, so
    // every page of it is resident, while the slab's unused tail is never touched.
    if (this.#size + 1 > this.#table.length * MAX_LOAD) this.#rehash(this.#table.length * 2)
    // Before probing: a resize may rebuild the table, which would move the position found.
    if (this.#size === this.#capacity) this.#resize(Math.ceil(this.#capacity * 1.5))
    let pos = this.#hash(key) >>> this.#shift
    for (;;) {
      const t = this.#table[pos] as number
      if (t === 0) break
      if (this.#matches(t - 1, key)) return t - 1
      pos = (pos + 1) & this.#mask
    }
    const e = this.#size++
    const off = e * DIGEST_BYTES
    for (let i = 0; i < DIGEST_BYTES; i++) this.#slab[off + i] = key.charCodeAt(i + 1)
    this.#values[e] = value
    this.#table[pos] = e + 1
    return -e - 1
  }

  valueAt (e: number): number {
    return this.#values[e] as number
  }

  setValueAt (e: number, value: number): void {
    this.#values[e] = value
  }

  /** The compact digest of entry `e`. */
  keyAt (e: number): string {
    const off = e * DIGEST_BYTES
    return '\0' + Buffer.from(this.#slab.buffer, this.#slab.byteOffset + off, DIGEST_BYTES).toString('latin1')
  }

  /** Removes entry `e`; the last entry takes its index. */
  deleteAt (e: number): void {
    this.#unplace(e)
    const last = --this.#size
    if (e !== last) {
      // The last entry moves into the hole: its table position now says e.
      const pos = this.#positionOf(last)
      this.#table[pos] = e + 1
      this.#slab.copyWithin(e * DIGEST_BYTES, last * DIGEST_BYTES, (last + 1) * DIGEST_BYTES)
      this.#values[e] = this.#values[last] as number
    }
    this.#slab.fill(0, last * DIGEST_BYTES, (last + 1) * DIGEST_BYTES)
  }

  /** Gives memory back once at most a quarter of the slab is used (after removals). */
  shrinkIfSparse (): void {
    if (this.#capacity > MIN_CAPACITY && this.#size * 4 <= this.#capacity) {
      this.#resize(Math.max(MIN_CAPACITY, Math.ceil(this.#size * 1.5)))
    }
  }

  #resize (capacity: number): void {
    const slab = new Uint8Array(capacity * DIGEST_BYTES)
    slab.set(this.#slab.subarray(0, this.#size * DIGEST_BYTES))
    const values = new Int32Array(capacity)
    values.set(this.#values.subarray(0, this.#size))
    this.#slab = slab
    this.#values = values
    this.#capacity = capacity
    const tableSize = tableSizeFor(capacity)
    if (tableSize < this.#table.length) this.#rehash(tableSize)
  }

  #rehash (tableSize: number): void {
    this.#table = new Uint32Array(tableSize)
    this.#mask = tableSize - 1
    this.#shift = 32 - Math.log2(tableSize)
    for (let e = 0; e < this.#size; e++) this.#place(e, this.#hashAt(e))
  }

  #place (e: number, hash: number): void {
    let pos = hash >>> this.#shift
    while (this.#table[pos] !== 0) pos = (pos + 1) & this.#mask
    this.#table[pos] = e + 1
  }

  #positionOf (e: number): number {
    let pos = this.#hashAt(e) >>> this.#shift
    while (this.#table[pos] !== e + 1) pos = (pos + 1) & this.#mask
    return pos
  }

  /** Empties entry e's table position, shifting later members of the probe run back (no tombstones). */
  #unplace (e: number): void {
    const mask = this.#mask
    let hole = this.#positionOf(e)
    this.#table[hole] = 0
    let pos = (hole + 1) & mask
    for (;;) {
      const t = this.#table[pos] as number
      if (t === 0) return
      const home = this.#hashAt(t - 1) >>> this.#shift
      // t may fill the hole unless its home lies cyclically in (hole, pos].
      if (((pos - home) & mask) >= ((pos - hole) & mask)) {
        this.#table[hole] = t
        this.#table[pos] = 0
        hole = pos
      }
      pos = (pos + 1) & mask
    }
  }

  #matches (e: number, key: string): boolean {
    const off = e * DIGEST_BYTES
    const slab = this.#slab
    for (let i = 0; i < DIGEST_BYTES; i++) if (slab[off + i] !== key.charCodeAt(i + 1)) return false
    return true
  }

  #hash (key: string): number {
    const a = this.#mulA
    const b = this.#mulB
    let ha = 0
    let hb = 0
    for (let i = 0; i < 16; i++) {
      const x = key.charCodeAt(2 * i + 1) | (key.charCodeAt(2 * i + 2) << 8)
      ha = (ha + Math.imul(a[i] as number, x)) | 0
      hb = (hb + Math.imul(b[i] as number, x)) | 0
    }
    return ((ha >>> 16) << 16 | (hb >>> 16)) >>> 0
  }

  #hashAt (e: number): number {
    const off = e * DIGEST_BYTES
    const slab = this.#slab
    const a = this.#mulA
    const b = this.#mulB
    let ha = 0
    let hb = 0
    for (let i = 0; i < 16; i++) {
      const x = (slab[off + 2 * i] as number) | ((slab[off + 2 * i + 1] as number) << 8)
      ha = (ha + Math.imul(a[i] as number, x)) | 0
      hb = (hb + Math.imul(b[i] as number, x)) | 0
    }
    return ((ha >>> 16) << 16 | (hb >>> 16)) >>> 0
  }
}

/** A power of two with room for `capacity` entries at MAX_LOAD. */
function tableSizeFor (capacity: number): number {
  let n = 1
  while (n * MAX_LOAD < capacity) n *= 2
  return n
}
