// Property tests of Range parsing and resolution over generated headers and sizes. A fixed
// seed and run count keep them deterministic; a failure prints the seed and the shrunk case.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { RangeNotSatisfiableError } from './errors.js'
import {
  contentRangeHeader, parseRangeHeader, rangeHeaderValue, rangeLength, resolveRange, unsatisfiedContentRangeHeader, type RangeSpec
} from './range.js'

const SEED = 0x5be6e1
const RUNS = 2000

/** Offsets near the edges that matter: 0, small, around a size, huge, beyond safe integers. */
const offsetText = fc.oneof(
  fc.nat({ max: 5000 }).map(String),
  fc.constantFrom('0', '00', '007', '9007199254740991', '9007199254740992', '99999999999999999999999', ''),
  fc.bigInt({ min: 0n, max: 10n ** 30n }).map(String)
)

/** Headers a client might send, well-formed or not. */
const rangeHeaderText = fc.oneof(
  fc.tuple(offsetText, offsetText).map(([a, b]) => `bytes=${a}-${b}`),
  fc.tuple(fc.constantFrom('bytes', 'Bytes', ' bytes ', 'items', '', 'bytes '), fc.constantFrom('=', ' = ', ''), offsetText, fc.constantFrom('-', '--', '', ' - ', '+'), offsetText)
    .map(([unit, eq, a, dash, b]) => `${unit}${eq}${a}${dash}${b}`),
  fc.tuple(offsetText, offsetText, offsetText, offsetText).map(([a, b, c, d]) => `bytes=${a}-${b},${c}-${d}`),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: fc.constantFrom(...'bytes=0123456789-, \t+eE.'), maxLength: 30 })
)

/** Sizes including the empty blob and sizes near the generated offsets. */
const size = fc.oneof(fc.constant(0), fc.nat({ max: 6000 }), fc.constantFrom(1, 2, 1024, Number.MAX_SAFE_INTEGER))

describe('Range header (property)', () => {
  it('parses any header into a valid spec, nothing, or a 416 without a size', () => {
    fc.assert(fc.property(fc.option(rangeHeaderText, { nil: undefined }), (header) => {
      let spec: RangeSpec | undefined
      try {
        spec = parseRangeHeader(header)
      } catch (err) {
        assert.ok(err instanceof RangeNotSatisfiableError, `unexpected ${String(err)} for ${JSON.stringify(header)}`)
        assert.equal(err.status, 416)
        assert.equal(err.sizeBytes, undefined)
        return
      }
      if (spec === undefined) return
      if ('suffix' in spec) {
        assert.ok(Number.isSafeInteger(spec.suffix) && spec.suffix >= 1)
      } else {
        assert.ok(Number.isSafeInteger(spec.start) && spec.start >= 0)
        if (spec.end !== undefined) assert.ok(Number.isSafeInteger(spec.end) && spec.end >= spec.start)
      }
      // What we would send a peer for the same range parses back to the same spec.
      assert.deepEqual(parseRangeHeader(rangeHeaderValue(spec)), spec)
    }), { seed: SEED, numRuns: RUNS })
  })

  it('resolves every parsed spec against any size into bytes inside the content, or a 416 carrying the size', () => {
    fc.assert(fc.property(rangeHeaderText, size, (header, sizeBytes) => {
      let spec: RangeSpec | undefined
      try {
        spec = parseRangeHeader(header)
      } catch {
        return
      }
      if (spec === undefined) return
      let range
      try {
        range = resolveRange(spec, sizeBytes)
      } catch (err) {
        assert.ok(err instanceof RangeNotSatisfiableError, String(err))
        assert.equal(err.sizeBytes, sizeBytes)
        assert.equal(unsatisfiedContentRangeHeader(sizeBytes), `bytes */${sizeBytes}`)
        // Unsatisfiable means: empty content, or a start at or past the end.
        assert.ok(sizeBytes === 0 || ('start' in spec && spec.start >= sizeBytes))
        return
      }
      assert.ok(range.start >= 0 && range.start <= range.end && range.end < sizeBytes, JSON.stringify({ spec, sizeBytes, range }))
      if ('suffix' in spec) {
        assert.equal(range.end, sizeBytes - 1)
        assert.equal(rangeLength(range), Math.min(spec.suffix, sizeBytes))
      } else {
        assert.equal(range.start, spec.start)
        assert.equal(range.end, Math.min(spec.end ?? sizeBytes - 1, sizeBytes - 1))
      }
      assert.equal(contentRangeHeader(range, sizeBytes), `bytes ${range.start}-${range.end}/${sizeBytes}`)
    }), { seed: SEED, numRuns: RUNS })
  })
})
