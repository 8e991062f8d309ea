/**
 * OCI distribution errors and the one table from OCI error code to HTTP status.
 *
 * Handlers throw `OciError`; a single writer renders `ociErrorBody(err)` with `err.status`.
 * Call sites never pick a status: the defaults come from `OCI_ERROR_STATUS`, and the few
 * deliberate overrides are the named factories at the bottom of this file.
 */

export type OciErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'

/** Default HTTP status per OCI error code (distribution-spec error code table). */
export const OCI_ERROR_STATUS: Readonly<Record<OciErrorCode, number>> = Object.freeze({
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429
})

export interface OciErrorOptions {
  detail?: unknown
  /** Only the factories in this file should set this. */
  status?: number
  cause?: unknown
}

export interface OciErrorJsonEntry {
  code: OciErrorCode
  message: string
  detail?: unknown
}

export interface OciErrorJson {
  errors: [OciErrorJsonEntry]
}

export class OciError extends Error {
  readonly code: OciErrorCode
  readonly status: number
  readonly detail?: unknown

  constructor (code: OciErrorCode, message: string, options: OciErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'OciError'
    const status = options.status ?? OCI_ERROR_STATUS[code]
    // A bad status would only surface later as a malformed response; fail where it was made.
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw new RangeError(`OCI error status must be a 4xx or 5xx code, got ${status}`)
    }
    this.code = code
    this.status = status
    if (options.detail !== undefined) this.detail = options.detail
  }

  /** Body per the distribution spec; key order (code, detail, message) matches Spegel's output byte for byte. */
  toJSON (): OciErrorJson {
    const entry: OciErrorJsonEntry = this.detail === undefined || this.detail === null
      ? { code: this.code, message: this.message }
      : { code: this.code, detail: this.detail, message: this.message }
    return { errors: [entry] }
  }
}

export function isOciError (err: unknown): err is OciError {
  return err instanceof OciError
}

/** The JSON text of the error body; send with `Content-Type: application/json`. */
export function ociErrorBody (err: OciError): string {
  return JSON.stringify(err.toJSON())
}

/**
 * A Range that cannot be served (416). OCI has no code for it, so it carries `UNSUPPORTED`.
 * `sizeBytes` is unknown when the header was rejected on syntax alone (parsing happens
 * before the blob is looked up); the handler calls `withSizeBytes(size)` once it knows the
 * size, so the writer can always send `Content-Range: bytes *\/<size>` when it is defined.
 */
export class RangeNotSatisfiableError extends OciError {
  readonly sizeBytes: number | undefined

  constructor (sizeBytes: number | undefined, message: string, options: { cause?: unknown } = {}) {
    super('UNSUPPORTED', message, { status: 416, cause: options.cause })
    this.name = 'RangeNotSatisfiableError'
    this.sizeBytes = sizeBytes
  }

  /** The same error, now knowing the size of the content it was aimed at. */
  withSizeBytes (sizeBytes: number): RangeNotSatisfiableError {
    return new RangeNotSatisfiableError(sizeBytes, this.message, { cause: this.cause })
  }
}

export function rangeNotSatisfiable (sizeBytes: number | undefined, message: string): RangeNotSatisfiableError {
  return new RangeNotSatisfiableError(sizeBytes, message)
}

/**
 * A distribution endpoint this pull-only mirror does not implement (tags list, referrers,
 * catalog, uploads). 404 rather than 405 so that containerd and other clients treat it as a
 * plain miss and fall back to the upstream registry.
 */
export function unsupportedEndpoint (what: string): OciError {
  return new OciError('UNSUPPORTED', `${what} is not supported by this pull-only mirror`, { status: 404 })
}

/** Any method other than GET and HEAD on `/v2/`. */
export function methodNotAllowed (method: string): OciError {
  return new OciError('UNSUPPORTED', `method ${method} is not allowed; this mirror only serves GET and HEAD`, { status: 405 })
}
