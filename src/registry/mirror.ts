import { createHash, type Hash } from 'node:crypto'
import {
  OciError, parseDigest, rangeNotSatisfiable,
  type DistributionRequest, type RangeSpec, type ResolvedRange
} from '../oci/index.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import { Hedger } from '../resilience/index.js'
import type { Peer, Router } from '../routing/index.js'
import type { Descriptor } from '../store/index.js'
import { AnswerCache } from './answer-cache.js'
import { basicAuthHeader } from './basic-auth.js'
import { MAX_MANIFEST_BYTES } from './constants.js'
import { MultiPeerBody } from './multi-peer-body.js'
import { PeerBlobStream } from './peer-blob-stream.js'
import {
  DigestMismatchError, PeerFetchError, PeerRangeNotSatisfiableError, createPeerClient, discardBody, fetchFromPeer,
  type PeerRequest, type PeerResponse
} from './peer-fetch.js'
import type { PeerHttpClient } from './peer-http.js'
import { BadPeers, PeerLoad } from './peer-health.js'
import { PeerPool, RaceError, hedgedRace, type RaceResult } from './peer-race.js'
import type { PullStorm } from './pull-storm.js'
import { arrivingKey } from '../routing/key-overlay.js'

/** Spegel's bound on a whole HEAD or manifest mirror operation; blob GETs have none (pkg/registry/registry.go). */
export const DEFAULT_MANIFEST_DEADLINE_MS = 3000
/** Spegel's floor for how long attempts in flight may take to answer: `max(2 × p90, 100 ms)`. */
export const DEFAULT_INFLIGHT_TIMEOUT_MIN_MS = 100
/** Why a finished request's lookup and leftover attempts are stopped. */
const FETCH_DONE = new Error('mirror request finished')
/** Holders looked at for a cached manifest answer before the peers are asked instead. */
const MAX_CACHED_CANDIDATES = 8
/**
 * Blobs smaller than this are never waited for: every node fetching its own copy costs upstream
 * little, while a wait (and a download that may come and go between two looks at the ingest
 * area) would hold up the whole pull.
 */
export const STORM_MIN_BYTES = 1024 * 1024
/**
 * With pull storms on, a blob request gives a peer this long to answer its headers before the
 * race counts it failed. In a storm the one node with the blob is often the busiest (it downloads
 * and serves it to every other node), and giving up on it means one more upstream copy, which
 * costs far more than a few seconds of waiting.
 */
const STORM_INFLIGHT_TIMEOUT_MIN_MS = 5000
/** Added to the score of a node that is still receiving a blob, so whole copies are asked first. */
const ARRIVING_PENALTY = 1000
/** Peers taken from one lookup; the race tries at most `resolveRetries` of them. */
const MAX_CANDIDATES = 64
/** Holders a parallel fetch spreads its chunks over (its window keeps at most a few busy anyway). */
const MAX_PARALLEL_HOLDERS = 8

export interface MirrorComponents {
  router: Router
  log: Logger
  metrics?: Pick<Metrics, 'resolveDurationSeconds'> & Partial<Pick<Metrics, 'mirrorParallelFetches' | 'mirrorParallelTakeovers'>>
  /** Shared connection pools to peers; by default the mirror makes (and closes) its own. */
  client?: PeerHttpClient
  /**
   * Blobs nobody holds yet: agree with the other nodes asking on one to fetch upstream, and find
   * nodes still receiving a blob (`arriving:` keys). Without it a miss is a 404 at once.
   */
  storm?: PullStorm
  /**
   * The size this node's containerd expects for a blob it asks for, when known (it opens its
   * download before asking us). Blobs below STORM_MIN_BYTES skip the wait.
   */
  expectedSize?: (digest: string) => number | undefined
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
  /** How long a peer's checked manifest answer is reused (0: never); see AnswerCache. */
  answerTtlMs?: number
  /** Breaks ties between equally good peers (random by default, so nodes spread their load). */
  random?: () => number
  /**
   * `--mirror-parallel-min-size`: a blob GET of at least this many bytes, with two or more nodes
   * holding the whole blob, is fetched from several of them at once in Range chunks
   * (MultiPeerBody); 0 or undefined: always from one peer at a time, as Spegel.
   */
  parallelMinBytes?: number
  /** Bytes per Range request of a parallel fetch (MultiPeerBody's default when undefined). */
  parallelChunkBytes?: number
  /**
   * `--verify-relayed-blobs` (default true): a whole blob from peers is hashed as it streams and
   * its last byte held back until it matches its digest, so a corrupt or hostile peer is caught,
   * blamed and avoided before containerd sees a complete body. False relays the bytes unchecked:
   * containerd still refuses a wrong digest when it commits the blob, but the pull fails and its
   * retry may land on the same peer.
   */
  isRelayVerified?: boolean
}

export interface MirrorFetchOptions {
  method: 'GET' | 'HEAD'
  /** A blob's Range, already validated by the caller. */
  range?: RangeSpec
  /** Aborts when the client goes away. */
  signal: AbortSignal
}

/**
 * Content a peer serves: what to answer, and the body. The registry handler writes the response;
 * the mirror never touches it.
 */
export interface MirroredContent {
  /** The whole content's descriptor (its size is the total, even for a range). */
  descriptor: Descriptor
  /** The absolute byte range the body carries, when a Range was asked for. */
  range?: ResolvedRange
  /** The peer whose answer won (resumes may add others). */
  peer: Peer
  /** A manifest's verified bytes, a blob's resuming, hashing stream; none for HEAD. */
  body?: Buffer | PeerBlobStream
}

/** The registry handler's seam for content this node lacks. */
export interface Mirror {
  /**
   * Finds the content on peers. Rejects with an OciError when no peer can serve it (404 with the
   * attempts, 416 for an unsatisfiable range), or with the client's abort.
   */
  fetch(request: DistributionRequest, options: MirrorFetchOptions): Promise<MirroredContent>
  /** Closes the peer connection pools the mirror created (not an injected client). */
  close(): Promise<void>
  readonly hedger: Hedger
  readonly badPeers: BadPeers
  /** False for a peer a request just failed to reach (see PullStorm's isUsable). */
  isPeerUsable(peerId: string): boolean
}

interface Fetched {
  response: PeerResponse
  /** The verified bytes of a manifest GET. */
  manifest?: Buffer
}

/**
 * Serves content this node lacks from the peers that hold it (Spegel's pkg/registry/registry.go): a
 * hedged race for the headers, then the body as a PeerBlobStream, which resumes a broken transfer
 * with a Range request on the same or another peer and checks a whole blob's digest. Manifests are
 * small: they are read whole and verified before anything is returned, so a corrupt peer is just a
 * failed attempt.
 */
export function createMirror (components: MirrorComponents, init: MirrorInit): Mirror {
  const { router, metrics } = components
  const log = components.log.child({ component: 'mirror' })
  const ownClient = components.client === undefined
    ? createPeerClient({
      ...(init.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: init.connectTimeoutMs }),
      ...(init.bodyIdleTimeoutMs === undefined ? {} : { bodyIdleTimeoutMs: init.bodyIdleTimeoutMs })
    })
    : undefined
  const client: PeerHttpClient = components.client ?? ownClient as PeerHttpClient
  const authorization = init.basicAuth === undefined ? undefined : basicAuthHeader(init.basicAuth)
  const deadlineMs = init.manifestDeadlineMs ?? DEFAULT_MANIFEST_DEADLINE_MS
  const isRelayVerified = init.isRelayVerified ?? true
  const inflightTimeoutMinMs = init.inflightTimeoutMinMs ?? DEFAULT_INFLIGHT_TIMEOUT_MIN_MS
  const maxAttempts = Math.max(1, init.resolveRetries)
  const hedger = init.hedger ?? new Hedger()
  const badPeers = new BadPeers(init.badPeerTtlMs === undefined ? {} : { ttlMs: init.badPeerTtlMs })
  const load = new PeerLoad()
  const answers = init.answerTtlMs === 0 ? undefined : new AnswerCache(init.answerTtlMs === undefined ? {} : { ttlMs: init.answerTtlMs })

  /**
   * Feeds the pool from the router in the background; lookups are local reads, but need not be.
   * With `isByTag`, only peers whose record names a digest for the tag are taken (tag trust,
   * see attempt()).
   */
  function startLookup (key: string, isByTag: boolean, pool: PeerPool, signal: AbortSignal, arriving?: { key: string, peers: Set<string> }): void {
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
      // Nodes still receiving the blob come after those holding it whole (the pool's score).
      if (arriving === undefined || count >= MAX_CANDIDATES) return
      for await (const peer of router.lookup(arriving.key, { signal, limit: MAX_CANDIDATES - count + badPeers.count(key) })) {
        if (badPeers.has(key, peer.id)) continue
        observe()
        if (!pool.has(peer.id)) arriving.peers.add(peer.id)
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
        client,
        signal,
        ...(authorization === undefined ? {} : { authorization }),
        ...(init.bodyIdleTimeoutMs === undefined ? {} : { bodyIdleTimeoutMs: init.bodyIdleTimeoutMs })
      })
    } catch (err) {
      done()
      throw err
    }
    response.body.onClose(done)
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
      // Checked above against the digest asked for, or the one the peer's record pins.
      if (request.content.kind === 'manifest') answers?.set(response.descriptor)
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
    answers?.set(response.descriptor, manifest)
    return { response, manifest }
  }

  function race (pool: PeerPool, request: PeerRequest, key: string, signal: AbortSignal, isPatient = false): Promise<RaceResult<Fetched>> {
    return hedgedRace<Fetched>({
      pool,
      hedger,
      key,
      maxAttempts,
      idleTimeoutMs: init.resolveTimeoutMs,
      inflightTimeoutMinMs: isPatient ? Math.max(inflightTimeoutMinMs, STORM_INFLIGHT_TIMEOUT_MIN_MS) : inflightTimeoutMinMs,
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

  async function fetch (request: DistributionRequest, options: MirrorFetchOptions): Promise<MirroredContent> {
    const { method, range } = options
    const clientSignal = options.signal
    const isBounded = method === 'HEAD' || request.kind === 'manifest'
    // One controller for the lookup and, for bounded requests, the deadline: cheaper per request
    // than AbortSignal.any and AbortSignal.timeout, and the timer is cleared as soon as it is moot.
    const controller = new AbortController()
    const onClientAbort = (): void => { controller.abort(clientSignal.reason) }
    if (clientSignal.aborted) onClientAbort()
    else clientSignal.addEventListener('abort', onClientAbort, { once: true })
    const deadline = isBounded
      ? setTimeout(() => { controller.abort(new DOMException(`timed out after ${deadlineMs} ms`, 'TimeoutError')) }, deadlineMs)
      : undefined
    const signal = controller.signal
    let isStreaming = false
    const end = (): void => {
      clearTimeout(deadline)
      clientSignal.removeEventListener('abort', onClientAbort)
      // Stops the lookup too. One shared reason: a DOMException per request showed in profiles.
      controller.abort(FETCH_DONE)
    }
    try {
      if (request.kind === 'manifest' && answers !== undefined) {
        try {
          const cached = await cachedManifest(request, method, answers, signal)
          if (cached !== undefined) return cached
        } catch {
          if (clientSignal.aborted) throw clientSignal.reason
          // A lookup that failed here fails again in the race, which reports it properly.
        }
      }
      const content = requestContent(request)
      const storm = components.storm
      const arriving = storm?.isEnabled === true && request.kind === 'blob' && request.digest !== undefined
        ? { key: arrivingKey(request.digest), peers: new Set<string>() }
        : undefined
      const stormDigest = arriving !== undefined && method === 'GET' && storm !== undefined ? request.digest : undefined
      if (stormDigest !== undefined && storm !== undefined) await awaitSource(storm, stormDigest, clientSignal)
      const startRace = async (): Promise<RaceResult<Fetched>> => {
        const pool = new PeerPool({
          score: (peer) => load.score(peer.id) + (arriving?.peers.has(peer.id) === true ? ARRIVING_PENALTY : 0),
          ...(init.random === undefined ? {} : { random: init.random })
        })
        racePool = pool
        startLookup(request.key, isTagRequest({ content }), pool, signal, arriving)
        return await race(pool, { method, content, ...(range === undefined ? {} : { range }) }, request.key, signal, arriving !== undefined)
      }
      let racePool: PeerPool | undefined
      let first: RaceResult<Fetched>
      try {
        try {
          first = await startRace()
        } catch (err) {
          // Every node with the blob failed to answer: with pull storms on, that is often a node
          // killed while it fetched the blob, still in the index. Choose again among the nodes
          // still asking (the failed ones no longer count) rather than send everyone upstream.
          if (stormDigest === undefined || storm === undefined || clientSignal.aborted || !(err instanceof RaceError)) throw err
          await awaitSource(storm, stormDigest, clientSignal)
          first = await startRace()
        }
      } catch (err) {
        if (clientSignal.aborted) throw clientSignal.reason
        // Our 404 sends this node's containerd upstream: if that download fails, upstream is
        // what failed (PullStorm.onAbandoned).
        if (stormDigest !== undefined) storm?.noteUpstream(stormDigest)
        throw toOciError(err, request, deadlineMs)
      }
      const pool = racePool as PeerPool
      const { response, manifest } = first.value
      const served = {
        descriptor: response.descriptor,
        ...(response.range === undefined ? {} : { range: response.range }),
        peer: first.peer
      }
      if (method === 'HEAD') return served
      if (manifest !== undefined) return { ...served, body: manifest }
      const key = request.key
      const multi = await parallelBody(request.key, response, first.peer, arriving?.peers, content, signal)
      isStreaming = true
      return {
        ...served,
        body: new PeerBlobStream({
          first: multi === undefined ? response : { ...response, body: multi },
          isVerified: range === undefined && isRelayVerified,
          log,
          // A resume race runs under the client's signal only (blob GETs have no deadline).
          resume: async (remaining) => {
            // Only whole copies: nodes still receiving the blob got it from the same place that
            // just failed, or are waiting on us. Breaking off instead makes containerd ask again
            // with a Range, and that request starts a fresh choice (PullStorm).
            if (arriving !== undefined) for (const id of arriving.peers) pool.remove({ id })
            return (await race(pool, { method: 'GET', content, range: remaining }, key, signal)).value.response
          },
          onWrongSize: (peer) => { pool.remove(peer) },
          // PeerBlobStream knows only the first answer's peer of a parallel fetch: the body knows them all.
          onCorrupt: (peerIds) => {
            const ids = new Set([...peerIds, ...(multi?.contributors ?? [])])
            if (multi !== undefined) log.warn({ peer: [...ids].join(','), digest: response.descriptor.digest }, 'parallel fetch: peers that contributed to a blob that does not match its digest')
            for (const id of ids) badPeers.add(key, id)
          },
          onEnd: () => {
            if (multi !== undefined && multi.steals > 0) metrics?.mirrorParallelTakeovers?.inc(multi.steals)
            end()
          }
        })
      }
    } finally {
      if (!isStreaming) end()
    }
  }

  /**
   * A body that fetches the rest of a large blob from several whole holders at once, or undefined
   * when that cannot help: feature off, range too small, the winner is still receiving the blob
   * (nodes still receiving it are never asked: they got it from the same place, see
   * docs/pull-storms.md), or fewer than two usable whole holders.
   */
  async function parallelBody (key: string, response: PeerResponse, winner: Peer, arrivingPeers: ReadonlySet<string> | undefined, content: PeerRequest['content'], signal: AbortSignal): Promise<MultiPeerBody | undefined> {
    const minBytes = init.parallelMinBytes ?? 0
    const target = response.range ?? { start: 0, end: response.descriptor.sizeBytes - 1 }
    if (minBytes <= 0 || content.kind !== 'blob' || target.end - target.start + 1 < minBytes || arrivingPeers?.has(winner.id) === true) return undefined
    const holders: Peer[] = [winner]
    try {
      // The `arriving:` key is a separate one: this lookup yields whole copies only.
      for await (const peer of router.lookup(key, { signal, limit: MAX_PARALLEL_HOLDERS + badPeers.count(key) })) {
        if (peer.id === winner.id || badPeers.has(key, peer.id) || load.isFailed(peer.id)) continue
        holders.push(peer)
        if (holders.length >= MAX_PARALLEL_HOLDERS) break
      }
    } catch {
      // The single-peer stream needs no lookup; a failed one only means no parallel fetch.
      return undefined
    }
    if (holders.length < 2) return undefined
    const body = new MultiPeerBody({
      first: response,
      target,
      holders,
      signal,
      ...(init.parallelChunkBytes === undefined ? {} : { chunkBytes: init.parallelChunkBytes }),
      fetch: async (peer, range, chunkSignal) => (await attempt(peer, { method: 'GET', content, range }, key, chunkSignal)).response,
      onPeerFailed: (peer, err) => {
        // As in the race: only a peer we could not reach, or that never answered, is unhealthy.
        if (err instanceof PeerFetchError && err.status === undefined) load.failed(peer.id)
        log.warn({ peer: peer.id, address: peer.registryAddress, digest: response.descriptor.digest, err: errorMessage(err) }, 'parallel fetch: peer failed, its chunk goes to another holder')
      }
    })
    log.debug({ digest: response.descriptor.digest, holders: holders.length, bytes: target.end - target.start + 1 }, 'fetching blob from several peers at once')
    metrics?.mirrorParallelFetches?.inc()
    return body
  }

  /**
   * A blob nobody holds or is receiving: wait (bounded) for the node the askers agree on to start
   * its download, or answer 404 now so this node's containerd fetches it upstream.
   */
  async function awaitSource (storm: PullStorm, digest: string, clientSignal: AbortSignal): Promise<void> {
    if (await storm.hasSource(digest, clientSignal)) return
    // A small blob (an image config) costs upstream less than the wait costs the pull.
    const expected = components.expectedSize?.(digest)
    // ...unless this node's own upstream just failed it: then even a config must come from a peer.
    if (expected !== undefined && expected < STORM_MIN_BYTES && !storm.isUpstreamSuspect) {
      storm.noteUpstream(digest)
      throw new OciError('BLOB_UNKNOWN', `no node has it yet, and it is small enough to fetch upstream at once: ${digest}`)
    }
    const outcome = await storm.await(digest, clientSignal)
    if (outcome === 'source') return
    const why = outcome === 'chosen'
      ? 'no node has it yet; this node was picked to fetch it from upstream'
      : outcome === 'timeout'
        ? 'no node has it yet, and none started downloading it in time'
        : 'no node has it yet'
    storm.noteUpstream(digest)
    throw new OciError('BLOB_UNKNOWN', `${why}: ${digest}`, { detail: { pullStorm: outcome } })
  }

  /**
   * A manifest answered from the cache: a current holder (for a tag, one whose record pins the
   * digest) and a checked answer for that digest. Undefined when the peers must be asked.
   */
  async function cachedManifest (request: DistributionRequest, method: 'GET' | 'HEAD', cache: AnswerCache, signal: AbortSignal): Promise<MirroredContent | undefined> {
    const needsBytes = method === 'GET'
    // Skip the lookup when it cannot help.
    if (request.digest !== undefined ? cache.get(request.digest, needsBytes) === undefined : cache.size === 0) return undefined
    const key = request.key
    let seen = 0
    for await (const peer of router.lookup(key, { signal, limit: MAX_CACHED_CANDIDATES + badPeers.count(key) })) {
      if (badPeers.has(key, peer.id)) continue
      const digest = request.digest ?? peer.digest
      const hit = digest === undefined ? undefined : cache.get(digest, needsBytes)
      if (hit !== undefined) return { descriptor: hit.descriptor, peer, ...(needsBytes && hit.bytes !== undefined ? { body: hit.bytes } : {}) }
      if (++seen >= MAX_CACHED_CANDIDATES) break
    }
    return undefined
  }

  return {
    fetch,
    close: async (): Promise<void> => { await ownClient?.close() },
    hedger,
    badPeers,
    isPeerUsable: (peerId) => !load.isFailed(peerId)
  }
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
