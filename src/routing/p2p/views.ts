import type { ContentIndex } from './content-index.js'
import type { P2PNode } from './node.js'
import type { PeerSummary } from './types.js'

/**
 * Every node this one has a record of or a connection to, for operators (web page, metrics). A
 * peer lookups leave out as lost (`isOut`, see Suspicion) shows as not alive, as lookups see it.
 */
export function peerSummaries (index: ContentIndex, node: P2PNode, nowMs: number, isOut: (peer: string) => boolean = () => false): PeerSummary[] {
  const connected = new Map<string, string[]>()
  for (const c of node.libp2p.getConnections()) {
    const id = c.remotePeer.toString()
    connected.set(id, [...(connected.get(id) ?? []), c.remoteAddr.toString()])
  }
  const out: PeerSummary[] = []
  for (const rec of index.records()) {
    const { origin, addrs, keyCount, lastHeardMs, isAddressProven } = rec
    out.push({ id: origin, registryAddress: rec.claims.address.hostPort, addrs, keyCount, lastHeardMs, isAlive: index.isAlive(rec, nowMs) && !isOut(origin), isAddressProven, isConnected: connected.delete(origin) })
  }
  for (const [id, addrs] of connected) out.push({ id, registryAddress: '', addrs, keyCount: 0, isAlive: false, isAddressProven: false, isConnected: true })
  return out
}
