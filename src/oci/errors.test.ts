import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  isOciError, methodNotAllowed, OCI_ERROR_STATUS, OciError, ociErrorBody, RangeNotSatisfiableError,
  rangeNotSatisfiable, unsupportedEndpoint, type OciErrorCode
} from './errors.js'

describe('OciError', () => {
  it('takes its status from the table', () => {
    const expected: Record<OciErrorCode, number> = {
      BLOB_UNKNOWN: 404,
      MANIFEST_UNKNOWN: 404,
      NAME_UNKNOWN: 404,
      BLOB_UPLOAD_UNKNOWN: 404,
      MANIFEST_BLOB_UNKNOWN: 404,
      NAME_INVALID: 400,
      DIGEST_INVALID: 400,
      SIZE_INVALID: 400,
      MANIFEST_INVALID: 400,
      BLOB_UPLOAD_INVALID: 400,
      UNAUTHORIZED: 401,
      DENIED: 403,
      UNSUPPORTED: 405,
      TOOMANYREQUESTS: 429
    }
    assert.deepEqual({ ...OCI_ERROR_STATUS }, expected)
    const codes: OciErrorCode[] = ['BLOB_UNKNOWN', 'NAME_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED', 'TOOMANYREQUESTS']
    for (const code of codes) assert.equal(new OciError(code, 'x').status, expected[code])
  })

  it('renders the distribution-spec body in Spegel key order, omitting an absent detail', () => {
    const plain = new OciError('MANIFEST_UNKNOWN', 'could not get manifest sha256:abc')
    assert.equal(ociErrorBody(plain), '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"could not get manifest sha256:abc"}]}')
    const detailed = new OciError('BLOB_UNKNOWN', 'could not find peer', { detail: { attempts: 0 } })
    assert.equal(ociErrorBody(detailed), '{"errors":[{"code":"BLOB_UNKNOWN","detail":{"attempts":0},"message":"could not find peer"}]}')
    assert.equal(ociErrorBody(new OciError('DENIED', 'no', { detail: null })), '{"errors":[{"code":"DENIED","message":"no"}]}')
  })

  it('keeps the cause and is recognisable', () => {
    const cause = new Error('root')
    const err = new OciError('NAME_INVALID', 'bad', { cause })
    assert.equal(err.cause, cause)
    assert.ok(err instanceof Error)
    assert.ok(isOciError(err))
    assert.ok(!isOciError(cause))
    assert.equal(err.message, 'bad')
  })

  it('refuses a status that is not an error status', () => {
    assert.throws(() => new OciError('DENIED', 'x', { status: 200 }), RangeError)
    assert.throws(() => new OciError('DENIED', 'x', { status: 404.5 }), RangeError)
  })
})

describe('status overrides', () => {
  it('rangeNotSatisfiable is UNSUPPORTED with 416 and carries the size', () => {
    const err = rangeNotSatisfiable(2048, 'range start 5000 is out of bounds for size 2048')
    assert.ok(err instanceof RangeNotSatisfiableError)
    assert.ok(err instanceof OciError)
    assert.equal(err.code, 'UNSUPPORTED')
    assert.equal(err.status, 416)
    assert.equal(err.sizeBytes, 2048)
  })

  it('a size-less range error gains the size without losing message or cause', () => {
    const early = new RangeNotSatisfiableError(undefined, 'multiple ranges are not supported', { cause: 'why' })
    assert.equal(early.sizeBytes, undefined)
    const late = early.withSizeBytes(17)
    assert.equal(late.sizeBytes, 17)
    assert.equal(late.status, 416)
    assert.equal(late.message, early.message)
    assert.equal(late.cause, 'why')
  })

  it('unsupported endpoints are 404 so clients fall back; other methods are 405', () => {
    const endpoint = unsupportedEndpoint('the tags list API')
    assert.equal(endpoint.code, 'UNSUPPORTED')
    assert.equal(endpoint.status, 404)
    assert.match(endpoint.message, /tags list/)
    const method = methodNotAllowed('PUT')
    assert.equal(method.code, 'UNSUPPORTED')
    assert.equal(method.status, 405)
    assert.match(method.message, /PUT/)
  })
})
