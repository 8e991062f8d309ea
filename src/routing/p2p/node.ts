import { isIPv4, isIPv6 } from 'node:net'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { Connection, PeerId, PrivateKey } from '@libp2p/interface'
import { ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { tcp, type TCPOptions } from '@libp2p/tcp'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p, type Libp2p } from 'libp2p'
import type { HostPort } from '../../config/index.js'
import type { Logger } from '../../observability/logger.js'
import { INBOUND_CONNECTION_THRESHOLD, MAX_INCOMING_PENDING_CONNECTIONS, PSK_HANDSHAKE_TIMEOUT_MS } from './constants.js'
import { loadOrCreatePrivateKey } from './identity.js'
import { readPskFile } from './psk.js'
import { coalesceSocketWrites } from './socket-writes.js'

export interface P2PNodeComponents {
  log: Logger
}

export interface P2PNodeInit {
  /** TCP listen address; host '' (or a hostname) means every IPv4 interface. Port 0 picks one. */
  listen: HostPort
  /** Holds `private.key` (the peer identity); '' for a new identity at every start. */
  dataDir: string
  /** libp2p PSK v1 file; '' for an open network. Only nodes with the same key can connect. */
  secretPath: string
}

const TCP_CODE = 6
const P2P_CODE = 421

/**
 * The libp2p host (TCP, Noise, Yamux, Identify, Ping, optional private network) and this node's
 * identity, plus the few questions the other parts ask about connections and addresses.
 */
export class P2PNode {
  readonly libp2p: Libp2p
  readonly privateKey: PrivateKey
  readonly peerId: string
  readonly #listen: HostPort

  private constructor (libp2p: Libp2p, privateKey: PrivateKey, listen: HostPort) {
    this.libp2p = libp2p
    this.privateKey = privateKey
    this.peerId = libp2p.peerId.toString()
    this.#listen = listen
  }

  /** Loads the identity and the key file and builds the host; does not start it. */
  static async create (components: P2PNodeComponents, init: P2PNodeInit): Promise<P2PNode> {
    const privateKey = await loadOrCreatePrivateKey(init.dataDir, components.log)
    const psk = init.secretPath === '' ? undefined : await readPskFile(init.secretPath)
    const libp2p = await createLibp2p({
      start: false,
      privateKey,
      addresses: { listen: [listenMultiaddr(init.listen)] },
      transports: [tcp(sourceAddress(init.listen))],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      ...(psk === undefined ? {} : { connectionProtector: preSharedKey({ psk, timeout: PSK_HANDSHAKE_TIMEOUT_MS }) }),
      connectionManager: {
        // libp2p's defaults (5 inbound/s per IP, 10 pending) refuse a cluster restarting at once.
        inboundConnectionThreshold: INBOUND_CONNECTION_THRESHOLD,
        maxIncomingPendingConnections: MAX_INCOMING_PENDING_CONNECTIONS
      },
      // Off: it opened a ping stream on every connection every 10 s (a stream, a protocol
      // negotiation and a peer-store write on both ends) only to measure round trips nothing reads,
      // and it may not abort on a missed ping (a busy event loop misses pings; aborting would cut
      // live connections under load). Liveness is the router's heartbeats over the same
      // connections, and yamux's own keep-alive pings keep an idle connection open.
      connectionMonitor: { enabled: false },
      // Not a gate: the one place libp2p hands over the raw TCP connection before streams exist,
      // so its small sends become one socket write each (socket-writes.ts). Nothing is denied.
      connectionGater: {
        denyInboundEncryptedConnection: (_peer, maConn) => { coalesceSocketWrites(maConn); return false },
        denyOutboundEncryptedConnection: (_peer, maConn) => { coalesceSocketWrites(maConn); return false }
      },
      services: { identify: identify(), ping: ping() }
    })
    return new P2PNode(libp2p, privateKey, init.listen)
  }

  /** Peers with an open connection right now. */
  peers (): PeerId[] {
    return this.libp2p.getPeers()
  }

  isConnected (peer: string): boolean {
    return this.libp2p.getPeers().some((p) => p.toString() === peer)
  }

  /** An open connection to `peer`, if any; nothing here dials. */
  connection (peer: string): Connection | undefined {
    return this.libp2p.getConnections().find((c) => c.status === 'open' && c.remotePeer.toString() === peer)
  }

  /** Whether an open connection to `peer` other than `except` remains. */
  hasOpenConnection (peer: string, except?: Connection): boolean {
    return this.libp2p.getConnections().some((c) => c !== except && c.status === 'open' && c.remotePeer.toString() === peer)
  }

  /**
   * Stops libp2p and the timers it leaves behind. Its address manager debounces peer-store
   * updates by 1 s, and stopping the transports schedules one more update that nothing cancels:
   * a timer that would hold the event loop (and a process exiting on its own) for a second.
   */
  async stop (): Promise<void> {
    await this.libp2p.stop()
    const components: unknown = Reflect.get(this.libp2p, 'components')
    const manager: unknown = typeof components === 'object' && components !== null ? Reflect.get(components, 'addressManager') : undefined
    const update: unknown = typeof manager === 'object' && manager !== null ? Reflect.get(manager, '_updatePeerStoreAddresses') : undefined
    const cancel: unknown = typeof update === 'function' ? Reflect.get(update, 'stop') : undefined
    if (typeof cancel === 'function') cancel.call(update)
  }

  /** A random connected peer, or undefined when alone. */
  randomPeer (): string | undefined {
    const peers = this.libp2p.getPeers()
    return peers[Math.floor(Math.random() * peers.length)]?.toString()
  }

  /** Listen multiaddrs with `/p2p/<id>`. */
  multiaddrs (): string[] {
    return this.libp2p.getMultiaddrs().map(String)
  }

  /** Own multiaddrs without /p2p; loopback ones only when there is nothing else (one-machine clusters). */
  announcedAddrs (): string[] {
    const all = this.libp2p.getMultiaddrs().map((ma) => stripP2p(ma).toString())
    const routable = all.filter((a) => !/^\/ip4\/127\.|^\/ip6\/::1\//.test(a))
    return routable.length > 0 ? routable : all
  }

  /** The TCP port this node listens on (known once started, or when configured). */
  listenPort (): number | undefined {
    for (const ma of this.libp2p.getMultiaddrs()) {
      const tcpPart = ma.getComponents().find((c) => c.code === TCP_CODE)
      if (tcpPart?.value !== undefined) return Number(tcpPart.value)
    }
    return this.#listen.port === 0 ? undefined : this.#listen.port
  }

  /** `ip/port` of each listen address, for recognising this node in bootstrap answers. */
  ownHostPorts (): Set<string> {
    return new Set(this.libp2p.getMultiaddrs().map((ma) => hostPortOf(ma)).filter((s) => s !== undefined))
  }
}

/**
 * With a specific listen IP, outgoing connections leave from it too: peers then see this node at
 * the address it announces, and that connection alone proves its registry address to them (a
 * multi-homed node or several nodes on one machine would otherwise show another source address).
 */
function sourceAddress (listen: HostPort): TCPOptions {
  const host = listen.host.replace(/^\[(.*)\]$/, '$1')
  const isSpecific = (isIPv4(host) && host !== '0.0.0.0') || (isIPv6(host) && host !== '::')
  // net.connect takes localAddress; libp2p's dial options type does not list it but passes it on.
  return isSpecific ? { dialOpts: { localAddress: host } as TCPOptions['dialOpts'] } : {}
}

/**
 * Whether a closed connection ended in order: one side closed it on purpose and said so (a yamux
 * GoAway with normal termination: a probe that was no longer needed, a pruned connection, a node
 * shutting down). A process that died sends no GoAway: its kernel resets or ends the TCP stream,
 * and so do a network error and an abort after a protocol error. Read from the connection's
 * multiplexer, which libp2p's Connection type does not expose; without it, every close counts as
 * a cut (the safe side: a cut costs one prompt dial).
 */
export function isOrderlyClose (conn: Connection): boolean {
  const muxer: unknown = Reflect.get(conn, 'muxer')
  if (typeof muxer !== 'object' || muxer === null) return false
  return Reflect.get(muxer, 'remoteGoAway') === YAMUX_GO_AWAY_NORMAL || Reflect.get(muxer, 'localGoAway') === YAMUX_GO_AWAY_NORMAL
}

/** yamux's GoAway code for a normal termination (the others mean an error). */
const YAMUX_GO_AWAY_NORMAL = 0

/** `{host, port}` → the TCP listen multiaddr; hostnames listen on every IPv4 interface. */
export function listenMultiaddr (listen: HostPort): string {
  if (isIPv4(listen.host)) return `/ip4/${listen.host}/tcp/${listen.port}`
  if (isIPv6(listen.host)) return `/ip6/${listen.host}/tcp/${listen.port}`
  return `/ip4/0.0.0.0/tcp/${listen.port}`
}

export function stripP2p (ma: Multiaddr): Multiaddr {
  return multiaddr(ma.getComponents().filter((c) => c.code !== P2P_CODE))
}

/** Whether a multiaddr names a TCP port. */
export function hasTcp (ma: Multiaddr): boolean {
  return ma.getComponents().some((c) => c.code === TCP_CODE)
}

/** `ip/port` of a TCP multiaddr. */
export function hostPortOf (ma: Multiaddr): string | undefined {
  const c = ma.getComponents()
  const host = c[0]
  const port = c.find((x) => x.code === TCP_CODE)
  if (host?.value === undefined || port?.value === undefined) return undefined
  return `${host.value}/${port.value}`
}
