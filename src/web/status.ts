import os from 'node:os'
import type { RecentRequest } from '../registry/recent-requests.js'
import type { Readiness } from '../registry/readiness.js'
import type { ImageSummary } from '../store/index.js'
import type { ContainerdCheck, ContainerdView, NodeStatus, NodeWarning, RouterView } from './status-types.js'

export type * from './status-types.js'

export interface StatusComponents {
  readiness: () => Readiness
  containerd: () => ContainerdView
  images: () => ImageSummary[]
  /** Live nodes other than this one that hold `key`. */
  holders: (key: string) => number
  /** Undefined until the router has started. */
  router: () => RouterView | undefined
  recentRequests: (limit: number) => RecentRequest[]
  warnings: () => NodeWarning[]
  /** Unix ms of the last successful mirror, if any. */
  lastMirrorSuccessMs: () => number | undefined
}

export interface StatusInit {
  version: string
  startedAtMs: number
  /** `host:port` peers use for this node's registry. */
  registryAddress: () => string | undefined
  listen: { registry: string, router: string, metrics: string }
  isRouterPskEnabled: boolean
  /** Most images listed (the page shows a node's images, not a registry's catalogue). */
  maxImages?: number
  maxRequests?: number
}

export const DEFAULT_MAX_IMAGES = 500
export const DEFAULT_MAX_STATUS_REQUESTS = 100

/** Everything the web page shows, in one JSON-able snapshot. */
export function buildStatus (components: StatusComponents, init: StatusInit): NodeStatus {
  const now = Date.now()
  const readiness = components.readiness()
  const containerd = components.containerd()
  const router = components.router()
  const allImages = components.images().sort((a, b) => a.name.localeCompare(b.name))
  const images = allImages.slice(0, init.maxImages ?? DEFAULT_MAX_IMAGES).map((image) => ({ ...image, peers: components.holders(image.digest) }))
  const registryAddress = init.registryAddress()
  const lastMirrorSuccessMs = components.lastMirrorSuccessMs()
  const { peers = [], ...routerRest } = router ?? {}
  return {
    generatedAtMs: now,
    node: {
      ...(router === undefined ? {} : { peerId: router.peerId }),
      hostname: os.hostname(),
      version: init.version,
      nodejs: process.version,
      startedAtMs: init.startedAtMs,
      uptimeSeconds: Math.round((now - init.startedAtMs) / 1000),
      isReady: readiness.isReady,
      ...(readiness.reason === undefined ? {} : { reason: readiness.reason }),
      ...(registryAddress === undefined ? {} : { registryAddress }),
      listen: init.listen,
      multiaddrs: router?.multiaddrs ?? [],
      isRouterPskEnabled: init.isRouterPskEnabled,
      ...(lastMirrorSuccessMs === undefined ? {} : { lastMirrorSuccessMs })
    },
    containerd: { ...containerd, checks: containerdChecks(containerd, allImages.length) },
    ...(router === undefined ? {} : { router: routerRest as Omit<RouterView, 'peers'> }),
    peers: [...peers].sort((a, b) => Number(b.isAlive) - Number(a.isAlive) || a.id.localeCompare(b.id)),
    images,
    imagesTotal: allImages.length,
    requests: components.recentRequests(init.maxRequests ?? DEFAULT_MAX_STATUS_REQUESTS),
    warnings: components.warnings()
  }
}

/**
 * The checks `spegel doctor` runs that a running node can answer from what it already knows,
 * without touching the socket again: the connection itself, the content directory, images.
 */
export function containerdChecks (c: ContainerdView, imageCount: number): ContainerdCheck[] {
  const checks: ContainerdCheck[] = []
  if (c.state === 'connected') {
    checks.push({ name: 'containerd API', status: 'ok', detail: `connected to ${c.socketPath}${c.version === undefined ? '' : ` (containerd ${c.version})`}` })
  } else {
    checks.push({
      name: 'containerd API',
      status: 'fail',
      detail: c.problem?.message ?? c.reason ?? `containerd is ${c.state}`,
      ...(c.problem === undefined ? {} : { fix: c.problem.fix })
    })
  }
  if (c.state === 'connected') {
    if (c.contentDirectory !== undefined) {
      checks.push({ name: 'content directory', status: 'ok', detail: `reading blobs from ${c.contentDirectory}` })
    } else {
      checks.push({
        name: 'content directory',
        status: 'warn',
        detail: c.configuredContentPath === ''
          ? 'no content directory readable: blobs are read through the containerd socket (about 10x slower)'
          : `${c.configuredContentPath} is not readable: blobs are read through the containerd socket (about 10x slower)`,
        fix: 'mount containerd\'s content directory (e.g. /var/lib/containerd/io.containerd.content.v1.content) read-only and set --containerd-content-path to it'
      })
    }
    checks.push(imageCount > 0
      ? { name: `images in namespace ${c.namespace}`, status: 'ok', detail: `${imageCount} image${imageCount === 1 ? '' : 's'}` }
      : { name: `images in namespace ${c.namespace}`, status: 'warn', detail: `no images in namespace ${c.namespace}`, fix: `kubelet's images live in k8s.io; check --containerd-namespace (now ${c.namespace})` })
  }
  return checks
}
