import type { IncomingMessage, ServerResponse } from 'node:http'

/** What the mux learns about one response, for its single log line and metrics. */
export interface ResponseRecord {
  /** Route pattern, e.g. `/v2/*`; the metrics `handler` label. */
  readonly handler: string
  /** Body bytes handed to the socket (0 for HEAD). */
  bytesWritten: number
  /** The error the response was about, if any (set by writeError or attachError). */
  error: unknown
  /** Extra log fields, e.g. `{ registry, digest }`. */
  readonly attrs: Record<string, unknown>
}

/** The record rides on the response itself: a property read is cheaper per request than a WeakMap. */
const RECORD = Symbol('spegel.responseRecord')
type Tracked = ServerResponse & { [RECORD]?: ResponseRecord }

/**
 * Starts recording `res`: counts body bytes by wrapping write/end on this instance only
 * (the count must be exact for the size histogram and for writeError's "body started"
 * test, and the socket's own counter includes headers and other requests on it).
 */
export function trackResponse (req: IncomingMessage, res: ServerResponse, handler: string): ResponseRecord {
  const record: ResponseRecord = { handler, bytesWritten: 0, error: undefined, attrs: {} }
  ;(res as Tracked)[RECORD] = record
  if (req.method === 'HEAD') return record
  const write = res.write
  const end = res.end
  res.write = function (this: ServerResponse, chunk: unknown, ...rest: unknown[]): boolean {
    record.bytesWritten += byteLength(chunk, rest[0])
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest)
  } as ServerResponse['write']
  res.end = function (this: ServerResponse, chunk?: unknown, ...rest: unknown[]): ServerResponse {
    if (typeof chunk !== 'function') record.bytesWritten += byteLength(chunk, rest[0])
    return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, ...rest)
  } as ServerResponse['end']
  return record
}

export function responseRecord (res: ServerResponse): ResponseRecord | undefined {
  return (res as Tracked)[RECORD]
}

/** Keeps `err` for the request's log line without writing anything. */
export function attachError (res: ServerResponse, err: unknown): void {
  const record = (res as Tracked)[RECORD]
  if (record !== undefined) record.error = err
}

/** The request's log fields, to set in place (no object per call, for the per-request path). */
export function logAttrs (res: ServerResponse): Record<string, unknown> | undefined {
  return (res as Tracked)[RECORD]?.attrs
}

/** Adds fields to the request's log line. */
export function addLogAttrs (res: ServerResponse, attrs: Record<string, unknown>): void {
  const record = (res as Tracked)[RECORD]
  if (record !== undefined) Object.assign(record.attrs, attrs)
}

function byteLength (chunk: unknown, encoding: unknown): number {
  if (chunk === undefined || chunk === null) return 0
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? encoding as BufferEncoding : 'utf8')
  if (ArrayBuffer.isView(chunk)) return chunk.byteLength
  return 0
}

/** The raw request path (the target up to `?`), with no dot-segment or percent normalisation. */
export function requestPath (req: IncomingMessage): string {
  const url = req.url ?? '/'
  const q = url.indexOf('?')
  return q === -1 ? url : url.slice(0, q)
}

/** The raw request target split into path and query, with no dot-segment or percent normalisation. */
export function requestTarget (req: IncomingMessage): { pathname: string, query: URLSearchParams } {
  const url = req.url ?? '/'
  const q = url.indexOf('?')
  return {
    pathname: q === -1 ? url : url.slice(0, q),
    query: new URLSearchParams(q === -1 ? '' : url.slice(q + 1))
  }
}

/** Client address: first X-Forwarded-For entry, else the socket's peer. */
export function clientIp (req: IncomingMessage): string | undefined {
  const forwarded = req.headers['x-forwarded-for']
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim()
  if (first !== undefined && first !== '') return first
  return req.socket.remoteAddress
}
