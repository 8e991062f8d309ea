import { ConfigError, ValueError } from './errors.js'
import { parseDurationNs } from './duration.js'
import { splitHostPort, type HostPort } from './host-port.js'
import { bracketIPv6Host, registryUrlProblems, WILDCARD_REGISTRIES } from '../mirror-config/index.js'
import type { ListSetting, ScalarSetting } from './setting.js'
import {
  checkHttpUrl, checkPeerMultiaddr, checkRegex, checkRegistryUrls, parseBool, parseInteger,
  parseLogLevel, parseNonEmpty, type LogLevel
} from './values.js'

// Every setting is declared here once: flag, Spegel's env var, default, parser and help.
// The CLI builds its options from these, the config parsers resolve them.

export type BootstrapKind = 'dns' | 'http' | 'static'
export type OutputFormat = 'text' | 'json'

function hostPort (s: string): HostPort {
  return Object.freeze(splitHostPort(s))
}

function anyString (s: string): string {
  return s
}

function frozenList<T> (check: (v: string) => T) {
  return (values: readonly string[]): readonly T[] => Object.freeze(values.map(check))
}

export const BOOTSTRAP_KIND_FIX = 'set --bootstrap-kind (env BOOTSTRAP_KIND) to dns, http or static'

export const logLevel: ScalarSetting<LogLevel> = {
  kind: 'scalar',
  flag: 'log-level',
  env: 'LOG_LEVEL',
  default: 'INFO',
  valueName: 'LEVEL',
  help: 'minimum log level: DEBUG, INFO, WARN or ERROR; may be given before or after the subcommand',
  parse: parseLogLevel
}

export const metricsAddr: ScalarSetting<HostPort> = {
  kind: 'scalar',
  flag: 'metrics-addr',
  env: 'METRICS_ADDR',
  default: ':9090',
  valueName: 'ADDR',
  help: 'listen address of the metrics and debug server',
  parse: hostPort
}

export const containerdSock: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'containerd-sock',
  env: 'CONTAINERD_SOCK',
  default: '/run/containerd/containerd.sock',
  valueName: 'PATH',
  help: 'containerd gRPC socket; when not given, well-known socket paths are searched',
  parse: parseNonEmpty('socket path')
}

export const containerdNamespace: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'containerd-namespace',
  env: 'CONTAINERD_NAMESPACE',
  default: 'k8s.io',
  valueName: 'NAMESPACE',
  help: 'containerd namespace for all containerd calls',
  parse: parseNonEmpty('namespace')
}

export const containerdContentPath: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'containerd-content-path',
  env: 'CONTAINERD_CONTENT_PATH',
  default: '/var/lib/containerd/io.containerd.content.v1.content',
  valueName: 'PATH',
  help: 'containerd content store root for direct reads; empty asks containerd',
  parse: anyString
}

export const dataDir: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'data-dir',
  env: 'DATA_DIR',
  default: '',
  valueName: 'DIR',
  help: 'directory that keeps the peer identity (private.key); empty gives a new identity each start',
  parse: anyString
}

export const routerAddr: ScalarSetting<HostPort> = {
  kind: 'scalar',
  flag: 'router-addr',
  env: 'ROUTER_ADDR',
  default: ':5001',
  valueName: 'ADDR',
  help: 'listen address of the peer-to-peer router',
  parse: hostPort
}

export const registryAddr: ScalarSetting<HostPort> = {
  kind: 'scalar',
  flag: 'registry-addr',
  env: 'REGISTRY_ADDR',
  default: ':5000',
  valueName: 'ADDR',
  help: 'listen address of the registry; its port is assumed to be every peer\'s registry port',
  parse: hostPort
}

export const mirroredRegistries: ListSetting<readonly string[]> = {
  kind: 'list',
  flag: 'mirrored-registries',
  env: 'MIRRORED_REGISTRIES',
  default: [],
  valueName: 'URL...',
  help: 'registries to mirror (https://docker.io, or _default / * for all); empty means all',
  parse: (values) => Object.freeze(checkRegistryUrls(values))
}

export const registryFilters: ListSetting<readonly string[]> = {
  kind: 'list',
  flag: 'registry-filters',
  env: 'REGISTRY_FILTERS',
  default: [],
  valueName: 'REGEX...',
  help: 'regular expressions; references matching any of them are not served or advertised',
  parse: frozenList(checkRegex)
}

export const mirrorResolveTimeout: ScalarSetting<number> = {
  kind: 'scalar',
  flag: 'mirror-resolve-timeout',
  env: 'MIRROR_RESOLVE_TIMEOUT',
  default: '20ms',
  valueName: 'DURATION',
  help: 'how long to wait for a new peer when no peer fetch is in flight',
  parse: (s) => {
    const ms = parseDurationNs(s) / 1e6
    if (ms <= 0) throw new ValueError('the timeout must be positive', 'use a duration such as 20ms')
    return ms
  }
}

export const mirrorResolveRetries: ScalarSetting<number> = {
  kind: 'scalar',
  flag: 'mirror-resolve-retries',
  env: 'MIRROR_RESOLVE_RETRIES',
  default: '3',
  valueName: 'COUNT',
  help: 'number of peers to look up per request',
  parse: (s) => parseInteger(s, 1)
}

/**
 * Ours (Spegel has no such flag): a mirrored blob GET of at least this many bytes, with two or
 * more nodes holding the whole blob, is fetched from several of them at once in Range chunks
 * (src/registry/multi-peer-body.ts). 0 switches it off: one peer at a time, as Spegel.
 */
export const mirrorParallelMinSize: ScalarSetting<number> = {
  kind: 'scalar',
  flag: 'mirror-parallel-min-size',
  env: 'MIRROR_PARALLEL_MIN_SIZE',
  default: '0',
  valueName: 'BYTES',
  help: 'fetch mirrored blobs of at least this size from several peers at once (bytes, or with KiB, MiB, GiB; 0: off, one peer at a time as Spegel)',
  parse: (s) => {
    const m = /^(\d+)\s*(B|KiB|MiB|GiB)?$/.exec(s.trim())
    if (m === null) throw new ValueError('not a size', 'use a number of bytes, or one with KiB, MiB or GiB such as 32MiB; 0 switches it off')
    const unit = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m[2] as 'B' | 'KiB' | 'MiB' | 'GiB' | undefined ?? 'B']
    const bytes = Number(m[1]) * unit
    if (!Number.isSafeInteger(bytes)) throw new ValueError('the size is too large', 'use a size such as 32MiB')
    return bytes
  }
}

/**
 * Ours (Spegel has no such flag): on a blob nobody holds, how long a mirror may hold containerd's
 * request while the nodes asking for the same blob agree on one of them to fetch it upstream, and
 * the others wait for its download to show up (docs/pull-storms.md). 0 switches that off: every
 * miss is an immediate 404, as in Spegel, and content still arriving is not advertised.
 */
export const pullStormWait: ScalarSetting<number> = {
  kind: 'scalar',
  flag: 'pull-storm-wait',
  env: 'PULL_STORM_WAIT',
  default: '2s',
  valueName: 'DURATION',
  help: 'longest wait for another node\'s upstream download of a blob nobody holds yet, twice this while a live node says it is fetching it (0s: answer 404 at once, as Spegel)',
  parse: (s) => {
    const ms = parseDurationNs(s) / 1e6
    if (ms < 0) throw new ValueError('the wait must not be negative', 'use a duration such as 2s, or 0s to switch it off')
    if (ms > 60_000) throw new ValueError('the wait must be at most 1m: containerd waits on it before it may fall back to upstream', 'use a duration such as 2s')
    return ms
  }
}

/**
 * Ours (Spegel relays unchecked): whole blobs from peers are hashed as they stream and their last
 * byte is held back until they match the digest, so a corrupt or hostile peer is caught and
 * avoided before containerd sees a complete body. The hash costs about 0.6 CPU seconds per GiB
 * relayed (SHA-256); false skips it, and containerd's own check at commit remains.
 */
export const verifyRelayedBlobs: ScalarSetting<boolean> = {
  kind: 'bool',
  flag: 'verify-relayed-blobs',
  env: 'VERIFY_RELAYED_BLOBS',
  default: 'true',
  valueName: 'BOOL',
  help: 'check whole blobs relayed from peers against their digest before the last byte, and avoid a peer that sends wrong bytes (false: relay unchecked, as Spegel; containerd still checks at commit)',
  parse: parseBool
}

export const debugWebEnabled: ScalarSetting<boolean> = {
  kind: 'bool',
  flag: 'debug-web-enabled',
  env: 'DEBUG_WEB_ENABLED',
  default: 'true',
  valueName: 'BOOL',
  help: 'serve the debug web UI under /debug/web/ on the metrics address',
  parse: parseBool
}

export const bootstrapKind: ScalarSetting<BootstrapKind> = {
  kind: 'scalar',
  flag: 'bootstrap-kind',
  env: 'BOOTSTRAP_KIND',
  default: '',
  valueName: 'KIND',
  help: 'how to find the first peers: dns, http or static; required',
  parse: (s) => {
    if (s === 'dns' || s === 'http' || s === 'static') return s
    // Spegel's wording, kept so scripts matching on it still work; the fix is ours.
    const why = s === '' ? ': --bootstrap-kind is required' : ''
    throw new ConfigError(`unknown bootstrap kind ${s}${why}; ${BOOTSTRAP_KIND_FIX}`, { flag: '--bootstrap-kind', fix: BOOTSTRAP_KIND_FIX })
  }
}

export const dnsBootstrapDomain: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'dns-bootstrap-domain',
  env: 'DNS_BOOTSTRAP_DOMAIN',
  default: '',
  valueName: 'DOMAIN',
  help: 'for --bootstrap-kind dns: name whose A/AAAA records are the peers (a headless Service)',
  parse: (s) => s.trim()
}

export const httpBootstrapAddr: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'http-bootstrap-addr',
  env: 'HTTP_BOOTSTRAP_ADDR',
  default: '',
  valueName: 'ADDR',
  help: 'for --bootstrap-kind http: address to serve this node\'s /id on; empty serves nothing',
  parse: (s) => {
    if (s !== '') splitHostPort(s)
    return s
  }
}

export const httpBootstrapUrl: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'http-bootstrap-url',
  env: 'HTTP_BOOTSTRAP_URL',
  default: '',
  valueName: 'URL',
  help: 'for --bootstrap-kind http: URL that returns the peers to bootstrap from',
  parse: (s) => s === '' ? s : checkHttpUrl(s)
}

export const httpBootstrapCertDir: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'http-bootstrap-cert-dir',
  env: 'HTTP_BOOTSTRAP_CERT_DIR',
  default: '',
  valueName: 'DIR',
  help: 'for --bootstrap-kind http: directory with optional ca.crt, tls.crt and tls.key',
  parse: anyString
}

export const staticBootstrapPeers: ListSetting<readonly string[]> = {
  kind: 'list',
  flag: 'static-bootstrap-peers',
  env: 'STATIC_BOOTSTRAP_PEERS',
  default: [],
  valueName: 'MULTIADDR...',
  help: 'for --bootstrap-kind static: peer multiaddrs ending in /p2p/<peer-id>',
  parse: frozenList(checkPeerMultiaddr)
}

export const routerSecretPath: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'router-secret-path',
  env: 'ROUTER_SECRET_PATH',
  default: '',
  valueName: 'PATH',
  help: 'file holding a secret shared by all peers of the router; empty disables it',
  parse: anyString
}

export const containerdConfig: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'containerd-config',
  env: 'CONTAINERD_CONFIG',
  default: '/etc/containerd/config.toml',
  valueName: 'PATH',
  help: 'containerd\'s main configuration file',
  parse: parseNonEmpty('path')
}

export const containerdRegistryConfigPath: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'containerd-registry-config-path',
  env: 'CONTAINERD_REGISTRY_CONFIG_PATH',
  default: '/etc/containerd/certs.d',
  valueName: 'DIR[:DIR...]',
  help: 'containerd\'s registry config_path (hosts.toml files): one directory, or a list in containerd\'s syntax (a:b) as containerd 2.2 defaults to',
  parse: parseNonEmpty('path')
}

export const MIRROR_TARGETS_FIX = 'set --mirror-targets (env MIRROR_TARGETS) to this node\'s spegel first, e.g. http://10.0.0.7:30020, then any other mirrors'

/**
 * IPv6 targets get brackets (see bracketIPv6Host) before they are checked. Spegel brackets only the first
 * target; any later one needing it would be an invalid URL, so bracketing all changes nothing else.
 */
function checkMirrorTarget (raw: string): string {
  const url = bracketIPv6Host(raw)
  if (WILDCARD_REGISTRIES.includes(url)) throw new ValueError('wildcard registries are not allowed', 'list mirror URLs such as http://10.0.0.7:30020')
  const problems = registryUrlProblems(url)
  if (problems.length > 0) throw new ValueError(`invalid mirror target ${JSON.stringify(raw)}: ${problems.join(', ')}`, 'use http(s)://host:port with nothing after the port, e.g. http://10.0.0.7:30020')
  return url
}

export const mirrorTargets: ListSetting<readonly string[]> = {
  kind: 'list',
  flag: 'mirror-targets',
  env: 'MIRROR_TARGETS',
  default: [],
  valueName: 'URL...',
  help: 'mirrors written into hosts.toml in the order containerd tries them; the first is this node\'s spegel; required',
  parse: (values) => {
    if (values.length === 0) throw new ConfigError(`--mirror-targets is required; ${MIRROR_TARGETS_FIX}`, { flag: '--mirror-targets', fix: MIRROR_TARGETS_FIX })
    return Object.freeze(values.map(checkMirrorTarget))
  }
}

export const resolveTags: ScalarSetting<boolean> = {
  kind: 'bool',
  flag: 'resolve-tags',
  env: 'RESOLVE_TAGS',
  default: 'true',
  valueName: 'BOOL',
  help: 'let containerd resolve tags through the mirrors (the resolve capability)',
  parse: parseBool
}

export const prependExisting: ScalarSetting<boolean> = {
  kind: 'bool',
  flag: 'prepend-existing',
  env: 'PREPEND_EXISTING',
  default: 'false',
  valueName: 'BOOL',
  help: 'keep the hosts of an existing hosts.toml after the mirror targets',
  parse: parseBool
}

function requiredHostPort (flag: string, env: string, example: string) {
  return (s: string): HostPort => {
    if (s === '') {
      const fix = `set --${flag} (env ${env}) to host:port, e.g. ${example}`
      throw new ConfigError(`--${flag} is required; ${fix}`, { flag: `--${flag}`, fix })
    }
    return hostPort(s)
  }
}

export const cleanupAddr: ScalarSetting<HostPort> = {
  kind: 'scalar',
  flag: 'addr',
  env: 'ADDR',
  default: '',
  valueName: 'ADDR',
  help: 'listen address of the probe server that reports the cleanup done (GET /readyz); required',
  parse: requiredHostPort('addr', 'ADDR', ':8080')
}

export const probeEndpoint: ScalarSetting<HostPort> = {
  kind: 'scalar',
  flag: 'probe-endpoint',
  env: 'PROBE_ENDPOINT',
  default: '',
  valueName: 'HOST:PORT',
  help: 'name and port of the cleanup pods\' probe servers; every address the name resolves to is probed; required',
  parse: (s) => {
    const value = requiredHostPort('probe-endpoint', 'PROBE_ENDPOINT', 'spegel-cleanup.spegel.svc.cluster.local:8080')(s)
    if (value.host === '') throw new ValueError('the host is empty', 'give a name or address to probe, e.g. spegel-cleanup.spegel.svc.cluster.local:8080')
    return value
  }
}

export const threshold: ScalarSetting<number> = {
  kind: 'scalar',
  flag: 'threshold',
  env: 'THRESHOLD',
  default: '3',
  valueName: 'COUNT',
  help: 'consecutive successful probe rounds needed',
  parse: (s) => parseInteger(s, 1)
}

export const period: ScalarSetting<number> = {
  kind: 'scalar',
  flag: 'period',
  env: 'PERIOD',
  default: '2s',
  valueName: 'DURATION',
  help: 'time between probe rounds',
  parse: (s) => {
    const ms = parseDurationNs(s) / 1e6
    if (ms <= 0) throw new ValueError('the period must be positive', 'use a duration such as 2s')
    return ms
  }
}

function outputFormat (flag: string) {
  return (s: string): OutputFormat => {
    if (s === 'text' || s === 'json') return s
    const fix = `set --${flag} to text or json`
    throw new ConfigError(`unknown output format ${s}; ${fix}`, { flag: `--${flag}`, fix })
  }
}

export const doctorOutput: ScalarSetting<OutputFormat> = {
  kind: 'scalar',
  flag: 'output',
  default: 'text',
  valueName: 'FORMAT',
  help: 'report format: text or json',
  parse: outputFormat('output')
}

/**
 * Unvalidated on purpose: Spegel treats an unknown version format as a runtime failure
 * (exit 1), not an argument error, and `version` reports it itself.
 */
export const versionFormat: ScalarSetting<string> = {
  kind: 'scalar',
  flag: 'format',
  default: 'text',
  valueName: 'FORMAT',
  help: 'output format: text or json',
  parse: anyString
}
