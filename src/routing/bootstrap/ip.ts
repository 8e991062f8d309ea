import { isIPv4, isIPv6 } from 'node:net'

/** Splits `fe80::1%eth0` into address and zone (empty when none). */
export function splitZone (ip: string): { address: string, zone: string } {
  const at = ip.indexOf('%')
  return at < 0 ? { address: ip, zone: '' } : { address: ip.slice(0, at), zone: ip.slice(at + 1) }
}

function ipv4Bytes (ip: string): number[] {
  return ip.split('.').map(Number)
}

function ipv6Bytes (ip: string): number[] {
  const groups = (part: string): number[] => {
    if (part === '') return []
    const out: number[] = []
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const [a = 0, b = 0, c = 0, d = 0] = ipv4Bytes(g)
        out.push((a << 8) | b, (c << 8) | d)
      } else {
        out.push(parseInt(g, 16))
      }
    }
    return out
  }
  const [headText = '', tailText] = ip.split('::')
  const head = groups(headText)
  const tail = tailText === undefined ? [] : groups(tailText)
  const all = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail]
  return all.flatMap((g) => [g >> 8, g & 0xff])
}

/**
 * Go's netip.Addr.Compare: by family (IPv4 first), then numerically, then by zone. Numeric order
 * matters: every node must pick the same lowest addresses, and `10.0.0.10` sorts after `10.0.0.9`.
 */
export function compareIp (a: string, b: string): number {
  const x = splitZone(a)
  const y = splitZone(b)
  const xb = isIPv4(x.address) ? ipv4Bytes(x.address) : ipv6Bytes(x.address)
  const yb = isIPv4(y.address) ? ipv4Bytes(y.address) : ipv6Bytes(y.address)
  if (xb.length !== yb.length) return xb.length - yb.length
  for (let i = 0; i < xb.length; i++) {
    const d = (xb[i] ?? 0) - (yb[i] ?? 0)
    if (d !== 0) return d
  }
  return x.zone < y.zone ? -1 : x.zone > y.zone ? 1 : 0
}

/** `/ip4/<ip>`, `/ip6/<ip>` or `/ip6zone/<zone>/ip6/<ip>` as go-multiaddr's FromIPAndZone writes them. */
export function ipMultiaddr (ip: string): string {
  const { address, zone } = splitZone(ip)
  if (isIPv4(address)) return `/ip4/${address}`
  if (!isIPv6(address)) throw new Error(`${JSON.stringify(ip)} is not an IP address`)
  return zone === '' ? `/ip6/${address}` : `/ip6zone/${zone}/ip6/${address}`
}
