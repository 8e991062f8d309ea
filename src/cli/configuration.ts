import type { ConfigurationConfig } from '../config/index.js'
import { addMirrorConfiguration } from '../mirror-config/index.js'
import { createLogger, parseLogLevel, type Logger } from '../observability/logger.js'
import { basicAuthHeader, loadBasicAuth } from '../registry/basic-auth.js'

export type { ConfigurationConfig } from '../config/index.js'

export interface ConfigurationIo {
  log?: Logger
  /** Directory with `username` and `password`; default env SPEGEL_BASIC_AUTH_DIR, else /etc/secrets/basic-auth. */
  basicAuthDir?: string
}

const FS_FIXES: Readonly<Record<string, string>> = {
  EACCES: 'run as root, or give this user write access to the directory',
  EPERM: 'run as root, or give this user write access to the directory',
  EROFS: 'mount the containerd registry config directory (hostPath) read-write',
  ENOSPC: 'free space on the node\'s filesystem'
}

/** The failure as an operator reads it: what went wrong, the path, and what to do when we know. */
export function describeFailure (err: unknown, configPath: string): Record<string, unknown> {
  const e = err as NodeJS.ErrnoException
  const fix = e.code === undefined ? undefined : FS_FIXES[e.code]
  return {
    err: e instanceof Error ? e.message : String(err),
    path: e.path ?? configPath,
    ...(e.code === undefined ? {} : { code: e.code }),
    ...(fix === undefined ? {} : { fix })
  }
}

/**
 * `spegel configuration` (run by the DaemonSet's init container): writes containerd's hosts.toml
 * files pointing at the mirror targets, then exits. 0 on success, 1 on failure (logged as
 * `exit with error`).
 */
export async function runConfiguration (config: ConfigurationConfig, io: ConfigurationIo = {}): Promise<number> {
  const log = io.log ?? createLogger({ level: parseLogLevel(config.logLevel) ?? 'info' })
  try {
    const basicAuth = await loadBasicAuth(io.basicAuthDir ?? process.env.SPEGEL_BASIC_AUTH_DIR)
    await addMirrorConfiguration({ log }, {
      configPath: config.containerdRegistryConfigPath,
      mirroredRegistries: config.mirroredRegistries,
      mirrorTargets: config.mirrorTargets,
      resolveTags: config.resolveTags,
      prependExisting: config.prependExisting,
      ...(basicAuth === undefined ? {} : { authorization: basicAuthHeader(basicAuth) })
    })
  } catch (err) {
    log.error(describeFailure(err, config.containerdRegistryConfigPath), 'exit with error')
    return 1
  }
  log.info('exit gracefully')
  return 0
}
