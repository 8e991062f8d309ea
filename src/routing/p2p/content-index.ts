import type { Peer } from '../types.js'
import { compareKeys, expandKey, type DeltaBody, type RecordBody, type VersionEntry } from './codec.js'
import { MAX_INDEX_KEYS, MAX_INDEX_RECORDS, MAX_RECORD_KEYS } from './constants.js'
import { KeySlots } from './digest-table.js'
import type { AddressClaims, LimitName } from './record-auth.js'

/** What this node knows of one other node: its record (as its origin signed it) plus liveness. */
export interface IndexRecord {
  readonly origin: string
  readonly slot: number
  epoch: number
  seq: number
  /** The registry address exactly as signed (re-encoded unchanged when this record is served). */
  registryAddress: string
  /** The checked form of the address claims. */
  claims: AddressClaims
  /** libp2p multiaddrs the owner listens on (without /p2p), so any node can dial any other. */
  addrs: readonly string[]
  keyCount: number
  /** Compact tag → compact digest for the pinned tags among the record's keys. */
  tagDigests: Map<string, string> | undefined
  /** The origin's signature over this record at (epoch, seq); with the state, it is the record. */
  signature: Uint8Array
  /** This node has seen the origin at the registry address's IP; lookups offer only such records. */
  isAddressProven: boolean
  /** When this node last heard of the origin, directly or through others (local clock). */
  lastHeardMs: number
  /** The Peer handed out by lookups of digests and unpinned keys; one frozen object per record. */
  peer: Peer
}

/** A verified record from a pull: the statement's version and body, its checked claims and signature. */
export interface IncomingRecord {
  origin: string
  epoch: number
  seq: number
  /** How long ago the responder last heard of the origin. */
  ageMs: number
  body: RecordBody
  claims: AddressClaims
  signature: Uint8Array
}

/** A verified delta. */
export interface IncomingDelta {
  origin: string
  epoch: number
  seq: number
  body: DeltaBody
}

export type DeltaResult =
  /** Applied: the record moved to the delta's seq. */
  | 'applied'
  /** Seen before (or older than the record): drop, do not forward. */
  | 'duplicate'
  /** New but not applicable (missing base or a seq gap): forward, and pull. */
  | 'gap'
  /** From an epoch the owner left (goodbye) or superseded: drop. */
  | 'stale'
  /** Would take the record or the index past a limit (reported through onLimit): drop, do not forward. */
  | 'limit'

export interface ContentIndexInit {
  /** This node's peer id: its own record never enters the index. */
  selfId: string
  expiryMs: number
  tombstoneTtlMs: number
  /** Records held at most (default MAX_INDEX_RECORDS); also the bound on bookkeeping for origins without a record. */
  maxRecords?: number
  /** Keys in one record at most (default MAX_RECORD_KEYS). */
  maxRecordKeys?: number
  /** Keys summed over every record at most (default MAX_INDEX_KEYS). */
  maxKeys?: number
  /** Told when something is refused or dropped at one of those bounds. */
  onLimit?: (limit: LimitName, detail: { origin: string, what: string }) => void
}

interface Seen {
  epoch: number
  /** Highest delta seq seen (applied or not) in this epoch. */
  seq: number
  atMs: number
}

/**
 * The replicated cluster index: every other node's record, keyed for local lookups.
 *
 * Memory is the point of the layout. There is one table from compact key (see codec.compactKey)
 * to the slot of the one node holding it (a small integer, no allocation) or an array of slots,
 * with sha256 digests packed as 32 bytes each (digest-table.ts); records do not keep their own
 * key lists. Operations that need a record's keys (answering a sync, replacing or dropping a
 * record) scan the table once, which costs milliseconds at 150k keys and happens on version
 * changes only, not per lookup or per delta.
 */
export class ContentIndex {
  readonly #init: ContentIndexInit
  readonly #keys = new KeySlots()
  readonly #records = new Map<string, IndexRecord>()
  readonly #slots: Array<IndexRecord | undefined> = []
  readonly #freeSlots: number[] = []
  /** Goodbyes: (origin, epoch) removed for good, with the origin's signed goodbye to pass on. */
  readonly #tombstones = new Map<string, { epoch: number, untilMs: number, statement: Uint8Array }>()
  /** Flood de-duplication, also for origins that have no record (yet). */
  readonly #seen = new Map<string, Seen>()
  /** Versions heard of but not held; cleared once a delta or a pull catches up. */
  readonly #wanted = new Map<string, { epoch: number, seq: number, sinceMs: number }>()

  readonly #maxRecords: number
  readonly #maxRecordKeys: number
  readonly #maxKeys: number

  constructor (init: ContentIndexInit) {
    this.#init = init
    this.#maxRecords = init.maxRecords ?? MAX_INDEX_RECORDS
    this.#maxRecordKeys = init.maxRecordKeys ?? MAX_RECORD_KEYS
    this.#maxKeys = init.maxKeys ?? MAX_INDEX_KEYS
  }

  /** Keys summed over every record held (a key two records hold counts twice). */
  get totalKeys (): number {
    let n = 0
    for (const r of this.#records.values()) n += r.keyCount
    return n
  }

  #limit (limit: LimitName, origin: string, what: string): void {
    this.#init.onLimit?.(limit, { origin, what })
  }

  get recordCount (): number {
    return this.#records.size
  }

  get distinctKeys (): number {
    return this.#keys.size
  }

  get (origin: string): IndexRecord | undefined {
    return this.#records.get(origin)
  }

  records (): IterableIterator<IndexRecord> {
    return this.#records.values()
  }

  isAlive (rec: IndexRecord, nowMs: number): boolean {
    return nowMs - rec.lastHeardMs <= this.#init.expiryMs
  }

  /**
   * Nodes holding `compact` that are not known to be gone and whose registry address is proven;
   * never this node. A pinned tag's holders carry the digest their record names for it.
   */
  lookup (compact: string, nowMs: number): Peer[] {
    const v = this.#keys.get(compact)
    if (v === undefined) return []
    const out: Peer[] = []
    const visit = (slot: number): void => {
      const rec = this.#slots[slot]
      if (rec === undefined || !rec.isAddressProven || !this.isAlive(rec, nowMs)) return
      const digest = rec.tagDigests?.get(compact)
      out.push(digest === undefined ? rec.peer : { ...rec.peer, digest: expandKey(digest) })
    }
    if (typeof v === 'number') visit(v)
    else for (const slot of v) visit(slot)
    return out
  }

  isTombstoned (origin: string, epoch: number): boolean {
    const t = this.#tombstones.get(origin)
    return t !== undefined && epoch <= t.epoch
  }

  versions (): VersionEntry[] {
    const out: VersionEntry[] = []
    for (const r of this.#records.values()) out.push({ origin: r.origin, epoch: r.epoch, seq: r.seq })
    return out
  }

  tombstones (): Array<{ origin: string, epoch: number }> {
    return [...this.#tombstones].map(([origin, t]) => ({ origin, epoch: t.epoch }))
  }

  /** The origin's signed goodbye behind a tombstone, to serve in pulls. */
  goodbyeStatement (origin: string): Uint8Array | undefined {
    return this.#tombstones.get(origin)?.statement
  }

  /** Marks `origin`'s registry address proven when `ip` is its IP; true when that changed anything. */
  proveAddress (origin: string, ip: string): boolean {
    const rec = this.#records.get(origin)
    if (rec === undefined || rec.isAddressProven || rec.claims.address.ip !== ip) return false
    rec.isAddressProven = true
    return true
  }

  /** The state of `origin`'s record, with `keys` (from keysOf) in the one order its origin signed. */
  recordBody (rec: IndexRecord, keys: string[]): RecordBody {
    return { registryAddress: rec.registryAddress, addrs: [...rec.addrs], keys: keys.sort(compareKeys), tagDigests: rec.tagDigests ?? new Map() }
  }

  /** Records the liveness evidence `ageMs` old for (origin, epoch); ignored for other epochs. */
  heard (origin: string, epoch: number, nowMs: number, ageMs = 0): void {
    const rec = this.#records.get(origin)
    if (rec === undefined || rec.epoch !== epoch) return
    rec.lastHeardMs = Math.max(rec.lastHeardMs, nowMs - ageMs)
  }

  /**
   * Flood de-duplication: true the first time (origin, epoch, seq) of a delta is seen. Anything
   * from a tombstoned epoch or this node is never new.
   */
  markDeltaSeen (origin: string, epoch: number, seq: number, nowMs: number): boolean {
    if (origin === this.#init.selfId || this.isTombstoned(origin, epoch)) return false
    const s = this.#seenFor(origin, epoch, nowMs)
    if (s === undefined || seq <= s.seq) return false
    s.seq = seq
    return true
  }

  #seenFor (origin: string, epoch: number, nowMs: number): Seen | undefined {
    let s = this.#seen.get(origin)
    if (s === undefined && !this.#records.has(origin) && !this.#roomForUnknown(this.#seen, 'delta de-duplication', origin)) return undefined
    if (s === undefined || s.epoch < epoch) {
      const rec = this.#records.get(origin)
      // A fresh entry starts at what the record already holds, so replays of it are duplicates.
      s = { epoch, seq: rec?.epoch === epoch ? rec.seq : 0, atMs: nowMs }
      this.#seen.set(origin, s)
    }
    if (s.epoch > epoch) return undefined
    s.atMs = nowMs
    return s
  }

  /**
   * Entries of `map` (keyed by origin) for origins without a record are bounded by the record
   * limit: hearsay and self-signed statements from freshly made identities cost nothing to send,
   * so the oldest such entry makes room, or (when every entry has a record) the new one is dropped.
   */
  #roomForUnknown (map: Map<string, unknown>, what: string, origin: string): boolean {
    if (map.size < this.#maxRecords) return true
    for (const key of map.keys()) {
      if (this.#records.has(key)) continue
      map.delete(key)
      this.#limit('unknown-origins', origin, `${what} holds ${this.#maxRecords} origins without a record; the oldest was forgotten`)
      return true
    }
    this.#limit('unknown-origins', origin, `${what} is full`)
    return false
  }

  /** Notes that (origin, epoch, seq) exists somewhere; `wanted()` lists it until it is held. */
  want (origin: string, epoch: number, seq: number, nowMs: number): void {
    if (origin === this.#init.selfId || this.isTombstoned(origin, epoch) || this.#holds(origin, epoch, seq)) return
    const w = this.#wanted.get(origin)
    if (w === undefined && !this.#records.has(origin) && !this.#roomForUnknown(this.#wanted, 'the list of wanted versions', origin)) return
    if (w !== undefined && (w.epoch > epoch || (w.epoch === epoch && w.seq >= seq))) return
    this.#wanted.set(origin, { epoch, seq, sinceMs: w?.sinceMs ?? nowMs })
  }

  /** True when (origin, epoch, seq) or a newer version is already wished for. */
  isWanted (origin: string, epoch: number, seq: number): boolean {
    const w = this.#wanted.get(origin)
    return w !== undefined && (w.epoch > epoch || (w.epoch === epoch && w.seq >= seq))
  }

  /** Versions still missing; stale wishes (older than the expiry bound) are forgotten. */
  wanted (nowMs: number): VersionEntry[] {
    const out: VersionEntry[] = []
    for (const [origin, w] of this.#wanted) {
      if (this.#holds(origin, w.epoch, w.seq) || this.isTombstoned(origin, w.epoch) || nowMs - w.sinceMs > this.#init.expiryMs) {
        this.#wanted.delete(origin)
        continue
      }
      out.push({ origin, epoch: w.epoch, seq: w.seq })
    }
    return out
  }

  #holds (origin: string, epoch: number, seq: number): boolean {
    const rec = this.#records.get(origin)
    return rec !== undefined && (rec.epoch > epoch || (rec.epoch === epoch && rec.seq >= seq))
  }

  /** True when this index holds something older than (epoch, seq) for origin, or nothing. */
  isBehind (origin: string, epoch: number, seq: number): boolean {
    if (origin === this.#init.selfId || this.isTombstoned(origin, epoch)) return false
    return !this.#holds(origin, epoch, seq)
  }

  /**
   * True when a delta at (origin, epoch, seq) is nothing new (seen before, stale, or this node's):
   * the cheap test before verifying a signature. Only verified deltas are ever marked seen.
   */
  isDeltaSeen (origin: string, epoch: number, seq: number): boolean {
    if (origin === this.#init.selfId || this.isTombstoned(origin, epoch)) return true
    const s = this.#seen.get(origin)
    if (s !== undefined && s.epoch > epoch) return true
    if (s !== undefined && s.epoch === epoch) return seq <= s.seq
    const rec = this.#records.get(origin)
    return rec !== undefined && (rec.epoch > epoch || (rec.epoch === epoch && seq <= rec.seq))
  }

  /**
   * Applies a verified delta: removals, then additions (an added pinned tag replaces the old pin),
   * exactly as its origin did, so the state is the record its origin signed at the new seq.
   */
  applyDelta (d: IncomingDelta, nowMs: number): DeltaResult {
    if (d.origin === this.#init.selfId || this.isTombstoned(d.origin, d.epoch)) return 'stale'
    const rec = this.#records.get(d.origin)
    if (rec !== undefined && rec.epoch > d.epoch) return 'stale'
    if (rec !== undefined && rec.epoch === d.epoch) {
      if (d.seq <= rec.seq) return 'duplicate'
      if (d.seq === rec.seq + 1) {
        // An upper bound (a removal may name a key the record lacks), good enough at a limit.
        const growth = d.body.adds.length - d.body.removes.length
        if (rec.keyCount + growth > this.#maxRecordKeys) {
          this.#limit('record-keys', d.origin, `delta ${d.epoch}/${d.seq} takes the record past ${this.#maxRecordKeys} keys`)
          return 'limit'
        }
        if (growth > 0 && this.totalKeys + growth > this.#maxKeys) {
          this.#limit('index-keys', d.origin, `delta ${d.epoch}/${d.seq} takes the index past ${this.#maxKeys} keys`)
          return 'limit'
        }
        for (const k of d.body.removes) {
          if (this.#removeKey(k, rec.slot)) rec.keyCount--
          rec.tagDigests?.delete(k)
        }
        for (const k of d.body.adds) {
          if (this.#addKey(k, rec.slot)) rec.keyCount++
          const digest = d.body.tagDigests.get(k)
          if (digest !== undefined) (rec.tagDigests ??= new Map()).set(k, digest)
          else rec.tagDigests?.delete(k)
        }
        if (rec.tagDigests?.size === 0) rec.tagDigests = undefined
        rec.seq = d.seq
        rec.signature = copyBytes(d.body.recordSignature)
        rec.lastHeardMs = Math.max(rec.lastHeardMs, nowMs)
        return 'applied'
      }
    }
    this.want(d.origin, d.epoch, d.seq, nowMs)
    return 'gap'
  }

  /**
   * Applies whole verified records from a pull answer, all with one scan of the key map. Records
   * that are stale, tombstoned, this node's, or older than the expiry bound (the responder had
   * not heard of the origin for that long) are skipped. A record whose registry address changed
   * must be proven again. Returns the origins that changed.
   */
  applyFull (fulls: readonly IncomingRecord[], nowMs: number): string[] {
    const replaced = new Set<number>()
    const fresh: Array<{ rec: IndexRecord, keys: readonly string[] }> = []
    let totalKeys = this.totalKeys
    for (const f of fulls) {
      if (f.origin === this.#init.selfId || this.isTombstoned(f.origin, f.epoch)) continue
      if (f.ageMs > this.#init.expiryMs) continue
      const heardMs = nowMs - f.ageMs
      const address = f.claims.address
      const tagDigests = f.body.tagDigests.size === 0 ? undefined : f.body.tagDigests
      let rec = this.#records.get(f.origin)
      if (rec !== undefined && (rec.epoch > f.epoch || (rec.epoch === f.epoch && rec.seq >= f.seq))) {
        if (rec.epoch === f.epoch) rec.lastHeardMs = Math.max(rec.lastHeardMs, heardMs)
        continue
      }
      // Entries of a record are strictly ascending (checked when decoded), so this is its key count.
      const keys = f.body.keys.length
      if (keys > this.#maxRecordKeys) {
        this.#limit('record-keys', f.origin, `record ${f.epoch}/${f.seq} has ${keys} keys, more than ${this.#maxRecordKeys}`)
        continue
      }
      if (rec === undefined && this.#records.size >= this.#maxRecords) {
        this.#limit('index-records', f.origin, `the index holds ${this.#maxRecords} records; a record for a new origin is refused`)
        continue
      }
      const nextTotal = totalKeys - (rec?.keyCount ?? 0) + keys
      if (nextTotal > this.#maxKeys && keys > (rec?.keyCount ?? 0)) {
        this.#limit('index-keys', f.origin, `record ${f.epoch}/${f.seq} would take the index past ${this.#maxKeys} keys`)
        continue
      }
      totalKeys = nextTotal
      if (rec !== undefined) {
        const sameEpoch = rec.epoch === f.epoch
        replaced.add(rec.slot)
        rec.epoch = f.epoch
        rec.seq = f.seq
        rec.registryAddress = f.body.registryAddress
        if (rec.claims.address.hostPort !== address.hostPort) {
          rec.isAddressProven = false
          rec.peer = Object.freeze({ id: f.origin, registryAddress: address.hostPort })
        }
        rec.claims = f.claims
        rec.addrs = Object.freeze([...f.body.addrs])
        rec.tagDigests = tagDigests
        rec.signature = copyBytes(f.signature)
        rec.lastHeardMs = sameEpoch ? Math.max(rec.lastHeardMs, heardMs) : heardMs
        rec.keyCount = 0
      } else {
        const slot = this.#freeSlots.pop() ?? this.#slots.length
        rec = {
          origin: f.origin,
          slot,
          epoch: f.epoch,
          seq: f.seq,
          registryAddress: f.body.registryAddress,
          claims: f.claims,
          addrs: Object.freeze([...f.body.addrs]),
          keyCount: 0,
          tagDigests,
          signature: copyBytes(f.signature),
          isAddressProven: false,
          lastHeardMs: heardMs,
          peer: Object.freeze({ id: f.origin, registryAddress: address.hostPort })
        }
        this.#slots[slot] = rec
        this.#records.set(f.origin, rec)
      }
      fresh.push({ rec, keys: f.body.keys })
    }
    if (replaced.size > 0) this.#dropSlotsFromKeys(replaced)
    for (const { rec, keys } of fresh) {
      for (const k of keys) if (this.#addKey(k, rec.slot)) rec.keyCount++
    }
    return fresh.map((f) => f.rec.origin)
  }

  /**
   * A verified goodbye: drops the record at or below `epoch` and keeps the signed statement to
   * pass on. True when new.
   */
  goodbye (origin: string, epoch: number, nowMs: number, statement: Uint8Array): boolean {
    if (origin === this.#init.selfId || this.isTombstoned(origin, epoch)) return false
    const rec = this.#records.get(origin)
    if (rec === undefined) {
      // Nothing to remove: kept only to block a record of that epoch arriving later (a pull that
      // crossed the goodbye), while there is room, and not news to pass on: goodbyes for made-up
      // origins cost their sender nothing and must not flood the cluster or fill this map.
      if (this.#tombstones.size < this.#maxRecords) this.#tombstones.set(origin, { epoch, untilMs: nowMs + this.#init.tombstoneTtlMs, statement: copyBytes(statement) })
      else this.#limit('unknown-origins', origin, 'goodbyes for origins without a record: the tombstones are full')
      this.#wanted.delete(origin)
      return false
    }
    this.#tombstones.set(origin, { epoch, untilMs: nowMs + this.#init.tombstoneTtlMs, statement: copyBytes(statement) })
    if (rec.epoch <= epoch) this.#removeRecords([rec])
    this.#wanted.delete(origin)
    return true
  }

  /**
   * Drops a record whose signed state turned out inconsistent (its origin signed a delta that does
   * not lead to the record it signed), and wishes for its version back, to be pulled whole.
   */
  drop (origin: string, nowMs: number): void {
    const rec = this.#records.get(origin)
    if (rec === undefined) return
    this.#removeRecords([rec])
    this.want(origin, rec.epoch, rec.seq, nowMs)
  }

  /** Drops records not heard of within the expiry bound; returns their origins. */
  expire (nowMs: number): string[] {
    const dead: IndexRecord[] = []
    for (const rec of this.#records.values()) if (!this.isAlive(rec, nowMs)) dead.push(rec)
    if (dead.length > 0) this.#removeRecords(dead)
    for (const [origin, t] of this.#tombstones) if (t.untilMs < nowMs) this.#tombstones.delete(origin)
    const seenTtl = this.#init.expiryMs + this.#init.tombstoneTtlMs
    for (const [origin, s] of this.#seen) {
      if (!this.#records.has(origin) && nowMs - s.atMs > seenTtl) this.#seen.delete(origin)
    }
    return dead.map((r) => r.origin)
  }

  /** The keys of each given record, from one scan of the key map. */
  keysOf (origins: readonly string[]): Map<string, string[]> {
    const bySlot = new Map<number, string[]>()
    const out = new Map<string, string[]>()
    for (const origin of origins) {
      const rec = this.#records.get(origin)
      if (rec === undefined) continue
      const list: string[] = []
      bySlot.set(rec.slot, list)
      out.set(origin, list)
    }
    if (bySlot.size === 0) return out
    this.#keys.collect(bySlot)
    return out
  }

  #removeRecords (recs: readonly IndexRecord[]): void {
    const slots = new Set<number>()
    for (const rec of recs) {
      slots.add(rec.slot)
      this.#records.delete(rec.origin)
      this.#slots[rec.slot] = undefined
    }
    this.#dropSlotsFromKeys(slots)
    // Slots are reused only after the scan, so no key can point at a newcomer by mistake.
    for (const slot of slots) this.#freeSlots.push(slot)
  }

  #dropSlotsFromKeys (slots: ReadonlySet<number>): void {
    this.#keys.dropSlots(slots)
  }

  #addKey (k: string, slot: number): boolean {
    return this.#keys.add(k, slot)
  }

  #removeKey (k: string, slot: number): boolean {
    return this.#keys.remove(k, slot)
  }
}

/**
 * A copy that owns its memory. Signatures and statements arrive as Buffers viewing the frame they
 * came in, and Buffer's slice() is a view too: a 64-byte signature kept that way held its whole
 * record frame (about 165 KB at 5,000 keys, 660 KB at 20,000) for as long as the record lived.
 */
function copyBytes (bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes)
}
