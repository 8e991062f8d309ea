// Property test of the real registry handler behind the real HTTP server: generated methods,
// paths (names, references, digests, `ns`) and Range headers, written byte for byte on a socket
// so that nothing normalises them. Whatever comes in: no 5xx, no crash, OCI error JSON for
// every 4xx under /v2, and Range answers that agree with the bytes served. A fixed seed and run
// count keep it deterministic.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import fc from 'fast-check'
import { Registry } from 'prom-client'
import { LogCapture, rawRequest, startTestServer, type TestResponse, type TestServer } from '../http/test-helpers.js'
import { MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, OCI_ERROR_STATUS } from '../oci/index.js'
import { createMetrics } from '../observability/metrics.js'
import { LocalOnlyRouter } from '../routing/memory-router.js'
import { MemoryStore } from '../store/memory-store.js'
import { createRegistryHandler } from './handler.js'

const SEED = 0x0c1
const RUNS = 600
const OCI_CODES = new Set(Object.keys(OCI_ERROR_STATUS))

interface Content { digest: string, bytes: Buffer, isManifest: boolean }

function sha256 (bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

/** The store's content, by digest, to check every byte served. */
function fill (store: MemoryStore): Map<string, Content> {
  const content = new Map<string, Content>()
  const put = (bytes: Buffer, mediaType?: string): string => {
    const d = store.put(bytes, mediaType)
    content.set(d.digest, { digest: d.digest, bytes, isManifest: mediaType === MEDIA_TYPE_OCI_MANIFEST || mediaType === MEDIA_TYPE_OCI_INDEX })
    return d.digest
  }
  const blob = put(Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 31 + 7) % 256)))
  put(Buffer.from(Array.from({ length: 1 }, () => 42)))
  put(Buffer.alloc(0))
  const config = put(Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'), MEDIA_TYPE_OCI_CONFIG)
  const manifest = put(Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_MANIFEST,
    config: { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: config, size: 10 },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: blob, size: 3000 }]
  })), MEDIA_TYPE_OCI_MANIFEST)
  store.tag('docker.io/library/app:1.0', manifest)
  store.tag('example.com:5000/team/app:v1', manifest)
  return content
}

describe('registry handler under generated requests (property)', () => {
  const store = new MemoryStore({ name: 'containerd' })
  const content = fill(store)
  const digests = [...content.keys(), sha256('absent'), `sha512:${'ab'.repeat(64)}`]
  const capture = new LogCapture()
  let srv: TestServer

  before(async () => {
    const handler = createRegistryHandler(
      { store, router: new LocalOnlyRouter(), metrics: createMetrics(new Registry(), { collectDefault: false }), log: capture.log },
      { filters: [] }
    )
    srv = await startTestServer(handler, capture.log)
  })
  after(async () => { await srv.close() })

  // Request-target characters the HTTP parser accepts (RFC 3986 pchar, '/', '?', '%'), so every
  // generated request reaches the handler instead of failing as malformed HTTP.
  const targetChar = fc.constantFrom(...'abcxyzABZ0189-._~!$&\'()*+,;=:@/%?')
  const name = fc.oneof(
    fc.constantFrom('library/app', 'team/app', 'app', 'docker.io/library/app', 'example.com:5000/team/app', 'a/manifests', 'blobs', 'A/b', '-a', 'a..b', '.', '..', 'a/../b', '%2e%2e/x', 'x%2fy', ''),
    fc.string({ unit: targetChar, maxLength: 30 }),
    fc.constant('a/'.repeat(140) + 'a')
  )
  const reference = fc.oneof(
    fc.constantFrom(...digests),
    fc.constantFrom('1.0', 'v1', 'latest', 'nope', 'sha256:', 'sha256:XYZ', `sha256:${'A'.repeat(64)}`, `md5:${'a'.repeat(32)}`, 'uploads', 'list', '_catalog'),
    fc.string({ unit: targetChar, maxLength: 20 })
  )
  const ns = fc.oneof(
    fc.constant(undefined),
    fc.constantFrom('docker.io', 'example.com:5000', 'example.com:99999', '[::1]:5000', '', 'ghcr.io', 'a+b', '%20', '%zz', 'docker.io%2f..', 'x'.repeat(300)),
    fc.string({ unit: targetChar, maxLength: 20 })
  )
  const validName = fc.constantFrom('library/app', 'team/app', 'app', 'docker.io/library/app', 'a/manifests')
  const validNs = fc.constantFrom(undefined, 'docker.io', 'example.com:5000')
  const target = fc.oneof(
    // Requests a client would really send, so that Range handling is exercised on real content.
    { weight: 4, arbitrary: fc.tuple(validName, fc.constantFrom(...digests), validNs).map(([n, d, q]) => `/v2/${n}/blobs/${d}${q === undefined ? '' : `?ns=${q}`}`) },
    { weight: 2, arbitrary: fc.tuple(validName, fc.constantFrom(...digests, '1.0', 'v1', 'latest'), validNs).map(([n, r, q]) => `/v2/${n}/manifests/${r}${q === undefined ? '' : `?ns=${q}`}`) },
    { weight: 4, arbitrary: fc.tuple(name, fc.constantFrom('manifests', 'blobs'), reference, ns).map(([n, k, r, q]) => `/v2/${n}/${k}/${r}${q === undefined ? '' : `?ns=${q}`}`) },
    { weight: 1, arbitrary: fc.string({ unit: targetChar, maxLength: 60 }).map((s) => `/v2/${s}`) },
    { weight: 1, arbitrary: fc.constantFrom('/v2', '/v2/', '/v2/_catalog', '/v2/app/tags/list', '/v2/app/blobs/uploads/', '/v2/app/referrers/x', '/v2//', '/v2/./x/manifests/1', '/readyz', '/livez', '/v3/x', '/') }
  )
  const offset = fc.oneof(fc.nat({ max: 3100 }).map(String), fc.constantFrom('', '0', '2999', '3000', '99999999999999999999'))
  const range = fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 3, arbitrary: fc.tuple(offset, offset).map(([a, b]) => `bytes=${a}-${b}`) },
    { weight: 3, arbitrary: fc.tuple(fc.nat({ max: 3100 }), fc.nat({ max: 3100 })).map(([a, b]) => `bytes=${Math.min(a, b)}-${Math.max(a, b)}`) },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom('bytes=-', 'bytes='), fc.nat({ max: 3100 })).map(([p, n]) => p === 'bytes=' ? `${p}${n}-` : `${p}${n}`) },
    { weight: 1, arbitrary: fc.constantFrom('bytes=0-0,5-9', 'items=0-1', 'bytes=-0', 'bytes=abc', 'bytes 0-1', 'bytes=', ' ', 'bytes=5-1') },
    { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...'bytes=0123456789-, '), maxLength: 20 }) }
  )
  const method = fc.oneof(
    { weight: 5, arbitrary: fc.constant('GET') },
    { weight: 3, arbitrary: fc.constant('HEAD') },
    { weight: 1, arbitrary: fc.constantFrom('POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS') }
  )

  it('never answers 5xx, and every answer is consistent with the request', async () => {
    await fc.assert(fc.asyncProperty(method, target, range, fc.boolean(), async (m, path, rangeHeader, isPeer) => {
      const headers: Record<string, string> = {}
      if (rangeHeader !== undefined) headers.Range = rangeHeader
      if (isPeer) headers['X-Spegel-Mirrored'] = 'true'
      const res = await rawRequest(srv.port, m, path, headers)
      const what = `${m} ${path} Range=${String(rangeHeader)}: ${res.status} ${res.body.toString('utf8').slice(0, 200)}`
      assert.ok(res.status >= 200 && res.status < 500, what)
      const pathname = path.split('?')[0] ?? ''
      if (res.status >= 400 && (pathname === '/v2' || pathname.startsWith('/v2/'))) {
        assertOciError(res, m, what)
      }
      if (m !== 'GET' && m !== 'HEAD') assert.ok(res.status === 405 || pathname === '/readyz' || pathname === '/livez' || !pathname.startsWith('/v2'), what)
      const served = [...content.values()].find((c) => pathname.endsWith(`/${c.digest}`))
      if (served !== undefined && pathname.includes('/blobs/')) assertBlobAnswer(res, m, served, what)
    }), { seed: SEED, numRuns: RUNS })
  })

  function assertOciError (res: TestResponse, m: string, what: string): void {
    assert.equal(res.headers['content-type'], 'application/json', what)
    if (m === 'HEAD') {
      assert.equal(res.body.length, 0, what)
      return
    }
    assert.equal(res.headers['content-length'], String(res.body.length), what)
    const body = JSON.parse(res.body.toString('utf8')) as { errors?: Array<{ code?: unknown, message?: unknown }> }
    assert.ok(Array.isArray(body.errors) && body.errors.length > 0, what)
    for (const e of body.errors) {
      assert.ok(typeof e.code === 'string' && OCI_CODES.has(e.code), what)
      assert.equal(typeof e.message, 'string', what)
    }
  }

  function assertBlobAnswer (res: TestResponse, m: string, served: Content, what: string): void {
    const size = served.bytes.length
    if (res.status === 206) {
      const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(res.headers['content-range']))
      assert.ok(match !== null, what)
      const [start, end, total] = match.slice(1).map(Number) as [number, number, number]
      assert.equal(total, size, what)
      assert.ok(start <= end && end < size, what)
      assert.equal(res.headers['content-length'], String(end - start + 1), what)
      if (m === 'GET') assert.ok(res.body.equals(served.bytes.subarray(start, end + 1)), `${what}: wrong bytes`)
    } else if (res.status === 416) {
      assert.equal(res.headers['content-range'], `bytes */${size}`, what)
    } else if (res.status === 200 && m === 'GET') {
      assert.ok(res.body.equals(served.bytes), `${what}: wrong bytes`)
    }
    if (res.status < 300) {
      assert.ok(!served.isManifest, `${what}: a manifest served as a blob`)
      assert.equal(res.headers['docker-content-digest'], served.digest, what)
    }
  }
})
