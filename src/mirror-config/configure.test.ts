import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLogger, type Logger } from '../observability/logger.js'
import {
  addMirrorConfiguration, cleanupMirrorConfiguration, parseHostsToml, templateHosts,
  BACKUP_PARTIAL_DIR, BACKUP_RESTORING_DIR, WILDCARD_REGISTRY, parseRegistryUrl,
  type MirrorConfigurationInit
} from './index.js'

interface LogRecord { msg: string, [key: string]: unknown }

function captureLogger (): { log: Logger, records: LogRecord[] } {
  const records: LogRecord[] = []
  const sink = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') records.push(JSON.parse(line) as LogRecord)
      cb()
    }
  })
  return { log: createLogger({ level: 'debug', destination: sink }), records }
}

const silent = createLogger({ level: 'silent' })

let root: string
before(async () => { root = await fs.mkdtemp(path.join(os.tmpdir(), 'mirror-config-')) })
after(async () => { await fs.rm(root, { recursive: true, force: true }) })

let counter = 0
/** A fresh `<tmp>/etc/containerd/certs.d`, created only when asked (the "absent" cases). */
async function configDir (create: boolean): Promise<string> {
  const dir = path.join(root, `case-${counter++}`, 'etc', 'containerd', 'certs.d')
  if (create) await fs.mkdir(dir, { recursive: true })
  return dir
}

async function writeFiles (dir: string, files: Record<string, string>): Promise<void> {
  for (const [rel, content] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(dir, rel)), { recursive: true })
    await fs.writeFile(path.join(dir, rel), content)
  }
}

/** Every regular file under `dir`, by relative path, as Spegel's test walks it. */
async function readTree (dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const entry of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    const full = path.join(entry.parentPath, entry.name)
    out[path.relative(dir, full)] = await fs.readFile(full, 'utf8')
  }
  return out
}

const DOCKER_127 = `server = 'https://registry-1.docker.io'

[host.'http://127.0.0.1:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'`
const FOO_127 = `server = 'http://foo.bar:5000'

[host.'http://127.0.0.1:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'`
const EXISTING_DOCKER = `server = 'https://registry-1.docker.io'

[host.'http://example.com:30020']
capabilities = ['pull', 'resolve']
client = ['/etc/certs/xxx/client.cert', '/etc/certs/xxx/client.key']

[host.'http://example.com:30021']
client = ['/etc/certs/xxx/client.cert', '/etc/certs/xxx/client.key']
capabilities = ['pull', 'resolve']

[host.'http://bar.com:30020']
capabilities = ['pull', 'resolve']
client = ['/etc/certs/xxx/client.cert', '/etc/certs/xxx/client.key']`

interface Case {
  name: string
  resolveTags: boolean
  mirroredRegistries: string[]
  mirrorTargets: string[]
  createConfigPathDir?: boolean
  prependExisting?: boolean
  authorization?: string
  existingFiles?: Record<string, string>
  expectedFiles: Record<string, string>
}

// Spegel's TestMirrorConfiguration (pkg/oci/containerd/mirror_test.go), every case.
const CASES: Case[] = [
  {
    name: 'multiple mirrors targets',
    resolveTags: true,
    mirroredRegistries: ['http://foo.bar:5000'],
    mirrorTargets: ['http://127.0.0.1:5000', 'http://127.0.0.2:5000', 'http://127.0.0.1:5001'],
    expectedFiles: {
      'foo.bar:5000/hosts.toml': `server = 'http://foo.bar:5000'

[host.'http://127.0.0.1:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'

[host.'http://127.0.0.2:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'

[host.'http://127.0.0.1:5001']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'`
    }
  },
  {
    name: 'empty mirrored registries defaults to _default',
    resolveTags: true,
    mirroredRegistries: [],
    mirrorTargets: ['http://127.0.0.1:5000'],
    expectedFiles: {
      '_default/hosts.toml': `[host.'http://127.0.0.1:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'`
    }
  },
  {
    name: 'default is explicitly set',
    resolveTags: true,
    mirroredRegistries: ['_default'],
    mirrorTargets: ['http://127.0.0.1:5000'],
    expectedFiles: {
      '_default/hosts.toml': `[host.'http://127.0.0.1:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'`
    }
  },
  {
    name: '* is the same wildcard as _default',
    resolveTags: true,
    mirroredRegistries: ['*'],
    mirrorTargets: ['http://127.0.0.1:5000'],
    expectedFiles: {
      '_default/hosts.toml': `[host.'http://127.0.0.1:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'`
    }
  },
  {
    name: 'resolve tags disabled',
    resolveTags: false,
    mirroredRegistries: ['https://docker.io', 'http://foo.bar:5000'],
    mirrorTargets: ['http://127.0.0.1:5000'],
    expectedFiles: {
      'docker.io/hosts.toml': `server = 'https://registry-1.docker.io'

[host.'http://127.0.0.1:5000']
capabilities = ['pull']
dial_timeout = '200ms'`,
      'foo.bar:5000/hosts.toml': `server = 'http://foo.bar:5000'

[host.'http://127.0.0.1:5000']
capabilities = ['pull']
dial_timeout = '200ms'`
    }
  },
  {
    name: 'config path directory does not exist',
    resolveTags: true,
    mirroredRegistries: ['https://docker.io', 'http://foo.bar:5000'],
    mirrorTargets: ['http://127.0.0.1:5000'],
    createConfigPathDir: false,
    expectedFiles: { 'docker.io/hosts.toml': DOCKER_127, 'foo.bar:5000/hosts.toml': FOO_127 }
  },
  {
    name: 'config path directory does exist',
    resolveTags: true,
    mirroredRegistries: ['https://docker.io', 'http://foo.bar:5000'],
    mirrorTargets: ['http://127.0.0.1:5000'],
    createConfigPathDir: true,
    expectedFiles: { 'docker.io/hosts.toml': DOCKER_127, 'foo.bar:5000/hosts.toml': FOO_127 }
  },
  {
    name: 'config path directory contains configuration',
    resolveTags: true,
    mirroredRegistries: ['https://docker.io', 'http://foo.bar:5000'],
    mirrorTargets: ['http://127.0.0.1:5000'],
    createConfigPathDir: true,
    existingFiles: { 'docker.io/hosts.toml': "hello = 'world'", 'ghcr.io/hosts.toml': "foo = 'bar'" },
    expectedFiles: {
      '_backup/docker.io/hosts.toml': "hello = 'world'",
      '_backup/ghcr.io/hosts.toml': "foo = 'bar'",
      'docker.io/hosts.toml': DOCKER_127,
      'foo.bar:5000/hosts.toml': FOO_127
    }
  },
  {
    name: 'config path directory contains backup',
    resolveTags: true,
    mirroredRegistries: ['https://docker.io', 'http://foo.bar:5000'],
    mirrorTargets: ['http://127.0.0.1:5000'],
    createConfigPathDir: true,
    existingFiles: {
      '_backup/docker.io/hosts.toml': "hello = 'world'",
      '_backup/ghcr.io/hosts.toml': "foo = 'bar'",
      'test.txt': 'test',
      foo: 'bar'
    },
    expectedFiles: {
      '_backup/docker.io/hosts.toml': "hello = 'world'",
      '_backup/ghcr.io/hosts.toml': "foo = 'bar'",
      'docker.io/hosts.toml': DOCKER_127,
      'foo.bar:5000/hosts.toml': FOO_127
    }
  },
  {
    name: 'prepend to existing configuration',
    resolveTags: true,
    mirroredRegistries: ['https://docker.io', 'http://foo.bar:5000'],
    mirrorTargets: ['http://127.0.0.1:5000'],
    createConfigPathDir: true,
    prependExisting: true,
    existingFiles: {
      'docker.io/hosts.toml': EXISTING_DOCKER,
      'docker.io/hello.txt': 'Hello World',
      'docker.io/nested/cert.tls': 'Foo Bar'
    },
    expectedFiles: {
      '_backup/docker.io/hosts.toml': EXISTING_DOCKER,
      '_backup/docker.io/hello.txt': 'Hello World',
      '_backup/docker.io/nested/cert.tls': 'Foo Bar',
      'docker.io/hosts.toml': `server = 'https://registry-1.docker.io'

[host.'http://127.0.0.1:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'

[host.'http://example.com:30020']
capabilities = ['pull', 'resolve']
client = ['/etc/certs/xxx/client.cert', '/etc/certs/xxx/client.key']

[host.'http://example.com:30021']
capabilities = ['pull', 'resolve']
client = ['/etc/certs/xxx/client.cert', '/etc/certs/xxx/client.key']

[host.'http://bar.com:30020']
capabilities = ['pull', 'resolve']
client = ['/etc/certs/xxx/client.cert', '/etc/certs/xxx/client.key']`,
      'docker.io/hello.txt': 'Hello World',
      'docker.io/nested/cert.tls': 'Foo Bar',
      'foo.bar:5000/hosts.toml': FOO_127
    }
  },
  {
    name: 'prepend existing disabled',
    resolveTags: true,
    mirroredRegistries: ['https://docker.io', 'http://foo.bar:5000'],
    mirrorTargets: ['http://127.0.0.1:5000'],
    createConfigPathDir: true,
    prependExisting: false,
    existingFiles: { 'docker.io/hosts.toml': EXISTING_DOCKER },
    expectedFiles: {
      '_backup/docker.io/hosts.toml': EXISTING_DOCKER,
      'docker.io/hosts.toml': DOCKER_127,
      'foo.bar:5000/hosts.toml': FOO_127
    }
  },
  {
    name: 'with basic authentication',
    resolveTags: true,
    mirroredRegistries: ['http://foo.bar:5000'],
    mirrorTargets: ['http://127.0.0.1:5000', 'http://127.0.0.1:5001'],
    authorization: 'Basic aGVsbG86d29ybGQ=',
    expectedFiles: {
      'foo.bar:5000/hosts.toml': `server = 'http://foo.bar:5000'

[host.'http://127.0.0.1:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'
[host.'http://127.0.0.1:5000'.header]
Authorization = 'Basic aGVsbG86d29ybGQ='

[host.'http://127.0.0.1:5001']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'
[host.'http://127.0.0.1:5001'.header]
Authorization = 'Basic aGVsbG86d29ybGQ='`
    }
  },
  {
    name: 'bracketed IPv6 mirror target',
    resolveTags: true,
    mirroredRegistries: ['https://ghcr.io'],
    mirrorTargets: ['http://[fc00:f853:ccd:e793::2]:30020'],
    expectedFiles: {
      'ghcr.io/hosts.toml': `server = 'https://ghcr.io'

[host.'http://[fc00:f853:ccd:e793::2]:30020']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'`
    }
  }
]

function initFor (c: Case, configPath: string): MirrorConfigurationInit {
  return {
    configPath,
    mirroredRegistries: c.mirroredRegistries,
    mirrorTargets: c.mirrorTargets,
    resolveTags: c.resolveTags,
    prependExisting: c.prependExisting ?? false,
    ...(c.authorization === undefined ? {} : { authorization: c.authorization })
  }
}

describe('addMirrorConfiguration: Spegel\'s TestMirrorConfiguration vectors', () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const configPath = await configDir(c.createConfigPathDir ?? false)
      await writeFiles(configPath, c.existingFiles ?? {})
      await addMirrorConfiguration({ log: silent }, initFor(c, configPath))
      assert.ok((await fs.stat(path.join(configPath, '_backup'))).isDirectory(), '_backup exists')
      assert.deepEqual(await readTree(configPath), c.expectedFiles)
    })
  }

  for (const c of CASES) {
    it(`${c.name}: a second run (pod restart) gives the same files`, async () => {
      const configPath = await configDir(c.createConfigPathDir ?? false)
      await writeFiles(configPath, c.existingFiles ?? {})
      await addMirrorConfiguration({ log: silent }, initFor(c, configPath))
      await writeFiles(configPath, { 'stray.txt': 'deleted on the next run', 'quay.io/hosts.toml': 'server = "https://quay.io"' })
      await addMirrorConfiguration({ log: silent }, initFor(c, configPath))
      assert.deepEqual(await readTree(configPath), c.expectedFiles)
    })
  }

  it('writes files containerd\'s decoder accepts, with the targets in order', async () => {
    const c = CASES.find((x) => x.name === 'with basic authentication')
    assert.ok(c !== undefined)
    const configPath = await configDir(false)
    const written = await addMirrorConfiguration({ log: silent }, initFor(c, configPath))
    assert.equal(written.length, 1)
    const parsed = parseHostsToml(written[0]?.content ?? '', 'foo.bar:5000', 'f')
    assert.equal(parsed.error, undefined)
    assert.equal(parsed.server, 'http://foo.bar:5000')
    assert.deepEqual(parsed.hosts.map((h) => [h.url, h.capabilities, h.dialTimeout, h.headers]), [
      ['http://127.0.0.1:5000', ['pull', 'resolve'], '200ms', { Authorization: 'Basic aGVsbG86d29ybGQ=' }],
      ['http://127.0.0.1:5001', ['pull', 'resolve'], '200ms', { Authorization: 'Basic aGVsbG86d29ybGQ=' }]
    ])
  })

  it('logs each file written and each backed-up entry, with Spegel\'s messages', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { 'docker.io/hosts.toml': EXISTING_DOCKER })
    const { log, records } = captureLogger()
    await addMirrorConfiguration({ log }, {
      configPath, mirroredRegistries: ['https://docker.io'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: true
    })
    log.flush()
    assert.deepEqual(records.map((r) => [r.msg, r.path ?? r.registry]), [
      ['backing up containerd host configuration', path.join(configPath, 'docker.io')],
      ['prepending to existing containerd mirror configuration', 'https://docker.io'],
      ['added containerd mirror configuration', path.join(configPath, 'docker.io', 'hosts.toml')]
    ])
  })
})

describe('addMirrorConfiguration: inputs', () => {
  const base = { resolveTags: true, prependExisting: false }
  const cases: Array<[string, string[], string[], RegExp]> = [
    ['two wildcards', ['_default', '*'], ['http://127.0.0.1:5000'], /registries should not contain two wildcards/],
    ['a wildcard mirror target', [], ['_default'], /wildcard registries are not allowed/],
    ['a registry without scheme', ['docker.io'], ['http://127.0.0.1:5000'], /invalid registry url scheme must be http or https: docker.io/],
    ['a registry with a path', ['https://docker.io/library'], ['http://127.0.0.1:5000'], /path has to be empty/],
    ['a target with a query', [], ['http://127.0.0.1:5000?x=1'], /query has to be empty/],
    ['a target with a user', [], ['http://u:p@127.0.0.1:5000'], /user has to be empty/],
    ['an ftp target', [], ['ftp://127.0.0.1:5000'], /scheme must be http or https/],
    ['no mirror target', [], [], /at least one mirror target/]
  ]
  for (const [name, mirroredRegistries, mirrorTargets, message] of cases) {
    it(`rejects ${name} before touching the directory`, async () => {
      const configPath = await configDir(true)
      await writeFiles(configPath, { 'docker.io/hosts.toml': 'x = 1' })
      await assert.rejects(addMirrorConfiguration({ log: silent }, { ...base, configPath, mirroredRegistries, mirrorTargets }), message)
      assert.deepEqual(await readTree(configPath), { 'docker.io/hosts.toml': 'x = 1' })
    })
  }

  it('writes 0644 files in 0755 directories, and keeps a backed-up hosts.toml\'s stricter mode', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { 'foo.bar:5000/hosts.toml': EXISTING_DOCKER })
    await fs.chmod(path.join(configPath, 'foo.bar:5000/hosts.toml'), 0o600)
    for (const prependExisting of [false, true]) {
      await addMirrorConfiguration({ log: silent }, {
        configPath, mirroredRegistries: ['https://foo.bar:5000', 'https://ghcr.io'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting
      })
      assert.equal((await fs.stat(path.join(configPath, 'foo.bar:5000/hosts.toml'))).mode & 0o777, 0o600)
      assert.equal((await fs.stat(path.join(configPath, 'ghcr.io/hosts.toml'))).mode & 0o777, 0o644)
      assert.equal((await fs.stat(path.join(configPath, 'ghcr.io'))).mode & 0o777, 0o755)
    }
  })

  it('keeps the mode of copied certificate files when prepending', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { 'docker.io/hosts.toml': EXISTING_DOCKER, 'docker.io/client.key': 'KEY', 'docker.io/ca.crt': 'CA' })
    await fs.chmod(path.join(configPath, 'docker.io/client.key'), 0o600)
    await addMirrorConfiguration({ log: silent }, {
      configPath, mirroredRegistries: ['https://docker.io'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: true
    })
    assert.equal((await fs.stat(path.join(configPath, 'docker.io/client.key'))).mode & 0o777, 0o600)
    assert.equal((await fs.stat(path.join(configPath, 'docker.io/ca.crt'))).mode & 0o777, 0o644)
    assert.equal(await fs.readFile(path.join(configPath, 'docker.io/client.key'), 'utf8'), 'KEY')
  })

  it('prepending without an existing file for the registry writes only Spegel\'s hosts', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { 'ghcr.io/hosts.toml': EXISTING_DOCKER, 'docker.io/ca.crt': 'no hosts.toml here' })
    await addMirrorConfiguration({ log: silent }, {
      configPath, mirroredRegistries: ['https://docker.io'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: true
    })
    const tree = await readTree(configPath)
    assert.equal(tree['docker.io/hosts.toml'], DOCKER_127)
    assert.equal(tree['docker.io/ca.crt'], undefined, 'files are only carried over with prepended hosts, as Spegel does')
  })

  it('prepends to _default from the backed-up _default', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { '_default/hosts.toml': '[host."https://mirror.corp"]\n  capabilities = ["pull"]\n' })
    await addMirrorConfiguration({ log: silent }, {
      configPath, mirroredRegistries: [], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: true
    })
    assert.equal(await fs.readFile(path.join(configPath, '_default/hosts.toml'), 'utf8'), `[host.'http://127.0.0.1:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'

[host.'https://mirror.corp']
capabilities = ['pull']`)
  })

  it('fails on a backed-up hosts.toml that is not TOML when prepending, and names the file', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { 'docker.io/hosts.toml': '[host."http://a:1"\n' })
    await assert.rejects(addMirrorConfiguration({ log: silent }, {
      configPath, mirroredRegistries: ['https://docker.io'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: true
    }), (err: Error) => err.message.includes(path.join(configPath, '_backup', 'docker.io', 'hosts.toml')) && /invalid TOML/.test(err.message))
  })

  it('fails when the config path is a file', async () => {
    const configPath = await configDir(false)
    await fs.mkdir(path.dirname(configPath), { recursive: true })
    await fs.writeFile(configPath, 'not a directory')
    await assert.rejects(addMirrorConfiguration({ log: silent }, {
      configPath, mirroredRegistries: [], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: false
    }), { code: 'EEXIST' })
  })

  it('leaves no temp files behind', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { 'docker.io/hosts.toml': EXISTING_DOCKER, 'docker.io/x/ca.crt': 'CA' })
    await addMirrorConfiguration({ log: silent }, {
      configPath, mirroredRegistries: ['https://docker.io', 'https://ghcr.io'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: true
    })
    const names = await fs.readdir(configPath, { recursive: true })
    assert.deepEqual(names.filter((n) => n.includes('.tmp-') || n.includes(BACKUP_PARTIAL_DIR)), [])
  })
})

describe('backup (Spegel\'s TestBackupConfig) and crash recovery', () => {
  const init = (configPath: string): MirrorConfigurationInit => ({
    configPath, mirroredRegistries: ['https://docker.io'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: false
  })

  it('an empty config dir gets an empty _backup', async () => {
    const configPath = await configDir(true)
    await addMirrorConfiguration({ log: silent }, init(configPath))
    assert.deepEqual(await fs.readdir(path.join(configPath, '_backup')), [])
  })

  it('one file is moved into _backup', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { 'test.txt': 'Hello World' })
    await addMirrorConfiguration({ log: silent }, init(configPath))
    assert.deepEqual(await fs.readdir(path.join(configPath, '_backup')), ['test.txt'])
    assert.equal(await fs.readFile(path.join(configPath, '_backup', 'test.txt'), 'utf8'), 'Hello World')
  })

  it('a backup left half done (crash) is completed, not trusted as it is', async () => {
    const configPath = await configDir(true)
    // A run stopped after moving docker.io: ghcr.io is still in place.
    await writeFiles(configPath, {
      [`${BACKUP_PARTIAL_DIR}/docker.io/hosts.toml`]: 'docker = 1',
      'ghcr.io/hosts.toml': 'ghcr = 1'
    })
    await addMirrorConfiguration({ log: silent }, init(configPath))
    assert.deepEqual(await readTree(configPath), {
      '_backup/docker.io/hosts.toml': 'docker = 1',
      '_backup/ghcr.io/hosts.toml': 'ghcr = 1',
      'docker.io/hosts.toml': DOCKER_127
    })
  })

  it('a restore left half done (crash during cleanup) is finished before backing up again', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, {
      'docker.io/hosts.toml': 'docker = 1',
      [`${BACKUP_RESTORING_DIR}/ghcr.io/hosts.toml`]: 'ghcr = 1'
    })
    await addMirrorConfiguration({ log: silent }, init(configPath))
    assert.deepEqual(await readTree(configPath), {
      '_backup/docker.io/hosts.toml': 'docker = 1',
      '_backup/ghcr.io/hosts.toml': 'ghcr = 1',
      'docker.io/hosts.toml': DOCKER_127
    })
  })
})

describe('cleanupMirrorConfiguration (Spegel\'s TestCleanupMirrorConfiguration)', () => {
  it('restores _backup, deletes everything else and _backup, and is idempotent', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { '_backup/data.txt': 'hello world', 'foo.bin': 'hello world' })
    await fs.mkdir(path.join(configPath, 'docker.io'))
    for (let i = 0; i < 2; i++) {
      await cleanupMirrorConfiguration({ log: silent }, configPath)
      assert.deepEqual(await fs.readdir(configPath), ['data.txt'])
    }
  })

  it('is a no-op without _backup, and logs why', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { 'docker.io/hosts.toml': 'keep me' })
    const { log, records } = captureLogger()
    assert.equal(await cleanupMirrorConfiguration({ log }, configPath), false)
    log.flush()
    assert.deepEqual(await readTree(configPath), { 'docker.io/hosts.toml': 'keep me' })
    assert.deepEqual(records.map((r) => r.msg), ['skipping cleanup because backup directory does not exist'])
  })

  it('is a no-op when the config path does not exist', async () => {
    const configPath = await configDir(false)
    assert.equal(await cleanupMirrorConfiguration({ log: silent }, configPath), false)
    await assert.rejects(fs.stat(configPath), { code: 'ENOENT' })
  })

  it('undoes configuration exactly, with and without prepend', async () => {
    for (const prependExisting of [false, true]) {
      const configPath = await configDir(true)
      const original = {
        'docker.io/hosts.toml': EXISTING_DOCKER,
        'docker.io/nested/cert.tls': 'Foo Bar',
        'ghcr.io/hosts.toml': "foo = 'bar'",
        'loose.txt': 'x'
      }
      await writeFiles(configPath, original)
      await addMirrorConfiguration({ log: silent }, {
        configPath, mirroredRegistries: ['https://docker.io', 'http://foo.bar:5000'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting
      })
      await addMirrorConfiguration({ log: silent }, {
        configPath, mirroredRegistries: ['https://docker.io'], mirrorTargets: ['http://127.0.0.1:5001'], resolveTags: false, prependExisting
      })
      const { log, records } = captureLogger()
      assert.equal(await cleanupMirrorConfiguration({ log }, configPath), true)
      log.flush()
      assert.deepEqual(await readTree(configPath), original)
      assert.deepEqual((await fs.readdir(configPath)).sort(), ['docker.io', 'ghcr.io', 'loose.txt'])
      assert.deepEqual(records.map((r) => r.msg), Array(3).fill('recovering containerd host configuration'))
    }
  })

  it('finishes a restore left half done, keeping what was already restored', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { 'docker.io/hosts.toml': 'restored', [`${BACKUP_RESTORING_DIR}/ghcr.io/hosts.toml`]: 'not yet' })
    assert.equal(await cleanupMirrorConfiguration({ log: silent }, configPath), true)
    assert.deepEqual(await readTree(configPath), { 'docker.io/hosts.toml': 'restored', 'ghcr.io/hosts.toml': 'not yet' })
  })

  it('puts back what a backup left half done had moved', async () => {
    const configPath = await configDir(true)
    await writeFiles(configPath, { [`${BACKUP_PARTIAL_DIR}/docker.io/hosts.toml`]: 'moved', 'ghcr.io/hosts.toml': 'not moved' })
    assert.equal(await cleanupMirrorConfiguration({ log: silent }, configPath), true)
    assert.deepEqual(await readTree(configPath), { 'docker.io/hosts.toml': 'moved', 'ghcr.io/hosts.toml': 'not moved' })
  })
})

describe('templateHosts', () => {
  it('renders the wildcard without a server line and docker.io as registry-1.docker.io', () => {
    const target = parseRegistryUrl('http://127.0.0.1:5000', false)
    assert.equal(templateHosts(WILDCARD_REGISTRY, [target], ['pull']), `[host.'http://127.0.0.1:5000']
capabilities = ['pull']
dial_timeout = '200ms'`)
    assert.match(templateHosts(parseRegistryUrl('https://docker.io', true), [target], ['pull']), /^server = 'https:\/\/registry-1\.docker\.io'\n/)
    // Only the exact URL is rewritten, as in Spegel.
    assert.match(templateHosts(parseRegistryUrl('http://docker.io', true), [target], ['pull']), /^server = 'http:\/\/docker\.io'\n/)
  })
})
