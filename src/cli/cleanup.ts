import dns from 'node:dns'
import type { Server } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import type { CleanupConfig, CleanupWaitConfig, HostPort } from '../config/index.js'
import { cleanupMirrorConfiguration } from '../mirror-config/index.js'
import { createLogger, parseLogLevel, type Logger } from '../observability/logger.js'
import { addressText, closeGracefully, listen } from '../http/lifecycle.js'
import { describeFailure } from './configuration.js'
import { http } from '../http/node-http.js'

export type { CleanupConfig, CleanupWaitConfig } from '../config/index.js'

/**
 * Spegel's values (pkg/cleanup/cleanup.go): graceful stop of the probe server, per-request
 * timeout, parallel probes.
 */
export const CLEANUP_SHUTDOWN_TIMEOUT_MS = 30_000
export const PROBE_TIMEOUT_MS = 1_000
export const PROBE_CONCURRENCY = 10

export interface CleanupRuntime {
  /** Aborted on SIGINT/SIGTERM by main.ts. */
  shutdown: AbortSignal
  log?: Logger
  /** Called once the probe server listens, with its bound address (useful with port 0). */
  onListening?: (address: AddressInfo) => void
}

/**
 * Answers 200 to `GET /readyz` and 404 to everything else, as Spegel intends; its
 * pkg/cleanup/cleanup.go tests with `&&` where it means `||`, so it answers 200 to any GET.
 */
export function createCleanupProbeServer (): Server {
  return http.createServer((req, res) => {
    const pathname = (req.url ?? '').split('?', 1)[0]
    const status = req.method === 'GET' && pathname === '/readyz' ? 200 : 404
    res.writeHead(status, { 'Content-Length': 0 }).end()
  })
}

/**
 * `spegel cleanup` (uninstall hook, one pod per node): restores the backed-up containerd
 * configuration, then serves `GET /readyz` on `--addr` until SIGINT/SIGTERM, so that cleanup-wait
 * can tell every node is done.
 */
export async function runCleanup (config: CleanupConfig, runtime: CleanupRuntime): Promise<number> {
  const log = runtime.log ?? createLogger({ level: parseLogLevel(config.logLevel) ?? 'info' })
  try {
    await cleanupMirrorConfiguration({ log }, config.containerdRegistryConfigPath)
  } catch (err) {
    log.error(describeFailure(err, config.containerdRegistryConfigPath), 'exit with error')
    return 1
  }
  const server = createCleanupProbeServer()
  let address: AddressInfo
  try {
    address = await listen(server, config.addr)
  } catch (err) {
    log.error({ err: (err as Error).message, addr: config.addr }, 'exit with error')
    return 1
  }
  log.info({ addr: addressText(server) }, 'waiting to be shutdown')
  runtime.onListening?.(address)
  if (!runtime.shutdown.aborted) await once(runtime.shutdown, 'abort')
  await closeGracefully(server, { graceMs: CLEANUP_SHUTDOWN_TIMEOUT_MS })
  log.info('exit gracefully')
  return 0
}

export interface CleanupWaitRuntime {
  /** Aborted on SIGINT/SIGTERM by main.ts; waiting then fails (exit 1), as a cancelled context does in Spegel. */
  shutdown: AbortSignal
  log?: Logger
  /**
   * Every address of a name; default: the system resolver (`dns.lookup`, so /etc/hosts and IP
   * literals work). A seam for tests that need several addresses without a headless Service.
   */
  lookup?: (host: string) => Promise<string[]>
  probeTimeoutMs?: number
  concurrency?: number
}

class ProbeError extends Error {
  constructor (readonly stage: 'lookup' | 'request', message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'ProbeError'
  }
}

async function systemLookup (host: string): Promise<string[]> {
  const addresses = await dns.promises.lookup(host, { all: true, order: 'verbatim' })
  return [...new Set(addresses.map((a) => a.address))]
}

/** `GET http://<ip>:<port>/readyz`; resolves on 200, throws otherwise. */
async function probeOnce (ip: string, port: number, signal: AbortSignal): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    // No agent: one connection per probe, closed after, so nothing outlives the round.
    const req = http.request({ host: ip, port, path: '/readyz', method: 'GET', agent: false, signal }, (res) => {
      res.resume()
      res.once('error', reject)
      res.once('end', () => {
        if (res.statusCode === 200) resolve()
        else reject(new Error(`GET http://${ip.includes(':') ? `[${ip}]` : ip}:${port}/readyz returned ${res.statusCode ?? 'no status'}`))
      })
    })
    req.once('error', reject)
    req.end()
  })
}

interface RoundOptions {
  lookup: (host: string) => Promise<string[]>
  probeTimeoutMs: number
  concurrency: number
}

/**
 * One round: resolve the name (a headless Service: one address per cleanup pod), then every
 * address must answer 200, at most `concurrency` at a time.
 */
async function probeRound (endpoint: HostPort, signal: AbortSignal, opts: RoundOptions): Promise<number> {
  let ips: string[]
  try {
    ips = await opts.lookup(endpoint.host)
  } catch (err) {
    throw new ProbeError('lookup', `cannot resolve ${endpoint.host}: ${(err as Error).message}`, { cause: err })
  }
  // An empty answer would make the round pass without probing anything.
  if (ips.length === 0) throw new ProbeError('lookup', `${endpoint.host} resolved to no addresses`)
  const failed = new AbortController()
  const roundSignal = AbortSignal.any([signal, failed.signal])
  let next = 0
  let firstError: unknown
  const worker = async (): Promise<void> => {
    while (next < ips.length && firstError === undefined) {
      const ip = ips[next++] ?? ''
      try {
        await probeOnce(ip, endpoint.port, AbortSignal.any([roundSignal, AbortSignal.timeout(opts.probeTimeoutMs)]))
      } catch (err) {
        if (firstError === undefined) firstError = err
        // The round has failed; stop the probes still in flight.
        failed.abort()
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, ips.length) }, worker))
  if (firstError !== undefined) {
    const e = firstError as Error
    const message = e.name === 'TimeoutError' || e.name === 'AbortError' ? `probe timed out or was cancelled: ${e.message}` : e.message
    throw new ProbeError('request', message, { cause: firstError })
  }
  return ips.length
}

/**
 * Probe rounds, the first at once, then one every `periodMs`, until `threshold` consecutive rounds
 * succeed. Rejects with the shutdown signal's reason when aborted first.
 */
export async function waitForCleanup (config: CleanupWaitConfig, log: Logger, signal: AbortSignal, opts: RoundOptions): Promise<void> {
  let count = 0
  for (;;) {
    signal.throwIfAborted()
    const started = performance.now()
    try {
      const addresses = await probeRound(config.probeEndpoint, signal, opts)
      count++
      log.info({ threshold: config.threshold, count, addresses, durationMs: Math.round(performance.now() - started) }, 'probe ran successfully')
      if (count >= config.threshold) {
        log.info({ threshold: config.threshold }, 'probe threshold reached')
        return
      }
    } catch (err) {
      signal.throwIfAborted()
      if (!(err instanceof ProbeError)) throw err
      count = 0
      log.warn({ err: err.message, endpoint: `${config.probeEndpoint.host}:${config.probeEndpoint.port}` },
        err.stage === 'lookup' ? 'cleanup probe lookup failed' : 'cleanup probe request failed')
    }
    await delay(Math.max(0, config.periodMs - (performance.now() - started)), undefined, { signal })
  }
}

/**
 * `spegel cleanup-wait` (uninstall hook, one pod): blocks until every cleanup pod behind
 * `--probe-endpoint` has answered `GET /readyz` in `--threshold` consecutive rounds. 0 then; 1 when
 * shut down first.
 */
export async function runCleanupWait (config: CleanupWaitConfig, runtime: CleanupWaitRuntime): Promise<number> {
  const log = runtime.log ?? createLogger({ level: parseLogLevel(config.logLevel) ?? 'info' })
  try {
    await waitForCleanup(config, log, runtime.shutdown, {
      lookup: runtime.lookup ?? systemLookup,
      probeTimeoutMs: runtime.probeTimeoutMs ?? PROBE_TIMEOUT_MS,
      concurrency: runtime.concurrency ?? PROBE_CONCURRENCY
    })
  } catch (err) {
    const reason = runtime.shutdown.aborted ? 'shut down before the cleanup probes succeeded' : (err as Error).message
    log.error({ err: reason }, 'exit with error')
    return 1
  }
  log.info('exit gracefully')
  return 0
}
