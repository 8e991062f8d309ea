import { isIPv4, isIPv6 } from 'node:net'

/**
 * A peer's registry address as the only form ever turned into a URL: an IP literal and a port.
 * No hostname (it would resolve to whatever DNS says), no userinfo, no path, no zone.
 */
export interface RegistryAddress {
  /** Canonical IP: dotted IPv4 (IPv4-mapped IPv6 unwrapped), or compressed lowercase IPv6. */
  readonly ip: string
  readonly port: number
  /** `ip:port`, or `[ip]:port` for IPv6: the URL authority. */
  readonly hostPort: string
}

const IPV4_FORM = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/
const IPV6_FORM = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/

/**
 * Parses `IP:port` or `[IPv6]:port` and refuses every address no peer registry can have (see
 * isUsablePeerIp); undefined for anything else, hostnames and URLs included.
 */
export function parseRegistryAddress (text: string): RegistryAddress | undefined {
  const v4 = IPV4_FORM.exec(text)
  const m = v4 ?? IPV6_FORM.exec(text)
  if (m === null) return undefined
  const literal = m[1] ?? ''
  // Brackets hold IPv6 only; an IPv4 literal in them is a second spelling of the address.
  if (v4 === null && !isIPv6(literal)) return undefined
  const ip = canonicalIp(literal)
  const port = Number(m[2])
  if (ip === undefined || !Number.isInteger(port) || port < 1 || port > 65535 || !isUsablePeerIp(ip)) return undefined
  return Object.freeze({ ip, port, hostPort: ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}` })
}

/**
 * The canonical text of an IP literal, so that two spellings of one address compare equal:
 * IPv4 as Node accepts it (dotted decimal, no leading zeros), IPv6 compressed and lowercase, and
 * IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack socket reports) as the IPv4 address.
 * Undefined for anything that is not an IP literal (zones included).
 */
export function canonicalIp (text: string): string | undefined {
  if (isIPv4(text)) return text
  if (!isIPv6(text) || text.includes('%')) return undefined
  const compressed = new URL(`http://[${text}]/`).hostname.slice(1, -1)
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(compressed)
  if (mapped !== null) {
    const hi = parseInt(mapped[1] ?? '0', 16)
    const lo = parseInt(mapped[2] ?? '0', 16)
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`
  }
  return compressed
}

/**
 * False for addresses a peer's registry never legitimately has and that would aim requests at
 * something else: unspecified and "this network" (0.0.0.0/8, ::), multicast (224.0.0.0/4,
 * ff00::/8), broadcast, link-local (169.254.0.0/16 holds cloud metadata services; fe80::/10) and
 * the reserved 240.0.0.0/4. Loopback stays allowed: nodes of one machine (tests, the demo) use it,
 * and a loopback address must still be proven by a connection like any other.
 */
export function isUsablePeerIp (ip: string): boolean {
  if (isIPv4(ip)) {
    const [a = 0, b = 0] = ip.split('.').map(Number)
    if (a === 0 || a >= 224) return false
    if (a === 169 && b === 254) return false
    return true
  }
  if (!isIPv6(ip)) return false
  const c = canonicalIp(ip)
  if (c === undefined) return false
  if (isIPv4(c)) return isUsablePeerIp(c)
  if (c === '::') return false
  const first = parseInt(c.split(':')[0] === '' ? '0' : (c.split(':')[0] ?? '0'), 16)
  if ((first & 0xff00) === 0xff00) return false
  if ((first & 0xffc0) === 0xfe80) return false
  return true
}
