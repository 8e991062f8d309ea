/**
 * What signing costs, per operation, on this machine: raw Ed25519 sign and verify of a statement,
 * an owner's change (a delta of 4 keys on a record of `keys` keys: the record re-encoded and
 * signed, then the delta signed), a receiver's check of one delta, and a whole record verified
 * as a pull delivers it. Not a test; prints JSON lines.
 *
 *   npx node dist/test/scale/sign-cost.js [keys=5000] [iterations=2000]
 */
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createLogger } from '../../src/observability/logger.js'
import { FrameType, StatementKind, decodeDeltaPayload, decodePush, decodeRecordPayload } from '../../src/routing/p2p/codec.js'
import { OwnRecord } from '../../src/routing/p2p/own-record.js'
import { RecordAuth } from '../../src/routing/p2p/record-auth.js'

const keys = Number(process.argv[2] ?? 5000)
const iterations = Number(process.argv[3] ?? 2000)
const digest = (): string => `sha256:${randomBytes(32).toString('hex')}`

async function auth (): Promise<RecordAuth> {
  const privateKey = await generateKeyPair('Ed25519')
  return new RecordAuth({ privateKey }, { selfId: peerIdFromPrivateKey(privateKey).toString() })
}

function timeUs (n: number, fn: (i: number) => void): number {
  for (let i = 0; i < Math.min(200, n); i++) fn(i)
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) fn(i)
  return Number(process.hrtime.bigint() - start) / 1000 / n
}

const origin = await auth()
const receiver = await auth()
const log = createLogger({ level: 'silent' })
const print = (what: string, us: number, extra: object = {}): void => { console.log(JSON.stringify({ what, us: Math.round(us * 10) / 10, ...extra })) }

const small = origin.statement(StatementKind.Delta, 1, 1, randomBytes(200))
print('ed25519 sign of a statement (200-byte payload)', timeUs(iterations, (i) => { origin.sign(StatementKind.Delta, 1, i, small.payload) }))
print('ed25519 verify of a statement (200-byte payload)', timeUs(iterations, () => { receiver.verify(small) }))

const own = new OwnRecord({ auth: origin, log }, { registryAddress: '10.0.0.1:5000' })
own.setAddrs(['/ip4/10.0.0.1/tcp/5001'], false)
own.replaceAll(Array.from({ length: keys }, digest))
// Add 4 keys, then withdraw them: the record stays at `keys` keys, every call is one change.
const batch = [digest(), digest(), digest(), 'example.com/team/app:' + randomBytes(4).toString('hex')]
let frame: Uint8Array | undefined
let n = 0
print(`owner: one change of 4 keys on a record of ${keys} keys (record re-encoded and signed, delta signed)`,
  timeUs(iterations, () => {
    const f = n++ % 2 === 0 ? own.advertise(batch) : own.withdraw(batch)
    if (n % 2 === 1) frame = f
  }), { deltaBytes: frame?.byteLength })

const m = decodePush(frame!)
if (m.type !== FrameType.Delta) throw new Error('not a delta')
print('receiver: verify and decode one delta', timeUs(iterations, () => {
  if (!receiver.verify(m.statement)) throw new Error('bad')
  decodeDeltaPayload(m.statement.payload)
}))

const record = own.statement()
print(`receiver: verify and decode a record of ${own.keyCount} keys (as a pull delivers it)`, timeUs(Math.max(20, iterations / 50), () => {
  if (!receiver.verify(record)) throw new Error('bad')
  decodeRecordPayload(record.payload)
}), { recordBytes: record.bytes.byteLength })
print(`verify only, record of ${own.keyCount} keys (sha256 of the payload plus one verify)`, timeUs(Math.max(20, iterations / 50), () => { receiver.verify(record) }))
