import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import type { CleanupConfig, CleanupWaitConfig, ConfigurationConfig } from '../config/index.js'
import { createLogger, type Logger } from '../observability/logger.js'
import { runConfiguration } from './configuration.js'
import { runCli, type CliHandlers } from './program.js'

interface LogRecord { level: string, msg: string, [key: string]: unknown }

function captureLogger (): { log: Logger, records: LogRecord[] } {
  const records: LogRecord[] = []
  const sink = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') records.push(JSON.parse(line) as LogRecord)
      cb()
    }
  })
  return { log: createLogger({ level: 'info', destination: sink }), records }
}

interface Recorded {
  code: number
  stderr: string
  configuration: ConfigurationConfig[]
  cleanup: CleanupConfig[]
  cleanupWait: CleanupWaitConfig[]
}

/** Runs the CLI with handlers that only record what they were given. */
async function runRecorded (argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Recorded> {
  const r: Recorded = { code: -1, stderr: '', configuration: [], cleanup: [], cleanupWait: [] }
  const handlers: CliHandlers = {
    registry: async () => { throw new Error('registry must not run') },
    doctor: async () => { throw new Error('doctor must not run') },
    configuration: async (c) => { r.configuration.push(c); return 0 },
    cleanup: async (c) => { r.cleanup.push(c); return 0 },
    cleanupWait: async (c) => { r.cleanupWait.push(c); return 0 }
  }
  r.code = await runCli(argv, env, handlers, { stdout: () => {}, stderr: (s) => { r.stderr += s } })
  return r
}

async function parsed (argv: string[], env: NodeJS.ProcessEnv = {}): Promise<ConfigurationConfig> {
  const r = await runRecorded(['configuration', ...argv], env)
  assert.equal(r.code, 0, r.stderr)
  const [config] = r.configuration
  assert.ok(config !== undefined)
  return config
}

async function usageError (argv: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const r = await runRecorded(argv, env)
  assert.equal(r.code, 2, `expected exit 2, got ${r.code}: ${r.stderr}`)
  assert.equal(r.configuration.length + r.cleanup.length + r.cleanupWait.length, 0, 'handler must not run')
  return r.stderr
}

const TARGET = ['--mirror-targets', 'http://10.0.0.7:30020']

describe('runCli configuration: flags and env', () => {
  it('fills Spegel\'s defaults', async () => {
    assert.deepEqual(await parsed(TARGET), {
      logLevel: 'INFO',
      containerdRegistryConfigPath: '/etc/containerd/certs.d',
      mirroredRegistries: [],
      mirrorTargets: ['http://10.0.0.7:30020'],
      resolveTags: true,
      prependExisting: false
    })
  })

  it('reads every flag from argv', async () => {
    const config = await parsed([
      '--containerd-registry-config-path', '/host/certs.d',
      '--mirrored-registries', 'https://docker.io', 'https://ghcr.io',
      '--mirror-targets', 'http://10.0.0.7:30020', 'http://10.0.0.7:30021',
      '--resolve-tags=false', '--prepend-existing', '--log-level', 'DEBUG'
    ])
    assert.deepEqual(config, {
      logLevel: 'DEBUG',
      containerdRegistryConfigPath: '/host/certs.d',
      mirroredRegistries: ['https://docker.io', 'https://ghcr.io'],
      mirrorTargets: ['http://10.0.0.7:30020', 'http://10.0.0.7:30021'],
      resolveTags: false,
      prependExisting: true
    })
  })

  it('reads every setting from env, lists as CSV, and the flag wins', async () => {
    const env = {
      CONTAINERD_REGISTRY_CONFIG_PATH: '/env/certs.d',
      MIRRORED_REGISTRIES: 'https://docker.io,https://ghcr.io',
      MIRROR_TARGETS: 'http://10.0.0.7:30020,http://10.0.0.7:30021',
      RESOLVE_TAGS: 'false',
      PREPEND_EXISTING: 'true'
    }
    assert.deepEqual(await parsed([], env), {
      logLevel: 'INFO',
      containerdRegistryConfigPath: '/env/certs.d',
      mirroredRegistries: ['https://docker.io', 'https://ghcr.io'],
      mirrorTargets: ['http://10.0.0.7:30020', 'http://10.0.0.7:30021'],
      resolveTags: false,
      prependExisting: true
    })
    const config = await parsed(['--mirror-targets', 'http://1.2.3.4:5000', '--resolve-tags', '--prepend-existing=false', '--mirrored-registries'], env)
    assert.deepEqual(config.mirrorTargets, ['http://1.2.3.4:5000'])
    assert.equal(config.resolveTags, true)
    assert.equal(config.prependExisting, false)
    assert.deepEqual(config.mirroredRegistries, [])
  })

  it('takes a containerd-style directory list as one value', async () => {
    const list = '/etc/containerd/certs.d:/etc/docker/certs.d'
    assert.equal((await parsed(['--mirror-targets', 'http://10.0.0.7:30020', '--containerd-registry-config-path', list])).containerdRegistryConfigPath, list)
    assert.equal((await parsed(['--mirror-targets', 'http://10.0.0.7:30020'], { CONTAINERD_REGISTRY_CONFIG_PATH: list })).containerdRegistryConfigPath, list)
  })

  it('brackets IPv6 mirror targets', async () => {
    const config = await parsed(['--mirror-targets', 'http://fc00:f853:ccd:e793::2:30020', 'http://fc00:f853:ccd:e793::2:30021'])
    assert.deepEqual(config.mirrorTargets, ['http://[fc00:f853:ccd:e793::2]:30020', 'http://[fc00:f853:ccd:e793::2]:30021'])
  })

  it('missing --mirror-targets is an argument error naming the flag', async () => {
    for (const env of [{}, { MIRROR_TARGETS: '' }]) {
      const stderr = await usageError(['configuration'], env)
      assert.match(stderr, /--mirror-targets is required/)
      assert.match(stderr, /MIRROR_TARGETS/)
    }
  })

  it('bad values are argument errors naming the flag', async () => {
    assert.match(await usageError(['configuration', '--mirror-targets', '_default']), /--mirror-targets.*wildcard registries are not allowed/)
    assert.match(await usageError(['configuration', '--mirror-targets', 'http://10.0.0.7:30020/v2']), /--mirror-targets.*path has to be empty/)
    assert.match(await usageError(['configuration', ...TARGET, '--mirrored-registries', '_default', '*']), /two wildcards/)
    assert.match(await usageError(['configuration', ...TARGET, '--mirrored-registries', 'docker.io']), /--mirrored-registries/)
    assert.match(await usageError(['configuration', ...TARGET, '--resolve-tags=maybe']), /--resolve-tags/)
    assert.match(await usageError(['configuration', ...TARGET, '--prepend-existing=maybe']), /--prepend-existing/)
    assert.match(await usageError(['configuration', ...TARGET, '--containerd-registry-config-path', ' ']), /--containerd-registry-config-path/)
  })
})

describe('runConfiguration', () => {
  let dir: string
  before(async () => { dir = await fs.mkdtemp(path.join(os.tmpdir(), 'run-configuration-')) })
  after(async () => { await fs.rm(dir, { recursive: true, force: true }) })

  const config = (configPath: string): ConfigurationConfig => ({
    logLevel: 'INFO',
    containerdRegistryConfigPath: configPath,
    mirroredRegistries: ['https://docker.io'],
    mirrorTargets: ['http://10.0.0.7:30020', 'http://10.0.0.7:30021'],
    resolveTags: true,
    prependExisting: false
  })

  it('writes hosts.toml with the basic-auth header from the secret directory', async () => {
    const secrets = path.join(dir, 'basic-auth')
    await fs.mkdir(secrets)
    await fs.writeFile(path.join(secrets, 'username'), 'hello')
    await fs.writeFile(path.join(secrets, 'password'), 'world')
    const configPath = path.join(dir, 'auth', 'certs.d')
    const { log, records } = captureLogger()
    assert.equal(await runConfiguration(config(configPath), { log, basicAuthDir: secrets }), 0)
    assert.equal(await fs.readFile(path.join(configPath, 'docker.io', 'hosts.toml'), 'utf8'), `server = 'https://registry-1.docker.io'

[host.'http://10.0.0.7:30020']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'
[host.'http://10.0.0.7:30020'.header]
Authorization = 'Basic aGVsbG86d29ybGQ='

[host.'http://10.0.0.7:30021']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'
[host.'http://10.0.0.7:30021'.header]
Authorization = 'Basic aGVsbG86d29ybGQ='`)
    assert.deepEqual(records.map((r) => r.msg), ['added containerd mirror configuration', 'exit gracefully'])
  })

  it('writes no header without credentials', async () => {
    const configPath = path.join(dir, 'noauth', 'certs.d')
    assert.equal(await runConfiguration(config(configPath), { log: captureLogger().log, basicAuthDir: path.join(dir, 'missing') }), 0)
    const text = await fs.readFile(path.join(configPath, 'docker.io', 'hosts.toml'), 'utf8')
    assert.doesNotMatch(text, /header|Authorization/)
  })

  it('with a containerd-style list, writes the first directory and the literal joined one, and says so', async () => {
    const first = path.join(dir, 'list', 'containerd', 'certs.d')
    const second = path.join(dir, 'list', 'docker', 'certs.d')
    const list = `${first}:${second}`
    const { log, records } = captureLogger()
    assert.equal(await runConfiguration(config(list), { log, basicAuthDir: path.join(dir, 'missing') }), 0)
    const local = await fs.readFile(path.join(first, 'docker.io', 'hosts.toml'), 'utf8')
    assert.equal(await fs.readFile(`${first}:${second}/docker.io/hosts.toml`, 'utf8'), local)
    await assert.rejects(fs.stat(second), { code: 'ENOENT' }, 'the later directory is not created')
    assert.deepEqual(records.map((r) => r.msg), [
      'config_path lists several directories: writing the first one (local pull) and the literal joined path (transfer service)',
      'added containerd mirror configuration', 'added containerd mirror configuration', 'exit gracefully'
    ])
    assert.deepEqual(records.filter((r) => r.msg === 'added containerd mirror configuration').map((r) => r.readBy), ['local', 'transfer'])
  })

  it('exits 1 with the path and a fix when the directory cannot be written', async () => {
    const file = path.join(dir, 'a-file')
    await fs.writeFile(file, 'x')
    const { log, records } = captureLogger()
    assert.equal(await runConfiguration(config(path.join(file, 'certs.d')), { log, basicAuthDir: path.join(dir, 'missing') }), 1)
    const last = records.at(-1)
    assert.equal(last?.msg, 'exit with error')
    assert.equal(last?.level, 'ERROR')
    assert.equal(last?.code, 'ENOTDIR')
  })
})
