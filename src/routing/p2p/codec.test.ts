import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import {
  CodecError, FrameType, StatementKind, compactKey, compareKeys, decodeDeltaPayload, decodePullRequest, decodePullResponse,
  decodePush, decodeRecordPayload, encodeDeltaFrame, encodeDeltaPayload, encodeGoodbyeFrame, encodeHave, encodeHeartbeat,
  encodePullEnd, encodePullRequest, encodeRecordFrame, encodeRecordGone, encodeRecordPayload, encodeRecordSame, encodeStatement,
  expandKey, lengthPrefix, recordFrameHead
} from './codec.js'

const digest = (): string => `sha256:${randomBytes(32).toString('hex')}`
const sig = (): Uint8Array => new Uint8Array(randomBytes(64))
const statement = (payload: Uint8Array, seq = 7): Uint8Array =>
  encodeStatement({ kind: StatementKind.Delta, origin: '12D3KooWabc', epoch: 1_795_000_000_000_123, seq, payload, signature: sig() })

describe('index codec', () => {
  it('compacts canonical sha256 digests to 33 one-byte chars and back; other keys stay as they are', () => {
    const d = digest()
    const c = compactKey(d)
    assert.equal(c.length, 33)
    assert.equal(c.charCodeAt(0), 0)
    assert.equal(expandKey(c), d)
    for (const k of ['docker.io/library/ubuntu:latest', d.toUpperCase(), 'sha256:abc', `${d}x`, 'ü/é:1']) {
      assert.equal(compactKey(k), k)
      assert.equal(expandKey(k), k)
    }
  })

  it('round-trips a record payload with pinned tags, in the one sorted order', () => {
    const pinned = compactKey(digest())
    const keys = [compactKey(digest()), 'example.com/a/b:c', compactKey(digest()), 'r/x:y'].sort(compareKeys)
    const tagDigests = new Map([['example.com/a/b:c', pinned], ['r/x:y', 'sha512:' + 'ab'.repeat(64)]])
    const payload = encodeRecordPayload({ registryAddress: '[fd00::1]:5000', addrs: ['/ip6/fd00::1/tcp/5001'], keys, keyCount: keys.length, tagDigests })
    assert.deepEqual(decodeRecordPayload(payload), { registryAddress: '[fd00::1]:5000', addrs: ['/ip6/fd00::1/tcp/5001'], keys, tagDigests })
    // Out of order or duplicated entries: a second spelling of the same record is refused.
    const unsorted = encodeRecordPayload({ registryAddress: 'a', addrs: [], keys: [...keys].reverse(), keyCount: keys.length, tagDigests })
    assert.throws(() => decodeRecordPayload(unsorted), /ascending/)
    const twice = encodeRecordPayload({ registryAddress: 'a', addrs: [], keys: ['k', 'k'], keyCount: 2, tagDigests: undefined })
    assert.throws(() => decodeRecordPayload(twice), /ascending/)
  })

  it('round-trips delta payloads and every push frame, keeping the statement bytes to relay', () => {
    const tagDigests = new Map([['example.com/a/b:c', compactKey(digest())]])
    const body = { removes: ['ü/é:1', compactKey(digest())], adds: [compactKey(digest()), 'example.com/a/b:c'], tagDigests, recordSignature: sig() }
    const payload = encodeDeltaPayload(body)
    assert.deepEqual(decodeDeltaPayload(payload), { ...body, recordSignature: Buffer.from(body.recordSignature) })

    const st = statement(payload)
    const delta = decodePush(encodeDeltaFrame(st))
    assert.equal(delta.type, FrameType.Delta)
    assert.ok(delta.type === FrameType.Delta)
    assert.deepEqual({ ...delta.statement, payload: [...delta.statement.payload], signature: delta.statement.signature.length, bytes: [...delta.statement.bytes] },
      { kind: StatementKind.Delta, origin: '12D3KooWabc', epoch: 1_795_000_000_000_123, seq: 7, payload: [...payload], signature: 64, bytes: [...st] })
    const goodbye = decodePush(encodeGoodbyeFrame(statement(new Uint8Array(0), 0)))
    assert.ok(goodbye.type === FrameType.Goodbye && goodbye.statement.kind === StatementKind.Goodbye && goodbye.statement.payload.length === 0)

    const heartbeat = { origin: '12D3KooWabc', epoch: 2 ** 53 - 1, seq: 0, others: [{ origin: 'b', epoch: 3, seq: 4, ageMs: 5 }] }
    assert.deepEqual(decodePush(encodeHeartbeat(heartbeat)), { type: FrameType.Heartbeat, ...heartbeat })
    const versions = [{ origin: 'x', epoch: 5, seq: 6 }, { origin: 'y', epoch: 0, seq: 0 }]
    assert.deepEqual(decodePush(encodeHave(versions)), { type: FrameType.Have, versions })
  })

  it('round-trips pull requests and answers', () => {
    const versions = [{ origin: 'a', epoch: 10, seq: 2 }]
    assert.deepEqual(decodePullRequest(encodePullRequest(versions)), { type: FrameType.PullRequest, versions })
    const st = statement(new Uint8Array([1, 2, 3]))
    const record = decodePullResponse(encodeRecordFrame(1234.4, st))
    assert.ok(record.type === FrameType.Record)
    assert.equal(record.ageMs, 1234)
    assert.deepEqual([...record.statement.bytes], [...st])
    assert.equal(record.statement.kind, StatementKind.Record, 'the frame decides the kind, so a delta cannot pass for a record')
    const gone = decodePullResponse(encodeRecordGone(st))
    assert.ok(gone.type === FrameType.RecordGone && gone.statement.kind === StatementKind.Goodbye)
    assert.deepEqual(decodePullResponse(encodeRecordSame({ origin: 'a', epoch: 1, seq: 2, ageMs: 3 })), { type: FrameType.RecordSame, origin: 'a', epoch: 1, seq: 2, ageMs: 3 })
    assert.deepEqual(decodePullResponse(encodePullEnd()), { type: FrameType.PullEnd, isCut: false })
    assert.deepEqual(decodePullResponse(encodePullEnd(true)), { type: FrameType.PullEnd, isCut: true })
    const body = new Uint8Array(randomBytes(300))
    assert.deepEqual(Buffer.concat([recordFrameHead(1234.4), body]), Buffer.from(encodeRecordFrame(1234.4, body)), 'a head plus the statement is the frame')
    assert.deepEqual([...lengthPrefix(300)], [0xac, 0x02])
    assert.throws(() => decodePullResponse(Uint8Array.of(FrameType.PullEnd, 2)), CodecError)
    assert.throws(() => decodePullResponse(Uint8Array.of(FrameType.PullEnd, 1, 0)), CodecError)
  })

  it('rejects truncated, oversized and malformed frames', () => {
    const payload = encodeDeltaPayload({ removes: [], adds: [compactKey(digest())], tagDigests: undefined, recordSignature: sig() })
    const frame = encodeDeltaFrame(statement(payload))
    for (let n = 0; n < frame.length; n++) assert.throws(() => decodePush(frame.subarray(0, n)), CodecError)
    assert.throws(() => decodePush(new Uint8Array([...frame, 0])), /trailing/)
    assert.throws(() => decodePush(new Uint8Array([99, 1, 0x6f, 1])), /unexpected push frame type/)
    assert.throws(() => decodePush(new Uint8Array([FrameType.Goodbye, 0, 1])), /empty origin/)
    assert.throws(() => decodePullRequest(encodeHave([])), /expected a pull request/)
    for (let n = 0; n < payload.length; n++) assert.throws(() => decodeDeltaPayload(payload.subarray(0, n)), CodecError)
    // A key count larger than the payload can hold is refused before allocating.
    assert.throws(() => decodeDeltaPayload(new Uint8Array([0xff, 0xff, 0xff, 0x7f])), /key count/)
    // A string key that would pass for a compact digest, and a digest in its long form.
    assert.throws(() => decodeDeltaPayload(new Uint8Array([1, 1, 2, 0, 0x61, 0])), /invalid key/)
    const long = Buffer.from(digest())
    assert.throws(() => decodeDeltaPayload(new Uint8Array([1, 1, long.length, ...long, 0])), /invalid key/)
    // A pinned tag whose "digest" is not one.
    const bad = encodeRecordPayload({ registryAddress: 'a', addrs: [], keys: ['r/x:y'], keyCount: 1, tagDigests: new Map([['r/x:y', 'not a digest']]) })
    assert.throws(() => decodeRecordPayload(bad), /not a digest/)
    // Registry addresses and announced addresses have small bounds.
    const longAddress = encodeRecordPayload({ registryAddress: 'x'.repeat(65), addrs: [], keys: [], keyCount: 0, tagDigests: undefined })
    assert.throws(() => decodeRecordPayload(longAddress), /too long/)
    assert.throws(() => encodeStatement({ kind: StatementKind.Goodbye, origin: 'o', epoch: -1, seq: 0, payload: new Uint8Array(0), signature: sig() }), CodecError)
    assert.throws(() => encodeStatement({ kind: StatementKind.Goodbye, origin: 'o', epoch: 1, seq: 0, payload: new Uint8Array(0), signature: new Uint8Array(3) }), /64 bytes/)
  })
})
