import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { afterEach, describe, it } from 'node:test'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { Registry } from 'prom-client'
import { LogCapture, eventually, listenLocal, startTestServer, type TestServer } from '../http/test-helpers.js'
import { MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST } from '../oci/index.js'
import { createLogger } from '../observability/logger.js'
import { createMetrics, type Metrics } from '../observability/metrics.js'
import { LocalOnlyRouter, MemoryRouter, MemoryRouterNetwork } from '../routing/memory-router.js'
import type { LookupOptions, Peer, Router } from '../routing/index.js'
import { MemoryStore } from '../store/memory-store.js'
import type { Descriptor, OpenOptions, StoreCallOptions } from '../store/types.js'
import { createRegistryHandler, type RegistryInit } from './handler.js'
import { createMirror, type Mirror, type MirrorInit } from './mirror.js'
import { RecentRequests } from './recent-requests.js'
import { createRegistryLabeler } from './registry-label.js'

// ---------------------------------------------------------------------------------------------
// Content

const LOREM = Buffer.from('Lorem Ipsum Dolor')
const BLOB_20 = Buffer.from('abcdefghijklmnopqrst')
const BIG = Buffer.from(Array.from({ length: 1024 * 1024 + 7 }, (_, i) => (i * 31 + (i >> 9)) % 256))
const CONFIG = '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
const TAG = 'docker.io/library/test:latest'

function sha256 (bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

interface Content {
  lorem: Descriptor
  blob20: Descriptor
  big: Descriptor
  manifest: Descriptor
  index: Descriptor
  indexBytes: Buffer
}

function fill (store: MemoryStore): Content {
  const lorem = store.put(LOREM, 'application/vnd.oci.image.layer.v1.tar')
  const blob20 = store.put(BLOB_20)
  const big = store.put(BIG, 'application/vnd.oci.image.layer.v1.tar+gzip')
  const config = store.put(CONFIG, MEDIA_TYPE_OCI_CONFIG)
  const manifest = store.put(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_MANIFEST,
    config: { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: config.digest, size: config.sizeBytes },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: lorem.digest, size: lorem.sizeBytes }]
  }), MEDIA_TYPE_OCI_MANIFEST)
  const indexBytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_INDEX,
    manifests: [{ mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: manifest.digest, size: manifest.sizeBytes, platform: { os: 'linux', architecture: 'amd64' } }]
  }))
  const index = store.put(indexBytes, MEDIA_TYPE_OCI_INDEX)
  store.tag(TAG, index.digest)
  return { lorem, blob20, big, manifest, index, indexBytes }
}

const C = fill(new MemoryStore())
const ABSENT = sha256('held by nobody')
const blobPath = (digest: string): string => `/v2/library/test/blobs/${digest}?ns=docker.io`
const manifestPath = (ref: string): string => `/v2/library/test/manifests/${ref}?ns=docker.io`

// ---------------------------------------------------------------------------------------------
// Stores that misbehave the way peers do

/** Sends 40 % of every response, then fails: the handler breaks the connection mid-body. */
class FlakyStore extends MemoryStore {
  override async open (digest: string, options: OpenOptions = {}): Promise<Readable> {
    const { sizeBytes } = await this.stat(digest)
    const length = options.range === undefined ? sizeBytes : options.range.end - options.range.start + 1
    return Readable.from(cutAfter(await super.open(digest, options), Math.max(1, Math.floor(length * 0.4)), length))
  }
}

async function * cutAfter (source: Readable, cut: number, length: number): AsyncGenerator<Buffer> {
  let sent = 0
  for await (const chunk of source as AsyncIterable<Buffer>) {
    const part = chunk.subarray(0, cut - sent)
    sent += part.length
    yield part
    if (sent >= cut) break
  }
  if (sent < length) {
    // Let the bytes reach the socket before the failure destroys it.
    await nextTurn()
    throw new Error('peer cut the stream')
  }
}

/** Serves the right headers over wrong bytes. */
class CorruptStore extends MemoryStore {
  override async open (digest: string, options: OpenOptions = {}): Promise<Readable> {
    const source = await super.open(digest, options)
    return Readable.from((async function * () {
      let isFirst = true
      for await (const chunk of source as AsyncIterable<Buffer>) {
        const copy = Buffer.from(chunk)
        if (isFirst && copy.length > 0) copy[0] = (copy[0] ?? 0) ^ 0xff
        isFirst = false
        yield copy
      }
    })())
  }
}

/** Holds answers (before the headers, or after 40 % of the body) until `release()`. */
class Gate {
  #open = false
  #waiters: Array<() => void> = []
  get wait (): Promise<void> {
    if (this.#open) return Promise.resolve()
    return new Promise((resolve) => { this.#waiters.push(resolve) })
  }

  release (): void {
    this.#open = true
    for (const wake of this.#waiters.splice(0)) wake()
  }
}

class SlowStore extends MemoryStore {
  readonly gate = new Gate()
  override async stat (digest: string, options?: StoreCallOptions): Promise<Descriptor> {
    await this.gate.wait
    return await super.stat(digest, options)
  }
}

class StallStore extends MemoryStore {
  readonly gate = new Gate()
  override async open (digest: string, options: OpenOptions = {}): Promise<Readable> {
    const { sizeBytes } = await this.stat(digest)
    const source = await super.open(digest, options)
    const gate = this.gate
    const cut = Math.floor(sizeBytes * 0.4)
    return Readable.from((async function * () {
      let sent = 0
      for await (const chunk of source as AsyncIterable<Buffer>) {
        if (sent >= cut) await gate.wait
        sent += chunk.length
        yield chunk
      }
    })())
  }
}

// ---------------------------------------------------------------------------------------------
// Peers and the node under test

const quiet = createLogger({ level: 'silent' })

interface PeerServer {
  peer: Peer
  /** Requests received, in order. */
  requests: Array<{ method: string, url: string, range?: string, mirrored?: string, authorization?: string }>
  /** Responses that closed before they finished (the requester went away). */
  aborted: number
  close(): Promise<void>
}

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

async function startPeer (id: string, store: MemoryStore = new MemoryStore(), basicAuth?: { username: string, password: string }): Promise<PeerServer> {
  const metrics = createMetrics(new Registry(), { collectDefault: false })
  const handler = createRegistryHandler({ store, router: new LocalOnlyRouter(), metrics, log: quiet }, { filters: [], ...(basicAuth === undefined ? {} : { basicAuth }) })
  const state: PeerServer = {
    peer: { id, registryAddress: '' },
    requests: [],
    aborted: 0,
    close: async () => {}
  }
  const srv: TestServer = await startTestServer((req: IncomingMessage, res: ServerResponse) => {
    state.requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      ...(req.headers.range === undefined ? {} : { range: req.headers.range }),
      ...(typeof req.headers['x-spegel-mirrored'] === 'string' ? { mirrored: req.headers['x-spegel-mirrored'] } : {}),
      ...(req.headers.authorization === undefined ? {} : { authorization: req.headers.authorization })
    })
    res.once('close', () => { if (!res.writableFinished) state.aborted++ })
    handler(req, res)
  }, quiet)
  state.peer = { id, registryAddress: `127.0.0.1:${srv.port}` }
  state.close = async () => { await srv.close() }
  cleanups.push(state.close)
  return state
}

/** A peer holding all the test content, optionally through a misbehaving store. */
async function contentPeer (id: string, store: MemoryStore = new MemoryStore()): Promise<PeerServer> {
  fill(store)
  return await startPeer(id, store)
}

/** Accepts connections and never answers. */
async function hangingPeer (id: string): Promise<{ peer: Peer, requests: () => number, openWithRequest: () => number }> {
  let requests = 0
  const server = createNetServer((socket) => {
    socket.on('error', () => {})
    socket.once('data', () => { requests++ })
  })
  const { port, sockets, close } = await listenLocal(server)
  cleanups.push(close)
  return {
    peer: { id, registryAddress: `127.0.0.1:${port}` },
    requests: () => requests,
    // A client may open a spare connection after an abort; only connections that carried a request count.
    openWithRequest: () => [...sockets].filter((s) => s.bytesRead > 0).length
  }
}

/** An address where nothing listens (connections are refused). */
async function closedPeer (id: string): Promise<Peer> {
  const server = createNetServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return { id, registryAddress: `127.0.0.1:${port}` }
}

interface Node {
  port: number
  network: MemoryRouterNetwork
  capture: LogCapture
  metrics: Metrics
  mirror: Mirror
  /** Records `peers` as holding `key`, in this order of preference. */
  hold(key: string, ...peers: Peer[]): void
}

async function startNode (init: Partial<MirrorInit> = {}, router?: Router, handlerInit: Partial<RegistryInit> = {}): Promise<Node> {
  const network = new MemoryRouterNetwork()
  const nodeRouter = router ?? new MemoryRouter({ network }, { id: 'self', registryAddress: '127.0.0.1:1' })
  const capture = new LogCapture()
  const metrics = createMetrics(new Registry(), { collectDefault: false })
  let n = 0
  const mirror = createMirror({ router: nodeRouter, log: capture.log, metrics }, {
    resolveTimeoutMs: 20,
    resolveRetries: 3,
    // Generous so a loaded test machine cannot turn a slow good peer into a miss; the tests
    // about hung peers set Spegel's 100 ms.
    inflightTimeoutMinMs: 5000,
    // Equal peers are asked in the order they were recorded.
    random: () => n++,
    ...init
  })
  const handler = createRegistryHandler({ store: new MemoryStore(), router: nodeRouter, metrics, log: capture.log }, { filters: [], mirror, ...handlerInit })
  const srv = await startTestServer(handler, capture.log)
  cleanups.push(async () => {
    await srv.close()
    await mirror.close()
  })
  return {
    port: srv.port,
    network,
    capture,
    metrics,
    mirror,
    hold: (key, ...peers) => { for (const p of peers) network.add(key, p) }
  }
}

// ---------------------------------------------------------------------------------------------
// Client

interface Response {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  /** False when the connection broke before the body was complete. */
  isComplete: boolean
}

/** One request on its own connection; a broken body is reported, not thrown. */
async function fetch (port: number, path: string, options: { method?: string, headers?: Record<string, string>, abortAfterBytes?: number } = {}): Promise<Response> {
  const req = httpRequest({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.headers, agent: false })
  req.end()
  const [res] = await once(req, 'response') as [IncomingMessage]
  const parts: Buffer[] = []
  let length = 0
  const isComplete = await new Promise<boolean>((resolve) => {
    res.on('data', (chunk: Buffer) => {
      parts.push(chunk)
      length += chunk.length
      if (options.abortAfterBytes !== undefined && length >= options.abortAfterBytes) {
        req.destroy()
        resolve(false)
      }
    })
    res.once('end', () => { resolve(res.complete) })
    res.once('error', () => { resolve(false) })
    res.once('close', () => { resolve(res.complete) })
  })
  return { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), isComplete }
}

const VOLATILE = new Set(['date', 'connection', 'keep-alive', 'transfer-encoding'])
function stableHeaders (headers: IncomingHttpHeaders): Record<string, unknown> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !VOLATILE.has(k)).sort(([a], [b]) => a.localeCompare(b)))
}

/** GET and HEAD must agree on status and headers; HEAD has no body. Returns the GET. */
async function getAndHead (node: Node, path: string, headers?: Record<string, string>): Promise<Response> {
  const get = await withDeadline(fetch(node.port, path, { headers: headers ?? {} }), `GET ${path}`)
  const head = await withDeadline(fetch(node.port, path, { method: 'HEAD', headers: headers ?? {} }), `HEAD ${path}`)
  assert.equal(head.status, get.status, `HEAD status for ${path}`)
  assert.deepEqual(stableHeaders(head.headers), stableHeaders(get.headers), `HEAD headers for ${path}`)
  assert.equal(head.body.length, 0)
  return get
}

/** Fails the test when `promise` has not settled by the deadline; never asserts on how fast it was. */
async function withDeadline<T> (promise: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(new Error(`${what} did not finish within ${ms} ms`)) }, ms)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}

function ociError (res: Response): { code: string, detail?: { attempts: number }, message: string } {
  assert.equal(res.headers['content-type'], 'application/json')
  assert.equal(res.headers['content-length'], String(res.body.length))
  const body = JSON.parse(res.body.toString('utf8')) as { errors: Array<{ code: string, detail?: { attempts: number }, message: string }> }
  assert.equal(body.errors.length, 1)
  const [first] = body.errors
  assert.ok(first !== undefined)
  return first
}

async function mirrorCount (metrics: Metrics, cache: string): Promise<number> {
  const m = await metrics.mirrorRequests.get()
  return m.values.filter((v) => v.labels.cache === cache).reduce((n, v) => n + v.value, 0)
}

// ---------------------------------------------------------------------------------------------

describe('mirror: no usable peer', () => {
  it('answers 404 with attempts 0 at once when nobody holds the content', async () => {
    // Timeouts far beyond the test's deadline: only the exhausted lookup can end this request.
    const node = await startNode({ resolveTimeoutMs: 60_000, manifestDeadlineMs: 60_000 })
    const res = await getAndHead(node, blobPath(ABSENT))
    assert.equal(res.status, 404)
    assert.equal(res.body.toString(), `{"errors":[{"code":"BLOB_UNKNOWN","detail":{"attempts":0},"message":"could not find peer for ${ABSENT}"}]}`)
    assert.equal(res.headers['content-length'], '168')

    const manifest = await getAndHead(node, manifestPath('9.9'))
    assert.deepEqual(ociError(manifest), { code: 'MANIFEST_UNKNOWN', detail: { attempts: 0 }, message: 'could not find peer for docker.io/library/test:9.9' })
    await eventually(async () => { assert.equal(await mirrorCount(node.metrics, 'miss'), 4) })
    assert.equal(await mirrorCount(node.metrics, 'hit'), 0)
    const resolved = (await node.metrics.resolveDurationSeconds.get()).values.find((v) => v.metricName === 'spegel_resolve_duration_seconds_count')
    assert.deepEqual(resolved?.labels, { router: 'memory' })
    assert.equal(resolved?.value, 4)
  })

  it('gives up on two peers that accept and never answer, and closes both connections', async () => {
    const node = await startNode({ inflightTimeoutMinMs: 100 })
    const a = await hangingPeer('hang-a')
    const b = await hangingPeer('hang-b')
    node.hold(C.blob20.digest, a.peer, b.peer)
    const res = await getAndHead(node, blobPath(C.blob20.digest))
    assert.equal(res.status, 404)
    assert.deepEqual(ociError(res), { code: 'BLOB_UNKNOWN', detail: { attempts: 2 }, message: `waited too long for inflight dials to complete for ${C.blob20.digest}` })
    assert.equal(a.requests(), 2, 'asked for GET and HEAD')
    assert.equal(b.requests(), 2, 'asked for GET and HEAD')
    await eventually(() => {
      assert.equal(a.openWithRequest() + b.openWithRequest(), 0, 'abandoned requests are aborted')
    })
  })

  it('reports every attempt when all peers fail (404, 404, connection refused)', async () => {
    const node = await startNode()
    const empty1 = await startPeer('empty-1')
    const empty2 = await startPeer('empty-2')
    node.hold(C.blob20.digest, empty1.peer, await closedPeer('refused'), empty2.peer)
    const res = await getAndHead(node, blobPath(C.blob20.digest))
    assert.equal(res.status, 404)
    assert.deepEqual(ociError(res), { code: 'BLOB_UNKNOWN', detail: { attempts: 3 }, message: `all request retries exhausted for ${C.blob20.digest}` })
    await node.capture.find((l) => l.msg === 'request to peer failed' && l.peer === 'refused' && /ECONNREFUSED/.test(String(l.err)))
  })

  it('refuses a manifest asked for as a blob, and a blob asked for as a manifest, after one attempt', async () => {
    const node = await startNode()
    const good = await contentPeer('good')
    node.hold(C.manifest.digest, good.peer)
    node.hold(C.lorem.digest, good.peer)
    assert.deepEqual(ociError(await getAndHead(node, blobPath(C.manifest.digest))),
      { code: 'BLOB_UNKNOWN', detail: { attempts: 1 }, message: `all request retries exhausted for ${C.manifest.digest}` })
    assert.deepEqual(ociError(await getAndHead(node, manifestPath(C.lorem.digest))),
      { code: 'MANIFEST_UNKNOWN', detail: { attempts: 1 }, message: `all request retries exhausted for ${C.lorem.digest}` })
  })

  it('bounds manifest and HEAD requests by the deadline even while the lookup hangs', async () => {
    const hangingRouter: Router = {
      name: 'hanging',
      readiness: () => ({ isReady: true }),
      lookup: async function * (_key: string, options: LookupOptions = {}) {
        await new Promise((_resolve, reject) => { options.signal?.addEventListener('abort', () => { reject(options.signal?.reason) }, { once: true }) })
        yield * []
      },
      advertise: () => {},
      withdraw: () => {},
      replaceAll: () => {}
    }
    const node = await startNode({ manifestDeadlineMs: 100, resolveTimeoutMs: 60_000 }, hangingRouter)
    const res = await getAndHead(node, manifestPath('latest'))
    assert.deepEqual(ociError(res), { code: 'MANIFEST_UNKNOWN', detail: { attempts: 0 }, message: 'timed out after 100 ms waiting for peers for docker.io/library/test:latest' })
    const head = await withDeadline(fetch(node.port, blobPath(ABSENT), { method: 'HEAD' }), 'HEAD blob')
    assert.equal(head.status, 404)
  })

  it('without the deadline (blob GET) waits for peers only as long as the resolve timeout', async () => {
    const slowRouter: Router = {
      name: 'slow',
      readiness: () => ({ isReady: true }),
      lookup: async function * (_key: string, options: LookupOptions = {}) {
        await new Promise((_resolve, reject) => { options.signal?.addEventListener('abort', () => { reject(options.signal?.reason) }, { once: true }) })
        yield * []
      },
      advertise: () => {},
      withdraw: () => {},
      replaceAll: () => {}
    }
    const node = await startNode({ manifestDeadlineMs: 60_000, resolveTimeoutMs: 30 }, slowRouter)
    const res = await withDeadline(fetch(node.port, blobPath(ABSENT)), 'GET blob')
    assert.deepEqual(ociError(res), { code: 'BLOB_UNKNOWN', detail: { attempts: 0 }, message: `waited too long for new peer with no inflight fetches for ${ABSENT}` })
  })

  it('never forwards a request that carries X-Spegel-Mirrored: true', async () => {
    const node = await startNode()
    const good = await contentPeer('good')
    node.hold(C.lorem.digest, good.peer)
    const res = await getAndHead(node, blobPath(C.lorem.digest), { 'X-Spegel-Mirrored': 'true' })
    assert.equal(res.status, 404)
    assert.equal(ociError(res).message, `could not find ${C.lorem.digest} on this node`)
    assert.equal(good.requests.length, 0)
  })
})

describe('mirror: serving from peers', () => {
  it('serves a blob from the first good peer with the descriptor’s headers only', async () => {
    const node = await startNode()
    const good = await contentPeer('good')
    node.hold(C.lorem.digest, good.peer)
    const res = await getAndHead(node, blobPath(C.lorem.digest))
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, LOREM)
    assert.deepEqual(stableHeaders(res.headers), {
      'accept-ranges': 'bytes',
      'content-length': String(LOREM.length),
      'content-type': 'application/vnd.oci.image.layer.v1.tar',
      'docker-content-digest': C.lorem.digest
    })
    const [first] = good.requests
    assert.deepEqual(first, { method: 'GET', url: blobPath(C.lorem.digest), mirrored: 'true' })
    await eventually(async () => { assert.equal(await mirrorCount(node.metrics, 'hit'), 2) })
    assert.equal(await mirrorCount(node.metrics, 'miss'), 0, 'a hit is counted once, by the handler')
    await node.capture.find((l) => l.msg === 'request' && l.peer === 'good')
  })

  it('serves from the second peer after an unreachable first, and the last after two bad', async () => {
    const node = await startNode()
    const good = await contentPeer('good')
    const refused = await closedPeer('refused')
    node.hold(C.lorem.digest, refused, good.peer)
    const res = await getAndHead(node, blobPath(C.lorem.digest))
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, LOREM)
    await node.capture.find((l) => l.msg === 'request to peer failed' && l.peer === 'refused')

    const empty = await startPeer('empty')
    node.hold(C.blob20.digest, empty.peer, await closedPeer('refused-2'), good.peer)
    const last = await getAndHead(node, blobPath(C.blob20.digest))
    assert.equal(last.status, 200)
    assert.deepEqual(last.body, BLOB_20)
    assert.equal(empty.requests.length, 2, 'the empty peer was asked first, for GET and HEAD')
  })

  it('serves a manifest by tag with exactly the type, length and digest headers', async () => {
    const node = await startNode()
    const good = await contentPeer('good')
    node.hold(TAG, { ...good.peer, digest: C.index.digest })
    const res = await getAndHead(node, manifestPath('latest'))
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, C.indexBytes)
    assert.deepEqual(stableHeaders(res.headers), {
      'content-length': String(C.indexBytes.length),
      'content-type': MEDIA_TYPE_OCI_INDEX,
      'docker-content-digest': C.index.digest
    })
    assert.equal(good.requests[0]?.url, manifestPath('latest'))
  })

  it('forwards a Range and answers 206 with the peer’s Content-Range', async () => {
    const node = await startNode()
    const good = await contentPeer('good')
    node.hold(C.blob20.digest, good.peer)
    const res = await getAndHead(node, blobPath(C.blob20.digest), { Range: 'bytes=1-3' })
    assert.equal(res.status, 206)
    assert.equal(res.body.toString(), 'bcd')
    assert.deepEqual(stableHeaders(res.headers), {
      'accept-ranges': 'bytes',
      'content-length': '3',
      'content-range': 'bytes 1-3/20',
      'content-type': 'application/octet-stream',
      'docker-content-digest': C.blob20.digest
    })
    assert.equal(good.requests[0]?.range, 'bytes=1-3')

    const suffix = await getAndHead(node, blobPath(C.blob20.digest), { Range: 'bytes=-5' })
    assert.equal(suffix.body.toString(), 'pqrst')
    assert.equal(suffix.headers['content-range'], 'bytes 15-19/20')
  })

  it('answers 416 with the size when the range is outside the blob', async () => {
    const node = await startNode()
    const good = await contentPeer('good')
    node.hold(C.blob20.digest, good.peer)
    const res = await getAndHead(node, blobPath(C.blob20.digest), { Range: 'bytes=30-' })
    assert.equal(res.status, 416)
    assert.equal(res.headers['content-range'], 'bytes */20')
    assert.equal(ociError(res).code, 'UNSUPPORTED')
    assert.equal(good.requests.length, 2, 'one peer is enough to know')
  })

  it('sends the configured credentials to peers that require them', async () => {
    const credentials = { username: 'spegel', password: 'secret\n' }
    const store = new MemoryStore()
    fill(store)
    const locked = await startPeer('locked', store, credentials)
    const without = await startNode()
    without.hold(C.lorem.digest, locked.peer)
    assert.deepEqual(ociError(await withDeadline(fetch(without.port, blobPath(C.lorem.digest)), 'GET')).detail, { attempts: 1 })

    const withAuth = await startNode({ basicAuth: credentials })
    withAuth.hold(C.lorem.digest, locked.peer)
    const res = await getAndHead(withAuth, blobPath(C.lorem.digest))
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, LOREM)
    assert.equal(locked.requests.at(-1)?.authorization, `Basic ${Buffer.from('spegel:secret\n').toString('base64')}`)
  })

  it('reuses a checked manifest answer while a holder pins its digest, and asks again when the pin moves or the holder leaves', async () => {
    const node = await startNode()
    const good = await contentPeer('good')
    node.hold(TAG, { ...good.peer, digest: C.index.digest })
    const ask = async (method: string): Promise<Response> => await withDeadline(fetch(node.port, manifestPath('latest'), { method }), `${method} latest`)
    const head = await ask('HEAD')
    assert.equal(head.status, 200)
    assert.equal(good.requests.length, 1)
    const again = await ask('HEAD')
    assert.deepEqual(stableHeaders(again.headers), stableHeaders(head.headers))
    assert.equal(good.requests.length, 1, 'the second HEAD is answered from the checked answer')
    // A GET needs the bytes: asked once, then reused too.
    const get = await ask('GET')
    assert.deepEqual(get.body, C.indexBytes)
    assert.equal(good.requests.length, 2)
    assert.deepEqual((await ask('GET')).body, C.indexBytes)
    assert.equal(good.requests.length, 2)
    await eventually(async () => { assert.equal(await mirrorCount(node.metrics, 'hit'), 4) })

    // The holder's record now pins another digest: the old answer says nothing about the tag.
    node.hold(TAG, { ...good.peer, digest: C.manifest.digest })
    assert.equal((await ask('HEAD')).status, 404)
    assert.equal(good.requests.length, 3, 'asked again, and its answer is not the pinned digest')
    // No holder left: nothing is answered from the cache.
    node.network.delete(TAG, good.peer.id)
    node.hold(C.index.digest, good.peer)
    node.network.delete(C.index.digest, good.peer.id)
    assert.equal((await withDeadline(fetch(node.port, manifestPath(C.index.digest), { method: 'HEAD' }), 'HEAD by digest')).status, 404)
  })

  it('prefers a fast peer over one slow to answer, and aborts the slow one', async () => {
    const node = await startNode()
    const slowStore = new SlowStore()
    const slow = await contentPeer('slow', slowStore)
    cleanups.push(() => { slowStore.gate.release() })
    const good = await contentPeer('good')
    node.hold(C.lorem.digest, slow.peer, good.peer)
    const res = await withDeadline(fetch(node.port, blobPath(C.lorem.digest)), 'GET')
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, LOREM)
    assert.equal(slow.requests.length, 1, 'the slow peer was asked first')
    await eventually(() => { assert.equal(slow.aborted, 1) })
  })
})

describe('mirror: broken streams', () => {
  it('a single peer that cuts every response at 40 % still yields the whole blob', async () => {
    const node = await startNode()
    const flaky = await contentPeer('flaky', new FlakyStore())
    node.hold(C.lorem.digest, flaky.peer)
    const res = await getAndHead(node, blobPath(C.lorem.digest))
    assert.equal(res.status, 200)
    assert.ok(res.isComplete)
    assert.deepEqual(res.body, LOREM)
    const ranges = flaky.requests.filter((r) => r.method === 'GET').map((r) => r.range)
    assert.equal(ranges[0], undefined)
    assert.ok(ranges.length > 2)
    assert.ok(ranges.slice(1).every((r) => r !== undefined && /^bytes=\d+-16$/.test(r)), `resumes ask for the rest: ${ranges.join(', ')}`)
  })

  it('three flaky peers yield the whole blob, a large one, and a range', async () => {
    const node = await startNode()
    const peers = await Promise.all(['flaky-1', 'flaky-2', 'flaky-3'].map(async (id) => await contentPeer(id, new FlakyStore({ chunkBytes: 16 * 1024 }))))
    for (const key of [C.lorem.digest, C.big.digest]) node.hold(key, ...peers.map((p) => p.peer))

    const lorem = await getAndHead(node, blobPath(C.lorem.digest))
    assert.deepEqual(lorem.body, LOREM)

    const big = await withDeadline(fetch(node.port, blobPath(C.big.digest)), 'GET big', 20_000)
    assert.ok(big.isComplete)
    assert.equal(sha256(big.body), C.big.digest)
    assert.ok(peers.filter((p) => p.requests.some((r) => r.url === blobPath(C.big.digest))).length > 1, 'the resumes went to other peers too')

    const range = await getAndHead(node, blobPath(C.lorem.digest), { Range: 'bytes=2-15' })
    assert.equal(range.status, 206)
    assert.equal(range.body.toString(), 'rem Ipsum Dolo')
    assert.equal(range.headers['content-range'], 'bytes 2-15/17')
  })

  it('resumes on another peer when a stream stalls, from the first byte not received', async () => {
    const node = await startNode({ bodyIdleTimeoutMs: 300 })
    const stallStore = new StallStore({ chunkBytes: 16 * 1024 })
    const stalled = await contentPeer('stalled', stallStore)
    cleanups.push(() => { stallStore.gate.release() })
    const good = await contentPeer('good')
    node.hold(C.big.digest, stalled.peer, good.peer)
    const res = await withDeadline(fetch(node.port, blobPath(C.big.digest)), 'GET big')
    assert.ok(res.isComplete)
    assert.equal(sha256(res.body), C.big.digest)
    const resume = good.requests.find((r) => r.url === blobPath(C.big.digest))
    assert.match(resume?.range ?? '', new RegExp(`^bytes=[1-9]\\d*-${BIG.length - 1}$`))
    await node.capture.find((l) => l.msg === 'blob stream from peer failed, resuming' && l.peer === 'stalled' && l.level === 'WARN')
  })

  it('breaks the response when the bytes do not match the digest, and avoids that peer next time', async () => {
    const node = await startNode()
    const corrupt = await contentPeer('corrupt', new CorruptStore({ chunkBytes: 16 * 1024 }))
    node.hold(C.big.digest, corrupt.peer)
    const res = await withDeadline(fetch(node.port, blobPath(C.big.digest)), 'GET corrupt')
    assert.equal(res.status, 200)
    assert.equal(res.isComplete, false, 'the response must not end cleanly')
    assert.ok(res.body.length < BIG.length, 'the last byte is held back')
    await node.capture.find((l) => l.msg === 'peer served a blob that does not match its digest' && l.peer === 'corrupt' && l.level === 'WARN')
    assert.ok(node.mirror.badPeers.has(C.big.digest, 'corrupt'))
    await eventually(async () => { assert.equal(await mirrorCount(node.metrics, 'miss'), 1) })

    const asked = corrupt.requests.length
    const good = await contentPeer('good')
    node.hold(C.big.digest, good.peer)
    const again = await withDeadline(fetch(node.port, blobPath(C.big.digest)), 'GET again')
    assert.ok(again.isComplete)
    assert.equal(sha256(again.body), C.big.digest)
    assert.equal(corrupt.requests.length, asked, 'the corrupt peer is not asked again')

    // Without a good peer, the corrupt one is not a candidate at all.
    node.network.delete(C.big.digest, 'good')
    assert.deepEqual(ociError(await withDeadline(fetch(node.port, blobPath(C.big.digest)), 'GET')).detail, { attempts: 0 })
  })

  it('with --verify-relayed-blobs=false, relays the bytes unchecked and blames no one', async () => {
    const node = await startNode({ isRelayVerified: false })
    const corrupt = await contentPeer('corrupt', new CorruptStore({ chunkBytes: 16 * 1024 }))
    node.hold(C.big.digest, corrupt.peer)
    const res = await withDeadline(fetch(node.port, blobPath(C.big.digest)), 'GET corrupt')
    assert.equal(res.status, 200)
    assert.ok(res.isComplete, 'the response ends cleanly: containerd is left to refuse it at commit')
    assert.equal(res.body.length, BIG.length)
    assert.notEqual(sha256(res.body), C.big.digest)
    assert.ok(!node.mirror.badPeers.has(C.big.digest, 'corrupt'))
    assert.equal(node.capture.lines.find((l) => l.msg === 'peer served a blob that does not match its digest'), undefined)
    // A good peer's bytes come through as they are.
    const good = await contentPeer('good')
    node.network.delete(C.big.digest, 'corrupt')
    node.hold(C.big.digest, good.peer)
    const again = await withDeadline(fetch(node.port, blobPath(C.big.digest)), 'GET good')
    assert.ok(again.isComplete)
    assert.equal(sha256(again.body), C.big.digest)
  })

  it('skips a peer whose manifest does not match its digest', async () => {
    // Our own handler verifies manifests before serving them, so the liar is hand-written.
    const node = await startNode()
    const forged = Buffer.from(C.indexBytes)
    forged[forged.length - 2] = 0x20
    let asked = 0
    const liar = await startTestServer((req, res) => {
      asked++
      res.writeHead(200, { 'Content-Type': MEDIA_TYPE_OCI_INDEX, 'Content-Length': forged.length, 'Docker-Content-Digest': C.index.digest })
      res.end(req.method === 'HEAD' ? undefined : forged)
    }, quiet)
    cleanups.push(async () => { await liar.close() })
    const good = await contentPeer('good')
    node.hold(TAG, { id: 'liar', registryAddress: `127.0.0.1:${liar.port}`, digest: C.index.digest }, { ...good.peer, digest: C.index.digest })
    const res = await withDeadline(fetch(node.port, manifestPath('latest')), 'GET')
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, C.indexBytes)
    assert.equal(asked, 1)
    assert.ok(node.mirror.badPeers.has(TAG, 'liar'))
    await node.capture.find((l) => l.msg === 'peer served a manifest that does not match its digest' && l.peer === 'liar' && l.level === 'WARN')
    assert.equal((await withDeadline(fetch(node.port, manifestPath('latest')), 'GET again')).status, 200)
    assert.equal(asked, 1, 'the liar is not asked again for that tag')
  })

  it('trusts a tag answer only from a peer that pinned the tag, and only when it is the pinned digest', async () => {
    const node = await startNode()
    const unpinned = await contentPeer('unpinned')
    const otherDigest = await contentPeer('other-digest')
    const good = await contentPeer('good')
    // `other-digest` serves the real index, but its record names another digest for the tag.
    node.hold(TAG, unpinned.peer, { ...otherDigest.peer, digest: C.manifest.digest }, { ...good.peer, digest: C.index.digest })
    const res = await getAndHead(node, manifestPath('latest'))
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, C.indexBytes)
    assert.equal(unpinned.requests.length, 0, 'a peer without a pinned digest is never asked for the tag')
    assert.ok(node.mirror.badPeers.has(TAG, 'other-digest'))
    await node.capture.find((l) => l.msg === 'peer answered a tag with another digest than its record names' && l.peer === 'other-digest')
    // A registry address that is not IP:port is never turned into a request.
    const named = await contentPeer('named')
    const fresh = await startNode({}, undefined)
    fresh.hold(C.lorem.digest, { id: 'named', registryAddress: `localhost:${named.peer.registryAddress.split(':')[1] ?? ''}` }, good.peer)
    const blob = await withDeadline(fetch(fresh.port, blobPath(C.lorem.digest)), 'GET blob')
    assert.equal(blob.status, 200)
    assert.equal(named.requests.length, 0)
  })

  it('cancels the peer request when the client goes away mid-stream', async () => {
    const node = await startNode()
    const stallStore = new StallStore({ chunkBytes: 16 * 1024 })
    const stalled = await contentPeer('stalled', stallStore)
    cleanups.push(() => { stallStore.gate.release() })
    node.hold(C.big.digest, stalled.peer)
    const res = await withDeadline(fetch(node.port, blobPath(C.big.digest), { abortAfterBytes: 1 }), 'GET')
    assert.equal(res.isComplete, false)
    await eventually(() => { assert.equal(stalled.aborted, 1, 'the peer saw its response abandoned') })
    assert.equal(stalled.requests.length, 1, 'no resume for a client that left')
    await eventually(async () => { assert.equal(await mirrorCount(node.metrics, 'hit'), 1) })
  })
})

describe('mirror: accounting for metrics and the web page', () => {
  const metricValue = async (metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> => {
    const m = (await metrics.registry.getMetricsAsJSON()).find((x) => x.name === name) as { values: Array<{ labels: Record<string, string | number>, value: number }> } | undefined
    const v = m?.values.find((x) => Object.entries(labels).every(([k, want]) => String(x.labels[k]) === want))
    return v?.value ?? 0
  }

  it('counts relayed bytes by source and by peer, and lists the request with the peer that served it', async () => {
    const recent = new RecentRequests(10)
    const node = await startNode({}, undefined, { recentRequests: recent })
    const good = await contentPeer('peer-a')
    node.hold(C.big.digest, good.peer)
    const res = await fetch(node.port, blobPath(C.big.digest))
    assert.equal(res.status, 200)
    assert.equal(res.body.length, BIG.length)
    await eventually(async () => { assert.equal(await metricValue(node.metrics, 'spegel_served_bytes_total', { to: 'containerd', source: 'peer' }), BIG.length) })
    assert.equal(await metricValue(node.metrics, 'spegel_served_bytes_total', { to: 'containerd', source: 'local' }), 0)
    assert.equal(await metricValue(node.metrics, 'spegel_mirror_peer_bytes_total', { peer: 'peer-a' }), BIG.length)
    const [entry] = recent.list()
    assert.ok(entry !== undefined)
    assert.equal(entry.source, 'peer')
    assert.equal(entry.peer, 'peer-a')
    assert.equal(entry.peerAddress, good.peer.registryAddress)
    assert.equal(entry.kind, 'blob')
    assert.equal(entry.ref, C.big.digest)
    assert.equal(entry.registry, 'docker.io')
    assert.equal(entry.bytes, BIG.length)
    assert.equal(entry.status, 200)
    assert.equal(entry.client, 'containerd')
    assert.equal(entry.isAborted, false)
  })

  it('lists a miss with no source and counts no bytes', async () => {
    const recent = new RecentRequests(10)
    const node = await startNode({}, undefined, { recentRequests: recent })
    const res = await fetch(node.port, blobPath(C.lorem.digest))
    assert.equal(res.status, 404)
    await eventually(() => { assert.equal(recent.list().length, 1) })
    const [entry] = recent.list()
    assert.equal(entry?.source, 'none')
    assert.equal(entry?.status, 404)
    assert.equal(await metricValue(node.metrics, 'spegel_served_bytes_total', { to: 'containerd', source: 'peer' }), 0)
  })

  it('labels mirror requests from a closed set: a registry no node holds is `other`, whatever clients send', async () => {
    const node = await startNode({}, undefined, {
      registryLabel: createRegistryLabeler({ mirroredRegistries: [], localRegistries: () => [] })
    })
    const good = await contentPeer('peer-a')
    node.hold(C.lorem.digest, good.peer)
    // A hit teaches the node that docker.io is a registry of this cluster.
    assert.equal((await fetch(node.port, blobPath(C.lorem.digest))).status, 200)
    for (let i = 0; i < 50; i++) {
      assert.equal((await fetch(node.port, `/v2/library/test/blobs/${C.blob20.digest}?ns=random-${i}.example`)).status, 404)
    }
    const text = await node.metrics.registry.metrics()
    const series = text.split('\n').filter((l) => l.startsWith('spegel_mirror_requests_total{'))
    assert.deepEqual(series.sort(), [
      'spegel_mirror_requests_total{registry="docker.io",cache="hit"} 1',
      'spegel_mirror_requests_total{registry="other",cache="miss"} 50'
    ])
  })
})
