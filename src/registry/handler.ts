import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { addLogAttrs, attachError, createMux, logAttrs, writeError, type CompletedRequest } from '../http/index.js'
import {
  MEDIA_TYPE_OCTET_STREAM, OciError, RangeNotSatisfiableError, contentRangeHeader, isFiltered,
  isManifestMediaType, methodNotAllowed, parseDistributionPath, parseRangeHeader, rangeLength, resolveRange,
  type DistributionKind, type DistributionRequest, type RangeSpec, type ReferenceFilter, type ResolvedRange
} from '../oci/index.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import type { Router } from '../routing/index.js'
import type { Peer } from '../routing/index.js'
import { NotFoundError, StoreUnavailableError, type ByteSink, type Descriptor, type Store } from '../store/index.js'
import { MAX_MANIFEST_BYTES, MIRRORED_HEADER } from './constants.js'
import type { Mirror } from './mirror.js'
import { nodeReadiness, type Readiness } from './readiness.js'
import type { RecentRequests, RecentRequest } from './recent-requests.js'
import type { RegistryLabeler } from './registry-label.js'

export { MAX_MANIFEST_BYTES, MIRRORED_HEADER }

/**
 * What one response serves, from this node's store or from a peer; `serveContent` writes it, so
 * both sources answer through the same code.
 */
interface Content {
  /** The whole content's descriptor; its size is the total even when `range` is set. */
  descriptor: Descriptor
  /** The absolute byte range served (206), when a Range was asked for. */
  range?: ResolvedRange
  /** A manifest's verified bytes or a blob's stream; none for HEAD. */
  body?: Buffer | Readable
  /** Set when a peer served it. */
  peer?: Peer
}

/** A body with a fast path into a response (a file range, a peer blob): it writes and waits itself. */
interface Sendable {
  sendTo(sink: ByteSink, signal?: AbortSignal): Promise<void>
}

export interface RegistryComponents {
  store: Store
  router: Router
  metrics: Metrics
  log: Logger
}

export interface RegistryInit {
  filters: readonly ReferenceFilter[]
  basicAuth?: { username: string, password: string }
  /** Extra readiness condition on top of the store's and the router's. */
  isReady?: () => Readiness
  /** Fetches content this node lacks from peers. */
  mirror?: Pick<Mirror, 'fetch'>
  /** Where finished /v2 requests are kept for the web page. */
  recentRequests?: RecentRequests
  /** Turns `ns` into a closed-set metric label; the raw value when absent (tests). */
  registryLabel?: RegistryLabeler
  /** Updated on every successful mirror, for the web page. */
  mirrorStats?: { lastSuccessMs?: number }
  /** Extra lines for the /readyz body (problems that do not make the node unready). */
  readyzNotes?: () => readonly string[]
  /** Blobs this node's containerd is still downloading, served to peers as they arrive. */
  arriving?: ArrivingContent
}

/**
 * Blobs being written into containerd's ingest area right now (docs/pull-storms.md). Only peers
 * get them: the node's own containerd is the one writing them.
 */
export interface ArrivingContent {
  /** The blob's full size when it is arriving (or just committed and not yet in the store). */
  sizeOf(digest: string): number | undefined
  /** The bytes of `range`, following the file as containerd writes it. */
  open(digest: string, range: ResolvedRange, signal: AbortSignal): Promise<Readable>
}

const ALLOW = 'GET, HEAD'

/**
 * The registry server's request handler: `/readyz`, `/livez` and the pull-only `/v2/` API
 * over local content. Every error becomes a response in `writeError`, with the status taken
 * from the OciError; nothing here picks a status for an error.
 */
export function createRegistryHandler (components: RegistryComponents, init: RegistryInit): (req: IncomingMessage, res: ServerResponse) => void {
  const { store, router, metrics } = components
  const log = components.log.child({ component: 'registry' })
  const credentials = init.basicAuth === undefined
    ? undefined
    : { username: digestOf(Buffer.from(init.basicAuth.username, 'utf8')), password: digestOf(Buffer.from(init.basicAuth.password, 'utf8')) }

  const lookups = new LocalLookups(store)
  const targets = new ParsedTargets()

  const readyz = (req: IncomingMessage, res: ServerResponse): void => {
    const reason = notReadyReason()
    const notes = init.readyzNotes?.() ?? []
    sendText(req, res, reason === undefined ? 200 : 503, [reason ?? 'ok', ...notes].join('\n'))
  }

  const livez = (req: IncomingMessage, res: ServerResponse): void => {
    sendText(req, res, 200, 'ok')
  }

  function notReadyReason (): string | undefined {
    const readiness = nodeReadiness({ store, router, ...(init.isReady === undefined ? {} : { extra: init.isReady }) })
    return readiness.isReady ? undefined : readiness.reason ?? 'not ready'
  }

  /**
   * Everything up to the lookup runs synchronously, and a HEAD of content this node has looked up
   * in the last second (containerd's HEAD before each GET, the same manifest for every pod start)
   * is answered right there: no promise, no abort signal, no close listener of its own. A local
   * HEAD cost about 37 µs of CPU against 25 for a bare node:http server answering with the same
   * headers (bench/head-cost.ts); the awaits and listeners of the general path were a part of it.
   */
  function v2 (req: IncomingMessage, res: ServerResponse): void | Promise<void> {
    if (credentials !== undefined && !isAuthorized(req.headers.authorization, credentials)) {
      throw new OciError('UNAUTHORIZED', 'invalid credentials')
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      writeError(res, methodNotAllowed(req.method ?? ''), { headers: { Allow: ALLOW } })
      return
    }
    const target = req.url ?? '/'
    if (target === '/v2' || target === '/v2/' || target.startsWith('/v2?') || target.startsWith('/v2/?')) {
      send(req, res, 200, { 'Content-Type': 'application/json', 'Docker-Distribution-API-Version': 'registry/2.0' }, Buffer.from('{}'))
      return
    }

    const request = targets.parse(target)
    const attrs = logAttrs(res)
    if (attrs !== undefined) {
      attrs.kind = request.kind
      if (request.registry !== '') attrs.registry = request.registry
      if (request.digest === undefined) attrs.ref = request.key
      else attrs.digest = request.digest
    }
    if (isFiltered(init.filters, { registry: request.registry, repository: request.repository, tag: request.tag })) {
      throw unknownContent(request.kind, 'filtered by registry filters')
    }

    // A malformed Range is only reported once the blob's size is known (for Content-Range).
    let rangeSpec: RangeSpec | undefined
    let rangeError: RangeNotSatisfiableError | undefined
    if (request.kind === 'blob') {
      try {
        rangeSpec = parseRangeHeader(req.headers.range)
      } catch (err) {
        if (!(err instanceof RangeNotSatisfiableError)) throw err
        rangeError = err
      }
    }

    if (req.method === 'HEAD') {
      const known = lookups.peek(request.key)
      if (known !== undefined) {
        const range = rangeError !== undefined ? rangeError.withSizeBytes(known.sizeBytes) : rangeSpec
        writeContentHead(res, request, checkLocal(request.kind, known, range))
        res.end()
        return
      }
    }
    return lookUpAndServe(req, res, request, rangeSpec, rangeError)
  }

  /** The general path: the store (or its cached answer), then local content, the mirror or an arriving blob. */
  async function lookUpAndServe (req: IncomingMessage, res: ServerResponse, request: DistributionRequest, rangeSpec: RangeSpec | undefined, rangeError: RangeNotSatisfiableError | undefined): Promise<void> {
    const signal = requestSignal(res)
    let descriptor: Descriptor
    try {
      descriptor = await lookups.describe(request.key, request.digest, signal)
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw storeError(request.kind, err)
      if (rangeError !== undefined) throw rangeError
      const isFromPeer = req.headers[MIRRORED_HEADER] === 'true'
      if (!isFromPeer && init.mirror !== undefined) {
        await serveMirrored(req, res, request, rangeSpec, signal, init.mirror)
        return
      }
      const arrivingBytes = isFromPeer && request.kind === 'blob' && request.digest !== undefined ? init.arriving?.sizeOf(request.digest) : undefined
      if (arrivingBytes !== undefined && request.digest !== undefined && init.arriving !== undefined) {
        await serveContent(req, res, request, await arrivingContent(req.method === 'HEAD', request.digest, arrivingBytes, rangeSpec, signal, init.arriving), signal)
        return
      }
      throw unknownContent(request.kind, `could not find ${request.key} on this node`, err)
    }

    const range = rangeError !== undefined ? rangeError.withSizeBytes(descriptor.sizeBytes) : rangeSpec
    await serveContent(req, res, request, await localContent(req.method === 'HEAD', request.kind, descriptor, range, signal), signal)
  }

  /** Checks local content against what was asked for and opens its body (not for HEAD). */
  async function localContent (isHead: boolean, kind: DistributionKind, descriptor: Descriptor, rangeSpec: RangeSpec | RangeNotSatisfiableError | undefined, signal: AbortSignal): Promise<Content> {
    const content = checkLocal(kind, descriptor, rangeSpec)
    if (isHead) return content
    const { digest, sizeBytes } = descriptor
    if (kind === 'manifest') {
      content.body = await readManifest(await openContent('manifest', digest, undefined, signal), descriptor)
      return content
    }
    // Opened before the headers go out, so a failure can still be a proper error response.
    // The size is known from stat: passing the whole range spares the store a second stat.
    const bytes = content.range ?? (sizeBytes > 0 ? { start: 0, end: sizeBytes - 1 } : undefined)
    content.body = await openContent('blob', digest, bytes, signal)
    return content
  }

  /**
   * A blob still arriving here, for a peer: its size is the size containerd was told, and the body
   * follows the file as it grows. The peer checks the digest of what it receives.
   */
  async function arrivingContent (isHead: boolean, digest: string, sizeBytes: number, rangeSpec: RangeSpec | undefined, signal: AbortSignal, arriving: ArrivingContent): Promise<Content> {
    const descriptor: Descriptor = { digest, sizeBytes, mediaType: MEDIA_TYPE_OCTET_STREAM }
    const range = rangeSpec === undefined ? undefined : resolveRange(rangeSpec, sizeBytes)
    const content: Content = range === undefined ? { descriptor } : { descriptor, range }
    if (isHead || sizeBytes === 0) return content
    try {
      content.body = await arriving.open(digest, range ?? { start: 0, end: sizeBytes - 1 }, signal)
    } catch (err) {
      // Gone between the look and the open (an aborted download): the same miss as before.
      if (err instanceof NotFoundError) throw unknownContent('blob', `could not find ${digest} on this node`, err)
      throw err
    }
    return content
  }

  /** Content this node lacks, from peers; counted as a mirror hit or miss. */
  async function serveMirrored (req: IncomingMessage, res: ServerResponse, request: DistributionRequest, range: RangeSpec | undefined, signal: AbortSignal, mirror: Pick<Mirror, 'fetch'>): Promise<void> {
    let isHit = false
    try {
      let content: Content
      try {
        content = await mirror.fetch(request, { method: req.method === 'HEAD' ? 'HEAD' : 'GET', ...(range === undefined ? {} : { range }), signal })
      } catch (err) {
        // The client left while peers were asked: nobody to answer.
        if (signal.aborted) return
        throw err
      }
      if (content.peer !== undefined) addLogAttrs(res, { peer: content.peer.id, peerAddress: content.peer.registryAddress })
      isHit = await serveContent(req, res, request, content, signal)
      const resumes = (content.body as { resumes?: unknown } | undefined)?.resumes
      if (typeof resumes === 'number' && resumes > 0) addLogAttrs(res, { resumes })
    } finally {
      if (isHit) init.registryLabel?.learn(request.registry)
      const registry = init.registryLabel?.label(request.registry) ?? request.registry
      metrics.mirrorRequests.inc({ registry, cache: isHit ? 'hit' : 'miss' })
      if (isHit) {
        metrics.mirrorLastSuccessTimestampSeconds.setToCurrentTime()
        if (init.mirrorStats !== undefined) init.mirrorStats.lastSuccessMs = Date.now()
      }
    }
  }

  /**
   * The one writer of content responses, local or from peers. Resolves false when the body
   * failed after the headers went out (the response is then broken off, so the client sees a
   * failure), true when it was sent or the client left.
   */
  async function serveContent (req: IncomingMessage, res: ServerResponse, request: DistributionRequest, content: Content, signal: AbortSignal): Promise<boolean> {
    const { descriptor, body } = content
    try {
      writeContentHead(res, request, content)
    } catch (err) {
      // An invalid header value (a store gave a bad media type) must not leak the open file.
      if (body !== undefined && !Buffer.isBuffer(body)) body.destroy()
      throw err
    }
    if (req.method === 'HEAD' || body === undefined) {
      res.end()
      return true
    }
    if (Buffer.isBuffer(body)) {
      res.end(body)
      return true
    }
    const sendable = isSendable(body) ? body : undefined
    try {
      if (sendable !== undefined) {
        await sendable.sendTo(res, signal)
        res.end()
      } else {
        await pipeline(body, res)
      }
      return true
    } catch (err) {
      // A client hanging up is routine (containerd's chunked fetch closes early); only our
      // failures count. `signal` cannot tell them apart for pipeline: it destroys the response
      // on a source error too, which closes it and fires the signal before we get here.
      if (isClientGone(err) || (sendable !== undefined && signal.aborted)) return true
      attachError(res, err)
      log.debug({ err, digest: descriptor.digest }, 'blob stream failed')
      body.destroy()
      res.destroy()
      return false
    }
  }

  async function openContent (kind: DistributionKind, digest: string, range: ResolvedRange | undefined, signal: AbortSignal): Promise<Readable> {
    try {
      return await store.open(digest, range === undefined ? { signal } : { range, signal })
    } catch (err) {
      // Removed between stat and open: the same miss as if it had never been here.
      if (err instanceof NotFoundError) throw unknownContent(kind, `could not find ${digest} on this node`, err)
      throw storeError(kind, err)
    }
  }

  function storeError (kind: DistributionKind, err: unknown): unknown {
    // 404 at once, so containerd falls back to the next host instead of waiting on us.
    if (err instanceof StoreUnavailableError) return unknownContent(kind, `${store.name} unavailable: ${err.reason}`, err)
    return err
  }

  /** Bytes by source for the metrics, and the request for the web page's recent list. */
  function completed ({ req, res, pathname, record, durationMs }: CompletedRequest): void {
    if (record.handler !== '/v2/*') return
    const attrs = record.attrs
    const peer = typeof attrs.peer === 'string' ? attrs.peer : undefined
    const client = req.headers[MIRRORED_HEADER] === 'true' ? 'peer' : 'containerd'
    const bytes = record.bytesWritten
    const isServed = res.statusCode < 400
    const source = !isServed ? 'none' : peer === undefined ? 'local' : 'peer'
    if (source !== 'none') metrics.addServedBytes(client, source, bytes, peer)
    if (init.recentRequests === undefined) return
    const kind = attrs.kind === 'manifest' || attrs.kind === 'blob' ? attrs.kind : 'other'
    const ref = typeof attrs.digest === 'string' ? attrs.digest : typeof attrs.ref === 'string' ? attrs.ref : pathname
    const entry: RecentRequest = {
      atMs: Date.now(),
      method: req.method ?? '',
      kind,
      ref,
      registry: typeof attrs.registry === 'string' ? attrs.registry : '',
      client,
      source,
      ...(peer === undefined ? {} : { peer }),
      ...(typeof attrs.peerAddress === 'string' ? { peerAddress: attrs.peerAddress } : {}),
      status: res.statusCode,
      bytes,
      durationMs,
      isAborted: !res.writableFinished,
      ...(record.error === undefined ? {} : { error: errorText(record.error) })
    }
    init.recentRequests.add(entry)
  }

  return createMux({ log, metrics, onCompleted: completed }, [
    { pattern: '/readyz', handler: probe(readyz), isQuiet: true },
    { pattern: '/livez', handler: probe(livez), isQuiet: true },
    { pattern: '/v2/*', handler: v2 }
  ])
}

/** Request targets parsed, at most; the map starts again when full. */
const PARSED_TARGETS_MAX = 1024
/** Longer targets are parsed every time instead of kept (a key of any length would be memory a client picks). */
const PARSED_TARGET_MAX_LENGTH = 512

/**
 * Parsed distribution requests by raw request target (path and query). containerd asks the same
 * few targets over and over (a HEAD, then the GET; the same manifest from every pod start), and
 * parsing one (query, character checks, segments, repository and digest grammar) cost a few µs of
 * the ~50 a local HEAD takes. A target's parse never changes, and the results are never mutated.
 * Only targets that parse are kept: an invalid one throws every time.
 */
class ParsedTargets {
  readonly #entries = new Map<string, DistributionRequest>()

  parse (target: string): DistributionRequest {
    const cached = this.#entries.get(target)
    if (cached !== undefined) return cached
    const q = target.indexOf('?')
    const pathname = q === -1 ? target : target.slice(0, q)
    const ns = q === -1 ? null : new URLSearchParams(target.slice(q + 1)).get('ns')
    const request = Object.freeze(parseDistributionPath(pathname, ns))
    if (target.length <= PARSED_TARGET_MAX_LENGTH) {
      if (this.#entries.size >= PARSED_TARGETS_MAX) this.#entries.clear()
      this.#entries.set(target, request)
    }
    return request
  }
}

/** How long the store's answer for a key is reused when the store reports no change. */
const LOCAL_LOOKUP_TTL_MS = 1000
const LOCAL_LOOKUP_MAX_KEYS = 4096

/**
 * The store's answers (tag to digest to descriptor, or not found) for the last second. A pull asks
 * the same few keys many times in a row (HEAD, then GET; every layer's HEAD), and a miss through
 * containerd costs a gRPC call. Any change the store announces forgets everything, so new or
 * removed content is seen at once; the time limit covers files that vanish without an event
 * (then the open fails and the answer is the same 404 as a miss).
 */
class LocalLookups {
  readonly #store: Store
  readonly #entries = new Map<string, { descriptor?: Descriptor, missing?: NotFoundError, atMs: number }>()

  constructor (store: Store) {
    this.#store = store
    store.subscribe(() => { this.#entries.clear() })
  }

  /** The store's descriptor for `key` if it was looked up in the last second, without asking it. */
  peek (key: string): Descriptor | undefined {
    return this.#fresh(key, Date.now())?.descriptor
  }

  async describe (key: string, digest: string | undefined, signal: AbortSignal): Promise<Descriptor> {
    const now = Date.now()
    const entry = this.#fresh(key, now)
    if (entry?.missing !== undefined) throw entry.missing
    if (entry?.descriptor !== undefined) return entry.descriptor
    try {
      const descriptor = await this.#store.stat(digest ?? await this.#store.resolve(key, { signal }), { signal })
      this.#set(key, { descriptor, atMs: now })
      return descriptor
    } catch (err) {
      if (err instanceof NotFoundError) this.#set(key, { missing: err, atMs: now })
      throw err
    }
  }

  #fresh (key: string, now: number): { descriptor?: Descriptor, missing?: NotFoundError, atMs: number } | undefined {
    const entry = this.#entries.get(key)
    return entry !== undefined && now - entry.atMs < LOCAL_LOOKUP_TTL_MS ? entry : undefined
  }

  #set (key: string, entry: { descriptor?: Descriptor, missing?: NotFoundError, atMs: number }): void {
    if (this.#entries.size >= LOCAL_LOOKUP_MAX_KEYS) this.#entries.clear()
    this.#entries.set(key, entry)
  }
}

function probe (handler: (req: IncomingMessage, res: ServerResponse) => void): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(req, res, 405, { Allow: ALLOW })
      return
    }
    handler(req, res)
  }
}

/**
 * Checks local content against what was asked for: a manifest asked as a blob or the other way
 * round, an oversized manifest and an unsatisfiable range are errors. The result has no body yet.
 */
function checkLocal (kind: DistributionKind, descriptor: Descriptor, rangeSpec: RangeSpec | RangeNotSatisfiableError | undefined): Content {
  const { digest, sizeBytes, mediaType } = descriptor
  if (kind === 'manifest') {
    if (!isManifestMediaType(mediaType)) throw unknownContent('manifest', `${digest} is not a manifest`)
    if (sizeBytes > MAX_MANIFEST_BYTES) throw unknownContent('manifest', `manifest ${digest} is larger than ${MAX_MANIFEST_BYTES} bytes`)
    return { descriptor }
  }
  if (isManifestMediaType(mediaType)) throw unknownContent('blob', `${digest} is a manifest, not a blob`)
  if (rangeSpec instanceof RangeNotSatisfiableError) throw rangeSpec
  const range = rangeSpec === undefined ? undefined : resolveRange(rangeSpec, sizeBytes)
  return range === undefined ? { descriptor } : { descriptor, range }
}

/** The status and headers of a content response, local or from a peer. */
function writeContentHead (res: ServerResponse, request: DistributionRequest, content: Content): void {
  const { descriptor, range } = content
  const headers: OutgoingHttpHeaders = { 'Docker-Content-Digest': descriptor.digest }
  // Only local answers name the registry: a peer's headers other than its descriptor are not
  // passed on, as in Spegel.
  if (content.peer === undefined && request.registry !== '') headers['OCI-Namespace'] = request.registry
  if (request.kind === 'blob') headers['Accept-Ranges'] = 'bytes'
  if (range === undefined) {
    headers['Content-Type'] = descriptor.mediaType
    headers['Content-Length'] = descriptor.sizeBytes
    res.writeHead(200, headers)
  } else {
    headers['Content-Type'] = MEDIA_TYPE_OCTET_STREAM
    headers['Content-Length'] = rangeLength(range)
    headers['Content-Range'] = contentRangeHeader(range, descriptor.sizeBytes)
    res.writeHead(206, headers)
  }
}

function unknownContent (kind: DistributionKind, message: string, cause?: unknown): OciError {
  return new OciError(kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', message, cause === undefined ? {} : { cause })
}

function isSendable (body: Readable): body is Readable & Sendable {
  return typeof (body as Partial<Sendable>).sendTo === 'function'
}

/** Errors pipeline reports when the response side closed first, or the request signal fired. */
function isClientGone (err: unknown): boolean {
  if (!(err instanceof Error)) return false
  return err.name === 'AbortError' || (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE'
}

/** Aborts when the client goes away before the response is complete. */
function requestSignal (res: ServerResponse): AbortSignal {
  const controller = new AbortController()
  res.once('close', () => {
    if (!res.writableFinished) controller.abort()
  })
  return controller.signal
}

function send (req: IncomingMessage, res: ServerResponse, status: number, headers: OutgoingHttpHeaders, body?: Buffer): void {
  if (!('Content-Length' in headers)) headers['Content-Length'] = body?.length ?? 0
  res.writeHead(status, headers)
  res.end(req.method === 'HEAD' ? undefined : body)
}

function sendText (req: IncomingMessage, res: ServerResponse, status: number, text: string): void {
  send(req, res, status, { 'Content-Type': 'text/plain; charset=utf-8' }, Buffer.from(text, 'utf8'))
}

/** Reads a whole manifest and checks it against its descriptor, so a corrupt store never reaches containerd. */
async function readManifest (stream: Readable, descriptor: Descriptor): Promise<Buffer> {
  const parts: Buffer[] = []
  let length = 0
  for await (const chunk of stream) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array)
    length += buf.length
    if (length > descriptor.sizeBytes) {
      stream.destroy()
      throw new Error(`manifest ${descriptor.digest} is longer than its size ${descriptor.sizeBytes}`)
    }
    parts.push(buf)
  }
  const body = Buffer.concat(parts, length)
  if (length !== descriptor.sizeBytes) throw new Error(`manifest ${descriptor.digest} is ${length} bytes, expected ${descriptor.sizeBytes}`)
  const [algorithm = '', hex = ''] = descriptor.digest.split(':')
  if (createHash(algorithm).update(body).digest('hex') !== hex) throw new Error(`manifest ${descriptor.digest} does not match its digest`)
  return body
}

function errorText (err: unknown): string {
  const text = err instanceof Error ? err.message : String(err)
  return text.length > 300 ? `${text.slice(0, 300)}…` : text
}

function digestOf (bytes: Buffer): Buffer {
  return createHash('sha256').update(bytes).digest()
}

const BASIC = /^basic ([A-Za-z0-9+/]*={0,2})$/i

/**
 * Constant-time check of `Authorization: Basic …`. Both sides are hashed first so the
 * comparison runs on equal-length buffers and leaks neither content nor length, and both
 * fields are always compared so timing does not reveal which one was wrong.
 */
function isAuthorized (header: string | undefined, expected: { username: Buffer, password: Buffer }): boolean {
  const m = header === undefined ? null : BASIC.exec(header)
  if (m === null) return false
  const decoded = Buffer.from(m[1] ?? '', 'base64')
  const colon = decoded.indexOf(0x3a)
  if (colon === -1) return false
  const isUser = timingSafeEqual(digestOf(decoded.subarray(0, colon)), expected.username)
  const isPassword = timingSafeEqual(digestOf(decoded.subarray(colon + 1)), expected.password)
  return isUser && isPassword
}
