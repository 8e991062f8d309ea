import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Logger } from '../observability/logger.js'

export interface ServerOptions {
  log: Logger
  /** Names this server in its log lines (`server` field), e.g. `registry`. */
  serverName?: string
  /** Time a client has to send the request headers. */
  headersTimeoutMs?: number
  /** How long an idle keep-alive connection stays open between requests. */
  keepAliveTimeoutMs?: number
  /** A connection with no traffic either way for this long is destroyed (a stalled reader holds a store stream). */
  socketTimeoutMs?: number
}

/** Requests are small, so a slow header is a stuck or hostile client. */
export const DEFAULT_HEADERS_TIMEOUT_MS = 20_000
/** Longer than Go's default 90 s idle timeout, so containerd closes idle connections before we do and never races a request against our close. */
export const DEFAULT_KEEP_ALIVE_TIMEOUT_MS = 95_000
export const DEFAULT_SOCKET_TIMEOUT_MS = 120_000

/**
 * A plain HTTP/1.1 server with timeouts suited to long blob streams: no overall request
 * timeout (Node's 300 s default would cut multi-GiB layers), but bounded header time, idle
 * keep-alive time and per-socket inactivity.
 */
export function createServer (handler: (req: IncomingMessage, res: ServerResponse) => void, options: ServerOptions): Server {
  const log = options.serverName === undefined ? options.log : options.log.child({ server: options.serverName })
  const server = createHttpServer({
    requestTimeout: 0,
    headersTimeout: options.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS,
    keepAliveTimeout: options.keepAliveTimeoutMs ?? DEFAULT_KEEP_ALIVE_TIMEOUT_MS
  }, handler)
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
  return server
}
