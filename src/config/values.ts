import { regexFilter } from '../oci/index.js'
import { isIPv4, isIPv6 } from 'node:net'
import { ValueError } from './errors.js'

/** Go's strconv.ParseBool, which go-arg uses for boolean flags and env. */
export function parseBool (s: string): boolean {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(s)) return true
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(s)) return false
  throw new ValueError(`${JSON.stringify(s)} is not a boolean`, 'use true or false')
}

export function parseInteger (s: string, min: number): number {
  if (!/^[+-]?\d+$/.test(s)) throw new ValueError(`${JSON.stringify(s)} is not an integer`, `use a whole number of at least ${min}`)
  const n = Number(s)
  if (!Number.isSafeInteger(n) || n < min) throw new ValueError(`${s} is out of range`, `use a whole number of at least ${min}`)
  return n
}

/**
 * One CSV record as go-arg reads list env vars (encoding/csv): commas separate, double quotes
 * protect commas, `""` inside quotes is a quote. Unlike go-arg, entries are trimmed, empty ones
 * dropped (a trailing comma is a common typo) and newlines separate like commas instead of
 * silently ending the list.
 */
export function parseCsv (s: string): string[] {
  const fields: string[] = []
  let i = 0
  while (i <= s.length) {
    let field = ''
    // Go only treats a quote as opening when it is the field's first character.
    const start = i
    while (s[i] === ' ' || s[i] === '\t') i++
    if (s[i] === '"') {
      i++
      for (;;) {
        if (i >= s.length) throw new ValueError(`unterminated quote in ${JSON.stringify(s)}`, 'close every " in the comma-separated list')
        if (s[i] === '"') {
          if (s[i + 1] === '"') { field += '"'; i += 2; continue }
          i++
          break
        }
        field += s[i]
        i++
      }
      while (s[i] === ' ' || s[i] === '\t') i++
      if (i < s.length && s[i] !== ',' && s[i] !== '\n' && s[i] !== '\r') {
        throw new ValueError(`unexpected text after a quoted field in ${JSON.stringify(s)}`, 'separate list entries with commas')
      }
    } else {
      i = start
      while (i < s.length && s[i] !== ',' && s[i] !== '\n' && s[i] !== '\r') {
        if (s[i] === '"') throw new ValueError(`bare " in a field of ${JSON.stringify(s)}`, 'quote the whole entry, e.g. "a,b",c')
        field += s[i]
        i++
      }
    }
    field = field.trim()
    if (field !== '') fields.push(field)
    i++ // skip the separator (or step past the end)
  }
  return fields
}

export type LogLevel = 'DEBUG' | 'INFO' | 'WARN' | 'ERROR'

export function parseLogLevel (s: string): LogLevel {
  const v = s.trim().toUpperCase()
  if (v === 'DEBUG' || v === 'INFO' || v === 'WARN' || v === 'ERROR') return v
  throw new ValueError(`unknown log level ${JSON.stringify(s)}`, 'use DEBUG, INFO, WARN or ERROR')
}

export function parseNonEmpty (what: string) {
  return (s: string): string => {
    if (s.trim() === '') throw new ValueError(`${what} is empty`, `give a ${what}, or unset the variable to use the default`)
    return s
  }
}

/**
 * Spegel's registry URL rules (pkg/oci/filter.go): a wildcard (`_default` or `*`) or an http(s) URL
 * with nothing but scheme, host and port.
 */
export function checkRegistryUrl (s: string): string {
  if (s === '_default' || s === '*') return s
  const fix = 'use a URL such as https://docker.io or http://registry.local:5000, or the wildcard _default'
  let url: URL
  try {
    url = new URL(s)
  } catch {
    // The URL constructor's message adds nothing beyond "Invalid URL".
    throw new ValueError(`${JSON.stringify(s)} is not a URL`, fix)
  }
  const problems: string[] = []
  if (url.protocol !== 'http:' && url.protocol !== 'https:') problems.push('scheme must be http or https')
  if (url.pathname !== '/' && url.pathname !== '') problems.push('path has to be empty')
  if (url.search !== '') problems.push('query has to be empty')
  if (url.username !== '' || url.password !== '') problems.push('user has to be empty')
  if (url.hash !== '') problems.push('fragment has to be empty')
  if (problems.length > 0) throw new ValueError(`invalid registry url ${JSON.stringify(s)}: ${problems.join(', ')}`, fix)
  return s
}

export function checkRegistryUrls (values: readonly string[]): string[] {
  const checked = values.map(checkRegistryUrl)
  if (checked.filter((v) => v === '_default' || v === '*').length > 1) {
    throw new ValueError('registries should not contain two wildcards', 'list _default or * at most once')
  }
  return checked
}

/** Filters are RE2 in Spegel; JavaScript syntax covers the patterns people use (`^docker.io`, `:latest$`). */
export function checkRegex (s: string): string {
  if (s === '') throw new ValueError('empty regular expression would filter out every image', 'remove the empty entry')
  try {
    regexFilter(s)
  } catch (err) {
    throw new ValueError(`invalid regular expression ${JSON.stringify(s)}: ${err instanceof Error ? err.message : String(err)}`, 'use a JavaScript-compatible regular expression such as ^docker\\.io/ or :latest$')
  }
  return s
}

export function checkHttpUrl (s: string): string {
  const fix = 'use a full URL such as http://spegel-bootstrap:5002/id'
  let url: URL
  try {
    url = new URL(s)
  } catch {
    // The URL constructor's message adds nothing beyond "Invalid URL".
    throw new ValueError(`${JSON.stringify(s)} is not a URL`, fix)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ValueError(`${JSON.stringify(s)} must use http or https`, fix)
  return s
}

const BASE58BTC = /^[1-9A-HJ-NP-Za-km-z]+$/
const CID_BASE32 = /^b[a-z2-7]+$/

function isPeerId (s: string): boolean {
  return (BASE58BTC.test(s) && s.length >= 42 && s.length <= 128) || (CID_BASE32.test(s) && s.length >= 50)
}

function isPort (s: string): boolean {
  return /^\d+$/.test(s) && Number(s) <= 65535
}

function nonEmpty (s: string): boolean {
  return s !== ''
}

// Protocols that carry a value, with a check of that value; the rest take none.
const VALUE_PROTOCOLS: ReadonlyMap<string, (v: string) => boolean> = new Map([
  ['ip4', isIPv4],
  ['ip6', isIPv6],
  ['ip6zone', nonEmpty],
  ['dns', nonEmpty],
  ['dns4', nonEmpty],
  ['dns6', nonEmpty],
  ['dnsaddr', nonEmpty],
  ['tcp', isPort],
  ['udp', isPort],
  ['sctp', isPort],
  ['dccp', isPort],
  ['certhash', nonEmpty],
  ['sni', nonEmpty],
  ['p2p', isPeerId],
  ['ipfs', isPeerId]
])
const BARE_PROTOCOLS = new Set(['quic', 'quic-v1', 'ws', 'wss', 'tls', 'noise', 'http', 'https', 'webtransport', 'webrtc', 'webrtc-direct', 'p2p-circuit', 'utp', 'udt'])

/**
 * Shape check of a bootstrap multiaddr (`/ip4/10.0.0.5/tcp/5001/p2p/12D3Koo…`): known protocols
 * with plausible values, ending in `/p2p/<peer-id>` as libp2p's AddrInfoFromString requires.
 * The router does the real parsing; this catches typos before startup.
 */
export function checkPeerMultiaddr (s: string): string {
  const fix = 'use a libp2p multiaddr ending in /p2p/<peer-id>, e.g. /ip4/10.0.0.5/tcp/5001/p2p/12D3KooW…'
  if (!s.startsWith('/')) throw new ValueError(`${JSON.stringify(s)} is not a multiaddr`, fix)
  const parts = s.slice(1).split('/')
  if (parts[parts.length - 1] === '') parts.pop()
  const protocols: string[] = []
  for (let i = 0; i < parts.length; i++) {
    const name = parts[i] ?? ''
    const check = VALUE_PROTOCOLS.get(name)
    if (check !== undefined) {
      const value = parts[i + 1]
      if (value === undefined || !check(value)) {
        throw new ValueError(`invalid value ${JSON.stringify(value ?? '')} for /${name} in ${JSON.stringify(s)}`, fix)
      }
      i++
    } else if (!BARE_PROTOCOLS.has(name)) {
      throw new ValueError(`unknown multiaddr protocol ${JSON.stringify(name)} in ${JSON.stringify(s)}`, fix)
    }
    protocols.push(name)
  }
  const last = protocols[protocols.length - 1]
  if (last !== 'p2p' && last !== 'ipfs') throw new ValueError(`${JSON.stringify(s)} does not end in /p2p/<peer-id>`, fix)
  if (protocols.length < 2) throw new ValueError(`${JSON.stringify(s)} has no address before /p2p`, fix)
  return s
}
