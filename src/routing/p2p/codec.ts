/**
 * Wire format of the index protocols (version 2, signed). Every frame starts with a type byte;
 * integers are unsigned LEB128 varints (safe up to 2^53), strings are a varint length plus UTF-8,
 * byte strings a varint length plus the bytes. Binary rather than JSON because a pull of 30
 * records of 5,000 digests is 5 MB as JSON and 1 MB like this, and every byte from a peer is
 * checked while decoding. docs/p2p-protocol.md describes the frames for readers of the wire.
 *
 * Entries (a record's keys, a delta's additions) are compact:
 * - `0x00` + 32 bytes: a `sha256:<64 hex>` digest;
 * - `0x01` + string: any other key;
 * - `0x02` + string + digest entry: a pinned tag, the tag and the digest it names on its origin.
 * Removals are `0x00`/`0x01` entries (a tag is removed by name).
 *
 * What an origin says about itself travels as a signed statement (see record-auth.ts):
 * `origin, epoch, seq, payload bytes, 64-byte Ed25519 signature`. Relays and pull responses pass
 * the statement on unchanged; only hop-local hints (ages, version vectors) sit outside it.
 */

export const FrameType = {
  Delta: 1,
  Heartbeat: 2,
  Goodbye: 3,
  Have: 4,
  PullRequest: 10,
  Record: 11,
  RecordSame: 12,
  RecordGone: 13,
  PullEnd: 14
} as const
export type FrameType = typeof FrameType[keyof typeof FrameType]

/** What a statement says; part of what is signed, so one kind can never pass for another. */
export const StatementKind = {
  /** A whole record at (epoch, seq). */
  Record: 1,
  /** The change from seq - 1 to seq. */
  Delta: 2,
  /** The origin left at this epoch. */
  Goodbye: 3
} as const
export type StatementKind = typeof StatementKind[keyof typeof StatementKind]

export const SIGNATURE_BYTES = 64

/** A claim its origin signed; `bytes` is the statement exactly as it travels, to relay or serve unchanged. */
export interface Statement {
  readonly kind: StatementKind
  readonly origin: string
  readonly epoch: number
  readonly seq: number
  readonly payload: Uint8Array
  readonly signature: Uint8Array
  readonly bytes: Uint8Array
}

/** The state a Record statement describes. `keys` are compact and, on the wire, strictly ascending. */
export interface RecordBody {
  /** As the origin wrote it (checked by record-auth before use). */
  registryAddress: string
  /** libp2p multiaddrs the owner listens on (without /p2p), as the origin wrote them. */
  addrs: string[]
  keys: string[]
  /** Compact tag → compact digest, for the pinned tags among `keys`. */
  tagDigests: Map<string, string>
}

/** A Delta statement's payload: removals first, then additions, then the origin's signature over the resulting record. */
export interface DeltaBody {
  removes: string[]
  adds: string[]
  /** Pinned tags among `adds`. */
  tagDigests: Map<string, string>
  /** Signature over the Record statement at the delta's (epoch, seq), so holders can serve the record later. */
  recordSignature: Uint8Array
}

/** What a node last heard of another: the version it holds and how long ago it heard of it. */
export interface LivenessEntry {
  origin: string
  epoch: number
  seq: number
  ageMs: number
}

export interface VersionEntry {
  origin: string
  epoch: number
  seq: number
}

export interface DeltaFrame {
  type: typeof FrameType.Delta
  statement: Statement
}

/**
 * "Still here, at this version", plus what the sender knows of everybody else. Sent to direct
 * peers only and never forwarded, so its origin must be the connection's authenticated peer;
 * the entries about others are hints (see membership.ts for what they may cause).
 */
export interface HeartbeatFrame {
  type: typeof FrameType.Heartbeat
  origin: string
  epoch: number
  seq: number
  others: LivenessEntry[]
}

export interface GoodbyeFrame {
  type: typeof FrameType.Goodbye
  statement: Statement
}

/** "I now hold these versions", to direct peers after a pull changed records: a hint to pull. */
export interface HaveFrame {
  type: typeof FrameType.Have
  versions: VersionEntry[]
}

export type PushFrame = DeltaFrame | HeartbeatFrame | GoodbyeFrame | HaveFrame

export interface PullRequest {
  type: typeof FrameType.PullRequest
  /** Every record the requester holds, its own included. */
  versions: VersionEntry[]
}

export interface RecordFrame {
  type: typeof FrameType.Record
  /** How long ago the responder last heard of the origin: a hop-local hint, not signed. */
  ageMs: number
  statement: Statement
}

export interface RecordSameFrame {
  type: typeof FrameType.RecordSame
  origin: string
  epoch: number
  seq: number
  ageMs: number
}

/** The origin's own signed goodbye, served to a requester that still holds the record. */
export interface RecordGoneFrame {
  type: typeof FrameType.RecordGone
  statement: Statement
}

export interface PullEndFrame {
  type: typeof FrameType.PullEnd
  /**
   * The server stopped at its per-answer limit (bytes or records) before everything the requester
   * lacks: the requester pulls again at once for the rest. On the wire, a flag byte after the type
   * (absent means false).
   */
  isCut: boolean
}

export type PullResponseFrame = RecordFrame | RecordSameFrame | RecordGoneFrame | PullEndFrame

export class CodecError extends Error {
  readonly code = 'INDEX_CODEC'
  constructor (message: string) {
    super(message)
    this.name = 'CodecError'
  }
}

const DIGEST = /^sha256:[0-9a-f]{64}$/
/** The OCI digest grammar, for pinned digests of other algorithms (sha256 travels compact). */
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{1,256}$/
const DIGEST_TAG = 0
const STRING_TAG = 1
const PINNED_TAG = 2
const MAX_STRING_BYTES = 64 * 1024
/** Longest `[IPv6]:port`, with room to spare; anything longer is not an address. */
const MAX_REGISTRY_ADDRESS_BYTES = 64
const MAX_ADDRS = 16
const MAX_ADDR_BYTES = 256
/** Compact digests are one-byte strings (a NUL then 32 latin1 chars): 56 heap bytes instead of 88. */
const COMPACT_DIGEST_LENGTH = 33

/** The form keys take in the index and on the wire. Pure and cheap (about a microsecond). */
export function compactKey (key: string): string {
  if (key.length === 71 && DIGEST.test(key)) {
    return Buffer.from(key.slice(7), 'hex').toString('latin1').padStart(COMPACT_DIGEST_LENGTH, '\0')
  }
  return key
}

/** Back to the string a Store or a registry uses. */
export function expandKey (compact: string): string {
  if (isCompactDigest(compact)) {
    return `sha256:${Buffer.from(compact.slice(1), 'latin1').toString('hex')}`
  }
  return compact
}

function isCompactDigest (k: string): boolean {
  return k.length === COMPACT_DIGEST_LENGTH && k.charCodeAt(0) === 0
}

/** The one order of entries in a record, so every holder encodes it to the bytes its origin signed. */
export function compareKeys (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

export class Writer {
  #buf: Buffer
  #pos = 0

  constructor (initialBytes = 256) {
    this.#buf = Buffer.allocUnsafe(initialBytes)
  }

  get length (): number {
    return this.#pos
  }

  #reserve (n: number): void {
    if (this.#pos + n <= this.#buf.length) return
    let size = this.#buf.length * 2
    while (size < this.#pos + n) size *= 2
    const next = Buffer.allocUnsafe(size)
    this.#buf.copy(next, 0, 0, this.#pos)
    this.#buf = next
  }

  u8 (v: number): this {
    this.#reserve(1)
    this.#buf[this.#pos++] = v
    return this
  }

  uint (v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new CodecError(`cannot encode ${v} as an unsigned integer`)
    this.#reserve(8)
    while (v >= 0x80) {
      this.#buf[this.#pos++] = (v % 0x80) | 0x80
      v = Math.floor(v / 0x80)
    }
    this.#buf[this.#pos++] = v
    return this
  }

  string (s: string): this {
    const bytes = Buffer.byteLength(s, 'utf8')
    this.uint(bytes)
    this.#reserve(bytes)
    this.#pos += this.#buf.write(s, this.#pos, 'utf8')
    return this
  }

  /** Raw bytes, no length. */
  raw (b: Uint8Array): this {
    this.#reserve(b.byteLength)
    this.#buf.set(b, this.#pos)
    this.#pos += b.byteLength
    return this
  }

  /** A varint length plus the bytes. */
  bytes (b: Uint8Array): this {
    return this.uint(b.byteLength).raw(b)
  }

  /** A compact key (see compactKey). */
  key (k: string): this {
    if (isCompactDigest(k)) {
      this.#reserve(COMPACT_DIGEST_LENGTH)
      this.#pos += this.#buf.write(k, this.#pos, 'latin1')
      return this
    }
    this.u8(STRING_TAG)
    return this.string(k)
  }

  /** A key, or a pinned tag when `tagDigests` names a digest for it. */
  entry (k: string, tagDigests: ReadonlyMap<string, string> | undefined): this {
    const digest = tagDigests?.get(k)
    if (digest === undefined) return this.key(k)
    this.u8(PINNED_TAG).string(k)
    return this.key(digest)
  }

  keys (ks: Iterable<string>, count: number): this {
    this.uint(count)
    let written = 0
    for (const k of ks) {
      this.key(k)
      written++
    }
    if (written !== count) throw new CodecError(`key count ${count} does not match ${written} keys`)
    return this
  }

  entries (ks: Iterable<string>, count: number, tagDigests: ReadonlyMap<string, string> | undefined): this {
    this.uint(count)
    let written = 0
    for (const k of ks) {
      this.entry(k, tagDigests)
      written++
    }
    if (written !== count) throw new CodecError(`entry count ${count} does not match ${written} entries`)
    return this
  }

  strings (ss: readonly string[]): this {
    this.uint(ss.length)
    for (const s of ss) this.string(s)
    return this
  }

  finish (): Uint8Array {
    // A large buffer that is mostly used is handed out as it is (records are hundreds of KB);
    // otherwise a copy, so the frame does not pin a much larger scratch buffer or a shared pool slab.
    if (this.#pos >= 64 * 1024 && this.#pos * 4 >= this.#buf.length * 3) return new Uint8Array(this.#buf.buffer, this.#buf.byteOffset, this.#pos)
    return new Uint8Array(this.#buf.subarray(0, this.#pos))
  }
}

export class Reader {
  readonly #buf: Buffer
  #pos = 0

  constructor (bytes: Uint8Array) {
    this.#buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  get done (): boolean {
    return this.#pos >= this.#buf.length
  }

  get position (): number {
    return this.#pos
  }

  #need (n: number): void {
    if (this.#pos + n > this.#buf.length) throw new CodecError('frame is truncated')
  }

  u8 (): number {
    this.#need(1)
    return this.#buf[this.#pos++] as number
  }

  uint (): number {
    let result = 0
    let scale = 1
    for (let i = 0; i < 8; i++) {
      const b = this.u8()
      result += (b & 0x7f) * scale
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(result)) throw new CodecError('integer out of range')
        return result
      }
      scale *= 0x80
    }
    throw new CodecError('integer too long')
  }

  string (max = MAX_STRING_BYTES): string {
    const n = this.uint()
    if (n > max) throw new CodecError(`string of ${n} bytes is too long`)
    this.#need(n)
    const s = this.#buf.toString('utf8', this.#pos, this.#pos + n)
    this.#pos += n
    return s
  }

  /** `n` raw bytes, as a view into the frame. */
  raw (n: number): Uint8Array {
    this.#need(n)
    const out = this.#buf.subarray(this.#pos, this.#pos + n)
    this.#pos += n
    return out
  }

  /** A varint length plus that many bytes, as a view into the frame. */
  bytes (): Uint8Array {
    return this.raw(this.uint())
  }

  key (): string {
    this.#need(1)
    const tag = this.#buf[this.#pos]
    if (tag === DIGEST_TAG) {
      this.#need(COMPACT_DIGEST_LENGTH)
      const k = this.#buf.toString('latin1', this.#pos, this.#pos + COMPACT_DIGEST_LENGTH)
      this.#pos += COMPACT_DIGEST_LENGTH
      return k
    }
    if (tag !== STRING_TAG) throw new CodecError(`unknown key tag ${String(tag)}`)
    this.#pos++
    const s = this.string()
    // A NUL-led string would pass for a compact digest in the index, and a digest in string
    // form would be a second spelling of a compact one: one key, one encoding.
    if (s.length === 0 || s.charCodeAt(0) === 0 || (s.length === 71 && DIGEST.test(s))) throw new CodecError('invalid key string')
    return s
  }

  /** A key or a pinned tag; the pin goes into `tagDigests`. */
  entry (tagDigests: Map<string, string>): string {
    this.#need(1)
    if (this.#buf[this.#pos] !== PINNED_TAG) return this.key()
    this.#pos++
    const tag = this.string()
    if (tag.length === 0 || tag.charCodeAt(0) === 0 || (tag.length === 71 && DIGEST.test(tag))) throw new CodecError('invalid pinned tag')
    const digest = this.key()
    if (!isCompactDigest(digest) && !DIGEST_GRAMMAR.test(digest)) throw new CodecError('a pinned tag names something that is not a digest')
    tagDigests.set(tag, digest)
    return tag
  }

  keys (): string[] {
    const n = this.#count()
    const out = new Array<string>(n)
    for (let i = 0; i < n; i++) out[i] = this.key()
    return out
  }

  /** Entries; with `isSorted`, strictly ascending (compareKeys), which also rules out duplicates. */
  entries (tagDigests: Map<string, string>, isSorted: boolean): string[] {
    const n = this.#count()
    const out = new Array<string>(n)
    let prev: string | undefined
    for (let i = 0; i < n; i++) {
      const k = this.entry(tagDigests)
      if (isSorted && prev !== undefined && compareKeys(prev, k) >= 0) throw new CodecError('record entries are not in ascending order')
      out[i] = k
      prev = k
    }
    return out
  }

  #count (): number {
    const n = this.uint()
    // Each key takes at least two bytes, which bounds the count before allocating.
    if (n * 2 > this.#buf.length - this.#pos) throw new CodecError('key count exceeds frame')
    return n
  }

  strings (maxCount: number, maxBytes: number): string[] {
    const n = this.uint()
    if (n > maxCount) throw new CodecError(`${n} strings is too many`)
    const out: string[] = []
    for (let i = 0; i < n; i++) out.push(this.string(maxBytes))
    return out
  }

  origin (): string {
    const s = this.string(128)
    if (s === '') throw new CodecError('empty origin')
    return s
  }

  end (): void {
    if (!this.done) throw new CodecError('trailing bytes in frame')
  }
}

// ---- statements ----

/** A statement's wire form (the kind is implied by the frame that carries it). */
export function encodeStatement (s: Omit<Statement, 'bytes'>): Uint8Array {
  if (s.signature.byteLength !== SIGNATURE_BYTES) throw new CodecError('a signature is 64 bytes')
  const w = new Writer(Buffer.byteLength(s.origin) + 40 + s.payload.byteLength + SIGNATURE_BYTES)
  w.string(s.origin).uint(s.epoch).uint(s.seq).bytes(s.payload).raw(s.signature)
  return w.finish()
}

/** Reads a statement that runs to the end of the frame; `bytes` is a view into the frame. */
function readStatement (r: Reader, frame: Uint8Array, kind: StatementKind): Statement {
  const start = r.position
  const origin = r.origin()
  const epoch = r.uint()
  const seq = r.uint()
  const payload = r.bytes()
  const signature = r.raw(SIGNATURE_BYTES)
  r.end()
  return { kind, origin, epoch, seq, payload, signature, bytes: frame.subarray(start) }
}

export function encodeRecordPayload (body: { registryAddress: string, addrs: readonly string[], keys: Iterable<string>, keyCount: number, tagDigests: ReadonlyMap<string, string> | undefined }): Uint8Array {
  const w = new Writer(128 + body.keyCount * 34)
  w.string(body.registryAddress).strings(body.addrs).entries(body.keys, body.keyCount, body.tagDigests)
  return w.finish()
}

export function decodeRecordPayload (payload: Uint8Array): RecordBody {
  const r = new Reader(payload)
  const registryAddress = r.string(MAX_REGISTRY_ADDRESS_BYTES)
  const addrs = r.strings(MAX_ADDRS, MAX_ADDR_BYTES)
  const tagDigests = new Map<string, string>()
  const keys = r.entries(tagDigests, true)
  r.end()
  return { registryAddress, addrs, keys, tagDigests }
}

export function encodeDeltaPayload (body: { removes: readonly string[], adds: readonly string[], tagDigests: ReadonlyMap<string, string> | undefined, recordSignature: Uint8Array }): Uint8Array {
  if (body.recordSignature.byteLength !== SIGNATURE_BYTES) throw new CodecError('a signature is 64 bytes')
  const w = new Writer(96 + (body.adds.length + body.removes.length) * 34)
  w.keys(body.removes, body.removes.length).entries(body.adds, body.adds.length, body.tagDigests).raw(body.recordSignature)
  return w.finish()
}

export function decodeDeltaPayload (payload: Uint8Array): DeltaBody {
  const r = new Reader(payload)
  const removes = r.keys()
  const tagDigests = new Map<string, string>()
  const adds = r.entries(tagDigests, false)
  const recordSignature = r.raw(SIGNATURE_BYTES)
  r.end()
  return { removes, adds, tagDigests, recordSignature }
}

// ---- push protocol ----

export function encodeDeltaFrame (statement: Uint8Array): Uint8Array {
  return prefixed(FrameType.Delta, statement)
}

export function encodeGoodbyeFrame (statement: Uint8Array): Uint8Array {
  return prefixed(FrameType.Goodbye, statement)
}

export function encodeHeartbeat (m: Omit<HeartbeatFrame, 'type'>): Uint8Array {
  const w = new Writer(96 + m.others.length * 72)
  w.u8(FrameType.Heartbeat).string(m.origin).uint(m.epoch).uint(m.seq).uint(m.others.length)
  for (const o of m.others) w.string(o.origin).uint(o.epoch).uint(o.seq).uint(Math.max(0, Math.round(o.ageMs)))
  return w.finish()
}

export function encodeHave (versions: readonly VersionEntry[]): Uint8Array {
  const w = new Writer(16 + versions.length * 72)
  w.u8(FrameType.Have)
  writeVersions(w, versions)
  return w.finish()
}

export function decodePush (bytes: Uint8Array): PushFrame {
  const r = new Reader(bytes)
  const type = r.u8()
  switch (type) {
    case FrameType.Delta:
      return { type, statement: readStatement(r, bytes, StatementKind.Delta) }
    case FrameType.Goodbye:
      return { type, statement: readStatement(r, bytes, StatementKind.Goodbye) }
    case FrameType.Have: {
      const versions = readVersions(r)
      r.end()
      return { type, versions }
    }
    case FrameType.Heartbeat: {
      const origin = r.origin()
      const epoch = r.uint()
      const seq = r.uint()
      const n = r.uint()
      if (n > 100_000) throw new CodecError('too many liveness entries')
      const others: LivenessEntry[] = []
      for (let i = 0; i < n; i++) others.push({ origin: r.origin(), epoch: r.uint(), seq: r.uint(), ageMs: r.uint() })
      r.end()
      return { type, origin, epoch, seq, others }
    }
    default:
      throw new CodecError(`unexpected push frame type ${type}`)
  }
}

// ---- pull protocol ----

export function encodePullRequest (versions: readonly VersionEntry[]): Uint8Array {
  const w = new Writer(16 + versions.length * 72)
  w.u8(FrameType.PullRequest)
  writeVersions(w, versions)
  return w.finish()
}

export function decodePullRequest (bytes: Uint8Array): PullRequest {
  const r = new Reader(bytes)
  if (r.u8() !== FrameType.PullRequest) throw new CodecError('expected a pull request')
  const versions = readVersions(r)
  r.end()
  return { type: FrameType.PullRequest, versions }
}

/** A Record frame: the hop-local age, then the origin's statement unchanged. */
export function encodeRecordFrame (ageMs: number, statement: Uint8Array): Uint8Array {
  return new Writer(16 + statement.byteLength).u8(FrameType.Record).uint(Math.max(0, Math.round(ageMs))).raw(statement).finish()
}

/**
 * What comes before the statement in a Record frame, for writers that send the statement bytes
 * they already hold instead of copying them into a new frame: `[...recordFrameHead(age), ...statement]`
 * is `encodeRecordFrame(age, statement)`.
 */
export function recordFrameHead (ageMs: number): Uint8Array {
  return new Writer(16).u8(FrameType.Record).uint(Math.max(0, Math.round(ageMs))).finish()
}

/** A frame's length prefix on both protocols (an unsigned varint). */
export function lengthPrefix (frameBytes: number): Uint8Array {
  return new Writer(10).uint(frameBytes).finish()
}

export function encodeRecordGone (statement: Uint8Array): Uint8Array {
  return prefixed(FrameType.RecordGone, statement)
}

export function encodeRecordSame (m: Omit<RecordSameFrame, 'type'>): Uint8Array {
  return new Writer(96).u8(FrameType.RecordSame).string(m.origin).uint(m.epoch).uint(m.seq).uint(Math.max(0, Math.round(m.ageMs))).finish()
}

export function encodePullEnd (isCut = false): Uint8Array {
  return isCut ? Uint8Array.of(FrameType.PullEnd, 1) : Uint8Array.of(FrameType.PullEnd)
}

export function decodePullResponse (bytes: Uint8Array): PullResponseFrame {
  const r = new Reader(bytes)
  const type = r.u8()
  switch (type) {
    case FrameType.Record: {
      const ageMs = r.uint()
      return { type, ageMs, statement: readStatement(r, bytes, StatementKind.Record) }
    }
    case FrameType.RecordGone:
      return { type, statement: readStatement(r, bytes, StatementKind.Goodbye) }
    case FrameType.RecordSame: {
      const m: RecordSameFrame = { type, origin: r.origin(), epoch: r.uint(), seq: r.uint(), ageMs: r.uint() }
      r.end()
      return m
    }
    case FrameType.PullEnd: {
      const flag = r.done ? 0 : r.u8()
      if (flag > 1) throw new CodecError(`unknown pull end flag ${flag}`)
      r.end()
      return { type, isCut: flag === 1 }
    }
    default:
      throw new CodecError(`unexpected pull frame type ${type}`)
  }
}

function prefixed (type: FrameType, statement: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + statement.byteLength)
  out[0] = type
  out.set(statement, 1)
  return out
}

function writeVersions (w: Writer, versions: readonly VersionEntry[]): void {
  w.uint(versions.length)
  for (const v of versions) w.string(v.origin).uint(v.epoch).uint(v.seq)
}

function readVersions (r: Reader): VersionEntry[] {
  const n = r.uint()
  if (n > 100_000) throw new CodecError('too many versions')
  const versions: VersionEntry[] = []
  for (let i = 0; i < n; i++) versions.push({ origin: r.origin(), epoch: r.uint(), seq: r.uint() })
  return versions
}
