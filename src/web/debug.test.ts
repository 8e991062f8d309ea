import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { Registry } from 'prom-client'
import { createMux } from '../http/mux.js'
import { LogCapture, request, startTestServer, type TestServer } from '../http/test-helpers.js'
import { MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST } from '../oci/index.js'
import { createMetrics } from '../observability/metrics.js'
import { createRegistryHandler } from '../registry/handler.js'
import { RecentRequests } from '../registry/recent-requests.js'
import { LocalOnlyRouter, MemoryRouter, MemoryRouterNetwork } from '../routing/memory-router.js'
import { MemoryStore } from '../store/memory-store.js'
import { createDebugRoutes, type DebugComponents } from './debug.js'
import type { MeasureResult, NodeStatus } from './status-types.js'
import { buildStatus, containerdChecks, type ContainerdView } from './status.js'

const LAYER = Buffer.alloc(300_000, 9)

function imageStore (): { store: MemoryStore, index: string, manifest: string, config: string, layer: string } {
  const store = new MemoryStore({ name: 'containerd' })
  const layer = store.put(LAYER, 'application/vnd.oci.image.layer.v1.tar')
  const config = store.put('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}', MEDIA_TYPE_OCI_CONFIG)
  const manifest = store.put(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_MANIFEST,
    config: { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: config.digest, size: config.sizeBytes },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer.digest, size: layer.sizeBytes }]
  }), MEDIA_TYPE_OCI_MANIFEST)
  const arch = process.arch === 'x64' ? 'amd64' : process.arch
  const index = store.put(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_INDEX,
    manifests: [
      { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: manifest.digest, size: manifest.sizeBytes, platform: { os: 'linux', architecture: arch } }
    ]
  }), MEDIA_TYPE_OCI_INDEX)
  store.tag('example.test/team/app:1.0', index.digest)
  return { store, index: index.digest, manifest: manifest.digest, config: config.digest, layer: layer.digest }
}

const CONTAINERD: ContainerdView = {
  state: 'connected',
  socketPath: '/run/containerd/containerd.sock',
  namespace: 'k8s.io',
  version: '1.7.0',
  sinceMs: 1,
  contentDirectory: '/var/lib/containerd/io.containerd.content.v1.content',
  configuredContentPath: '/var/lib/containerd/io.containerd.content.v1.content'
}

describe('debug web: routes', () => {
  const capture = new LogCapture()
  const fixture = imageStore()
  const recent = new RecentRequests(50)
  const network = new MemoryRouterNetwork()
  const router = new MemoryRouter({ network }, { id: 'self', registryAddress: '127.0.0.1:1' })
  network.add(fixture.index, { id: 'peer-1', registryAddress: '10.0.0.2:5000' })
  let registry: TestServer
  let web: TestServer
  let registryUrl: string | undefined

  before(async () => {
    const metrics = createMetrics(new Registry(), { collectDefault: false })
    registry = await startTestServer(createRegistryHandler({ store: fixture.store, router: new LocalOnlyRouter(), metrics, log: capture.log }, { filters: [], recentRequests: recent }), capture.log)
    registryUrl = `http://127.0.0.1:${registry.port}`
    const components: DebugComponents = {
      log: capture.log,
      debugStatus: () => ({ store: { isReady: true } }),
      status: () => buildStatus({
        readiness: () => ({ isReady: true }),
        containerd: () => CONTAINERD,
        images: () => [{ name: 'example.test/team/app:1.0', registry: 'example.test', repository: 'team/app', tag: '1.0', digest: fixture.index, sizeBytes: LAYER.length, digests: [fixture.index] }],
        holders: (key) => network.get(key).length,
        router: () => ({ peerId: 'self', isReady: true, multiaddrs: ['/ip4/127.0.0.1/tcp/5001/p2p/self'], records: 1, keys: 1, ownKeys: 0, peers: [{ id: 'peer-1', registryAddress: '10.0.0.2:5000', addrs: ['/ip4/10.0.0.2/tcp/5001'], keyCount: 1, lastHeardMs: Date.now(), isAlive: true, isConnected: true }] }),
        recentRequests: (limit) => recent.list(limit),
        warnings: () => [{ id: 'no-router-psk', severity: 'warning', message: 'no key', fix: 'set one' }],
        lastMirrorSuccessMs: () => undefined
      }, { version: '9.9.9', startedAtMs: Date.now() - 5000, registryAddress: () => '127.0.0.1:5000', listen: { registry: ':5000', router: ':5001', metrics: ':9090' }, isRouterPskEnabled: false }),
      lookup: (key, options) => router.lookup(key, options),
      isLocal: (key) => fixture.store.keys().includes(key),
      peerId: () => 'self',
      measure: { registryUrl: () => registryUrl, recentRequests: (limit) => recent.list(limit) }
    }
    web = await startTestServer(createMux({ log: capture.log }, createDebugRoutes(components)), capture.log)
  })
  after(async () => {
    await web.close()
    await registry.close()
  })

  it('serves the page, its style and its script from the node, with a same-origin policy', async () => {
    for (const path of ['/debug/web/', '/debug/web', '/debug/web/anything']) {
      const res = await request(web.port, path)
      assert.equal(res.status, 200, path)
      assert.match(String(res.headers['content-type']), /^text\/html/)
      assert.match(res.body.toString(), /<title>spegel-ts<\/title>/)
      assert.match(String(res.headers['content-security-policy']), /default-src 'self'/)
    }
    const page = (await request(web.port, '/debug/web/')).body.toString()
    assert.doesNotMatch(page, /https?:\/\//, 'nothing is loaded from the internet')
    const css = await request(web.port, '/debug/web/assets/style.css')
    assert.equal(css.status, 200)
    assert.match(String(css.headers['content-type']), /^text\/css/)
    const js = await request(web.port, '/debug/web/assets/app.js')
    assert.equal(js.status, 200)
    assert.match(String(js.headers['content-type']), /^text\/javascript/)
    assert.match(js.body.toString(), /\/debug\/web\/api/)
    assert.doesNotMatch(js.body.toString(), /^\s*import /m, 'the script is one file with no imports to resolve')
    assert.equal((await request(web.port, '/debug/web/assets/nope.js')).status, 404)
  })

  it('answers Spegel\'s metadata and refuses writes', async () => {
    const res = await request(web.port, '/debug/web/metadata')
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], 'application/json')
    assert.deepEqual(JSON.parse(res.body.toString()), { libp2p: { id: 'self' } })
    assert.equal((await request(web.port, '/debug/web/api/status', { method: 'POST' })).status, 405)
  })

  it('gives the live status as JSON', async () => {
    const res = await request(web.port, '/debug/web/api/status')
    assert.equal(res.status, 200)
    const status = JSON.parse(res.body.toString()) as NodeStatus
    assert.equal(status.node.version, '9.9.9')
    assert.equal(status.node.isReady, true)
    assert.equal(status.node.peerId, 'self')
    assert.equal(status.containerd.state, 'connected')
    assert.deepEqual(status.containerd.checks.map((c) => c.status), ['ok', 'ok', 'ok'])
    assert.equal(status.peers.length, 1)
    assert.equal(status.images[0]?.peers, 1, 'peer-1 holds the image')
    assert.equal(status.warnings[0]?.id, 'no-router-psk')
  })

  it('measures a pull through the node: each item, its size, and that the local disk served it', async () => {
    const res = await request(web.port, `/debug/web/api/measure?image=${encodeURIComponent('example.test/team/app:1.0')}`)
    assert.equal(res.status, 200)
    const result = JSON.parse(res.body.toString()) as MeasureResult
    assert.equal(result.key, 'example.test/team/app:1.0')
    assert.equal(result.lookup.isLocal, true)
    assert.deepEqual(result.lookup.peers.map((p) => p.id), [], 'the index digest is held by a peer, the tag is not')
    assert.equal(result.error, undefined)
    assert.deepEqual(result.pull?.items.map((i) => i.digest), [fixture.index, fixture.manifest, fixture.config, fixture.layer])
    assert.equal(result.pull?.items[3]?.sizeBytes, LAYER.length)
    assert.deepEqual(result.pull?.items.map((i) => i.servedBy), ['local', 'local', 'local', 'local'])
    assert.equal(result.pull?.sizeBytes, result.pull?.items.reduce((n, i) => n + i.sizeBytes, 0))
  })

  it('looks up a digest among peers and reports no pull when no node holds it', async () => {
    const held = await request(web.port, `/debug/web/api/measure?image=${encodeURIComponent(`example.test/team/app@${fixture.index}`)}`)
    const heldResult = JSON.parse(held.body.toString()) as MeasureResult
    assert.deepEqual(heldResult.lookup.peers.map((p) => p.id), ['peer-1'])

    const res = await request(web.port, '/debug/web/api/measure?image=nginx')
    assert.equal(res.status, 200)
    const result = JSON.parse(res.body.toString()) as MeasureResult
    assert.equal(result.image, 'docker.io/library/nginx:latest', 'Docker defaults apply')
    assert.deepEqual(result.lookup.peers, [])
    assert.equal(result.pull, undefined)
  })

  it('answers 400 with a message for an empty or unparsable image', async () => {
    const empty = await request(web.port, '/debug/web/api/measure?image=')
    assert.equal(empty.status, 400)
    assert.deepEqual(JSON.parse(empty.body.toString()), { error: 'image name cannot be empty' })
    const bad = await request(web.port, `/debug/web/api/measure?image=${encodeURIComponent('Bad::ref')}`)
    assert.equal(bad.status, 400)
    assert.match((JSON.parse(bad.body.toString()) as { error: string }).error, /could not parse image Bad::ref/)
  })

  it('runs one measure at a time', async () => {
    // A registry that accepts and never answers holds the first measure open.
    const sockets = new Set<Socket>()
    const hanging = createNetServer((s) => { sockets.add(s); s.on('error', () => {}) })
    hanging.listen(0, '127.0.0.1')
    await once(hanging, 'listening')
    const saved = registryUrl
    registryUrl = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}`
    try {
      const first = request(web.port, `/debug/web/api/measure?image=${encodeURIComponent('example.test/team/app:1.0')}`)
      await waitUntil(() => sockets.size > 0)
      const second = await request(web.port, `/debug/web/api/measure?image=${encodeURIComponent('example.test/team/app:1.0')}`)
      assert.equal(second.status, 429)
      for (const s of sockets) s.destroy()
      const firstResult = JSON.parse((await first).body.toString()) as MeasureResult
      assert.ok(firstResult.error !== undefined, 'the broken pull is reported, not thrown')
    } finally {
      registryUrl = saved
      hanging.close()
    }
  })
})

describe('debug web: containerd checks', () => {
  it('names the failure and its fix when containerd is away', () => {
    const checks = containerdChecks({ ...CONTAINERD, state: 'unavailable', reason: 'containerd: connect ENOENT /x', problem: { id: 'socket-missing', message: 'socket /x does not exist', fix: 'mount the socket directory' } }, 0)
    assert.deepEqual(checks, [{ name: 'containerd API', status: 'fail', detail: 'socket /x does not exist', fix: 'mount the socket directory' }])
  })

  it('warns about the gRPC fallback and an empty namespace', () => {
    const view: ContainerdView = { state: 'connected', socketPath: CONTAINERD.socketPath, namespace: 'k8s.io', sinceMs: 1, configuredContentPath: '/nope' }
    const checks = containerdChecks(view, 0)
    assert.deepEqual(checks.map((c) => [c.name, c.status]), [['containerd API', 'ok'], ['content directory', 'warn'], ['images in namespace k8s.io', 'warn']])
    assert.match(checks[1]?.detail ?? '', /\/nope is not readable/)
  })
})

async function waitUntil (condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
