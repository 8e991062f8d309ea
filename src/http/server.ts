import { readFileSync } from 'node:fs'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { Server as NetServer, type AddressInfo, type ListenOptions, type Socket } from 'node:net'
import type { Logger } from '../observability/logger.js'
import { http } from './node-http.js'

export interface ServerOptions {
  log: Logger
  /** Names this server in its log lines (`server` field), e.g. `registry`. */
  serverName?: string
  /** Time a client has, from connecting or from the first byte of a request, to send the request headers. */
  headersTimeoutMs?: number
  /** Time a client has to send a whole request (headers and body); bodies are never expected here. */
  requestTimeoutMs?: number
  /** How long an idle keep-alive connection stays open between requests. */
  keepAliveTimeoutMs?: number
  /** A connection with no traffic either way for this long is destroyed (a stalled reader holds a store stream). */
  socketTimeoutMs?: number
  /** Pending connections the kernel queues before this process accepts them (capped by net.core.somaxconn). */
  listenBacklog?: number
  /** Listening sockets on the address (SO_REUSEPORT, Linux); each accepts one connection per event-loop turn. 1 = one plain socket. */
  acceptors?: number
  /** Requests worked on at once until their response headers are written; later ones wait in arrival order. 0 = no limit. */
  maxPreparing?: number
  /**
   * A response whose client takes fewer than `minSendBytes` within `slowClientWindowMs`,
   * while bytes wait for it, is cut. 0 turns the check off.
   */
  slowClientWindowMs?: number
  minSendBytes?: number
  /** How often connections are checked for the header timeout and the slow-client rule. */
  checkIntervalMs?: number
}

/**
 * Requests here are a few hundred bytes, so a client that has not sent its headers after this
 * long is stuck or hostile. Node also counts it from the moment a connection is accepted, so a
 * connection that never sends anything is cut after the same time.
 */
export const DEFAULT_HEADERS_TIMEOUT_MS = 15_000
/**
 * Bounds receiving a request, body included (Node's requestTimeout never covers the response,
 * so it does not cut long blob streams). Only rejected uploads ever carry a body here.
 */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000
/** Longer than Go's default 90 s idle timeout, so containerd closes idle connections before we do and never races a request against our close. */
export const DEFAULT_KEEP_ALIVE_TIMEOUT_MS = 95_000
export const DEFAULT_SOCKET_TIMEOUT_MS = 120_000
/**
 * Node listens with a backlog of 511. Two thousand clients connecting at once (a node starting
 * many pods, or `ab -c 1000` twice) overflow that while the event loop is busy serving, and the
 * kernel then drops handshakes, which clients see as 1 s, 3 s, 7 s... stalls or resets. The
 * kernel caps the value at net.core.somaxconn (4096 since Linux 5.4).
 */
export const DEFAULT_LISTEN_BACKLOG = 4096
/**
 * The slow-client floor: 32 KiB per 30 s, about 8 kbit/s. A slow-read client (reading a byte a
 * second, or a burst just before each inactivity timeout) would otherwise hold a connection,
 * a file handle and send buffers for as long as it likes, since each byte it takes counts as
 * activity. A real containerd never comes near the floor: even a 1 Mbit/s link moves 3.7 MB in
 * the window, kernel socket buffers absorb pauses of seconds, and a 1 GiB layer at the floor
 * would take twelve days. Only time during which bytes wait for the client counts: a response
 * that is slow because of us (a peer, the disk) is never cut by this rule.
 */
export const DEFAULT_SLOW_CLIENT_WINDOW_MS = 30_000
export const DEFAULT_MIN_SEND_BYTES = 32 * 1024
/**
 * Node (libuv 1.52) accepts one connection per listening socket per event-loop turn. Under load a
 * turn takes 100-250 ms, so 2,000 clients connecting at once waited in the kernel's accept queue
 * for up to 140 s while the clients already accepted were served again and again (bench/load.ts,
 * mirror target: 680 connections still queued a minute in, `ss -ltn` Recv-Q, one accept4 per turn
 * in strace). The kernel spreads connections over SO_REUSEPORT sockets, and each accepts once per
 * turn: with 8 sockets the last of 2,000 connections still waited 250 turns (GET p99 23 s), with
 * 64 about 30. A listening socket costs one descriptor. Only sockets of the same user can join a
 * SO_REUSEPORT group, and a port taken by any other socket still fails with EADDRINUSE; so that a
 * second spegel-ts on the same port fails too instead of sharing it, `listen` (lifecycle.ts)
 * first binds the address without SO_REUSEPORT.
 */
export const DEFAULT_ACCEPTORS = process.platform === 'linux' ? 64 : 1
/**
 * Requests being prepared at once (looked up, raced among peers: everything before the response
 * headers); streaming a body does not count, so a slow download never holds others up. With every
 * connection accepted promptly (see DEFAULT_ACCEPTORS), 2,000 requests at once on 2 cores each took
 * so long that manifest HEADs ran past their 3 s deadline and peers' answers past the race's
 * in-flight bound (3,400 failed of 50,000 under bench/load.ts, mirror target); in arrival order
 * behind a bound, each is quick once it starts.
 */
export const DEFAULT_MAX_PREPARING = 128
/**
 * Requests under `/v2` only: probes (`/readyz`, `/livez`) and the metrics port never wait behind
 * the bound.
 */
/** Node checks header timeouts every 30 s by default, which stretches a 15 s timeout to 45 s. */
export const DEFAULT_CHECK_INTERVAL_MS = 2_000
/** Below this many open files a burst of connections can run the process out of descriptors. */
export const MIN_OPEN_FILES = 8192

interface Progress { bytes: number, sinceMs: number }

/**
 * A plain HTTP/1.1 server with limits suited to long blob streams and many clients: no bound
 * on the time a response takes, but bounded header time, request time, idle keep-alive time,
 * per-socket inactivity, and a floor on how slowly a client may take a response.
 */
export function createServer (handler: (req: IncomingMessage, res: ServerResponse) => void, options: ServerOptions): Server {
  const log = options.serverName === undefined ? options.log : options.log.child({ server: options.serverName })
  const headersTimeoutMs = options.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS
  const checkIntervalMs = options.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS
  const maxPreparing = options.maxPreparing ?? DEFAULT_MAX_PREPARING
  const server = new http.Server({
    headersTimeout: headersTimeoutMs,
    // Node refuses a request timeout below the header timeout.
    requestTimeout: Math.max(options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, headersTimeoutMs),
    keepAliveTimeout: options.keepAliveTimeoutMs ?? DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
    connectionsCheckingInterval: checkIntervalMs
  }, maxPreparing > 0 ? preparingLimit(handler, maxPreparing) : handler)
  // With no 'timeout' listener Node destroys the socket, which is what a stalled transfer needs.
  server.setTimeout(options.socketTimeoutMs ?? DEFAULT_SOCKET_TIMEOUT_MS)
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    log.debug({ err, code: err.code }, 'client error')
    // Same answers Node gives without a listener, minus the noise for resets.
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy()
      return
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request'
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
  })
  const acceptors = Math.max(1, Math.floor(options.acceptors ?? DEFAULT_ACCEPTORS))
  withListenBacklog(server, options.listenBacklog ?? DEFAULT_LISTEN_BACKLOG, acceptors > 1)
  if (acceptors > 1) withExtraAcceptors(server, log, acceptors - 1, options.listenBacklog ?? DEFAULT_LISTEN_BACKLOG)
  const windowMs = options.slowClientWindowMs ?? DEFAULT_SLOW_CLIENT_WINDOW_MS
  if (windowMs > 0) cutSlowClients(server, log, { windowMs, minBytes: options.minSendBytes ?? DEFAULT_MIN_SEND_BYTES, intervalMs: checkIntervalMs })
  server.once('listening', () => { warnOnFewOpenFiles(log) })
  return server
}

/**
 * Makes `listen(port, host)` (and the options form without a backlog) use `backlog`: callers
 * keep their usual call, and the server, not each caller, owns how many handshakes may queue.
 */
function withListenBacklog (server: Server, backlog: number, isReusePort: boolean): void {
  const listen = server.listen.bind(server) as (...args: unknown[]) => Server
  server.listen = function (this: Server, ...args: unknown[]): Server {
    const callback = typeof args.at(-1) === 'function' ? args.pop() : undefined
    const [first, second, third] = args
    let listenOptions: ListenOptions | undefined
    const reuse = isReusePort ? { reusePort: true } : {}
    if (first !== null && typeof first === 'object' && !('backlog' in first) && !('fd' in first) && !('_handle' in first)) {
      listenOptions = { ...reuse, ...(first as ListenOptions), backlog }
    } else if ((typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) && third === undefined) {
      listenOptions = { port: Number(first), backlog, ...reuse, ...(typeof second === 'string' ? { host: second } : {}) }
      if (typeof second === 'number') listenOptions.backlog = second
    } else if (first === undefined) {
      listenOptions = { port: 0, backlog, ...reuse }
    }
    const callArgs = listenOptions === undefined ? args : [listenOptions]
    return callback === undefined ? listen(...callArgs) : listen(...callArgs, callback)
  } as Server['listen']
}

/**
 * Runs at most `limit` requests at once until each writes its response headers (or its response
 * closes); the others wait in arrival order. The queue is bounded by the open connections (one
 * request at a time each), and one whose client left meanwhile is dropped when its turn comes.
 */
function preparingLimit (handler: (req: IncomingMessage, res: ServerResponse) => void, limit: number): (req: IncomingMessage, res: ServerResponse) => void {
  let preparing = 0
  const waiting: Array<() => void> = []
  const next = (): void => {
    while (preparing < limit) {
      const start = waiting.shift()
      if (start === undefined) return
      start()
    }
  }
  return (req, res) => {
    // Probes and metrics never queue: a kubelet probe times out after 1 s by default, and a node
    // that is busy serving is neither dead nor unready.
    if (req.url === undefined || !req.url.startsWith('/v2')) {
      handler(req, res)
      return
    }
    const start = (): void => {
      if (res.destroyed || req.socket.destroyed) return
      preparing++
      let isDone = false
      const done = (): void => {
        if (isDone) return
        isDone = true
        preparing--
        res.writeHead = writeHead
        // Not from inside this response's writeHead: the next handler must not run (or throw) there.
        queueMicrotask(next)
      }
      const writeHead = res.writeHead
      res.writeHead = function (this: ServerResponse, ...args: unknown[]): ServerResponse {
        done()
        return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args)
      } as ServerResponse['writeHead']
      handler(req, res)
      // A response whose headers went out inside the handler (a local HEAD) has released its
      // place already and needs no listener; 'close' is emitted on a later tick, so one added
      // now still hears a client that leaves while the handler waits.
      if (!isDone) res.once('close', done)
    }
    if (preparing < limit && waiting.length === 0) start()
    else waiting.push(start)
  }
}

/**
 * Once `server` listens on a TCP address with SO_REUSEPORT, `count` more sockets listen on the
 * same address and hand their connections to it (see DEFAULT_ACCEPTORS). They stop listening when
 * the server does. One that cannot listen (no SO_REUSEPORT, say) is only logged: the server
 * itself still accepts everything.
 */
function withExtraAcceptors (server: Server, log: Logger, count: number, backlog: number): void {
  let extras: NetServer[] = []
  const closeExtras = (): void => {
    for (const extra of extras.splice(0)) extra.close()
  }
  server.on('listening', () => {
    closeExtras()
    const address = server.address()
    if (address === null || typeof address === 'string') return
    const { address: host, port } = address as AddressInfo
    for (let i = 0; i < count; i++) {
      const extra = new NetServer((socket) => { server.emit('connection', socket) })
      extra.on('error', (err) => {
        log.debug({ err, port }, 'extra acceptor could not listen; one socket accepts')
        extras = extras.filter((e) => e !== extra)
      })
      extra.listen({ host, port, backlog, reusePort: true })
      extras.push(extra)
    }
  })
  const close = server.close.bind(server)
  server.close = function (this: Server, callback?: (err?: Error) => void): Server {
    closeExtras()
    return close(callback)
  }
}

/**
 * Destroys connections whose client takes less than `minBytes` in `windowMs` while bytes wait
 * for it. The socket inactivity timeout cannot do this: every byte a slow reader takes is
 * activity. One sweep per server, not one timer per connection.
 */
function cutSlowClients (server: Server, log: Logger, rule: { windowMs: number, minBytes: number, intervalMs: number }): void {
  const sockets = new Set<Socket>()
  const progress = new WeakMap<Socket, Progress>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => { sockets.delete(socket) })
  })
  const sweep = (): void => {
    const nowMs = performance.now()
    for (const socket of sockets) {
      // Nothing queued for the client: it is not the one holding anything up.
      if (socket.writableLength === 0 || socket.destroyed) {
        progress.delete(socket)
        continue
      }
      // Bytes the kernel has taken: dispatched to the socket minus what still waits in it.
      const sentBytes = socket.bytesWritten - socket.writableLength
      const last = progress.get(socket)
      if (last === undefined || sentBytes - last.bytes >= rule.minBytes) {
        progress.set(socket, { bytes: sentBytes, sinceMs: nowMs })
        continue
      }
      if (nowMs - last.sinceMs < rule.windowMs) continue
      log.info({
        event: 'slow_client_cut',
        ip: socket.remoteAddress,
        port: socket.remotePort,
        bytes: sentBytes - last.bytes,
        windowMs: Math.round(nowMs - last.sinceMs),
        pendingBytes: socket.writableLength
      }, 'connection cut: client took too few bytes')
      // A reset, not a FIN: a FIN would queue behind the bytes the client is not taking, and the
      // kernel would keep them (and the connection) for minutes after we let go.
      socket.resetAndDestroy()
    }
  }
  let timer: NodeJS.Timeout | undefined
  server.on('listening', () => {
    if (timer !== undefined) return
    timer = setInterval(sweep, rule.intervalMs)
    timer.unref()
  })
  server.on('close', () => {
    clearInterval(timer)
    timer = undefined
  })
}

/**
 * Node raises its soft open-files limit to the hard limit when it starts, so the hard limit is
 * what this process gets: say so when it is too low for thousands of connections, since the
 * symptom (accepted connections reset at once, files failing to open) points elsewhere.
 */
function warnOnFewOpenFiles (log: Logger): void {
  const limit = openFilesLimit()
  if (limit === undefined || limit >= MIN_OPEN_FILES) return
  log.warn({
    event: 'open_files_limit_low',
    reason: `the process may open ${limit} files; each client connection and each blob being served takes one`,
    fix: `raise the hard RLIMIT_NOFILE of the container or service to at least ${MIN_OPEN_FILES} (containerd's and Docker's defaults are far higher; systemd: LimitNOFILE=)`
  }, 'open files limit is low')
}

/** The soft RLIMIT_NOFILE of this process, from /proc (undefined where there is none). */
export function openFilesLimit (limitsText?: string): number | undefined {
  let text = limitsText
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8')
    } catch {
      return undefined
    }
  }
  const m = /^Max open files\s+(\S+)/m.exec(text)
  if (m === null) return undefined
  return m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1])
}
