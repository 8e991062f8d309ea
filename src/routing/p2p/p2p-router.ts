import { isIPv4, isIPv6 } from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { lpStream } from '@libp2p/utils'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p, type Libp2p } from 'libp2p'
import type { HostPort } from '../../config/index.js'
import type { Logger } from '../../observability/logger.js'
import type { BootstrapPeer, Bootstrapper } from '../bootstrap/types.js'
import type { LookupOptions, Peer, Router, RouterReadiness } from '../types.js'
import {
  FrameType, compactKey, decodePush, decodeSyncRequest, decodeSyncResponseFrame, encodePush,
  encodeRecordFull, encodeSyncRequest, encodeSyncResponseFrame, type LivenessEntry, type PushMessage, type RecordFull,
  type VersionEntry
} from './codec.js'
import {
  BOOTSTRAP_BACKOFF_INITIAL_MS, BOOTSTRAP_BACKOFF_MAX_MS, DEFAULT_EXPIRY_MS, DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_SYNC_INTERVAL_MS, DEFAULT_TARGET_PEERS, DELTA_PROTOCOL, DIAL_TIMEOUT_MS, DISCOVER_TIMEOUT_MS,
  GOODBYE_FLUSH_TIMEOUT_MS, INBOUND_CONNECTION_THRESHOLD, MAINTAIN_INTERVAL_MS, MAX_DELTA_BYTES, MAX_FRAME_BYTES,
  MAX_INCOMING_PENDING_CONNECTIONS, PSK_HANDSHAKE_TIMEOUT_MS, REDIAL_BACKOFF_INITIAL_MS, REDIAL_BACKOFF_MAX_MS,
  REDISCOVER_INTERVAL_MS, SYNC_PROTOCOL, SYNC_TIMEOUT_MS, TOMBSTONE_MIN_TTL_MS
} from './constants.js'
import { ContentIndex } from './content-index.js'
import { loadOrCreatePrivateKey } from './identity.js'
import { PeerLink } from './peer-link.js'
import { readPskFile } from './psk.js'
import { jitter, shuffle } from './util.js'
import { backoffDelayMs } from '../../resilience/backoff.js'

/** Half-jittered exponential backoff; `attempt` counts from 0. */
function backoffMs (attempt: number, initialMs: number, maxMs: number): number {
  return backoffDelayMs(attempt + 1, { initialMs, maxMs, jitter: 0.5 })
}

export interface P2PRouterComponents {
  log: Logger
}

/** Test seams; nothing in production sets them. */
export interface P2PRouterHooks {
  /** Return true to drop an inbound pushed message before it is looked at (e.g. to make a seq gap). */
  dropInbound?: (message: PushMessage, from: string) => boolean
}

export interface P2PRouterInit {
  /** TCP listen address; host '' (or a hostname) means every IPv4 interface. Port 0 picks one. */
  listen: HostPort
  /** Holds `private.key` (the peer identity); '' for a new identity at every start. */
  dataDir: string
  /** libp2p PSK v1 file; '' for an open network. Only nodes with the same key can connect. */
  secretPath: string
  /** `host:port` other nodes use to reach this node's registry. */
  registryAddress: string
  bootstrapper: Bootstrapper
  syncIntervalMs?: number
  heartbeatIntervalMs?: number
  expiryMs?: number
  /** Connections to keep open (default 6). */
  targetPeers?: number
  hooks?: P2PRouterHooks
}

export interface P2PRouterStatus {
  peerId: string
  isReady: boolean
  reason?: string
  /** Open libp2p connections (distinct peers). */
  peers: number
  /** Other nodes' records held (alive or not yet swept). */
  records: number
  /** Distinct keys in the index (other nodes' keys). */
  keys: number
  ownKeys: number
  /** Pulls running or queued right now. */
  pullsInFlight: number
  epoch: number
  seq: number
  multiaddrs: string[]
  counters: P2PRouterCounters
}

export interface P2PRouterCounters {
  bootstrapRounds: number
  dialFailures: number
  pushesIn: number
  pushesOut: number
  pushesDropped: number
  gaps: number
  pullsOk: number
  pullsFailed: number
  syncsServed: number
  expired: number
  goodbyes: number
}

/** What this node knows of another node, for operators (web page, metrics). */
export interface PeerSummary {
  readonly id: string
  /** `host:port` of its registry; empty for a connected peer whose record has not arrived. */
  readonly registryAddress: string
  /** libp2p addresses it announced (or the connection's remote address). */
  readonly addrs: readonly string[]
  readonly keyCount: number
  /** Unix ms when it was last heard of, directly or through others; undefined without a record. */
  readonly lastHeardMs?: number
  /** Heard of within the expiry bound, so lookups offer it. */
  readonly isAlive: boolean
  /** An open libp2p connection to it right now. */
  readonly isConnected: boolean
}

export interface P2PRouter extends Router {
  readonly peerId: string
  start(): Promise<void>
  /**
   * Leaves the cluster. With `goodbye` (the default) every replica drops this node at once;
   * without it the node just goes silent, as if killed, and expires (used by tests).
   */
  stop(options?: { goodbye?: boolean }): Promise<void>
  /** Listen multiaddrs with `/p2p/<id>`, as another node's static bootstrap list takes them. */
  multiaddrs(): string[]
  status(): P2PRouterStatus
  /** Peer ids of the live records this node holds (never its own). */
  origins(): string[]
  /** Every node this one has a record of or a connection to. */
  peers(): PeerSummary[]
  /** How many live nodes (not this one) hold `key`. */
  holders(key: string): number
  /** This node's record version. */
  version(): { epoch: number, seq: number }
  /** The version of `origin`'s record held here, if any. */
  knownVersion(origin: string): { epoch: number, seq: number } | undefined
}

/**
 * Builds a P2P router: a libp2p host (TCP, Noise, Yamux, Identify, Ping, optional private
 * network) and a full replica of the cluster index. Does not start it.
 */
export async function createP2PRouter (components: P2PRouterComponents, init: P2PRouterInit): Promise<P2PRouter> {
  const log = components.log.child({ component: 'router' })
  const privateKey = await loadOrCreatePrivateKey(init.dataDir, log)
  const psk = init.secretPath === '' ? undefined : await readPskFile(init.secretPath)
  const libp2p = await createLibp2p({
    start: false,
    privateKey,
    addresses: { listen: [listenMultiaddr(init.listen)] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(psk === undefined ? {} : { connectionProtector: preSharedKey({ psk, timeout: PSK_HANDSHAKE_TIMEOUT_MS }) }),
    connectionManager: {
      // libp2p's defaults (5 inbound/s per IP, 10 pending) refuse a cluster restarting at once.
      inboundConnectionThreshold: INBOUND_CONNECTION_THRESHOLD,
      maxIncomingPendingConnections: MAX_INCOMING_PENDING_CONNECTIONS
    },
    // A busy event loop misses pings; aborting on a missed ping would cut live connections under load.
    connectionMonitor: { abortConnectionOnPingFailure: false },
    services: { identify: identify(), ping: ping() }
  })
  return new P2PRouterImpl(log, libp2p, init)
}

/** `{host, port}` → the TCP listen multiaddr; hostnames listen on every IPv4 interface. */
export function listenMultiaddr (listen: HostPort): string {
  if (isIPv4(listen.host)) return `/ip4/${listen.host}/tcp/${listen.port}`
  if (isIPv6(listen.host)) return `/ip6/${listen.host}/tcp/${listen.port}`
  return `/ip4/0.0.0.0/tcp/${listen.port}`
}

const TCP_CODE = 6
const P2P_CODE = 421

class P2PRouterImpl implements P2PRouter {
  readonly name = 'p2p'
  readonly peerId: string
  readonly #log: Logger
  readonly #libp2p: Libp2p
  readonly #init: P2PRouterInit
  readonly #index: ContentIndex
  readonly #syncIntervalMs: number
  readonly #heartbeatIntervalMs: number
  readonly #expiryMs: number
  readonly #targetPeers: number
  #epoch: number
  #seq = 0
  /** This node's keys, compact form. */
  #own = new Set<string>()
  readonly #links = new Map<string, PeerLink>()
  readonly #pulls = new Map<string, { again: boolean }>()
  readonly #redial = new Map<string, { attempt: number, nextMs: number }>()
  #controller = new AbortController()
  readonly #timers: NodeJS.Timeout[] = []
  readonly #tasks = new Set<Promise<unknown>>()
  #started = false
  #stopped = false
  #bootstrapped = false
  #alone = false
  #synced = false
  readonly #counters: P2PRouterCounters = {
    bootstrapRounds: 0,
    dialFailures: 0,
    pushesIn: 0,
    pushesOut: 0,
    pushesDropped: 0,
    gaps: 0,
    pullsOk: 0,
    pullsFailed: 0,
    syncsServed: 0,
    expired: 0,
    goodbyes: 0
  }

  constructor (log: Logger, libp2p: Libp2p, init: P2PRouterInit) {
    this.#libp2p = libp2p
    this.#init = init
    this.peerId = libp2p.peerId.toString()
    this.#log = log.child({ peerId: this.peerId })
    this.#syncIntervalMs = init.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS
    this.#heartbeatIntervalMs = init.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS
    this.#expiryMs = init.expiryMs ?? DEFAULT_EXPIRY_MS
    this.#targetPeers = init.targetPeers ?? DEFAULT_TARGET_PEERS
    // Start time plus noise: a restart with the same identity always gets a newer epoch,
    // and two starts in the same millisecond still differ.
    this.#epoch = Date.now() * 1000 + Math.floor(Math.random() * 1000)
    this.#index = new ContentIndex({
      selfId: this.peerId,
      expiryMs: this.#expiryMs,
      tombstoneTtlMs: Math.max(TOMBSTONE_MIN_TTL_MS, 3 * this.#expiryMs)
    })
  }

  // ---- Router ----

  readiness (): RouterReadiness {
    if (!this.#bootstrapped) return { isReady: false, reason: 'bootstrapping' }
    if (!this.#alone && !this.#synced) return { isReady: false, reason: 'no peer synced yet' }
    return { isReady: true }
  }

  /**
   * Peers holding `key`, read from the local replica, in random order so load spreads over
   * the holders. Nodes not heard of within the expiry bound are skipped even before the sweep.
   */
  async * lookup (key: string, options: LookupOptions = {}): AsyncIterable<Peer> {
    options.signal?.throwIfAborted()
    const limit = options.limit ?? Number.POSITIVE_INFINITY
    const peers = shuffle(this.#index.lookup(compactKey(key), Date.now()))
    let yielded = 0
    for (const peer of peers) {
      if (yielded >= limit) return
      options.signal?.throwIfAborted()
      yielded++
      yield peer
    }
  }

  advertise (keys: readonly string[]): void {
    const adds: string[] = []
    for (const key of keys) {
      const k = compactKey(key)
      if (this.#own.has(k)) continue
      this.#own.add(k)
      adds.push(k)
    }
    this.#changed(adds, [])
  }

  withdraw (keys: readonly string[]): void {
    const removes: string[] = []
    for (const key of keys) {
      const k = compactKey(key)
      if (this.#own.delete(k)) removes.push(k)
    }
    this.#changed([], removes)
  }

  replaceAll (keys: readonly string[]): void {
    const next = new Set<string>()
    for (const key of keys) next.add(compactKey(key))
    const adds: string[] = []
    const removes: string[] = []
    for (const k of next) if (!this.#own.has(k)) adds.push(k)
    for (const k of this.#own) if (!next.has(k)) removes.push(k)
    this.#own = next
    this.#changed(adds, removes)
  }

  // ---- P2PRouter ----

  async start (): Promise<void> {
    if (this.#started) throw new Error('router already started')
    this.#started = true
    const libp2p = this.#libp2p
    await libp2p.handle(DELTA_PROTOCOL, (stream, connection) => this.#servePushes(stream, connection))
    await libp2p.handle(SYNC_PROTOCOL, (stream, connection) => this.#serveSync(stream, connection))
    libp2p.addEventListener('peer:connect', this.#onConnect)
    libp2p.addEventListener('peer:disconnect', this.#onDisconnect)
    await libp2p.start()
    this.#log.info({ multiaddrs: this.multiaddrs(), epoch: this.#epoch }, 'router started')

    this.#every(this.#heartbeatIntervalMs, () => { this.#heartbeat() })
    this.#every(Math.max(50, Math.min(1000, Math.floor(this.#expiryMs / 4))), () => { this.#sweep() })
    this.#every(MAINTAIN_INTERVAL_MS, () => { this.#maintain() })
    this.#scheduleSync()
    this.#track(this.#bootstrapLoop(this.#controller.signal))
    const serve = this.#init.bootstrapper.serve
    if (serve !== undefined) {
      this.#track(serve.call(this.#init.bootstrapper, () => ({ id: this.peerId, addrs: this.#announcedAddrs() }), this.#controller.signal)
        .catch((err: unknown) => {
          if (!this.#controller.signal.aborted) this.#log.error({ err }, 'bootstrap server failed')
        }))
    }
  }

  async stop (options: { goodbye?: boolean } = {}): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    if (this.#started && (options.goodbye ?? true)) {
      this.#broadcast(encodePush({ type: FrameType.Goodbye, origin: this.peerId, epoch: this.#epoch }))
      // Best effort: a peer that does not take the goodbye in time expires us instead.
      await Promise.race([
        Promise.all([...this.#links.values()].map(async (l) => { await l.whenIdle() })),
        delay(GOODBYE_FLUSH_TIMEOUT_MS, undefined, { ref: false })
      ])
    }
    this.#controller.abort(new Error('router stopped'))
    for (const t of this.#timers) clearInterval(t)
    this.#libp2p.removeEventListener('peer:connect', this.#onConnect)
    this.#libp2p.removeEventListener('peer:disconnect', this.#onDisconnect)
    for (const link of this.#links.values()) link.close()
    this.#links.clear()
    await this.#libp2p.stop()
    await Promise.allSettled([...this.#tasks])
    this.#log.info('router stopped')
  }

  multiaddrs (): string[] {
    return this.#libp2p.getMultiaddrs().map(String)
  }

  status (): P2PRouterStatus {
    const r = this.readiness()
    return {
      peerId: this.peerId,
      isReady: r.isReady,
      ...(r.reason === undefined ? {} : { reason: r.reason }),
      peers: this.#libp2p.getPeers().length,
      records: this.#index.recordCount,
      keys: this.#index.distinctKeys,
      ownKeys: this.#own.size,
      pullsInFlight: this.#pulls.size,
      epoch: this.#epoch,
      seq: this.#seq,
      multiaddrs: this.multiaddrs(),
      counters: { ...this.#counters }
    }
  }

  origins (): string[] {
    const now = Date.now()
    const out: string[] = []
    for (const rec of this.#index.records()) if (this.#index.isAlive(rec, now)) out.push(rec.origin)
    return out
  }

  peers (): PeerSummary[] {
    const now = Date.now()
    const connected = new Map<string, string[]>()
    for (const connection of this.#libp2p.getConnections()) {
      const id = connection.remotePeer.toString()
      const addrs = connected.get(id) ?? []
      addrs.push(connection.remoteAddr.toString())
      connected.set(id, addrs)
    }
    const out: PeerSummary[] = []
    for (const rec of this.#index.records()) {
      out.push({
        id: rec.origin,
        registryAddress: rec.registryAddress,
        addrs: rec.addrs,
        keyCount: rec.keyCount,
        lastHeardMs: rec.lastHeardMs,
        isAlive: this.#index.isAlive(rec, now),
        isConnected: connected.has(rec.origin)
      })
      connected.delete(rec.origin)
    }
    for (const [id, addrs] of connected) {
      out.push({ id, registryAddress: '', addrs, keyCount: 0, isAlive: false, isConnected: true })
    }
    return out
  }

  holders (key: string): number {
    return this.#index.lookup(compactKey(key), Date.now()).length
  }

  version (): { epoch: number, seq: number } {
    return { epoch: this.#epoch, seq: this.#seq }
  }

  knownVersion (origin: string): { epoch: number, seq: number } | undefined {
    const rec = this.#index.get(origin)
    return rec === undefined ? undefined : { epoch: rec.epoch, seq: rec.seq }
  }

  // ---- owner side ----

  #changed (adds: string[], removes: string[]): void {
    if (adds.length === 0 && removes.length === 0) return
    this.#seq++
    const frame = encodePush({ type: FrameType.Delta, origin: this.peerId, epoch: this.#epoch, seq: this.#seq, adds, removes })
    if (frame.byteLength <= MAX_DELTA_BYTES) {
      this.#broadcast(frame)
      return
    }
    // Too big to flood: announce the new version and let every peer pull the record.
    this.#heartbeat()
  }

  #heartbeat (): void {
    if (!this.#started || this.#libp2p.getPeers().length === 0) return
    const now = Date.now()
    const others: LivenessEntry[] = []
    for (const rec of this.#index.records()) {
      if (this.#index.isAlive(rec, now)) others.push({ origin: rec.origin, epoch: rec.epoch, seq: rec.seq, ageMs: now - rec.lastHeardMs })
    }
    this.#broadcast(encodePush({ type: FrameType.Heartbeat, origin: this.peerId, epoch: this.#epoch, seq: this.#seq, others }))
  }

  #broadcast (frame: Uint8Array, except?: string): void {
    if (!this.#started || this.#controller.signal.aborted) return
    for (const peer of this.#libp2p.getPeers()) {
      const id = peer.toString()
      if (id === except) continue
      this.#link(peer).enqueue(frame)
      this.#counters.pushesOut++
    }
  }

  #link (peer: PeerId): PeerLink {
    const id = peer.toString()
    let link = this.#links.get(id)
    if (link === undefined) {
      link = new PeerLink({
        log: this.#log,
        connection: () => this.#connection(peer),
        onDropped: (n) => { this.#counters.pushesDropped += n }
      }, peer)
      this.#links.set(id, link)
    }
    return link
  }

  #connection (peer: PeerId): Connection | undefined {
    return this.#libp2p.getConnections(peer).find((c) => c.status === 'open')
  }

  /**
   * Someone holds a record of this node at a newer epoch (or a goodbye of the current one): the clock
   * went back across a restart (or another process uses this identity). Move past it, or peers
   * would keep the old record, or the old goodbye's tombstone, over every change from now on.
   */
  #noticeSelf (origin: string, epoch: number, isTombstone = false): void {
    if (origin !== this.peerId || epoch < this.#epoch || (epoch === this.#epoch && !isTombstone)) return
    this.#log.warn({ event: 'epoch-behind', seen: epoch, epoch: this.#epoch, fix: 'check the clock, and that no other node uses this data directory' },
      'peers hold a newer record of this node; moving to a newer epoch')
    this.#epoch = epoch + 1
    this.#heartbeat()
  }

  // ---- receiving pushes ----

  async #servePushes (stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString()
    const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
    try {
      for (;;) {
        const frame = (await lp.read()).subarray()
        this.#counters.pushesIn++
        this.#onPush(frame, from)
      }
    } catch (err) {
      // The usual end: the peer closed the stream or the connection went away.
      if (stream.status === 'open') {
        this.#log.debug({ peer: from, err }, 'push stream ended')
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      }
    }
  }

  #onPush (frame: Uint8Array, from: string): void {
    let m: PushMessage
    try {
      m = decodePush(frame)
    } catch (err) {
      this.#log.warn({ peer: from, err }, 'invalid push frame')
      return
    }
    if (this.#init.hooks?.dropInbound?.(m, from) === true) return
    const now = Date.now()
    const index = this.#index
    switch (m.type) {
      case FrameType.Delta: {
        if (!index.markDeltaSeen(m.origin, m.epoch, m.seq, now)) return
        const result = index.applyDelta(m, now)
        if (result === 'gap') {
          this.#counters.gaps++
          this.#log.debug({ origin: m.origin, seq: m.seq, peer: from }, 'delta gap, pulling')
          this.#pull(from)
        }
        if (result === 'applied' || result === 'gap') this.#broadcast(frame, from)
        return
      }
      case FrameType.Heartbeat: {
        if (m.origin !== from) {
          this.#log.warn({ peer: from, origin: m.origin }, 'heartbeat for another node, ignored')
          return
        }
        index.heard(m.origin, m.epoch, now)
        this.#wantFrom(m, from, now)
        for (const o of m.others) {
          if (o.origin === this.peerId) {
            this.#noticeSelf(o.origin, o.epoch)
            continue
          }
          index.heard(o.origin, o.epoch, now, o.ageMs)
          // Not for records the sender itself has not heard of within the bound (they would expire at once).
          if (o.ageMs <= this.#expiryMs) this.#wantFrom(o, from, now)
        }
        return
      }
      case FrameType.Have: {
        for (const v of m.versions) this.#wantFrom(v, from, now)
        return
      }
      case FrameType.Goodbye: {
        if (!index.goodbye(m.origin, m.epoch, now)) return
        this.#counters.goodbyes++
        this.#redial.delete(m.origin)
        this.#log.info({ origin: m.origin }, 'peer said goodbye')
        this.#broadcast(frame, from)
      }
    }
  }

  // ---- sync (pull) ----

  /**
   * `from` holds (or forwarded news of) a version this node lacks: pull from it, unless the
   * same version is already wished for and a pull is running (then the sweep retries if that
   * pull did not bring it), so one new record does not cause a pull from every neighbour.
   */
  #wantFrom (v: VersionEntry, from: string, now: number): void {
    if (!this.#index.isBehind(v.origin, v.epoch, v.seq)) return
    const already = this.#index.isWanted(v.origin, v.epoch, v.seq)
    this.#index.want(v.origin, v.epoch, v.seq, now)
    if (already && this.#pulls.size > 0) return
    this.#pull(from)
  }

  /** Pulls from `peer` now, or once more right after the pull already running against it. */
  #pull (peer: string): void {
    if (this.#controller.signal.aborted) return
    const running = this.#pulls.get(peer)
    if (running !== undefined) {
      running.again = true
      return
    }
    const state = { again: false }
    this.#pulls.set(peer, state)
    this.#track((async () => {
      try {
        do {
          state.again = false
          await this.#pullOnce(peer)
        } while (state.again && !this.#controller.signal.aborted)
      } finally {
        this.#pulls.delete(peer)
      }
    })())
  }

  async #pullOnce (peerIdText: string): Promise<void> {
    const conn = this.#libp2p.getConnections().find((c) => c.status === 'open' && c.remotePeer.toString() === peerIdText)
    if (conn === undefined) return
    const signal = AbortSignal.any([this.#controller.signal, AbortSignal.timeout(SYNC_TIMEOUT_MS)])
    let stream: Stream | undefined
    try {
      stream = await conn.newStream(SYNC_PROTOCOL, { signal })
      const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
      const versions: VersionEntry[] = [{ origin: this.peerId, epoch: this.#epoch, seq: this.#seq }, ...this.#index.versions()]
      await lp.write(encodeSyncRequest({ type: FrameType.SyncRequest, versions }), { signal })
      const fulls: RecordFull[] = []
      for (;;) {
        const f = decodeSyncResponseFrame((await lp.read({ signal })).subarray())
        if (f.type === FrameType.SyncEnd) break
        if (f.origin === this.peerId) {
          this.#noticeSelf(f.origin, f.epoch, f.type === FrameType.RecordGone)
          continue
        }
        const now = Date.now()
        if (f.type === FrameType.RecordFull) fulls.push(f)
        else if (f.type === FrameType.RecordSame) this.#index.heard(f.origin, f.epoch, now, f.ageMs)
        else if (this.#index.goodbye(f.origin, f.epoch, now)) this.#log.info({ origin: f.origin }, 'peer left (learnt by sync)')
      }
      const changed = this.#index.applyFull(fulls, Date.now())
      if (changed.length > 0) {
        const versions: VersionEntry[] = []
        for (const origin of changed) {
          const rec = this.#index.get(origin)
          if (rec !== undefined) versions.push({ origin, epoch: rec.epoch, seq: rec.seq })
        }
        this.#broadcast(encodePush({ type: FrameType.Have, versions }), peerIdText)
      }
      await stream.close({ signal })
      this.#counters.pullsOk++
      if (!this.#synced) this.#log.info({ peer: peerIdText, records: this.#index.recordCount }, 'index synced')
      this.#synced = true
      if (changed.length > 0) this.#log.debug({ peer: peerIdText, changed: changed.length }, 'pulled records')
    } catch (err) {
      this.#counters.pullsFailed++
      stream?.abort(err instanceof Error ? err : new Error(String(err)))
      if (!this.#controller.signal.aborted) this.#log.debug({ peer: peerIdText, err }, 'pull failed')
    }
  }

  async #serveSync (stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString()
    const signal = AbortSignal.any([this.#controller.signal, AbortSignal.timeout(SYNC_TIMEOUT_MS)])
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
      const req = decodeSyncRequest((await lp.read({ signal })).subarray())
      const now = Date.now()
      const theirs = new Map<string, VersionEntry>()
      for (const v of req.versions) theirs.set(v.origin, v)
      const frames: Uint8Array[] = []
      let theyAreAhead = false

      const mine = theirs.get(this.peerId)
      if (mine === undefined || isNewer(this.#epoch, this.#seq, mine)) {
        frames.push(encodeRecordFull({
          origin: this.peerId,
          epoch: this.#epoch,
          seq: this.#seq,
          ageMs: 0,
          registryAddress: this.#init.registryAddress,
          addrs: this.#announcedAddrs(),
          keys: this.#own,
          keyCount: this.#own.size
        }))
      } else {
        frames.push(encodeSyncResponseFrame({ type: FrameType.RecordSame, origin: this.peerId, epoch: this.#epoch, seq: this.#seq, ageMs: 0 }))
      }

      const needKeys: string[] = []
      for (const rec of this.#index.records()) {
        if (!this.#index.isAlive(rec, now)) continue
        const t = theirs.get(rec.origin)
        if (t === undefined || isNewer(rec.epoch, rec.seq, t)) needKeys.push(rec.origin)
        else if (t.epoch === rec.epoch && t.seq === rec.seq) {
          frames.push(encodeSyncResponseFrame({ type: FrameType.RecordSame, origin: rec.origin, epoch: rec.epoch, seq: rec.seq, ageMs: now - rec.lastHeardMs }))
        } else {
          theyAreAhead = true
        }
      }
      for (const t of theirs.values()) {
        if (t.origin === this.peerId || this.#index.get(t.origin) !== undefined) continue
        if (this.#index.isTombstoned(t.origin, t.epoch)) {
          frames.push(encodeSyncResponseFrame({ type: FrameType.RecordGone, origin: t.origin, epoch: t.epoch }))
        } else if (t.origin !== from) {
          // They hold a record we lack (or let expire); it is worth pulling back.
          theyAreAhead = true
        }
      }
      if (theirs.size > 0 && this.#index.isBehind(from, theirs.get(from)?.epoch ?? 0, theirs.get(from)?.seq ?? 0)) theyAreAhead = true
      if (needKeys.length > 0) {
        const keys = this.#index.keysOf(needKeys)
        for (const origin of needKeys) {
          const rec = this.#index.get(origin)
          const list = keys.get(origin)
          if (rec === undefined || list === undefined) continue
          frames.push(encodeRecordFull({
            origin,
            epoch: rec.epoch,
            seq: rec.seq,
            ageMs: now - rec.lastHeardMs,
            registryAddress: rec.registryAddress,
            addrs: rec.addrs,
            keys: list,
            keyCount: list.length
          }))
        }
      }
      frames.push(encodeSyncResponseFrame({ type: FrameType.SyncEnd }))
      for (const f of frames) await lp.write(f, { signal })
      await stream.close({ signal })
      this.#counters.syncsServed++
      if (theyAreAhead) this.#pull(from)
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
      if (!this.#controller.signal.aborted) this.#log.debug({ peer: from, err }, 'serving sync failed')
    }
  }

  #scheduleSync (): void {
    const t = setTimeout(() => {
      const peers = this.#libp2p.getPeers()
      const peer = peers[Math.floor(Math.random() * peers.length)]
      if (peer !== undefined) this.#pull(peer.toString())
      if (!this.#controller.signal.aborted) this.#scheduleSync()
    }, jitter(this.#syncIntervalMs))
    t.unref()
    this.#timers.push(t)
    // Keep the list from growing: only the pending timer matters.
    if (this.#timers.length > 16) this.#timers.splice(0, this.#timers.length - 8)
  }

  // ---- liveness ----

  #sweep (): void {
    const now = Date.now()
    const gone = this.#index.expire(now)
    if (gone.length > 0) {
      this.#counters.expired += gone.length
      this.#log.info({ origins: gone }, 'peers expired')
      for (const origin of gone) this.#redial.delete(origin)
    }
    // Versions heard of but still missing after the pulls they caused: ask someone else.
    if (this.#index.wanted(now).length > 0 && this.#pulls.size === 0) {
      const peers = this.#libp2p.getPeers()
      const peer = peers[Math.floor(Math.random() * peers.length)]
      if (peer !== undefined) this.#pull(peer.toString())
    }
  }

  // ---- connections ----

  readonly #onConnect = (evt: CustomEvent<PeerId>): void => {
    const id = evt.detail.toString()
    this.#redial.delete(id)
    this.#log.debug({ peer: id }, 'peer connected')
    this.#pull(id)
  }

  readonly #onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const id = evt.detail.toString()
    this.#links.get(id)?.close()
    this.#links.delete(id)
    this.#log.debug({ peer: id }, 'peer disconnected')
    if (this.#controller.signal.aborted) return
    const rec = this.#index.get(id)
    if (rec === undefined || !this.#index.isAlive(rec, Date.now())) return
    // A lost peer that is still alive in the index: redial it (if it is dead, the dials fail
    // with backoff until its record expires).
    const state = this.#redial.get(id) ?? { attempt: 0, nextMs: 0 }
    const waitMs = backoffMs(state.attempt, REDIAL_BACKOFF_INITIAL_MS, REDIAL_BACKOFF_MAX_MS)
    state.nextMs = Date.now() + waitMs
    this.#redial.set(id, state)
    const t = setTimeout(() => {
      if (this.#libp2p.getPeers().length < 2 * this.#targetPeers) void this.#dialKnown(id)
    }, waitMs)
    t.unref()
  }

  /** Keeps `targetPeers` connections, dialling live records' owners (random, with backoff). */
  #maintain (): void {
    const connected = new Set(this.#libp2p.getPeers().map(String))
    if (connected.size >= this.#targetPeers) return
    const now = Date.now()
    const candidates: string[] = []
    for (const rec of this.#index.records()) {
      if (connected.has(rec.origin) || rec.addrs.length === 0 || !this.#index.isAlive(rec, now)) continue
      if ((this.#redial.get(rec.origin)?.nextMs ?? 0) > now) continue
      candidates.push(rec.origin)
    }
    for (const id of shuffle(candidates).slice(0, this.#targetPeers - connected.size)) void this.#dialKnown(id)
  }

  async #dialKnown (id: string): Promise<void> {
    if (this.#controller.signal.aborted) return
    const rec = this.#index.get(id)
    if (rec === undefined || rec.addrs.length === 0) return
    if (this.#libp2p.getPeers().some((p) => p.toString() === id)) return
    try {
      await this.#libp2p.dial(rec.addrs.map((a) => multiaddr(`${a}/p2p/${id}`)), { signal: this.#dialSignal() })
      this.#redial.delete(id)
    } catch (err) {
      this.#counters.dialFailures++
      const state = this.#redial.get(id) ?? { attempt: 0, nextMs: 0 }
      state.attempt++
      state.nextMs = Date.now() + backoffMs(state.attempt, REDIAL_BACKOFF_INITIAL_MS, REDIAL_BACKOFF_MAX_MS)
      this.#redial.set(id, state)
      if (!this.#controller.signal.aborted) this.#log.debug({ peer: id, err }, 'redial failed')
    }
  }

  #dialSignal (): AbortSignal {
    return AbortSignal.any([this.#controller.signal, AbortSignal.timeout(DIAL_TIMEOUT_MS)])
  }

  // ---- bootstrap ----

  async #bootstrapLoop (signal: AbortSignal): Promise<void> {
    const started = Date.now()
    for (let attempt = 0; !signal.aborted; attempt++) {
      let outcome: 'alone' | 'connected' | 'failed'
      try {
        outcome = await this.#bootstrapRound(signal)
      } catch (err) {
        if (signal.aborted) return
        this.#log.warn({ err, attempt }, 'failed to run bootstrap')
        outcome = 'failed'
      }
      if (outcome !== 'failed') {
        this.#alone = outcome === 'alone'
        this.#bootstrapped = true
        this.#log.info({ durationMs: Date.now() - started, alone: this.#alone, peers: this.#libp2p.getPeers().length }, 'bootstrap completed')
        // Announce this node now rather than at the next heartbeat: nodes not connected to it
        // learn it exists, pull its record and may dial it.
        if (!this.#alone) this.#heartbeat()
        break
      }
      if (attempt > 0 && attempt % 10 === 0) this.#log.warn({ attempt }, 'bootstrap has not reached any peer yet')
      await delay(backoffMs(attempt, BOOTSTRAP_BACKOFF_INITIAL_MS, BOOTSTRAP_BACKOFF_MAX_MS), undefined, { signal, ref: false }).catch(() => {})
    }
    while (!signal.aborted) {
      await delay(jitter(REDISCOVER_INTERVAL_MS), undefined, { signal, ref: false }).catch(() => {})
      if (signal.aborted || this.#libp2p.getPeers().length >= this.#targetPeers) continue
      try {
        await this.#bootstrapRound(signal)
      } catch (err) {
        if (!signal.aborted) this.#log.warn({ err }, 'periodic bootstrap failed')
      }
    }
  }

  /**
   * One discovery and a dial of up to `targetPeers` random candidates. 'alone' when discovery
   * names nobody but this node (a one-node cluster is ready).
   */
  async #bootstrapRound (signal: AbortSignal): Promise<'alone' | 'connected' | 'failed'> {
    this.#counters.bootstrapRounds++
    const found = await this.#init.bootstrapper.discover({ signal: AbortSignal.any([signal, AbortSignal.timeout(DISCOVER_TIMEOUT_MS)]) })
    const targets = this.#dialTargets(found)
    if (targets.length === 0) return this.#libp2p.getPeers().length > 0 ? 'connected' : 'alone'
    const picked = shuffle(targets).slice(0, this.#targetPeers)
    const results = await Promise.allSettled(picked.map(async (addrs) => await this.#libp2p.dial(addrs, { signal: this.#dialSignal() })))
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    this.#counters.dialFailures += failures.length
    if (failures.length > 0 && !signal.aborted) {
      this.#log.debug({ failed: failures.length, of: picked.length, err: failures[0]?.reason }, 'bootstrap dials failed')
    }
    return this.#libp2p.getPeers().length > 0 ? 'connected' : 'failed'
  }

  /** Bootstrap answers → dialable multiaddr lists, without this node, ports completed. */
  #dialTargets (found: readonly BootstrapPeer[]): Multiaddr[][] {
    const port = this.#listenPort()
    const own = new Set(this.#libp2p.getMultiaddrs().map((ma) => hostPortOf(ma)).filter((s) => s !== undefined))
    const targets: Multiaddr[][] = []
    for (const p of found) {
      if (p.id === this.peerId) continue
      const addrs: Multiaddr[] = []
      for (const text of p.addrs) {
        let ma: Multiaddr
        try {
          ma = multiaddr(text)
          if (!ma.getComponents().some((c) => c.code === TCP_CODE) && port !== undefined) ma = ma.encapsulate(`/tcp/${port}`)
        } catch (err) {
          this.#log.warn({ addr: text, err }, 'ignoring invalid bootstrap address')
          continue
        }
        const hp = hostPortOf(ma)
        if (hp !== undefined && own.has(hp)) continue
        // With a known id libp2p checks it in the handshake; without one (DNS) it learns it there.
        addrs.push(p.id === undefined ? ma : ma.encapsulate(`/p2p/${p.id}`))
      }
      if (addrs.length > 0) targets.push(addrs)
    }
    return targets
  }

  #listenPort (): number | undefined {
    for (const ma of this.#libp2p.getMultiaddrs()) {
      const tcpPart = ma.getComponents().find((c) => c.code === TCP_CODE)
      if (tcpPart?.value !== undefined) return Number(tcpPart.value)
    }
    return this.#init.listen.port === 0 ? undefined : this.#init.listen.port
  }

  /** Own multiaddrs without /p2p; loopback ones only when there is nothing else (one-machine clusters). */
  #announcedAddrs (): string[] {
    const all = this.#libp2p.getMultiaddrs().map((ma) => stripP2p(ma).toString())
    const routable = all.filter((a) => !/^\/ip4\/127\.|^\/ip6\/::1\//.test(a))
    return routable.length > 0 ? routable : all
  }

  // ---- lifecycle helpers ----

  #every (ms: number, fn: () => void): void {
    const t = setInterval(() => {
      try {
        fn()
      } catch (err) {
        this.#log.error({ err }, 'periodic router task failed')
      }
    }, ms)
    t.unref()
    this.#timers.push(t)
  }

  #track (p: Promise<unknown>): void {
    const tracked = p.catch((err: unknown) => { this.#log.error({ err }, 'router task failed') })
      .finally(() => { this.#tasks.delete(tracked) })
    this.#tasks.add(tracked)
  }
}

function isNewer (epoch: number, seq: number, than: VersionEntry): boolean {
  return epoch > than.epoch || (epoch === than.epoch && seq > than.seq)
}

function stripP2p (ma: Multiaddr): Multiaddr {
  const components = ma.getComponents().filter((c) => c.code !== P2P_CODE)
  return multiaddr(components)
}

/** `ip/port` of a TCP multiaddr, for recognising this node in bootstrap answers. */
function hostPortOf (ma: Multiaddr): string | undefined {
  const c = ma.getComponents()
  const host = c[0]
  const port = c.find((x) => x.code === TCP_CODE)
  if (host?.value === undefined || port?.value === undefined) return undefined
  return `${host.value}/${port.value}`
}
