// "Serve what is still arriving" against a real containerd: while `ctr images pull` downloads a
// layer slowly from a tiny registry, IngestWatcher sees the layer in containerd's ingest area
// before the pull ends, and a reader that follows the growing file gets the whole layer.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import fs from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { setTimeout as delay } from 'node:timers/promises'
import { startContainerd, containerdSkipReason, type ContainerdInstance } from '../helpers/containerd.js'
import { buildImage, OCI_MANIFEST, type BuiltImage } from '../helpers/image.js'
import { waitFor } from '../helpers/wait.js'
import { IngestWatcher, type IngestChange } from '../../src/containerd/index.js'
import { openGrowingFile, IngestStalledError } from '../../src/store/index.js'
import { createLogger } from '../../src/observability/logger.js'

const skip = containerdSkipReason() ?? false
const LAYER_BYTES = 8 * 1024 * 1024
const SLOW_CHUNK_BYTES = 256 * 1024
const SLOW_EVERY_MS = 50
const log = createLogger({ level: 'error', destination: new Writable({ write (_c, _e, done) { done() } }) })

type Pace = 'fast' | 'slow' | 'cut'
const CUT_AFTER_BYTES = 3 * 1024 * 1024

/**
 * Serves images from their OCI layouts. A 'slow' blob trickles out in chunks; a 'cut' one
 * trickles, the connection is reset after CUT_AFTER_BYTES, and later requests for it get 404,
 * so containerd's pull fails.
 */
async function slowRegistry (images: () => BuiltImage[], paceOf: (digest: string) => Pace): Promise<{ server: http.Server, port: number }> {
  const cut = new Set<string>()
  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://x')
      if (url.pathname === '/v2/' || url.pathname === '/v2') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
        return
      }
      const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname)
      const img = images().find((i) => m !== null && i.ref.includes(`/${m[1]!}:`))
      let digest = m?.[3]
      if (m?.[2] === 'manifests' && digest !== undefined && !digest.startsWith('sha256:')) digest = img?.top.digest
      if (m === null || img === undefined || digest === undefined || !img.allDigests().includes(digest) || cut.has(digest)) {
        res.writeHead(404).end()
        return
      }
      const bytes = await fs.readFile(img.blobPath(digest))
      const headers = {
        'content-type': m[2] === 'manifests' ? OCI_MANIFEST : 'application/octet-stream',
        'content-length': String(bytes.length),
        'docker-content-digest': digest
      }
      res.writeHead(200, headers)
      if (req.method === 'HEAD') {
        res.end()
        return
      }
      const pace = paceOf(digest)
      if (pace === 'fast') {
        res.end(bytes)
        return
      }
      for (let at = 0; at < bytes.length && !res.destroyed; at += SLOW_CHUNK_BYTES) {
        if (pace === 'cut' && at >= CUT_AFTER_BYTES) {
          cut.add(digest)
          res.destroy()
          return
        }
        res.write(bytes.subarray(at, at + SLOW_CHUNK_BYTES))
        await delay(SLOW_EVERY_MS)
      }
      res.end()
    })().catch(() => { res.destroy() })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, port: (server.address() as AddressInfo).port }
}

/**
 * What containerd's ingest dir for `hex` looked like over time (files present, data size), for the
 * diagnostics: how soon after the dir appears do `total` and the first bytes follow.
 */
async function sampleIngests (contentPath: string, hex: string, isDone: () => boolean): Promise<string[]> {
  const seen: string[] = []
  const t0 = performance.now()
  let last = ''
  while (!isDone() && seen.length < 100) {
    const ingest = path.join(contentPath, 'ingest')
    for (const name of await fs.readdir(ingest).catch(() => [] as string[])) {
      const ref = await fs.readFile(path.join(ingest, name, 'ref'), 'utf8').catch(() => '')
      if (!ref.endsWith(hex)) continue
      const files = (await fs.readdir(path.join(ingest, name)).catch(() => [] as string[])).sort().join(',')
      const size = (await fs.stat(path.join(ingest, name, 'data')).catch(() => undefined))?.size
      const now = `[${files}] data=${String(size)}`
      if (now !== last) seen.push(`${(performance.now() - t0).toFixed(0)} ms ${now}`)
      last = now
    }
    await delay(5)
  }
  return seen
}

describe('ingest watch with a real containerd', { skip }, () => {
  let work: string
  let ctrd: ContainerdInstance
  let image: BuiltImage
  let broken: BuiltImage
  let registry: { server: http.Server, port: number }

  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-ingest-it-'))
    registry = await slowRegistry(() => [image, broken], (digest) => {
      if (digest === image.platforms[0]!.layers[1]!.digest) return 'slow'
      if (digest === broken.platforms[0]!.layers[0]!.digest) return 'cut'
      return 'fast'
    })
    image = await buildImage(path.join(work, 'image'), `127.0.0.1:${registry.port}/ingest/slow:1.0`, [4096, LAYER_BYTES])
    broken = await buildImage(path.join(work, 'broken'), `127.0.0.1:${registry.port}/ingest/broken:1.0`, [LAYER_BYTES])
    ctrd = await startContainerd({ name: 'ingest' })
  })
  after(async () => {
    await ctrd?.dispose()
    registry?.server.closeAllConnections()
    registry?.server.close()
    await fs.rm(work, { recursive: true, force: true })
  })

  async function writeHostsDir (): Promise<string> {
    const host = `127.0.0.1:${registry.port}`
    const hostsDir = path.join(work, 'hosts')
    await fs.mkdir(path.join(hostsDir, host), { recursive: true })
    await fs.writeFile(path.join(hostsDir, host, 'hosts.toml'),
      `server = "http://${host}"\n\n[host."http://${host}"]\n  capabilities = ["pull", "resolve"]\n`)
    return hostsDir
  }

  it('reports the layer as arriving during the pull and serves its bytes from the growing file', async (t) => {
    const layer = image.platforms[0]!.layers[1]!
    const hostsDir = await writeHostsDir()

    const watcher = new IngestWatcher({ log }, { contentPath: ctrd.contentPath })
    const changes: Array<IngestChange & { atMs: number }> = []
    watcher.subscribe((c) => { changes.push({ ...c, atMs: performance.now() }) })
    watcher.start()
    try {
      let pullEndedAtMs: number | undefined
      const startedAtMs = performance.now()
      const sampling = sampleIngests(ctrd.contentPath, layer.digest.slice('sha256:'.length), () => pullEndedAtMs !== undefined)
      const pull = ctrd.ctr(['images', 'pull', '--plain-http', '--hosts-dir', hostsDir, image.ref], { timeoutMs: 120_000 })
        .finally(() => { pullEndedAtMs = performance.now() })
      pull.catch(() => {}) // awaited below; a failure must not be unhandled while we wait

      const ingest = await waitFor(() => watcher.get(layer.digest), { timeoutMs: 60_000, intervalMs: 5, what: 'the layer to be arriving' })
      assert.equal(pullEndedAtMs, undefined, 'the layer was seen before the pull ended')
      assert.equal(ingest.isComplete, false)
      assert.equal(ingest.totalBytes, LAYER_BYTES)
      assert.ok(ingest.receivedBytes > 0 && ingest.receivedBytes < LAYER_BYTES, `received ${ingest.receivedBytes}`)
      const ingestDir = path.dirname(ingest.path)
      t.diagnostic(`arriving ${(performance.now() - startedAtMs).toFixed(0)} ms after ctr started; ref ${ingest.ref}; ` +
        `${ingest.receivedBytes} of ${ingest.totalBytes} bytes; ingest dir holds ${(await fs.readdir(ingestDir).catch(() => [])).sort().join(', ')}`)

      const stream = await openGrowingFile(ingest.path, {
        start: 0,
        end: ingest.totalBytes - 1,
        isAbandoned: () => watcher.isAbandoned(layer.digest)
      })
      const hash = createHash('sha256')
      let delivered = 0
      for await (const chunk of stream) {
        hash.update(chunk as Buffer)
        delivered += (chunk as Buffer).length
      }
      assert.equal(delivered, LAYER_BYTES)
      assert.equal(`sha256:${hash.digest('hex')}`, layer.digest)

      await pull
      const done = await waitFor(() => watcher.get(layer.digest)?.isComplete === true && watcher.get(layer.digest), { timeoutMs: 10_000, what: 'the layer to be complete' })
      assert.equal(done.path, path.join(ctrd.contentPath, 'blobs', 'sha256', layer.digest.slice('sha256:'.length)))
      const arriving = changes.filter((c) => c.digest === layer.digest)
      assert.deepEqual(arriving.map((c) => c.type), ['arriving', 'complete'], 'one arriving, then complete at the commit, no gone, for the layer')
      // Every blob of the image went through the ingest area; small ones may commit between two looks.
      t.diagnostic(`containerd's layer ingest, sampled every 5 ms: ${(await sampling).join('; ')}`)
      t.diagnostic(`digests offered after the pull: ${watcher.digests().length} of ${image.allDigests().length}; changes ${JSON.stringify(changes.map((c) => [c.type, c.digest.slice(7, 19)]))}`)
    } finally {
      watcher.stop()
    }
  })

  it('reports gone and fails a reader when the pull breaks off mid-layer', async (t) => {
    const layer = broken.platforms[0]!.layers[0]!
    const hostsDir = await writeHostsDir()
    const watcher = new IngestWatcher({ log }, { contentPath: ctrd.contentPath })
    const changes: IngestChange[] = []
    watcher.subscribe((c) => { if (c.digest === layer.digest) changes.push(c) })
    watcher.start()
    try {
      const pull = ctrd.ctr(['images', 'pull', '--plain-http', '--hosts-dir', hostsDir, broken.ref], { timeoutMs: 120_000 })
      pull.catch(() => {})
      const ingest = await waitFor(() => watcher.get(layer.digest), { timeoutMs: 60_000, intervalMs: 5, what: 'the layer to be arriving' })
      const stream = await openGrowingFile(ingest.path, {
        start: 0,
        end: ingest.totalBytes - 1,
        stallTimeoutMs: 60_000, // longer than the test waits: the reader must learn of the abort otherwise
        isAbandoned: () => watcher.isAbandoned(layer.digest)
      })
      let delivered = 0
      const startedAtMs = performance.now()
      let why = ''
      await assert.rejects((async () => { for await (const chunk of stream) delivered += (chunk as Buffer).length })(), (err) => {
        why = (err as Error).message
        return err instanceof IngestStalledError
      })
      t.diagnostic(`reader failed ${(performance.now() - startedAtMs).toFixed(0)} ms after it started, after ${delivered} bytes: ${why}`)
      assert.ok(delivered < LAYER_BYTES)
      await assert.rejects(pull, /unexpected EOF|not found|failed/)
      await waitFor(() => changes.some((c) => c.type === 'gone'), { timeoutMs: 20_000, what: 'gone after the failed pull' })
      assert.deepEqual(changes.map((c) => c.type).filter((t) => t !== 'abandoned'), ['arriving', 'gone'])
      assert.ok(changes.some((c) => c.type === 'abandoned'), 'the failed download is reported abandoned')
      assert.equal(watcher.isAbandoned(layer.digest), true)
      assert.equal(watcher.get(layer.digest), undefined)
    } finally {
      watcher.stop()
    }
  })
})
