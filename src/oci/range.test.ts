import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { RangeNotSatisfiableError } from './errors.js'
import {
  contentRangeHeader, parseRangeHeader, rangeHeaderValue, rangeLength, resolveRange, unsatisfiedContentRangeHeader
} from './range.js'

function unsatisfiable (sizeBytes: number | undefined) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof RangeNotSatisfiableError, String(err))
    assert.equal(err.status, 416)
    assert.equal(err.code, 'UNSUPPORTED')
    assert.equal(err.sizeBytes, sizeBytes)
    return true
  }
}

/** Parse, resolve and format, as the blob handler does. */
function serve (header: string, size: number): { contentRange: string, length: number } {
  const spec = parseRangeHeader(header)
  assert.ok(spec !== undefined)
  const range = resolveRange(spec, size)
  return { contentRange: contentRangeHeader(range, size), length: rangeLength(range) }
}

describe('parseRangeHeader', () => {
  it('reads the three forms', () => {
    assert.deepEqual(parseRangeHeader('bytes=0-9'), { start: 0, end: 9 })
    assert.deepEqual(parseRangeHeader('bytes=500-'), { start: 500 })
    assert.deepEqual(parseRangeHeader('bytes=-500'), { suffix: 500 })
    assert.deepEqual(parseRangeHeader('Bytes=1-3'), { start: 1, end: 3 })
    assert.deepEqual(parseRangeHeader(`bytes=0-${Number.MAX_SAFE_INTEGER}`), { start: 0, end: Number.MAX_SAFE_INTEGER })
  })

  it('ignores an absent header and unknown units', () => {
    assert.equal(parseRangeHeader(undefined), undefined)
    assert.equal(parseRangeHeader(''), undefined)
    assert.equal(parseRangeHeader('items=0-9'), undefined)
    assert.equal(parseRangeHeader('none=x'), undefined)
  })

  it('rejects malformed bytes ranges as 416 without a size', () => {
    const bad = [
      'bytes=0-1,3-4', 'bytes=5', 'bytes=', 'bytes=-', 'bytes=a-b', 'bytes=-0', 'bytes=500-0', 'bytes=+1-2',
      'bytes=1-+2', 'bytes=1 - 2', 'bytes=1e3-', 'bytes=0x10-', 'bytes=-1-2', `bytes=0-${Number.MAX_SAFE_INTEGER + 1}`,
      'bytes=99999999999999999999-', 'bytes=-99999999999999999999', 'bytes=١-٢', 'bytes0-1'
    ]
    for (const header of bad) assert.throws(() => parseRangeHeader(header), unsatisfiable(undefined), header)
  })

  it('serialises back to a header', () => {
    for (const header of ['bytes=0-0', 'bytes=500-', 'bytes=-500', 'bytes=2-15']) {
      const spec = parseRangeHeader(header)
      assert.ok(spec !== undefined)
      assert.equal(rangeHeaderValue(spec), header)
    }
  })
})

describe('resolveRange', () => {
  it('matches Spegel\'s vectors for size 1000', () => {
    const cases: Array<[string, string, number]> = [
      ['bytes=0-0', 'bytes 0-0/1000', 1],
      ['bytes=0-9', 'bytes 0-9/1000', 10],
      ['bytes=500-', 'bytes 500-999/1000', 500],
      ['bytes=-500', 'bytes 500-999/1000', 500],
      ['bytes=-1000', 'bytes 0-999/1000', 1000],
      ['bytes=900-1500', 'bytes 900-999/1000', 100],
      ['bytes=-1', 'bytes 999-999/1000', 1],
      ['bytes=0-', 'bytes 0-999/1000', 1000]
    ]
    for (const [header, contentRange, length] of cases) {
      assert.deepEqual(serve(header, 1000), { contentRange, length }, header)
    }
    for (const header of ['bytes=1000-', 'bytes=1500-', 'bytes=1000-2000']) {
      assert.throws(() => serve(header, 1000), unsatisfiable(1000), header)
    }
  })

  it('matches the OCI conformance range checks on a 2048-byte blob', () => {
    assert.deepEqual(serve('bytes=500-1499', 2048), { contentRange: 'bytes 500-1499/2048', length: 1000 })
    assert.deepEqual(serve('bytes=500-', 2048), { contentRange: 'bytes 500-2047/2048', length: 1548 })
    assert.deepEqual(serve('bytes=-500', 2048), { contentRange: 'bytes 1548-2047/2048', length: 500 })
    assert.deepEqual(serve('bytes=2000-5000', 2048), { contentRange: 'bytes 2000-2047/2048', length: 48 })
    assert.throws(() => serve('bytes=500-0', 2048), unsatisfiable(undefined))
    assert.throws(() => serve('bytes=5000-10000', 2048), unsatisfiable(2048))
  })

  it('resumes at an offset and reads a suffix longer than the content as all of it', () => {
    assert.deepEqual(serve('bytes=2-15', 17), { contentRange: 'bytes 2-15/17', length: 14 })
    assert.deepEqual(serve('bytes=-5000', 17), { contentRange: 'bytes 0-16/17', length: 17 })
    assert.deepEqual(serve('bytes=16-', 17), { contentRange: 'bytes 16-16/17', length: 1 })
  })

  it('cannot satisfy any range of empty content', () => {
    for (const header of ['bytes=0-', 'bytes=-1', 'bytes=0-0']) {
      assert.throws(() => serve(header, 0), unsatisfiable(0), header)
    }
  })

  it('rejects hand-built specs that parsing would have refused', () => {
    assert.throws(() => resolveRange({ start: 5, end: 4 }, 10), unsatisfiable(10))
    assert.throws(() => resolveRange({ start: -1 }, 10), unsatisfiable(10))
    assert.throws(() => resolveRange({ suffix: 0 }, 10), unsatisfiable(10))
    assert.throws(() => resolveRange({ start: 0.5 }, 10), unsatisfiable(10))
    assert.throws(() => resolveRange({ start: 0 }, -1), RangeError)
  })
})

describe('unsatisfiedContentRangeHeader', () => {
  it('names the size', () => {
    assert.equal(unsatisfiedContentRangeHeader(2048), 'bytes */2048')
  })
})
