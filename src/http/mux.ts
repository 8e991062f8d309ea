import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import { writeError } from './errors.js'
import { clientIp, requestPath, trackResponse, type ResponseRecord } from './response.js'

export type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>

export interface Route {
  /**
   * `/exact`, or `/prefix/*` which matches `/prefix` and everything below `/prefix/`.
   * Also the metrics `handler` label, so labels never carry raw paths.
   */
  readonly pattern: string
  readonly handler: Handler
  /** Measured but never logged (probes: a log line every few seconds is noise). */
  readonly isQuiet?: boolean
  /** Left out of the HTTP metrics (Spegel does not measure its own /metrics route). */
  readonly isUnmeasured?: boolean
}

/** One finished request, as the mux saw it. */
export interface CompletedRequest {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly pathname: string
  readonly record: ResponseRecord
  readonly durationMs: number
}

export interface MuxComponents {
  log: Logger
  metrics?: Pick<Metrics, 'httpRequestDurationSeconds' | 'httpResponseSizeBytes' | 'httpRequestsInflight'>
  /** Called once per routed request after it closed (accounting, recent-request views). */
  onCompleted?: (request: CompletedRequest) => void
}

/**
 * Routes on the raw request path (no dot-segment or percent-decoding, so `/v2/../x` reaches
 * the `/v2/*` handler and is rejected there instead of silently becoming `/x`), and writes one
 * log line and one set of metrics per request when the response closes.
 */
export function createMux (components: MuxComponents, routes: readonly Route[]): (req: IncomingMessage, res: ServerResponse) => void {
  const { log, metrics, onCompleted } = components
  const matchers = routes.map((route) => ({ route, matches: matcher(route.pattern) }))

  return (req, res) => {
    const started = performance.now()
    const pathname = requestPath(req)
    let route: Route | undefined
    for (const m of matchers) {
      if (m.matches(pathname)) {
        route = m.route
        break
      }
    }

    if (route === undefined) {
      res.once('close', () => {
        log.debug({ method: req.method, path: pathname, status: res.statusCode, ip: clientIp(req), durationMs: elapsedMs(started) }, 'page not found')
      })
      res.writeHead(404, { 'Content-Length': 0 })
      res.end()
      return
    }

    const record = trackResponse(req, res, route.pattern)
    const method = req.method ?? ''
    const measured = route.isUnmeasured === true ? undefined : metrics
    measured?.httpRequestsInflight.inc({ handler: route.pattern })
    // Report once the response has closed and the handler has settled, whichever is last:
    // a handler may attach the error that explains a close only after the close happened
    // (pipeline destroys the response before its promise rejects).
    let pending = 2
    const done = (): void => {
      if (--pending !== 0) return
      const durationMs = elapsedMs(started)
      const code = String(res.statusCode)
      measured?.httpRequestsInflight.dec({ handler: route.pattern })
      measured?.httpRequestDurationSeconds.observe({ handler: route.pattern, method, code }, durationMs / 1000)
      measured?.httpResponseSizeBytes.observe({ handler: route.pattern, method, code }, record.bytesWritten)
      if (route.isQuiet !== true) logRequest(log, req, res, pathname, record, durationMs)
      if (onCompleted !== undefined) {
        try {
          onCompleted({ req, res, pathname, record, durationMs })
        } catch (err) {
          log.error({ err }, 'request completion hook failed')
        }
      }
    }
    // `on`, not `once`: the response is used once, and `once` costs a wrapper and a removal per request.
    res.on('close', done)

    let result: void | Promise<void> = undefined
    try {
      result = route.handler(req, res)
    } catch (err) {
      writeError(res, err)
    }
    if (result instanceof Promise) {
      result.then(done, (err: unknown) => {
        try {
          writeError(res, err)
        } finally {
          done()
        }
      })
    } else {
      done()
    }
  }
}

function matcher (pattern: string): (pathname: string) => boolean {
  if (pattern.endsWith('/*')) {
    const base = pattern.slice(0, -2)
    return (p) => p === base || p.startsWith(`${base}/`)
  }
  return (p) => p === pattern
}

function elapsedMs (started: number): number {
  return Math.round((performance.now() - started) * 1000) / 1000
}

function isAbort (err: unknown): boolean {
  return err instanceof Error && err.name === 'AbortError'
}

function logRequest (log: Logger, req: IncomingMessage, res: ServerResponse, pathname: string, record: ResponseRecord, durationMs: number): void {
  const status = res.statusCode
  // The common case logs at debug: skip building the line (the client address costs a syscall)
  // when nobody would see it.
  if (status < 400 && record.error === undefined && !log.isLevelEnabled('debug')) return
  // Closed before the last byte was flushed, by the client or by us after a mid-body failure.
  const isAborted = !res.writableFinished
  const fields: Record<string, unknown> = {
    ...record.attrs,
    handler: record.handler,
    method: req.method,
    path: pathname,
    status,
    durationMs,
    bytes: record.bytesWritten,
    ip: clientIp(req)
  }
  if (isAborted) fields.aborted = true
  if (record.error !== undefined) fields.err = record.error

  if (status >= 500) {
    log.error(fields, 'request')
  } else if (status >= 400 && status !== 404) {
    log.warn(fields, 'request')
  } else if (record.error !== undefined && !isAbort(record.error) && status < 400) {
    // A success status with an error attached means the body broke after the headers went out.
    log.error(fields, 'request')
  } else {
    log.debug(fields, 'request')
  }
}
