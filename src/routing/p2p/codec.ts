/**
 * Wire format of the index protocols. Every frame starts with a type byte; integers are unsigned
 * LEB128 varints (safe up to 2^53), strings are a varint length plus UTF-8, and keys are compact:
 * a `sha256:<64 hex>` digest travels as a 0x00 tag plus its 32 bytes, anything else as a 0x01
 * tag plus a string. Binary rather than JSON because a sync of 30 records of 5,000 digests is
 * 5 MB as JSON and 1 MB like this, and every byte from a peer is checked while decoding.
 */

export const FrameType = {
  Delta: 1,
  Heartbeat: 2,
  Goodbye: 3,
  Have: 4,
  SyncRequest: 10,
  RecordFull: 11,
  RecordSame: 12,
  RecordGone: 13,
  SyncEnd: 14
} as const
export type FrameType = typeof FrameType[keyof typeof FrameType]

/** What the owner changed: a version step with the keys added and removed (compact form). */
export interface DeltaMessage {
  type: typeof FrameType.Delta
  origin: string
  epoch: number
  seq: number
  adds: string[]
  removes: string[]
}

/** What a node last heard of another: the version it holds and how long ago it heard of it. */
export interface LivenessEntry {
  origin: string
  epoch: number
  seq: number
  ageMs: number
}

/**
 * "Still here, at this version", plus what the sender knows of everybody else. Sent to direct
 * peers only, never forwarded: liveness spreads through the ages (exact, so a dead node's age
 * keeps growing everywhere), and one frame per link per interval replaces a flood of one frame
 * per node per link.
 */
export interface HeartbeatMessage {
  type: typeof FrameType.Heartbeat
  origin: string
  epoch: number
  seq: number
  others: LivenessEntry[]
}

export interface GoodbyeMessage {
  type: typeof FrameType.Goodbye
  origin: string
  epoch: number
}

/**
 * "I now hold these versions", sent to direct peers (not flooded) after a pull changed records,
 * so a record learnt by pulling spreads hop by hop at once instead of at the next heartbeat.
 */
export interface HaveMessage {
  type: typeof FrameType.Have
  versions: VersionEntry[]
}

export type PushMessage = DeltaMessage | HeartbeatMessage | GoodbyeMessage | HaveMessage

export interface VersionEntry {
  origin: string
  epoch: number
  seq: number
}

export interface SyncRequest {
  type: typeof FrameType.SyncRequest
  /** Every record the requester holds, its own included. */
  versions: VersionEntry[]
}

export interface RecordFull {
  type: typeof FrameType.RecordFull
  origin: string
  epoch: number
  seq: number
  /** How long ago the responder last heard of this origin; keeps expiry honest across hops. */
  ageMs: number
  registryAddress: string
  addrs: string[]
  keys: string[]
}

export interface RecordSame {
  type: typeof FrameType.RecordSame
  origin: string
  epoch: number
  seq: number
  ageMs: number
}

export interface RecordGone {
  type: typeof FrameType.RecordGone
  origin: string
  epoch: number
}

export interface SyncEnd {
  type: typeof FrameType.SyncEnd
}

export type SyncResponseFrame = RecordFull | RecordSame | RecordGone | SyncEnd

export class CodecError extends Error {
  readonly code = 'INDEX_CODEC'
  constructor (message: string) {
    super(message)
    this.name = 'CodecError'
  }
}

const DIGEST = /^sha256:[0-9a-f]{64}$/
const DIGEST_TAG = 0
const STRING_TAG = 1
const MAX_STRING_BYTES = 64 * 1024
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
  if (compact.length === COMPACT_DIGEST_LENGTH && compact.charCodeAt(0) === 0) {
    return `sha256:${Buffer.from(compact.slice(1), 'latin1').toString('hex')}`
  }
  return compact
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

  /** A compact key (see compactKey). */
  key (k: string): this {
    if (k.length === COMPACT_DIGEST_LENGTH && k.charCodeAt(0) === 0) {
      this.#reserve(COMPACT_DIGEST_LENGTH)
      this.#pos += this.#buf.write(k, this.#pos, 'latin1')
      return this
    }
    this.u8(STRING_TAG)
    return this.string(k)
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

  strings (ss: readonly string[]): this {
    this.uint(ss.length)
    for (const s of ss) this.string(s)
    return this
  }

  finish (): Uint8Array {
    // A copy, so the frame does not pin the (possibly much larger) scratch buffer.
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
    // A NUL-led string would pass for a compact digest in the index.
    if (s.length === 0 || s.charCodeAt(0) === 0) throw new CodecError('invalid key string')
    return s
  }

  keys (): string[] {
    const n = this.uint()
    // Each key takes at least two bytes, which bounds the count before allocating.
    if (n * 2 > this.#buf.length - this.#pos) throw new CodecError('key count exceeds frame')
    const out = new Array<string>(n)
    for (let i = 0; i < n; i++) out[i] = this.key()
    return out
  }

  strings (maxCount = 64): string[] {
    const n = this.uint()
    if (n > maxCount) throw new CodecError(`${n} strings is too many`)
    const out: string[] = []
    for (let i = 0; i < n; i++) out.push(this.string(1024))
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

export function encodePush (m: PushMessage): Uint8Array {
  if (m.type === FrameType.Have) {
    const w = new Writer(16 + m.versions.length * 72)
    w.u8(m.type)
    writeVersions(w, m.versions)
    return w.finish()
  }
  const w = new Writer(m.type === FrameType.Delta ? 64 + (m.adds.length + m.removes.length) * 34 : m.type === FrameType.Heartbeat ? 96 + m.others.length * 72 : 96)
  w.u8(m.type).string(m.origin).uint(m.epoch)
  switch (m.type) {
    case FrameType.Delta:
      w.uint(m.seq).keys(m.adds, m.adds.length).keys(m.removes, m.removes.length)
      break
    case FrameType.Heartbeat:
      w.uint(m.seq).uint(m.others.length)
      for (const o of m.others) w.string(o.origin).uint(o.epoch).uint(o.seq).uint(Math.max(0, Math.round(o.ageMs)))
      break
    case FrameType.Goodbye:
      break
  }
  return w.finish()
}

export function decodePush (bytes: Uint8Array): PushMessage {
  const r = new Reader(bytes)
  const type = r.u8()
  if (type === FrameType.Have) {
    const versions = readVersions(r)
    r.end()
    return { type: FrameType.Have, versions }
  }
  const origin = r.origin()
  const epoch = r.uint()
  let m: PushMessage
  switch (type) {
    case FrameType.Delta:
      m = { type: FrameType.Delta, origin, epoch, seq: r.uint(), adds: r.keys(), removes: r.keys() }
      break
    case FrameType.Heartbeat: {
      const seq = r.uint()
      const n = r.uint()
      if (n > 100_000) throw new CodecError('too many liveness entries')
      const others: LivenessEntry[] = []
      for (let i = 0; i < n; i++) others.push({ origin: r.origin(), epoch: r.uint(), seq: r.uint(), ageMs: r.uint() })
      m = { type: FrameType.Heartbeat, origin, epoch, seq, others }
      break
    }
    case FrameType.Goodbye:
      m = { type: FrameType.Goodbye, origin, epoch }
      break
    default:
      throw new CodecError(`unexpected push frame type ${type}`)
  }
  r.end()
  return m
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

export function encodeSyncRequest (m: SyncRequest): Uint8Array {
  const w = new Writer(16 + m.versions.length * 72)
  w.u8(FrameType.SyncRequest)
  writeVersions(w, m.versions)
  return w.finish()
}

export function decodeSyncRequest (bytes: Uint8Array): SyncRequest {
  const r = new Reader(bytes)
  if (r.u8() !== FrameType.SyncRequest) throw new CodecError('expected a sync request')
  const versions = readVersions(r)
  r.end()
  return { type: FrameType.SyncRequest, versions }
}

/** A RecordFull frame; `keys` is iterated once, so a Set or a generator works. */
export function encodeRecordFull (m: Omit<RecordFull, 'type' | 'keys' | 'addrs'> & { addrs: readonly string[], keys: Iterable<string>, keyCount: number }): Uint8Array {
  const w = new Writer(128 + m.keyCount * 34)
  w.u8(FrameType.RecordFull).string(m.origin).uint(m.epoch).uint(m.seq).uint(Math.max(0, Math.round(m.ageMs)))
    .string(m.registryAddress).strings(m.addrs).keys(m.keys, m.keyCount)
  return w.finish()
}

export function encodeSyncResponseFrame (m: RecordSame | RecordGone | SyncEnd): Uint8Array {
  const w = new Writer(96)
  w.u8(m.type)
  switch (m.type) {
    case FrameType.RecordSame:
      w.string(m.origin).uint(m.epoch).uint(m.seq).uint(Math.max(0, Math.round(m.ageMs)))
      break
    case FrameType.RecordGone:
      w.string(m.origin).uint(m.epoch)
      break
    case FrameType.SyncEnd:
      break
  }
  return w.finish()
}

export function decodeSyncResponseFrame (bytes: Uint8Array): SyncResponseFrame {
  const r = new Reader(bytes)
  const type = r.u8()
  let m: SyncResponseFrame
  switch (type) {
    case FrameType.RecordFull:
      m = {
        type: FrameType.RecordFull,
        origin: r.origin(),
        epoch: r.uint(),
        seq: r.uint(),
        ageMs: r.uint(),
        registryAddress: r.string(512),
        addrs: r.strings(),
        keys: r.keys()
      }
      break
    case FrameType.RecordSame:
      m = { type: FrameType.RecordSame, origin: r.origin(), epoch: r.uint(), seq: r.uint(), ageMs: r.uint() }
      break
    case FrameType.RecordGone:
      m = { type: FrameType.RecordGone, origin: r.origin(), epoch: r.uint() }
      break
    case FrameType.SyncEnd:
      m = { type: FrameType.SyncEnd }
      break
    default:
      throw new CodecError(`unexpected sync frame type ${type}`)
  }
  r.end()
  return m
}
