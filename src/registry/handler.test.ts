import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { Registry } from 'prom-client'
import { LogCapture, eventually, rawRequest, request, startTestServer, type TestResponse, type TestServer } from '../http/test-helpers.js'
import {
  MEDIA_TYPE_OCI_CONFIG, OciError, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, regexFilter, registryAllowList,
  type DistributionRequest
} from '../oci/index.js'
import { createMetrics, type Metrics } from '../observability/metrics.js'
import { LocalOnlyRouter, MemoryRouter } from '../routing/memory-router.js'
import type { Router } from '../routing/types.js'
import { MemoryStore } from '../store/memory-store.js'
import type { Descriptor, OpenOptions } from '../store/types.js'
import { createRegistryHandler, type RegistryInit } from './handler.js'
import type { MirrorFetchOptions, MirroredContent } from './mirror.js'

const BLOB_2048 = Buffer.from(Array.from({ length: 2048 }, (_, i) => (i * 7 + 3) % 256))
const BLOB_1000 = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 13 + 1) % 256))
const BIG_BYTES = 8 * 1024 * 1024
const CONFIG = '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'

interface Fixture {
  store: MemoryStore
  blob: Descriptor
  blob1000: Descriptor
  empty: Descriptor
  big: Descriptor
  config: Descriptor
  manifest: Descriptor
  index: Descriptor
  absent: string
}

function sha256 (bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

function fill (store: MemoryStore): Fixture {
  const blob = store.put(BLOB_2048)
  const blob1000 = store.put(BLOB_1000)
  const empty = store.put(Buffer.alloc(0))
  const big = store.put(Buffer.alloc(BIG_BYTES, 7))
  const config = store.put(CONFIG, MEDIA_TYPE_OCI_CONFIG)
  const manifest = store.put(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_MANIFEST,
    config: { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: config.digest, size: config.sizeBytes },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: blob.digest, size: blob.sizeBytes }]
  }), MEDIA_TYPE_OCI_MANIFEST)
  const index = store.put(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_INDEX,
    manifests: [{ mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: manifest.digest, size: manifest.sizeBytes, platform: { os: 'linux', architecture: 'amd64' } }]
  }), MEDIA_TYPE_OCI_INDEX)
  store.tag('docker.io/library/test:1.0', index.digest)
  store.tag('docker.io/library/test:latest', index.digest)
  store.tag('example.com:5000/foo/bar:v1', manifest.digest)
  return { store, blob, blob1000, empty, big, config, manifest, index, absent: sha256('not on this node') }
}

interface Harness extends Fixture {
  srv: TestServer
  port: number
  capture: LogCapture
  metrics: Metrics
  get(path: string, headers?: Record<string, string>): Promise<TestResponse>
  head(path: string, headers?: Record<string, string>): Promise<TestResponse>
  close(): Promise<void>
}

async function harness (init: Partial<RegistryInit> = {}, options: { store?: MemoryStore, router?: Router } = {}): Promise<Harness> {
  const store = options.store ?? new MemoryStore({ name: 'containerd' })
  const fixture = fill(store)
  const capture = new LogCapture()
  const metrics = createMetrics(new Registry(), { collectDefault: false })
  const handler = createRegistryHandler(
    { store, router: options.router ?? new LocalOnlyRouter(), metrics, log: capture.log },
    { filters: [], ...init }
  )
  const srv = await startTestServer(handler, capture.log)
  return {
    ...fixture,
    srv,
    port: srv.port,
    capture,
    metrics,
    get: async (path, headers) => await request(srv.port, path, { headers }),
    head: async (path, headers) => await request(srv.port, path, { method: 'HEAD', headers }),
    close: async () => { await srv.close() }
  }
}

function ociError (res: TestResponse): { code: string, message: string } {
  assert.equal(res.headers['content-type'], 'application/json')
  assert.equal(res.headers['content-length'], String(res.body.length))
  const body = JSON.parse(res.body.toString('utf8')) as { errors: Array<{ code: string, message: string }> }
  assert.equal(body.errors.length, 1)
  const [first] = body.errors
  assert.ok(first !== undefined)
  return first
}

const VOLATILE = new Set(['date', 'connection', 'keep-alive', 'transfer-encoding'])
function stableHeaders (headers: IncomingHttpHeaders): Record<string, unknown> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !VOLATILE.has(k)).sort(([a], [b]) => a.localeCompare(b)))
}

/** GET and HEAD must agree on status and headers; HEAD carries no body. Returns the GET. */
async function getAndHead (h: Harness, path: string, headers?: Record<string, string>): Promise<TestResponse> {
  const get = await h.get(path, headers)
  const head = await h.head(path, headers)
  assert.equal(head.status, get.status, `HEAD status for ${path}`)
  assert.deepEqual(stableHeaders(head.headers), stableHeaders(get.headers), `HEAD headers for ${path}`)
  assert.equal(head.body.length, 0)
  return get
}

describe('registry handler: probes', () => {
  let h: Harness
  const router = new MemoryRouter({}, { id: 'self', registryAddress: '127.0.0.1:5000' })
  let extra = { isReady: true } as { isReady: boolean, reason?: string }
  before(async () => { h = await harness({ basicAuth: { username: 'foo', password: 'bar' }, isReady: () => extra }, { router }) })
  after(async () => { await h.close() })

  it('livez is 200 ok for GET and HEAD, without credentials', async () => {
    const res = await getAndHead(h, '/livez')
    assert.equal(res.status, 200)
    assert.equal(res.body.toString(), 'ok')
    assert.equal(res.headers['content-type'], 'text/plain; charset=utf-8')
  })

  it('readyz follows store, router and extra readiness with a reason', async () => {
    assert.equal((await getAndHead(h, '/readyz')).body.toString(), 'ok')

    h.store.setReadiness(false, 'containerd: connect ECONNREFUSED /run/containerd/containerd.sock')
    let res = await getAndHead(h, '/readyz')
    assert.equal(res.status, 503)
    assert.equal(res.headers['content-type'], 'text/plain; charset=utf-8')
    assert.equal(res.body.toString(), 'containerd: connect ECONNREFUSED /run/containerd/containerd.sock')

    h.store.setReadiness(true)
    router.setReadiness(false, 'routing table is empty')
    res = await getAndHead(h, '/readyz')
    assert.equal(res.status, 503)
    assert.equal(res.body.toString(), 'router: routing table is empty')

    router.setReadiness(true)
    extra = { isReady: false, reason: 'mirror configuration not written' }
    res = await h.get('/readyz')
    assert.equal(res.status, 503)
    assert.equal(res.body.toString(), 'mirror configuration not written')

    extra = { isReady: true }
    assert.equal((await h.get('/readyz')).status, 200)
  })

  it('refuses other methods on probes with 405 and Allow', async () => {
    const res = await request(h.port, '/readyz', { method: 'POST' })
    assert.equal(res.status, 405)
    assert.equal(res.headers.allow, 'GET, HEAD')
  })

  it('never logs probes but measures them', async () => {
    await h.get('/livez')
    await h.get('/v2/', { Authorization: 'Basic Zm9vOmJhcg==' })
    await h.capture.find((l) => l.path === '/v2/')
    assert.equal(h.capture.lines.some((l) => l.path === '/readyz' || l.path === '/livez'), false)
    await eventually(async () => {
      const text = await h.metrics.registry.metrics()
      assert.match(text, /^http_request_duration_seconds_count\{handler="\/readyz",method="GET",code="503"\} [1-9]\d*$/m)
      assert.match(text, /^http_request_duration_seconds_count\{handler="\/livez",method="HEAD",code="200"\} [1-9]\d*$/m)
    })
  })
})

describe('registry handler: routes', () => {
  let h: Harness
  before(async () => { h = await harness() })
  after(async () => { await h.close() })

  it('answers /v2 and /v2/ with {} and the API version header', async () => {
    for (const path of ['/v2', '/v2/']) {
      const res = await getAndHead(h, path)
      assert.equal(res.status, 200)
      assert.equal(res.body.toString(), '{}')
      assert.equal(res.headers['content-type'], 'application/json')
      assert.equal(res.headers['content-length'], '2')
      assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0')
    }
  })

  it('answers unknown paths outside /v2 with an empty 404', async () => {
    for (const path of ['/', '/healthz', '/v2x', '/v3/foo/blobs/x']) {
      const res = await getAndHead(h, path)
      assert.equal(res.status, 404, path)
      assert.equal(res.headers['content-length'], '0')
    }
  })

  it('serves a manifest by tag with ns', async () => {
    const res = await getAndHead(h, '/v2/library/test/manifests/1.0?ns=docker.io', { Accept: MEDIA_TYPE_OCI_INDEX })
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], MEDIA_TYPE_OCI_INDEX)
    assert.equal(res.headers['content-length'], String(h.index.sizeBytes))
    assert.equal(res.headers['docker-content-digest'], h.index.digest)
    assert.equal(res.headers['oci-namespace'], 'docker.io')
    assert.equal(res.headers['accept-ranges'], undefined)
    assert.equal(sha256(res.body), h.index.digest)
  })

  it('serves a manifest by tag on a registry with a port', async () => {
    const res = await getAndHead(h, '/v2/foo/bar/manifests/v1?ns=example.com:5000')
    assert.equal(res.status, 200)
    assert.equal(res.headers['docker-content-digest'], h.manifest.digest)
    assert.equal(res.headers['oci-namespace'], 'example.com:5000')
  })

  it('answers a repeated target from its own parse: another ns is another request, an invalid one fails every time', async () => {
    // Parsed targets are kept by raw target; these would go wrong if the key dropped the query
    // or a failure were kept as a success.
    for (let i = 0; i < 3; i++) {
      const withNs = await getAndHead(h, '/v2/library/test/manifests/1.0?ns=docker.io')
      assert.equal(withNs.status, 200)
      assert.equal(withNs.headers['oci-namespace'], 'docker.io')
      const otherNs = await getAndHead(h, '/v2/library/test/manifests/1.0?ns=example.com')
      assert.equal(otherNs.status, 404)
      const noNs = await getAndHead(h, '/v2/library/test/manifests/1.0')
      assert.equal(noNs.status, 400)
      assert.equal(ociError(noNs).code, 'NAME_INVALID')
    }
    const long = `/v2/library/test/manifests/1.0?ns=docker.io&pad=${'x'.repeat(600)}`
    for (let i = 0; i < 2; i++) assert.equal((await getAndHead(h, long)).status, 200)
  })

  it('rejects a tag without ns as OCI JSON', async () => {
    const res = await getAndHead(h, '/v2/library/test/manifests/1.0')
    assert.equal(res.status, 400)
    assert.equal(ociError(res).code, 'NAME_INVALID')
  })

  it('serves a manifest by digest without ns and without OCI-Namespace', async () => {
    const res = await getAndHead(h, `/v2/library/test/manifests/${h.manifest.digest}`)
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], MEDIA_TYPE_OCI_MANIFEST)
    assert.equal(res.headers['oci-namespace'], undefined)
    assert.equal(sha256(res.body), h.manifest.digest)
  })

  it('ignores Range on manifests', async () => {
    const res = await getAndHead(h, `/v2/library/test/manifests/${h.manifest.digest}?ns=docker.io`, { Range: 'bytes=0-9' })
    assert.equal(res.status, 200)
    assert.equal(res.body.length, h.manifest.sizeBytes)
    assert.equal(res.headers['content-range'], undefined)
  })

  it('serves a whole blob with its headers', async () => {
    const res = await getAndHead(h, `/v2/library/test/blobs/${h.blob.digest}?ns=docker.io`)
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], 'application/octet-stream')
    assert.equal(res.headers['content-length'], '2048')
    assert.equal(res.headers['docker-content-digest'], h.blob.digest)
    assert.equal(res.headers['accept-ranges'], 'bytes')
    assert.equal(res.headers['oci-namespace'], 'docker.io')
    assert.ok(res.body.equals(BLOB_2048))
  })

  it('serves a config blob with its media type', async () => {
    const res = await getAndHead(h, `/v2/library/test/blobs/${h.config.digest}`)
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], MEDIA_TYPE_OCI_CONFIG)
    assert.equal(res.body.toString(), CONFIG)
  })

  it('serves an empty blob', async () => {
    const res = await getAndHead(h, `/v2/library/test/blobs/${h.empty.digest}`)
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-length'], '0')
    assert.equal(res.body.length, 0)
  })

  it('serves a large blob streamed, intact', async () => {
    const res = await h.get(`/v2/library/test/blobs/${h.big.digest}`)
    assert.equal(res.status, 200)
    assert.equal(res.body.length, BIG_BYTES)
    assert.equal(sha256(res.body), h.big.digest)
  })

  // The Range cases of the OCI distribution-spec conformance suite (which needs push to run
  // them), on a 2048-byte blob.
  for (const [range, start, end] of [
    ['bytes=500-1499', 500, 1499],
    ['bytes=500-', 500, 2047],
    ['bytes=-500', 1548, 2047],
    ['bytes=2000-5000', 2000, 2047],
    ['bytes=0-0', 0, 0],
    ['bytes=2047-2047', 2047, 2047],
    ['bytes=-5000', 0, 2047]
  ] as const) {
    it(`answers ${range} with 206 ${start}-${end}/2048`, async () => {
      const res = await getAndHead(h, `/v2/library/test/blobs/${h.blob.digest}?ns=docker.io`, { Range: range })
      assert.equal(res.status, 206)
      assert.equal(res.headers['content-range'], `bytes ${start}-${end}/2048`)
      assert.equal(res.headers['content-length'], String(end - start + 1))
      assert.equal(res.headers['content-type'], 'application/octet-stream')
      assert.equal(res.headers['accept-ranges'], 'bytes')
      assert.equal(res.headers['docker-content-digest'], h.blob.digest)
      assert.ok(res.body.equals(BLOB_2048.subarray(start, end + 1)))
    })
  }

  // The vectors of Spegel's pkg/httpx/range_test.go, on a 1000-byte blob.
  for (const [range, start, end] of [
    ['bytes=0-0', 0, 0], ['bytes=0-9', 0, 9], ['bytes=500-', 500, 999], ['bytes=-500', 500, 999],
    ['bytes=-1000', 0, 999], ['bytes=900-1500', 900, 999], ['bytes=-1', 999, 999], ['bytes=0-', 0, 999]
  ] as const) {
    it(`answers ${range} with 206 ${start}-${end}/1000`, async () => {
      const res = await h.get(`/v2/library/test/blobs/${h.blob1000.digest}`, { Range: range })
      assert.equal(res.status, 206)
      assert.equal(res.headers['content-range'], `bytes ${start}-${end}/1000`)
      assert.ok(res.body.equals(BLOB_1000.subarray(start, end + 1)))
    })
  }

  for (const [range, size] of [
    ['bytes=500-0', 2048], ['bytes=5000-10000', 2048], ['bytes=2048-', 2048], ['bytes=abc', 2048],
    ['bytes=0-1,4-5', 2048], ['bytes=-0', 2048], ['bytes=-', 2048], ['bytes= 1-2x', 2048]
  ] as const) {
    it(`answers ${range} with 416 and Content-Range bytes */${size}`, async () => {
      const res = await getAndHead(h, `/v2/library/test/blobs/${h.blob.digest}`, { Range: range })
      assert.equal(res.status, 416)
      assert.equal(res.headers['content-range'], `bytes */${size}`)
      assert.equal(ociError(res).code, 'UNSUPPORTED')
    })
  }

  it('answers any range on an empty blob with 416 */0', async () => {
    const res = await h.get(`/v2/library/test/blobs/${h.empty.digest}`, { Range: 'bytes=0-' })
    assert.equal(res.status, 416)
    assert.equal(res.headers['content-range'], 'bytes */0')
  })

  it('ignores a Range in another unit', async () => {
    const res = await h.get(`/v2/library/test/blobs/${h.blob.digest}`, { Range: 'items=0-1' })
    assert.equal(res.status, 200)
    assert.equal(res.body.length, 2048)
  })

  it('refuses a manifest on /blobs/ and a blob on /manifests/', async () => {
    let res = await getAndHead(h, `/v2/library/test/blobs/${h.manifest.digest}`)
    assert.equal(res.status, 404)
    assert.equal(ociError(res).code, 'BLOB_UNKNOWN')
    res = await getAndHead(h, `/v2/library/test/manifests/${h.blob.digest}`)
    assert.equal(res.status, 404)
    assert.equal(ociError(res).code, 'MANIFEST_UNKNOWN')
    res = await getAndHead(h, `/v2/library/test/manifests/${h.config.digest}`)
    assert.equal(ociError(res).code, 'MANIFEST_UNKNOWN')
  })

  it('answers missing content with the kind code and exact body', async () => {
    let res = await getAndHead(h, `/v2/library/test/blobs/${h.absent}?ns=docker.io`)
    assert.equal(res.status, 404)
    const body = `{"errors":[{"code":"BLOB_UNKNOWN","message":"could not find ${h.absent} on this node"}]}`
    assert.equal(res.body.toString(), body)
    assert.equal(res.headers['content-length'], String(body.length))
    res = await getAndHead(h, '/v2/library/test/manifests/2.0?ns=docker.io')
    assert.equal(res.status, 404)
    assert.deepEqual(ociError(res), { code: 'MANIFEST_UNKNOWN', message: 'could not find docker.io/library/test:2.0 on this node' })
  })

  it('rejects bad digests with DIGEST_INVALID', async () => {
    for (const [ref, message] of [
      ['sha256:123', 'invalid checksum digest length'],
      [`md5:${'a'.repeat(32)}`, 'unsupported digest algorithm'],
      ['v0.0.1', 'invalid checksum digest format'],
      [`sha256:${'A'.repeat(64)}`, 'invalid checksum digest format']
    ] as const) {
      const res = await getAndHead(h, `/v2/spegel-org/spegel/blobs/${ref}`)
      assert.equal(res.status, 400, ref)
      assert.deepEqual(ociError(res), { code: 'DIGEST_INVALID', message })
    }
    const res = await h.get(`/v2/library/test/manifests/md5:${'a'.repeat(32)}`)
    assert.equal(ociError(res).code, 'DIGEST_INVALID')
  })

  it('answers unsupported endpoints and unparsable paths with OCI JSON 404', async () => {
    for (const path of ['/v2/_catalog', '/v2/foo/tags/list', `/v2/foo/referrers/${sha256('x')}`, '/v2/foo/blobs/uploads/', `/v2/foo/bar/invalid/${sha256('x')}`]) {
      const res = await getAndHead(h, path)
      assert.equal(res.status, 404, path)
      assert.ok(['UNSUPPORTED', 'NAME_UNKNOWN'].includes(ociError(res).code), path)
    }
  })

  it('rejects path traversal without normalising it (raw socket)', async () => {
    const digest = h.blob.digest
    for (const target of [
      `/v2/../../etc/passwd/blobs/${digest}`,
      '/v2/foo/blobs/sha256:..%2f..',
      '/v2/foo/blobs/../../x',
      `/v2/foo/../library/test/blobs/${digest}`,
      `/v2/foo%2f..%2flibrary/test/blobs/${digest}`,
      `/v2/./library/test/blobs/${digest}`,
      `/v2//library/test/blobs/${digest}`
    ]) {
      const res = await rawRequest(h.port, 'GET', target)
      assert.ok(res.status >= 400 && res.status < 500, `${target} gave ${res.status}`)
      const err = ociError(res)
      assert.ok(['NAME_INVALID', 'DIGEST_INVALID', 'NAME_UNKNOWN'].includes(err.code), `${target}: ${err.code}`)
    }
    // Outside /v2 a traversal is just an unknown path, never a /v2 route.
    const res = await rawRequest(h.port, 'GET', `/x/../v2/library/test/blobs/${digest}`)
    assert.equal(res.status, 404)
    assert.equal(res.body.length, 0)
  })

  it('refuses methods other than GET and HEAD with 405 and Allow', async () => {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
      for (const path of [`/v2/library/test/blobs/${h.blob.digest}`, '/v2/', '/v2/library/test/blobs/uploads/']) {
        const res = await request(h.port, path, { method })
        assert.equal(res.status, 405, `${method} ${path}`)
        assert.equal(res.headers.allow, 'GET, HEAD')
        assert.equal(ociError(res).code, 'UNSUPPORTED')
      }
    }
    assert.equal((await h.capture.find((l) => l.method === 'DELETE' && l.status === 405)).level, 'WARN')
  })

  it('ignores credentials when no basic auth is configured', async () => {
    assert.equal((await h.get('/v2/', { Authorization: 'Basic Zm9vOmJhcg==' })).status, 200)
    assert.equal((await h.get('/v2/', { Authorization: 'Bearer x' })).status, 200)
  })

  it('logs requests once with digest and registry fields', async () => {
    await h.get(`/v2/library/test/blobs/${h.blob1000.digest}?ns=docker.io`, { 'X-Forwarded-For': '10.9.8.7' })
    const line = await h.capture.find((l) => l.digest === h.blob1000.digest && l.ip === '10.9.8.7')
    assert.equal(line.level, 'DEBUG')
    assert.equal(line.registry, 'docker.io')
    assert.equal(line.handler, '/v2/*')
    assert.equal(line.component, 'registry')
    assert.equal(line.bytes, 1000)
    assert.equal(h.capture.lines.filter((l) => l.ip === '10.9.8.7').length, 1)
  })

  it('labels HTTP metrics with /v2/* and counts response bytes', async () => {
    const before = await h.metrics.httpResponseSizeBytes.get()
    const sumBefore = before.values.find((v) => v.metricName === 'http_response_size_bytes_sum' && v.labels.code === '206' && v.labels.method === 'GET' && v.labels.handler === '/v2/*')?.value ?? 0
    await h.get(`/v2/library/test/blobs/${h.blob.digest}`, { Range: 'bytes=0-99' })
    await eventually(async () => {
      const after = await h.metrics.httpResponseSizeBytes.get()
      const sum = after.values.find((v) => v.metricName === 'http_response_size_bytes_sum' && v.labels.code === '206' && v.labels.method === 'GET' && v.labels.handler === '/v2/*')
      assert.equal((sum?.value ?? 0) - sumBefore, 100)
    })
    const text = await h.metrics.registry.metrics()
    assert.match(text, /^http_requests_inflight\{handler="\/v2\/\*"\} 0$/m)
    assert.doesNotMatch(text, /handler="\/v2\/library/)
    assert.doesNotMatch(text, /spegel_mirror_requests_total\{/)
  })
})

describe('registry handler: filters', () => {
  let h: Harness
  before(async () => {
    const allow = registryAllowList(['https://docker.io'])
    assert.ok(allow !== undefined)
    h = await harness({ filters: [allow, regexFilter(':latest$')] })
  })
  after(async () => { await h.close() })

  it('filters a latest tag as MANIFEST_UNKNOWN even though it is local', async () => {
    const res = await getAndHead(h, '/v2/library/test/manifests/latest?ns=docker.io')
    assert.equal(res.status, 404)
    assert.deepEqual(ociError(res), { code: 'MANIFEST_UNKNOWN', message: 'filtered by registry filters' })
    assert.equal((await h.get('/v2/library/test/manifests/1.0?ns=docker.io')).status, 200)
  })

  it('filters registries outside the allow list, and digests without ns', async () => {
    let res = await getAndHead(h, '/v2/foo/bar/manifests/v1?ns=example.com:5000')
    assert.deepEqual(ociError(res), { code: 'MANIFEST_UNKNOWN', message: 'filtered by registry filters' })
    res = await getAndHead(h, `/v2/library/test/blobs/${h.blob.digest}`)
    assert.deepEqual(ociError(res), { code: 'BLOB_UNKNOWN', message: 'filtered by registry filters' })
    assert.equal((await h.get(`/v2/library/test/blobs/${h.blob.digest}?ns=docker.io`)).status, 200)
  })
})

describe('registry handler: basic auth', () => {
  // Spegel's TestBasicAuth cases (pkg/registry/registry_test.go) and its 401 body, byte for byte.
  const UNAUTHORIZED = '{"errors":[{"code":"UNAUTHORIZED","message":"invalid credentials"}]}'
  let h: Harness
  let userOnly: Harness
  before(async () => {
    h = await harness({ basicAuth: { username: 'foo', password: 'bar' } })
    userOnly = await harness({ basicAuth: { username: 'foo', password: '' } })
  })
  after(async () => { await h.close(); await userOnly.close() })

  it('accepts the right credentials', async () => {
    assert.equal((await getAndHead(h, '/v2/', { Authorization: 'Basic Zm9vOmJhcg==' })).status, 200)
    assert.equal((await h.get('/v2/', { Authorization: 'basic Zm9vOmJhcg==' })).status, 200)
    assert.equal((await h.get(`/v2/library/test/blobs/${h.blob.digest}`, { Authorization: 'Basic Zm9vOmJhcg==' })).status, 200)
  })

  for (const [name, header] of [
    ['missing', undefined],
    ['wrong user', `Basic ${Buffer.from('hello:bar').toString('base64')}`],
    ['wrong password', `Basic ${Buffer.from('foo:world').toString('base64')}`],
    ['hello/world', 'Basic aGVsbG86d29ybGQ='],
    ['username only', 'Basic Zm9vOg=='],
    ['no colon', `Basic ${Buffer.from('foobar').toString('base64')}`],
    ['password prefix', `Basic ${Buffer.from('foo:ba').toString('base64')}`],
    ['bearer', 'Bearer Zm9vOmJhcg=='],
    ['not base64', 'Basic Zm9vOmJhcg==!']
  ] as const) {
    it(`refuses ${name} with 401 UNAUTHORIZED`, async () => {
      const res = await getAndHead(h, '/v2/', header === undefined ? {} : { Authorization: header })
      assert.equal(res.status, 401)
      assert.equal(res.body.toString(), UNAUTHORIZED)
      assert.equal(res.headers['content-type'], 'application/json')
      assert.equal(res.headers['www-authenticate'], undefined)
    })
  }

  it('checks credentials before the method and the path', async () => {
    assert.equal((await request(h.port, '/v2/foo/blobs/x', { method: 'DELETE' })).status, 401)
    assert.equal((await h.get('/v2/foo/blobs/x')).status, 401)
  })

  it('accepts username-only credentials (Basic Zm9vOg==)', async () => {
    assert.equal((await userOnly.get('/v2/', { Authorization: 'Basic Zm9vOg==' })).status, 200)
    assert.equal((await userOnly.get('/v2/', { Authorization: 'Basic Zm9vOmJhcg==' })).status, 401)
  })

  it('logs a 401 at warn', async () => {
    await h.get('/v2/', { 'X-Forwarded-For': '10.4.4.4' })
    assert.equal((await h.capture.find((l) => l.ip === '10.4.4.4')).level, 'WARN')
  })
})

describe('registry handler: mirror seam', () => {
  const calls: DistributionRequest[] = []
  let answer = false
  let h: Harness
  before(async () => {
    h = await harness({
      mirror: {
        fetch: async (request: DistributionRequest, options: MirrorFetchOptions): Promise<MirroredContent> => {
          assert.equal(options.signal.aborted, false)
          calls.push(request)
          if (!answer) throw new OciError(request.kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `could not find ${request.key} on this node`)
          const body = Buffer.from('mirror')
          return {
            descriptor: { digest: `sha256:${createHash('sha256').update(body).digest('hex')}`, sizeBytes: body.length, mediaType: MEDIA_TYPE_OCI_MANIFEST },
            peer: { id: 'peer-1', registryAddress: '127.0.0.1:1' },
            ...(options.method === 'HEAD' ? {} : { body })
          }
        }
      }
    })
  })
  after(async () => { await h.close() })

  const mirrorCount = async (cache: string): Promise<number> => {
    const m = await h.metrics.mirrorRequests.get()
    return m.values.filter((v) => v.labels.cache === cache).reduce((n, v) => n + v.value, 0)
  }

  it('asks the mirror for content that is not local, then answers 404', async () => {
    const res = await h.get(`/v2/library/test/blobs/${h.absent}?ns=docker.io`)
    assert.equal(res.status, 404)
    assert.deepEqual(ociError(res), { code: 'BLOB_UNKNOWN', message: `could not find ${h.absent} on this node` })
    assert.equal(calls.length, 1)
    assert.deepEqual(calls[0], { kind: 'blob', repository: 'library/test', registry: 'docker.io', digest: h.absent, key: h.absent })
    assert.equal(await mirrorCount('miss'), 1)
    assert.match(await h.metrics.registry.metrics(), /^spegel_mirror_requests_total\{registry="docker.io",cache="miss"\} 1$/m)
  })

  it('lets the mirror answer and counts a hit', async () => {
    answer = true
    try {
      const res = await h.get('/v2/library/test/manifests/9.9?ns=docker.io')
      assert.equal(res.status, 200)
      assert.equal(res.body.toString(), 'mirror')
      assert.equal(calls.at(-1)?.key, 'docker.io/library/test:9.9')
      assert.equal(await mirrorCount('hit'), 1)
      const ts = (await h.metrics.mirrorLastSuccessTimestampSeconds.get()).values[0]?.value ?? 0
      assert.ok(ts > 0)
    } finally {
      answer = false
    }
  })

  it('never asks the mirror for requests from peers (X-Spegel-Mirrored: true)', async () => {
    const before = calls.length
    answer = true
    try {
      const res = await getAndHead(h, `/v2/library/test/blobs/${h.absent}`, { 'X-Spegel-Mirrored': 'true' })
      assert.equal(res.status, 404)
      assert.equal(ociError(res).code, 'BLOB_UNKNOWN')
      assert.equal(calls.length, before)
      // Local content is still served to peers.
      assert.equal((await h.get(`/v2/library/test/blobs/${h.blob.digest}`, { 'X-Spegel-Mirrored': 'true' })).status, 200)
    } finally {
      answer = false
    }
  })

  it('does not ask the mirror for local content, filtered or unparsable requests', async () => {
    const before = calls.length
    await h.get(`/v2/library/test/blobs/${h.blob.digest}`)
    await h.get('/v2/library/test/manifests/1.0?ns=docker.io')
    await h.get('/v2/library/test/manifests/sha256:bad')
    await h.get(`/v2/library/test/manifests/${h.blob.digest}`)
    assert.equal(calls.length, before)
  })

  it('answers 404 at once when the store is unavailable, without the mirror', async () => {
    const before = calls.length
    h.store.setReadiness(false, 'containerd: connect ECONNREFUSED /run/containerd/containerd.sock')
    try {
      let res = await getAndHead(h, `/v2/library/test/blobs/${h.blob.digest}`)
      assert.equal(res.status, 404)
      assert.deepEqual(ociError(res), {
        code: 'BLOB_UNKNOWN',
        message: 'containerd unavailable: containerd: connect ECONNREFUSED /run/containerd/containerd.sock'
      })
      res = await h.get('/v2/library/test/manifests/1.0?ns=docker.io')
      assert.equal(ociError(res).code, 'MANIFEST_UNKNOWN')
      assert.equal(calls.length, before)
    } finally {
      h.store.setReadiness(true)
    }
  })
})

/** A MemoryStore whose behaviour for chosen digests is replaced, to reach failure paths. */
class FaultyStore extends MemoryStore {
  readonly opened: Readable[] = []
  statFault = new Map<string, Error>()
  openFault = new Map<string, () => Readable>()
  removeAfterStat = new Set<string>()

  stats = 0

  override async stat (digest: string, options?: { signal?: AbortSignal }): Promise<Descriptor> {
    this.stats++
    const fault = this.statFault.get(digest)
    if (fault !== undefined) throw fault
    const descriptor = await super.stat(digest, options)
    if (this.removeAfterStat.delete(digest)) this.remove(digest)
    return descriptor
  }

  override async open (digest: string, options?: OpenOptions): Promise<Readable> {
    const fault = this.openFault.get(digest)
    const stream = fault !== undefined ? fault() : await super.open(digest, options)
    this.opened.push(stream)
    return stream
  }
}

describe('registry handler: failures', () => {
  const store = new FaultyStore({ name: 'containerd' })
  let h: Harness
  before(async () => { h = await harness({}, { store }) })
  after(async () => { await h.close() })

  it('answers a HEAD of content looked up in the last second without the store, until the store changes', async () => {
    const path = `/v2/library/test/blobs/${h.blob.digest}`
    const first = await h.head(path, { Range: 'bytes=10-19' })
    const stats = store.stats
    const again = await h.head(path, { Range: 'bytes=10-19' })
    assert.equal(store.stats, stats, 'the second HEAD asked the store')
    assert.equal(again.status, 206)
    assert.deepEqual(stableHeaders(again.headers), stableHeaders(first.headers))
    // A cached descriptor still goes through the same checks: a blob is no manifest, a bad range is 416.
    assert.equal((await h.head(`/v2/library/test/manifests/${h.blob.digest}`)).status, 404)
    const bad = await h.head(path, { Range: 'bytes=5000-' })
    assert.equal(bad.status, 416)
    assert.equal(bad.headers['content-range'], 'bytes */2048')
    // Removed content is seen at once: the store's change clears what was looked up.
    const gone = store.put('gone soon')
    await h.head(`/v2/library/test/blobs/${gone.digest}`)
    store.remove(gone.digest)
    assert.equal((await h.head(`/v2/library/test/blobs/${gone.digest}`)).status, 404)
  })

  it('answers that HEAD before its handler returns (no promise on the way), and a first HEAD after', async () => {
    const capture = new LogCapture()
    const handler = createRegistryHandler(
      { store, router: new LocalOnlyRouter(), metrics: createMetrics(new Registry(), { collectDefault: false }), log: capture.log },
      { filters: [] }
    )
    const answeredInside: boolean[] = []
    const srv = await startTestServer((req, res) => {
      handler(req, res)
      answeredInside.push(res.headersSent)
    }, capture.log)
    try {
      const path = `/v2/library/test/manifests/${h.manifest.digest}`
      const first = await request(srv.port, path, { method: 'HEAD' })
      const second = await request(srv.port, path, { method: 'HEAD' })
      assert.deepEqual([first.status, second.status], [200, 200])
      assert.equal(second.headers['content-length'], String(h.manifest.sizeBytes))
      assert.deepEqual(answeredInside, [false, true])
    } finally {
      await srv.close()
    }
  })

  it('answers an unexpected store error with 500 and logs it at error', async () => {
    const digest = h.blob1000.digest
    store.statFault.set(digest, new Error('grpc exploded'))
    const res = await getAndHead(h, `/v2/library/test/blobs/${digest}`, { 'X-Forwarded-For': '10.5.5.5' })
    assert.equal(res.status, 500)
    assert.equal(ociError(res).message, 'internal server error')
    const line = await h.capture.find((l) => l.ip === '10.5.5.5')
    assert.equal(line.level, 'ERROR')
    assert.match(JSON.stringify(line.err), /grpc exploded/)
    store.statFault.delete(digest)
  })

  it('destroys the response when the stream fails after the headers', async () => {
    store.openFault.set(h.blob.digest, () => Readable.from((async function * () {
      yield Buffer.alloc(100, 1)
      throw new Error('read failed midway')
    })(), { objectMode: false }))
    await assert.rejects(h.get(`/v2/library/test/blobs/${h.blob.digest}`, { 'X-Forwarded-For': '10.6.6.6' }), /aborted|ECONNRESET|socket hang up/)
    const line = await h.capture.find((l) => l.ip === '10.6.6.6')
    assert.equal(line.level, 'ERROR')
    assert.equal(line.status, 200)
    assert.equal(line.aborted, true)
    assert.match(JSON.stringify(line.err), /read failed midway/)
    store.openFault.delete(h.blob.digest)
  })

  it('answers 500 when a manifest does not match its digest', async () => {
    store.openFault.set(h.manifest.digest, () => Readable.from([Buffer.alloc(h.manifest.sizeBytes, 0x20)]))
    const res = await h.get(`/v2/library/test/manifests/${h.manifest.digest}`)
    assert.equal(res.status, 500)
    store.openFault.delete(h.manifest.digest)
    assert.equal((await h.get(`/v2/library/test/manifests/${h.manifest.digest}`)).status, 200)
  })

  it('survives a client that hangs up mid-stream and releases the store stream', async () => {
    const opened = store.opened.length
    const socket = connect(h.port, '127.0.0.1')
    await once(socket, 'connect')
    socket.write(`GET /v2/library/test/blobs/${h.big.digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 10.7.7.7\r\n\r\n`)
    let received = 0
    for await (const chunk of socket) {
      received += (chunk as Buffer).length
      if (received > 256 * 1024) break
    }
    socket.destroy()
    assert.ok(received < BIG_BYTES)

    const line = await h.capture.find((l) => l.ip === '10.7.7.7')
    assert.equal(line.level, 'DEBUG')
    assert.equal(line.aborted, true)
    assert.equal(line.err, undefined)
    const stream = store.opened[opened]
    assert.ok(stream !== undefined)
    if (!stream.destroyed) await once(stream, 'close')
    assert.equal(stream.destroyed, true)

    await eventually(async () => {
      assert.match(await h.metrics.registry.metrics(), /^http_requests_inflight\{handler="\/v2\/\*"\} 0$/m)
    })
    const res = await h.get(`/v2/library/test/blobs/${h.big.digest}`)
    assert.equal(sha256(res.body), h.big.digest)
  })

  it('answers 404 when content vanishes between stat and open', async () => {
    const gone = h.store.put('short-lived')
    store.removeAfterStat.add(gone.digest)
    const res = await h.get(`/v2/library/test/blobs/${gone.digest}`)
    assert.equal(res.status, 404)
    assert.deepEqual(ociError(res), { code: 'BLOB_UNKNOWN', message: `could not find ${gone.digest} on this node` })
  })
})
