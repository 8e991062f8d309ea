import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createLogger } from '../../observability/logger.js'
import { pinTag } from '../tag-key.js'
import {
  FrameType, StatementKind, compactKey, decodeDeltaPayload, decodePush, decodeRecordPayload, encodeRecordPayload, encodeStatement
} from './codec.js'
import { ContentIndex } from './content-index.js'
import { OwnRecord } from './own-record.js'
import { RecordAuth, checkAddressClaims, type AddressClaims } from './record-auth.js'

const log = createLogger({ level: 'silent' })
const digest = (): string => `sha256:${randomBytes(32).toString('hex')}`

async function auth (): Promise<RecordAuth> {
  const privateKey = await generateKeyPair('Ed25519')
  return new RecordAuth({ privateKey }, { selfId: peerIdFromPrivateKey(privateKey).toString() })
}

describe('OwnRecord', () => {
  it('signs every change, and a holder that applies the deltas can serve the record its origin signed', async () => {
    const [origin, holder] = [await auth(), await auth()]
    const own = new OwnRecord({ auth: origin, log }, { registryAddress: '10.0.0.5:5000' })
    own.setAddrs(['/ip4/10.0.0.5/tcp/5001'], false)
    const [d1, d2, d3] = [digest(), digest(), digest()]
    own.replaceAll([d1, d2, pinTag('example.com/team/app:1', d1), 'example.com/team/plain:1'])
    const index = new ContentIndex({ selfId: holder.selfId, expiryMs: 60_000, tombstoneTtlMs: 60_000 })

    // The holder starts from the whole record, as a pull delivers it.
    const record = own.statement()
    assert.equal(holder.verify(record), true)
    const body = decodeRecordPayload(record.payload)
    const claims = checkAddressClaims(body.registryAddress, body.addrs) as AddressClaims
    index.applyFull([{ origin: origin.selfId, epoch: record.epoch, seq: record.seq, ageMs: 0, body, claims, signature: record.signature }], Date.now())

    const rebuilt = (): Uint8Array => {
      const rec = index.get(origin.selfId)!
      const state = index.recordBody(rec, index.keysOf([rec.origin]).get(rec.origin) ?? [])
      const payload = encodeRecordPayload({ ...state, keyCount: state.keys.length })
      const s = { kind: StatementKind.Record, origin: rec.origin, epoch: rec.epoch, seq: rec.seq, payload, signature: rec.signature }
      assert.equal(holder.verify(s), true, `rebuilt record at seq ${rec.seq} verifies with the origin's signature`)
      return encodeStatement(s)
    }
    assert.deepEqual([...rebuilt()], [...record.bytes])

    const changes: Array<() => Uint8Array | undefined> = [
      () => own.advertise([d3, pinTag('example.com/team/app:1', d2)]),
      () => own.withdraw([pinTag('example.com/team/plain:1', d3), d1]),
      () => own.advertise(['example.com/team/app:1']),
      () => own.replaceAll(Array.from({ length: 200 }, digest).concat([pinTag('example.com/team/app:2', d3)]))
    ]
    for (const change of changes) {
      const frame = change()
      assert.ok(frame !== undefined)
      const m = decodePush(frame)
      assert.ok(m.type === FrameType.Delta)
      assert.equal(holder.verify(m.statement), true)
      assert.equal(m.statement.seq, own.seq)
      const result = index.applyDelta({ origin: origin.selfId, epoch: m.statement.epoch, seq: m.statement.seq, body: decodeDeltaPayload(m.statement.payload) }, Date.now())
      assert.equal(result, 'applied')
      assert.deepEqual([...rebuilt()], [...own.statement().bytes], 'the holder serves exactly what the origin signed')
    }
    assert.equal(index.lookup(compactKey('example.com/team/app:2'), Date.now()).length, 0, 'not offered before the address is proven')
    index.proveAddress(origin.selfId, '10.0.0.5')
    assert.deepEqual(index.lookup(compactKey('example.com/team/app:2'), Date.now()), [{ id: origin.selfId, registryAddress: '10.0.0.5:5000', digest: d3 }])
  })

  it('changes nothing (and signs nothing) for repeated or empty changes', async () => {
    const own = new OwnRecord({ auth: await auth(), log }, { registryAddress: '10.0.0.5:5000' })
    const d = digest()
    assert.ok(own.advertise([d, d]) !== undefined)
    assert.equal(own.seq, 1)
    assert.equal(own.advertise([d]), undefined)
    assert.equal(own.withdraw([digest()]), undefined)
    assert.equal(own.advertise([]), undefined)
    assert.equal(own.replaceAll([d]), undefined)
    assert.equal(own.seq, 1)
    assert.equal(own.keyCount, 1)
    // A digest cannot be pinned: it stays a plain key.
    assert.equal(own.advertise([pinTag(d, digest())]), undefined)
  })

  it('moves its epoch past a newer statement of its own, or a goodbye of its current epoch', async () => {
    const a = await auth()
    const own = new OwnRecord({ auth: a, log }, { registryAddress: '10.0.0.5:5000' })
    const epoch = own.epoch
    assert.equal(own.moveEpochPast(epoch - 1, true), false)
    assert.equal(own.moveEpochPast(epoch, false), false)
    assert.equal(own.moveEpochPast(epoch, true), true)
    assert.equal(own.epoch, epoch + 1)
    assert.equal(own.moveEpochPast(epoch + 10, false), true)
    assert.equal(own.epoch, epoch + 11)
    const goodbye = decodePush(own.goodbyeFrame())
    assert.ok(goodbye.type === FrameType.Goodbye && a.verify(goodbye.statement) && goodbye.statement.epoch === epoch + 11)
  })

  it('a published change of addresses is a new version', async () => {
    const own = new OwnRecord({ auth: await auth(), log }, { registryAddress: '10.0.0.5:5000' })
    assert.equal(own.setAddrs(['/ip4/10.0.0.5/tcp/1'], false), true)
    assert.equal(own.seq, 0)
    assert.equal(own.setAddrs(['/ip4/10.0.0.5/tcp/1'], true), false)
    assert.equal(own.setAddrs(['/ip4/10.0.0.5/tcp/2'], true), true)
    assert.equal(own.seq, 1)
    assert.deepEqual(decodeRecordPayload(own.statement().payload).addrs, ['/ip4/10.0.0.5/tcp/2'])
  })
})
