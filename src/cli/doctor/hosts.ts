import os from 'node:os'
import type { HostsConfig } from '../../mirror-config/read-hosts.js'
import type { CheckResult, CheckStatus } from './check.js'

/** The Helm chart's NodePort for the registry: the usual first mirror target. */
export const HELM_REGISTRY_NODE_PORT = 30020


/** Every address of this node, loopback included; IPv6 without brackets or zone. */
export function nodeAddresses (): string[] {
  const out: string[] = []
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) out.push(a.address.split('%')[0] ?? a.address)
  }
  return out
}

/** The address an operator most likely wants in `--mirror-targets`: the first non-internal IPv4. */
export function primaryNodeAddress (): string {
  const all = Object.values(os.networkInterfaces()).flatMap((l) => l ?? [])
  const pick = all.find((a) => !a.internal && a.family === 'IPv4') ?? all.find((a) => !a.internal) ?? all.find((a) => a.family === 'IPv4')
  return pick?.address ?? '127.0.0.1'
}

function urlHost (address: string): string {
  return address.includes(':') ? `[${address}]` : address
}

function isLoopbackName (host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost')
}

export interface HostsCheckOptions {
  /** The directory whose `<registry>/hosts.toml` files were read. */
  readonly configPath: string
  /** --containerd-registry-config-path as given (a list for several directories); default configPath. */
  readonly mirrorConfigPath?: string
  /** Check id and title, for a second hosts check (the transfer service's literal directory). */
  readonly id?: string
  readonly title?: string
  readonly nodeAddresses: readonly string[]
  /** --registry-addr's port. */
  readonly registryPort: number
  /** Address suggested in the fix. */
  readonly suggestedAddress: string
  /** Set when the directory could not be listed (ENOENT is reported as missing). */
  readonly readError?: string
}

interface MirrorMatch {
  readonly registry: string
  readonly url: string
  readonly port: number
  readonly capabilities: readonly string[]
}

function defaultPort (protocol: string): number {
  return protocol === 'https:' ? 443 : 80
}

export function hostsConfigCheck (configs: readonly HostsConfig[], options: HostsCheckOptions): CheckResult {
  const id = options.id ?? 'hosts-config'
  const title = options.title ?? 'mirror hosts.toml'
  const dir = options.configPath
  const given = options.mirrorConfigPath ?? dir
  const fix = `write the mirror files with: spegel configuration --containerd-registry-config-path ${given.includes(':') ? `'${given}'` : given} --mirror-targets http://${urlHost(options.suggestedAddress)}:${options.registryPort} ... (with the Helm chart the first target is http://<node-ip>:${HELM_REGISTRY_NODE_PORT})`
  if (options.readError !== undefined) {
    return { id, title, status: 'fail', detail: `cannot list ${dir}: ${options.readError}`, fix: `run doctor as root or mount ${dir}; then ${fix}` }
  }
  if (configs.length === 0) {
    return { id, title, status: 'fail', detail: `no ${dir}/<registry>/hosts.toml files: containerd pulls straight from upstream registries`, fix }
  }
  const broken = configs.filter((c) => c.error !== undefined)
  const local = new Set(options.nodeAddresses)
  const matches: MirrorMatch[] = []
  const elsewhere: string[] = []
  const withoutPull: string[] = []
  for (const config of configs) {
    for (const host of config.hosts) {
      let url: URL
      try {
        url = new URL(host.url)
      } catch {
        continue
      }
      const hostname = url.hostname.replace(/^\[|\]$/g, '')
      if (!local.has(hostname) && !isLoopbackName(hostname)) {
        elsewhere.push(`${config.registry} → ${url.host}`)
        continue
      }
      if (!host.capabilities.includes('pull')) {
        withoutPull.push(`${config.registry} → ${host.url} (capabilities ${host.capabilities.join(',') || 'none'})`)
        continue
      }
      matches.push({ registry: config.registry, url: host.url, port: url.port === '' ? defaultPort(url.protocol) : Number(url.port), capabilities: host.capabilities })
    }
  }
  const brokenText = broken.map((c) => `${c.file}: ${c.error ?? ''}`).join('; ')
  const brokenFix = broken.length > 0 ? `fix or remove ${broken.map((c) => c.file).join(', ')} (containerd fails pulls for a registry whose hosts.toml it cannot decode)` : undefined

  if (matches.length === 0) {
    const parts = [`no hosts.toml in ${dir} has a [host."http://<this node>:<port>"] entry with the pull capability`]
    if (withoutPull.length > 0) parts.push(`entries here without pull: ${withoutPull.join(', ')}`)
    if (elsewhere.length > 0) parts.push(`entries point at ${[...new Set(elsewhere)].join(', ')}, not at this node's addresses (${options.nodeAddresses.join(', ')})`)
    if (broken.length > 0) parts.push(`unreadable: ${brokenText}`)
    return { id, title, status: 'fail', detail: parts.join('; '), fix: brokenFix === undefined ? fix : `${brokenFix}; ${fix}` }
  }

  const registries = [...new Set(matches.map((m) => m.registry))]
  const ports = [...new Set(matches.map((m) => m.port))].sort((a, b) => a - b)
  const describe = registries.map((r) => (r === '_default' ? '_default (every registry)' : r)).join(', ')
  let detail = `mirrors ${describe} through this node on port${ports.length > 1 ? 's' : ''} ${ports.join(', ')}`
  const notes: string[] = []
  const expectedPorts = new Set([options.registryPort, HELM_REGISTRY_NODE_PORT])
  const oddPorts = ports.filter((p) => !expectedPorts.has(p))
  let status: CheckStatus = 'pass'
  const fixes: string[] = []
  if (oddPorts.length > 0 && !ports.some((p) => expectedPorts.has(p))) {
    status = 'warn'
    notes.push(`port${oddPorts.length > 1 ? 's' : ''} ${oddPorts.join(', ')} ${oddPorts.length > 1 ? 'are' : 'is'} neither --registry-addr's port ${options.registryPort} nor the Helm NodePort ${HELM_REGISTRY_NODE_PORT}`)
    fixes.push(`check that spegel listens on that port, or ${fix}`)
  }
  if (broken.length > 0) {
    status = 'fail'
    notes.push(`unreadable: ${brokenText}`)
    if (brokenFix !== undefined) fixes.unshift(brokenFix)
  }
  if (notes.length > 0) detail += `; ${notes.join('; ')}`
  return { id, title, status, detail, ...(fixes.length > 0 ? { fix: fixes.join('; ') } : {}) }
}
