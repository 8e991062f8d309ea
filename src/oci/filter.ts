import { parseRegistryHost } from './reference.js'

export interface FilterableReference {
  registry: string
  repository: string
  tag?: string
}

/** A rule that excludes references: `matches` returning true means "do not serve or advertise". */
export interface ReferenceFilter {
  matches(ref: FilterableReference): boolean
}

export type RegistryUrl = { scheme: 'http' | 'https', host: string } | { wildcard: true }

const WILDCARDS: ReadonlySet<string> = new Set(['_default', '*'])

function isWildcard (s: string): boolean {
  return WILDCARDS.has(s)
}

/**
 * Parses a `--mirrored-registries` entry: `http(s)://host[:port]` with nothing else (no
 * path, not even `/`, no query, fragment or user info, as Spegel requires), or the
 * wildcard `_default` / `*`.
 */
export function parseRegistryUrl (s: string): RegistryUrl {
  if (isWildcard(s)) return { wildcard: true }
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(s)
  if (m === null) throw new Error(`invalid registry url ${JSON.stringify(s)}: expected http(s)://host[:port], _default or *`)
  const [, rawScheme = '', host = '', rest = ''] = m
  const scheme = rawScheme.toLowerCase()
  if (scheme !== 'http' && scheme !== 'https') throw new Error(`invalid registry url ${JSON.stringify(s)}: scheme must be http or https`)
  if (host.includes('@')) throw new Error(`invalid registry url ${JSON.stringify(s)}: user has to be empty`)
  if (rest.startsWith('#')) throw new Error(`invalid registry url ${JSON.stringify(s)}: fragment has to be empty`)
  if (rest.startsWith('?')) throw new Error(`invalid registry url ${JSON.stringify(s)}: query has to be empty`)
  if (rest !== '') throw new Error(`invalid registry url ${JSON.stringify(s)}: path has to be empty`)
  if (parseRegistryHost(host) === undefined) throw new Error(`invalid registry url ${JSON.stringify(s)}: ${JSON.stringify(host)} is not a valid host[:port]`)
  return { scheme, host }
}

// Host names are case-insensitive; compare them the same way on both sides.
function normaliseHost (host: string): string {
  return host.toLowerCase()
}

/**
 * Excludes references whose registry is not mirrored. Undefined (no filtering) when the
 * list is empty or contains a wildcard. An empty registry (a digest request without `ns`)
 * is never in the list, so it is excluded, as in Spegel.
 */
export function registryAllowList (mirroredRegistries: readonly string[]): ReferenceFilter | undefined {
  const hosts = new Set<string>()
  for (const entry of mirroredRegistries) {
    const parsed = parseRegistryUrl(entry)
    if ('wildcard' in parsed) return undefined
    hosts.add(normaliseHost(parsed.host))
  }
  if (hosts.size === 0) return undefined
  return { matches: ref => !hosts.has(normaliseHost(ref.registry)) }
}

// RE2 (Go) accepts leading inline flags such as `(?i)`, which JavaScript only knows as
// RegExp flags; translate that common form so Spegel filter values keep working.
const LEADING_FLAGS = /^\(\?([ims]+)\)/

/**
 * Excludes references whose `registry/repository[:tag]` contains a match of `pattern`
 * (digests never take part). Patterns are JavaScript regular expressions, which accept
 * nearly all RE2 syntax; leading `(?i)`, `(?m)`, `(?s)` are translated.
 */
export function regexFilter (pattern: string): ReferenceFilter {
  let source = pattern
  let flags = ''
  const m = LEADING_FLAGS.exec(pattern)
  if (m !== null) {
    flags = [...new Set(m[1])].join('')
    source = pattern.slice(m[0].length)
  }
  let regex: RegExp
  try {
    regex = new RegExp(source, flags)
  } catch (err) {
    throw new Error(`invalid registry filter ${JSON.stringify(pattern)}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  return {
    matches: ref => regex.test(`${ref.registry}/${ref.repository}${ref.tag === undefined ? '' : `:${ref.tag}`}`)
  }
}

/** The whitelist from `--mirrored-registries` (if any) followed by one regex filter per `--registry-filters` entry. */
export function buildFilters (mirroredRegistries: readonly string[], registryFilters: readonly string[]): ReferenceFilter[] {
  const filters: ReferenceFilter[] = []
  const allowList = registryAllowList(mirroredRegistries)
  if (allowList !== undefined) filters.push(allowList)
  for (const pattern of registryFilters) filters.push(regexFilter(pattern))
  return filters
}

/** True when any filter excludes the reference. */
export function isFiltered (filters: readonly ReferenceFilter[], ref: FilterableReference): boolean {
  return filters.some(f => f.matches(ref))
}
