import { ConfigError } from './errors.js'
import type { HostPort } from './host-port.js'
import { resolveSetting, type Env, type FlagValues, type Resolved, type Setting } from './setting.js'
import * as s from './settings.js'
import type { LogLevel } from './values.js'

export interface RegistryConfig {
  readonly logLevel: LogLevel
  readonly metricsAddr: HostPort
  readonly containerdSock: string
  /** True when --containerd-sock or CONTAINERD_SOCK was given; only then skip searching well-known paths. */
  readonly containerdSockExplicit: boolean
  readonly containerdNamespace: string
  /** Empty: discover through containerd introspection. */
  readonly containerdContentPath: string
  /** Empty: new random identity each start. */
  readonly dataDir: string
  readonly routerAddr: HostPort
  readonly registryAddr: HostPort
  /** As given (URLs or `_default`/`*`), validated; empty means all registries. */
  readonly mirroredRegistries: readonly string[]
  /** Regular expression sources, validated. */
  readonly registryFilters: readonly string[]
  readonly mirrorResolveTimeoutMs: number
  readonly mirrorResolveRetries: number
  readonly pullStormWaitMs: number
  /** `--mirror-parallel-min-size` in bytes; 0: off. */
  readonly mirrorParallelMinBytes: number
  /** `--verify-relayed-blobs`: hash whole blobs relayed from peers. */
  readonly verifyRelayedBlobs: boolean
  readonly debugWebEnabled: boolean
  readonly bootstrapKind: s.BootstrapKind
  readonly dnsBootstrapDomain: string
  /** `host:port` as given (validated), or empty to serve no /id endpoint. Split it with parseHostPort. */
  readonly httpBootstrapAddr: string
  /** Full http(s) URL (validated) or empty. */
  readonly httpBootstrapUrl: string
  readonly httpBootstrapCertDir: string
  /** Multiaddrs ending in /p2p/<peer-id> (shape validated). */
  readonly staticBootstrapPeers: readonly string[]
  /** Empty: no router secret. */
  readonly routerSecretPath: string
  /** containerd's config.toml, read to tell whether CRI pulls can reach the mirror (as doctor does). */
  readonly containerdConfig: string
  /** Where `spegel configuration` writes on this node (one directory or a list), for the same check. */
  readonly containerdRegistryConfigPath: string
}

export interface DoctorConfig {
  readonly logLevel: LogLevel
  readonly containerdSock: string
  readonly containerdSockExplicit: boolean
  readonly containerdNamespace: string
  readonly containerdContentPath: string
  readonly containerdConfig: string
  readonly containerdRegistryConfigPath: string
  readonly registryAddr: HostPort
  /** The router key file the node uses (same setting as registry); empty: none, which doctor warns about. */
  readonly routerSecretPath: string
  readonly output: s.OutputFormat
}

export interface ConfigurationConfig {
  readonly logLevel: LogLevel
  readonly containerdRegistryConfigPath: string
  /** As given (URLs or `_default`/`*`), validated; empty means all registries (`_default`). */
  readonly mirroredRegistries: readonly string[]
  /** Validated URLs in order, IPv6 hosts bracketed; never empty. */
  readonly mirrorTargets: readonly string[]
  readonly resolveTags: boolean
  readonly prependExisting: boolean
}

export interface CleanupConfig {
  readonly logLevel: LogLevel
  /** Probe server listen address. */
  readonly addr: HostPort
  readonly containerdRegistryConfigPath: string
}

export interface CleanupWaitConfig {
  readonly logLevel: LogLevel
  /** Host (never empty) and port of the cleanup probe servers. */
  readonly probeEndpoint: HostPort
  readonly threshold: number
  readonly periodMs: number
}

export interface VersionConfig {
  readonly logLevel: LogLevel
  /** Not validated here: `version` reports an unknown format itself, as Spegel does (exit 1). */
  readonly format: string
}

export type ParseResult<T> =
  | { readonly ok: true, readonly config: T }
  | { readonly ok: false, readonly errors: readonly ConfigError[] }

type SettingMap = Record<string, Setting<unknown>>
type Values<M extends SettingMap> = { [K in keyof M]: M[K] extends Setting<infer T> ? T : never }

export const registrySettings = {
  logLevel: s.logLevel,
  metricsAddr: s.metricsAddr,
  containerdSock: s.containerdSock,
  containerdNamespace: s.containerdNamespace,
  containerdContentPath: s.containerdContentPath,
  dataDir: s.dataDir,
  routerAddr: s.routerAddr,
  registryAddr: s.registryAddr,
  mirroredRegistries: s.mirroredRegistries,
  registryFilters: s.registryFilters,
  mirrorResolveTimeoutMs: s.mirrorResolveTimeout,
  mirrorResolveRetries: s.mirrorResolveRetries,
  pullStormWaitMs: s.pullStormWait,
  mirrorParallelMinBytes: s.mirrorParallelMinSize,
  verifyRelayedBlobs: s.verifyRelayedBlobs,
  debugWebEnabled: s.debugWebEnabled,
  bootstrapKind: s.bootstrapKind,
  dnsBootstrapDomain: s.dnsBootstrapDomain,
  httpBootstrapAddr: s.httpBootstrapAddr,
  httpBootstrapUrl: s.httpBootstrapUrl,
  httpBootstrapCertDir: s.httpBootstrapCertDir,
  staticBootstrapPeers: s.staticBootstrapPeers,
  routerSecretPath: s.routerSecretPath,
  containerdConfig: s.containerdConfig,
  containerdRegistryConfigPath: s.containerdRegistryConfigPath
} as const satisfies SettingMap

export const doctorSettings = {
  logLevel: s.logLevel,
  containerdSock: s.containerdSock,
  containerdNamespace: s.containerdNamespace,
  containerdContentPath: s.containerdContentPath,
  containerdConfig: s.containerdConfig,
  containerdRegistryConfigPath: s.containerdRegistryConfigPath,
  registryAddr: s.registryAddr,
  routerSecretPath: s.routerSecretPath,
  output: s.doctorOutput
} as const satisfies SettingMap

export const configurationSettings = {
  logLevel: s.logLevel,
  containerdRegistryConfigPath: s.containerdRegistryConfigPath,
  mirroredRegistries: s.mirroredRegistries,
  mirrorTargets: s.mirrorTargets,
  resolveTags: s.resolveTags,
  prependExisting: s.prependExisting
} as const satisfies SettingMap

export const cleanupSettings = {
  logLevel: s.logLevel,
  addr: s.cleanupAddr,
  containerdRegistryConfigPath: s.containerdRegistryConfigPath
} as const satisfies SettingMap

export const cleanupWaitSettings = {
  logLevel: s.logLevel,
  probeEndpoint: s.probeEndpoint,
  threshold: s.threshold,
  periodMs: s.period
} as const satisfies SettingMap

export const versionSettings = {
  logLevel: s.logLevel,
  format: s.versionFormat
} as const satisfies SettingMap

/** Settings that belong to the program rather than one subcommand. */
export const globalSettings = [s.logLevel] as const

interface ResolvedAll<M extends SettingMap> {
  values: Partial<Values<M>>
  sources: Partial<Record<keyof M, Resolved<unknown>['source']>>
  errors: ConfigError[]
}

function resolveAll<M extends SettingMap> (settings: M, flags: FlagValues, env: Env): ResolvedAll<M> {
  const values: Partial<Values<M>> = {}
  const sources: Partial<Record<keyof M, Resolved<unknown>['source']>> = {}
  const errors: ConfigError[] = []
  for (const key of Object.keys(settings) as Array<keyof M & string>) {
    const setting = settings[key] as M[typeof key]
    try {
      const resolved = resolveSetting(setting, flags, env)
      values[key] = resolved.value as Values<M>[typeof key]
      sources[key] = resolved.source
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      errors.push(err)
    }
  }
  return { values, sources, errors }
}

function isComplete<M extends SettingMap> (settings: M, values: Partial<Values<M>>): values is Values<M> {
  return Object.keys(settings).every((key) => key in values)
}

function bootstrapErrors (c: Values<typeof registrySettings>): ConfigError[] {
  switch (c.bootstrapKind) {
    case 'dns':
      if (c.dnsBootstrapDomain === '') {
        const fix = 'set --dns-bootstrap-domain (env DNS_BOOTSTRAP_DOMAIN) to a name that resolves to the Spegel pods, e.g. spegel-bootstrap.spegel.svc.cluster.local'
        return [new ConfigError(`--dns-bootstrap-domain is required with --bootstrap-kind dns; ${fix}`, { flag: '--dns-bootstrap-domain', fix })]
      }
      return []
    case 'static':
      // No peers is a one-node cluster; the router is then ready on its own.
      return []
    case 'http':
      if (c.httpBootstrapUrl === '' && c.httpBootstrapAddr === '') {
        const fix = 'set --http-bootstrap-url (env HTTP_BOOTSTRAP_URL) to the URL that lists peers, and/or --http-bootstrap-addr (env HTTP_BOOTSTRAP_ADDR) to serve this node\'s /id'
        return [new ConfigError(`--bootstrap-kind http needs --http-bootstrap-url or --http-bootstrap-addr; ${fix}`, { flag: '--http-bootstrap-url', fix })]
      }
      return []
  }
}

/**
 * Resolves the `registry` subcommand's settings (flag > env > default) and checks them together.
 * Returns every problem found, not just the first, so one run shows all fixes.
 */
export function parseRegistryConfig (flags: FlagValues, env: Env): ParseResult<RegistryConfig> {
  const { values, sources, errors } = resolveAll(registrySettings, flags, env)
  if (errors.length > 0 || !isComplete(registrySettings, values)) return { ok: false, errors }
  const cross = bootstrapErrors(values)
  if (cross.length > 0) return { ok: false, errors: cross }
  const config: RegistryConfig = { ...values, containerdSockExplicit: sources.containerdSock !== 'default' }
  return { ok: true, config: Object.freeze(config) }
}

export function parseDoctorConfig (flags: FlagValues, env: Env): ParseResult<DoctorConfig> {
  const { values, sources, errors } = resolveAll(doctorSettings, flags, env)
  if (errors.length > 0 || !isComplete(doctorSettings, values)) return { ok: false, errors }
  const config: DoctorConfig = { ...values, containerdSockExplicit: sources.containerdSock !== 'default' }
  return { ok: true, config: Object.freeze(config) }
}

function parseSimple<M extends SettingMap> (settings: M, flags: FlagValues, env: Env): ParseResult<Values<M>> {
  const { values, errors } = resolveAll(settings, flags, env)
  if (errors.length > 0 || !isComplete(settings, values)) return { ok: false, errors }
  return { ok: true, config: Object.freeze({ ...values }) }
}

export function parseConfigurationConfig (flags: FlagValues, env: Env): ParseResult<ConfigurationConfig> {
  return parseSimple(configurationSettings, flags, env)
}

export function parseCleanupConfig (flags: FlagValues, env: Env): ParseResult<CleanupConfig> {
  return parseSimple(cleanupSettings, flags, env)
}

export function parseCleanupWaitConfig (flags: FlagValues, env: Env): ParseResult<CleanupWaitConfig> {
  return parseSimple(cleanupWaitSettings, flags, env)
}

export function parseVersionConfig (flags: FlagValues, env: Env): ParseResult<VersionConfig> {
  const { values, errors } = resolveAll(versionSettings, flags, env)
  if (errors.length > 0 || !isComplete(versionSettings, values)) return { ok: false, errors }
  return { ok: true, config: Object.freeze({ ...values }) }
}
