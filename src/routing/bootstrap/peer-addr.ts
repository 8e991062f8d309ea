import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { BootstrapPeer } from './types.js'

const P2P_CODE = 421

/** Canonical string form of a libp2p peer id; throws on anything libp2p cannot decode. */
export function decodePeerId (s: string): string {
  return peerIdFromString(s).toString()
}

/** Canonical string form of a multiaddr; throws on an unknown protocol or bad value. */
export function parseMultiaddr (s: string): string {
  return multiaddr(s).toString()
}

/**
 * libp2p's AddrInfoFromString: the last component may be `/p2p/<id>` (required when `requireId`),
 * everything before it is the one transport address (none for a bare `/p2p/<id>`).
 */
export function parseAddrInfo (s: string, requireId: boolean): BootstrapPeer {
  const components = multiaddr(s).getComponents()
  const last = components[components.length - 1]
  if (last?.code !== P2P_CODE || last.value === undefined) {
    if (requireId) throw new Error(`${JSON.stringify(s)} does not end in /p2p/<peer-id>`)
    return { addrs: [multiaddr(components).toString()] }
  }
  const id = decodePeerId(last.value)
  const transport = components.slice(0, -1)
  return { id, addrs: transport.length === 0 ? [] : [multiaddr(transport).toString()] }
}
