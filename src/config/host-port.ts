import { isIPv4, isIPv6 } from 'node:net'
import { ConfigError, ValueError } from './errors.js'

export interface HostPort {
  /** Empty means every interface; IPv6 literals are unbracketed (`::`). */
  host: string
  port: number
}

const ADDR_FIX = 'use host:port with an optional host, e.g. :5000, 0.0.0.0:5000 or [::]:5000'
const HOSTNAME = /^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/

/** Go's net.SplitHostPort plus the checks net.Listen would make later; throws ValueError. */
export function splitHostPort (s: string): HostPort {
  if (s === '') throw new ValueError('address is empty', ADDR_FIX)
  let host: string
  let portText: string
  if (s.startsWith('[')) {
    const end = s.indexOf(']')
    if (end < 0) throw new ValueError(`missing ']'`, ADDR_FIX)
    host = s.slice(1, end)
    const rest = s.slice(end + 1)
    if (rest === '') throw new ValueError(`missing port`, ADDR_FIX)
    if (!rest.startsWith(':')) throw new ValueError(`unexpected ${JSON.stringify(rest)} after ']'`, ADDR_FIX)
    portText = rest.slice(1)
    const zoneless = host.split('%', 1)[0] ?? ''
    if (!isIPv6(zoneless)) {
      throw new ValueError(`${JSON.stringify(host)} in brackets is not an IPv6 address`, 'put only IPv6 literals in brackets, e.g. [::]:5000 or [fd00::1]:5000')
    }
  } else {
    const colon = s.lastIndexOf(':')
    if (colon < 0) throw new ValueError(`missing port`, ADDR_FIX)
    host = s.slice(0, colon)
    portText = s.slice(colon + 1)
    if (host.includes(':')) {
      throw new ValueError(`too many colons`, 'wrap IPv6 addresses in brackets, e.g. [::]:5000')
    }
    if (host !== '' && !isIPv4(host)) {
      // All-numeric names would be accepted by the hostname pattern but are really broken IPv4.
      if (/^[\d.]+$/.test(host) || !HOSTNAME.test(host)) {
        throw new ValueError(`invalid host ${JSON.stringify(host)}`, ADDR_FIX)
      }
    }
  }
  if (portText === '') throw new ValueError(`missing port`, ADDR_FIX)
  if (!/^\d+$/.test(portText)) {
    throw new ValueError(`port ${JSON.stringify(portText)} is not a number`, ADDR_FIX)
  }
  const port = Number(portText)
  if (port > 65535) {
    throw new ValueError(`port ${portText} is out of range`, 'use a port between 0 and 65535, e.g. :5000')
  }
  return { host, port }
}

/**
 * Parses a listen address (`:5000`, `0.0.0.0:5000`, `[::]:5000`, `localhost:5000`) into a frozen
 * {host, port}. `flagName` (`--registry-addr` or `registry-addr`) goes into the error.
 */
export function parseHostPort (s: string, flagName: string): HostPort {
  const flag = flagName.startsWith('--') ? flagName : `--${flagName}`
  try {
    return Object.freeze(splitHostPort(s))
  } catch (err) {
    if (err instanceof ValueError) {
      throw new ConfigError(`invalid ${flag} ${JSON.stringify(s)}: ${err.reason}; ${err.fix}`, { flag, fix: err.fix, cause: err })
    }
    throw err
  }
}
