import { OTHER_LABEL } from '../observability/metrics.js'
import { parseRegistryUrl } from '../oci/index.js'

/** Registries learned from successful mirrors when every registry is mirrored; a bound on series. */
export const MAX_LEARNED_REGISTRIES = 64

export interface RegistryLabelInit {
  /** `--mirrored-registries` as configured (`_default` or `*` mean all). */
  mirroredRegistries: readonly string[]
  /** Registries of the images this node holds right now. */
  localRegistries: () => Iterable<string>
}

export interface RegistryLabeler {
  /** The metric label for a request's `ns`: the registry when it is a known one, else `other`. */
  label(registry: string): string
  /** A mirror of `registry` succeeded: a peer holds it, so it is a real registry of this cluster. */
  learn(registry: string): void
}

/**
 * Label values for `spegel_mirror_requests_total{registry}` from a closed set: containerd sends
 * `?ns=<registry>`, and any client can send any value, so taking it as it is would let one
 * client create a series per request. With an explicit `--mirrored-registries` the set is that
 * list. When every registry is mirrored it is the registries of this node's images plus those a
 * peer served (capped); the rest are `other`. An empty `ns` (a digest request without one) stays
 * empty, as in Spegel.
 */
export function createRegistryLabeler (init: RegistryLabelInit): RegistryLabeler {
  const configured = new Set<string>()
  let isAll = init.mirroredRegistries.length === 0
  for (const entry of init.mirroredRegistries) {
    const parsed = parseRegistryUrl(entry)
    if ('wildcard' in parsed) isAll = true
    else configured.add(parsed.host.toLowerCase())
  }
  const learned = new Set<string>()
  const isLocal = (registry: string): boolean => {
    for (const r of init.localRegistries()) if (r === registry) return true
    return false
  }
  return {
    label (registry) {
      if (registry === '') return ''
      const host = registry.toLowerCase()
      if (configured.has(host)) return host
      if (!isAll) return OTHER_LABEL
      if (learned.has(host) || isLocal(host)) return host
      return OTHER_LABEL
    },
    learn (registry) {
      const host = registry.toLowerCase()
      if (host === '' || !isAll || configured.has(host) || learned.has(host)) return
      if (learned.size < MAX_LEARNED_REGISTRIES) learned.add(host)
    }
  }
}
