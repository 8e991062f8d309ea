import type { IncomingMessage, ServerResponse } from 'node:http'
import type { P2PRouter } from '../routing/p2p/index.js'
import type { Store } from '../store/types.js'

export interface DebugComponents {
  store: Store
  router: () => P2PRouter | undefined
}

function sendJson (req: IncomingMessage, res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value, null, 2) + '\n'
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' })
  res.end(req.method === 'HEAD' ? undefined : body)
}

const MAX_LOOKUP_PEERS = 100

/**
 * Read-only JSON views for operators (and tests) on the metrics port, behind
 * --debug-web-enabled: `/debug/status` (store and router health, index size) and
 * `/debug/lookup?key=<digest or registry/repo:tag>` (which peers this node would ask).
 * Returns false for paths it does not own.
 */
export function createDebugHandler (components: DebugComponents): (req: IncomingMessage, res: ServerResponse) => Promise<boolean> {
  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost')
    if (req.method !== 'GET' && req.method !== 'HEAD') return false
    if (url.pathname === '/debug/status') {
      const router = components.router()
      sendJson(req, res, 200, {
        store: { name: components.store.name, ...components.store.readiness(), keys: components.store.keys().length },
        router: router === undefined ? { isReady: false, reason: 'starting' } : router.status()
      })
      return true
    }
    if (url.pathname === '/debug/lookup') {
      const key = url.searchParams.get('key') ?? ''
      if (key === '') {
        sendJson(req, res, 400, { error: 'the key query parameter is required: a digest (sha256:...) or registry/repository:tag' })
        return true
      }
      const router = components.router()
      const peers: Array<{ id: string, registryAddress: string }> = []
      if (router !== undefined) {
        for await (const peer of router.lookup(key, { limit: MAX_LOOKUP_PEERS, signal: AbortSignal.timeout(1000) })) peers.push({ id: peer.id, registryAddress: peer.registryAddress })
      }
      sendJson(req, res, 200, { key, local: components.store.keys().includes(key), peers })
      return true
    }
    return false
  }
}
