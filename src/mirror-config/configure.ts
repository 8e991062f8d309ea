import fs from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from '../observability/logger.js'
import { syncDir, writeFileAtomic } from './atomic-write.js'
import { literalRootTop, mirrorWriteRoots } from './config-path.js'
import { BACKUP_DIR, HOSTS_FILE, existingHosts } from './existing-hosts.js'
import { parseRegistryUrls, type RegistryUrl } from './registry-url.js'

/**
 * Where the backup is assembled before it becomes `_backup` in one rename. Spegel creates
 * `_backup` first and then moves entries in; a crash in between leaves a `_backup` that later
 * runs trust, and the next run's clear step deletes whatever had not been moved yet.
 */
export const BACKUP_PARTIAL_DIR = '_backup.partial'
/** `_backup` is renamed to this before its entries move back, for the same reason. */
export const BACKUP_RESTORING_DIR = '_backup.restoring'

/**
 * Written for every mirror target. containerd 2.1+ gives up on an unreachable mirror after this
 * long and moves to the next host; containerd before 2.1 (1.6, 1.7, 2.0) does not know the key
 * and ignores it (its hosts.toml decoder skips unknown keys), waiting its own 30 s dial timeout.
 */
export const DIAL_TIMEOUT = '200ms'

export interface MirrorConfigComponents {
  log: Logger
}

export interface MirrorConfigurationInit {
  /**
   * containerd's registry config_path, e.g. /etc/containerd/certs.d, or a list in containerd's
   * syntax (`/etc/containerd/certs.d:/etc/docker/certs.d`): then the files go where each CRI pull
   * path looks (see mirrorWriteRoots).
   */
  configPath: string
  /** Registry URLs or `_default`/`*`; empty means every registry (`_default`). */
  mirroredRegistries: readonly string[]
  /** Mirror URLs, in the order containerd should try them; at least one. */
  mirrorTargets: readonly string[]
  /** Adds the `resolve` capability (tags resolved through the mirror). */
  resolveTags: boolean
  /** Keep the hosts of the backed-up hosts.toml after the mirror targets. */
  prependExisting: boolean
  /** Authorization header value for every target (`Basic …`); none when undefined. */
  authorization?: string
}

export interface WrittenHostsFile {
  /** The registry's directory name: `docker.io`, `foo.bar:5000`, `_default`. */
  readonly registry: string
  readonly path: string
  readonly content: string
  readonly hasPrepended: boolean
}

/**
 * hosts.toml content as Spegel's templateHosts (pkg/oci/containerd/mirror.go) renders it, trimmed,
 * without a final newline. `https://docker.io` becomes `https://registry-1.docker.io`, the host
 * containerd must talk to.
 */
export function templateHosts (registry: RegistryUrl, targets: readonly RegistryUrl[], capabilities: readonly string[], authorization?: string): string {
  let server = registry.url === 'https://docker.io' ? 'https://registry-1.docker.io' : registry.url
  if (registry.isWildcard) server = ''
  const caps = `[${capabilities.map((c) => `'${c}'`).join(', ')}]`
  let out = server === '' ? '' : `server = '${server}'`
  out += '\n'
  for (const target of targets) {
    out += `\n[host.'${target.url}']\ncapabilities = ${caps}\ndial_timeout = '${DIAL_TIMEOUT}'`
    if (authorization !== undefined && authorization !== '') {
      out += `\n[host.'${target.url}'.header]\nAuthorization = '${authorization}'`
    }
    out += '\n'
  }
  return out.trim()
}

async function isDir (p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return false
    throw err
  }
}

/**
 * Moves every entry of the config directory into `_backup`, unless `_backup` exists: the backup
 * of the very first run is the operator's configuration, later runs would only back up ours.
 * Resumes a backup that an earlier run left half done.
 */
async function backupConfig (log: Logger, configPath: string): Promise<void> {
  const backup = path.join(configPath, BACKUP_DIR)
  if (await isDir(backup)) return
  const partial = path.join(configPath, BACKUP_PARTIAL_DIR)
  await fs.mkdir(partial, { recursive: true, mode: 0o755 })
  for (const name of await fs.readdir(configPath)) {
    if (name === BACKUP_PARTIAL_DIR) continue
    const oldPath = path.join(configPath, name)
    await fs.rename(oldPath, path.join(partial, name))
    log.info({ path: oldPath }, 'backing up containerd host configuration')
  }
  await syncDir(partial)
  await fs.rename(partial, backup)
  await syncDir(configPath)
}

/** Deletes everything in the config directory except `_backup`. */
async function clearConfig (configPath: string): Promise<void> {
  for (const name of await fs.readdir(configPath)) {
    if (name === BACKUP_DIR) continue
    await fs.rm(path.join(configPath, name), { recursive: true, force: true })
  }
}

/** Moves what `_backup.restoring` holds back into the config directory; false when there is none. */
async function finishRestore (log: Logger, configPath: string): Promise<boolean> {
  const restoring = path.join(configPath, BACKUP_RESTORING_DIR)
  if (!(await isDir(restoring))) return false
  for (const name of await fs.readdir(restoring)) {
    const target = path.join(configPath, name)
    // The backup is authoritative; a name in the way can only be left from an interrupted run.
    await fs.rm(target, { recursive: true, force: true })
    await fs.rename(path.join(restoring, name), target)
    log.info({ path: path.join(configPath, BACKUP_DIR, name) }, 'recovering containerd host configuration')
  }
  await fs.rm(restoring, { recursive: true, force: true })
  await syncDir(configPath)
  return true
}

/** The backed-up hosts.toml's permissions, so a file made private (it may hold credentials) stays so. */
async function existingHostsMode (configPath: string, dir: string): Promise<number> {
  try {
    return (await fs.stat(path.join(configPath, BACKUP_DIR, dir, HOSTS_FILE))).mode & 0o777
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0o644
    throw err
  }
}

/**
 * Copies every file except hosts.toml from `<srcRoot>/_backup/<dir>` to `<dstRoot>/<dir>`, at the
 * same relative paths, so certificates the prepended hosts refer to keep working. Modes are kept:
 * a client key must not become world-readable.
 */
async function copyBackupFiles (srcRoot: string, dstRoot: string, dir: string): Promise<void> {
  const from = path.join(srcRoot, BACKUP_DIR, dir)
  const to = path.join(dstRoot, dir)
  const walk = async (rel: string): Promise<void> => {
    for (const entry of await fs.readdir(path.join(from, rel), { withFileTypes: true })) {
      const relPath = path.join(rel, entry.name)
      if (entry.isDirectory()) {
        await walk(relPath)
        continue
      }
      if (entry.name === HOSTS_FILE) continue
      const src = path.join(from, relPath)
      const dst = path.join(to, relPath)
      // readFile and stat follow symlinks, as Spegel's os.Open does: the copy holds the content.
      const [data, stat] = await Promise.all([fs.readFile(src), fs.stat(src)])
      await fs.mkdir(path.dirname(dst), { recursive: true, mode: 0o755 })
      await writeFileAtomic(dst, data, stat.mode & 0o777)
    }
  }
  await walk('')
}

/**
 * Spegel's AddMirrorConfiguration (pkg/oci/containerd/mirror.go): back up the config directory
 * once, clear it, and write `<config>/<registry>/hosts.toml` for each mirrored registry. Every file
 * is written atomically. Safe to re-run, and safe to re-run after a crash at any step.
 *
 * containerd 1.6/1.7 and 2.x read these files the same way, on every pull, without a restart,
 * but only when CRI's registry `config_path` names this directory, which is set in different
 * tables: `[plugins."io.containerd.grpc.v1.cri".registry]` (config version 2, containerd 1.x) and
 * `[plugins."io.containerd.cri.v1.images".registry]` (version 3, 2.x). This function does not
 * touch config.toml; `spegel doctor` checks it. Only `dial_timeout` differs (see DIAL_TIMEOUT).
 *
 * A multi-directory `configPath` (containerd 2.2's default, EKS's value) is written to its first
 * directory, for the local pull path, and to the raw list taken as one literal directory, which
 * is where containerd 2.1+'s transfer service looks (mirrorWriteRoots): each gets the same files
 * and its own `_backup`. The later directories are not touched.
 */
export async function addMirrorConfiguration (components: MirrorConfigComponents, init: MirrorConfigurationInit): Promise<WrittenHostsFile[]> {
  const { log } = components
  const registries = parseRegistryUrls(init.mirroredRegistries, true)
  const targets = parseRegistryUrls(init.mirrorTargets, false)
  if (targets.length === 0) throw new Error('at least one mirror target is required')
  const roots = mirrorWriteRoots(init.configPath)
  const primary = roots[0]?.dir ?? init.configPath
  if (roots.length > 1) {
    log.info({ configPath: init.configPath, localPullDir: primary, transferDir: init.configPath },
      'config_path lists several directories: writing the first one (local pull) and the literal joined path (transfer service)')
  }

  for (const root of roots) {
    await fs.mkdir(root.dir, { recursive: true, mode: 0o755 })
    await finishRestore(log, root.dir)
    await backupConfig(log, root.dir)
    await clearConfig(root.dir)
  }

  const capabilities = init.resolveTags ? ['pull', 'resolve'] : ['pull']
  const written: WrittenHostsFile[] = []
  for (const registry of registries) {
    const registryName = registry.isWildcard ? registry.dir : registry.url
    let content = templateHosts(registry, targets, capabilities, init.authorization)
    let hasPrepended = false
    if (init.prependExisting) {
      // The operator's files live in the first directory; the literal one is spegel's own.
      const existing = await existingHosts(primary, registry.dir)
      if (existing !== '') {
        content = `${content}\n\n${existing}`
        hasPrepended = true
        log.info({ registry: registryName }, 'prepending to existing containerd mirror configuration')
      }
    }
    const mode = await existingHostsMode(primary, registry.dir)
    for (const root of roots) {
      if (hasPrepended) await copyBackupFiles(primary, root.dir, registry.dir)
      const file = path.join(root.dir, registry.dir, HOSTS_FILE)
      await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o755 })
      await writeFileAtomic(file, content, mode)
      log.info({ registry: registryName, path: file, readBy: root.readBy }, 'added containerd mirror configuration')
      written.push({ registry: registry.dir, path: file, content, hasPrepended })
    }
  }
  return written
}

/** Restores one directory from its `_backup`; whether a backup was restored. */
async function cleanupDir (log: Logger, configPath: string): Promise<boolean> {
  const backup = path.join(configPath, BACKUP_DIR)
  // A configure run that stopped while backing up never cleared anything: finish the backup so
  // that everything below is restored from one place.
  if (await isDir(path.join(configPath, BACKUP_PARTIAL_DIR)) && !(await isDir(backup))) await backupConfig(log, configPath)
  if (await isDir(backup)) {
    await clearConfig(configPath)
    await fs.rename(backup, path.join(configPath, BACKUP_RESTORING_DIR))
    await syncDir(configPath)
  }
  return await finishRestore(log, configPath)
}

/**
 * Removes the literal multi-directory root and its parents while they are empty and exist only
 * because of the joined path (every one of them has the `:` in its path), so nothing like
 * `/etc/containerd/certs.d:` is left behind.
 */
async function removeEmptyLiteralRoot (log: Logger, configPath: string): Promise<void> {
  const top = literalRootTop(configPath)
  if (top === undefined) return
  let dir = path.resolve(configPath)
  const stop = path.dirname(path.resolve(top))
  while (dir !== stop && dir.includes(':')) {
    try {
      await fs.rmdir(dir)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // Not empty (someone else's files) or already gone: leave it and everything above.
      if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOENT') return
      throw err
    }
    log.info({ path: dir }, 'removed transfer-service mirror directory')
    dir = path.dirname(dir)
  }
}

/**
 * Spegel's CleanupMirrorConfiguration (pkg/oci/containerd/mirror.go): put the backed-up
 * configuration back and remove `_backup`; without a backup, nothing to do (never configured, or
 * already cleaned up). Returns whether a backup was restored. Also completes an interrupted backup
 * or restore. A multi-directory `configPath` is undone in every directory addMirrorConfiguration
 * wrote, and the literal transfer-service directory is removed once empty.
 */
export async function cleanupMirrorConfiguration (components: MirrorConfigComponents, configPath: string): Promise<boolean> {
  const { log } = components
  let restored = false
  for (const root of mirrorWriteRoots(configPath)) {
    if (await cleanupDir(log, root.dir)) restored = true
    if (root.readBy === 'transfer') await removeEmptyLiteralRoot(log, root.dir)
  }
  if (!restored) log.info('skipping cleanup because backup directory does not exist')
  return restored
}
