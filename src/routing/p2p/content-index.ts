import type { Peer } from '../types.js'
import type { DeltaMessage, RecordFull, VersionEntry } from './codec.js'

/** What this node knows of one other node: its record plus liveness. */
export interface IndexRecord {
  readonly origin: string
  readonly slot: number
  epoch: number
  seq: number
  registryAddress: string
  /** libp2p multiaddrs the owner listens on (without /p2p), so any node can dial any other. */
  addrs: readonly string[]
  keyCount: number
  /** When this node last heard of the origin, directly or through others (local clock). */
  lastHeardMs: number
  /** The Peer handed out by lookups; one frozen object per record. */
  peer: Peer
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

export interface ContentIndexInit {
  /** This node's peer id: its own record never enters the index. */
  selfId: string
  expiryMs: number
  tombstoneTtlMs: number
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
 * Memory is the point of the layout. There is one Map from compact key (see codec.compactKey)
 * to the slot of the one node holding it (a small integer, no allocation) or an array of slots;
 * records do not keep their own key lists. Operations that need a record's keys (answering a
 * sync, replacing or dropping a record) scan the Map once, which costs milliseconds at 150k keys
 * and happens on version changes only, not per lookup or per delta.
 */
export class ContentIndex {
  readonly #init: ContentIndexInit
  readonly #keys = new Map<string, number | number[]>()
  readonly #records = new Map<string, IndexRecord>()
  readonly #slots: Array<IndexRecord | undefined> = []
  readonly #freeSlots: number[] = []
  /** Goodbyes: (origin, epoch) removed for good; a later sync must not resurrect it. */
  readonly #tombstones = new Map<string, { epoch: number, untilMs: number }>()
  /** Flood de-duplication, also for origins that have no record (yet). */
  readonly #seen = new Map<string, Seen>()
  /** Versions heard of but not held; cleared once a delta or a pull catches up. */
  readonly #wanted = new Map<string, { epoch: number, seq: number, sinceMs: number }>()

  constructor (init: ContentIndexInit) {
    this.#init = init
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

  /** Nodes holding `compact` that are not known to be gone; never this node. */
  lookup (compact: string, nowMs: number): Peer[] {
    const v = this.#keys.get(compact)
    if (v === undefined) return []
    const out: Peer[] = []
    const visit = (slot: number): void => {
      const rec = this.#slots[slot]
      if (rec !== undefined && this.isAlive(rec, nowMs)) out.push(rec.peer)
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

  /** Notes that (origin, epoch, seq) exists somewhere; `wanted()` lists it until it is held. */
  want (origin: string, epoch: number, seq: number, nowMs: number): void {
    if (origin === this.#init.selfId || this.isTombstoned(origin, epoch) || this.#holds(origin, epoch, seq)) return
    const w = this.#wanted.get(origin)
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

  applyDelta (d: DeltaMessage, nowMs: number): DeltaResult {
    if (d.origin === this.#init.selfId || this.isTombstoned(d.origin, d.epoch)) return 'stale'
    const rec = this.#records.get(d.origin)
    if (rec !== undefined && rec.epoch > d.epoch) return 'stale'
    if (rec !== undefined && rec.epoch === d.epoch) {
      if (d.seq <= rec.seq) return 'duplicate'
      if (d.seq === rec.seq + 1) {
        for (const k of d.adds) if (this.#addKey(k, rec.slot)) rec.keyCount++
        for (const k of d.removes) if (this.#removeKey(k, rec.slot)) rec.keyCount--
        rec.seq = d.seq
        rec.lastHeardMs = Math.max(rec.lastHeardMs, nowMs)
        return 'applied'
      }
    }
    this.want(d.origin, d.epoch, d.seq, nowMs)
    return 'gap'
  }

  /**
   * Applies whole records from a sync answer, all with one scan of the key map. Records that
   * are stale, tombstoned, this node's, or older than the expiry bound (the responder had not
   * heard of the origin for that long) are skipped. Returns the origins that changed.
   */
  applyFull (fulls: readonly RecordFull[], nowMs: number): string[] {
    const replaced = new Set<number>()
    const fresh: Array<{ rec: IndexRecord, keys: readonly string[] }> = []
    for (const f of fulls) {
      if (f.origin === this.#init.selfId || this.isTombstoned(f.origin, f.epoch)) continue
      if (f.ageMs > this.#init.expiryMs) continue
      const heardMs = nowMs - f.ageMs
      let rec = this.#records.get(f.origin)
      if (rec !== undefined) {
        if (rec.epoch > f.epoch || (rec.epoch === f.epoch && rec.seq >= f.seq)) {
          if (rec.epoch === f.epoch) rec.lastHeardMs = Math.max(rec.lastHeardMs, heardMs)
          continue
        }
        const sameEpoch = rec.epoch === f.epoch
        replaced.add(rec.slot)
        rec.epoch = f.epoch
        rec.seq = f.seq
        rec.registryAddress = f.registryAddress
        rec.addrs = Object.freeze([...f.addrs])
        rec.lastHeardMs = sameEpoch ? Math.max(rec.lastHeardMs, heardMs) : heardMs
        rec.keyCount = 0
        if (rec.peer.registryAddress !== f.registryAddress) rec.peer = Object.freeze({ id: f.origin, registryAddress: f.registryAddress })
      } else {
        const slot = this.#freeSlots.pop() ?? this.#slots.length
        rec = {
          origin: f.origin,
          slot,
          epoch: f.epoch,
          seq: f.seq,
          registryAddress: f.registryAddress,
          addrs: Object.freeze([...f.addrs]),
          keyCount: 0,
          lastHeardMs: heardMs,
          peer: Object.freeze({ id: f.origin, registryAddress: f.registryAddress })
        }
        this.#slots[slot] = rec
        this.#records.set(f.origin, rec)
      }
      fresh.push({ rec, keys: f.keys })
    }
    if (replaced.size > 0) this.#dropSlotsFromKeys(replaced)
    for (const { rec, keys } of fresh) {
      for (const k of keys) if (this.#addKey(k, rec.slot)) rec.keyCount++
    }
    return fresh.map((f) => f.rec.origin)
  }

  /** A goodbye: drops the record at or below `epoch` and remembers the epoch. True when new. */
  goodbye (origin: string, epoch: number, nowMs: number): boolean {
    if (origin === this.#init.selfId || this.isTombstoned(origin, epoch)) return false
    this.#tombstones.set(origin, { epoch, untilMs: nowMs + this.#init.tombstoneTtlMs })
    const rec = this.#records.get(origin)
    if (rec !== undefined && rec.epoch <= epoch) this.#removeRecords([rec])
    this.#wanted.delete(origin)
    return true
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
    for (const [k, v] of this.#keys) {
      if (typeof v === 'number') {
        bySlot.get(v)?.push(k)
      } else {
        for (const slot of v) bySlot.get(slot)?.push(k)
      }
    }
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
    for (const [k, v] of this.#keys) {
      if (typeof v === 'number') {
        if (slots.has(v)) this.#keys.delete(k)
        continue
      }
      const kept = v.filter((s) => !slots.has(s))
      if (kept.length === v.length) continue
      if (kept.length === 0) this.#keys.delete(k)
      else if (kept.length === 1) this.#keys.set(k, kept[0] as number)
      else this.#keys.set(k, kept)
    }
  }

  #addKey (k: string, slot: number): boolean {
    const v = this.#keys.get(k)
    if (v === undefined) {
      this.#keys.set(k, slot)
      return true
    }
    if (typeof v === 'number') {
      if (v === slot) return false
      this.#keys.set(k, [v, slot])
      return true
    }
    if (v.includes(slot)) return false
    v.push(slot)
    return true
  }

  #removeKey (k: string, slot: number): boolean {
    const v = this.#keys.get(k)
    if (v === undefined) return false
    if (typeof v === 'number') {
      if (v !== slot) return false
      this.#keys.delete(k)
      return true
    }
    const i = v.indexOf(slot)
    if (i < 0) return false
    v.splice(i, 1)
    if (v.length === 1) this.#keys.set(k, v[0] as number)
    return true
  }
}
