/**
 * Memory cost of the replicated index per (key, node) pair: V8 heap plus ArrayBuffers (the
 * packed digests). Records travel through the real codec and are signed and verified (as a pull
 * delivers them), then both are measured after a full GC.
 *
 *   npx node --expose-gc dist/test/scale/index-memory.js [nodes=30] [keysPerNode=5000]
 */
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  FrameType, StatementKind, compactKey, compareKeys, decodePullResponse, decodeRecordPayload, encodeRecordFrame, encodeRecordPayload
} from '../../src/routing/p2p/codec.js'
import { fullCollection } from '../../src/observability/heap-trim.js'
import { ContentIndex } from '../../src/routing/p2p/content-index.js'
import { RecordAuth, checkAddressClaims } from '../../src/routing/p2p/record-auth.js'

const nodes = Number(process.argv[2] ?? 30)
const perNode = Number(process.argv[3] ?? 5000)

const signers = await Promise.all(Array.from({ length: nodes }, async () => {
  const privateKey = await generateKeyPair('Ed25519')
  return new RecordAuth({ privateKey }, { selfId: peerIdFromPrivateKey(privateKey).toString() })
}))
const verifier = signers[0]!

/** The index keeps digests in ArrayBuffers (digest-table.ts), outside the V8 heap: count both. */
function footprint (): { heap: number, buffers: number } {
  const m = process.memoryUsage()
  return { heap: m.heapUsed, buffers: m.arrayBuffers }
}

/** Collections until the figures hold still: ArrayBuffers are freed after the collection that found them dead. */
async function settle (): Promise<void> {
  for (let i = 0; i < 3; i++) {
    if (!fullCollection()) throw new Error('no full V8 collection available: run with --expose-gc')
    await new Promise((resolve) => setImmediate(resolve))
  }
}

async function measure (name: string, sharedFraction: number, tagFraction: number): Promise<void> {
  await settle()
  const before = footprint()
  const shared = Array.from({ length: Math.round(perNode * sharedFraction) }, () => `sha256:${randomBytes(32).toString('hex')}`)
  const frames: Uint8Array[] = []
  for (let n = 0; n < nodes; n++) {
    const own = Array.from({ length: perNode - shared.length }, (_, i) => i < perNode * tagFraction
      ? `registry.example.com/team-${n}/service-${i}:v1.2.${i}`
      : `sha256:${randomBytes(32).toString('hex')}`)
    const keys = [...shared, ...own].map(compactKey).sort(compareKeys)
    const payload = encodeRecordPayload({ registryAddress: `10.0.${n}.1:5000`, addrs: [`/ip4/10.0.${n}.1/tcp/5001`], keys, keyCount: keys.length, tagDigests: undefined })
    frames.push(encodeRecordFrame(0, signers[n]!.statement(StatementKind.Record, Date.now() * 1000, 1, payload).bytes))
  }
  const index = new ContentIndex({ selfId: 'self', expiryMs: 20_000, tombstoneTtlMs: 60_000 })
  for (const f of frames) {
    const frame = decodePullResponse(f)
    if (frame.type !== FrameType.Record || !verifier.verify(frame.statement)) throw new Error('record does not verify')
    const s = frame.statement
    const body = decodeRecordPayload(s.payload)
    const claims = checkAddressClaims(body.registryAddress, body.addrs)
    if (typeof claims === 'string') throw new Error(claims)
    index.applyFull([{ origin: s.origin, epoch: s.epoch, seq: s.seq, ageMs: frame.ageMs, body, claims, signature: s.signature }], Date.now())
  }
  frames.length = 0
  await settle()
  const after = footprint()
  const pairs = nodes * perNode
  // Keep `index` reachable until measured.
  if (index.recordCount !== nodes) throw new Error('records missing')
  const heapBytes = after.heap - before.heap
  const bufferBytes = after.buffers - before.buffers
  console.log(JSON.stringify({ case: name, nodes, keysPerNode: perNode, distinctKeys: index.distinctKeys, pairs, heapBytes, bufferBytes, bytesPerPair: Math.round((heapBytes + bufferBytes) / pairs) }))
}

await measure('every key on one node (worst case)', 0, 0)
await measure('half the keys on every node', 0.5, 0)
await measure('every key on every node', 1, 0)
await measure('20% tags, rest unique digests', 0, 0.2)
