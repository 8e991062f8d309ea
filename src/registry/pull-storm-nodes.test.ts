// Pull storms end to end without containerd: real registry servers, real ingest files written the
// way containerd writes them (docs/containerd-ingest.md), the real IngestWatcher, growing-file
// reads and PullStorm, over the in-process router. The test plays containerd: it opens the ingest,
// asks its node's mirror, and on a 404 "downloads from upstream" itself, slowly, into the ingest.
// test/integration/pull-storm.test.ts does the same with real containerd and a real registry.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdir, mkdtemp, open, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { afterEach, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Registry } from 'prom-client'
import { ArrivingBlobs } from '../containerd/arriving.js'
import { request, startTestServer } from '../http/test-helpers.js'
import { createLogger } from '../observability/logger.js'
import { createMetrics } from '../observability/metrics.js'
import { KeyOverlay } from '../routing/key-overlay.js'
import { MemoryRouter, MemoryRouterNetwork } from '../routing/memory-router.js'
import { MemoryStore } from '../store/memory-store.js'
import { createRegistryHandler } from './handler.js'
import { createMirror } from './mirror.js'
import { PullStorm, type StormOutcome } from './pull-storm.js'

const log = createLogger({ level: 'silent' })
const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

interface StormNode {
  id: string
  port: number
  contentPath: string
  outcomes: StormOutcome[]
  arriving: ArrivingBlobs
}

async function startStormNode (id: string, network: MemoryRouterNetwork, waitMs = 3000): Promise<StormNode> {
  const contentPath = await mkdtemp(path.join(os.tmpdir(), `spg-storm-${id}-`))
  await mkdir(path.join(contentPath, 'ingest'), { recursive: true })
  await mkdir(path.join(contentPath, 'blobs', 'sha256'), { recursive: true })
  // The server first: the router record carries its real port.
  let handler: ReturnType<typeof createRegistryHandler> = (_req, res) => { res.writeHead(503).end() }
  const srv = await startTestServer((req, res) => { handler(req, res) }, log)
  const router = new MemoryRouter({ network }, { id, registryAddress: `127.0.0.1:${srv.port}` })
  const keys = new KeyOverlay(router)
  const outcomes: StormOutcome[] = []
  const storm: PullStorm = new PullStorm({
    router,
    keys,
    selfId: () => id,
    log,
    onOutcome: (o) => { outcomes.push(o) },
    onFetching: (d) => { arriving.reconsider(d) },
    isUsable: (peerId) => mirror.isPeerUsable(peerId)
  }, { waitMs, collectMs: 100, pollMs: 10 })
  const arriving = new ArrivingBlobs({
    log,
    keys,
    onArriving: (d) => { storm.onArriving(d) },
    onAbandoned: (d) => { storm.onAbandoned(d) },
    isFirstHand: (d) => storm.isFirstHand(d)
  }, { pollMs: 10 })
  arriving.follow(contentPath)
  const metrics = createMetrics(new Registry(), { collectDefault: false })
  const mirror = createMirror({ router, log, metrics, storm, expectedSize: (d) => arriving.expectedSize(d) }, { resolveTimeoutMs: 20, resolveRetries: 3, inflightTimeoutMinMs: 5000 })
  handler = createRegistryHandler({ store: new MemoryStore(), router, metrics, log }, { filters: [], mirror, arriving })
  cleanups.push(async () => {
    storm.close()
    arriving.stop()
    await srv.close()
    await mirror.close()
    await rm(contentPath, { recursive: true, force: true })
  })
  return { id, port: srv.port, contentPath, outcomes, arriving }
}

/** What containerd does for one blob: open the ingest, ask the mirror, else go upstream. */
interface FakeUpstream {
  downloads: number
  bytesPerStep: number
  stepMs: number
  /** Before the first write: containerd writes 1 MiB at a time, so a slow upstream shows nothing for a while. */
  firstWriteAfterMs?: number
}

async function containerdFetch (node: StormNode, digest: string, blob: Buffer, upstream: FakeUpstream, askAfterMs = 0): Promise<'mirror' | 'upstream'> {
  const ref = `layer-${digest}`
  const dir = path.join(node.contentPath, 'ingest', createHash('sha256').update(`default/1/${ref}`).digest('hex'))
  await mkdir(dir, { recursive: true })
  await writeFile(path.join(dir, 'ref'), ref)
  await writeFile(path.join(dir, 'total'), String(blob.length))
  const data = await open(path.join(dir, 'data'), 'w')
  if (askAfterMs > 0) await sleep(askAfterMs)
  let source: 'mirror' | 'upstream'
  try {
    const res = await get(node.port, `/v2/app/blobs/${digest}?ns=storm.test`)
    if (res.statusCode === 200) {
      source = 'mirror'
      let at = 0
      for await (const chunk of res) {
        await data.write(chunk as Buffer, 0, (chunk as Buffer).length, at)
        at += (chunk as Buffer).length
      }
      assert.equal(at, blob.length, `${node.id}: short body from the mirror`)
    } else {
      assert.equal(res.statusCode, 404)
      res.resume()
      source = 'upstream'
      upstream.downloads++
      if (upstream.firstWriteAfterMs !== undefined) await sleep(upstream.firstWriteAfterMs)
      for (let at = 0; at < blob.length; at += upstream.bytesPerStep) {
        const part = blob.subarray(at, Math.min(blob.length, at + upstream.bytesPerStep))
        await data.write(part, 0, part.length, at)
        await sleep(upstream.stepMs)
      }
    }
  } finally {
    await data.close()
  }
  // Commit: containerd checks the digest, renames data into the blob store and drops the ingest.
  const hex = digest.slice('sha256:'.length)
  const target = path.join(node.contentPath, 'blobs', 'sha256', hex)
  const written = await readFile(path.join(dir, 'data'))
  assert.equal(`sha256:${createHash('sha256').update(written).digest('hex')}`, digest, `${node.id}: wrong bytes`)
  await rename(path.join(dir, 'data'), target)
  await rm(dir, { recursive: true, force: true })
  return source
}

async function get (port: number, urlPath: string): Promise<IncomingMessage> {
  const req = httpRequest({ host: '127.0.0.1', port, path: urlPath, agent: false })
  req.end()
  const [res] = await once(req, 'response') as [IncomingMessage]
  return res
}

describe('pull storm across nodes (in process, real files and servers)', () => {
  it('three nodes asking for a new blob at once: one goes upstream, the others stream its download', async () => {
    const network = new MemoryRouterNetwork()
    const nodes = await Promise.all(['n1', 'n2', 'n3'].map(async (id) => await startStormNode(id, network)))
    const blob = randomBytes(3 * 1024 * 1024 + 123)
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
    const upstream = { downloads: 0, bytesPerStep: 256 * 1024, stepMs: 40 }
    const sources = await Promise.all(nodes.map(async (n) => await containerdFetch(n, digest, blob, upstream)))
    assert.equal(upstream.downloads, 1, `sources ${sources.join(',')}`)
    assert.deepEqual(sources.filter((s) => s === 'mirror').length, 2)
    assert.deepEqual(nodes.flatMap((n) => n.outcomes).sort(), ['chosen', 'source', 'source'])
  })

  it('a node that comes later streams the download already under way', async () => {
    const network = new MemoryRouterNetwork()
    const [first, late] = await Promise.all(['m1', 'm2'].map(async (id) => await startStormNode(id, network)))
    assert.ok(first !== undefined && late !== undefined)
    const blob = randomBytes(2 * 1024 * 1024)
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
    const upstream = { downloads: 0, bytesPerStep: 128 * 1024, stepMs: 40 }
    const firstPull = containerdFetch(first, digest, blob, upstream)
    await sleep(400)
    const lateSource = await containerdFetch(late, digest, blob, upstream)
    assert.equal(await firstPull, 'upstream')
    assert.equal(lateSource, 'mirror')
    assert.equal(upstream.downloads, 1)
  })

  it('the others do not give up on a chosen node whose first bytes take longer than the wait', async () => {
    const network = new MemoryRouterNetwork()
    const nodes = await Promise.all(['w1', 'w2', 'w3'].map(async (id) => await startStormNode(id, network, 700)))
    const blob = randomBytes(2 * 1024 * 1024)
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
    const upstream = { downloads: 0, bytesPerStep: 1024 * 1024, stepMs: 100, firstWriteAfterMs: 1500 }
    const sources = await Promise.all(nodes.map(async (n) => await containerdFetch(n, digest, blob, upstream)))
    assert.equal(upstream.downloads, 1, `sources ${sources.join(',')}`)
    assert.deepEqual(nodes.flatMap((n) => n.outcomes).sort(), ['chosen', 'source', 'source'])
  })

  it('a small blob (an image config) is fetched upstream by every node at once, without a wait', async () => {
    const network = new MemoryRouterNetwork()
    const nodes = await Promise.all(['s1', 's2', 's3'].map(async (id) => await startStormNode(id, network)))
    const blob = randomBytes(64 * 1024)
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
    const upstream = { downloads: 0, bytesPerStep: 64 * 1024, stepMs: 1 }
    // The ingest (with its total) is there before the mirror is asked, as containerd does it; give
    // the watcher a moment to read it, which it normally does while containerd connects.
    const sources = await Promise.all(nodes.map(async (n) => await containerdFetch(n, digest, blob, upstream, 100)))
    assert.deepEqual(sources, ['upstream', 'upstream', 'upstream'])
    assert.deepEqual(nodes.flatMap((n) => n.outcomes), [])
  })

  it('with the chosen node\'s download abandoned, the others fall back to upstream within the bound', async () => {
    const network = new MemoryRouterNetwork()
    const nodes = await Promise.all(['k1', 'k2'].map(async (id) => await startStormNode(id, network, 800)))
    const blob = randomBytes(1024 * 1024)
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
    // Both ask at once; whoever is chosen never writes a byte (its containerd died).
    const asks = await Promise.all(nodes.map(async (n) => {
      const res = await get(n.port, `/v2/app/blobs/${digest}?ns=storm.test`)
      res.resume()
      return res.statusCode
    }))
    assert.deepEqual(asks, [404, 404])
    assert.deepEqual(nodes.flatMap((n) => n.outcomes).sort(), ['chosen', 'timeout'])
  })
})

describe('a blob still arriving, as the holder serves it', () => {
  it('goes to peers only, with its full size, Range, and bytes that follow the growing file', async () => {
    const network = new MemoryRouterNetwork()
    const node = await startStormNode('h1', network)
    const blob = randomBytes(2 * 1024 * 1024 + 5)
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
    const ref = `layer-${digest}`
    const dir = path.join(node.contentPath, 'ingest', createHash('sha256').update(ref).digest('hex'))
    await mkdir(dir, { recursive: true })
    await writeFile(path.join(dir, 'ref'), ref)
    await writeFile(path.join(dir, 'total'), String(blob.length))
    const data = await open(path.join(dir, 'data'), 'w')
    cleanups.push(async () => { await data.close().catch(() => undefined) })
    await data.write(blob, 0, 1024 * 1024, 0)
    // Offered only when this node fetches it upstream itself (first hand): the test says so by
    // asking its own mirror first, which picks it (it is alone).
    const own = await get(node.port, `/v2/app/blobs/${digest}?ns=storm.test`)
    own.resume()
    assert.equal(own.statusCode, 404)
    for (let i = 0; i < 200 && node.arriving.sizeOf(digest) === undefined; i++) await sleep(10)
    assert.equal(node.arriving.sizeOf(digest), blob.length)

    const peerHeaders = { 'X-Spegel-Mirrored': 'true' }
    const head = await request(node.port, `/v2/app/blobs/${digest}?ns=storm.test`, { method: 'HEAD', headers: peerHeaders })
    assert.equal(head.status, 200)
    assert.equal(head.headers['content-length'], String(blob.length))
    assert.equal(head.headers['docker-content-digest'], digest)

    // A range past what is written so far: it is served as the file grows.
    const ranged = request(node.port, `/v2/app/blobs/${digest}?ns=storm.test`, { headers: { ...peerHeaders, Range: 'bytes=1500000-1600000' } })
    const whole = request(node.port, `/v2/app/blobs/${digest}?ns=storm.test`, { headers: peerHeaders })
    await sleep(100)
    await data.write(blob, 1024 * 1024, blob.length - 1024 * 1024, 1024 * 1024)
    const r = await ranged
    assert.equal(r.status, 206)
    assert.equal(r.headers['content-range'], `bytes 1500000-1600000/${blob.length}`)
    assert.ok(r.body.equals(blob.subarray(1500000, 1600001)))
    const w = await whole
    assert.equal(w.status, 200)
    assert.ok(w.body.equals(blob))

    // The node's own containerd never gets its own download back (it is the one writing it).
    const fromContainerd = await get(node.port, `/v2/app/blobs/${digest}?ns=storm.test`)
    fromContainerd.resume()
    assert.equal(fromContainerd.statusCode, 404)
  })
})
