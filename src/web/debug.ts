import { readFile } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { findBuildFile } from '../build-files.js'
import type { Route } from '../http/index.js'
import { requestTarget } from '../http/index.js'
import type { Logger } from '../observability/logger.js'
import type { LookupOptions, Peer } from '../routing/index.js'
import { MeasureInputError, measureImage, type MeasureComponents } from './measure.js'
import { INDEX_HTML, STYLE_CSS } from './page.js'
import type { NodeStatus } from './status.js'

export interface DebugComponents {
  log: Logger
  /** Store and router health for `/debug/status`. */
  debugStatus: () => unknown
  /** The page's snapshot. */
  status: () => NodeStatus
  /** Peers this node would ask for a key. */
  lookup: (key: string, options: LookupOptions) => AsyncIterable<Peer>
  isLocal: (key: string) => boolean
  peerId: () => string | undefined
  measure: Omit<MeasureComponents, 'lookup' | 'isLocal'>
}

const MAX_LOOKUP_PEERS = 100
/** One measure at a time: each pulls a whole image through this node. */
const MAX_CONCURRENT_MEASURES = 1

/**
 * The metrics port's operator views, behind --debug-web-enabled: the live page under
 * `/debug/web/` (HTML, CSS and script served from here, nothing from the internet), its JSON
 * API, Spegel's `/debug/web/metadata`, and the JSON views `/debug/status` and
 * `/debug/lookup?key=` that scripts and tests use. Returned as mux routes so each is measured
 * under its pattern (`/debug/web/*` and friends, as Spegel labels them).
 */
export function createDebugRoutes (components: DebugComponents): Route[] {
  let script: Buffer | undefined
  let measuresRunning = 0

  const page = (req: IncomingMessage, res: ServerResponse): void => {
    send(req, res, 200, 'text/html; charset=utf-8', Buffer.from(INDEX_HTML))
  }

  const assets = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const { pathname } = requestTarget(req)
    if (pathname === '/debug/web/assets/style.css') {
      send(req, res, 200, 'text/css; charset=utf-8', Buffer.from(STYLE_CSS))
      return
    }
    if (pathname === '/debug/web/assets/app.js') {
      if (script === undefined) {
        try {
          // Built by tsconfig.web.json next to this module (dist/src/web/ui/app.js); the
          // bundle the image runs (scripts/bundle.mjs) sits in dist/src/cli instead.
          script = await readFile(findBuildFile(import.meta.url, ['./ui/app.js', '../web/ui/app.js']) ?? new URL('./ui/app.js', import.meta.url))
        } catch (err) {
          components.log.error({ err }, 'the debug page script is missing; build with `npm run build`')
          sendJson(req, res, 500, { error: 'the page script was not built (npm run build compiles src/web/ui with tsconfig.web.json)' })
          return
        }
      }
      send(req, res, 200, 'text/javascript; charset=utf-8', script)
      return
    }
    sendJson(req, res, 404, { error: 'not found' })
  }

  const metadata = (req: IncomingMessage, res: ServerResponse): void => {
    sendJson(req, res, 200, { libp2p: { id: components.peerId() ?? '' } })
  }

  const status = (req: IncomingMessage, res: ServerResponse): void => {
    sendJson(req, res, 200, components.status())
  }

  const measure = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const image = requestTarget(req).query.get('image') ?? ''
    if (measuresRunning >= MAX_CONCURRENT_MEASURES) {
      sendJson(req, res, 429, { error: 'a measure is already running on this node; try again when it is done' })
      return
    }
    measuresRunning++
    const gone = new AbortController()
    res.once('close', () => { if (!res.writableFinished) gone.abort() })
    try {
      const result = await measureImage({ ...components.measure, lookup: components.lookup, isLocal: components.isLocal }, image, { signal: gone.signal })
      sendJson(req, res, 200, result)
    } catch (err) {
      if (gone.signal.aborted) return
      if (err instanceof MeasureInputError) {
        sendJson(req, res, err.status, { error: err.message })
        return
      }
      throw err
    } finally {
      measuresRunning--
    }
  }

  const debugStatus = (req: IncomingMessage, res: ServerResponse): void => {
    sendJson(req, res, 200, components.debugStatus())
  }

  const lookup = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const key = requestTarget(req).query.get('key') ?? ''
    if (key === '') {
      sendJson(req, res, 400, { error: 'the key query parameter is required: a digest (sha256:...) or registry/repository:tag' })
      return
    }
    const peers: Array<{ id: string, registryAddress: string }> = []
    for await (const peer of components.lookup(key, { limit: MAX_LOOKUP_PEERS, signal: AbortSignal.timeout(1000) })) {
      peers.push({ id: peer.id, registryAddress: peer.registryAddress })
    }
    sendJson(req, res, 200, { key, local: components.isLocal(key), peers })
  }

  return [
    { pattern: '/debug/web/metadata', handler: getOnly(metadata) },
    { pattern: '/debug/web/api/status', handler: getOnly(status), isQuiet: true },
    { pattern: '/debug/web/api/measure', handler: getOnly(measure) },
    { pattern: '/debug/web/assets/*', handler: getOnly(assets), isQuiet: true },
    // Spegel answers its page for any other path below /debug/web/.
    { pattern: '/debug/web/*', handler: getOnly(page) },
    { pattern: '/debug/status', handler: getOnly(debugStatus), isQuiet: true },
    { pattern: '/debug/lookup', handler: getOnly(lookup) }
  ]
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>

function getOnly (handler: Handler): Handler {
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Length': 0 })
      res.end()
      return
    }
    return handler(req, res)
  }
}

function send (req: IncomingMessage, res: ServerResponse, status: number, type: string, body: Buffer): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': body.length,
    'Cache-Control': 'no-store',
    // The page only ever loads its own script and style and talks to its own node.
    'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    'X-Content-Type-Options': 'nosniff'
  })
  res.end(req.method === 'HEAD' ? undefined : body)
}

function sendJson (req: IncomingMessage, res: ServerResponse, status: number, value: unknown): void {
  send(req, res, status, 'application/json', Buffer.from(JSON.stringify(value, null, 2) + '\n'))
}
