import type { RouterReadiness } from '../routing/index.js'
import type { StoreReadiness } from '../store/index.js'

export interface Readiness {
  readonly isReady: boolean
  /** Operator-facing reason when not ready, e.g. `containerd: connect ECONNREFUSED /run/containerd/containerd.sock`. */
  readonly reason?: string
}

export interface ReadinessParts {
  store: { readonly name: string, readiness(): StoreReadiness }
  router: { readiness(): RouterReadiness }
  /** Extra condition on top of the store's and the router's. */
  extra?: () => Readiness
}

/**
 * The node's readiness as /readyz, the `spegel_ready` metric and the web page report it: one
 * function, so the three can never disagree. The store comes first because a node without
 * containerd has nothing to serve whatever its peers say.
 */
export function nodeReadiness (parts: ReadinessParts): Readiness {
  const s = parts.store.readiness()
  if (!s.isReady) return { isReady: false, reason: s.reason ?? `${parts.store.name}: not ready` }
  const r = parts.router.readiness()
  if (!r.isReady) return { isReady: false, reason: `router: ${r.reason ?? 'not ready'}` }
  const extra = parts.extra?.()
  if (extra !== undefined && !extra.isReady) return { isReady: false, reason: extra.reason ?? 'not ready' }
  return { isReady: true }
}
