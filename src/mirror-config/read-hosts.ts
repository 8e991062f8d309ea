import fs from 'node:fs/promises'
import path from 'node:path'
import { parse } from 'smol-toml'

/**
 * containerd gives a `[host."…"]` entry without `capabilities` every capability
 * (core/remotes/docker/config/hosts.go), so a reader that reports the effective set must do the same.
 */
export const DEFAULT_HOST_CAPABILITIES: readonly string[] = ['pull', 'resolve', 'push']

export interface HostEntry {
  /** The table key as written: `http://10.0.0.1:30020`. */
  readonly url: string
  /** Effective capabilities: as written, or containerd's default when the key is absent. */
  readonly capabilities: string[]
  readonly hasExplicitCapabilities: boolean
  readonly dialTimeout?: string
  readonly headers: Record<string, string | string[]>
  /** The entry's table as parsed (ca, client, skip_verify, override_path...), for writers that re-serialise it. */
  readonly raw: Readonly<Record<string, unknown>>
}

export interface HostsConfig {
  /** The directory name under config_path: `docker.io`, `foo.bar:5000`, `_default`. */
  readonly registry: string
  readonly file: string
  readonly server?: string
  /** In file order; containerd tries them in this order before `server`. */
  readonly hosts: HostEntry[]
  /** Set when the file cannot be read or is not a hosts.toml containerd would accept; `hosts` is then empty. */
  readonly error?: string
}

function isTable (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
}

function parseHostEntry (url: string, table: Record<string, unknown>): HostEntry {
  const caps = table.capabilities
  let capabilities: string[]
  if (caps === undefined) {
    capabilities = [...DEFAULT_HOST_CAPABILITIES]
  } else if (Array.isArray(caps) && caps.every((c): c is string => typeof c === 'string')) {
    capabilities = caps
  } else {
    throw new Error(`host "${url}": capabilities must be an array of strings`)
  }
  const dial = table.dial_timeout
  if (dial !== undefined && typeof dial !== 'string') throw new Error(`host "${url}": dial_timeout must be a string`)
  const headers: Record<string, string | string[]> = {}
  const header = table.header
  if (header !== undefined) {
    if (!isTable(header)) throw new Error(`host "${url}": header must be a table`)
    for (const [name, value] of Object.entries(header)) {
      if (typeof value === 'string') headers[name] = value
      else if (Array.isArray(value) && value.every((v): v is string => typeof v === 'string')) headers[name] = value
      else throw new Error(`host "${url}": header ${name} must be a string or an array of strings`)
    }
  }
  return {
    url,
    capabilities,
    hasExplicitCapabilities: caps !== undefined,
    ...(dial === undefined ? {} : { dialTimeout: dial }),
    headers,
    raw: table
  }
}

/** Parses one hosts.toml text; never throws, problems land in `error`. */
export function parseHostsToml (text: string, registry: string, file: string): HostsConfig {
  let doc: Record<string, unknown>
  try {
    doc = parse(text)
  } catch (err) {
    return { registry, file, hosts: [], error: `invalid TOML: ${(err as Error).message.split('\n')[0] ?? ''}` }
  }
  const server = doc.server
  if (server !== undefined && typeof server !== 'string') return { registry, file, hosts: [], error: 'server must be a string' }
  const hosts: HostEntry[] = []
  const hostTable = doc.host
  try {
    if (hostTable !== undefined) {
      if (!isTable(hostTable)) throw new Error('host must be a table of [host."<url>"] entries')
      for (const [url, value] of Object.entries(hostTable)) {
        // Only two-part keys ([host."X"]) are entries; containerd ignores scalars directly under [host].
        if (isTable(value)) hosts.push(parseHostEntry(url, value))
      }
    }
  } catch (err) {
    return { registry, file, hosts: [], ...(server === undefined ? {} : { server }), error: (err as Error).message }
  }
  return { registry, file, hosts, ...(server === undefined ? {} : { server }) }
}

export async function readHostsFile (file: string, registry: string): Promise<HostsConfig> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (err) {
    return { registry, file, hosts: [], error: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }
  }
  return parseHostsToml(text, registry, file)
}

/**
 * Reads every `<configPath>/<registry>/hosts.toml`, sorted by registry. A missing `configPath`
 * yields an empty list; other directory errors (EACCES, ENOTDIR) are thrown. Registry
 * directories without a hosts.toml are skipped: containerd then only uses their certificate files.
 */
export async function readHostsConfigs (configPath: string): Promise<HostsConfig[]> {
  let entries
  try {
    entries = await fs.readdir(configPath, { withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  const names = entries
    .filter((e) => e.isDirectory() || e.isSymbolicLink())
    .map((e) => e.name)
    .sort()
  const configs: HostsConfig[] = []
  for (const name of names) {
    const file = path.join(configPath, name, 'hosts.toml')
    try {
      await fs.access(file)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // ENOENT: no hosts.toml here; ENOTDIR: a symlink to a file, not a registry directory.
      if (code === 'ENOENT' || code === 'ENOTDIR') continue
    }
    configs.push(await readHostsFile(file, name))
  }
  return configs
}
