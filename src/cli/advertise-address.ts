import os from 'node:os'
import type { HostPort } from '../config/index.js'

function isUnspecified (host: string): boolean {
  return host === '' || host === '0.0.0.0' || host === '::' || host === '[::]'
}

function bracket (host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
}

/** The node's own address as other nodes see it: the first non-internal IPv4 (a pod IP), else IPv6, else loopback. */
export function primaryAddress (interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): string {
  const all = Object.values(interfaces).flatMap((list) => list ?? [])
  const external = all.filter((i) => !i.internal)
  return external.find((i) => i.family === 'IPv4')?.address ??
    external.find((i) => i.family === 'IPv6' && !i.address.startsWith('fe80'))?.address ??
    '127.0.0.1'
}

/**
 * `host:port` peers use for this node's registry: the registry's listen host when it is a
 * specific address, else the router's, else the node's primary address. Each node carries
 * its own port in its record, so nodes need not share one (unlike Spegel).
 */
export function advertisedRegistryAddress (registryAddr: HostPort, routerAddr: HostPort, registryPort: number, interfaces?: NodeJS.Dict<os.NetworkInterfaceInfo[]>): string {
  const host = !isUnspecified(registryAddr.host)
    ? registryAddr.host
    : !isUnspecified(routerAddr.host) ? routerAddr.host : primaryAddress(interfaces)
  return `${bracket(host)}:${registryPort}`
}
