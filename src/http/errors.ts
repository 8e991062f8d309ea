import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { OciError, RangeNotSatisfiableError, ociErrorBody } from '../oci/index.js'
import { attachError } from './response.js'

/**
 * Body for errors that are not OciErrors (bugs, unexpected store failures). `UNKNOWN` is
 * docker/distribution's code for unexpected server errors; it is outside the OCI closed set,
 * which the distribution spec tells clients to tolerate, and it says "server problem" where
 * `UNSUPPORTED` would wrongly say "you asked for something unsupported". Details stay in
 * the log, never in the body.
 */
export const INTERNAL_ERROR_BODY = '{"errors":[{"code":"UNKNOWN","message":"internal server error"}]}'
export const INTERNAL_ERROR_STATUS = 500

export interface WriteErrorOptions {
  /** Send headers only; defaults to whether the request was HEAD. */
  isHead?: boolean
  /** Extra headers, e.g. `Allow` for a 405. */
  headers?: OutgoingHttpHeaders
}

/**
 * The one place that turns an error into a response. Once headers are out, no error body can
 * be sent: an unfinished response is destroyed so the client sees a broken transfer rather
 * than a short or corrupted body, and a finished one is left alone. Either way the error is
 * attached to the request's log line.
 */
export function writeError (res: ServerResponse, err: unknown, options: WriteErrorOptions = {}): void {
  attachError(res, err)
  if (res.headersSent || res.writableEnded || res.destroyed) {
    if (!res.writableEnded && !res.destroyed) res.destroy()
    return
  }
  // Headers set for a success response (digest, length, type) must not leak into the error.
  for (const name of res.getHeaderNames()) res.removeHeader(name)

  let status = INTERNAL_ERROR_STATUS
  let body = INTERNAL_ERROR_BODY
  if (err instanceof OciError) {
    status = err.status
    body = ociErrorBody(err)
    if (err instanceof RangeNotSatisfiableError && err.sizeBytes !== undefined) {
      res.setHeader('Content-Range', `bytes */${err.sizeBytes}`)
    }
  }
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    if (value !== undefined) res.setHeader(name, value)
  }
  res.setHeader('Content-Type', 'application/json')
  res.setHeader('Content-Length', Buffer.byteLength(body))
  res.writeHead(status)
  const isHead = options.isHead ?? res.req?.method === 'HEAD'
  res.end(isHead ? undefined : body)
}
