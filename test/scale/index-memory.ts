/**
 * Heap cost of the replicated index per (key, node) pair. Records travel through the real
 * codec (as a sync delivers them), then the heap is measured after a full GC.
 *
 *   npx node --expose-gc dist/test/scale/index-memory.js [nodes=30] [keysPerNode=5000]
 */
import { randomBytes } from 'node:crypto'
import { compactKey, decodeSyncResponseFrame, encodeRecordFull, type RecordFull } from '../../src/routing/p2p/codec.js'
import { ContentIndex } from '../../src/routing/p2p/content-index.js'

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error('run with --expose-gc')
const nodes = Number(process.argv[2] ?? 30)
const perNode = Number(process.argv[3] ?? 5000)

function measure (name: string, sharedFraction: number, tagFraction: number): void {
  const shared = Array.from({ length: Math.round(perNode * sharedFraction) }, () => `sha256:${randomBytes(32).toString('hex')}`)
  const frames: Uint8Array[] = []
  for (let n = 0; n < nodes; n++) {
    const own = Array.from({ length: perNode - shared.length }, (_, i) => i < perNode * tagFraction
      ? `registry.example.com/team-${n}/service-${i}:v1.2.${i}`
      : `sha256:${randomBytes(32).toString('hex')}`)
    const keys = [...shared, ...own].map(compactKey)
    frames.push(encodeRecordFull({ origin: `12D3KooW${randomBytes(22).toString('hex')}`.slice(0, 52), epoch: Date.now() * 1000, seq: 1, ageMs: 0, registryAddress: `10.0.${n}.1:5000`, addrs: [`/ip4/10.0.${n}.1/tcp/5001`], keys, keyCount: keys.length }))
  }
  gc!()
  const before = process.memoryUsage().heapUsed
  const index = new ContentIndex({ selfId: 'self', expiryMs: 20_000, tombstoneTtlMs: 60_000 })
  for (const f of frames) index.applyFull([decodeSyncResponseFrame(f) as RecordFull], Date.now())
  frames.length = 0
  gc!()
  const after = process.memoryUsage().heapUsed
  const pairs = nodes * perNode
  // Keep `index` reachable until measured.
  if (index.recordCount !== nodes) throw new Error('records missing')
  console.log(JSON.stringify({ case: name, nodes, keysPerNode: perNode, distinctKeys: index.distinctKeys, pairs, heapBytes: after - before, bytesPerPair: Math.round((after - before) / pairs) }))
}

measure('every key on one node (worst case)', 0, 0)
measure('half the keys on every node', 0.5, 0)
measure('every key on every node', 1, 0)
measure('20% tags, rest unique digests', 0, 0.2)
