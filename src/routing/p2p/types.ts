import type { HostPort } from '../../config/index.js'
import type { Logger } from '../../observability/logger.js'
import type { Bootstrapper } from '../bootstrap/types.js'
import type { Router } from '../types.js'
import type { PushFrame } from './codec.js'
import type { LimitName, RefusalReason } from './record-auth.js'

export interface P2PRouterComponents {
  log: Logger
}

/** Test seams; nothing in production sets them. */
export interface P2PRouterHooks {
  /**
   * Return true to drop an inbound pushed frame before it is looked at (e.g. to make a seq gap).
   * Called synchronously right before the frame is verified and applied.
   */
  dropInbound?: (frame: PushFrame, from: string) => boolean
}

export interface P2PRouterInit {
  /** TCP listen address; host '' (or a hostname) means every IPv4 interface. Port 0 picks one. */
  listen: HostPort
  /** Holds `private.key` (the peer identity); '' for a new identity at every start. */
  dataDir: string
  /** libp2p PSK v1 file; '' for an open network. Only nodes with the same key can connect. */
  secretPath: string
  /** `IP:port` other nodes use to reach this node's registry; its IP must be one the router listens on. */
  registryAddress: string
  bootstrapper: Bootstrapper
  /** Pull from a random peer this often (anti-entropy). */
  pullIntervalMs?: number
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
  /** Frames and records refused, by reason (every reason present, zeros included). */
  refused: Record<RefusalReason, number>
  /** Times each limit on what peers can make this node hold or do was reached (every limit present, zeros included). */
  limited: Record<LimitName, number>
  /** Pulls waiting for the end of their peer's minimum interval. */
  pullsDeferred: number
  /** Pulls this node is answering right now. */
  pullsServing: number
  /** Peers left out of lookups because their connections were cut and they did not answer since. */
  peersSuspected: number
}

/** Cumulative figures; the modules of the router increment them, status() copies them. */
export interface P2PRouterCounters {
  bootstrapRounds: number
  dialFailures: number
  pushesIn: number
  pushesOut: number
  pushesDropped: number
  gaps: number
  pullsOk: number
  pullsFailed: number
  /** Pulls this node answered (the metric keeps its older name, syncs served). */
  syncsServed: number
  expired: number
  goodbyes: number
  /** Connections made only to prove a record's registry address. */
  proofDials: number
}

export function newCounters (): P2PRouterCounters {
  return {
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
    goodbyes: 0,
    proofDials: 0
  }
}

/** What this node knows of another node, for operators (web page, metrics). */
export interface PeerSummary {
  readonly id: string
  /** `IP:port` of its registry; empty for a connected peer whose record has not arrived. */
  readonly registryAddress: string
  /** libp2p addresses it announced (or the connection's remote address). */
  readonly addrs: readonly string[]
  readonly keyCount: number
  /** Unix ms when it was last heard of, directly or through others; undefined without a record. */
  readonly lastHeardMs?: number
  /**
   * Heard of within the expiry bound and not suspected: a peer whose connections were all cut
   * and that did not answer a dial since is left out of lookups (and shown as gone) until it does.
   */
  readonly isAlive: boolean
  /** This node has seen it at its registry address's IP, so lookups offer it (when alive). */
  readonly isAddressProven: boolean
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
  /** How many live nodes (not this one) a lookup of `key` would offer. */
  holders(key: string): number
  /** This node's record version. */
  version(): { epoch: number, seq: number }
  /** The version of `origin`'s record held here, if any. */
  knownVersion(origin: string): { epoch: number, seq: number } | undefined
}
