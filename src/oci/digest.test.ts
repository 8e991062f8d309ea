import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { isDigest, parseDigest } from './digest.js'
import { OciError } from './errors.js'

const SHA256 = 'sha256:' + 'a'.repeat(64)

function digestError (message: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof OciError)
    assert.equal(err.code, 'DIGEST_INVALID')
    assert.equal(err.status, 400)
    assert.equal(err.message, message)
    return true
  }
}

describe('parseDigest', () => {
  it('accepts the three algorithms at their exact lengths', () => {
    assert.deepEqual(parseDigest(SHA256), { algorithm: 'sha256', hex: 'a'.repeat(64), value: SHA256 })
    assert.equal(parseDigest('sha384:' + '0'.repeat(96)).algorithm, 'sha384')
    assert.equal(parseDigest('sha512:' + 'f'.repeat(128)).algorithm, 'sha512')
  })

  it('reports go-digest messages', () => {
    const cases: Array<[string, string]> = [
      ['v0.0.1', 'invalid checksum digest format'],
      ['', 'invalid checksum digest format'],
      [':abc', 'invalid checksum digest format'],
      ['sha256:', 'invalid checksum digest format'],
      ['sha256:123', 'invalid checksum digest length'],
      ['sha256:' + 'a'.repeat(63), 'invalid checksum digest length'],
      ['sha256:' + 'a'.repeat(65), 'invalid checksum digest length'],
      ['sha512:' + 'a'.repeat(64), 'invalid checksum digest length'],
      ['sha256:' + 'A'.repeat(64), 'invalid checksum digest format'],
      ['sha256:' + 'g'.repeat(64), 'invalid checksum digest format'],
      ['sha253:foobar', 'unsupported digest algorithm'],
      ['md5:' + 'a'.repeat(32), 'unsupported digest algorithm'],
      ['SHA256:' + 'a'.repeat(64), 'invalid checksum digest format'],
      ['sha253:foo/bar', 'invalid checksum digest format'],
      // Object.prototype names must not pass as algorithms.
      ['constructor:abc', 'unsupported digest algorithm']
    ]
    for (const [input, message] of cases) {
      assert.throws(() => parseDigest(input), digestError(message), input)
    }
  })

  it('isDigest answers without throwing', () => {
    assert.equal(isDigest(SHA256), true)
    assert.equal(isDigest('sha256:123'), false)
    assert.equal(isDigest('latest'), false)
  })
})
