import { ConfigError } from '../../config/index.js'
import { parseAddrInfo } from './peer-addr.js'
import type { BootstrapPeer, Bootstrapper } from './types.js'

const FLAG = '--static-bootstrap-peers'
const FIX = 'set --static-bootstrap-peers (env STATIC_BOOTSTRAP_PEERS) to libp2p multiaddrs ending in /p2p/<peer-id>, e.g. /ip4/10.0.0.5/tcp/5001/p2p/12D3KooW…'

/**
 * Spegel's static bootstrapper: a fixed list, parsed once so a typo stops startup instead of
 * failing every bootstrap round. An empty list is valid (a one-node cluster).
 * Throws ConfigError naming --static-bootstrap-peers.
 */
export function staticBootstrapper (peers: readonly string[]): Bootstrapper {
  const parsed: BootstrapPeer[] = peers.map((s) => {
    try {
      const peer = parseAddrInfo(s, true)
      return Object.freeze({ ...peer, addrs: Object.freeze([...peer.addrs]) })
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err)
      throw new ConfigError(`invalid ${FLAG} entry ${JSON.stringify(s)}: ${reason}; ${FIX}`, { flag: FLAG, fix: FIX, cause: err })
    }
  })
  return {
    kind: 'static',
    async discover (options = {}) {
      options.signal?.throwIfAborted()
      return [...parsed]
    }
  }
}
