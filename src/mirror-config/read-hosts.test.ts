import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { DEFAULT_HOST_CAPABILITIES, parseHostsToml, readHostsConfigs } from './read-hosts.js'

// Spegel's own output (templateHosts in pkg/oci/containerd/mirror.go): single-quoted keys and
// literal strings, header sub-table.
const SPEGEL_DOCKER_IO = `server = 'https://registry-1.docker.io'

[host.'http://127.0.0.1:5000']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'
[host.'http://127.0.0.1:5000'.header]
Authorization = 'Basic aGVsbG86d29ybGQ='

[host.'http://10.0.0.7:30021']
capabilities = ['pull']
dial_timeout = '200ms'`

describe('readHostsConfigs', () => {
  let dir: string
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'read-hosts-'))
    const write = async (registry: string, text: string): Promise<void> => {
      await mkdir(path.join(dir, registry), { recursive: true })
      await writeFile(path.join(dir, registry, 'hosts.toml'), text)
    }
    await write('docker.io', SPEGEL_DOCKER_IO)
    await write('_default', '[host."http://127.0.0.1:5000"]\n  capabilities = ["pull", "resolve"]\n')
    await write('foo.bar:5000', '[host."https://mirror.example"]\n  ca = "/etc/certs/mirror.pem"\n  [host."https://mirror.example".header]\n    x-custom = ["a", "b"]\n')
    await write('broken.example', '[host."http://127.0.0.1:5000"\ncapabilities = ["pull"]\n')
    // A directory with only certificates: containerd's docker-style fallback, no hosts.toml.
    await mkdir(path.join(dir, 'certs-only.example'))
    await writeFile(path.join(dir, 'certs-only.example', 'ca.crt'), 'not a real cert')
    // Stray files in the root are not registries.
    await writeFile(path.join(dir, 'hosts.toml'), 'server = "https://ignored"')
    // Spegel's backup: two levels down, not read as a registry.
    await mkdir(path.join(dir, '_backup', 'ghcr.io'), { recursive: true })
    await writeFile(path.join(dir, '_backup', 'ghcr.io', 'hosts.toml'), 'server = "https://ghcr.io"')
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('reads every <dir>/<registry>/hosts.toml, sorted by registry, skipping dirs without one', async () => {
    const configs = await readHostsConfigs(dir)
    assert.deepEqual(configs.map((c) => c.registry), ['_default', 'broken.example', 'docker.io', 'foo.bar:5000'])
    assert.equal(configs.find((c) => c.registry === 'docker.io')?.file, path.join(dir, 'docker.io', 'hosts.toml'))
  })

  it('keeps server, host order, capabilities, dial_timeout and headers of Spegel\'s format', async () => {
    const docker = (await readHostsConfigs(dir)).find((c) => c.registry === 'docker.io')
    assert.ok(docker !== undefined)
    assert.equal(docker.error, undefined)
    assert.equal(docker.server, 'https://registry-1.docker.io')
    assert.deepEqual(docker.hosts.map((h) => h.url), ['http://127.0.0.1:5000', 'http://10.0.0.7:30021'])
    assert.deepEqual(docker.hosts[0]?.capabilities, ['pull', 'resolve'])
    assert.equal(docker.hosts[0]?.dialTimeout, '200ms')
    assert.deepEqual(docker.hosts[0]?.headers, { Authorization: 'Basic aGVsbG86d29ybGQ=' })
    assert.deepEqual(docker.hosts[1]?.capabilities, ['pull'])
    assert.deepEqual(docker.hosts[1]?.headers, {})
  })

  it('gives an entry without capabilities containerd\'s default set and keeps other keys in raw', async () => {
    const foo = (await readHostsConfigs(dir)).find((c) => c.registry === 'foo.bar:5000')
    const host = foo?.hosts[0]
    assert.ok(host !== undefined)
    assert.equal(foo?.server, undefined)
    assert.deepEqual(host.capabilities, [...DEFAULT_HOST_CAPABILITIES])
    assert.equal(host.hasExplicitCapabilities, false)
    assert.equal(host.dialTimeout, undefined)
    assert.deepEqual(host.headers, { 'x-custom': ['a', 'b'] })
    assert.equal(host.raw.ca, '/etc/certs/mirror.pem')
  })

  it('reports an unparsable file in error, with no hosts', async () => {
    const broken = (await readHostsConfigs(dir)).find((c) => c.registry === 'broken.example')
    assert.ok(broken?.error !== undefined)
    assert.match(broken.error, /invalid TOML/)
    assert.deepEqual(broken.hosts, [])
  })

  it('returns [] for a config path that does not exist', async () => {
    assert.deepEqual(await readHostsConfigs(path.join(dir, 'nope')), [])
  })

  it('throws for a config path that is a file', async () => {
    await assert.rejects(readHostsConfigs(path.join(dir, 'hosts.toml')), { code: 'ENOTDIR' })
  })
})

describe('parseHostsToml', () => {
  it('rejects wrongly typed fields the way containerd\'s decoder would', () => {
    assert.match(parseHostsToml('[host."http://a:1"]\ncapabilities = "pull"\n', 'r', 'f').error ?? '', /capabilities must be an array of strings/)
    assert.match(parseHostsToml('server = 1\n', 'r', 'f').error ?? '', /server must be a string/)
    assert.match(parseHostsToml('[host."http://a:1"]\ndial_timeout = 5\n', 'r', 'f').error ?? '', /dial_timeout/)
    assert.match(parseHostsToml('[host."http://a:1".header]\nx = 1\n', 'r', 'f').error ?? '', /header x/)
  })

  it('keeps a [host."X".header] declared before [host."X"] with its host', () => {
    const c = parseHostsToml('[host."http://a:1".header]\nx = "y"\n\n[host."http://a:1"]\ncapabilities = ["pull"]\n', 'r', 'f')
    assert.equal(c.error, undefined)
    assert.deepEqual(c.hosts.map((h) => [h.url, h.capabilities, h.headers]), [['http://a:1', ['pull'], { x: 'y' }]])
  })

  it('reads a file with only a server as no hosts', () => {
    const c = parseHostsToml('server = "http://127.0.0.1:5080"\n', 'example.test', 'f')
    assert.equal(c.server, 'http://127.0.0.1:5080')
    assert.deepEqual(c.hosts, [])
  })
})
