import type { Logger } from '../../observability/logger.js'
import { splitPinnedKey } from '../tag-key.js'
import { lowerBound } from '../../sorted.js'
import {
  StatementKind, compactKey, compareKeys, encodeDeltaFrame, encodeDeltaPayload, encodeGoodbyeFrame, encodeRecordPayload,
  type Statement
} from './codec.js'
import type { RecordAuth } from './record-auth.js'

export interface OwnRecordComponents {
  auth: RecordAuth
  log: Logger
}

export interface OwnRecordInit {
  /** `IP:port` other nodes use to reach this node's registry. */
  registryAddress: string
}

/** Past this many changes at once, the sorted key list is rebuilt rather than edited in place. */
const REBUILD_THRESHOLD = 64

/**
 * This node's record: its keys (pinned tags with their digests), its addresses and its version
 * (epoch, seq). Every change bumps seq and comes out as one signed delta frame, which also
 * carries the signature of the whole record at the new seq, so any holder can serve the record
 * later with this node's own signature.
 */
export class OwnRecord {
  readonly #auth: RecordAuth
  readonly #log: Logger
  readonly registryAddress: string
  #epoch: number
  #seq = 0
  /** Compact key → compact digest for pinned tags, undefined for everything else. */
  readonly #entries = new Map<string, string | undefined>()
  /** The keys of #entries in the one order a record is signed in. */
  #sorted: string[] = []
  #tagDigests = new Map<string, string>()
  #addrs: readonly string[] = []
  #statement: Statement | undefined

  constructor (components: OwnRecordComponents, init: OwnRecordInit) {
    this.#auth = components.auth
    this.#log = components.log
    this.registryAddress = init.registryAddress
    // Start time plus noise: a restart with the same identity always gets a newer epoch,
    // and two starts in the same millisecond still differ.
    this.#epoch = Date.now() * 1000 + Math.floor(Math.random() * 1000)
  }

  get epoch (): number {
    return this.#epoch
  }

  get seq (): number {
    return this.#seq
  }

  get keyCount (): number {
    return this.#entries.size
  }

  get addrs (): readonly string[] {
    return this.#addrs
  }

  /** The signed record at the current version (built once per version). */
  statement (): Statement {
    if (this.#statement === undefined || this.#statement.epoch !== this.#epoch || this.#statement.seq !== this.#seq) {
      this.#statement = this.#auth.statement(StatementKind.Record, this.#epoch, this.#seq, this.#payload())
    }
    return this.#statement
  }

  /** This node's signed goodbye for its current epoch, as a push frame. */
  goodbyeFrame (): Uint8Array {
    return encodeGoodbyeFrame(this.#auth.statement(StatementKind.Goodbye, this.#epoch, this.#seq, new Uint8Array(0)).bytes)
  }

  /**
   * Sets the announced addresses. With `isPublished`, a change is a new version (announced by
   * the caller; peers pull the record), because a signed record must never change under one version.
   */
  setAddrs (addrs: readonly string[], isPublished: boolean): boolean {
    if (addrs.length === this.#addrs.length && addrs.every((a, i) => a === this.#addrs[i])) return false
    this.#addrs = Object.freeze([...addrs])
    if (isPublished) this.#seq++
    this.#statement = undefined
    return true
  }

  /**
   * Someone holds a statement this node signed at a newer epoch (or a goodbye of the current one):
   * the clock went back across a restart, or another process uses this identity. Move past it,
   * or peers would keep the old record, or the old goodbye's tombstone, over every change from now on.
   */
  moveEpochPast (epoch: number, isGoodbye: boolean): boolean {
    if (epoch < this.#epoch || (epoch === this.#epoch && !isGoodbye)) return false
    this.#log.warn({ event: 'epoch-behind', seen: epoch, epoch: this.#epoch, fix: 'check the clock, and that no other node uses this data directory' },
      'peers hold a newer record of this node; moving to a newer epoch')
    this.#epoch = epoch + 1
    this.#statement = undefined
    return true
  }

  /** Adds keys (a pinned tag replaces its old pin); returns the delta frame, or undefined when nothing changed. */
  advertise (keys: readonly string[]): Uint8Array | undefined {
    const adds = new Map<string, string | undefined>()
    for (const key of keys) {
      const e = toEntry(key)
      if (this.#entries.has(e.key) && this.#entries.get(e.key) === e.digest) continue
      adds.set(e.key, e.digest)
    }
    return this.#change(adds, [])
  }

  withdraw (keys: readonly string[]): Uint8Array | undefined {
    const removes = new Set<string>()
    for (const key of keys) {
      const k = toEntry(key).key
      if (this.#entries.has(k)) removes.add(k)
    }
    return this.#change(new Map(), [...removes])
  }

  replaceAll (keys: readonly string[]): Uint8Array | undefined {
    const next = new Map<string, string | undefined>()
    for (const key of keys) {
      const e = toEntry(key)
      next.set(e.key, e.digest)
    }
    const adds = new Map<string, string | undefined>()
    const removes: string[] = []
    for (const [k, d] of next) if (!this.#entries.has(k) || this.#entries.get(k) !== d) adds.set(k, d)
    for (const k of this.#entries.keys()) if (!next.has(k)) removes.push(k)
    return this.#change(adds, removes)
  }

  #change (adds: ReadonlyMap<string, string | undefined>, removes: readonly string[]): Uint8Array | undefined {
    if (adds.size === 0 && removes.length === 0) return undefined
    this.#seq++
    const isRebuild = adds.size + removes.length > REBUILD_THRESHOLD
    for (const k of removes) {
      this.#entries.delete(k)
      this.#tagDigests.delete(k)
      if (!isRebuild) removeSorted(this.#sorted, k)
    }
    const addTags = new Map<string, string>()
    for (const [k, d] of adds) {
      if (!isRebuild && !this.#entries.has(k)) insertSorted(this.#sorted, k)
      this.#entries.set(k, d)
      if (d === undefined) {
        this.#tagDigests.delete(k)
      } else {
        this.#tagDigests.set(k, d)
        addTags.set(k, d)
      }
    }
    if (isRebuild) this.#sorted = [...this.#entries.keys()].sort(compareKeys)
    const record = this.statement()
    const payload = encodeDeltaPayload({ removes, adds: [...adds.keys()], tagDigests: addTags, recordSignature: record.signature })
    return encodeDeltaFrame(this.#auth.statement(StatementKind.Delta, this.#epoch, this.#seq, payload).bytes)
  }

  #payload (): Uint8Array {
    return encodeRecordPayload({ registryAddress: this.registryAddress, addrs: this.#addrs, keys: this.#sorted, keyCount: this.#sorted.length, tagDigests: this.#tagDigests })
  }
}

/** A router key as an entry: compact key, and the compact digest of a pinned tag. */
function toEntry (key: string): { key: string, digest: string | undefined } {
  const { key: k, digest } = splitPinnedKey(key)
  const compact = compactKey(k)
  // Only a name can be pinned; a digest "pinned" to another digest is no tag (and peers refuse it).
  const isDigestKey = compact.length === 33 && compact.charCodeAt(0) === 0
  return { key: compact, digest: digest === undefined || isDigestKey ? undefined : compactKey(digest) }
}

function insertSorted (sorted: string[], k: string): void {
  const i = lowerBound(sorted, k)
  if (sorted[i] !== k) sorted.splice(i, 0, k)
}

function removeSorted (sorted: string[], k: string): void {
  const i = lowerBound(sorted, k)
  if (sorted[i] === k) sorted.splice(i, 1)
}
