import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import {
  ConfigError, parseDoctorConfig, parseRegistryConfig, parseVersionConfig,
  type DoctorConfig, type FlagValues, type ParseResult, type RegistryConfig
} from './index.js'

const PEER = '/ip4/10.0.0.5/tcp/5001/p2p/12D3KooWAsvvigG9jqjMNWMmqXph6BvszxTus6Fg6k5UZda2iKDB'

function flags (entries: Record<string, string | string[]>): FlagValues {
  return new Map(Object.entries(entries))
}

function ok<T> (result: ParseResult<T>): T {
  if (!result.ok) assert.fail(`unexpected errors: ${result.errors.map((e) => e.message).join(' | ')}`)
  return result.config
}

function errors<T> (result: ParseResult<T>): readonly ConfigError[] {
  if (result.ok) assert.fail('expected errors')
  return result.errors
}

describe('parseRegistryConfig', () => {
  it('fills Spegel defaults', () => {
    const config = ok(parseRegistryConfig(flags({ 'bootstrap-kind': 'dns', 'dns-bootstrap-domain': 'spegel-bootstrap' }), {}))
    const want: RegistryConfig = {
      logLevel: 'INFO',
      metricsAddr: { host: '', port: 9090 },
      containerdSock: '/run/containerd/containerd.sock',
      containerdSockExplicit: false,
      containerdNamespace: 'k8s.io',
      containerdContentPath: '/var/lib/containerd/io.containerd.content.v1.content',
      dataDir: '',
      routerAddr: { host: '', port: 5001 },
      registryAddr: { host: '', port: 5000 },
      mirroredRegistries: [],
      registryFilters: [],
      mirrorResolveTimeoutMs: 20,
      mirrorResolveRetries: 3,
      pullStormWaitMs: 2000,
      mirrorParallelMinBytes: 0,
      verifyRelayedBlobs: true,
      debugWebEnabled: true,
      bootstrapKind: 'dns',
      dnsBootstrapDomain: 'spegel-bootstrap',
      httpBootstrapAddr: '',
      httpBootstrapUrl: '',
      httpBootstrapCertDir: '',
      staticBootstrapPeers: [],
      routerSecretPath: '',
      containerdConfig: '/etc/containerd/config.toml',
      containerdRegistryConfigPath: '/etc/containerd/certs.d'
    }
    assert.deepEqual(config, want)
  })

  it('returns a deeply frozen object', () => {
    const config = ok(parseRegistryConfig(flags({ 'bootstrap-kind': 'static', 'static-bootstrap-peers': [PEER] }), {}))
    assert.ok(Object.isFrozen(config))
    assert.ok(Object.isFrozen(config.registryAddr))
    assert.ok(Object.isFrozen(config.staticBootstrapPeers))
    assert.ok(Object.isFrozen(config.mirroredRegistries))
  })

  it('prefers the flag over env over the default', () => {
    const env = { REGISTRY_ADDR: ':6000', METRICS_ADDR: ':7000', BOOTSTRAP_KIND: 'dns', DNS_BOOTSTRAP_DOMAIN: 'from-env' }
    const config = ok(parseRegistryConfig(flags({ 'registry-addr': ':8000' }), env))
    assert.deepEqual(config.registryAddr, { host: '', port: 8000 })
    assert.deepEqual(config.metricsAddr, { host: '', port: 7000 })
    assert.deepEqual(config.routerAddr, { host: '', port: 5001 })
    assert.equal(config.dnsBootstrapDomain, 'from-env')
  })

  it('records whether the containerd socket was given, from a flag or env', () => {
    const base = { 'bootstrap-kind': 'dns', 'dns-bootstrap-domain': 'd' }
    assert.equal(ok(parseRegistryConfig(flags(base), {})).containerdSockExplicit, false)
    // Explicit even when it equals the default: the operator asked for exactly this path.
    const fromFlag = ok(parseRegistryConfig(flags({ ...base, 'containerd-sock': '/run/containerd/containerd.sock' }), {}))
    assert.equal(fromFlag.containerdSockExplicit, true)
    const fromEnv = ok(parseRegistryConfig(flags(base), { CONTAINERD_SOCK: '/run/k3s/containerd/containerd.sock' }))
    assert.equal(fromEnv.containerdSockExplicit, true)
    assert.equal(fromEnv.containerdSock, '/run/k3s/containerd/containerd.sock')
  })

  it('fails without a bootstrap kind, in Spegel\'s words plus the fix', () => {
    const [err, ...rest] = errors(parseRegistryConfig(flags({}), {}))
    assert.equal(rest.length, 0)
    assert.ok(err instanceof ConfigError)
    assert.equal(err.code, 'CONFIG_INVALID')
    assert.equal(err.flag, '--bootstrap-kind')
    assert.ok(err.message.startsWith('unknown bootstrap kind '))
    assert.match(err.message, /set --bootstrap-kind \(env BOOTSTRAP_KIND\) to dns, http or static/)
  })

  it('rejects an unknown bootstrap kind', () => {
    const [err] = errors(parseRegistryConfig(flags({ 'bootstrap-kind': 'mdns' }), {}))
    assert.match(err?.message ?? '', /^unknown bootstrap kind mdns; set --bootstrap-kind/)
  })

  it('checks what each bootstrap kind needs', () => {
    const [dns] = errors(parseRegistryConfig(flags({ 'bootstrap-kind': 'dns' }), {}))
    assert.equal(dns?.flag, '--dns-bootstrap-domain')
    assert.match(dns?.message ?? '', /set --dns-bootstrap-domain \(env DNS_BOOTSTRAP_DOMAIN\)/)

    // Static with no peers is a one-node cluster: valid, unlike Spegel where it never gets ready.
    assert.deepEqual(ok(parseRegistryConfig(flags({ 'bootstrap-kind': 'static' }), {})).staticBootstrapPeers, [])

    const [http] = errors(parseRegistryConfig(flags({ 'bootstrap-kind': 'http' }), {}))
    assert.equal(http?.flag, '--http-bootstrap-url')
    assert.match(http?.message ?? '', /--http-bootstrap-addr/)

    ok(parseRegistryConfig(flags({ 'bootstrap-kind': 'http', 'http-bootstrap-addr': ':5002' }), {}))
    ok(parseRegistryConfig(flags({ 'bootstrap-kind': 'http', 'http-bootstrap-url': 'https://boot.example/id' }), {}))
  })

  it('reports every bad value at once, each naming its flag and source', () => {
    const result = parseRegistryConfig(
      flags({ 'bootstrap-kind': 'nope', 'registry-addr': ':70000', 'static-bootstrap-peers': ['/ip4/1.2.3.4/tcp/1'] }),
      { MIRROR_RESOLVE_TIMEOUT: 'soon', DEBUG_WEB_ENABLED: 'yes', HTTP_BOOTSTRAP_URL: 'ftp://x' }
    )
    const byFlag = new Map(errors(result).map((e) => [e.flag, e]))
    assert.deepEqual([...byFlag.keys()].sort(), [
      '--bootstrap-kind', '--debug-web-enabled', '--http-bootstrap-url', '--mirror-resolve-timeout',
      '--registry-addr', '--static-bootstrap-peers'
    ])
    const timeout = byFlag.get('--mirror-resolve-timeout')
    assert.equal(timeout?.env, 'MIRROR_RESOLVE_TIMEOUT')
    assert.match(timeout?.message ?? '', /^invalid env MIRROR_RESOLVE_TIMEOUT \(--mirror-resolve-timeout\) "soon": invalid duration "soon"; use a Go duration/)
    const addr = byFlag.get('--registry-addr')
    assert.equal(addr?.env, undefined)
    assert.match(addr?.message ?? '', /^invalid --registry-addr ":70000": port 70000 is out of range; use a port between 0 and 65535/)
  })

  it('rejects a non-positive resolve timeout and zero retries', () => {
    const base = { 'bootstrap-kind': 'dns', 'dns-bootstrap-domain': 'd' }
    const [timeout] = errors(parseRegistryConfig(flags({ ...base, 'mirror-resolve-timeout': '0s' }), {}))
    assert.equal(timeout?.flag, '--mirror-resolve-timeout')
    const [retries] = errors(parseRegistryConfig(flags({ ...base, 'mirror-resolve-retries': '0' }), {}))
    assert.equal(retries?.flag, '--mirror-resolve-retries')
  })

  it('treats an empty env var as a value, as go-arg does', () => {
    const base = { 'bootstrap-kind': 'dns', 'dns-bootstrap-domain': 'd' }
    assert.deepEqual(ok(parseRegistryConfig(flags(base), { CONTAINERD_CONTENT_PATH: '' })).containerdContentPath, '')
    assert.deepEqual(ok(parseRegistryConfig(flags(base), { MIRRORED_REGISTRIES: '' })).mirroredRegistries, [])
    const [retries] = errors(parseRegistryConfig(flags(base), { MIRROR_RESOLVE_RETRIES: '' }))
    assert.equal(retries?.env, 'MIRROR_RESOLVE_RETRIES')
  })
})

describe('parseDoctorConfig', () => {
  it('fills defaults', () => {
    const want: DoctorConfig = {
      logLevel: 'INFO',
      containerdSock: '/run/containerd/containerd.sock',
      containerdSockExplicit: false,
      containerdNamespace: 'k8s.io',
      containerdContentPath: '/var/lib/containerd/io.containerd.content.v1.content',
      containerdConfig: '/etc/containerd/config.toml',
      containerdRegistryConfigPath: '/etc/containerd/certs.d',
      registryAddr: { host: '', port: 5000 },
      routerSecretPath: '',
      output: 'text'
    }
    assert.deepEqual(ok(parseDoctorConfig(flags({}), {})), want)
  })

  it('reads flags and env', () => {
    const config = ok(parseDoctorConfig(flags({ output: 'json', 'registry-addr': ':30020' }), {
      CONTAINERD_SOCK: '/run/k3s/containerd/containerd.sock',
      CONTAINERD_CONFIG: '/var/lib/rancher/k3s/agent/etc/containerd/config.toml',
      CONTAINERD_REGISTRY_CONFIG_PATH: '/var/lib/rancher/k3s/agent/etc/containerd/certs.d',
      CONTAINERD_NAMESPACE: 'other',
      CONTAINERD_CONTENT_PATH: '/c',
      ROUTER_SECRET_PATH: '/etc/spegel/router.psk',
      LOG_LEVEL: 'debug'
    }))
    assert.equal(config.output, 'json')
    assert.equal(config.routerSecretPath, '/etc/spegel/router.psk')
    assert.deepEqual(config.registryAddr, { host: '', port: 30020 })
    assert.equal(config.containerdSockExplicit, true)
    assert.equal(config.containerdConfig, '/var/lib/rancher/k3s/agent/etc/containerd/config.toml')
    assert.equal(config.containerdRegistryConfigPath, '/var/lib/rancher/k3s/agent/etc/containerd/certs.d')
    assert.equal(config.containerdNamespace, 'other')
    assert.equal(config.containerdContentPath, '/c')
    assert.equal(config.logLevel, 'DEBUG')
  })

  it('rejects an unknown output format', () => {
    const [err] = errors(parseDoctorConfig(flags({ output: 'yaml' }), {}))
    assert.equal(err?.flag, '--output')
    assert.match(err?.message ?? '', /^unknown output format yaml; set --output to text or json/)
  })
})

describe('parseVersionConfig', () => {
  it('leaves the format to the version command', () => {
    assert.deepEqual(ok(parseVersionConfig(flags({ format: 'yaml' }), {})), { logLevel: 'INFO', format: 'yaml' })
    assert.deepEqual(ok(parseVersionConfig(flags({}), {})), { logLevel: 'INFO', format: 'text' })
  })
})
