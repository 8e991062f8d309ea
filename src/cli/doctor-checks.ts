import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { parse } from 'smol-toml'
import type { HostsConfig } from '../mirror-config/read-hosts.js'

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip'

export interface CheckResult {
  readonly id: string
  readonly title: string
  readonly status: CheckStatus
  /** One line: what was found (for `skip`, why the check did not run). */
  readonly detail: string
  /** What to do about a `fail` or `warn`; may span lines (TOML snippets). */
  readonly fix?: string
}

/** The Helm chart's NodePort for the registry: the usual first mirror target. */
export const HELM_REGISTRY_NODE_PORT = 30020

const STATUS_RANK: Readonly<Record<CheckStatus, number>> = { skip: 0, pass: 1, warn: 2, fail: 3 }

export function worstStatus (statuses: readonly CheckStatus[]): CheckStatus {
  return statuses.reduce<CheckStatus>((worst, s) => (STATUS_RANK[s] > STATUS_RANK[worst] ? s : worst), 'pass')
}

// ---------------------------------------------------------------------------------------------
// containerd's config.toml

type Table = Record<string, unknown>

function isTable (value: unknown): value is Table {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
}

function lookup (root: Table, keys: readonly string[]): unknown {
  let cur: unknown = root
  for (const key of keys) {
    if (!isTable(cur)) return undefined
    cur = cur[key]
  }
  return cur
}

/** Where one config version keeps the CRI image settings. */
interface CriLayout {
  /** The plugin's key under `[plugins]`. */
  readonly plugin: string
  /** Path from the plugin table to the table holding `config_path` (its parent also holds `mirrors`, `configs`). */
  readonly registry: readonly string[]
  /** Path from the plugin table to the table holding `discard_unpacked_layers`. */
  readonly discardTable: readonly string[]
}

const CRI_V3: CriLayout = { plugin: 'io.containerd.cri.v1.images', registry: ['registry'], discardTable: [] }
const CRI_V2: CriLayout = { plugin: 'io.containerd.grpc.v1.cri', registry: ['registry'], discardTable: ['containerd'] }
const CRI_V1: CriLayout = { plugin: 'cri', registry: ['registry'], discardTable: ['containerd'] }

/**
 * Layouts to look in, most authoritative first. Some vendors (AKS, ACK) keep `version = 2`
 * but write the containerd 2.x table, so version 2 also looks there.
 */
function layoutsFor (version: number): CriLayout[] {
  if (version >= 3) return [CRI_V3]
  if (version === 2) return [CRI_V2, CRI_V3]
  return [CRI_V1]
}

function pluginKey (plugin: string): string {
  return /^[A-Za-z0-9_-]+$/.test(plugin) ? `plugins.${plugin}` : `plugins."${plugin}"`
}

function tableName (layout: CriLayout, sub: readonly string[]): string {
  return [pluginKey(layout.plugin), ...sub].join('.')
}

export interface Located<T> {
  readonly value: T
  /** Dotted TOML key it was found at, e.g. `plugins."io.containerd.grpc.v1.cri".registry.config_path`. */
  readonly key: string
}

export interface ContainerdConfigFacts {
  readonly file: string
  readonly state: 'ok' | 'missing' | 'unreadable' | 'invalid'
  readonly error?: string
  /** `version` as declared; containerd reads a file without one as version 1. */
  readonly version?: number
  readonly importedFiles: readonly string[]
  readonly configPath?: Located<string>
  readonly discardUnpackedLayers?: Located<boolean>
  /** Inline registry settings that containerd refuses next to config_path (`mirrors`, `configs.<host>.tls`). */
  readonly conflicts: readonly string[]
}

/** Pure: what a parsed (and import-merged) config says about mirroring. */
export function analyseContainerdConfig (doc: Table, file: string, importedFiles: readonly string[] = []): ContainerdConfigFacts {
  const declared = doc.version
  const version = typeof declared === 'number' ? declared : typeof declared === 'bigint' ? Number(declared) : 1
  const plugins = isTable(doc.plugins) ? doc.plugins : {}
  let configPath: Located<string> | undefined
  let discard: Located<boolean> | undefined
  const conflicts: string[] = []
  for (const layout of layoutsFor(version)) {
    const plugin = plugins[layout.plugin]
    if (!isTable(plugin)) continue
    const registry = lookup(plugin, layout.registry)
    if (configPath === undefined && isTable(registry) && typeof registry.config_path === 'string' && registry.config_path !== '') {
      configPath = { value: registry.config_path, key: `${tableName(layout, layout.registry)}.config_path` }
    }
    if (isTable(registry)) {
      if (isTable(registry.mirrors) && Object.keys(registry.mirrors).length > 0) {
        for (const host of Object.keys(registry.mirrors)) conflicts.push(`${tableName(layout, [...layout.registry, 'mirrors'])}."${host}"`)
      }
      if (isTable(registry.configs)) {
        for (const [host, cfg] of Object.entries(registry.configs)) {
          if (isTable(cfg) && cfg.tls !== undefined) conflicts.push(`${tableName(layout, [...layout.registry, 'configs'])}."${host}".tls`)
        }
      }
    }
    const discardTable = layout.discardTable.length === 0 ? plugin : lookup(plugin, layout.discardTable)
    if (discard === undefined && isTable(discardTable) && typeof discardTable.discard_unpacked_layers === 'boolean') {
      discard = { value: discardTable.discard_unpacked_layers, key: `${tableName(layout, [...layout.discardTable, 'discard_unpacked_layers'])}` }
    }
  }
  return {
    file,
    state: 'ok',
    version,
    importedFiles,
    ...(configPath === undefined ? {} : { configPath }),
    ...(discard === undefined ? {} : { discardUnpackedLayers: discard }),
    conflicts
  }
}

function firstLine (err: unknown): string {
  return ((err as Error).message ?? String(err)).split('\n')[0] ?? ''
}

function globToRegExp (pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')
  return new RegExp(`^${body}$`)
}

/** containerd's `imports`: relative to the importing file, glob patterns allowed in the file name. */
async function resolveImports (file: string, imports: unknown): Promise<string[]> {
  if (!Array.isArray(imports)) return []
  const out: string[] = []
  for (const entry of imports) {
    if (typeof entry !== 'string') continue
    const full = path.isAbsolute(entry) ? entry : path.join(path.dirname(file), entry)
    if (!/[*?[]/.test(path.basename(full))) {
      out.push(full)
      continue
    }
    let names: string[]
    try {
      names = await fs.readdir(path.dirname(full))
    } catch {
      // Go's filepath.Glob yields no match for an unreadable or absent directory; containerd then imports nothing.
      continue
    }
    const re = globToRegExp(path.basename(full))
    out.push(...names.filter((n) => re.test(n)).sort().map((n) => path.join(path.dirname(full), n)))
  }
  return out
}

/**
 * Reads containerd's config like containerd does: the main file, then its imports in order,
 * each imported plugin table replacing the whole table of the same plugin
 * (containerd's mergeConfig replaces plugin sections rather than merging them).
 */
export async function readContainerdConfig (file: string): Promise<ContainerdConfigFacts> {
  const empty = { file, importedFiles: [], conflicts: [] }
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return { ...empty, state: 'missing' }
    return { ...empty, state: 'unreadable', error: `${file}: ${code ?? firstLine(err)}` }
  }
  let doc: Table
  try {
    doc = parse(text)
  } catch (err) {
    return { ...empty, state: 'invalid', error: `${file}: ${firstLine(err)}` }
  }
  const merged: Table = { ...doc, plugins: isTable(doc.plugins) ? { ...doc.plugins } : {} }
  const imported: string[] = []
  const seen = new Set([path.resolve(file)])
  const pending = await resolveImports(file, doc.imports)
  while (pending.length > 0) {
    const next = pending.shift()
    if (next === undefined) break
    if (seen.has(path.resolve(next))) continue
    seen.add(path.resolve(next))
    let sub: Table
    try {
      sub = parse(await fs.readFile(next, 'utf8'))
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      return { ...empty, importedFiles: imported, state: 'invalid', error: `import ${next}: ${code ?? firstLine(err)}` }
    }
    imported.push(next)
    if (isTable(sub.plugins)) Object.assign(merged.plugins as Table, sub.plugins)
    pending.push(...await resolveImports(next, sub.imports))
  }
  return analyseContainerdConfig(merged, file, imported)
}

export interface ContainerdConfigCheckOptions {
  /** --containerd-registry-config-path: where spegel writes hosts.toml files. */
  readonly registryConfigPath: string
  /** containerd's major.minor when known (from the Version API). */
  readonly containerdVersion?: { major: number, minor: number }
}

/** The config layout version to suggest fixes in: the file's own, else the running containerd's. */
function fixLayout (facts: ContainerdConfigFacts, options: ContainerdConfigCheckOptions): CriLayout[] {
  if (facts.state === 'ok' && facts.version !== undefined) {
    const first = layoutsFor(facts.version)[0]
    return first === undefined ? [CRI_V2] : [first]
  }
  const major = options.containerdVersion?.major
  if (major === undefined) return [CRI_V2, CRI_V3]
  return major >= 2 ? [CRI_V3] : [CRI_V2]
}

function layoutLabel (layout: CriLayout): string {
  return layout === CRI_V3 ? 'version 3 (containerd 2.x)' : layout === CRI_V2 ? 'version 2 (containerd 1.x)' : 'version 1'
}

function configPathToml (layouts: readonly CriLayout[], configPath: string): string {
  return layouts.map((l) => `${layouts.length > 1 ? `# config ${layoutLabel(l)}\n` : ''}[${tableName(l, l.registry)}]\n  config_path = ${JSON.stringify(configPath)}`).join('\n')
}

function discardToml (layouts: readonly CriLayout[]): string {
  return layouts.map((l) => `${layouts.length > 1 ? `# config ${layoutLabel(l)}\n` : ''}[${l.discardTable.length === 0 ? pluginKey(l.plugin) : tableName(l, l.discardTable)}]\n  discard_unpacked_layers = false`).join('\n')
}

const TITLE_CONFIG = 'containerd config'
const TITLE_CONFIG_PATH = 'registry config_path'
const TITLE_DISCARD = 'discard_unpacked_layers'

/** Three results: the file itself, `config_path`, `discard_unpacked_layers`. */
export function containerdConfigChecks (facts: ContainerdConfigFacts, options: ContainerdConfigCheckOptions): CheckResult[] {
  const where = facts.file
  const restart = 'then restart containerd (systemctl restart containerd)'
  const results: CheckResult[] = []
  const layouts = fixLayout(facts, options)
  const isV2Daemon = options.containerdVersion !== undefined && options.containerdVersion.major >= 2

  if (facts.state === 'unreadable' || facts.state === 'invalid') {
    const status = facts.state === 'invalid' ? 'fail' : 'warn'
    results.push({
      id: 'containerd-config',
      title: TITLE_CONFIG,
      status,
      detail: facts.state === 'invalid'
        ? `cannot parse ${facts.error ?? where}: containerd will refuse to start with it`
        : `cannot read ${facts.error ?? where}`,
      fix: facts.state === 'invalid'
        ? `fix the TOML syntax in ${where} (containerd config dump shows what the running daemon loaded)`
        : `run doctor as root, or mount containerd's config read-only and pass its path with --containerd-config`
    })
    const reason = `${where} could not be ${facts.state === 'invalid' ? 'parsed' : 'read'}`
    results.push({ id: 'config-path', title: TITLE_CONFIG_PATH, status: 'skip', detail: reason })
    results.push({ id: 'discard-unpacked-layers', title: TITLE_DISCARD, status: 'skip', detail: reason })
    return results
  }

  if (facts.state === 'missing') {
    results.push({
      id: 'containerd-config',
      title: TITLE_CONFIG,
      status: 'warn',
      detail: `${where} does not exist: containerd runs with its built-in defaults`,
      fix: 'if containerd reads its config elsewhere, pass that file with --containerd-config (k3s/RKE2: /var/lib/rancher/k3s/agent/etc/containerd/config.toml); otherwise create it with the settings below'
    })
  } else {
    const imports = facts.importedFiles.length > 0 ? `, imports ${facts.importedFiles.join(', ')}` : ''
    results.push({ id: 'containerd-config', title: TITLE_CONFIG, status: 'pass', detail: `${where}: config version ${facts.version ?? 1}${imports}` })
  }

  // config_path
  const wanted = options.registryConfigPath
  if (facts.configPath === undefined) {
    results.push({
      id: 'config-path',
      title: TITLE_CONFIG_PATH,
      status: 'fail',
      detail: `config_path is not set${facts.state === 'missing' ? ' (no config file)' : ` in ${where}`}: containerd's CRI ignores the hosts.toml mirror files, so pulls never reach spegel`,
      fix: `add to ${where} (merge into the table if it already exists), ${restart}:\n${configPathToml(layouts, wanted)}`
    })
  } else {
    const issues: Array<{ status: CheckStatus, text: string, fix: string }> = []
    const value = facts.configPath.value
    const dirs = value.split(':').filter((d) => d !== '')
    if (facts.conflicts.length > 0) {
      issues.push({
        status: 'fail',
        text: `inline registry settings next to config_path (${facts.conflicts.join(', ')}): containerd's CRI plugin refuses to load ("\`mirrors\` cannot be set when \`config_path\` is provided"), so the node cannot pull`,
        fix: `remove ${facts.conflicts.join(', ')} from ${where} and express each as ${wanted}/<registry>/hosts.toml, ${restart}`
      })
    }
    if (!dirs.some((d) => path.resolve(d) === path.resolve(wanted))) {
      issues.push({
        status: 'warn',
        text: `containerd reads mirror files from ${value} but spegel writes them to ${wanted} (--containerd-registry-config-path)`,
        fix: `pass --containerd-registry-config-path ${dirs[0] ?? value} (env CONTAINERD_REGISTRY_CONFIG_PATH), or set ${facts.configPath.key} = ${JSON.stringify(wanted)} and restart containerd`
      })
    }
    if (dirs.length > 1 && isV2Daemon) {
      issues.push({
        status: 'warn',
        text: `config_path lists several directories (${value}); containerd 2.x pulls through the transfer service, which reads the list as one path and silently ignores the mirror files (containerd issues 12636, 12808)`,
        fix: `set ${facts.configPath.key} = ${JSON.stringify(wanted)} (a single directory), ${restart}`
      })
    }
    const status = worstStatus(issues.map((i) => i.status))
    results.push({
      id: 'config-path',
      title: TITLE_CONFIG_PATH,
      status,
      detail: issues.length === 0 ? `${facts.configPath.key} = ${JSON.stringify(value)}` : `${facts.configPath.key} = ${JSON.stringify(value)}; ${issues.map((i) => i.text).join('; ')}`,
      ...(issues.length === 0 ? {} : { fix: issues.map((i) => i.fix).join('; ') })
    })
  }

  // discard_unpacked_layers
  const discard = facts.discardUnpackedLayers
  if (discard?.value === true) {
    results.push({
      id: 'discard-unpacked-layers',
      title: TITLE_DISCARD,
      status: 'fail',
      detail: `${discard.key} = true: containerd deletes layer blobs once they are unpacked, so this node has no layers to share`,
      fix: `set ${discard.key} = false in ${where}, ${restart}; images pulled meanwhile keep no layers until they are pulled again:\n${discardToml(layouts)}`
    })
  } else {
    results.push({
      id: 'discard-unpacked-layers',
      title: TITLE_DISCARD,
      status: 'pass',
      detail: discard === undefined ? 'not set: containerd keeps layer blobs (default false)' : `${discard.key} = false`
    })
  }
  return results
}

// ---------------------------------------------------------------------------------------------
// hosts.toml mirror files

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
  readonly configPath: string
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
  const id = 'hosts-config'
  const title = 'mirror hosts.toml'
  const dir = options.configPath
  const fix = `write the mirror files with: spegel configuration --containerd-registry-config-path ${dir} --mirror-targets http://${urlHost(options.suggestedAddress)}:${options.registryPort} ... (with the Helm chart the first target is http://<node-ip>:${HELM_REGISTRY_NODE_PORT})`
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

// ---------------------------------------------------------------------------------------------
// containerd version

/** `1.6.20~ds1`, `v2.1.4`, `2.2.0-rc.1` → {1,6}; undefined when it does not start with digits. */
export function parseContainerdVersion (version: string): { major: number, minor: number } | undefined {
  const m = /^v?(\d+)\.(\d+)/.exec(version.trim())
  if (m === null) return undefined
  return { major: Number(m[1]), minor: Number(m[2]) }
}

export function containerdVersionCheck (version: string, revision: string): CheckResult {
  const id = 'containerd-version'
  const title = 'containerd version'
  const parsed = parseContainerdVersion(version)
  const shown = `containerd ${version}${revision === '' ? '' : ` (revision ${revision.slice(0, 12)})`}`
  if (parsed === undefined) {
    return { id, title, status: 'warn', detail: `${shown}: version not understood`, fix: 'spegel is tested with containerd 1.6 and 2.x; check that this socket is containerd\'s' }
  }
  if (parsed.major > 2 || (parsed.major === 2 && parsed.minor >= 1)) return { id, title, status: 'pass', detail: shown }
  return {
    id,
    title,
    status: 'warn',
    detail: `${shown} is older than 2.1: no content events (layers are announced only once the whole image is pulled) and hosts.toml dial_timeout is ignored (an unreachable mirror costs the full TCP connect timeout)`,
    fix: 'upgrade containerd to 2.1 or later when the distribution allows it'
  }
}
