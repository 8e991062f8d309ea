import type { IncomingMessage, ServerResponse } from 'node:http'
import { Counter, Gauge, Histogram, collectDefaultMetrics, exponentialBuckets, type Registry } from 'prom-client'

/** 1024 × 5^i for i = 0..9, as Spegel's http_response_size_bytes. */
export const RESPONSE_SIZE_BUCKETS: readonly number[] = Object.freeze(exponentialBuckets(1024, 5, 10))

export interface Metrics {
  readonly registry: Registry
  /** One per mirror-handler invocation; `cache` is `hit` or `miss`, `registry` the `ns` value. */
  readonly mirrorRequests: Counter<'registry' | 'cache'>
  readonly mirrorLastSuccessTimestampSeconds: Gauge
  readonly resolveDurationSeconds: Histogram<'router'>
  readonly advertisedImageTags: Gauge<'registry'>
  readonly advertisedImageDigests: Gauge<'registry'>
  readonly advertisedContentDigests: Gauge<'registry'>
  readonly httpRequestDurationSeconds: Histogram<'handler' | 'method' | 'code'>
  readonly httpResponseSizeBytes: Histogram<'handler' | 'method' | 'code'>
  readonly httpRequestsInflight: Gauge<'handler'>
  readonly containerdUp: Gauge
  readonly containerdReconnects: Counter
  readonly containerdState: Gauge<'state'>
  /** Sets `spegel_containerd_state{state}` to 1 for `state` and 0 for every state seen before. */
  setContainerdState(state: string): void
  /**
   * Sets the advertised-key gauges from the full list of advertised keys: tags
   * (`registry/repository:tag`) per registry, and digests as content digests. Keys carry no
   * registry for digests, so those are counted under `registry=""`; image digests cannot be
   * told apart from other content by key and stay unset (as in Spegel HEAD).
   */
  /** Spegel's advertised gauges, per registry: tags, image roots and content digests. */
  setAdvertisedCounts(counts: ReadonlyMap<string, AdvertisedCounts>): void
}

export interface AdvertisedCounts {
  readonly tags: number
  readonly images: number
  readonly contents: number
}

export interface MetricsInit {
  /** Adds process_* and nodejs_* collectors; defaults to true. */
  collectDefault?: boolean
}

/**
 * Spegel's metrics (spec 9.2, 9.3) plus containerd connection health, all registered on
 * `registry` only; never on prom-client's global registry, so two instances can coexist.
 */
export function createMetrics (registry: Registry, init: MetricsInit = {}): Metrics {
  const registers = [registry]
  if (init.collectDefault ?? true) collectDefaultMetrics({ register: registry })

  const containerdState = new Gauge({
    name: 'spegel_containerd_state',
    help: 'Connection state of the containerd client; 1 for the current state.',
    labelNames: ['state'] as const,
    registers
  })
  const seenStates = new Set<string>()
  const advertisedImageTags = new Gauge({
    name: 'spegel_advertised_image_tags',
    help: 'Number of image tags advertised to be available.',
    labelNames: ['registry'] as const,
    registers
  })
  const advertisedContentDigests = new Gauge({
    name: 'spegel_advertised_content_digests',
    help: 'Number of content digests advertised to be available.',
    labelNames: ['registry'] as const,
    registers
  })

  const advertisedImageDigests = new Gauge({
    name: 'spegel_advertised_image_digests',
    help: 'Number of image digests advertised to be available.',
    labelNames: ['registry'] as const,
    registers
  })
  return {
    registry,
    mirrorRequests: new Counter({
      name: 'spegel_mirror_requests_total',
      help: 'Total number of mirror requests.',
      labelNames: ['registry', 'cache'] as const,
      registers
    }),
    mirrorLastSuccessTimestampSeconds: new Gauge({
      name: 'spegel_mirror_last_success_timestamp_seconds',
      help: 'The timestamp of the last successful mirror request.',
      registers
    }),
    resolveDurationSeconds: new Histogram({
      name: 'spegel_resolve_duration_seconds',
      help: 'The duration for router to resolve a peer.',
      labelNames: ['router'] as const,
      registers
    }),
    advertisedImageTags,
    advertisedImageDigests,
    advertisedContentDigests,
    httpRequestDurationSeconds: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'The latency of the HTTP requests.',
      labelNames: ['handler', 'method', 'code'] as const,
      registers
    }),
    httpResponseSizeBytes: new Histogram({
      name: 'http_response_size_bytes',
      help: 'The size of the HTTP responses.',
      labelNames: ['handler', 'method', 'code'] as const,
      buckets: [...RESPONSE_SIZE_BUCKETS],
      registers
    }),
    httpRequestsInflight: new Gauge({
      name: 'http_requests_inflight',
      help: 'The number of inflight requests being handled at the same time.',
      labelNames: ['handler'] as const,
      registers
    }),
    containerdUp: new Gauge({
      name: 'spegel_containerd_up',
      help: 'Whether the containerd API is reachable (1) or not (0).',
      registers
    }),
    containerdReconnects: new Counter({
      name: 'spegel_containerd_reconnects_total',
      help: 'Total number of reconnections to containerd after the connection was lost.',
      registers
    }),
    containerdState,
    setContainerdState (state: string): void {
      seenStates.add(state)
      for (const s of seenStates) containerdState.set({ state: s }, s === state ? 1 : 0)
    },
    setAdvertisedCounts (counts: ReadonlyMap<string, AdvertisedCounts>): void {
      // Reset first so a registry whose last image went away drops to absent, not to a stale count.
      advertisedImageTags.reset()
      advertisedImageDigests.reset()
      advertisedContentDigests.reset()
      for (const [registry, c] of counts) {
        advertisedImageTags.set({ registry }, c.tags)
        advertisedImageDigests.set({ registry }, c.images)
        advertisedContentDigests.set({ registry }, c.contents)
      }
    }
  }
}

/** `GET /metrics` in Prometheus text format for `registry`. */
export function createMetricsHandler (registry: Registry): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  return async (req, res) => {
    const body = await registry.metrics()
    res.writeHead(200, {
      'Content-Type': registry.contentType,
      'Content-Length': Buffer.byteLength(body)
    })
    res.end(req.method === 'HEAD' ? undefined : body)
  }
}
