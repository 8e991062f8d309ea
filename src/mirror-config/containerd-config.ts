import { parse } from 'smol-toml'
import { isMultiDirectory, literalRootTop, splitConfigPath } from './config-path.js'

// Pure analysis of containerd's config.toml: where CRI reads registry mirror files from, which
// pull path (transfer service or local pull) CRI takes for this config and version, and the
// traps that make a hosts.toml mirror silently unused. No I/O: the caller reads the files
// (containerd-config-file.ts does) and passes the texts. Every rule below names the containerd
// source it follows; docs/containerd-2.md has the file paths, tags and line numbers. These rules
// come from reading containerd's source: containerd 2.x was not run to confirm them.

export type FindingSeverity = 'error' | 'warning' | 'info'

export type FindingId =
  | 'config-invalid'
  | 'config-missing'
  | 'config-version-unsupported'
  | 'version-unknown'
  | 'imports-not-read'
  | 'cri-plugin-fails'
  | 'config-path-unset'
  | 'config-path-default'
  | 'transfer-multi-dir-config-path'
  | 'mirror-path-mismatch'
  | 'mirror-path-shadowed'
  | 'discard-unpacked-layers'
  | 'pull-path'
  | 'transfer-config-path-unused'

export interface ContainerdConfigFinding {
  /** Stable identifier, for metrics, logs and tests. */
  readonly id: FindingId
  readonly severity: FindingSeverity
  /** What was found and what it does, one paragraph. */
  readonly message: string
  /** What to do; may span lines (TOML snippets). Empty for purely informational findings. */
  readonly fix: string
  readonly details?: Readonly<Record<string, string>>
}

export interface ConfigFileText {
  readonly path: string
  readonly text: string
}

export interface AnalyzeContainerdConfigInput {
  /** The main config file's text; undefined when the file does not exist (containerd then runs on its defaults). */
  readonly configText?: string | undefined
  /** Where the text came from, for messages; default /etc/containerd/config.toml. */
  readonly configFile?: string
  /**
   * The imported files in containerd's load order (the main file's `imports`, globs expanded,
   * then their own imports). Undefined when the caller did not read them.
   */
  readonly imports?: readonly ConfigFileText[]
  /** containerd's version as its Version API reports it (`v2.2.1`, `1.6.20~ds1`); undefined when unknown. */
  readonly version?: string | undefined
  /** spegel's --containerd-registry-config-path: one directory or a list (`a:b`). */
  readonly mirrorConfigPath?: string
}

export type PullPath = 'transfer' | 'local'

/** The CRI image settings that matter for mirroring, as containerd would run with them. */
export interface CriImageSettings {
  /** containerd version the analysis assumed (parsed from the input, else inferred). */
  readonly daemon: ContainerdVersion
  readonly isDaemonVersionKnown: boolean
  /** The main file's `version` (1 when absent, as containerd reads it). */
  readonly configVersion: number
  /** Effective config_path ('' = none). */
  readonly configPath: string
  readonly configPathSource: 'file' | 'default' | 'unset'
  /** Dotted TOML key config_path was read from, when it came from a file. */
  readonly configPathKey?: string
  readonly pullPath: PullPath
  /** Why CRI takes that pull path, in containerd's terms. */
  readonly pullPathReason: string
  readonly discardUnpackedLayers: boolean
  readonly discardUnpackedLayersKey?: string
  /** Registry hosts under inline `mirrors`. */
  readonly mirrors: readonly string[]
}

export interface ContainerdConfigAnalysis {
  readonly findings: ContainerdConfigFinding[]
  /** Undefined when the config could not be parsed (containerd would not start). */
  readonly settings?: CriImageSettings
}

export const DEFAULT_CONTAINERD_CONFIG = '/etc/containerd/config.toml'
/** containerd 2.2's built-in config_path on Linux when neither config_path nor inline mirrors are set. */
export const CONTAINERD_22_DEFAULT_CONFIG_PATH = '/etc/containerd/certs.d:/etc/docker/certs.d'

// ---------------------------------------------------------------------------------------------
// versions

export interface ContainerdVersion {
  readonly major: number
  readonly minor: number
  readonly patch: number
}

/** `1.6.20~ds1`, `v2.1.4`, `2.2.0-rc.1`, `2.3` → numbers; undefined when it does not start with digits. */
export function parseContainerdVersion (version: string): ContainerdVersion | undefined {
  const m = /^v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(version.trim())
  if (m === null) return undefined
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3] ?? 0) }
}

function atLeast (v: ContainerdVersion, major: number, minor: number, patch = 0): boolean {
  if (v.major !== major) return v.major > major
  if (v.minor !== minor) return v.minor > minor
  return v.patch >= patch
}

function versionText (v: ContainerdVersion, isKnown: boolean): string {
  return isKnown ? `containerd ${v.major}.${v.minor}.${v.patch}` : `containerd ${v.major}.${v.minor} (assumed)`
}

/** Highest config `version` a daemon accepts (version/version.go ConfigVersion: 3 in 2.0-2.2, 4 from 2.3). */
function maxConfigVersion (v: ContainerdVersion): number {
  if (v.major < 2) return 2
  return atLeast(v, 2, 3) ? 4 : 3
}

// ---------------------------------------------------------------------------------------------
// TOML access

type Table = Record<string, unknown>

function isTable (value: unknown): value is Table {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
}

function declaredVersion (doc: Table): number {
  const v = doc.version
  if (typeof v === 'number') return v
  if (typeof v === 'bigint') return Number(v)
  return 1
}

function pluginKey (plugin: string): string {
  return /^[A-Za-z0-9_-]+$/.test(plugin) ? `plugins.${plugin}` : `plugins."${plugin}"`
}

function dotted (plugin: string, ...keys: string[]): string {
  return [pluginKey(plugin), ...keys].join('.')
}

const CRI_IMAGES = 'io.containerd.cri.v1.images'
const CRI_V2 = 'io.containerd.grpc.v1.cri'
const CRI_V1 = 'cri'
const TRANSFER = 'io.containerd.transfer.v1.local'

/** One setting with where it was written. */
interface Sourced<T> {
  readonly value: T
  readonly key: string
  readonly file: string
}

/** A CRI image plugin table normalised to containerd 2.x (version 3) fields, each with its origin. */
interface CriTable {
  configPath?: Sourced<string>
  mirrors?: Sourced<string[]>
  configs?: Sourced<string[]>
  configsTls?: Sourced<string[]>
  auths?: Sourced<string[]>
  discardUnpackedLayers?: Sourced<boolean>
  disableSnapshotAnnotations?: Sourced<boolean>
  maxConcurrentDownloads?: Sourced<number>
  imagePullWithSyncFs?: Sourced<boolean>
  useLocalImagePull?: Sourced<boolean>
}

function tableKeys (t: unknown): string[] {
  return isTable(t) ? Object.keys(t) : []
}

/** Registry settings of one CRI table (`registry` sub-table of `plugin`). */
function readRegistry (out: CriTable, plugin: string, registry: unknown, file: string, sub: string[]): void {
  if (!isTable(registry)) return
  const base = [...sub, 'registry']
  if (typeof registry.config_path === 'string') out.configPath = { value: registry.config_path, key: dotted(plugin, ...base, 'config_path'), file }
  // Decoding a TOML table into containerd's map fields: an empty table is an empty map, which
  // neither triggers the local-pull fallback nor the mirrors/config_path conflict (len() == 0).
  if (isTable(registry.mirrors)) out.mirrors = { value: tableKeys(registry.mirrors), key: dotted(plugin, ...base, 'mirrors'), file }
  if (isTable(registry.configs)) {
    out.configs = { value: tableKeys(registry.configs), key: dotted(plugin, ...base, 'configs'), file }
    const tls = Object.entries(registry.configs).filter(([, c]) => isTable(c) && c.tls !== undefined).map(([h]) => h)
    out.configsTls = { value: tls, key: dotted(plugin, ...base, 'configs'), file }
  }
  if (isTable(registry.auths)) out.auths = { value: tableKeys(registry.auths), key: dotted(plugin, ...base, 'auths'), file }
}

function readBool (t: Table, name: string, plugin: string, sub: string[], file: string): Sourced<boolean> | undefined {
  const v = t[name]
  return typeof v === 'boolean' ? { value: v, key: dotted(plugin, ...sub, name), file } : undefined
}

function readNumber (t: Table, name: string, plugin: string, sub: string[], file: string): Sourced<number> | undefined {
  const v = t[name]
  if (typeof v === 'number') return { value: v, key: dotted(plugin, ...sub, name), file }
  if (typeof v === 'bigint') return { value: Number(v), key: dotted(plugin, ...sub, name), file }
  return undefined
}

function assign<K extends keyof CriTable> (out: CriTable, key: K, value: CriTable[K] | undefined): void {
  if (value !== undefined) out[key] = value
}

/** The containerd 1.x CRI plugin table (`plugins."io.containerd.grpc.v1.cri"` or version 1's `plugins.cri`). */
function readV2Cri (plugin: string, t: Table, file: string): CriTable {
  const out: CriTable = {}
  readRegistry(out, plugin, t.registry, file, [])
  assign(out, 'maxConcurrentDownloads', readNumber(t, 'max_concurrent_downloads', plugin, [], file))
  assign(out, 'imagePullWithSyncFs', readBool(t, 'image_pull_with_sync_fs', plugin, [], file))
  if (isTable(t.containerd)) {
    assign(out, 'discardUnpackedLayers', readBool(t.containerd, 'discard_unpacked_layers', plugin, ['containerd'], file))
    assign(out, 'disableSnapshotAnnotations', readBool(t.containerd, 'disable_snapshot_annotations', plugin, ['containerd'], file))
  }
  return out
}

/** containerd 2.x's `plugins."io.containerd.cri.v1.images"` table. */
function readV3Images (t: Table, file: string): CriTable {
  const out: CriTable = {}
  readRegistry(out, CRI_IMAGES, t.registry, file, [])
  assign(out, 'maxConcurrentDownloads', readNumber(t, 'max_concurrent_downloads', CRI_IMAGES, [], file))
  assign(out, 'imagePullWithSyncFs', readBool(t, 'image_pull_with_sync_fs', CRI_IMAGES, [], file))
  assign(out, 'discardUnpackedLayers', readBool(t, 'discard_unpacked_layers', CRI_IMAGES, [], file))
  assign(out, 'disableSnapshotAnnotations', readBool(t, 'disable_snapshot_annotations', CRI_IMAGES, [], file))
  assign(out, 'useLocalImagePull', readBool(t, 'use_local_image_pull', CRI_IMAGES, [], file))
  return out
}

interface ParsedFile {
  readonly path: string
  readonly version: number
  /** Plugin tables by plugin id, after containerd's per-file migration for the daemon's version. */
  readonly cri?: CriTable
  readonly transferConfigPath?: Sourced<string>
  /** Plugin ids this file defines (a later file's table replaces an earlier one's whole table). */
  readonly plugins: ReadonlySet<string>
  readonly hasImports: boolean
}

/**
 * containerd 2.x migrates every file on its own before merging (cmd/containerd/server/config/
 * config.go LoadConfigWithPlugins): version 1 plugin names become URIs (`cri` →
 * `io.containerd.grpc.v1.cri`, v1Migrate), then the CRI images plugin's configMigration moves the
 * version 2 keys into `io.containerd.cri.v1.images` (plugins/cri/images/plugin.go migrateConfig:
 * registry, max_concurrent_downloads, image_pull_with_sync_fs, and from `.containerd`
 * snapshotter, disable_snapshot_annotations, discard_unpacked_layers), overriding what a
 * version 2 file also wrote in the new table. containerd 1.x reads the version 2 (or 1) table only.
 */
function parseFile (file: ConfigFileText, daemon: ContainerdVersion): ParsedFile {
  const doc = parse(file.text) as Table
  const version = declaredVersion(doc)
  const plugins = isTable(doc.plugins) ? doc.plugins : {}
  const ids = new Set(Object.keys(plugins).map((id) => (version <= 1 && id === CRI_V1 ? CRI_V2 : id)))
  const hasImports = Array.isArray(doc.imports) && doc.imports.length > 0
  const transfer = plugins[TRANSFER]
  const transferConfigPath = isTable(transfer) && typeof transfer.config_path === 'string' && transfer.config_path !== ''
    ? { value: transfer.config_path, key: dotted(TRANSFER, 'config_path'), file: file.path }
    : undefined
  const v2Id = version <= 1 ? CRI_V1 : CRI_V2
  const v2Table = plugins[v2Id]
  let cri: CriTable | undefined
  if (daemon.major < 2) {
    // 1.x knows no io.containerd.cri.v1.images plugin: its settings there are ignored.
    if (isTable(v2Table)) cri = readV2Cri(v2Id, v2Table, file.path)
  } else {
    const images = plugins[CRI_IMAGES]
    if (isTable(images)) cri = readV3Images(images, file.path)
    if (version < 3 && isTable(v2Table)) {
      const migrated = readV2Cri(v2Id, v2Table, file.path)
      cri = { ...(cri ?? {}), ...migrated }
      if (migrated.configPath !== undefined && migrated.configPath.value === '' && atLeast(daemon, 2, 2) && !atLeast(daemon, 2, 2, 2)) {
        // v2.2.0-v2.2.1 migrateConfig fills an empty config_path with the 2.2 default.
        cri.configPath = { ...migrated.configPath, value: CONTAINERD_22_DEFAULT_CONFIG_PATH }
      }
      ids.add(CRI_IMAGES)
    }
  }
  return {
    path: file.path,
    version,
    ...(cri === undefined ? {} : { cri }),
    ...(transferConfigPath === undefined ? {} : { transferConfigPath }),
    plugins: ids,
    hasImports
  }
}

// ---------------------------------------------------------------------------------------------
// analysis

function restartText (): string {
  return 'then restart containerd (systemctl restart containerd; on k3s/RKE2 restart k3s/rke2)'
}

function criTableName (daemon: ContainerdVersion, configVersion: number): string {
  if (daemon.major >= 2) return pluginKey(CRI_IMAGES)
  return pluginKey(configVersion <= 1 ? CRI_V1 : CRI_V2)
}

function registryToml (daemon: ContainerdVersion, configVersion: number, configPath: string): string {
  return `[${criTableName(daemon, configVersion)}.registry]\n  config_path = ${JSON.stringify(configPath)}`
}

function discardToml (daemon: ContainerdVersion, configVersion: number): string {
  const table = daemon.major >= 2 ? pluginKey(CRI_IMAGES) : `${criTableName(daemon, configVersion)}.containerd`
  return `[${table}]\n  discard_unpacked_layers = false`
}

function useLocalToml (): string {
  return `[${pluginKey(CRI_IMAGES)}]\n  use_local_image_pull = true`
}

/** containerd 2.1+'s automatic fallback to the local pull path (internal/cri/config/config.go CheckLocalImagePullConfigs), first reason first. */
function localPullReasons (cri: CriTable): Array<{ reason: string, key?: string }> {
  const reasons: Array<{ reason: string, key?: string }> = []
  const withKey = (reason: string, s: Sourced<unknown> | undefined): { reason: string, key?: string } =>
    s === undefined ? { reason } : { reason, key: s.key }
  if (cri.disableSnapshotAnnotations?.value === false) reasons.push(withKey('disable_snapshot_annotations = false', cri.disableSnapshotAnnotations))
  if (cri.discardUnpackedLayers?.value === true) reasons.push(withKey('discard_unpacked_layers = true', cri.discardUnpackedLayers))
  if ((cri.mirrors?.value.length ?? 0) > 0) reasons.push(withKey('inline registry mirrors', cri.mirrors))
  if ((cri.configs?.value.length ?? 0) > 0) reasons.push(withKey('inline registry configs', cri.configs))
  if ((cri.auths?.value.length ?? 0) > 0) reasons.push(withKey('inline registry auths', cri.auths))
  const max = cri.maxConcurrentDownloads?.value ?? 3
  if (max !== 3) reasons.push(withKey(`max_concurrent_downloads = ${max} (not 3)`, cri.maxConcurrentDownloads))
  if (cri.imagePullWithSyncFs?.value === true) reasons.push(withKey('image_pull_with_sync_fs = true', cri.imagePullWithSyncFs))
  return reasons
}

function sameDir (a: string, b: string): boolean {
  const norm = (p: string): string => (p.length > 1 ? p.replace(/\/+$/, '') : p)
  return norm(a) === norm(b)
}

/**
 * Analyses containerd's config for a registry mirror. Handles config versions 1-4, imports
 * (texts supplied by the caller), a missing file (containerd's defaults for that version), and
 * tells which CRI pull path the config takes.
 */
export function describeContainerdConfig (input: AnalyzeContainerdConfigInput): ContainerdConfigAnalysis {
  const file = input.configFile ?? DEFAULT_CONTAINERD_CONFIG
  const findings: ContainerdConfigFinding[] = []
  const parsedVersion = input.version === undefined ? undefined : parseContainerdVersion(input.version)

  // Parse the main file first: its version is needed to guess an unknown daemon version.
  let mainDoc: Table | undefined
  if (input.configText !== undefined) {
    try {
      mainDoc = parse(input.configText) as Table
    } catch (err) {
      findings.push(invalid(file, err))
      return { findings }
    }
  }
  const configVersion = mainDoc === undefined ? 1 : declaredVersion(mainDoc)
  const isDaemonVersionKnown = parsedVersion !== undefined
  // Unknown: a version 3+ file can only be containerd 2.x; assume the newest behaviour (2.2+'s
  // default config_path, the transfer service). A version 1/2 file is assumed to be 1.x.
  // A version 2 file that writes the 2.x CRI table (AKS and ACK do) is for containerd 2.x too.
  const hasV3Table = mainDoc !== undefined && isTable(mainDoc.plugins) && isTable(mainDoc.plugins[CRI_IMAGES])
  const daemon: ContainerdVersion = parsedVersion ?? (configVersion >= 3 || hasV3Table || mainDoc === undefined ? { major: 2, minor: 2, patch: 2 } : { major: 1, minor: 7, patch: 0 })
  const daemonText = versionText(daemon, isDaemonVersionKnown)
  if (!isDaemonVersionKnown) {
    findings.push({
      id: 'version-unknown',
      severity: 'info',
      message: `containerd's version is unknown${input.version === undefined ? '' : ` ("${input.version}" is not a version)`}; assuming ${daemon.major}.${daemon.minor} from ${mainDoc === undefined ? 'the missing config file' : hasV3Table && configVersion < 3 ? `its ${pluginKey(CRI_IMAGES)} table` : `config version ${configVersion}`}. Which pull path CRI takes depends on the version.`,
      fix: 'let spegel reach containerd\'s socket so it can ask containerd for its version'
    })
  }

  if (configVersion > maxConfigVersion(daemon) && daemon.major >= 2) {
    findings.push({
      id: 'config-version-unsupported',
      severity: 'error',
      message: `${file} declares version = ${configVersion}, but ${daemonText} accepts at most ${maxConfigVersion(daemon)}: containerd refuses to start ("expected containerd config version equal to or less than ${maxConfigVersion(daemon)}")`,
      fix: `set version = ${maxConfigVersion(daemon)} in ${file} (containerd config migrate prints a converted file)`,
      details: { configVersion: String(configVersion), containerd: daemonText }
    })
    return { findings }
  }
  if (configVersion >= 3 && daemon.major < 2) {
    findings.push({
      id: 'config-version-unsupported',
      severity: 'error',
      message: `${file} is a version ${configVersion} (containerd 2.x) config, but ${daemonText} reads only versions 1 and 2: its CRI settings under [${pluginKey(CRI_IMAGES)}] are ignored`,
      fix: `write the CRI settings in the version 2 layout ([${pluginKey(CRI_V2)}]) with version = 2, ${restartText()}`,
      details: { configVersion: String(configVersion), containerd: daemonText }
    })
  }

  // Per-file parsing and containerd's merge: an imported file's plugin table replaces the whole
  // table of the same plugin (cmd/containerd/server/config/config.go mergeConfig).
  const files: ConfigFileText[] = input.configText === undefined ? [] : [{ path: file, text: input.configText }, ...(input.imports ?? [])]
  let cri: CriTable = {}
  let transferConfigPath: Sourced<string> | undefined
  for (const f of files) {
    let parsed: ParsedFile
    try {
      parsed = parseFile(f, daemon)
    } catch (err) {
      findings.push(invalid(f.path, err))
      return { findings }
    }
    const criId = daemon.major >= 2 ? CRI_IMAGES : CRI_V2
    if (parsed.plugins.has(criId)) cri = parsed.cri ?? {}
    if (parsed.plugins.has(TRANSFER)) transferConfigPath = parsed.transferConfigPath
  }
  if (input.imports === undefined && mainDoc !== undefined && Array.isArray(mainDoc.imports) && mainDoc.imports.length > 0) {
    findings.push({
      id: 'imports-not-read',
      severity: 'info',
      message: `${file} imports ${mainDoc.imports.map(String).join(', ')}, which were not read: their plugin tables replace the main file's and may change the result`,
      fix: 'pass the imported files too (spegel reads them when it can read the main file\'s directory)'
    })
  }

  if (input.configText === undefined) {
    findings.push({
      id: 'config-missing',
      severity: 'info',
      message: `${file} does not exist: ${daemonText} runs on its built-in defaults (${atLeast(daemon, 2, 2) ? `config_path = "${CONTAINERD_22_DEFAULT_CONFIG_PATH}"` : 'no config_path: CRI reads no hosts.toml'}${daemon.major >= 2 && atLeast(daemon, 2, 1) ? ', pulls through the transfer service' : ''})`,
      fix: '',
      details: { file }
    })
  }

  // Effective config_path (containerd's defaults by version).
  const mirrors = cri.mirrors?.value ?? []
  let configPath = cri.configPath?.value ?? ''
  let configPathSource: CriImageSettings['configPathSource'] = cri.configPath === undefined || cri.configPath.value === '' ? 'unset' : 'file'
  const is22Early = atLeast(daemon, 2, 2) && !atLeast(daemon, 2, 2, 2)
  if (daemon.major >= 2 && atLeast(daemon, 2, 2)) {
    if (is22Early && cri.configPath === undefined) {
      // v2.2.0-v2.2.1: the default lives in DefaultImageConfig (internal/cri/config/config_unix.go:36),
      // so a file that does not mention config_path keeps it, inline mirrors or not.
      configPath = CONTAINERD_22_DEFAULT_CONFIG_PATH
      configPathSource = 'default'
    } else if (!is22Early && configPath === '' && mirrors.length === 0) {
      // v2.2.2+: plugins/cri/images/plugin.go (lines 68-72 in v2.2.2-v2.3.4) sets it at init when both are empty.
      configPath = CONTAINERD_22_DEFAULT_CONFIG_PATH
      configPathSource = 'default'
    }
  }
  const dirs = splitConfigPath(configPath)

  // Pull path.
  let pullPath: PullPath
  let pullPathReason: string
  let pullPathKey: string | undefined
  if (daemon.major < 2 || !atLeast(daemon, 2, 1)) {
    pullPath = 'local'
    pullPathReason = `${daemonText} has no transfer-service pull in CRI`
  } else if (cri.useLocalImagePull?.value === true) {
    pullPath = 'local'
    pullPathReason = 'use_local_image_pull = true'
    pullPathKey = cri.useLocalImagePull.key
  } else {
    const reasons = localPullReasons(cri)
    const first = reasons[0]
    if (first === undefined) {
      pullPath = 'transfer'
      pullPathReason = `the default of ${daemonText} (use_local_image_pull = false)`
    } else {
      pullPath = 'local'
      pullPathReason = `containerd falls back to local pull because of ${first.reason}`
      pullPathKey = first.key
    }
  }

  const discard = cri.discardUnpackedLayers
  const settings: CriImageSettings = {
    daemon,
    isDaemonVersionKnown,
    configVersion,
    configPath,
    configPathSource,
    ...(cri.configPath === undefined || configPathSource !== 'file' ? {} : { configPathKey: cri.configPath.key }),
    pullPath,
    pullPathReason,
    discardUnpackedLayers: discard?.value ?? false,
    ...(discard === undefined ? {} : { discardUnpackedLayersKey: discard.key }),
    mirrors
  }
  // The layout fixes are written in: the file's own, or the recommended one for a new file.
  const layoutVersion = mainDoc === undefined ? (daemon.major >= 2 ? 3 : 2) : configVersion
  const registryKey = cri.configPath?.key ?? `${criTableName(daemon, layoutVersion)}.registry.config_path`
  const mirrorDir = input.mirrorConfigPath
  const mirrorFirst = mirrorDir === undefined ? undefined : splitConfigPath(mirrorDir).find((d) => d !== '')
  const wantedSingle = mirrorFirst ?? '/etc/containerd/certs.d'

  // CRI refuses to load: mirrors next to config_path (both families), configs.tls next to it (1.x).
  const conflicts: string[] = []
  if (mirrors.length > 0 && configPath !== '') conflicts.push(`${cri.mirrors?.key ?? 'registry.mirrors'} (${mirrors.join(', ')})`)
  const tls = cri.configsTls?.value ?? []
  if (daemon.major < 2 && tls.length > 0 && configPath !== '') conflicts.push(`${cri.configsTls?.key ?? 'registry.configs'}.<host>.tls (${tls.join(', ')})`)
  if (conflicts.length > 0) {
    const becauseDefault = configPathSource === 'default'
    findings.push({
      id: 'cri-plugin-fails',
      severity: 'error',
      message: `${conflicts.join(' and ')} next to config_path = "${configPath}"${becauseDefault ? ` (containerd ${daemon.major}.${daemon.minor}.${daemon.patch}'s built-in default)` : ''}: containerd's CRI plugin refuses to load ("\`${daemon.major < 2 && mirrors.length === 0 ? 'configs.tls' : 'mirrors'}\` cannot be set when \`config_path\` is provided"), so this node cannot pull or run pods`,
      fix: `remove ${conflicts.join(' and ')} from ${file} and express each registry as ${wantedSingle}/<registry>/hosts.toml${becauseDefault ? ' (or upgrade to containerd 2.2.2+, which keeps no default config_path next to inline mirrors)' : ''}, ${restartText()}`,
      details: { configPath, file }
    })
  }

  if (configPath === '') {
    findings.push({
      id: 'config-path-unset',
      severity: 'error',
      message: `config_path is not set${input.configText === undefined ? ' (no config file)' : ` in ${file}`}: ${daemonText}'s CRI reads no hosts.toml${mirrors.length > 0 ? ' (it uses the inline mirrors instead)' : ''}, so pulls never reach the mirror`,
      fix: `${mirrors.length > 0 ? `move the inline mirrors (${cri.mirrors?.key ?? 'registry.mirrors'}) into ${wantedSingle}/<registry>/hosts.toml files and delete them (containerd refuses config_path next to them), then ` : ''}add to ${file} (merge into the table if it exists), ${restartText()}:\n${registryToml(daemon, layoutVersion, mirrorDir ?? wantedSingle)}`,
      details: { file }
    })
  } else if (configPathSource === 'default') {
    findings.push({
      id: 'config-path-default',
      severity: 'info',
      message: `config_path is not set in ${input.configText === undefined ? 'any config file' : file}; ${daemonText} uses its built-in default "${configPath}"`,
      fix: '',
      details: { configPath }
    })
  }

  // The trap: the transfer service reads a multi-directory config_path as one directory.
  if (pullPath === 'transfer' && isMultiDirectory(configPath)) {
    const handled = mirrorDir !== undefined && mirrorDir === configPath
    const single = dirs.find((d) => d !== '') ?? wantedSingle
    const withoutRestart = `without a restart: also write the mirror files under the literal directory "${configPath}" (i.e. ${configPath}/<registry>/hosts.toml), which the transfer service reads: spegel configuration --containerd-registry-config-path '${configPath}' does it; in a pod, mount that path from the host (its top directory is "${literalRootTop(configPath) ?? configPath}"); this follows containerd's source and was not run against containerd 2.x here`
    const withRestart = `or, with a restart: give config_path a single directory, or set use_local_image_pull = true, ${restartText()}:\n${registryToml(daemon, layoutVersion, single)}\n(or)\n${useLocalToml()}`
    findings.push({
      id: 'transfer-multi-dir-config-path',
      severity: handled ? 'warning' : 'error',
      message: `${daemonText} pulls through the transfer service, which reads config_path "${configPath}"${configPathSource === 'default' ? ' (the built-in default)' : ''} as ONE directory and looks for ${configPath}/<registry>/hosts.toml: every hosts.toml in ${dirs.filter((d) => d !== '').join(' and ')} is ignored and pulls go straight to the upstream registry, without any log line (containerd issues 12415, 12636, 12808; fixes not merged as of v2.4.0-beta.0)${handled ? '. spegel\'s --containerd-registry-config-path is the same list, so spegel configuration also writes the literal directory the transfer service reads' : ''}`,
      fix: handled ? withRestart : `${withoutRestart}.\n${withRestart}`,
      details: { configPath, literalDir: configPath, pullPath, containerd: daemonText, ...(configPathSource === 'default' ? { source: 'default' } : { key: registryKey }) }
    })
  }

  // Does containerd read the directory spegel writes?
  if (mirrorDir !== undefined && configPath !== '' && mirrorFirst !== undefined) {
    const containerdDirs = dirs.filter((d) => d !== '')
    const index = containerdDirs.findIndex((d) => sameDir(d, mirrorFirst))
    const isTransferSingle = pullPath === 'transfer' && !isMultiDirectory(configPath)
    if (index < 0 || (isTransferSingle && !sameDir(configPath, mirrorFirst))) {
      findings.push({
        id: 'mirror-path-mismatch',
        severity: 'warning',
        message: `containerd reads mirror files from "${configPath}" but spegel writes them to "${mirrorDir}" (--containerd-registry-config-path)`,
        fix: `pass --containerd-registry-config-path '${configPath}' (env CONTAINERD_REGISTRY_CONFIG_PATH), or set ${registryKey} = ${JSON.stringify(mirrorDir)} and ${restartText().replace(/^then /, '')}`,
        details: { configPath, mirrorConfigPath: mirrorDir }
      })
    } else if (index > 0 && pullPath === 'local') {
      findings.push({
        id: 'mirror-path-shadowed',
        severity: 'info',
        message: `spegel writes to "${mirrorFirst}", directory ${index + 1} of config_path "${configPath}": for each registry containerd's local pull uses the first directory holding <registry> or _default, so a file in ${containerdDirs.slice(0, index).join(', ')} wins over spegel's`,
        fix: `pass --containerd-registry-config-path '${configPath}' so spegel writes into the first directory`,
        details: { configPath, mirrorConfigPath: mirrorDir }
      })
    }
  }

  if (discard?.value === true) {
    const trap = daemon.major >= 2 && atLeast(daemon, 2, 1) && cri.useLocalImagePull?.value !== true && isMultiDirectory(configPath) &&
      localPullReasons(cri).every((r) => r.reason === 'discard_unpacked_layers = true')
    findings.push({
      id: 'discard-unpacked-layers',
      severity: 'error',
      message: `${discard.key} = true: containerd deletes layer blobs once they are unpacked, so this node has no layers to share`,
      fix: `set ${discard.key} = false in ${discard.file}, ${restartText()}; images pulled meanwhile keep no layers until they are pulled again:\n${discardToml(daemon, layoutVersion)}${trap ? `\nCAUTION: on ${daemonText} this also moves CRI pulls to the transfer service, which ignores the mirror with config_path "${configPath}" (several directories): set a single-directory config_path or use_local_image_pull = true in the same edit:\n${useLocalToml()}` : ''}`,
      details: { key: discard.key, file: discard.file }
    })
  }

  findings.push({
    id: 'pull-path',
    severity: 'info',
    message: `CRI pulls ${pullPath === 'transfer' ? 'go through the transfer service' : 'use the local pull path'} (${pullPathReason})${pullPath === 'local' ? `, which searches every directory of config_path in order` : ', which reads config_path as one directory'}`,
    fix: '',
    details: { pullPath, reason: pullPathReason, containerd: daemonText, ...(pullPathKey === undefined ? {} : { key: pullPathKey }) }
  })

  if (transferConfigPath !== undefined) {
    findings.push({
      id: 'transfer-config-path-unused',
      severity: 'info',
      message: `${transferConfigPath.key} = "${transferConfigPath.value}" has no effect on CRI pulls: the transfer plugin stores it (plugins/transfer/plugin.go) but nothing reads it; CRI passes its own registry config_path`,
      fix: `set the CRI registry config_path instead (${registryKey})`,
      details: { key: transferConfigPath.key }
    })
  }

  return { findings, settings }
}

function invalid (file: string, err: unknown): ContainerdConfigFinding {
  const first = ((err as Error).message ?? String(err)).split('\n')[0] ?? ''
  return {
    id: 'config-invalid',
    severity: 'error',
    message: `cannot parse ${file}: ${first}: containerd refuses to start with it`,
    fix: `fix the TOML syntax in ${file} (containerd config dump shows what the running daemon loaded)`,
    details: { file }
  }
}

/** The findings only; see describeContainerdConfig for the effective settings as well. */
export function analyzeContainerdConfig (input: AnalyzeContainerdConfigInput): ContainerdConfigFinding[] {
  return describeContainerdConfig(input).findings
}
