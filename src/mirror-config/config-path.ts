/**
 * containerd's registry `config_path` is a list of directories in the OS path-list syntax
 * (`/etc/containerd/certs.d:/etc/docker/certs.d`), but its two CRI pull paths read it differently
 * (containerd v2.1 to v2.4 and main; see docs/containerd-2.md for the source lines):
 *
 * - the local pull path (containerd 1.x, 2.0, and 2.1+ with use_local_image_pull or a fallback)
 *   splits it with Go's filepath.SplitList and, for each registry host, takes the first directory
 *   that has `<host>` (or `<host_port_>`) or `_default` in it;
 * - the transfer service (the default CRI pull path from containerd 2.1) passes the raw string to
 *   HostDirFromRoot as ONE directory, i.e. it looks in `filepath.Join(raw, host)`, a path that
 *   normally does not exist, and silently pulls from the upstream registry.
 */

/** Go's filepath.SplitList on Unix: no entries for an empty string, otherwise every `:`-separated part (empty ones kept). */
export function splitConfigPath (configPath: string): string[] {
  return configPath === '' ? [] : configPath.split(':')
}

/** True when containerd's local pull path would search more than one directory. */
export function isMultiDirectory (configPath: string): boolean {
  return splitConfigPath(configPath).length > 1
}

export interface MirrorWriteRoot {
  /** Directory to write `<registry>/hosts.toml` into. */
  readonly dir: string
  /** Which CRI pull path reads this directory. */
  readonly readBy: 'local-and-transfer' | 'local' | 'transfer'
}

/**
 * Where spegel writes its mirror files for one `--containerd-registry-config-path` value:
 *
 * - a single directory: that directory, read by both pull paths;
 * - a list: its first non-empty directory (the local pull path looks there before any later one,
 *   `_default` included, so spegel's files win there), and the raw list itself as one literal
 *   directory (`/etc/containerd/certs.d:/etc/docker/certs.d/<registry>/hosts.toml`), which is where
 *   the transfer service looks. The later directories (e.g. Docker's /etc/docker/certs.d) are left
 *   alone: the local pull path never reaches them for a registry spegel configures.
 */
export function mirrorWriteRoots (configPath: string): MirrorWriteRoot[] {
  const dirs = splitConfigPath(configPath).filter((d) => d !== '')
  if (!isMultiDirectory(configPath)) return [{ dir: configPath, readBy: 'local-and-transfer' }]
  const first = dirs[0]
  const roots: MirrorWriteRoot[] = []
  if (first !== undefined) roots.push({ dir: first, readBy: 'local' })
  roots.push({ dir: configPath, readBy: 'transfer' })
  return roots
}

/**
 * For a literal multi-directory root, the top directory that exists only because of the joined
 * path: for `/etc/containerd/certs.d:/etc/docker/certs.d` it is `/etc/containerd/certs.d:`.
 * Cleanup removes empty directories up to and including it. Undefined for a path without `:`.
 */
export function literalRootTop (configPath: string): string | undefined {
  const colon = configPath.indexOf(':')
  if (colon < 0) return undefined
  const slash = configPath.indexOf('/', colon)
  return slash < 0 ? configPath : configPath.slice(0, slash)
}
