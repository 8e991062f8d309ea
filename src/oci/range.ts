import { rangeNotSatisfiable } from './errors.js'

/** One byte range as requested: `start-[end]` (end inclusive) or the last `suffix` bytes. */
export type RangeSpec = { start: number, end?: number } | { suffix: number }

/** A range resolved against a size; both ends inclusive. Same shape as the Store's ByteRange. */
export interface ResolvedRange {
  start: number
  end: number
}

// Digits only: no signs, spaces or exponents, which Number() would otherwise accept.
const BYTES_SPEC = /^(\d*)-(\d*)$/

function toOffset (digits: string): number {
  const n = Number(digits)
  if (!Number.isSafeInteger(n)) throw rangeNotSatisfiable(undefined, `range offset ${digits} is too large`)
  return n
}

/**
 * Parses a `Range` header (RFC 9110 subset: one `bytes` range).
 *
 * Returns undefined when there is no (or an empty) header or its unit is not `bytes` (RFC 9110 says to
 * ignore unknown units). A malformed `bytes` range throws RangeNotSatisfiableError (416)
 * without a size: the size is not known yet when the header is parsed, so the handler,
 * after looking the blob up, rethrows `err.withSizeBytes(size)` so the response can carry
 * `Content-Range: bytes *\/<size>`. One error class keeps one status path in the writer.
 */
export function parseRangeHeader (value: string | undefined): RangeSpec | undefined {
  // An empty header carries no range; treating it as absent is friendlier than a 416.
  if (value === undefined || value.trim() === '') return undefined
  const eq = value.indexOf('=')
  if (eq === -1) throw rangeNotSatisfiable(undefined, `invalid range ${value}: expected <unit>=<ranges>`)
  if (value.slice(0, eq).trim().toLowerCase() !== 'bytes') return undefined
  const set = value.slice(eq + 1).trim()
  if (set.includes(',')) throw rangeNotSatisfiable(undefined, 'multiple ranges are not supported')
  const m = BYTES_SPEC.exec(set)
  if (m === null) throw rangeNotSatisfiable(undefined, `invalid range format ${set}`)
  const [, first = '', last = ''] = m
  if (first === '' && last === '') throw rangeNotSatisfiable(undefined, 'range needs a start or a suffix length')
  if (first === '') {
    const suffix = toOffset(last)
    if (suffix === 0) throw rangeNotSatisfiable(undefined, 'suffix range length cannot be less than one')
    return { suffix }
  }
  const start = toOffset(first)
  if (last === '') return { start }
  const end = toOffset(last)
  if (start > end) throw rangeNotSatisfiable(undefined, `range start ${start} cannot be larger than end ${end}`)
  return { start, end }
}

/**
 * Resolves a range against content of `sizeBytes` bytes: a suffix longer than the content
 * means all of it and an end past the content is clamped (RFC 9110). Throws
 * RangeNotSatisfiableError carrying the size when nothing of the content is selected.
 */
export function resolveRange (spec: RangeSpec, sizeBytes: number): ResolvedRange {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new RangeError(`invalid content size ${sizeBytes}`)
  if (sizeBytes === 0) throw rangeNotSatisfiable(sizeBytes, 'range cannot be satisfied for empty content')
  if ('suffix' in spec) {
    if (!Number.isSafeInteger(spec.suffix) || spec.suffix < 1) throw rangeNotSatisfiable(sizeBytes, `invalid suffix length ${spec.suffix}`)
    return { start: Math.max(0, sizeBytes - spec.suffix), end: sizeBytes - 1 }
  }
  const { start, end } = spec
  if (!Number.isSafeInteger(start) || start < 0 || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) {
    throw rangeNotSatisfiable(sizeBytes, `invalid range ${start}-${end ?? ''}`)
  }
  if (start >= sizeBytes) throw rangeNotSatisfiable(sizeBytes, `range start ${start} is out of bounds for size ${sizeBytes}`)
  return { start, end: end === undefined ? sizeBytes - 1 : Math.min(end, sizeBytes - 1) }
}

export function rangeLength (range: ResolvedRange): number {
  return range.end - range.start + 1
}

/** `Content-Range` of a 206 response: `bytes <start>-<end>/<size>`. */
export function contentRangeHeader (range: ResolvedRange, sizeBytes: number): string {
  return `bytes ${range.start}-${range.end}/${sizeBytes}`
}

/** `Content-Range` of a 416 response: `bytes *\/<size>`. */
export function unsatisfiedContentRangeHeader (sizeBytes: number): string {
  return `bytes */${sizeBytes}`
}

/** The `Range` request header for a spec (used when fetching or resuming from a peer). */
export function rangeHeaderValue (spec: RangeSpec): string {
  if ('suffix' in spec) return `bytes=-${spec.suffix}`
  return `bytes=${spec.start}-${spec.end ?? ''}`
}
