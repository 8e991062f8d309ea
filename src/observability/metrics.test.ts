import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import perfHooks from 'node:perf_hooks'
import { Registry, register as globalRegistry } from 'prom-client'
import { createMux } from '../http/mux.js'
import { LogCapture, request, startTestServer } from '../http/test-helpers.js'
import { CappedLabels, EVENT_LOOP_MONITORING_PRECISION_MS, RESPONSE_SIZE_BUCKETS, createMetrics, createMetricsHandler, type RouterMetricsSnapshot } from './metrics.js'

describe('createMetrics', () => {
  it('registers Spegel names on the given registry only, twice without collision', async () => {
    const before = (await globalRegistry.getMetricsAsJSON()).length
    const a = createMetrics(new Registry())
    const b = createMetrics(new Registry())
    a.mirrorRequests.inc({ registry: 'docker.io', cache: 'hit' })
    b.mirrorRequests.inc({ registry: 'docker.io', cache: 'miss' })
    assert.equal((await globalRegistry.getMetricsAsJSON()).length, before)

    const text = await a.registry.metrics()
    for (const name of [
      'spegel_mirror_requests_total', 'spegel_mirror_last_success_timestamp_seconds',
      'spegel_resolve_duration_seconds', 'spegel_advertised_image_tags',
      'spegel_advertised_image_digests', 'spegel_advertised_content_digests',
      'http_request_duration_seconds', 'http_response_size_bytes', 'http_requests_inflight',
      'spegel_containerd_up', 'spegel_containerd_reconnects_total', 'spegel_containerd_state',
      'process_cpu_user_seconds_total', 'nodejs_eventloop_lag_seconds'
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name)
    }
    assert.match(text, /^spegel_mirror_requests_total\{registry="docker.io",cache="hit"\} 1$/m)
    assert.doesNotMatch(text, /cache="miss"/)
  })

  it('samples the event-loop delay every 100 ms, not prom-client\'s 10 ms that wakes an idle node 100 times a second', () => {
    // prom-client calls perf_hooks.monitorEventLoopDelay on the CommonJS module object, the same
    // object as this default import; the stand-in only records what it was asked for.
    const real = perfHooks.monitorEventLoopDelay
    const resolutions: Array<number | undefined> = []
    perfHooks.monitorEventLoopDelay = (options) => {
      resolutions.push(options?.resolution)
      return real(options)
    }
    try {
      createMetrics(new Registry())
    } finally {
      perfHooks.monitorEventLoopDelay = real
    }
    assert.equal(EVENT_LOOP_MONITORING_PRECISION_MS, 100)
    assert.deepEqual(resolutions, [100])
  })

  it('uses 1024 × 5^i response size buckets', () => {
    assert.deepEqual(RESPONSE_SIZE_BUCKETS, [1024, 5120, 25600, 128000, 640000, 3.2e6, 1.6e7, 8e7, 4e8, 2e9])
  })

  it('keeps exactly one containerd state at 1', async () => {
    const m = createMetrics(new Registry(), { collectDefault: false })
    m.setContainerdState('connecting')
    m.setContainerdState('ready')
    m.setContainerdState('unavailable')
    const text = await m.registry.metrics()
    assert.match(text, /^spegel_containerd_state\{state="connecting"\} 0$/m)
    assert.match(text, /^spegel_containerd_state\{state="ready"\} 0$/m)
    assert.match(text, /^spegel_containerd_state\{state="unavailable"\} 1$/m)
    assert.doesNotMatch(text, /^process_/m)
  })

  it('sets advertised counts per registry and drops registries that are gone', async () => {
    const m = createMetrics(new Registry(), { collectDefault: false })
    m.setAdvertisedCounts(new Map([['docker.io', { tags: 2, images: 2, contents: 9 }], ['ghcr.io', { tags: 1, images: 1, contents: 4 }]]))
    m.setAdvertisedCounts(new Map([['docker.io', { tags: 1, images: 1, contents: 5 }]]))
    const text = await m.registry.metrics()
    assert.match(text, /^spegel_advertised_image_tags\{registry="docker.io"\} 1$/m)
    assert.match(text, /^spegel_advertised_image_digests\{registry="docker.io"\} 1$/m)
    assert.match(text, /^spegel_advertised_content_digests\{registry="docker.io"\} 5$/m)
    assert.doesNotMatch(text, /registry="ghcr.io"/)
  })

  it('serves the registry in text format on /metrics, HEAD without body', async () => {
    const capture = new LogCapture()
    const m = createMetrics(new Registry(), { collectDefault: false })
    m.containerdUp.set(1)
    // No HTTP metrics on this mux, so the body does not grow between the two requests.
    const srv = await startTestServer(createMux({ log: capture.log }, [
      { pattern: '/metrics', handler: createMetricsHandler(m.registry), isQuiet: true }
    ]), capture.log)
    try {
      const res = await request(srv.port, '/metrics')
      assert.equal(res.status, 200)
      assert.match(String(res.headers['content-type']), /^text\/plain/)
      assert.match(res.body.toString(), /^spegel_containerd_up 1$/m)
      const head = await request(srv.port, '/metrics', { method: 'HEAD' })
      assert.equal(head.body.length, 0)
      assert.equal(head.headers['content-length'], res.headers['content-length'])
    } finally {
      await srv.close()
    }
  })
})

describe('createMetrics: ours', () => {
  const routerSnapshot = (over: Partial<RouterMetricsSnapshot> = {}): RouterMetricsSnapshot => ({
    peersConnected: 2,
    peersSuspected: 1,
    records: 3,
    keys: 40,
    ownKeys: 7,
    pushesIn: 10,
    pushesOut: 12,
    pushesDropped: 1,
    pullsOk: 4,
    pullsFailed: 0,
    syncsServed: 5,
    lastHeardSeconds: new Map([['peer-a', 1.5], ['peer-b', 30]]),
    ...over
  })

  it('reads the relay\'s read buffers at scrape time', async () => {
    const m = createMetrics(new Registry(), { collectDefault: false })
    let stats = { bytesOut: 3 * 131072, waitsTotal: 0 }
    m.setSources({ readBuffers: () => stats })
    let text = await m.registry.metrics()
    assert.match(text, /^spegel_mirror_read_buffer_bytes 393216$/m)
    assert.match(text, /^spegel_mirror_read_buffer_waits_total 0$/m)
    stats = { bytesOut: 0, waitsTotal: 7 }
    text = await m.registry.metrics()
    assert.match(text, /^spegel_mirror_read_buffer_bytes 0$/m)
    assert.match(text, /^spegel_mirror_read_buffer_waits_total 7$/m)
  })

  it('reads readiness and the router at scrape time', async () => {
    const m = createMetrics(new Registry(), { collectDefault: false, version: '1.2.3' })
    let ready = false
    let snapshot = routerSnapshot()
    m.setSources({ isReady: () => ready, router: () => snapshot })
    let text = await m.registry.metrics()
    assert.match(text, /^spegel_ready 0$/m)
    assert.match(text, /^spegel_build_info\{version="1\.2\.3",nodejs="v[\d.]+"\} 1$/m)
    assert.match(text, /^spegel_router_peers_connected 2$/m)
    assert.match(text, /^spegel_router_peers_suspected 1$/m)
    assert.match(text, /^spegel_router_index_records 3$/m)
    assert.match(text, /^spegel_router_index_keys 40$/m)
    assert.match(text, /^spegel_router_own_keys 7$/m)
    assert.match(text, /^spegel_router_pushes_total\{direction="in"\} 10$/m)
    assert.match(text, /^spegel_router_pushes_total\{direction="dropped"\} 1$/m)
    assert.match(text, /^spegel_router_pulls_total\{result="ok"\} 4$/m)
    assert.match(text, /^spegel_router_syncs_served_total 5$/m)
    assert.match(text, /^spegel_router_peer_last_heard_seconds\{peer="peer-a"\} 1\.5$/m)
    assert.doesNotMatch(text, /spegel_router_limit_reached_total\{/, 'no series before the router reports its limits')

    ready = true
    snapshot = routerSnapshot({ pushesIn: 15, lastHeardSeconds: new Map([['peer-b', 31]]) })
    text = await m.registry.metrics()
    assert.match(text, /^spegel_ready 1$/m)
    assert.match(text, /^spegel_router_pushes_total\{direction="in"\} 15$/m, 'counters follow the router\'s cumulative values')
    assert.doesNotMatch(text, /peer="peer-a"/, 'a node that left the index drops out')

    // A new router starts its counters at zero: the metric resets instead of going negative.
    snapshot = routerSnapshot({ pushesIn: 2 })
    text = await m.registry.metrics()
    assert.match(text, /^spegel_router_pushes_total\{direction="in"\} 2$/m)

    // Limits reached: every limit of the closed set is a series from the first scrape, and they count up.
    snapshot = routerSnapshot({ limitsReached: new Map([['index-records', 0], ['pull-rate', 3]]) })
    text = await m.registry.metrics()
    assert.match(text, /^spegel_router_limit_reached_total\{limit="index-records"\} 0$/m)
    assert.match(text, /^spegel_router_limit_reached_total\{limit="pull-rate"\} 3$/m)
    snapshot = routerSnapshot({ limitsReached: new Map([['index-records', 1], ['pull-rate', 5]]) })
    text = await m.registry.metrics()
    assert.match(text, /^spegel_router_limit_reached_total\{limit="index-records"\} 1$/m)
    assert.match(text, /^spegel_router_limit_reached_total\{limit="pull-rate"\} 5$/m)
  })

  it('counts served bytes by client and source, and relayed bytes per peer', async () => {
    const m = createMetrics(new Registry(), { collectDefault: false })
    let text = await m.registry.metrics()
    assert.match(text, /^spegel_served_bytes_total\{to="containerd",source="local"\} 0$/m, 'zero series exist before the first request')
    m.addServedBytes('containerd', 'local', 100)
    m.addServedBytes('containerd', 'peer', 50, 'peer-a')
    m.addServedBytes('peer', 'local', 7)
    text = await m.registry.metrics()
    assert.match(text, /^spegel_served_bytes_total\{to="containerd",source="local"\} 100$/m)
    assert.match(text, /^spegel_served_bytes_total\{to="containerd",source="peer"\} 50$/m)
    assert.match(text, /^spegel_served_bytes_total\{to="peer",source="local"\} 7$/m)
    assert.match(text, /^spegel_mirror_peer_bytes_total\{peer="peer-a"\} 50$/m)
  })

  it('folds peer labels beyond the cap into `other`', () => {
    const labels = new CappedLabels(2)
    assert.equal(labels.label('a'), 'a')
    assert.equal(labels.label('b'), 'b')
    assert.equal(labels.label('c'), 'other')
    assert.equal(labels.label('a'), 'a')
  })
})
