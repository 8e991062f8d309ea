import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import {
  CodecError, FrameType, compactKey, decodePush, decodeSyncRequest, decodeSyncResponseFrame, encodePush,
  encodeRecordFull, encodeSyncRequest, encodeSyncResponseFrame, expandKey, type PushMessage, type SyncRequest,
  type SyncResponseFrame
} from './codec.js'

const digest = (): string => `sha256:${randomBytes(32).toString('hex')}`

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

  it('round-trips every push frame', () => {
    const adds = [compactKey(digest()), 'example.com/a/b:c', compactKey(digest())]
    const removes = ['ü/é:1']
    const msgs: PushMessage[] = [
      { type: FrameType.Delta, origin: '12D3KooWabc', epoch: 1_795_000_000_000_123, seq: 7, adds, removes },
      { type: FrameType.Heartbeat, origin: '12D3KooWabc', epoch: 2 ** 53 - 1, seq: 0, others: [{ origin: 'b', epoch: 3, seq: 4, ageMs: 5 }] },
      { type: FrameType.Heartbeat, origin: '12D3KooWabc', epoch: 1, seq: 1, others: [] },
      { type: FrameType.Goodbye, origin: '12D3KooWabc', epoch: 1 },
      { type: FrameType.Have, versions: [{ origin: 'x', epoch: 5, seq: 6 }, { origin: 'y', epoch: 0, seq: 0 }] }
    ]
    for (const m of msgs) assert.deepEqual(decodePush(encodePush(m)), m)
  })

  it('round-trips sync requests and response frames', () => {
    const req: SyncRequest = { type: FrameType.SyncRequest, versions: [{ origin: 'a', epoch: 10, seq: 2 }] }
    assert.deepEqual(decodeSyncRequest(encodeSyncRequest(req)), req)
    const keys = new Set([compactKey(digest()), 'r/x:y'])
    const full = decodeSyncResponseFrame(encodeRecordFull({
      origin: 'a', epoch: 10, seq: 2, ageMs: 1234.4, registryAddress: '[fd00::1]:5000', addrs: ['/ip4/10.0.0.1/tcp/5001'], keys, keyCount: keys.size
    }))
    assert.deepEqual(full, {
      type: FrameType.RecordFull, origin: 'a', epoch: 10, seq: 2, ageMs: 1234, registryAddress: '[fd00::1]:5000', addrs: ['/ip4/10.0.0.1/tcp/5001'], keys: [...keys]
    })
    const frames: Array<Exclude<SyncResponseFrame, { type: typeof FrameType.RecordFull }>> = [
      { type: FrameType.RecordSame, origin: 'a', epoch: 1, seq: 2, ageMs: 3 },
      { type: FrameType.RecordGone, origin: 'a', epoch: 1 },
      { type: FrameType.SyncEnd }
    ]
    for (const f of frames) assert.deepEqual(decodeSyncResponseFrame(encodeSyncResponseFrame(f)), f)
  })

  it('rejects truncated, oversized and malformed frames', () => {
    const frame = encodePush({ type: FrameType.Delta, origin: 'o', epoch: 1, seq: 1, adds: [compactKey(digest())], removes: [] })
    for (let n = 0; n < frame.length; n++) assert.throws(() => decodePush(frame.subarray(0, n)), CodecError)
    assert.throws(() => decodePush(new Uint8Array([...frame, 0])), /trailing/)
    assert.throws(() => decodePush(new Uint8Array([99, 1, 0x6f, 1])), /unexpected push frame type/)
    // A key count larger than the frame can hold is refused before allocating.
    assert.throws(() => decodePush(new Uint8Array([FrameType.Delta, 1, 0x6f, 1, 1, 0xff, 0xff, 0xff, 0x7f])), /key count/)
    // A string key that would pass for a compact digest.
    assert.throws(() => decodePush(new Uint8Array([FrameType.Delta, 1, 0x6f, 1, 1, 1, 1, 2, 0, 0x61, 0])), /invalid key/)
    assert.throws(() => decodePush(new Uint8Array([FrameType.Goodbye, 0, 1])), /empty origin/)
    assert.throws(() => decodeSyncRequest(encodePush({ type: FrameType.Goodbye, origin: 'o', epoch: 1 })), /expected a sync request/)
    assert.throws(() => encodePush({ type: FrameType.Goodbye, origin: 'o', epoch: -1 }), CodecError)
  })
})
