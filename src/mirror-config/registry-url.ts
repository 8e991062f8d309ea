/** Names that mean "every registry"; both map to containerd's catch-all directory `_default`. */
export const WILDCARD_REGISTRIES: readonly string[] = ['_default', '*']
export const WILDCARD_DIR = '_default'

export interface RegistryUrl {
  readonly isWildcard: boolean
  /** `scheme://host[:port]` as written into hosts.toml; empty for the wildcard. */
  readonly url: string
  /** Directory under config_path: the host with its port as given (`foo.bar:5000`), or `_default`. */
  readonly dir: string
}

export const WILDCARD_REGISTRY: RegistryUrl = Object.freeze({ isWildcard: true, url: '', dir: WILDCARD_DIR })

// scheme://authority path ?query #fragment, split the way Go's url.Parse does.
const URL_PARTS = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#(.*))?$/s
// What may stand in a host[:port] that is written between single quotes in hosts.toml.
const SAFE_AUTHORITY = /^[A-Za-z0-9._~%:[\]-]+$/

function isValidAuthority (authority: string): boolean {
  if (!SAFE_AUTHORITY.test(authority)) return false
  try {
    return new URL(`http://${authority}`).host !== ''
  } catch {
    return false
  }
}

/**
 * Why `s` is not a usable registry or mirror URL (Spegel's pkg/oci/filter.go rules), empty when it
 * is: http or https, a host, and no user, path, query or fragment. A lone trailing `/` is accepted
 * (and dropped), unlike Spegel, because the registry subcommand's parser accepts it too.
 */
export function registryUrlProblems (s: string): string[] {
  const m = URL_PARTS.exec(s)
  if (m === null) return ['scheme must be http or https', 'it must look like http(s)://host[:port]']
  const [, scheme = '', authority = '', urlPath = '', query, fragment] = m
  const problems: string[] = []
  if (scheme.toLowerCase() !== 'http' && scheme.toLowerCase() !== 'https') problems.push('scheme must be http or https')
  if (urlPath !== '' && urlPath !== '/') problems.push('path has to be empty')
  if (query !== undefined && query !== '') problems.push('query has to be empty')
  if (authority.includes('@')) problems.push('user has to be empty')
  if (fragment !== undefined) problems.push('fragment has to be empty')
  if (authority === '') {
    problems.push('host is missing')
  } else if (!authority.includes('@') && !isValidAuthority(authority)) {
    const hint = authority.split(':').length > 2 && !authority.includes('[') ? ' (IPv6 addresses need brackets: http://[fd00::1]:5000)' : ''
    problems.push(`host ${JSON.stringify(authority)} is invalid${hint}`)
  }
  return problems
}

/** Spegel's ParseRegistries for one entry; throws with Spegel's messages. */
export function parseRegistryUrl (s: string, allowWildcard: boolean): RegistryUrl {
  if (WILDCARD_REGISTRIES.includes(s)) {
    if (!allowWildcard) throw new Error('wildcard registries are not allowed')
    return WILDCARD_REGISTRY
  }
  const problems = registryUrlProblems(s)
  if (problems.length > 0) throw new Error(problems.map((p) => `invalid registry url ${p}: ${s}`).join('; '))
  const m = URL_PARTS.exec(s)
  const scheme = (m?.[1] ?? '').toLowerCase()
  const authority = m?.[2] ?? ''
  return Object.freeze({ isWildcard: false, url: `${scheme}://${authority}`, dir: authority })
}

/**
 * Spegel's ParseRegistries: an empty list with wildcards allowed means every registry
 * (`_default`); two wildcards are an error.
 */
export function parseRegistryUrls (values: readonly string[], allowWildcard: boolean): RegistryUrl[] {
  if (values.length === 0 && allowWildcard) return [WILDCARD_REGISTRY]
  let hasWildcard = false
  return values.map((value) => {
    const parsed = parseRegistryUrl(value, allowWildcard)
    if (parsed.isWildcard) {
      if (hasWildcard) throw new Error('registries should not contain two wildcards')
      hasWildcard = true
    }
    return parsed
  })
}

/**
 * Spegel's IPv6 bracketing (EncapsulateIPv6Host in pkg/httpx/url.go): when the text after `://` up
 * to the next `/` has two or more `:` and no `[`, everything before the last `:` is the address and
 * gets brackets (`http://fd00::2:30020` → `http://[fd00::2]:30020`). Assumes a port is present:
 * that is the form the Helm chart builds from the node IP. Other text is returned unchanged.
 */
export function bracketIPv6Host (s: string): string {
  const sep = s.indexOf('://')
  if (sep < 0) return s
  const start = sep + 3
  const slash = s.indexOf('/', start)
  const end = slash < 0 ? s.length : slash
  const host = s.slice(start, end)
  if (host.includes('[') || host.split(':').length - 1 < 2) return s
  const last = host.lastIndexOf(':')
  return `${s.slice(0, start)}[${host.slice(0, last)}]${host.slice(last)}${s.slice(end)}`
}
