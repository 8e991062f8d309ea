import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import { Registry as PromRegistry } from 'prom-client'
import type { RegistryConfig, HostPort } from '../config/index.js'
import { ContainerdStore, ContainerdSupervisor } from '../containerd/index.js'
import { createServer } from '../http/index.js'
import { buildFilters } from '../oci/index.js'
import { createLogger, parseLogLevel, type Logger } from '../observability/logger.js'
import { createMetrics, createMetricsHandler } from '../observability/metrics.js'
import { createRegistryHandler } from '../registry/handler.js'
import { loadBasicAuth } from '../registry/basic-auth.js'
import { createBootstrapper } from '../routing/bootstrap/index.js'
import { createP2PRouter, type P2PRouter } from '../routing/p2p/index.js'
import { startSync } from '../routing/sync.js'
import { RouterSlot } from '../routing/router-slot.js'
import { createDebugHandler } from '../web/debug.js'
import { createMirror } from '../registry/mirror.js'
import { advertisedRegistryAddress } from './advertise-address.js'

function listenHost (address: HostPort): string | undefined {
  return address.host === '' ? undefined : address.host.replace(/^\[(.*)\]$/, '$1')
}

async function listen (server: http.Server, address: HostPort): Promise<void> {
  server.listen(address.port, listenHost(address))
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([err]) => { throw err as Error })
  ])
}

function closeServer (server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => { resolve() })
    server.closeIdleConnections()
  })
}

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

  const promRegistry = new PromRegistry()
  const metrics = createMetrics(promRegistry)

  let previousState = 'connecting'
  const supervisor: ContainerdSupervisor = new ContainerdSupervisor({
    log,
    onStateChange: (state) => {
      if (state.name === 'connected' && previousState === 'unavailable') metrics.containerdReconnects.inc()
      previousState = state.name
      metrics.setContainerdState(state.name)
      metrics.containerdUp.set(state.name === 'connected' ? 1 : 0)
    }
  }, {
    socketPath: config.containerdSock,
    isSocketExplicit: config.containerdSockExplicit,
    namespace: config.containerdNamespace,
    session: (client, signal) => store.session(client, signal)
  })
  const store = new ContainerdStore({ log, supervisor }, { contentPath: config.containerdContentPath, filters })

  // The router is created after the registry listens, so a port 0 resolves to the real one
  // peers must use; until then the handler reports not-ready through isReady.
  let router: P2PRouter | undefined
  const routerProxy = new RouterSlot()
  const mirror = createMirror({ router: routerProxy, log, metrics }, {
    resolveTimeoutMs: config.mirrorResolveTimeoutMs,
    resolveRetries: config.mirrorResolveRetries,
    ...(basicAuth === undefined ? {} : { basicAuth }),
    inflightTimeoutMinMs: MIRROR_INFLIGHT_TIMEOUT_MIN_MS
  })
  const handler = createRegistryHandler({ store, router: routerProxy, metrics, log }, { filters, basicAuth, mirror })
  const registryServer = createServer(handler, { log })
  const serveMetrics = createMetricsHandler(promRegistry)
  const debug = config.debugWebEnabled ? createDebugHandler({ store, router: () => router }) : undefined
  const metricsServer = http.createServer((req, res) => {
    if (debug !== undefined && req.url?.startsWith('/debug/') === true) {
      debug(req, res).then((handled) => {
        if (!handled) res.writeHead(404, { 'Content-Length': 0 }).end()
      }, (err: unknown) => {
        log.error({ err }, 'debug page failed')
        if (!res.headersSent) res.writeHead(500, { 'Content-Length': 0 })
        res.end()
      })
      return
    }
    if (req.url === '/metrics' && (req.method === 'GET' || req.method === 'HEAD')) {
      serveMetrics(req, res).catch((err: unknown) => {
        log.error({ err }, 'could not render metrics')
        if (!res.headersSent) res.writeHead(500, { 'Content-Length': 0 })
        res.end()
      })
      return
    }
    res.writeHead(404, { 'Content-Length': 0 }).end()
  })

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
    await listen(registryServer, config.registryAddr)
    await listen(metricsServer, config.metricsAddr)
    const registryPort = (registryServer.address() as AddressInfo).port
    router = await createP2PRouter({ log }, {
      listen: config.routerAddr,
      dataDir: config.dataDir,
      secretPath: config.routerSecretPath,
      registryAddress: advertisedRegistryAddress(config.registryAddr, config.routerAddr, registryPort),
      bootstrapper: createBootstrapper(config, { log })
    })
    routerProxy.set(router)
    await router.start()
  } catch (err) {
    return await fail(err)
  }
  stopSync = startSync({
    store,
    router,
    log,
    onAdvertised: () => { metrics.setAdvertisedCounts(store.advertisedCounts()) }
  })
  log.info({ registry: addressText(registryServer), metrics: addressText(metricsServer), router: router.multiaddrs(), peerId: router.peerId, containerdSock: config.containerdSock }, 'running spegel')

  if (!runtime.shutdown.aborted) await once(runtime.shutdown, 'abort')
  log.info('shutting down')
  stopSync()
  await Promise.all([closeServer(registryServer), closeServer(metricsServer), router.stop(), mirror.close(), supervisor.stop()])
  log.info('exit gracefully')
  return 0
}

/**
 * A single peer that holds content may be slow to answer on a loaded node; Spegel's 100 ms
 * floor turns that into a 404 and a failed pull when upstream is down. A second is still far
 * below containerd's patience, and hedged attempts go to other peers meanwhile.
 */
const MIRROR_INFLIGHT_TIMEOUT_MIN_MS = 1000

function addressText (server: http.Server): string {
  const address = server.address()
  if (address === null || typeof address === 'string') return String(address)
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`
}
