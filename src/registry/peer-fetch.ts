import {
  MANIFEST_MEDIA_TYPES, MEDIA_TYPE_OCTET_STREAM, distributionRequestPath, isDigest, rangeHeaderValue,
  type DistributionRequest, type RangeSpec, type ResolvedRange
} from '../oci/index.js'
import { parseRegistryAddress, type Peer } from '../routing/index.js'
import type { Descriptor } from '../store/index.js'
import { MIRRORED_HEADER } from './constants.js'
import { PeerHttpClient, type PeerBody, type PeerHttpResponse } from './peer-http.js'

/** A dead peer must cost a second, not the OS's connect timeout. */
export const DEFAULT_PEER_CONNECT_TIMEOUT_MS = 1000
/**
 * A peer body that delivers nothing for this long is treated as broken, so the stream resumes
 * elsewhere. The timer does not run while our side pauses the body for backpressure (peer-http.ts),
 * so a slow client never trips it.
 */
export const DEFAULT_PEER_BODY_IDLE_TIMEOUT_MS = 10_000
/** Error bodies are read this far for the log message; the rest is discarded. */
const ERROR_BODY_BYTES = 512
const ERROR_BODY_TYPES = ['text/plain', 'text/html', 'application/json', 'application/xml']
/** Sent on every peer request, blobs included, as Spegel does. */
const ACCEPT = [...MANIFEST_MEDIA_TYPES].join(', ')

export interface PeerAgentInit {
  connectTimeoutMs?: number
  bodyIdleTimeoutMs?: number
  /** Idle keep-alive connections kept per peer (busy ones are not limited). */
  idlePerPeer?: number
}

/** One keep-alive pool per peer, shared by every mirrored request of a node. */
export function createPeerClient (init: PeerAgentInit = {}): PeerHttpClient {
  return new PeerHttpClient({
    connectTimeoutMs: init.connectTimeoutMs ?? DEFAULT_PEER_CONNECT_TIMEOUT_MS,
    // The race's own deadline ends a peer that accepts and never answers; this is only a backstop.
    headersTimeoutMs: 30_000,
    bodyIdleTimeoutMs: init.bodyIdleTimeoutMs ?? DEFAULT_PEER_BODY_IDLE_TIMEOUT_MS,
    ...(init.idlePerPeer === undefined ? {} : { maxIdlePerPeer: init.idlePerPeer })
  })
}

/** Why a peer request did not produce usable content. */
export class PeerFetchError extends Error {
  readonly code = 'PEER_FETCH'
  readonly peer: Peer
  /** The peer's HTTP status, when it answered at all. */
  readonly status: number | undefined

  constructor (peer: Peer, message: string, options: { status?: number, cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'PeerFetchError'
    this.peer = peer
    this.status = options.status
  }
}

/**
 * The peer holds the content and says the requested range is outside it. Not a peer
 * failure: every peer would say the same, so the client gets its 416.
 */
export class PeerRangeNotSatisfiableError extends PeerFetchError {
  readonly sizeBytes: number

  constructor (peer: Peer, sizeBytes: number) {
    super(peer, `range not satisfiable for content of ${sizeBytes} bytes`, { status: 416 })
    this.name = 'PeerRangeNotSatisfiableError'
    this.sizeBytes = sizeBytes
  }
}

export interface PeerRequest {
  method: 'GET' | 'HEAD'
  content: Pick<DistributionRequest, 'kind' | 'repository' | 'registry' | 'tag' | 'digest'>
  /** Forwarded as `Range` (blobs only). */
  range?: RangeSpec
}

export interface PeerFetchOptions {
  client: PeerHttpClient
  signal: AbortSignal
  /** `Authorization` value, when the cluster uses basic auth. */
  authorization?: string
  bodyIdleTimeoutMs?: number
}

export interface PeerResponse {
  peer: Peer
  status: 200 | 206
  /** The whole content's descriptor: the size is the total, even for a 206. */
  descriptor: Descriptor
  /** The absolute byte range the body carries (206 only). */
  range?: ResolvedRange
  /** Body bytes to expect: the range length, or the size. Zero bytes arrive for HEAD. */
  bodyBytes: number
  /** Content-Type as the peer sent it (for a 206 this is not the content's media type). */
  contentType: string
  body: PeerBody
  /** Milliseconds from sending the request to having the headers. */
  latencyMs: number
}

/**
 * Asks one peer for content, with the loop guard so the peer serves only what it holds. Resolves
 * once the headers are in and check out; the body is the caller's to consume or destroy. Everything
 * a peer sends is validated here: a peer that answers with the wrong digest, a range other than the
 * one asked for or an unusable size is a failure, never something passed on to containerd.
 */
export async function fetchFromPeer (peer: Peer, req: PeerRequest, options: PeerFetchOptions): Promise<PeerResponse> {
  // Only an IP:port ever becomes a URL, and only such a request carries the Authorization
  // header: a hostname, a path or a metadata address in a peer's record would aim this request,
  // and the cluster's credentials, somewhere else. The router refuses such records; this is the
  // last line, for any Router.
  const address = parseRegistryAddress(peer.registryAddress)
  if (address === undefined) throw new PeerFetchError(peer, `registry address ${JSON.stringify(peer.registryAddress)} is not a usable IP:port; not asked`)
  const headers: Record<string, string> = {
    [MIRRORED_HEADER]: 'true',
    'user-agent': 'spegel',
    accept: ACCEPT
  }
  if (options.authorization !== undefined) headers.authorization = options.authorization
  const range = req.content.kind === 'blob' ? req.range : undefined
  if (range !== undefined) headers.range = rangeHeaderValue(range)

  const started = performance.now()
  let res: PeerHttpResponse
  try {
    res = await options.client.request(address.ip, address.port, {
      method: req.method,
      path: distributionRequestPath(req.content),
      headers,
      signal: options.signal,
      ...(options.bodyIdleTimeoutMs === undefined ? {} : { bodyIdleTimeoutMs: options.bodyIdleTimeoutMs })
    })
  } catch (err) {
    if (options.signal.aborted) throw err
    throw new PeerFetchError(peer, `request to ${peer.registryAddress} failed: ${errorText(err)}`, { cause: err })
  }
  const latencyMs = performance.now() - started

  try {
    return parseResponse(peer, req, range, res, latencyMs)
  } catch (err) {
    if (err instanceof PeerRangeNotSatisfiableError) {
      await errorBody(res, options.signal)
    } else if (err instanceof PeerFetchError && err.status !== undefined && err.status !== 200 && err.status !== 206) {
      const detail = await errorBody(res, options.signal)
      if (detail !== '') throw new PeerFetchError(peer, `${err.message}: ${detail}`, { status: err.status })
    } else {
      res.body.destroy()
    }
    throw err
  }
}

function parseResponse (peer: Peer, req: PeerRequest, range: RangeSpec | undefined, res: PeerHttpResponse, latencyMs: number): PeerResponse {
  const { statusCode } = res
  const fail = (message: string): PeerFetchError => new PeerFetchError(peer, `peer ${peer.registryAddress}: ${message}`, { status: statusCode })
  const isBlob = req.content.kind === 'blob'

  if (statusCode === 416) {
    const total = /^bytes \*\/(\d+)$/.exec(header(res, 'content-range') ?? '')
    const size = total === null ? Number.NaN : Number(total[1])
    if (isBlob && range !== undefined && Number.isSafeInteger(size)) throw new PeerRangeNotSatisfiableError(peer, size)
  }
  if (statusCode !== 200 && statusCode !== 206) {
    throw fail(`expected one of the following statuses [200 OK, 206 Partial Content], but received ${statusCode}`)
  }

  const contentType = header(res, 'content-type') ?? (isBlob ? MEDIA_TYPE_OCTET_STREAM : undefined)
  if (contentType === undefined || contentType === '') throw fail('content type cannot be empty')
  // Passed on to containerd as a header; anything but printable ASCII would make writing it throw.
  if (!/^[\x21-\x7e][\x20-\x7e]*$/.test(contentType)) throw fail('content type is not printable ASCII')

  const digest = header(res, 'docker-content-digest') ?? (isBlob ? req.content.digest : undefined)
  if (digest === undefined || !isDigest(digest)) throw fail(`invalid Docker-Content-Digest ${digest ?? '(missing)'}`)
  if (req.content.digest !== undefined && digest !== req.content.digest) throw fail(`sent digest ${digest} for ${req.content.digest}`)

  const lengthHeader = header(res, 'content-length')
  const contentLength = lengthHeader === undefined ? undefined : parseCount(lengthHeader)
  if (lengthHeader !== undefined && contentLength === undefined) throw fail(`invalid content length ${lengthHeader}`)

  let sizeBytes: number
  let served: ResolvedRange | undefined
  if (statusCode === 206) {
    if (range === undefined) throw fail('answered 206 to a request without a range')
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header(res, 'content-range') ?? '')
    if (m === null) throw fail(`unusable content range ${header(res, 'content-range') ?? '(missing)'}`)
    served = { start: Number(m[1]), end: Number(m[2]) }
    sizeBytes = Number(m[3])
    const expected = expectedRange(range, sizeBytes)
    if (expected === undefined || served.start !== expected.start || served.end !== expected.end) {
      throw fail(`served range ${served.start}-${served.end}/${sizeBytes} for ${rangeHeaderValue(range)}`)
    }
    if (contentLength !== undefined && contentLength !== served.end - served.start + 1) throw fail(`content length ${contentLength} does not match range`)
  } else {
    // A peer that ignores a range would hand us bytes from the wrong offset (Spegel v0.4.0's resume bug).
    if (range !== undefined) throw fail('ignored the range')
    if (contentLength === undefined) throw fail('content length cannot be empty')
    sizeBytes = contentLength
  }
  if (!Number.isSafeInteger(sizeBytes)) throw fail(`invalid size ${sizeBytes}`)

  const descriptor: Descriptor = { digest, sizeBytes, mediaType: isBlob && statusCode === 206 ? MEDIA_TYPE_OCTET_STREAM : contentType }
  const bodyBytes = served === undefined ? sizeBytes : served.end - served.start + 1
  return {
    peer,
    status: statusCode,
    descriptor,
    ...(served === undefined ? {} : { range: served }),
    bodyBytes,
    contentType,
    body: res.body,
    latencyMs
  }
}

/** The range a correct peer serves for `spec` on content of `sizeBytes`; undefined when none is. */
function expectedRange (spec: RangeSpec, sizeBytes: number): ResolvedRange | undefined {
  if (sizeBytes === 0) return undefined
  if ('suffix' in spec) return { start: Math.max(0, sizeBytes - spec.suffix), end: sizeBytes - 1 }
  if (spec.start >= sizeBytes) return undefined
  return { start: spec.start, end: spec.end === undefined ? sizeBytes - 1 : Math.min(spec.end, sizeBytes - 1) }
}

function header (res: PeerHttpResponse, name: string): string | undefined {
  return res.headers[name]
}

function parseCount (value: string): number | undefined {
  if (!/^\d+$/.test(value)) return undefined
  const n = Number(value)
  return Number.isSafeInteger(n) ? n : undefined
}

/** The start of a textual error body, for the failure message; the body is always consumed. */
async function errorBody (res: PeerHttpResponse, signal: AbortSignal): Promise<string> {
  const type = (header(res, 'content-type') ?? '').split(';')[0]?.trim().toLowerCase() ?? ''
  try {
    if (!ERROR_BODY_TYPES.includes(type)) {
      await res.body.dump({ signal, limit: 128 * 1024 })
      return ''
    }
    const parts: Buffer[] = []
    let length = 0
    for await (const buf of res.body) {
      parts.push(buf)
      length += buf.length
      if (length >= ERROR_BODY_BYTES) break
    }
    return Buffer.concat(parts).subarray(0, ERROR_BODY_BYTES).toString('utf8').trim()
  } catch {
    // The status already says the request failed; a body we cannot read adds nothing to that.
    res.body.destroy()
    return ''
  }
}

function errorText (err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  const code = (err as NodeJS.ErrnoException).code
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : ''
  return `${code === undefined ? '' : `${code} `}${err.message}${cause}`
}

/** Bytes from a peer that do not hash to the digest they were asked for. */
export class DigestMismatchError extends Error {
  readonly code = 'DIGEST_MISMATCH'
  readonly expected: string
  readonly actual: string
  readonly peerIds: readonly string[]

  constructor (expected: string, actual: string, peerIds: readonly string[]) {
    super(`content from ${peerIds.join(', ')} hashes to ${actual}, expected ${expected}`)
    this.name = 'DigestMismatchError'
    this.expected = expected
    this.actual = actual
    this.peerIds = Object.freeze([...peerIds])
  }
}

/** Drops a peer body we no longer want (its connection is closed unless the body was complete). */
export function discardBody (body: PeerResponse['body']): void {
  body.destroy()
}
