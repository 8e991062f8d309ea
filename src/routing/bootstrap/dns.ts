import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { callSignal, raceAbort } from './abort.js'
import { DEFAULT_CALL_TIMEOUT_MS, MAX_BOOTSTRAP_PEERS } from './constants.js'
import { BootstrapError } from './errors.js'
import { compareIp, ipMultiaddr, splitZone } from './ip.js'
import type { BootstrapPeer, Bootstrapper } from './types.js'

/**
 * Answers one family's addresses for a name (zones as `%zone`). Throw an error whose `code` is
 * `ENOTFOUND` or `ENODATA` for "no such name / no records of this family".
 */
export type DnsResolver = (hostname: string, family: 4 | 6, options: { signal: AbortSignal }) => Promise<readonly string[]>

export interface DnsBootstrapperInit {
  /**
   * The router's TCP port, appended as `/tcp/<port>` (all Spegel nodes share one router port).
   * Unset or 0: bare `/ip4/<ip>` addresses, which the router must complete with its own port.
   */
  port?: number
  /** Defaults to the system resolver (getaddrinfo: /etc/hosts and resolv.conf search domains, as Go's). */
  resolver?: DnsResolver
  /** Per lookup; defaults to DEFAULT_CALL_TIMEOUT_MS. */
  timeoutMs?: number
}

const NOT_FOUND_CODES = new Set(['ENOTFOUND', 'ENODATA'])

/**
 * getaddrinfo through node:dns. It cannot be cancelled; the bootstrapper stops waiting on abort.
 * Filters by family because an IP literal comes back whatever family was asked.
 */
export const systemResolver: DnsResolver = async (hostname, family) => {
  const answers = await lookup(hostname, { family, all: true })
  return answers.filter((a) => a.family === family).map((a) => a.address)
}

function isNotFound (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && NOT_FOUND_CODES.has(code)
}

/**
 * Spegel's DNS bootstrapper: A and AAAA looked up apart, each family sorted ascending and cut
 * to the first 3, every address its own peer without an id (the router learns the id by dialing).
 * No records at all gives `[]`; a family that fails while the other answers is ignored, as in
 * Spegel; failures with nothing found throw BootstrapError (cause: AggregateError of both).
 */
export function dnsBootstrapper (domain: string, init: DnsBootstrapperInit = {}): Bootstrapper {
  const resolver = init.resolver ?? systemResolver
  const timeoutMs = init.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS
  const suffix = init.port === undefined || init.port === 0 ? '' : `/tcp/${init.port}`

  async function resolveFamily (family: 4 | 6, signal: AbortSignal | undefined): Promise<string[]> {
    const call = callSignal(signal, timeoutMs)
    try {
      // Raced so a resolver that ignores its signal still cannot hold a bootstrap round.
      const answers = await raceAbort(resolver(domain, family, { signal: call.signal }), call.signal)
      return answers.filter((ip) => isIP(splitZone(ip).address) === family)
    } catch (err) {
      if (call.timeout.aborted && signal?.aborted !== true) {
        throw new BootstrapError(`looking up ${family === 4 ? 'A' : 'AAAA'} records of ${domain} timed out after ${timeoutMs} ms`, { cause: err })
      }
      throw err
    }
  }

  return {
    kind: 'dns',
    async discover (options = {}) {
      const { signal } = options
      signal?.throwIfAborted()
      const results = await Promise.allSettled([resolveFamily(4, signal), resolveFamily(6, signal)])
      signal?.throwIfAborted()
      const peers: BootstrapPeer[] = []
      const errors: unknown[] = []
      for (const result of results) {
        if (result.status === 'rejected') {
          if (!isNotFound(result.reason)) errors.push(result.reason)
          continue
        }
        // Duplicates (a name listed twice in /etc/hosts) would waste one of the 3 slots.
        const ips = [...new Set(result.value)].sort(compareIp).slice(0, MAX_BOOTSTRAP_PEERS)
        for (const ip of ips) peers.push({ addrs: [`${ipMultiaddr(ip)}${suffix}`] })
      }
      if (peers.length === 0 && errors.length > 0) {
        const detail = errors.map((e) => e instanceof Error ? e.message : String(e)).join('; ')
        throw new BootstrapError(`resolving --dns-bootstrap-domain ${domain} failed: ${detail}`, { cause: new AggregateError(errors) })
      }
      return peers
    }
  }
}
