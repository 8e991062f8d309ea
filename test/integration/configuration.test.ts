// `spegel configuration`, `cleanup` and `cleanup-wait` as real processes, with a real containerd
// (1.6, config version 2) reading the files: ctr resolves through the mirror written into
// hosts.toml, in order, with the basic-auth header, and cleanup puts the original files back.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { after, before, beforeEach, describe, it } from 'node:test'
import { containerdSkipReason, startContainerd, type ContainerdInstance } from '../helpers/containerd.js'
import { freePort, httpRequest, run } from '../helpers/net.js'
import { MAIN_JS } from '../helpers/spegel.js'
import { waitFor } from '../helpers/wait.js'

const skip = containerdSkipReason() ?? false
const IMAGE = 'example.test/library/app:1.0'
const NO_AUTH = '/nonexistent-basic-auth'

interface SeenRequest { method: string, url: string, authorization: string | undefined, seq: number }

// One sequence across every fake registry, so the order containerd asked them in is visible.
let sequence = 0

/** A registry that knows nothing: 404 to everything, and a record of what it was asked. */
async function emptyRegistry (): Promise<{ server: http.Server, port: number, url: string, seen: SeenRequest[] }> {
  const seen: SeenRequest[] = []
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization, seq: sequence++ })
    res.writeHead(404, { 'Content-Type': 'application/json', 'Content-Length': 0 }).end()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return { server, port, url: `http://127.0.0.1:${port}`, seen }
}

async function closeServer (server: http.Server): Promise<void> {
  const closed = once(server, 'close')
  server.close()
  server.closeAllConnections()
  await closed
}

async function spegel (args: string[], basicAuthDir = NO_AUTH): Promise<{ code: number | null, stderr: string }> {
  const res = await run(process.execPath, [MAIN_JS, ...args], { env: { ...process.env, SPEGEL_BASIC_AUTH_DIR: basicAuthDir }, timeoutMs: 30_000 })
  return { code: res.code, stderr: res.stderr }
}

/** `ctr images pull --hosts-dir`: the client side reads hosts.toml exactly as CRI does. */
async function pull (c: ContainerdInstance): Promise<{ code: number | null, stderr: string }> {
  const res = await run('ctr', ['-a', c.socketPath, '--connect-timeout', '5s', '-n', c.namespace, 'images', 'pull', '--hosts-dir', c.configPath, IMAGE], { timeoutMs: 60_000 })
  return { code: res.code, stderr: res.stderr }
}

async function readTree (dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const entry of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) out[path.relative(dir, path.join(entry.parentPath, entry.name))] = await fs.readFile(path.join(entry.parentPath, entry.name), 'utf8')
  }
  return out
}

describe('configuration read by a real containerd', { skip }, () => {
  let c: ContainerdInstance
  let mirror: Awaited<ReturnType<typeof emptyRegistry>>
  let corpMirror: Awaited<ReturnType<typeof emptyRegistry>>
  let work: string

  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'spegel-configuration-'))
    c = await startContainerd({ name: 'config' })
    mirror = await emptyRegistry()
    corpMirror = await emptyRegistry()
  })
  after(async () => {
    await c?.dispose()
    if (mirror !== undefined) await closeServer(mirror.server)
    if (corpMirror !== undefined) await closeServer(corpMirror.server)
    await fs.rm(work, { recursive: true, force: true })
  })
  beforeEach(async () => {
    mirror.seen.length = 0
    corpMirror.seen.length = 0
    await fs.rm(c.configPath, { recursive: true, force: true })
    await fs.mkdir(c.configPath)
  })

  it('writes hosts.toml that ctr accepts and uses: the mirror is asked first and its 404 is a miss', async () => {
    await fs.mkdir(path.join(c.configPath, 'ghcr.io'))
    await fs.writeFile(path.join(c.configPath, 'ghcr.io', 'hosts.toml'), 'server = "https://ghcr.io"\n')
    const res = await spegel(['configuration', '--containerd-registry-config-path', c.configPath, '--mirror-targets', mirror.url, '--mirrored-registries', 'https://example.test'])
    assert.equal(res.code, 0, res.stderr)
    assert.deepEqual(await readTree(c.configPath), {
      '_backup/ghcr.io/hosts.toml': 'server = "https://ghcr.io"\n',
      'example.test/hosts.toml': `server = 'https://example.test'

[host.'${mirror.url}']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'`
    })

    const pulled = await pull(c)
    // Nobody has the image: the mirror answers 404, upstream (example.test) does not resolve.
    assert.notEqual(pulled.code, 0, 'the pull cannot succeed')
    assert.doesNotMatch(pulled.stderr, /failed to load|hosts\.toml|toml:/i, 'containerd parsed the file')
    assert.ok(mirror.seen.length > 0, `the mirror was never asked; ctr said: ${pulled.stderr}`)
    // containerd 1.6 resolves with HEAD on the manifest and names the registry in ?ns=.
    const first = mirror.seen[0]
    assert.deepEqual([first?.method, first?.url, first?.authorization], ['HEAD', '/v2/library/app/manifests/1.0?ns=example.test', undefined])
    // ctr's own account: the mirror's 404 made it move on to the next host.
    assert.ok(pulled.stderr.includes(`msg="trying next host - response was http.StatusNotFound" host="127.0.0.1:${mirror.port}"`), pulled.stderr)
  })

  it('with basic-auth credentials, containerd sends the Authorization header to the mirror', async () => {
    const secrets = path.join(work, 'basic-auth')
    await fs.mkdir(secrets, { recursive: true })
    await fs.writeFile(path.join(secrets, 'username'), 'hello')
    await fs.writeFile(path.join(secrets, 'password'), 'world')
    const res = await spegel(['configuration', '--containerd-registry-config-path', c.configPath, '--mirror-targets', mirror.url], secrets)
    assert.equal(res.code, 0, res.stderr)
    assert.match(await fs.readFile(path.join(c.configPath, '_default', 'hosts.toml'), 'utf8'), /\nAuthorization = 'Basic aGVsbG86d29ybGQ='$/)
    const pulled = await pull(c)
    assert.notEqual(pulled.code, 0)
    assert.ok(mirror.seen.length > 0, `the _default mirror was never asked; ctr said: ${pulled.stderr}`)
    assert.ok(mirror.seen.every((r) => r.authorization === 'Basic aGVsbG86d29ybGQ='), JSON.stringify(mirror.seen))
  })

  it('--prepend-existing keeps the existing mirror after ours, and containerd tries both in that order', async () => {
    await fs.mkdir(path.join(c.configPath, 'example.test', 'certs'), { recursive: true })
    await fs.writeFile(path.join(c.configPath, 'example.test', 'hosts.toml'), `server = "https://example.test"

[host."${corpMirror.url}"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
`)
    await fs.writeFile(path.join(c.configPath, 'example.test', 'certs', 'ca.crt'), 'not a real certificate')
    const res = await spegel(['configuration', '--containerd-registry-config-path', c.configPath, '--mirror-targets', mirror.url,
      '--mirrored-registries', 'https://example.test', '--prepend-existing'])
    assert.equal(res.code, 0, res.stderr)
    assert.equal(await fs.readFile(path.join(c.configPath, 'example.test', 'hosts.toml'), 'utf8'), `server = 'https://example.test'

[host.'${mirror.url}']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'

[host.'${corpMirror.url}']
capabilities = ['pull', 'resolve']
skip_verify = true`)
    assert.equal(await fs.readFile(path.join(c.configPath, 'example.test', 'certs', 'ca.crt'), 'utf8'), 'not a real certificate')

    const pulled = await pull(c)
    assert.notEqual(pulled.code, 0)
    const spegelFirst = mirror.seen[0]
    const corpFirst = corpMirror.seen[0]
    assert.ok(spegelFirst !== undefined && corpFirst !== undefined, `both mirrors must be asked; ctr said: ${pulled.stderr}`)
    assert.ok(spegelFirst.seq < corpFirst.seq, 'spegel\'s mirror is tried before the existing one')
  })

  it('cleanup restores the original files, reports done on /readyz for cleanup-wait, and exits 0 on SIGTERM', async () => {
    const original = { 'example.test/hosts.toml': `server = "https://example.test"\n\n[host."${corpMirror.url}"]\n  capabilities = ["pull", "resolve"]\n`, 'ghcr.io/ca.crt': 'x' }
    for (const [rel, content] of Object.entries(original)) {
      await fs.mkdir(path.dirname(path.join(c.configPath, rel)), { recursive: true })
      await fs.writeFile(path.join(c.configPath, rel), content)
    }
    const configured = await spegel(['configuration', '--containerd-registry-config-path', c.configPath, '--mirror-targets', mirror.url])
    assert.equal(configured.code, 0, configured.stderr)
    assert.deepEqual(Object.keys(await readTree(c.configPath)).sort(), ['_backup/example.test/hosts.toml', '_backup/ghcr.io/ca.crt', '_default/hosts.toml'])

    const port = await freePort()
    const child = spawn(process.execPath, [MAIN_JS, 'cleanup', '--addr', `127.0.0.1:${port}`, '--containerd-registry-config-path', c.configPath], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
    const exited = once(child, 'exit')
    try {
      await waitFor(async () => (await httpRequest(`http://127.0.0.1:${port}/readyz`, { timeoutMs: 1000 })).status === 200,
        { timeoutMs: 15_000, what: 'cleanup to answer /readyz' })
      assert.deepEqual(await readTree(c.configPath), original)

      const waited = await spegel(['cleanup-wait', '--probe-endpoint', `127.0.0.1:${port}`, '--threshold', '2', '--period', '50ms'])
      assert.equal(waited.code, 0, waited.stderr)
      assert.match(waited.stderr, /probe threshold reached/)

      // The files are containerd's own again: the pull goes straight to the old mirror.
      const pulled = await pull(c)
      assert.notEqual(pulled.code, 0)
      assert.equal(mirror.seen.length, 0, 'spegel\'s mirror is no longer configured')
      assert.ok(corpMirror.seen.length > 0, `the restored mirror was not used; ctr said: ${pulled.stderr}`)
    } finally {
      child.kill('SIGTERM')
    }
    const [code] = await exited
    assert.equal(code, 0, stderr)
    assert.match(stderr, /exit gracefully/)
  })
})

// ctr 1.6's --hosts-dir passes its value to HostDirFromRoot as ONE root (cmd/ctr/commands/resolver.go),
// the same call containerd 2.1+'s transfer service makes with CRI's raw config_path
// (core/transfer/registry/registry.go:127-128). So `ctr images pull --hosts-dir 'A:B'` looks where
// the transfer service looks: this checks the literal-directory workaround against containerd's
// real lookup code. What it cannot check is the transfer service itself (containerd 2.x does not
// run on this machine).
describe('a multi-directory config_path, read the way containerd 2.x\'s transfer service reads it', { skip }, () => {
  let c: ContainerdInstance
  let mirror: Awaited<ReturnType<typeof emptyRegistry>>
  let work: string

  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'spegel-multi-dir-'))
    c = await startContainerd({ name: 'multidir' })
    mirror = await emptyRegistry()
  })
  after(async () => {
    await c?.dispose()
    if (mirror !== undefined) await closeServer(mirror.server)
    await fs.rm(work, { recursive: true, force: true })
  })

  async function pullWith (hostsDir: string): Promise<{ code: number | null, stderr: string }> {
    const res = await run('ctr', ['-a', c.socketPath, '--connect-timeout', '5s', '-n', c.namespace, 'images', 'pull', '--hosts-dir', hostsDir, IMAGE], { timeoutMs: 60_000 })
    return { code: res.code, stderr: res.stderr }
  }

  it('only the literal joined directory reaches the mirror through HostDirFromRoot; cleanup takes it away again', async () => {
    const first = path.join(work, 'containerd', 'certs.d')
    const second = path.join(work, 'docker', 'certs.d')
    const list = `${first}:${second}`
    await fs.mkdir(path.join(second, 'example.test'), { recursive: true })
    await fs.writeFile(path.join(second, 'example.test', 'ca.crt'), 'docker certificate')

    // Files only in the first directory: the raw list finds nothing (the trap), the first directory does.
    await fs.mkdir(path.join(first, 'example.test'), { recursive: true })
    await fs.writeFile(path.join(first, 'example.test', 'hosts.toml'), `server = 'https://example.test'\n\n[host.'${mirror.url}']\ncapabilities = ['pull', 'resolve']\n`)
    assert.notEqual((await pullWith(list)).code, 0)
    assert.equal(mirror.seen.length, 0, 'with the raw list as one root, hosts.toml in the first directory is not found')
    await pullWith(first)
    assert.ok(mirror.seen.length > 0, 'the same file is found through the first directory')
    mirror.seen.length = 0
    await fs.rm(path.join(first, 'example.test'), { recursive: true })

    const res = await spegel(['configuration', '--containerd-registry-config-path', list, '--mirror-targets', mirror.url, '--mirrored-registries', 'https://example.test'])
    assert.equal(res.code, 0, res.stderr)
    const viaList = await pullWith(list)
    assert.notEqual(viaList.code, 0, 'nobody has the image')
    assert.ok(mirror.seen.length > 0, `the literal directory did not reach the mirror; ctr said: ${viaList.stderr}`)
    assert.equal(mirror.seen[0]?.url, '/v2/library/app/manifests/1.0?ns=example.test')
    mirror.seen.length = 0
    await pullWith(first)
    assert.ok(mirror.seen.length > 0, 'the first directory (local pull path) reaches the mirror too')
    assert.deepEqual(await readTree(second), { 'example.test/ca.crt': 'docker certificate' }, 'the later directory is not touched')

    const port = await freePort()
    const child = spawn(process.execPath, [MAIN_JS, 'cleanup', '--addr', `127.0.0.1:${port}`, '--containerd-registry-config-path', list], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
    const exited = once(child, 'exit')
    try {
      await waitFor(async () => (await httpRequest(`http://127.0.0.1:${port}/readyz`, { timeoutMs: 1000 })).status === 200,
        { timeoutMs: 15_000, what: 'cleanup to answer /readyz' })
    } finally {
      child.kill('SIGTERM')
    }
    const [code] = await exited
    assert.equal(code, 0, stderr)
    await assert.rejects(fs.stat(`${first}:`), { code: 'ENOENT' }, 'the literal directory tree is removed')
    assert.deepEqual(await readTree(first), {})
    mirror.seen.length = 0
    await pullWith(list)
    assert.equal(mirror.seen.length, 0, 'after cleanup the mirror is no longer configured')
  })
})
