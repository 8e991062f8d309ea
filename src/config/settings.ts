import { ConfigError, ValueError } from './errors.js'
import { parseDurationNs } from './duration.js'
import { splitHostPort, type HostPort } from './host-port.js'
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
  valueName: 'DIR',
  help: 'directory containerd uses as registry config_path (hosts.toml files)',
  parse: parseNonEmpty('path')
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
