import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Registry, register as globalRegistry } from 'prom-client'
import { createMux } from '../http/mux.js'
import { LogCapture, request, startTestServer } from '../http/test-helpers.js'
import { RESPONSE_SIZE_BUCKETS, createMetrics, createMetricsHandler } from './metrics.js'

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
