import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { runCli, type CliHandlers } from './program.js'
import type { CleanupConfig, CleanupWaitConfig, ConfigurationConfig, DoctorConfig, RegistryConfig } from '../config/index.js'

const PEER_A = '/ip4/10.0.0.5/tcp/5001/p2p/12D3KooWAsvvigG9jqjMNWMmqXph6BvszxTus6Fg6k5UZda2iKDB'
const PEER_B = '/ip6/fd00::7/tcp/5001/p2p/12D3KooWAsvvigG9jqjMNWMmqXph6BvszxTus6Fg6k5UZda2iKDB'
const DNS = ['--bootstrap-kind', 'dns', '--dns-bootstrap-domain', 'spegel-bootstrap.spegel.svc.cluster.local']

interface Run {
  code: number
  stdout: string
  stderr: string
  registry: RegistryConfig[]
  doctor: DoctorConfig[]
  configuration: ConfigurationConfig[]
  cleanup: CleanupConfig[]
  cleanupWait: CleanupWaitConfig[]
}

/** Runs the CLI with handlers that record the config they receive (the CLI's seam). */
async function run (argv: string[], env: NodeJS.ProcessEnv = {}, handlerCode = 0): Promise<Run> {
  const result: Run = { code: -1, stdout: '', stderr: '', registry: [], doctor: [], configuration: [], cleanup: [], cleanupWait: [] }
  const handlers: CliHandlers = {
    registry: async (config) => { result.registry.push(config); return handlerCode },
    doctor: async (config) => { result.doctor.push(config); return handlerCode },
    configuration: async (config) => { result.configuration.push(config); return handlerCode },
    cleanup: async (config) => { result.cleanup.push(config); return handlerCode },
    cleanupWait: async (config) => { result.cleanupWait.push(config); return handlerCode }
  }
  result.code = await runCli(argv, env, handlers, {
    stdout: (s) => { result.stdout += s },
    stderr: (s) => { result.stderr += s }
  })
  return result
}

async function registryConfig (argv: string[], env: NodeJS.ProcessEnv = {}): Promise<RegistryConfig> {
  const r = await run(['registry', ...argv], env)
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.registry.length, 1)
  const [config] = r.registry
  assert.ok(config !== undefined)
  return config
}

async function usageError (argv: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const r = await run(argv, env)
  assert.equal(r.code, 2, `expected exit 2, got ${r.code}; stderr: ${r.stderr}`)
  assert.equal(r.registry.length + r.doctor.length + r.configuration.length + r.cleanup.length + r.cleanupWait.length, 0, 'handler must not run')
  assert.match(r.stderr, /^error: /m)
  assert.match(r.stderr, /--help' for usage\)/)
  return r.stderr
}

// Every `registry` setting: flag, env var, a non-default raw value, the field and its parsed value.
const REGISTRY_FLAGS: Array<[flag: string, env: string, raw: string, field: keyof RegistryConfig, want: unknown]> = [
  ['--metrics-addr', 'METRICS_ADDR', '127.0.0.1:9091', 'metricsAddr', { host: '127.0.0.1', port: 9091 }],
  ['--containerd-sock', 'CONTAINERD_SOCK', '/run/k3s/containerd/containerd.sock', 'containerdSock', '/run/k3s/containerd/containerd.sock'],
  ['--containerd-namespace', 'CONTAINERD_NAMESPACE', 'custom', 'containerdNamespace', 'custom'],
  ['--containerd-content-path', 'CONTAINERD_CONTENT_PATH', '/data/content', 'containerdContentPath', '/data/content'],
  ['--data-dir', 'DATA_DIR', '/var/lib/spegel', 'dataDir', '/var/lib/spegel'],
  ['--router-addr', 'ROUTER_ADDR', '[::]:5101', 'routerAddr', { host: '::', port: 5101 }],
  ['--registry-addr', 'REGISTRY_ADDR', '0.0.0.0:5100', 'registryAddr', { host: '0.0.0.0', port: 5100 }],
  ['--mirrored-registries', 'MIRRORED_REGISTRIES', 'https://docker.io', 'mirroredRegistries', ['https://docker.io']],
  ['--registry-filters', 'REGISTRY_FILTERS', ':latest$', 'registryFilters', [':latest$']],
  ['--mirror-resolve-timeout', 'MIRROR_RESOLVE_TIMEOUT', '1m30s', 'mirrorResolveTimeoutMs', 90_000],
  ['--mirror-resolve-retries', 'MIRROR_RESOLVE_RETRIES', '5', 'mirrorResolveRetries', 5],
  ['--mirror-parallel-min-size', 'MIRROR_PARALLEL_MIN_SIZE', '32MiB', 'mirrorParallelMinBytes', 32 * 1024 * 1024],
  ['--verify-relayed-blobs', 'VERIFY_RELAYED_BLOBS', 'false', 'verifyRelayedBlobs', false],
  ['--debug-web-enabled', 'DEBUG_WEB_ENABLED', 'false', 'debugWebEnabled', false],
  ['--dns-bootstrap-domain', 'DNS_BOOTSTRAP_DOMAIN', 'other.svc', 'dnsBootstrapDomain', 'other.svc'],
  ['--http-bootstrap-addr', 'HTTP_BOOTSTRAP_ADDR', ':5002', 'httpBootstrapAddr', ':5002'],
  ['--http-bootstrap-url', 'HTTP_BOOTSTRAP_URL', 'https://boot.example/id', 'httpBootstrapUrl', 'https://boot.example/id'],
  ['--http-bootstrap-cert-dir', 'HTTP_BOOTSTRAP_CERT_DIR', '/etc/spegel/tls', 'httpBootstrapCertDir', '/etc/spegel/tls'],
  ['--static-bootstrap-peers', 'STATIC_BOOTSTRAP_PEERS', PEER_A, 'staticBootstrapPeers', [PEER_A]],
  ['--router-secret-path', 'ROUTER_SECRET_PATH', '/etc/spegel/secret', 'routerSecretPath', '/etc/spegel/secret'],
  ['--containerd-config', 'CONTAINERD_CONFIG', '/host/etc/containerd/config.toml', 'containerdConfig', '/host/etc/containerd/config.toml'],
  ['--containerd-registry-config-path', 'CONTAINERD_REGISTRY_CONFIG_PATH', '/etc/containerd/certs.d:/etc/docker/certs.d', 'containerdRegistryConfigPath', '/etc/containerd/certs.d:/etc/docker/certs.d']
]

describe('runCli registry: every flag', () => {
  for (const [flag, env, raw, field, want] of REGISTRY_FLAGS) {
    // DNS bootstrap is fixed below, so the dns domain case must not be overridden by it.
    const bootstrap = field === 'dnsBootstrapDomain' ? ['--bootstrap-kind', 'dns'] : DNS

    it(`${flag} from argv (space form)`, async () => {
      const config = await registryConfig([...bootstrap, flag, raw])
      assert.deepEqual(config[field], want)
    })
    it(`${flag} from argv (= form)`, async () => {
      const config = await registryConfig([`${flag}=${raw}`, ...bootstrap])
      assert.deepEqual(config[field], want)
    })
    it(`${flag} from env ${env}`, async () => {
      const config = await registryConfig(bootstrap, { [env]: raw })
      assert.deepEqual(config[field], want)
    })
    it(`${flag} beats ${env}`, async () => {
      const defaults = await registryConfig(DNS)
      assert.notDeepEqual(defaults[field], want, 'the test value must differ from what is used otherwise')
      const config = await registryConfig([...bootstrap, flag, raw], { [env]: raw === 'false' ? 'true' : 'junk-from-env' })
      assert.deepEqual(config[field], want)
    })
  }

  it('--bootstrap-kind from argv and from BOOTSTRAP_KIND', async () => {
    assert.equal((await registryConfig(['--bootstrap-kind', 'static', '--static-bootstrap-peers', PEER_A])).bootstrapKind, 'static')
    assert.equal((await registryConfig([], { BOOTSTRAP_KIND: 'http', HTTP_BOOTSTRAP_ADDR: ':5002' })).bootstrapKind, 'http')
    assert.equal((await registryConfig(['--bootstrap-kind=http', '--http-bootstrap-addr', ':5002'], { BOOTSTRAP_KIND: 'static' })).bootstrapKind, 'http')
  })

  it('records an explicit containerd socket only when one was given', async () => {
    assert.equal((await registryConfig(DNS)).containerdSockExplicit, false)
    assert.equal((await registryConfig([...DNS, '--containerd-sock', '/run/containerd/containerd.sock'])).containerdSockExplicit, true)
    assert.equal((await registryConfig(DNS, { CONTAINERD_SOCK: '/x.sock' })).containerdSockExplicit, true)
  })
})

describe('runCli registry: lists', () => {
  it('takes several space-separated values after one flag', async () => {
    const config = await registryConfig(['--mirrored-registries', 'https://docker.io', 'https://ghcr.io', 'http://foo.bar:5000', ...DNS])
    assert.deepEqual(config.mirroredRegistries, ['https://docker.io', 'https://ghcr.io', 'http://foo.bar:5000'])
  })

  it('appends when a list flag is repeated', async () => {
    const config = await registryConfig([...DNS, '--registry-filters', '^docker.io', '--log-level', 'DEBUG', '--registry-filters=:latest$', '--registry-filters', 'x$', 'y$'])
    assert.deepEqual(config.registryFilters, ['^docker.io', ':latest$', 'x$', 'y$'])
  })

  it('reads env lists as CSV', async () => {
    const config = await registryConfig(['--bootstrap-kind', 'static'], {
      MIRRORED_REGISTRIES: 'https://docker.io,https://ghcr.io',
      REGISTRY_FILTERS: '"a{1,2}",b',
      STATIC_BOOTSTRAP_PEERS: `${PEER_A},${PEER_B}`
    })
    assert.deepEqual(config.mirroredRegistries, ['https://docker.io', 'https://ghcr.io'])
    assert.deepEqual(config.registryFilters, ['a{1,2}', 'b'])
    assert.deepEqual(config.staticBootstrapPeers, [PEER_A, PEER_B])
  })

  it('a list flag beats the env list entirely, even with no values', async () => {
    const env = { MIRRORED_REGISTRIES: 'https://docker.io,https://ghcr.io' }
    assert.deepEqual((await registryConfig(['--mirrored-registries', 'https://quay.io', ...DNS], env)).mirroredRegistries, ['https://quay.io'])
    assert.deepEqual((await registryConfig(['--mirrored-registries', ...DNS], env)).mirroredRegistries, [])
  })

  it('keeps a comma inside a flag value (no CSV splitting on the command line)', async () => {
    const config = await registryConfig([...DNS, '--registry-filters', 'a{1,2}'])
    assert.deepEqual(config.registryFilters, ['a{1,2}'])
  })
})

describe('runCli registry: booleans', () => {
  const cases: Array<[string[], NodeJS.ProcessEnv, boolean]> = [
    [[], {}, true],
    [['--debug-web-enabled'], { DEBUG_WEB_ENABLED: 'false' }, true],
    [['--debug-web-enabled=false'], {}, false],
    [['--debug-web-enabled=true'], { DEBUG_WEB_ENABLED: 'false' }, true],
    [['--debug-web-enabled=0'], {}, false],
    // go-arg would reject the separate value; accepting it is friendlier and unambiguous here.
    [['--debug-web-enabled', 'false'], {}, false],
    [[], { DEBUG_WEB_ENABLED: 'false' }, false],
    [[], { DEBUG_WEB_ENABLED: 'FALSE' }, false],
    [[], { DEBUG_WEB_ENABLED: '1' }, true]
  ]
  for (const [argv, env, want] of cases) {
    it(`${JSON.stringify(argv)} with ${JSON.stringify(env)} → ${want}`, async () => {
      assert.equal((await registryConfig([...DNS, ...argv], env)).debugWebEnabled, want)
    })
  }

  it('rejects a non-boolean', async () => {
    const stderr = await usageError(['registry', ...DNS, '--debug-web-enabled=maybe'])
    assert.match(stderr, /error: invalid --debug-web-enabled "maybe": .*use true or false/)
  })
})

describe('runCli: global --log-level', () => {
  const cases: Array<[string[], NodeJS.ProcessEnv, string]> = [
    [['registry', ...DNS], {}, 'INFO'],
    [['--log-level', 'debug', 'registry', ...DNS], {}, 'DEBUG'],
    [['--log-level=warn', 'registry', ...DNS], {}, 'WARN'],
    [['registry', ...DNS, '--log-level', 'Error'], {}, 'ERROR'],
    [['registry', '--log-level=DEBUG', ...DNS], {}, 'DEBUG'],
    [['registry', ...DNS], { LOG_LEVEL: 'debug' }, 'DEBUG'],
    [['registry', ...DNS, '--log-level', 'WARN'], { LOG_LEVEL: 'debug' }, 'WARN']
  ]
  for (const [argv, env, want] of cases) {
    it(`${argv.filter((a) => a.includes('log')).join(' ') || 'default'} ${JSON.stringify(env)} → ${want}`, async () => {
      const r = await run(argv, env)
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.registry[0]?.logLevel, want)
    })
  }

  it('rejects an unknown level, naming the flag', async () => {
    const stderr = await usageError(['registry', ...DNS, '--log-level', 'trace'])
    assert.match(stderr, /error: invalid --log-level "trace": .*use DEBUG, INFO, WARN or ERROR/)
    const fromEnv = await usageError(['registry', ...DNS], { LOG_LEVEL: 'verbose' })
    assert.match(fromEnv, /error: invalid env LOG_LEVEL \(--log-level\) "verbose"/)
  })
})

describe('runCli: argument errors exit 2 and name the flag', () => {
  it('unknown flag', async () => {
    const stderr = await usageError(['registry', ...DNS, '--bogus-flag', 'x'])
    assert.match(stderr, /error: unknown option '--bogus-flag'/)
    assert.match(stderr, /run 'spegel registry --help' for usage/)
  })

  it('suggests the flag that was probably meant', async () => {
    const stderr = await usageError(['registry', ...DNS, '--metrics-adr', ':1'])
    assert.match(stderr, /unknown option '--metrics-adr'/)
    assert.match(stderr, /Did you mean --metrics-addr\?/)
  })

  it('unknown flag before the subcommand', async () => {
    const stderr = await usageError(['--verbose', 'registry', ...DNS])
    assert.match(stderr, /unknown option '--verbose'/)
  })

  it('a registry-only flag on doctor is unknown there', async () => {
    const stderr = await usageError(['doctor', '--mirrored-registries', 'https://docker.io'])
    assert.match(stderr, /unknown option '--mirrored-registries'/)
  })

  it('missing value', async () => {
    const stderr = await usageError(['registry', ...DNS, '--registry-addr'])
    assert.match(stderr, /--registry-addr <ADDR>' argument missing/)
  })

  it('stray positional argument', async () => {
    const stderr = await usageError(['registry', ...DNS, 'extra'])
    assert.match(stderr, /too many arguments for 'registry'/)
  })

  it('missing bootstrap kind', async () => {
    const stderr = await usageError(['registry'])
    assert.match(stderr, /^error: unknown bootstrap kind .*set --bootstrap-kind \(env BOOTSTRAP_KIND\) to dns, http or static$/m)
  })

  it('unknown bootstrap kind', async () => {
    const stderr = await usageError(['registry', '--bootstrap-kind', 'mdns'])
    assert.match(stderr, /^error: unknown bootstrap kind mdns; set --bootstrap-kind/m)
  })

  it('kind-specific requirements', async () => {
    assert.match(await usageError(['registry', '--bootstrap-kind', 'dns']), /--dns-bootstrap-domain is required/)
    assert.match(await usageError(['registry', '--bootstrap-kind', 'http']), /needs --http-bootstrap-url or --http-bootstrap-addr/)
    assert.match(await usageError(['registry', '--bootstrap-kind', 'static', '--static-bootstrap-peers', '/ip4/10.0.0.5/tcp/5001']),
      /invalid --static-bootstrap-peers .*does not end in \/p2p\/<peer-id>/)
  })

  it('bad duration, from argv and env', async () => {
    assert.match(await usageError(['registry', ...DNS, '--mirror-resolve-timeout', '20']),
      /error: invalid --mirror-resolve-timeout "20": missing unit in duration "20"; use a Go duration/)
    assert.match(await usageError(['registry', ...DNS], { MIRROR_RESOLVE_TIMEOUT: 'fast' }),
      /error: invalid env MIRROR_RESOLVE_TIMEOUT \(--mirror-resolve-timeout\) "fast": invalid duration/)
  })

  it('bad addresses', async () => {
    assert.match(await usageError(['registry', ...DNS, '--registry-addr', ':65536']), /invalid --registry-addr ":65536": port 65536 is out of range/)
    assert.match(await usageError(['registry', ...DNS, '--router-addr', '::5001']), /invalid --router-addr "::5001": too many colons; wrap IPv6 addresses in brackets/)
    assert.match(await usageError(['registry', ...DNS], { METRICS_ADDR: '9090' }), /invalid env METRICS_ADDR \(--metrics-addr\) "9090": missing port/)
    assert.match(await usageError(['registry', ...DNS, '--http-bootstrap-addr', 'x']), /invalid --http-bootstrap-addr "x": missing port/)
  })

  it('bad mirrored registry and filter', async () => {
    assert.match(await usageError(['registry', ...DNS, '--mirrored-registries', 'docker.io']), /invalid --mirrored-registries "docker.io"/)
    assert.match(await usageError(['registry', ...DNS, '--registry-filters', '(']), /invalid --registry-filters "\(": invalid regular expression/)
  })

  it('lists every error at once', async () => {
    const stderr = await usageError(['registry', '--registry-addr', ':99999', '--mirror-resolve-retries', 'x'])
    assert.match(stderr, /--registry-addr/)
    assert.match(stderr, /--mirror-resolve-retries/)
    assert.match(stderr, /unknown bootstrap kind/)
  })

  it('unknown subcommand name', async () => {
    const stderr = await usageError(['serve'])
    assert.match(stderr, /unknown command 'serve'/)
    const r = await run(['help', 'serve'])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /^error: unknown command 'serve'$/m)
  })
})

describe('runCli: help and subcommand selection', () => {
  it('-h and --help exit 0 with usage on stdout', async () => {
    for (const argv of [['--help'], ['-h'], ['help'], ['registry', '--help'], ['registry', '-h'], ['help', 'registry'], ['doctor', '--help'], ['version', '-h']]) {
      const r = await run(argv)
      assert.equal(r.code, 0, argv.join(' '))
      assert.match(r.stdout, /Usage: spegel/)
      assert.equal(r.registry.length + r.doctor.length, 0)
    }
    // Commander wraps help to the terminal width; compare with the wrapping undone.
    const registryHelp = (await run(['registry', '--help'])).stdout.replace(/\s+/g, ' ')
    assert.match(registryHelp, /--mirror-resolve-timeout <DURATION>/)
    assert.match(registryHelp, /MIRROR_RESOLVE_TIMEOUT, default 20ms/)
    assert.match(registryHelp, /--log-level/)
  })

  it('no subcommand prints usage and fails with `unknown subcommand`, exit 1', async () => {
    for (const [argv, env] of [[[], {}], [['--log-level', 'DEBUG'], {}]] as const) {
      const r = await run([...argv], env)
      assert.equal(r.code, 1)
      assert.match(r.stderr, /Usage: spegel/)
      assert.match(r.stderr, /^error: unknown subcommand$/m)
    }
  })

  it('returns the handler\'s exit code', async () => {
    assert.equal((await run(['registry', ...DNS], {}, 1)).code, 1)
    assert.equal((await run(['doctor'], {}, 3)).code, 3)
  })

  it('lets a handler failure propagate', async () => {
    const failing: CliHandlers = {
      registry: async () => { throw new Error('boom') },
      doctor: async () => 0,
      configuration: async () => 0,
      cleanup: async () => 0,
      cleanupWait: async () => 0
    }
    await assert.rejects(runCli(['registry', ...DNS], {}, failing, { stdout: () => {}, stderr: () => {} }), /boom/)
  })

  it('does not read process.env', async () => {
    process.env.BOOTSTRAP_KIND = 'dns'
    try {
      const r = await run(['registry'])
      assert.equal(r.code, 2)
    } finally {
      delete process.env.BOOTSTRAP_KIND
    }
  })
})

describe('runCli doctor', () => {
  it('passes defaults', async () => {
    const r = await run(['doctor'])
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(r.doctor[0], {
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
    })
  })

  it('reads every doctor flag', async () => {
    const r = await run(['doctor', '--containerd-sock', '/s.sock', '--containerd-namespace', 'ns', '--containerd-content-path=/c',
      '--containerd-config', '/cfg.toml', '--containerd-registry-config-path', '/certs.d', '--registry-addr', ':30020', '--output', 'json',
      '--router-secret-path', '/psk', '--log-level', 'debug'])
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(r.doctor[0], {
      logLevel: 'DEBUG',
      containerdSock: '/s.sock',
      containerdSockExplicit: true,
      containerdNamespace: 'ns',
      containerdContentPath: '/c',
      containerdConfig: '/cfg.toml',
      containerdRegistryConfigPath: '/certs.d',
      registryAddr: { host: '', port: 30020 },
      routerSecretPath: '/psk',
      output: 'json'
    })
  })

  it('reads doctor env vars', async () => {
    const r = await run(['doctor'], { CONTAINERD_CONFIG: '/k3s/config.toml', CONTAINERD_REGISTRY_CONFIG_PATH: '/k3s/certs.d', CONTAINERD_SOCK: '/k3s.sock' })
    assert.equal(r.doctor[0]?.containerdConfig, '/k3s/config.toml')
    assert.equal(r.doctor[0]?.containerdRegistryConfigPath, '/k3s/certs.d')
    assert.equal(r.doctor[0]?.containerdSockExplicit, true)
  })

  it('rejects an unknown output format with exit 2', async () => {
    assert.match(await usageError(['doctor', '--output', 'yaml']), /error: unknown output format yaml; set --output to text or json/)
  })
})
