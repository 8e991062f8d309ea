import { createHash, type Hash } from 'node:crypto'
import { once } from 'node:events'
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { addLogAttrs, attachError, writeError } from '../http/index.js'
import {
  MEDIA_TYPE_OCTET_STREAM, OciError, contentRangeHeader, parseDigest, parseRangeHeader, rangeNotSatisfiable,
  type DistributionRequest, type RangeSpec, type ResolvedRange
} from '../oci/index.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import { Hedger } from '../resilience/index.js'
import type { Peer, Router } from '../routing/index.js'
import { basicAuthHeader } from './basic-auth.js'
import { MAX_MANIFEST_BYTES, type MirrorHandler } from './handler.js'
import {
  DigestMismatchError, PeerFetchError, PeerRangeNotSatisfiableError, createPeerAgent, discardBody, fetchFromPeer,
  type PeerRequest, type PeerResponse
} from './peer-fetch.js'
import { BadPeers, PeerLoad } from './peer-health.js'
import { PeerPool, RaceError, hedgedRace, type RaceResult } from './peer-race.js'

/** Spegel's bound on a whole HEAD or manifest mirror operation; blob GETs have none (pkg/registry/registry.go). */
export const DEFAULT_MANIFEST_DEADLINE_MS = 3000
/** Spegel's floor for how long attempts in flight may take to answer: `max(2 × p90, 100 ms)`. */
export const DEFAULT_INFLIGHT_TIMEOUT_MIN_MS = 100
/** Peers taken from one lookup; the race tries at most `resolveRetries` of them. */
const MAX_CANDIDATES = 64
/** Resumes in a row that deliver no byte before a blob stream is given up. */
const MAX_STALLED_RESUMES = 3

export interface MirrorComponents {
  router: Router
  log: Logger
  metrics?: Pick<Metrics, 'resolveDurationSeconds'>
  /** Shared connection pools to peers; by default the mirror makes (and closes) its own. */
  dispatcher?: Dispatcher
}

export interface MirrorInit {
  /** `--mirror-resolve-timeout`: with nothing in flight, how long to wait for a peer to turn up. */
  resolveTimeoutMs: number
  /** `--mirror-resolve-retries`: distinct peers tried per race. */
  resolveRetries: number
  /** Sent to peers as `Authorization: Basic …`. */
  basicAuth?: { username: string, password: string }
  /** Bound on a whole HEAD or manifest request; blob GETs are bounded only by the client. */
  manifestDeadlineMs?: number
  inflightTimeoutMinMs?: number
  connectTimeoutMs?: number
  bodyIdleTimeoutMs?: number
  badPeerTtlMs?: number
  hedger?: Hedger
  /** Breaks ties between equally good peers (random by default, so nodes spread their load). */
  random?: () => number
}

/** The registry handler's mirror seam, plus what its owner needs to shut it down and inspect it. */
export interface Mirror extends MirrorHandler {
  /** Closes the peer connection pools the mirror created (not an injected dispatcher). */
  close(): Promise<void>
  readonly hedger: Hedger
  readonly badPeers: BadPeers
}

interface Fetched {
  response: PeerResponse
  /** The verified bytes of a manifest GET. */
  manifest?: Buffer
}

/**
 * Serves content this node lacks from the peers that hold it (Spegel's pkg/registry/registry.go): a
 * hedged race for the headers, then the body streamed to the client with backpressure. A blob
 * stream that breaks resumes with a Range request on the same or another peer without re-sending
 * headers; a whole blob is hashed as it streams, and its last byte is held back until the hash
 * checks out, so a corrupt transfer ends as a broken response and never as a complete one.
 * Manifests are small: they are read whole and verified before anything is sent, so a corrupt peer
 * is just a failed attempt.
 *
 * Resolves true when it served the content, false when it answered with an error (the
 * registry handler counts the two as `hit` and `miss`). Every error response carries an
 * OciError's status.
 */
export function createMirror (components: MirrorComponents, init: MirrorInit): Mirror {
  const { router, metrics } = components
  const log = components.log.child({ component: 'mirror' })
  const ownAgent = components.dispatcher === undefined
    ? createPeerAgent({
      ...(init.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: init.connectTimeoutMs }),
      ...(init.bodyIdleTimeoutMs === undefined ? {} : { bodyIdleTimeoutMs: init.bodyIdleTimeoutMs })
    })
    : undefined
  const dispatcher: Dispatcher = components.dispatcher ?? ownAgent as Dispatcher
  const authorization = init.basicAuth === undefined ? undefined : basicAuthHeader(init.basicAuth)
  const deadlineMs = init.manifestDeadlineMs ?? DEFAULT_MANIFEST_DEADLINE_MS
  const inflightTimeoutMinMs = init.inflightTimeoutMinMs ?? DEFAULT_INFLIGHT_TIMEOUT_MIN_MS
  const maxAttempts = Math.max(1, init.resolveRetries)
  const hedger = init.hedger ?? new Hedger()
  const badPeers = new BadPeers(init.badPeerTtlMs === undefined ? {} : { ttlMs: init.badPeerTtlMs })
  const load = new PeerLoad()

  /**
   * Feeds the pool from the router in the background; lookups are local reads, but need not be.
   * With `isByTag`, only peers whose record names a digest for the tag are taken (tag trust,
   * see attempt()).
   */
  function startLookup (key: string, isByTag: boolean, pool: PeerPool, signal: AbortSignal): void {
    const started = performance.now()
    let isObserved = false
    const observe = (): void => {
      if (isObserved) return
      isObserved = true
      metrics?.resolveDurationSeconds.observe({ router: router.name }, (performance.now() - started) / 1000)
    }
    const run = async (): Promise<void> => {
      let count = 0
      for await (const peer of router.lookup(key, { signal, limit: MAX_CANDIDATES + badPeers.count(key) })) {
        if (badPeers.has(key, peer.id)) continue
        // Tag trust: a peer that did not pin the tag to a digest has only its word for the answer.
        if (isByTag && peer.digest === undefined) continue
        observe()
        pool.add(peer)
        if (++count >= MAX_CANDIDATES) break
      }
    }
    run().then(() => {
      observe()
      pool.close()
    }, (err: unknown) => {
      observe()
      if (!signal.aborted) log.warn({ err, ref: key }, 'peer lookup failed')
      pool.close(err)
    })
  }

  async function attempt (peer: Peer, request: PeerRequest, key: string, signal: AbortSignal): Promise<Fetched> {
    const done = load.begin(peer.id)
    let response: PeerResponse
    try {
      response = await fetchFromPeer(peer, request, {
        dispatcher,
        signal,
        ...(authorization === undefined ? {} : { authorization }),
        ...(init.bodyIdleTimeoutMs === undefined ? {} : { bodyIdleTimeoutMs: init.bodyIdleTimeoutMs })
      })
    } catch (err) {
      done()
      throw err
    }
    response.body.once('close', done)
    // Tag trust: an answer by tag counts only when it is the digest the peer's signed record names
    // for the tag (for a HEAD, its Docker-Content-Digest; for a GET, the bytes hash to it below).
    // Anything else is treated as a corrupt peer.
    if (isTagRequest(request) && response.descriptor.digest !== peer.digest) {
      discardBody(response.body)
      badPeers.add(key, peer.id)
      log.warn({ peer: peer.id, address: peer.registryAddress, ref: key, digest: peer.digest, actual: response.descriptor.digest }, 'peer answered a tag with another digest than its record names')
      throw new DigestMismatchError(peer.digest ?? '(none)', response.descriptor.digest, [peer.id])
    }
    if (request.method === 'HEAD') {
      await response.body.dump({ signal, limit: 64 * 1024 })
      return { response }
    }
    if (request.content.kind !== 'manifest') return { response }

    const { digest, sizeBytes } = response.descriptor
    if (sizeBytes > MAX_MANIFEST_BYTES) {
      discardBody(response.body)
      throw new PeerFetchError(peer, `manifest ${digest} of ${sizeBytes} bytes is larger than ${MAX_MANIFEST_BYTES} bytes`)
    }
    const manifest = await readExactly(response.body, sizeBytes)
    const actual = hashOf(digest, manifest)
    if (actual !== digest) {
      badPeers.add(key, peer.id)
      log.warn({ peer: peer.id, address: peer.registryAddress, ref: key, digest, actual }, 'peer served a manifest that does not match its digest')
      throw new DigestMismatchError(digest, actual, [peer.id])
    }
    return { response, manifest }
  }

  function race (pool: PeerPool, request: PeerRequest, key: string, signal: AbortSignal): Promise<RaceResult<Fetched>> {
    return hedgedRace<Fetched>({
      pool,
      hedger,
      key,
      maxAttempts,
      idleTimeoutMs: init.resolveTimeoutMs,
      inflightTimeoutMinMs,
      signal,
      attempt: async (peer, attemptSignal) => await attempt(peer, request, key, attemptSignal),
      isTerminal: (err) => err instanceof PeerRangeNotSatisfiableError,
      onFailure: (peer, err) => {
        // A peer that answered (404 from a stale index, say) is healthy; one we could not
        // reach, or that never answered, is not.
        if ((err instanceof PeerFetchError && err.status === undefined) || err instanceof RaceError) load.failed(peer.id)
        log.debug({ peer: peer.id, address: peer.registryAddress, ref: key, err: errorMessage(err) }, 'request to peer failed')
      },
      discard: (fetched) => { discardBody(fetched.response.body) }
    })
  }

  const handler = async (req: IncomingMessage, res: ServerResponse, request: DistributionRequest, clientSignal: AbortSignal): Promise<boolean> => {
    const method = req.method === 'HEAD' ? 'HEAD' : 'GET'
    const isBounded = method === 'HEAD' || request.kind === 'manifest'
    const signal = isBounded ? AbortSignal.any([clientSignal, AbortSignal.timeout(deadlineMs)]) : clientSignal
    // The handler has already rejected malformed ranges; this only re-reads a valid one.
    const range = request.kind === 'blob' ? parseRangeHeader(req.headers.range) : undefined
    const content = requestContent(request)
    const pool = new PeerPool({ score: (peer) => load.score(peer.id), ...(init.random === undefined ? {} : { random: init.random }) })
    const lookup = new AbortController()
    startLookup(request.key, isTagRequest({ content }), pool, AbortSignal.any([signal, lookup.signal]))
    try {
      let first: RaceResult<Fetched>
      try {
        first = await race(pool, { method, content, ...(range === undefined ? {} : { range }) }, request.key, signal)
      } catch (err) {
        if (clientSignal.aborted) return false
        writeError(res, toOciError(err, request, deadlineMs))
        return false
      }

      const { response, manifest } = first.value
      addLogAttrs(res, { peer: first.peer.id, peerAddress: first.peer.registryAddress })
      res.writeHead(response.range === undefined ? 200 : 206, responseHeaders(request, response))
      if (method === 'HEAD') {
        res.end()
        return true
      }
      if (manifest !== undefined) {
        res.end(manifest)
        return true
      }
      return await streamBlob(res, request, first, pool, range === undefined, clientSignal)
    } finally {
      lookup.abort()
    }
  }

  /**
   * Copies the winner's body, then resumes from the first byte not yet received on whichever
   * peer the next race picks, until the range is complete or no progress is made. Returns
   * false when the response had to be broken off because of us or the peers.
   */
  async function streamBlob (res: ServerResponse, request: DistributionRequest, first: RaceResult<Fetched>, pool: PeerPool, isWhole: boolean, signal: AbortSignal): Promise<boolean> {
    const { descriptor } = first.value.response
    const key = request.key
    const target: ResolvedRange = first.value.response.range ?? { start: 0, end: descriptor.sizeBytes - 1 }
    const hash = isWhole ? createHash(parseDigest(descriptor.digest).algorithm) : undefined
    const contributors = new Set<string>()
    let current: PeerResponse | undefined = first.value.response
    let offset = target.start
    let held: Buffer | undefined
    let stalls = 0
    let resumes = 0

    const giveUp = (err: unknown): false => {
      attachError(res, err)
      log.warn({ ref: key, digest: descriptor.digest, bytes: offset - target.start, err: errorMessage(err) }, 'could not complete blob from peers')
      res.destroy()
      return false
    }

    for (;;) {
      if (current === undefined) {
        resumes++
        addLogAttrs(res, { resumes })
        const remaining: RangeSpec = { start: offset, end: target.end }
        try {
          current = (await race(pool, { method: 'GET', content: requestContent(request), range: remaining }, key, signal)).value.response
        } catch (err) {
          if (signal.aborted) return true
          return giveUp(err)
        }
        if (current.descriptor.sizeBytes !== descriptor.sizeBytes || current.range?.end !== target.end) {
          // A peer with a different idea of the blob's size cannot be continuing the same bytes.
          discardBody(current.body)
          pool.remove(current.peer)
          if (++stalls >= MAX_STALLED_RESUMES) return giveUp(new PeerFetchError(current.peer, `peer reports size ${current.descriptor.sizeBytes}, expected ${descriptor.sizeBytes}`))
          current = undefined
          continue
        }
      }

      const peer = current.peer
      contributors.add(peer.id)
      const before = offset
      try {
        for await (const chunk of current.body as AsyncIterable<Buffer>) {
          if (offset + chunk.length > target.end + 1) throw new PeerFetchError(peer, `peer sent more than the ${target.end - target.start + 1} bytes announced`)
          let out = chunk
          hash?.update(chunk)
          offset += chunk.length
          if (hash !== undefined && offset === target.end + 1 && chunk.length > 0) {
            // Held back until the digest checks out: with every byte sent, destroying the
            // response afterwards would no longer look like a failure to the client.
            held = chunk.subarray(chunk.length - 1)
            out = chunk.subarray(0, chunk.length - 1)
          }
          if (out.length > 0 && !res.write(out)) await once(res, 'drain', { signal })
        }
        if (offset <= target.end) throw new PeerFetchError(peer, `body ended after ${offset - target.start} of ${target.end - target.start + 1} bytes`)
        break
      } catch (err) {
        discardBody(current.body)
        if (signal.aborted || res.destroyed) return true
        // Every byte is in; whatever went wrong after the last one changes nothing.
        if (offset > target.end) break
        // The peer stays in the pool: its usage count already sends the resume elsewhere when
        // another peer is left, and a lone flaky peer is still worth asking again, as in Spegel.
        if (offset === before) {
          if (++stalls >= MAX_STALLED_RESUMES) return giveUp(err)
        } else {
          stalls = 0
        }
        log.warn({ peer: peer.id, address: peer.registryAddress, digest: descriptor.digest, offset, err: errorMessage(err) }, 'blob stream from peer failed, resuming')
        current = undefined
      }
    }

    if (hash !== undefined) {
      const actual = `${parseDigest(descriptor.digest).algorithm}:${hash.digest('hex')}`
      if (actual !== descriptor.digest) {
        const peerIds = [...contributors]
        for (const id of peerIds) badPeers.add(key, id)
        const err = new DigestMismatchError(descriptor.digest, actual, peerIds)
        attachError(res, err)
        log.warn({ peer: peerIds.join(','), digest: descriptor.digest, actual }, 'peer served a blob that does not match its digest')
        res.destroy()
        return false
      }
    }
    res.end(held)
    return true
  }

  return Object.assign(handler, {
    close: async (): Promise<void> => { await ownAgent?.close() },
    hedger,
    badPeers
  })
}

/** A manifest asked for by tag (no digest): its answer is a claim about what the tag names. */
function isTagRequest (request: Pick<PeerRequest, 'content'>): boolean {
  return request.content.kind === 'manifest' && request.content.digest === undefined
}

function requestContent (request: DistributionRequest): PeerRequest['content'] {
  return {
    kind: request.kind,
    repository: request.repository,
    registry: request.registry,
    ...(request.tag === undefined ? {} : { tag: request.tag }),
    ...(request.digest === undefined ? {} : { digest: request.digest })
  }
}

/**
 * Headers from the peer's descriptor only; nothing else the peer sent (not even OCI-Namespace) is
 * passed on, as in Spegel.
 */
function responseHeaders (request: DistributionRequest, response: PeerResponse): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {
    'Content-Type': response.descriptor.mediaType,
    'Content-Length': response.bodyBytes,
    'Docker-Content-Digest': response.descriptor.digest
  }
  if (request.kind === 'blob') {
    headers['Accept-Ranges'] = 'bytes'
    if (response.range !== undefined) {
      headers['Content-Type'] = MEDIA_TYPE_OCTET_STREAM
      headers['Content-Range'] = contentRangeHeader(response.range, response.descriptor.sizeBytes)
    }
  }
  return headers
}

function toOciError (err: unknown, request: DistributionRequest, deadlineMs: number): unknown {
  if (err instanceof PeerRangeNotSatisfiableError) {
    return rangeNotSatisfiable(err.sizeBytes, `range is not satisfiable for ${request.key} of ${err.sizeBytes} bytes`)
  }
  if (!(err instanceof RaceError)) return err
  const code = request.kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN'
  const message = err.reason === 'aborted' ? `timed out after ${deadlineMs} ms waiting for peers for ${request.key}` : err.message
  return new OciError(code, message, { detail: { attempts: err.attempts }, cause: err })
}

/** Reads a body of a known, small size; more or fewer bytes is a failure. */
async function readExactly (body: PeerResponse['body'], sizeBytes: number): Promise<Buffer> {
  const parts: Buffer[] = []
  let length = 0
  for await (const chunk of body as AsyncIterable<Buffer>) {
    length += chunk.length
    if (length > sizeBytes) {
      discardBody(body)
      throw new Error(`body is longer than ${sizeBytes} bytes`)
    }
    parts.push(chunk)
  }
  if (length !== sizeBytes) throw new Error(`body is ${length} bytes, expected ${sizeBytes}`)
  return Buffer.concat(parts, length)
}

function hashOf (digest: string, bytes: Buffer): string {
  const { algorithm } = parseDigest(digest)
  const hash: Hash = createHash(algorithm)
  return `${algorithm}:${hash.update(bytes).digest('hex')}`
}

function errorMessage (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
