import type { IncomingMessage, ServerResponse } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import { ConfigError, parseHostPort, type HostPort } from '../../config/index.js'
import type { Logger } from '../../observability/logger.js'
import { callSignal } from './abort.js'
import { loadCertDir, type BootstrapTls } from './cert-dir.js'
import { DEFAULT_CALL_TIMEOUT_MS, MAX_BOOTSTRAP_PEERS, MAX_ID_RESPONSE_BYTES, SERVE_SHUTDOWN_TIMEOUT_MS } from './constants.js'
import { BootstrapError } from './errors.js'
import { decodePeerId, parseAddrInfo, parseMultiaddr } from './peer-addr.js'
import type { BootstrapPeer, Bootstrapper, SelfInfo } from './types.js'
import { http } from '../../http/node-http.js'

export interface HttpBootstrapperInit {
  /** --http-bootstrap-addr: `host:port` to serve `/id` on (plain HTTP, as Spegel); empty serves nothing. */
  addr: string
  /** --http-bootstrap-url: where `discover` GETs peers; empty makes `discover` return `[]`. */
  url: string
  /** --http-bootstrap-cert-dir: client TLS for `url` (ca.crt, tls.crt, tls.key); empty for none. */
  certDir: string
  /** Per GET; defaults to DEFAULT_CALL_TIMEOUT_MS. */
  timeoutMs?: number
  /** How long `serve` waits for open requests after its signal aborts; Spegel's 30 s by default. */
  shutdownTimeoutMs?: number
  /** Called once `serve` listens, with the bound address (port 0 picks a free one). */
  onListening?: (address: AddressInfo) => void
}

export interface HttpBootstrapperComponents {
  log?: Logger
}

const ADDR_FLAG = '--http-bootstrap-addr'
const CERT_DIR_FLAG = '--http-bootstrap-cert-dir'
const URL_FLAG = '--http-bootstrap-url'

/**
 * Spegel's HTTP bootstrapper. `serve` answers `/id` (any method) with
 * `[{"ID":"<peer id>","Addrs":["/ip4/…/tcp/5001",…]}]`, libp2p's AddrInfo JSON, so Go Spegel
 * nodes can bootstrap from us and we from them; every other path is 404. `discover` GETs the URL
 * and keeps the first 3 entries. Throws ConfigError (naming the flag) for a bad addr, URL or cert dir.
 */
export function httpBootstrapper (init: HttpBootstrapperInit, components: HttpBootstrapperComponents = {}): Bootstrapper {
  const log = components.log
  const timeoutMs = init.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS
  const shutdownTimeoutMs = init.shutdownTimeoutMs ?? SERVE_SHUTDOWN_TIMEOUT_MS
  const listenAddr = init.addr === '' ? undefined : parseHostPort(init.addr, ADDR_FLAG)
  const url = init.url === '' ? undefined : parseUrl(init.url)
  let tls: BootstrapTls | undefined
  try {
    tls = loadCertDir(init.certDir)
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    const fix = `put PEM files ca.crt and/or tls.crt with tls.key in ${init.certDir}, or leave ${CERT_DIR_FLAG} empty`
    throw new ConfigError(`invalid ${CERT_DIR_FLAG} ${JSON.stringify(init.certDir)}: ${reason}; ${fix}`, { flag: CERT_DIR_FLAG, fix, cause: err })
  }

  return {
    kind: 'http',
    async discover (options = {}) {
      if (url === undefined) return []
      options.signal?.throwIfAborted()
      const call = callSignal(options.signal, timeoutMs)
      let body: Buffer
      try {
        body = await get(url, tls, call.signal)
      } catch (err) {
        if (options.signal?.aborted === true) throw options.signal.reason
        if (call.timeout.aborted) throw new BootstrapError(`GET ${url.href} timed out after ${timeoutMs} ms`, { cause: err })
        if (err instanceof BootstrapError) throw err
        throw new BootstrapError(`GET ${url.href} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
      }
      try {
        return parseIdResponse(body)
      } catch (err) {
        throw new BootstrapError(`invalid answer from ${url.href}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
      }
    },
    async serve (self, signal) {
      if (listenAddr === undefined || signal.aborted) {
        await waitForAbort(signal)
        return
      }
      await serveId(listenAddr, self, signal, { shutdownTimeoutMs, onListening: init.onListening, log })
    }
  }
}

function parseUrl (s: string): URL {
  const fix = `set ${URL_FLAG} (env HTTP_BOOTSTRAP_URL) to a full URL such as http://spegel-bootstrap:5002/id`
  let url: URL
  try {
    url = new URL(s)
  } catch (err) {
    throw new ConfigError(`invalid ${URL_FLAG} ${JSON.stringify(s)}: not a URL; ${fix}`, { flag: URL_FLAG, fix, cause: err })
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`invalid ${URL_FLAG} ${JSON.stringify(s)}: must use http or https; ${fix}`, { flag: URL_FLAG, fix })
  }
  return url
}

async function waitForAbort (signal: AbortSignal): Promise<void> {
  if (signal.aborted) return
  await new Promise<void>((resolve) => { signal.addEventListener('abort', () => { resolve() }, { once: true }) })
}

interface ServeOptions {
  shutdownTimeoutMs: number
  onListening: ((address: AddressInfo) => void) | undefined
  log: Logger | undefined
}

async function serveId (addr: HostPort, self: () => SelfInfo, signal: AbortSignal, options: ServeOptions): Promise<void> {
  const { log } = options
  const server = http.createServer((req, res) => { handleId(req, res, self, log) })
  // Peers send one tiny request; a client that dawdles gets dropped instead of holding a socket.
  server.headersTimeout = 10_000
  server.requestTimeout = 10_000
  const shown = addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      // No host: every interface, both families, like Go's ":port".
      server.listen({ port: addr.port, ...(addr.host === '' ? {} : { host: addr.host }) }, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    throw new BootstrapError(`cannot serve /id on ${ADDR_FLAG} ${shown}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  const bound = server.address() as AddressInfo
  log?.info({ addr: shown, port: bound.port }, 'serving bootstrap id')
  options.onListening?.(bound)

  let failure: unknown
  await new Promise<void>((resolve) => {
    const onAbort = (): void => { done() }
    const onError = (err: Error): void => { failure = err; done() }
    const done = (): void => {
      signal.removeEventListener('abort', onAbort)
      server.off('error', onError)
      resolve()
    }
    signal.addEventListener('abort', onAbort, { once: true })
    server.on('error', onError)
    if (signal.aborted) done()
  })

  const closed = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  server.closeIdleConnections()
  // Requests still running after the grace period are cut, so shutdown always ends.
  const timer = setTimeout(() => { server.closeAllConnections() }, options.shutdownTimeoutMs)
  timer.unref()
  await closed
  clearTimeout(timer)
  if (failure !== undefined) {
    throw new BootstrapError(`/id server on ${ADDR_FLAG} ${shown} failed: ${failure instanceof Error ? failure.message : String(failure)}`, { cause: failure })
  }
}

function handleId (req: IncomingMessage, res: ServerResponse, self: () => SelfInfo, log: Logger | undefined): void {
  let path: string
  try {
    path = new URL(req.url ?? '/', 'http://bootstrap').pathname
  } catch {
    path = ''
  }
  if (path !== '/id') {
    // Go's http.NotFound, which Spegel's mux answers for every other path.
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff' })
    res.end('404 page not found\n')
    return
  }
  let body: string
  try {
    const info = self()
    body = JSON.stringify([{ ID: info.id, Addrs: [...info.addrs] }])
  } catch (err) {
    log?.warn({ err }, 'bootstrap self info unavailable')
    res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' })
    res.end('self info unavailable\n')
    return
  }
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

async function get (url: URL, tls: BootstrapTls | undefined, signal: AbortSignal): Promise<Buffer> {
  return await new Promise<Buffer>((resolve, reject) => {
    const common = {
      method: 'GET',
      // A fresh connection per call, closed afterwards: discovery is rare and no socket may outlive it.
      agent: false as const,
      signal,
      headers: { accept: 'application/json' }
    }
    const onResponse = (res: IncomingMessage): void => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (chunk: Buffer) => {
        size += chunk.length
        if (size > MAX_ID_RESPONSE_BYTES) {
          req.destroy(new BootstrapError(`answer from ${url.href} is larger than ${MAX_ID_RESPONSE_BYTES} bytes`))
          return
        }
        chunks.push(chunk)
      })
      res.on('error', reject)
      res.on('close', () => {
        if (!res.complete) {
          reject(new Error('connection closed before the answer was complete'))
          return
        }
        const body = Buffer.concat(chunks)
        if (res.statusCode !== 200) {
          const text = body.toString('utf8', 0, Math.min(body.length, 512)).trim()
          reject(new BootstrapError(`GET ${url.href}: unexpected status ${res.statusCode ?? 0}${text === '' ? '' : `: ${text}`}`))
          return
        }
        resolve(body)
      })
    }
    const req = url.protocol === 'https:'
      ? httpsRequest(url, { ...common, minVersion: 'TLSv1.2', ...(tls?.ca === undefined ? {} : { ca: [...tls.ca] }), ...(tls?.cert === undefined ? {} : { cert: tls.cert, key: tls.key }) }, onResponse)
      : http.request(url, common, onResponse)
    req.on('error', reject)
    req.end()
  })
}

/**
 * Reads what a bootstrap endpoint answered: Spegel's JSON array of `{"ID", "Addrs"}` (ID may be
 * empty or missing; keys matched case-insensitively like Go's encoding/json), a single such
 * object, or an array of multiaddr strings (`…/p2p/<id>` optional). Only the first 3 entries are
 * used, as in Spegel; an invalid multiaddr or peer id in them fails the whole answer.
 */
export function parseIdResponse (body: Buffer | string): BootstrapPeer[] {
  const json: unknown = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'))
  if (json === null) return []
  const entries: unknown[] = Array.isArray(json) ? json : [json]
  return entries.slice(0, MAX_BOOTSTRAP_PEERS).map((entry, i) => {
    try {
      return parseEntry(entry)
    } catch (err) {
      throw new Error(`entry ${i}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
  })
}

function parseEntry (entry: unknown): BootstrapPeer {
  if (typeof entry === 'string') return parseAddrInfo(entry, false)
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    throw new Error('expected an object with ID and Addrs or a multiaddr string')
  }
  const record = entry as Record<string, unknown>
  const id = field(record, 'ID')
  const addrs = field(record, 'Addrs')
  if (id !== undefined && id !== null && typeof id !== 'string') throw new Error('ID must be a string')
  if (addrs !== undefined && addrs !== null && !Array.isArray(addrs)) throw new Error('Addrs must be an array')
  const parsedAddrs = (addrs ?? []).map((a: unknown) => {
    if (typeof a !== 'string') throw new Error('Addrs must hold multiaddr strings')
    return parseMultiaddr(a)
  })
  return typeof id === 'string' && id !== '' ? { id: decodePeerId(id), addrs: parsedAddrs } : { addrs: parsedAddrs }
}

/** Go's encoding/json: an exact key wins, otherwise any key equal ignoring case. */
function field (record: Record<string, unknown>, name: string): unknown {
  if (Object.hasOwn(record, name)) return record[name]
  const lower = name.toLowerCase()
  const key = Object.keys(record).find((k) => k.toLowerCase() === lower)
  return key === undefined ? undefined : record[key]
}
