import type http from 'node:http'
import { once } from 'node:events'
import { Registry as PromRegistry } from 'prom-client'
import type { RegistryConfig, HostPort } from '../config/index.js'
import { ArrivingBlobs, ContainerdStore, ContainerdSupervisor } from '../containerd/index.js'
import { createMux, createServer, type Route } from '../http/index.js'
import { addressText, closeGracefully, listen } from '../http/lifecycle.js'
import { buildFilters } from '../oci/index.js'
import { createLogger, parseLogLevel, type Logger } from '../observability/logger.js'
import { HEAP_TRIM_CHECK_MS, startHeapTrimmer } from '../observability/heap-trim.js'
import { createMetrics, createMetricsHandler, type RouterMetricsSnapshot } from '../observability/metrics.js'
import {
  PullStorm, RecentRequests, basicAuthHeader, createMirror, createRegistryHandler, createRegistryLabeler, nodeReadiness, readBufferStats, releaseIdleReadBuffers
} from '../registry/index.js'
import { loadBasicAuth } from '../registry/basic-auth.js'
import { createBootstrapper } from '../routing/bootstrap/index.js'
import { createP2PRouter, type P2PRouter } from '../routing/p2p/index.js'
import { startSync } from '../routing/sync.js'
import { RouterSlot } from '../routing/router-slot.js'
import { KeyOverlay } from '../routing/key-overlay.js'
import { createDebugRoutes } from '../web/debug.js'
import { buildStatus, type NodeWarning, type RouterView } from '../web/status.js'
import { advertisedRegistryAddress } from './advertise-address.js'
import { getVersionInfo } from './version.js'
import { ContainerdConfigCheck } from './containerd-config-check.js'

/**
 * How long blob streams in flight may run on after SIGTERM. Well under Kubernetes' default
 * 30 s terminationGracePeriodSeconds, so the router's goodbye and a clean exit still happen
 * before the kubelet's SIGKILL when a slow client is pulling a multi-GiB layer.
 */
export const REGISTRY_SHUTDOWN_GRACE_MS = 20_000

/** Everything `spegel registry` runs, built and wired here and nowhere else. */
export interface RegistryRuntime {
  /** Aborted on SIGINT/SIGTERM by main.ts. */
  shutdown: AbortSignal
  log?: Logger
}

export async function runRegistry (config: RegistryConfig, runtime: RegistryRuntime): Promise<number> {
  const log = runtime.log ?? createLogger({ level: parseLogLevel(config.logLevel) ?? 'info' })
  let filters
  try {
    filters = buildFilters(config.mirroredRegistries, config.registryFilters)
  } catch (err) {
    log.error({ err: (err as Error).message }, 'exit with error')
    return 1
  }
  let basicAuth
  try {
    basicAuth = await loadBasicAuth(process.env.SPEGEL_BASIC_AUTH_DIR)
  } catch (err) {
    log.error({ err: (err as Error).message }, 'exit with error')
    return 1
  }

  const startedAtMs = Date.now()
  const { build } = await getVersionInfo({ env: {} })
  const promRegistry = new PromRegistry()
  const metrics = createMetrics(promRegistry, { version: build.version })
  const configCheck = new ContainerdConfigCheck({ log, registry: promRegistry }, { file: config.containerdConfig, mirrorConfigPath: config.containerdRegistryConfigPath })

  let previousState = 'connecting'
  const supervisor = new ContainerdSupervisor({
    log,
    onStateChange: (state) => {
      if (state.name === 'connected' && previousState === 'unavailable') metrics.containerdReconnects.inc()
      if (state.name === 'connected') void configCheck.refresh(state.version)
      previousState = state.name
      metrics.setContainerdState(state.name)
      metrics.containerdUp.set(state.name === 'connected' ? 1 : 0)
    }
  }, {
    socketPath: config.containerdSock,
    isSocketExplicit: config.containerdSockExplicit,
    namespace: config.containerdNamespace
  })
  const store = new ContainerdStore({ log, supervisor }, { contentPath: config.containerdContentPath, filters })

  // The router is created after the registry listens, so a port 0 resolves to the real one
  // peers must use; until then the handler reports not-ready through isReady.
  let router: P2PRouter | undefined
  const routerProxy = new RouterSlot()
  const readiness = (): ReturnType<typeof nodeReadiness> => nodeReadiness({ store, router: routerProxy })
  const recentRequests = new RecentRequests()
  const mirrorStats: { lastSuccessMs?: number } = {}
  const registryLabel = createRegistryLabeler({ mirroredRegistries: config.mirroredRegistries, localRegistries: () => store.registries() })
  // Pull storms (docs/pull-storms.md): this node's own extra keys ride on the store's record.
  const overlay = new KeyOverlay(routerProxy)
  const storm = new PullStorm({
    router: routerProxy,
    keys: overlay,
    selfId: () => router?.peerId,
    log: log.child({ component: 'pull-storm' }),
    onOutcome: (outcome) => { metrics.pullStormWaits.inc({ outcome }) },
    onFetching: (digest) => { arriving.reconsider(digest) },
    isUsable: (peerId) => mirror.isPeerUsable(peerId)
  }, { waitMs: config.pullStormWaitMs })
  const arriving = new ArrivingBlobs({
    log,
    keys: overlay,
    onArriving: (digest) => { storm.onArriving(digest) },
    onAbandoned: (digest) => { storm.onAbandoned(digest) },
    isFirstHand: (digest) => storm.isFirstHand(digest),
    onCount: (count) => { metrics.arrivingBlobs.set(count) }
  })
  const mirror = createMirror({ router: routerProxy, log, metrics, ...(storm.isEnabled ? { storm, expectedSize: (digest: string) => arriving.expectedSize(digest) } : {}) }, {
    resolveTimeoutMs: config.mirrorResolveTimeoutMs,
    resolveRetries: config.mirrorResolveRetries,
    parallelMinBytes: config.mirrorParallelMinBytes,
    isRelayVerified: config.verifyRelayedBlobs,
    ...(basicAuth === undefined ? {} : { basicAuth }),
    inflightTimeoutMinMs: MIRROR_INFLIGHT_TIMEOUT_MIN_MS
  })
  const handler = createRegistryHandler({ store, router: routerProxy, metrics, log }, {
    filters,
    basicAuth,
    mirror,
    recentRequests,
    registryLabel,
    mirrorStats,
    readyzNotes: () => configCheck.readyzNotes(),
    ...(storm.isEnabled ? { arriving } : {})
  })
  const registryServer = createServer(handler, { log })
  metrics.setSources({
    isReady: () => readiness().isReady,
    router: () => router === undefined ? undefined : routerMetrics(router),
    readBuffers: readBufferStats
  })

  const warnings: NodeWarning[] = []
  if (config.routerSecretPath === '') {
    warnings.push({
      id: 'no-router-psk',
      severity: 'warning',
      message: 'The peer-to-peer port has no pre-shared key: any process that can reach it can join this cluster\'s index.',
      fix: 'give every node the same key file: printf \'/key/swarm/psk/1.0.0/\\n/base16/\\n%s\\n\' "$(openssl rand -hex 32)" > router.psk, then --router-secret-path router.psk (the Kubernetes install reads it from the Secret spegel-router-psk, docs/kubernetes.md)'
    })
    log.warn({ event: 'router_without_psk', fix: 'set --router-secret-path on every node' }, 'the router runs without a pre-shared key; any process that can reach the router port can join')
  }
  if (!config.verifyRelayedBlobs) {
    log.warn({ event: 'relay_unverified', fix: 'leave --verify-relayed-blobs at true unless the hash\'s CPU matters more' }, 'whole blobs relayed from peers are not checked against their digest; containerd still refuses wrong bytes at commit, but a corrupt peer is not avoided')
  }
  const routes: Route[] = [
    { pattern: '/metrics', handler: createMetricsHandler(promRegistry), isQuiet: true, isUnmeasured: true }
  ]
  if (config.debugWebEnabled) {
    routes.push(...createDebugRoutes({
      log,
      debugStatus: () => ({
        store: { name: store.name, ...store.readiness(), keys: store.keys().length },
        router: router === undefined ? { isReady: false, reason: 'starting' } : router.status()
      }),
      status: () => buildStatus({
        readiness,
        containerd: () => {
          const state = supervisor.state()
          const contentDirectory = store.contentDirectory()
          return {
            state: state.name,
            socketPath: state.socketPath,
            namespace: config.containerdNamespace,
            ...(state.version === undefined ? {} : { version: state.version }),
            sinceMs: state.since,
            ...(state.reason === undefined ? {} : { reason: state.reason }),
            ...(state.diagnosis === undefined ? {} : { problem: { id: state.diagnosis.problem, message: state.diagnosis.message, fix: state.diagnosis.fix } }),
            ...(contentDirectory === undefined || state.name !== 'connected' ? {} : { contentDirectory }),
            configuredContentPath: config.containerdContentPath
          }
        },
        images: () => store.images(),
        holders: (key) => router?.holders(key) ?? 0,
        router: () => router === undefined ? undefined : routerView(router),
        recentRequests: (limit) => recentRequests.list(limit),
        warnings: () => [...warnings, ...configCheck.warnings()],
        lastMirrorSuccessMs: () => mirrorStats.lastSuccessMs
      }, {
        version: build.version,
        startedAtMs,
        registryAddress: () => registryAddress,
        listen: { registry: addressText(registryServer), router: routerListenText(router, config.routerAddr), metrics: addressText(metricsServer) },
        isRouterPskEnabled: config.routerSecretPath !== ''
      }),
      lookup: (key, options) => routerProxy.lookup(key, options),
      isLocal: (key) => store.keys().includes(key),
      peerId: () => router?.peerId,
      measure: {
        registryUrl: () => ownRegistryUrl(registryServer),
        recentRequests: (limit) => recentRequests.list(limit),
        ...(basicAuth === undefined ? {} : { authorization: basicAuthHeader(basicAuth) })
      }
    }))
  }
  // One listening socket: scrapes and the page never come in thousands (server.ts, DEFAULT_ACCEPTORS).
  const metricsServer = createServer(createMux({ log, metrics }, routes), { log, serverName: 'metrics', acceptors: 1 })
  let registryAddress: string | undefined

  // A containerd that is missing or broken is not a reason to exit: we serve, report
  // not-ready and reconnect. Only our own listeners or identity failing is fatal.
  supervisor.start()
  let stopSync: (() => void) | undefined
  const fail = async (err: unknown): Promise<number> => {
    log.error({ err: (err as Error).message }, 'exit with error')
    stopSync?.()
    await router?.stop({ goodbye: false })
    await mirror.close()
    await supervisor.stop()
    registryServer.close()
    metricsServer.close()
    return 1
  }
  try {
    const registryPort = (await listen(registryServer, config.registryAddr)).port
    await listen(metricsServer, config.metricsAddr)
    registryAddress = advertisedRegistryAddress(config.registryAddr, config.routerAddr, registryPort)
    router = await createP2PRouter({ log }, {
      listen: config.routerAddr,
      dataDir: config.dataDir,
      secretPath: config.routerSecretPath,
      registryAddress,
      bootstrapper: createBootstrapper(config, { log })
    })
    routerProxy.set(router)
    await router.start()
  } catch (err) {
    return await fail(err)
  }
  stopSync = startSync({
    store,
    router: overlay,
    log,
    // Tags go out pinned to the digest they name here, so peers trust this node's tag answers
    // only when they are that digest.
    tagDigests: () => tagDigestsOf(store.images()),
    onAdvertised: () => { metrics.setAdvertisedCounts(store.advertisedCounts()) }
  })
  // The content directory is known once containerd has answered, and may change with it.
  const followContent = setInterval(() => { if (storm.isEnabled) arriving.follow(store.contentRoot()) }, CONTENT_FOLLOW_INTERVAL_MS)
  followContent.unref()
  if (storm.isEnabled) arriving.follow(store.contentRoot())
  log.info({ registry: addressText(registryServer), metrics: addressText(metricsServer), router: router.multiaddrs(), peerId: router.peerId, containerdSock: config.containerdSock }, 'running spegel')
  // The image listing and the cluster's index arrive in bursts that leave V8's heap committed.
  // Idle pooled read buffers of the relay go at the next check after a quiet period of one check.
  const heapTrimmer = startHeapTrimmer({ log, release: () => releaseIdleReadBuffers(HEAP_TRIM_CHECK_MS) })

  if (!runtime.shutdown.aborted) await once(runtime.shutdown, 'abort')
  log.info('shutting down')
  heapTrimmer.stop()
  stopSync()
  clearInterval(followContent)
  arriving.stop()
  storm.close()
  const [registryClose, metricsClose] = await Promise.all([
    closeGracefully(registryServer, { graceMs: REGISTRY_SHUTDOWN_GRACE_MS }),
    closeGracefully(metricsServer, { graceMs: REGISTRY_SHUTDOWN_GRACE_MS }),
    router.stop(),
    mirror.close(),
    supervisor.stop()
  ])
  if (registryClose.isForced || metricsClose.isForced) {
    log.warn({ graceMs: REGISTRY_SHUTDOWN_GRACE_MS, registry: registryClose.isForced, metrics: metricsClose.isForced }, 'cut requests still running at the shutdown deadline')
  }
  log.info('exit gracefully')
  return 0
}

/**
 * A single peer that holds content may be slow to answer on a loaded node; Spegel's 100 ms
 * floor turns that into a 404 and a failed pull when upstream is down. A second is still far
 * below containerd's patience, and hedged attempts go to other peers meanwhile.
 */
const MIRROR_INFLIGHT_TIMEOUT_MIN_MS = 1000

/** How often the ingest watcher checks that it follows containerd's current content directory. */
const CONTENT_FOLLOW_INTERVAL_MS = 1000

/** Tag key (`registry/repository:tag`) → the digest it names, from the store's images. */
function tagDigestsOf (images: ReadonlyArray<{ registry: string, repository: string, tag?: string, digest: string }>): Map<string, string> {
  const out = new Map<string, string>()
  for (const image of images) if (image.tag !== undefined) out.set(`${image.registry}/${image.repository}:${image.tag}`, image.digest)
  return out
}

/** The router's figures for the metrics, read at scrape time. */
function routerMetrics (router: P2PRouter): RouterMetricsSnapshot {
  const status = router.status()
  const now = Date.now()
  const lastHeardSeconds = new Map<string, number>()
  for (const peer of router.peers()) {
    if (peer.lastHeardMs !== undefined && peer.isAlive) lastHeardSeconds.set(peer.id, Math.max(0, (now - peer.lastHeardMs) / 1000))
  }
  return {
    peersConnected: status.peers,
    peersSuspected: status.peersSuspected,
    records: status.records,
    keys: status.keys,
    ownKeys: status.ownKeys,
    pushesIn: status.counters.pushesIn,
    pushesOut: status.counters.pushesOut,
    pushesDropped: status.counters.pushesDropped,
    pullsOk: status.counters.pullsOk,
    pullsFailed: status.counters.pullsFailed,
    syncsServed: status.counters.syncsServed,
    framesRefused: new Map(Object.entries(status.refused)),
    limitsReached: new Map(Object.entries(status.limited)),
    lastHeardSeconds
  }
}

function routerView (router: P2PRouter): RouterView {
  const status = router.status()
  return {
    peerId: status.peerId,
    isReady: status.isReady,
    ...(status.reason === undefined ? {} : { reason: status.reason }),
    multiaddrs: status.multiaddrs,
    records: status.records,
    keys: status.keys,
    ownKeys: status.ownKeys,
    peers: router.peers()
  }
}

/** Where this node reaches its own registry (the measure form pulls through it). */
function ownRegistryUrl (server: http.Server): string | undefined {
  const address = server.address()
  if (address === null || typeof address === 'string') return undefined
  // A wildcard listener on `::` is dual-stack in Node, so IPv4 loopback reaches it even where ::1 is not configured.
  const unspecified = address.address === '0.0.0.0' || address.address === '::'
  const host = unspecified ? '127.0.0.1' : address.address
  return host.includes(':') ? `http://[${host}]:${address.port}` : `http://${host}:${address.port}`
}

/** `host:port` the router listens on, from its first TCP multiaddr once it runs. */
function routerListenText (router: P2PRouter | undefined, configured: HostPort): string {
  const m = /^\/ip([46])\/([^/]+)\/tcp\/(\d+)/.exec(router?.multiaddrs()[0] ?? '')
  if (m === null) return `${configured.host}:${configured.port}`
  return m[1] === '6' ? `[${m[2]}]:${m[3]}` : `${m[2]}:${m[3]}`
}
