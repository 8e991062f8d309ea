import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { afterEach, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Registry } from 'prom-client'
import { LogCapture, listenLocal, request, startTestServer } from '../http/test-helpers.js'
import { createLogger } from '../observability/logger.js'
import { createMetrics } from '../observability/metrics.js'
import { LocalOnlyRouter, MemoryRouter, MemoryRouterNetwork } from '../routing/memory-router.js'
import type { Peer } from '../routing/index.js'
import { Readable } from 'node:stream'
import { MemoryStore } from '../store/memory-store.js'
import type { OpenOptions } from '../store/types.js'
import { createRegistryHandler } from './handler.js'
import { createMirror } from './mirror.js'
import { MultiPeerBody, type MultiPeerBodyInit } from './multi-peer-body.js'
import { PeerBlobStream } from './peer-blob-stream.js'
import { DigestMismatchError, createPeerClient, fetchFromPeer, type PeerRequest, type PeerResponse } from './peer-fetch.js'
import type { PeerHttpClient } from './peer-http.js'

const MiB = 1024 * 1024
/** Not a multiple of the chunk size, so the last chunk is a short one. */
const BLOB = Buffer.from(Array.from({ length: 6 * MiB + 12345 }, (_, i) => (i * 131 + (i >> 11)) % 251))
const DIGEST = `sha256:${createHash('sha256').update(BLOB).digest('hex')}`
const quiet = createLogger({ level: 'silent' })

interface Served { start: number, end: number }

interface Behaviour {
  /** Bytes per write, and the pause between writes: a bandwidth-limited peer. */
  pace?: { bytes: number, ms: number }
  /** Breaks the connection after this many body bytes of every answer. */
  dieAfter?: number
  /** Flips the first byte of every answer. */
  corrupt?: boolean
}

interface BlobPeer {
  peer: Peer
  /** Ranges answered, in order ('whole' for a request without a range). */
  served: Served[]
}

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** A peer serving BLOB with Range support, the way spegel-ts peers answer. */
async function blobPeer (id: string, behaviour: Behaviour = {}): Promise<BlobPeer> {
  const served: Served[] = []
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void answer(req, res)
  })
  const answer = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
    const start = m === null ? 0 : Number(m[1])
    const end = m === null || m[2] === '' ? BLOB.length - 1 : Math.min(Number(m[2]), BLOB.length - 1)
    served.push({ start, end })
    const headers = { 'content-type': 'application/octet-stream', 'docker-content-digest': DIGEST, 'content-length': end - start + 1 }
    if (m === null) res.writeHead(200, headers)
    else res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${BLOB.length}` })
    let body = BLOB.subarray(start, end + 1)
    if (behaviour.corrupt === true) {
      body = Buffer.from(body)
      body[0] = (body[0] ?? 0) ^ 0xff
    }
    const step = behaviour.pace?.bytes ?? 256 * 1024
    for (let at = 0; at < body.length; at += step) {
      if (res.destroyed) return
      if (behaviour.dieAfter !== undefined && at >= behaviour.dieAfter) {
        // Let what was written reach the socket, then break the connection mid-body.
        await sleep(20)
        res.socket?.destroy()
        return
      }
      const ok = res.write(body.subarray(at, at + step))
      if (behaviour.pace !== undefined) await sleep(behaviour.pace.ms)
      else if (!ok) await once(res, 'drain')
    }
    res.end()
  }
  const { port, close } = await listenLocal(server)
  cleanups.push(close)
  return { peer: { id, registryAddress: `127.0.0.1:${port}` }, served }
}

const blobRequest = (range?: Served): PeerRequest => ({
  method: 'GET',
  content: { kind: 'blob', repository: 'library/test', registry: 'docker.io', digest: DIGEST },
  ...(range === undefined ? {} : { range })
})

function newClient (): PeerHttpClient {
  const client = createPeerClient({ bodyIdleTimeoutMs: 2000 })
  cleanups.push(async () => { await client.close() })
  return client
}

interface Run {
  body: MultiPeerBody
  stream: PeerBlobStream
  failed: string[]
  corrupt: string[][]
}

/** The first answer from `holders[0]`, the rest in chunks over all of them, read through PeerBlobStream. */
async function start (holders: BlobPeer[], options: Partial<MultiPeerBodyInit> = {}): Promise<Run> {
  const client = newClient()
  const fetchRange = async (peer: Peer, range: Served, signal: AbortSignal): Promise<PeerResponse> =>
    await fetchFromPeer(peer, blobRequest(range), { client, signal })
  const first = await fetchFromPeer((holders[0] as BlobPeer).peer, blobRequest(), { client, signal: AbortSignal.timeout(10_000) })
  const failed: string[] = []
  const corrupt: string[][] = []
  const body = new MultiPeerBody({
    first,
    target: { start: 0, end: BLOB.length - 1 },
    holders: holders.map((h) => h.peer),
    fetch: fetchRange,
    onPeerFailed: (peer) => { failed.push(peer.id) },
    chunkBytes: MiB,
    ...options
  })
  const stream = new PeerBlobStream({
    first: { ...first, body },
    isVerified: true,
    // Only when the body itself gave up: the single-peer resume, from the first holder.
    resume: async (range) => await fetchRange((holders[0] as BlobPeer).peer, range as Served, AbortSignal.timeout(10_000)),
    onWrongSize: () => {},
    onCorrupt: (ids) => { corrupt.push([...ids]) },
    onEnd: () => {},
    log: quiet
  })
  return { body, stream, failed, corrupt }
}

async function collect (stream: PeerBlobStream): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const part of stream as AsyncIterable<Buffer>) parts.push(part)
  return Buffer.concat(parts)
}

describe('MultiPeerBody', () => {
  it('delivers a blob from three holders in order, and the digest checks out', async () => {
    // Different speeds, so chunks complete out of order.
    const a = await blobPeer('a', { pace: { bytes: 64 * 1024, ms: 4 } })
    const b = await blobPeer('b')
    const c = await blobPeer('c', { pace: { bytes: 128 * 1024, ms: 2 } })
    const run = await start([a, b, c])
    const bytes = await collect(run.stream)
    assert.equal(bytes.length, BLOB.length)
    assert.ok(bytes.equals(BLOB), 'bytes differ from the blob')
    assert.deepEqual(run.corrupt, [])
    assert.deepEqual(run.failed, [])
    // Every holder served a chunk by Range; every chunk after the first was asked for once from
    // its start, and once more from the middle only when it was taken from a slow holder.
    for (const p of [b, c]) assert.ok(p.served.length > 0, `${p.peer.id} served nothing`)
    const ranges = [a, b, c].flatMap((p) => p.served).filter((r) => r.start > 0)
    const chunks = Math.ceil(BLOB.length / MiB)
    const starts = new Set(ranges.filter((r) => r.start % MiB === 0 && r.end === Math.min(r.start + MiB, BLOB.length) - 1).map((r) => r.start))
    assert.deepEqual([...starts].sort((x, y) => x - y), Array.from({ length: chunks - 1 }, (_, i) => (i + 1) * MiB))
    assert.equal(ranges.length, chunks - 1 + run.body.steals)
    assert.deepEqual([...run.body.contributors].sort(), ['a', 'b', 'c'])
    assert.equal(run.body.aheadBytes, 0)
  })

  it('gives the chunk of a holder that dies mid-chunk to the others, from the first missing byte', async () => {
    const a = await blobPeer('a')
    const b = await blobPeer('b', { dieAfter: 300 * 1024 })
    const c = await blobPeer('c')
    // One chunk per holder at a time, so b gets exactly one before it is found dead.
    const run = await start([a, b, c], { perPeer: 1 })
    const bytes = await collect(run.stream)
    assert.ok(bytes.equals(BLOB), 'bytes differ from the blob')
    assert.deepEqual(run.failed, ['b'])
    assert.ok(b.served.length >= 1)
    // b's chunk started on a chunk boundary and broke inside it: someone else continued it mid-chunk.
    const resumed = [a, c].flatMap((p) => p.served).filter((r) => r.start % MiB !== 0)
    assert.equal(resumed.length, 1, `expected one mid-chunk re-request, got ${JSON.stringify(resumed)}`)
    const broken = b.served[0] as Served
    assert.ok((resumed[0] as Served).start > broken.start && (resumed[0] as Served).end === broken.end)
    // After failing, b was asked for nothing more.
    assert.equal(b.served.length, 1)
  })

  it('fails the digest check when a holder sends wrong bytes, naming every contributor', async () => {
    const a = await blobPeer('a')
    const b = await blobPeer('b')
    const c = await blobPeer('c', { corrupt: true })
    const run = await start([a, b, c])
    await assert.rejects(collect(run.stream), DigestMismatchError)
    assert.equal(run.corrupt.length, 1)
    assert.ok(c.served.length > 0, 'the corrupt holder served nothing: the test proves nothing')
    // PeerBlobStream sees only the first answer's peer; the body knows them all (the mirror reports both).
    assert.ok(run.body.contributors.includes('c'))
  })

  it('never holds more than the bound out of order, however far ahead the other holders are', async () => {
    // The first holder is slow, so the chunks the others fetch pile up behind it.
    const a = await blobPeer('a', { pace: { bytes: 64 * 1024, ms: 10 } })
    const b = await blobPeer('b')
    const c = await blobPeer('c')
    const bound = 2 * MiB
    const run = await start([a, b, c], { aheadBytes: bound, perPeer: 1, window: 4 })
    const bytes = await collect(run.stream)
    assert.ok(bytes.equals(BLOB), 'bytes differ from the blob')
    assert.ok(run.body.maxAheadBytes > 0, 'nothing was ever held out of order: the test proves nothing')
    assert.ok(run.body.maxAheadBytes <= bound, `held ${run.body.maxAheadBytes} bytes out of order, bound ${bound}`)
  })

  it('lets PeerBlobStream resume when every holder fails', async () => {
    const a = await blobPeer('a')
    const b = await blobPeer('b', { dieAfter: 100 * 1024 })
    const c = await blobPeer('c', { dieAfter: 100 * 1024 })
    // b and c break every answer: their chunks end up on a, which finishes the blob alone.
    const run = await start([a, b, c], { perPeer: 1 })
    const bytes = await collect(run.stream)
    assert.ok(bytes.equals(BLOB), 'bytes differ from the blob')
    // The chunk being delivered may go to a holder already busy, so one may fail twice.
    assert.deepEqual([...new Set(run.failed)].sort(), ['b', 'c'])
  })

  it('re-asks for the chunk being delivered even when every live holder is at its limit', { timeout: 30_000 }, async () => {
    // a carries the first chunk and dies in it; b, the only holder left, is busy with the next
    // chunk and stopped by the bound, waiting for the first chunk to be delivered.
    const a = await blobPeer('a', { dieAfter: 300 * 1024 })
    const b = await blobPeer('b')
    const run = await start([a, b], { chunkBytes: 2 * MiB, aheadBytes: MiB, perPeer: 1 })
    const bytes = await collect(run.stream)
    assert.ok(bytes.equals(BLOB), 'bytes differ from the blob')
    assert.deepEqual(run.failed, ['a'])
    assert.ok(b.served.some((r) => r.start > 0 && r.start < 2 * MiB), `b never continued the first chunk: ${JSON.stringify(b.served)}`)
  })

  it('takes the chunk being delivered from a holder far slower than the others', async () => {
    // c sends at a trickle; a and b are fast. Without taking c's chunk away, the blob would come at c's pace.
    const a = await blobPeer('a')
    const b = await blobPeer('b')
    const c = await blobPeer('c', { pace: { bytes: 16 * 1024, ms: 20 } })
    const run = await start([a, b, c], { perPeer: 1 })
    const bytes = await collect(run.stream)
    assert.ok(bytes.equals(BLOB), 'bytes differ from the blob')
    assert.ok(c.served.length > 0, 'the slow holder got no chunk: the test proves nothing')
    assert.ok(run.body.steals >= 1, 'no chunk was taken from the slow holder')
    // c is not reported as failed: it is slow, not broken.
    assert.deepEqual(run.failed, [])
    // Its chunk was continued elsewhere from the first byte it had not sent.
    const continued = [a, b].flatMap((p) => p.served).filter((r) => r.start % MiB !== 0)
    assert.ok(continued.length >= 1, `no mid-chunk request: ${JSON.stringify([a, b, c].map((p) => p.served))}`)
  })

  it('gives the body up when destroyed: reads fail and nothing stays held', async () => {
    const a = await blobPeer('a', { pace: { bytes: 64 * 1024, ms: 20 } })
    const b = await blobPeer('b', { pace: { bytes: 64 * 1024, ms: 20 } })
    const run = await start([a, b])
    const first = await run.body.read()
    assert.ok(first !== null)
    run.body.release(first)
    run.body.destroy()
    await assert.rejects(run.body.read())
    assert.equal(run.body.aheadBytes, 0)
    run.stream.destroy()
  })

  it('ends a read waiting for slow holders when the request is aborted (a client that left)', async () => {
    const a = await blobPeer('a', { pace: { bytes: 16 * 1024, ms: 50 } })
    const b = await blobPeer('b', { pace: { bytes: 16 * 1024, ms: 50 } })
    const controller = new AbortController()
    const run = await start([a, b], { signal: controller.signal })
    const first = await run.body.read()
    assert.ok(first !== null)
    run.body.release(first)
    // Drain what is there, then wait on the slow holders while the request goes away.
    const waiting = (async () => {
      for (;;) {
        const chunk = await run.body.read()
        if (chunk === null) return
        run.body.release(chunk)
      }
    })()
    setTimeout(() => { controller.abort() }, 100)
    await assert.rejects(waiting)
    assert.equal(run.body.aheadBytes, 0)
    assert.equal(run.body.outstanding, 0, 'no peer buffer stays held')
    run.stream.destroy()
  })
})

/** Serves the right headers over one wrong byte, at absolute offset `at`. */
class CorruptAtStore extends MemoryStore {
  readonly #at: number
  constructor (at: number) {
    super()
    this.#at = at
  }

  override async open (digest: string, options: OpenOptions = {}): Promise<Readable> {
    const source = await super.open(digest, options)
    const at = this.#at
    let offset = options.range?.start ?? 0
    return Readable.from((async function * () {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        let out = chunk
        if (at >= offset && at < offset + chunk.length) {
          out = Buffer.from(chunk)
          out[at - offset] = (out[at - offset] ?? 0) ^ 0xff
        }
        offset += chunk.length
        yield out
      }
    })())
  }
}

describe('mirror with --mirror-parallel-min-size', () => {
  async function peerNode (id: string, store: MemoryStore): Promise<{ peer: Peer, ranges: string[] }> {
    const metrics = createMetrics(new Registry(), { collectDefault: false })
    const handler = createRegistryHandler({ store, router: new LocalOnlyRouter(), metrics, log: quiet }, { filters: [] })
    const ranges: string[] = []
    const srv = await startTestServer((req, res) => {
      ranges.push(req.headers.range ?? 'whole')
      handler(req, res)
    }, quiet)
    cleanups.push(async () => { await srv.close() })
    return { peer: { id, registryAddress: `127.0.0.1:${srv.port}` }, ranges }
  }

  async function node (parallelMinBytes: number): Promise<{ port: number, network: MemoryRouterNetwork, mirror: ReturnType<typeof createMirror>, metrics: ReturnType<typeof createMetrics> }> {
    const network = new MemoryRouterNetwork()
    const router = new MemoryRouter({ network }, { id: 'self', registryAddress: '127.0.0.1:1' })
    const capture = new LogCapture()
    const metrics = createMetrics(new Registry(), { collectDefault: false })
    const mirror = createMirror({ router, log: capture.log, metrics }, { resolveTimeoutMs: 20, resolveRetries: 3, inflightTimeoutMinMs: 5000, parallelMinBytes, parallelChunkBytes: MiB })
    const handler = createRegistryHandler({ store: new MemoryStore(), router, metrics, log: capture.log }, { filters: [], mirror })
    const srv = await startTestServer(handler, capture.log)
    cleanups.push(async () => {
      await srv.close()
      await mirror.close()
    })
    return { port: srv.port, network, mirror, metrics }
  }

  async function counter (metrics: ReturnType<typeof createMetrics>, name: string): Promise<number> {
    const m = await metrics.registry.getSingleMetric(name)?.get()
    return m?.values.reduce((sum, v) => sum + v.value, 0) ?? Number.NaN
  }

  /** A broken body (what a client sees of a digest failure) is reported, not thrown. */
  async function get (port: number): Promise<{ status: number, body: Buffer, isComplete: boolean }> {
    try {
      const res = await request(port, `/v2/library/test/blobs/${DIGEST}?ns=docker.io`)
      return { status: res.status, body: res.body, isComplete: true }
    } catch {
      return { status: 0, body: Buffer.alloc(0), isComplete: false }
    }
  }

  /** Three whole holders of BLOB (a, b, c), and a node with threshold `parallelMinBytes` that knows them. */
  async function holdersAndNode (parallelMinBytes: number): Promise<{ peers: Array<Awaited<ReturnType<typeof peerNode>>>, on: Awaited<ReturnType<typeof node>> }> {
    const peers = await Promise.all(['a', 'b', 'c'].map(async (id) => {
      const store = new MemoryStore()
      store.put(BLOB)
      return await peerNode(id, store)
    }))
    const on = await node(parallelMinBytes)
    for (const p of peers) on.network.add(DIGEST, p.peer)
    return { peers, on }
  }

  it('fetches a large blob from every holder by Range, and a small one from one', async () => {
    const { peers, on } = await holdersAndNode(2 * MiB)
    const res = await get(on.port)
    assert.equal(res.status, 200)
    assert.ok(res.body.equals(BLOB), 'bytes differ from the blob')
    const rangeRequests = peers.flatMap((p) => p.ranges).filter((r) => r !== 'whole')
    assert.equal(rangeRequests.length, Math.ceil(BLOB.length / MiB) - 1)
    assert.ok(peers.filter((p) => p.ranges.length > 0).length >= 2, 'only one holder was asked')
    assert.equal(await counter(on.metrics, 'spegel_mirror_parallel_fetches_total'), 1)
    assert.equal(await counter(on.metrics, 'spegel_mirror_parallel_takeovers_total'), 0)

    for (const p of peers) p.ranges.length = 0
    const off = await node(BLOB.length + 1)
    for (const p of peers) off.network.add(DIGEST, p.peer)
    const single = await get(off.port)
    assert.ok(single.body.equals(BLOB))
    assert.deepEqual(peers.flatMap((p) => p.ranges), ['whole'])
    assert.equal(await counter(off.metrics, 'spegel_mirror_parallel_fetches_total'), 0)
  })

  it('serves a client\'s Range over the threshold from several holders, asking none of them outside it', async () => {
    // containerd resumes a broken layer download with a Range; a parallel fetch must then cover
    // exactly those bytes (its chunks offset by the range's start), not the blob from 0.
    const { peers, on } = await holdersAndNode(2 * MiB)
    const cases = [
      { header: `bytes=${MiB + 777}-${5 * MiB + 99}`, start: MiB + 777, end: 5 * MiB + 99 },
      { header: `bytes=${2 * MiB + 1}-`, start: 2 * MiB + 1, end: BLOB.length - 1 }
    ]
    for (const c of cases) {
      for (const p of peers) p.ranges.length = 0
      const res = await request(on.port, `/v2/library/test/blobs/${DIGEST}?ns=docker.io`, { headers: { Range: c.header } })
      assert.equal(res.status, 206, c.header)
      assert.equal(res.headers['content-range'], `bytes ${c.start}-${c.end}/${BLOB.length}`)
      assert.ok(res.body.equals(BLOB.subarray(c.start, c.end + 1)), `bytes differ for ${c.header}`)
      const asked = peers.flatMap((p) => p.ranges).map((r) => {
        const m = /^bytes=(\d+)-(\d*)$/.exec(r)
        assert.ok(m !== null, `a holder was asked for ${r}`)
        return { start: Number(m[1]), end: m[2] === '' ? BLOB.length - 1 : Number(m[2]) }
      })
      for (const r of asked) assert.ok(r.start >= c.start && r.end <= c.end, `asked ${r.start}-${r.end} outside ${c.header}`)
      assert.ok(peers.filter((p) => p.ranges.length > 0).length >= 2, `only one holder was asked for ${c.header}`)
    }
  })

  it('reports every contributor of a corrupt blob as bad', async () => {
    const good = new MemoryStore()
    good.put(BLOB)
    const bad = new CorruptAtStore(3 * MiB + 5)
    bad.put(BLOB)
    const a = await peerNode('a', good)
    const b = await peerNode('b', bad)
    const on = await node(2 * MiB)
    on.network.add(DIGEST, a.peer)
    on.network.add(DIGEST, b.peer)
    const res = await get(on.port)
    assert.equal(res.isComplete && res.body.length === BLOB.length, false, 'a corrupt blob was delivered whole')
    assert.ok(b.ranges.length > 0, 'the corrupt holder served nothing: the test proves nothing')
    assert.ok(on.mirror.badPeers.has(DIGEST, 'b'), 'the corrupt holder was not reported')
  })
})
