import { setTimeout as delay } from 'node:timers/promises'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { ConfigError } from '../../config/index.js'
import type { Logger } from '../../observability/logger.js'
import { parseRegistryAddress } from '../registry-address.js'
import type { LookupOptions, Peer, RouterReadiness } from '../types.js'
import { AntiEntropy } from './anti-entropy.js'
import { StatementKind, compactKey, type Statement } from './codec.js'
import * as k from './constants.js'
import { ContentIndex } from './content-index.js'
import { Dialer } from './dialer.js'
import { Gossip } from './gossip.js'
import { Membership } from './membership.js'
import { P2PNode, isOrderlyClose } from './node.js'
import { OwnRecord } from './own-record.js'
import { AddressProofs, Limits, RecordAuth, Refusals, checkAddressClaims } from './record-auth.js'
import { newCounters, type P2PRouter, type P2PRouterComponents, type P2PRouterInit, type P2PRouterStatus, type PeerSummary } from './types.js'
import { shuffle } from './util.js'
import { peerSummaries } from './views.js'

/** Builds a P2P router (a libp2p host and a full replica of the cluster index); does not start it. */
export async function createP2PRouter (components: P2PRouterComponents, init: P2PRouterInit): Promise<P2PRouter> {
  if (parseRegistryAddress(init.registryAddress) === undefined) {
    const fix = 'set --registry-addr (or --router-addr) to an IP address of this node, or leave its host empty to use the node\'s primary IP'
    throw new ConfigError(`registry address ${JSON.stringify(init.registryAddress)} is not a usable IP:port: peers refuse records naming a hostname or a special-purpose address; ${fix}`, { flag: '--registry-addr', fix })
  }
  const log = components.log.child({ component: 'router' })
  return new P2PRouterImpl({ log, node: await P2PNode.create({ log }, init) }, init)
}

/** The facade: builds and wires the parts (one concern per file), answers Router and operator questions. */
class P2PRouterImpl implements P2PRouter {
  readonly name = 'p2p'
  readonly peerId: string
  readonly #log: Logger
  readonly #node: P2PNode
  readonly #index: ContentIndex
  readonly #own: OwnRecord
  readonly #refusals: Refusals
  readonly #limits: Limits
  readonly #gossip: Gossip
  readonly #antiEntropy: AntiEntropy
  readonly #membership: Membership
  readonly #dialer: Dialer
  readonly #counters = newCounters()
  #started = false
  #stopped = false

  constructor (components: { log: Logger, node: P2PNode }, init: P2PRouterInit) {
    const node = this.#node = components.node
    this.peerId = node.peerId
    const log = this.#log = components.log.child({ peerId: this.peerId })
    const expiryMs = init.expiryMs ?? k.DEFAULT_EXPIRY_MS
    const limits = this.#limits = new Limits({ log }, { logIntervalMs: k.LIMIT_LOG_INTERVAL_MS })
    const index = this.#index = new ContentIndex({
      selfId: this.peerId, expiryMs, tombstoneTtlMs: Math.max(k.TOMBSTONE_MIN_TTL_MS, 3 * expiryMs), onLimit: (limit, detail) => { limits.reached(limit, detail) }
    })
    const auth = new RecordAuth({ privateKey: node.privateKey }, { selfId: this.peerId })
    const refusals = this.#refusals = new Refusals({ log })
    const own = this.#own = new OwnRecord({ auth, log }, { registryAddress: init.registryAddress })
    const shared = { node, index, auth, refusals, limits, own, log, counters: this.#counters }
    const onOwnStatement = (s: Statement): void => { this.#onOwnStatement(s) }
    const broadcast = (frame: Uint8Array, except?: string): void => { this.#gossip.broadcast(frame, except) }
    const wantFrom = (v: { origin: string, epoch: number, seq: number }, from: string): void => { this.#antiEntropy.wantFrom(v, from, Date.now()) }
    this.#gossip = new Gossip({
      ...shared,
      handlers: {
        onHeartbeat: (m, from) => { this.#membership.onHeartbeat(m, from) },
        onGoodbye: (m, frame, from) => { this.#membership.onGoodbyeFrame(m, frame, from) },
        onHave: (m, from) => { for (const v of m.versions) wantFrom(v, from) },
        onGap: (origin, epoch, seq, from) => { wantFrom({ origin, epoch, seq }, from) },
        onOwnStatement,
        ownEpoch: () => own.epoch
      }
    }, init.hooks === undefined ? {} : { hooks: init.hooks })
    this.#antiEntropy = new AntiEntropy({
      ...shared,
      broadcast,
      onRecords: (changed) => { this.#dialer.proveRecords(changed) },
      onGoodbye: (s, from) => { this.#membership.acceptGoodbye(s, from) },
      onOwnStatement
    }, { pullIntervalMs: init.pullIntervalMs ?? k.DEFAULT_PULL_INTERVAL_MS })
    this.#membership = new Membership({
      ...shared,
      broadcast,
      wantFrom,
      pull: (peer) => { this.#antiEntropy.pull(peer) },
      retryWanted: (now) => { this.#antiEntropy.retryWanted(now) },
      onOwnStatement,
      onGone: (origins) => { for (const o of origins) this.#dialer.forget(o) },
      check: (peer, done) => { this.#dialer.check(peer, done) }
    }, { heartbeatIntervalMs: init.heartbeatIntervalMs ?? k.DEFAULT_HEARTBEAT_INTERVAL_MS, expiryMs })
    this.#dialer = new Dialer({
      ...shared,
      proofs: new AddressProofs(),
      bootstrapper: init.bootstrapper,
      onBootstrapped: (isAlone) => { if (!isAlone) this.#membership.heartbeat() }
    }, { targetPeers: init.targetPeers ?? k.DEFAULT_TARGET_PEERS })
  }

  readiness (): RouterReadiness {
    if (!this.#dialer.isBootstrapped) return { isReady: false, reason: 'bootstrapping' }
    if (!this.#dialer.isAlone && !this.#antiEntropy.hasPulled) return { isReady: false, reason: 'no peer synced yet' }
    return { isReady: true }
  }

  /** Holders of `key` from the local replica, in random order so load spreads over them. */
  async * lookup (key: string, options: LookupOptions = {}): AsyncIterable<Peer> {
    options.signal?.throwIfAborted()
    for (const peer of shuffle(this.#offered(key, Date.now())).slice(0, options.limit ?? Infinity)) {
      options.signal?.throwIfAborted()
      yield peer
    }
  }

  advertise (keys: readonly string[]): void { this.#publish(this.#own.advertise(keys)) }
  withdraw (keys: readonly string[]): void { this.#publish(this.#own.withdraw(keys)) }
  replaceAll (keys: readonly string[]): void { this.#publish(this.#own.replaceAll(keys)) }

  async start (): Promise<void> {
    if (this.#started) throw new Error('router already started')
    this.#started = true
    const libp2p = this.#node.libp2p
    await this.#gossip.start()
    await this.#antiEntropy.start()
    await libp2p.handle([...k.UNSIGNED_PROTOCOLS], (stream, connection) => { this.#refuseUnsigned(stream, connection) })
    libp2p.addEventListener('connection:open', this.#onConnectionOpen)
    libp2p.addEventListener('peer:connect', this.#onConnect)
    libp2p.addEventListener('peer:disconnect', this.#onDisconnect)
    libp2p.addEventListener('connection:close', this.#onConnectionClose)
    await libp2p.start()
    this.#own.setAddrs(this.#node.announcedAddrs(), false)
    const claims = checkAddressClaims(this.#own.registryAddress, this.#own.addrs)
    if (typeof claims === 'string') this.#log.warn({ event: 'registry_address_unprovable', reason: claims, fix: 'let the router listen on the registry address\'s IP (or on every address)' }, 'peers will refuse this node\'s record')
    this.#log.info({ multiaddrs: this.multiaddrs(), epoch: this.#own.epoch }, 'router started')
    this.#membership.start()
    this.#dialer.start(() => ({ id: this.peerId, addrs: this.#node.announcedAddrs() }))
  }

  async stop (options: { goodbye?: boolean } = {}): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    if (this.#started && (options.goodbye ?? true)) {
      this.#gossip.broadcast(this.#own.goodbyeFrame())
      // Best effort: a peer that does not take the goodbye in time expires us instead.
      const flushed = new AbortController()
      await Promise.race([
        this.#gossip.whenIdle().finally(() => { flushed.abort() }),
        // Aborted when the flush finished first: the normal way out, not an error.
        delay(k.GOODBYE_FLUSH_TIMEOUT_MS, undefined, { signal: flushed.signal, ref: false }).catch(() => undefined)
      ])
    }
    this.#membership.stop()
    this.#gossip.stop()
    const libp2p = this.#node.libp2p
    libp2p.removeEventListener('connection:open', this.#onConnectionOpen)
    libp2p.removeEventListener('peer:connect', this.#onConnect)
    libp2p.removeEventListener('peer:disconnect', this.#onDisconnect)
    libp2p.removeEventListener('connection:close', this.#onConnectionClose)
    await Promise.all([this.#dialer.stop(), this.#antiEntropy.stop()])
    await this.#node.stop()
    this.#log.info('router stopped')
  }

  multiaddrs (): string[] { return this.#node.multiaddrs() }
  holders (key: string): number { return this.#offered(key, Date.now()).length }

  /** Holders of `key` in the index, without peers lost and not answering (membership.ts, Suspicion). */
  #offered (key: string, nowMs: number): Peer[] {
    const suspicion = this.#membership.suspicion
    return this.#index.lookup(compactKey(key), nowMs).filter((p) => !suspicion.isOut(p.id, nowMs))
  }
  version (): { epoch: number, seq: number } { return { epoch: this.#own.epoch, seq: this.#own.seq } }

  knownVersion (origin: string): { epoch: number, seq: number } | undefined {
    const rec = this.#index.get(origin)
    return rec === undefined ? undefined : { epoch: rec.epoch, seq: rec.seq }
  }

  origins (): string[] {
    const now = Date.now()
    return [...this.#index.records()].filter((rec) => this.#index.isAlive(rec, now)).map((rec) => rec.origin)
  }

  status (): P2PRouterStatus {
    const r = this.readiness()
    return {
      peerId: this.peerId,
      isReady: r.isReady,
      ...(r.reason === undefined ? {} : { reason: r.reason }),
      peers: this.#node.peers().length,
      records: this.#index.recordCount,
      keys: this.#index.distinctKeys,
      ownKeys: this.#own.keyCount,
      pullsInFlight: this.#antiEntropy.inFlight,
      pullsServing: this.#antiEntropy.serving,
      pullsDeferred: this.#antiEntropy.deferred,
      peersSuspected: this.#membership.suspicion.count,
      epoch: this.#own.epoch,
      seq: this.#own.seq,
      multiaddrs: this.multiaddrs(),
      counters: { ...this.#counters },
      refused: Object.fromEntries(this.#refusals.counts()) as P2PRouterStatus['refused'],
      limited: Object.fromEntries(this.#limits.counts()) as P2PRouterStatus['limited']
    }
  }

  peers (): PeerSummary[] {
    const now = Date.now()
    return peerSummaries(this.#index, this.#node, now, (peer) => this.#membership.suspicion.isOut(peer, now))
  }

  /** A change of this node's record: pushed as a delta, or announced (peers pull) when too big to flood. */
  #publish (frame: Uint8Array | undefined): void {
    if (frame === undefined || !this.#started) return
    if (this.#own.keyCount > k.MAX_RECORD_KEYS) {
      this.#limits.reached('record-keys', { what: `this node advertises ${this.#own.keyCount} keys; peers refuse records of more than ${k.MAX_RECORD_KEYS}, so they keep its last smaller record or none` })
    }
    if (frame.byteLength <= k.MAX_DELTA_BYTES) this.#gossip.broadcast(frame)
    else this.#membership.heartbeat()
  }

  /** Something this node signed in an earlier run, newer than this run: move past it. */
  #onOwnStatement (s: Statement): void {
    if (this.#own.moveEpochPast(s.epoch, s.kind === StatementKind.Goodbye)) this.#membership.heartbeat()
  }

  #refuseUnsigned (stream: Stream, connection: Connection): void {
    this.#refusals.refuse('unsigned', connection.remotePeer.toString(), { what: `${stream.protocol ?? 'index/1'} is the unsigned index protocol; upgrade that node` })
    stream.abort(new Error('the unsigned index protocol is refused'))
  }

  /**
   * The first connection to a peer is a reason to pull from it: always when this node dialled (it
   * joined, or wants a neighbour), an inbound one only until a first pull succeeded (a joining
   * peer announces itself by heartbeat, and a peer proving this node's address costs no pull).
   */
  readonly #onConnectionOpen = (evt: CustomEvent<Connection>): void => {
    const conn = evt.detail
    const id = conn.remotePeer.toString()
    this.#dialer.onConnectionOpen(conn)
    this.#membership.suspicion.connected(id)
    const isFirst = this.#node.libp2p.getConnections(conn.remotePeer).length <= 1
    if (isFirst && !this.#dialer.isProbing(id) && (conn.direction === 'outbound' || !this.#antiEntropy.hasPulled)) this.#antiEntropy.pull(id)
  }

  /** The last connection to a peer closing without an orderly close may mean it died: check it at once. */
  readonly #onConnectionClose = (evt: CustomEvent<Connection>): void => {
    const conn = evt.detail
    const id = conn.remotePeer.toString()
    if (this.#stopped || this.#node.hasOpenConnection(id, conn)) return
    this.#membership.suspicion.lost(id, isOrderlyClose(conn), Date.now())
  }

  readonly #onConnect = (evt: CustomEvent<PeerId>): void => { this.#dialer.onConnect(evt.detail.toString()) }

  readonly #onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const id = evt.detail.toString()
    this.#gossip.dropLink(id)
    this.#dialer.onDisconnect(id)
  }
}
