import type { IncomingMessage, ServerResponse } from 'node:http'
import { Counter, Gauge, Histogram, collectDefaultMetrics, exponentialBuckets, type Registry } from 'prom-client'

/** 1024 × 5^i for i = 0..9, as Spegel's http_response_size_bytes. */
export const RESPONSE_SIZE_BUCKETS: readonly number[] = Object.freeze(exponentialBuckets(1024, 5, 10))

/**
 * Most distinct peer label values kept per metric. A cluster rarely has more nodes than this
 * on one node's radar; beyond it, values fold into `other` so a hostile or churning cluster
 * cannot grow the series count without bound.
 */
export const MAX_PEER_LABELS = 256
export const OTHER_LABEL = 'other'
/** Bound on `reason` values of spegel_router_frames_refused_total. */
const MAX_REFUSAL_REASONS = 16
/** Bound on `limit` values of spegel_router_limit_reached_total. */
const MAX_LIMIT_NAMES = 16

/** Where the body bytes of a /v2 response came from, and who asked. */
export type ServedTo = 'containerd' | 'peer'
export type ServedSource = 'local' | 'peer'

/** Router figures read at scrape time (a structural view, so this module needs no routing import). */
export interface RouterMetricsSnapshot {
  readonly peersConnected: number
  /** Peers left out of lookups after their connections were cut (optional for older snapshots). */
  readonly peersSuspected?: number
  readonly records: number
  readonly keys: number
  readonly ownKeys: number
  readonly pushesIn: number
  readonly pushesOut: number
  readonly pushesDropped: number
  readonly pullsOk: number
  readonly pullsFailed: number
  readonly syncsServed: number
  /**
   * Frames and records the router refused, by reason. The router always reports its whole closed
   * set of reasons (zeros included), so every series exists from the first scrape.
   */
  readonly framesRefused?: ReadonlyMap<string, number>
  /**
   * Times each limit on what peers can make the router hold or do was reached, by limit; like
   * framesRefused, the router reports its whole closed set (zeros included).
   */
  readonly limitsReached?: ReadonlyMap<string, number>
  /** Seconds since each other node was last heard of, by peer id. */
  readonly lastHeardSeconds: ReadonlyMap<string, number>
}

/** Live values the metrics read when Prometheus scrapes, set once the node is wired. */
export interface MetricsSources {
  isReady?: () => boolean
  router?: () => RouterMetricsSnapshot | undefined
  /** The read buffers of bodies relayed from peers (src/registry/peer-http.ts). */
  readBuffers?: () => { bytesOut: number, waitsTotal: number }
}

export interface Metrics {
  readonly registry: Registry
  /** One per mirror-handler invocation; `cache` is `hit` or `miss`, `registry` a closed-set label (see registryLabel). */
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
  readonly servedBytes: Counter<'to' | 'source'>
  readonly mirrorPeerBytes: Counter<'peer'>
  /** How waits for a blob no node had ended (source, chosen, timeout, busy); see registry/pull-storm.ts. */
  readonly pullStormWaits: Counter<'outcome'>
  /** Blobs this node's containerd is downloading that peers may fetch from it. */
  readonly arrivingBlobs: Gauge
  /** Blob GETs fetched from several holders at once (--mirror-parallel-min-size). */
  readonly mirrorParallelFetches: Counter
  /** Chunks of those fetches asked again from another holder (one failed, or was far slower). */
  readonly mirrorParallelTakeovers: Counter
  /** Sets `spegel_containerd_state{state}` to 1 for `state` and 0 for every state seen before. */
  setContainerdState(state: string): void
  /** Spegel's advertised gauges, per registry: tags, image roots and content digests. */
  setAdvertisedCounts(counts: ReadonlyMap<string, AdvertisedCounts>): void
  /** Counts body bytes of one /v2 response; `peer` is the peer id when relayed. */
  addServedBytes(to: ServedTo, source: ServedSource, bytes: number, peer?: string): void
  setSources(sources: MetricsSources): void
}

export interface AdvertisedCounts {
  readonly tags: number
  readonly images: number
  readonly contents: number
}

export interface MetricsInit {
  /** Adds process_* and nodejs_* collectors; defaults to true. */
  collectDefault?: boolean
  /** spegel_build_info's version label. */
  version?: string
}

/**
 * How often the event-loop delay histogram behind nodejs_eventloop_lag_p50/p90/p99 samples.
 * prom-client's default, 10 ms, is a libuv timer waking the process 100 times a second: 0.35 to
 * 0.39 % of a core in an otherwise idle Node 24 process on this project's 2-core machines, about
 * a third of an idle node's CPU (bench/README.md, datapath idle row). At 100 ms it costs 0.08 %.
 * A stall still shows as one late sample of about its length, which is what the lag alert
 * (p99 above 0.5 s) looks for; with fewer samples a single stall weighs more in the p99, not less.
 */
export const EVENT_LOOP_MONITORING_PRECISION_MS = 100

/**
 * Spegel's metrics plus ours (containerd health, bytes by source, the P2P index, readiness),
 * all registered on `registry` only; never on prom-client's global registry, so two instances
 * can coexist in one process. Label values come from closed sets or are capped.
 */
export function createMetrics (registry: Registry, init: MetricsInit = {}): Metrics {
  const registers = [registry]
  if (init.collectDefault ?? true) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_MONITORING_PRECISION_MS })
  let sources: MetricsSources = {}
  const routerSnapshot = (): RouterMetricsSnapshot | undefined => sources.router?.()

  const buildInfo = new Gauge({
    name: 'spegel_build_info',
    help: 'Version of this spegel-ts node and of the Node.js runtime; always 1.',
    labelNames: ['version', 'nodejs'] as const,
    registers
  })
  buildInfo.set({ version: init.version ?? 'devel', nodejs: process.version }, 1)

  new Gauge({
    name: 'spegel_ready',
    help: 'Whether this node reports ready on /readyz (1) or not (0).',
    registers,
    collect () {
      const isReady = sources.isReady
      if (isReady !== undefined) this.set(isReady() ? 1 : 0)
    }
  })

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

  const servedBytes = new Counter({
    name: 'spegel_served_bytes_total',
    help: 'Body bytes of OCI responses this node sent, by client (containerd or a peer) and by where the bytes came from (local disk or a peer).',
    labelNames: ['to', 'source'] as const,
    registers
  })
  // Zeroes exist from the start, so rate() and dashboards see the series before the first pull.
  for (const [to, source] of [['containerd', 'local'], ['containerd', 'peer'], ['peer', 'local']] as const) servedBytes.inc({ to, source }, 0)
  const mirrorPeerBytes = new Counter({
    name: 'spegel_mirror_peer_bytes_total',
    help: 'Body bytes relayed from each peer to this node\'s clients.',
    labelNames: ['peer'] as const,
    registers
  })
  const peerLabels = new CappedLabels(MAX_PEER_LABELS)

  // Router figures are cumulative counters kept by the router itself; mirror them at scrape time.
  const routerGauge = (name: string, help: string, pick: (s: RouterMetricsSnapshot) => number): void => {
    new Gauge({
      name,
      help,
      registers,
      collect () {
        const s = routerSnapshot()
        if (s !== undefined) this.set(pick(s))
      }
    })
  }
  routerGauge('spegel_router_peers_connected', 'Peers this node has an open libp2p connection to.', (s) => s.peersConnected)
  routerGauge('spegel_router_peers_suspected', 'Peers left out of lookups because every connection to them was cut and they have not answered a dial since.', (s) => s.peersSuspected ?? 0)
  routerGauge('spegel_router_index_records', 'Other nodes\' records held in this node\'s replica of the cluster index.', (s) => s.records)
  routerGauge('spegel_router_index_keys', 'Distinct keys (digests and tags) in this node\'s replica of the cluster index.', (s) => s.keys)
  routerGauge('spegel_router_own_keys', 'Keys this node advertises.', (s) => s.ownKeys)
  const setPushes = counterMirror<'direction'>()
  const setPulls = counterMirror<'result'>()
  const setSyncs = counterMirror<never>()
  const setRefused = counterMirror<'reason'>()
  const setLimited = counterMirror<'limit'>()
  new Counter({
    name: 'spegel_router_pushes_total',
    help: 'Index deltas pushed to peers (out), received (in) and dropped because a peer could not keep up (dropped).',
    labelNames: ['direction'] as const,
    registers,
    collect () {
      const s = routerSnapshot()
      if (s === undefined) return
      setPushes(this, { direction: 'in' }, s.pushesIn)
      setPushes(this, { direction: 'out' }, s.pushesOut)
      setPushes(this, { direction: 'dropped' }, s.pushesDropped)
    }
  })
  new Counter({
    name: 'spegel_router_pulls_total',
    help: 'Index pulls (anti-entropy syncs) this node made, by result.',
    labelNames: ['result'] as const,
    registers,
    collect () {
      const s = routerSnapshot()
      if (s === undefined) return
      setPulls(this, { result: 'ok' }, s.pullsOk)
      setPulls(this, { result: 'failed' }, s.pullsFailed)
    }
  })
  new Counter({
    name: 'spegel_router_syncs_served_total',
    help: 'Index pulls this node answered for peers.',
    registers,
    collect () {
      const s = routerSnapshot()
      if (s !== undefined) setSyncs(this, {}, s.syncsServed)
    }
  })
  new Counter({
    name: 'spegel_router_frames_refused_total',
    help: 'Index frames and records refused from peers, by reason (malformed, oversized, unsigned, bad-signature, wrong-sender, bad-address, unverified-address).',
    labelNames: ['reason'] as const,
    registers,
    collect () {
      const s = routerSnapshot()
      if (s?.framesRefused === undefined) return
      let kept = 0
      // The reasons are the router's closed set; the cap only guards against a router that is not.
      for (const [reason, count] of s.framesRefused) if (++kept <= MAX_REFUSAL_REASONS) setRefused(this, { reason }, count)
    }
  })
  new Counter({
    name: 'spegel_router_limit_reached_total',
    help: 'Times a limit on what peers can make the router hold or do was reached, by limit (index-records, index-keys, record-keys, pull-reply-bytes, pull-reply-records, pulls-served-peer, pulls-served-total, pull-stalled, pull-rate, unknown-origins).',
    labelNames: ['limit'] as const,
    registers,
    collect () {
      const s = routerSnapshot()
      if (s?.limitsReached === undefined) return
      let kept = 0
      // The limits are the router's closed set; the cap only guards against a router that is not.
      for (const [limit, count] of s.limitsReached) if (++kept <= MAX_LIMIT_NAMES) setLimited(this, { limit }, count)
    }
  })
  new Gauge({
    name: 'spegel_mirror_read_buffer_bytes',
    help: 'Bytes of the buffers bodies relayed from peers are read into, out now (bounded at 96 MiB).',
    registers,
    collect () {
      const s = sources.readBuffers?.()
      if (s !== undefined) this.set(s.bytesOut)
    }
  })
  const setBufferWaits = counterMirror<never>()
  new Counter({
    name: 'spegel_mirror_read_buffer_waits_total',
    help: 'Times a body relayed from a peer stopped reading because all read buffers were out; it went on when one came back.',
    registers,
    collect () {
      const s = sources.readBuffers?.()
      if (s !== undefined) setBufferWaits(this, {}, s.waitsTotal)
    }
  })
  new Gauge({
    name: 'spegel_router_peer_last_heard_seconds',
    help: 'Seconds since each other node was last heard of (directly or through peers).',
    labelNames: ['peer'] as const,
    registers,
    collect () {
      const s = routerSnapshot()
      if (s === undefined) return
      // Reset so a node that left the index drops out instead of freezing at its last age.
      this.reset()
      let kept = 0
      for (const [peer, seconds] of s.lastHeardSeconds) {
        if (++kept > MAX_PEER_LABELS) break
        this.set({ peer }, seconds)
      }
    }
  })

  return {
    registry,
    pullStormWaits: new Counter({
      name: 'spegel_pull_storm_waits_total',
      help: 'Mirror requests for a blob no node held or was receiving, by how the wait ended: source (another node started receiving it), chosen (this node fetches it upstream), timeout, busy.',
      labelNames: ['outcome'] as const,
      registers
    }),
    arrivingBlobs: new Gauge({
      name: 'spegel_arriving_blobs',
      help: 'Blobs this node\'s containerd is still downloading (or just committed), advertised so that peers can stream them.',
      registers
    }),
    mirrorParallelFetches: new Counter({
      name: 'spegel_mirror_parallel_fetches_total',
      help: 'Blob GETs mirrored from several holders at once in Range chunks (--mirror-parallel-min-size).',
      registers
    }),
    mirrorParallelTakeovers: new Counter({
      name: 'spegel_mirror_parallel_takeovers_total',
      help: 'Chunks of parallel fetches taken over by another holder because theirs failed or was far slower.',
      registers
    }),
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
    servedBytes,
    mirrorPeerBytes,
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
    },
    addServedBytes (to: ServedTo, source: ServedSource, bytes: number, peer?: string): void {
      if (bytes <= 0) return
      servedBytes.inc({ to, source }, bytes)
      if (source === 'peer' && peer !== undefined) mirrorPeerBytes.inc({ peer: peerLabels.label(peer) }, bytes)
    },
    setSources (next: MetricsSources): void {
      sources = { ...sources, ...next }
    }
  }
}

/**
 * Sets counters that mirror cumulative values kept elsewhere (prom-client counters only add).
 * Only this setter touches those counters, so remembering what it reported is exact.
 */
function counterMirror<T extends string> (): (counter: Counter<T>, labels: Partial<Record<T, string>>, value: number) => void {
  const reported = new Map<string, number>()
  return (counter, labels, value) => {
    const key = JSON.stringify(labels)
    const before = reported.get(key) ?? 0
    if (value >= before) {
      counter.inc(labels, value - before)
    } else {
      // The source restarted from zero: a counter reset, which rate() handles.
      counter.remove(labels)
      counter.inc(labels, value)
    }
    reported.set(key, value)
  }
}

/**
 * Label values taken first come, first served up to a cap; later ones become `other`. Used
 * where values are legitimate but not knowable in advance (peer ids).
 */
export class CappedLabels {
  readonly #max: number
  readonly #values = new Set<string>()

  constructor (max: number) {
    this.#max = max
  }

  label (value: string): string {
    if (this.#values.has(value)) return value
    if (this.#values.size >= this.#max) return OTHER_LABEL
    this.#values.add(value)
    return value
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
