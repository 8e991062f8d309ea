import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it } from 'node:test'
import { createLogger } from '../observability/logger.js'
import { PeerBlobStream } from './peer-blob-stream.js'
import { PeerBody } from './peer-http.js'
import type { PeerResponse } from './peer-fetch.js'

const BYTES = Buffer.from('0123456789abcdefghij')
const DIGEST = `sha256:${createHash('sha256').update(BYTES).digest('hex')}`
const log = createLogger({ level: 'silent' })

/** A peer answer whose body delivers `parts`, then ends (or fails with `failWith`). */
function answer (peerId: string, parts: Buffer[], range?: { start: number, end: number }, failWith?: Error): PeerResponse {
  const body = new PeerBody()
  setImmediate(() => {
    for (const part of parts) body.push(part, undefined)
    if (failWith === undefined) body.end()
    else body.fail(failWith)
  })
  const bodyBytes = range === undefined ? BYTES.length : range.end - range.start + 1
  return {
    peer: { id: peerId, registryAddress: '127.0.0.1:1' },
    status: range === undefined ? 200 : 206,
    descriptor: { digest: DIGEST, sizeBytes: BYTES.length, mediaType: 'application/octet-stream' },
    ...(range === undefined ? {} : { range }),
    bodyBytes,
    contentType: 'application/octet-stream',
    body,
    latencyMs: 1
  }
}

async function readAll (stream: PeerBlobStream): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const chunk of stream) parts.push(chunk as Buffer)
  return Buffer.concat(parts)
}

describe('PeerBlobStream as a Readable', () => {
  it('resumes from the first byte not received and checks the digest', async () => {
    const asked: Array<{ start: number, end?: number }> = []
    let ended = 0
    const stream = new PeerBlobStream({
      first: answer('a', [BYTES.subarray(0, 7)], undefined, new Error('cut')),
      isVerified: true,
      log,
      resume: async (range) => {
        asked.push(range as { start: number, end?: number })
        return answer('b', [BYTES.subarray(7)], { start: 7, end: BYTES.length - 1 })
      },
      onWrongSize: () => { assert.fail('no wrong size here') },
      onCorrupt: () => { assert.fail('nothing corrupt here') },
      onEnd: () => { ended++ }
    })
    assert.deepEqual(await readAll(stream), BYTES)
    assert.deepEqual(asked, [{ start: 7, end: BYTES.length - 1 }])
    assert.equal(stream.resumes, 1)
    assert.equal(ended, 1)
  })

  it('fails without the last byte when the bytes do not hash to the digest, naming the peers', async () => {
    const corrupt = Buffer.from(BYTES)
    corrupt[3] = 0
    let blamed: readonly string[] = []
    const stream = new PeerBlobStream({
      first: answer('liar', [corrupt]),
      isVerified: true,
      log,
      resume: async () => { throw new Error('not needed') },
      onWrongSize: () => {},
      onCorrupt: (ids) => { blamed = ids },
      onEnd: () => {}
    })
    const parts: Buffer[] = []
    await assert.rejects((async () => { for await (const chunk of stream) parts.push(chunk as Buffer) })(), { name: 'DigestMismatchError' })
    assert.ok(Buffer.concat(parts).length < BYTES.length, 'the last byte is held back')
    assert.deepEqual(blamed, ['liar'])
  })

  it('gives up after three resumes that bring no byte', async () => {
    let resumes = 0
    const stream = new PeerBlobStream({
      first: answer('a', [BYTES.subarray(0, 5)], undefined, new Error('cut')),
      isVerified: true,
      log,
      resume: async () => {
        resumes++
        return answer('b', [], { start: 5, end: BYTES.length - 1 }, new Error('nothing'))
      },
      onWrongSize: () => {},
      onCorrupt: () => {},
      onEnd: () => {}
    })
    await assert.rejects(readAll(stream), /nothing/)
    assert.equal(resumes, 3)
  })
})
