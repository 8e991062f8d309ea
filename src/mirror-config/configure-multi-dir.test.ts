// `spegel configuration` / `cleanup` with a multi-directory config_path (containerd 2.2's default,
// EKS's value): the files go to the first directory (local pull path) and to the raw list as one
// literal directory (containerd 2.1+'s transfer service), and cleanup undoes both.
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLogger } from '../observability/logger.js'
import { addMirrorConfiguration, cleanupMirrorConfiguration, literalRootTop, mirrorWriteRoots, splitConfigPath } from './index.js'

const silent = createLogger({ level: 'silent' })

let root: string
before(async () => { root = await fs.mkdtemp(path.join(os.tmpdir(), 'mirror-multi-')) })
after(async () => { await fs.rm(root, { recursive: true, force: true }) })

let counter = 0
/** `<case>/etc/containerd/certs.d` and `<case>/etc/docker/certs.d`, both created, and their list. */
async function layout (): Promise<{ base: string, first: string, second: string, list: string }> {
  const base = path.join(root, `case-${counter++}`)
  const first = path.join(base, 'etc', 'containerd', 'certs.d')
  const second = path.join(base, 'etc', 'docker', 'certs.d')
  await fs.mkdir(first, { recursive: true })
  await fs.mkdir(second, { recursive: true })
  return { base, first, second, list: `${first}:${second}` }
}

async function readTree (dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  let entries
  try {
    entries = await fs.readdir(dir, { recursive: true, withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out
    throw err
  }
  for (const entry of entries) {
    if (entry.isFile()) out[path.relative(dir, path.join(entry.parentPath, entry.name))] = await fs.readFile(path.join(entry.parentPath, entry.name), 'utf8')
  }
  return out
}

async function exists (p: string): Promise<boolean> {
  try {
    await fs.lstat(p)
    return true
  } catch {
    return false
  }
}

const TARGET = 'http://127.0.0.1:5000'

describe('config-path helpers', () => {
  it('splits like Go\'s filepath.SplitList', () => {
    assert.deepEqual(splitConfigPath(''), [])
    assert.deepEqual(splitConfigPath('/a'), ['/a'])
    assert.deepEqual(splitConfigPath('/a:/b'), ['/a', '/b'])
    assert.deepEqual(splitConfigPath('/a::/b:'), ['/a', '', '/b', ''])
  })

  it('writes one directory for one directory, first + literal for a list', () => {
    assert.deepEqual(mirrorWriteRoots('/etc/containerd/certs.d'), [{ dir: '/etc/containerd/certs.d', readBy: 'local-and-transfer' }])
    assert.deepEqual(mirrorWriteRoots('/etc/containerd/certs.d:/etc/docker/certs.d'), [
      { dir: '/etc/containerd/certs.d', readBy: 'local' },
      { dir: '/etc/containerd/certs.d:/etc/docker/certs.d', readBy: 'transfer' }
    ])
    assert.equal(literalRootTop('/etc/containerd/certs.d:/etc/docker/certs.d'), '/etc/containerd/certs.d:')
    assert.equal(literalRootTop('/etc/containerd/certs.d'), undefined)
  })
})

describe('addMirrorConfiguration with a multi-directory config path', () => {
  it('writes the same hosts.toml into the first directory and the literal joined directory, and leaves the later ones alone', async () => {
    const { first, second, list } = await layout()
    await fs.mkdir(path.join(second, 'docker.io'))
    await fs.writeFile(path.join(second, 'docker.io', 'ca.crt'), 'docker daemon certificate')
    await fs.mkdir(path.join(first, 'ghcr.io'))
    await fs.writeFile(path.join(first, 'ghcr.io', 'hosts.toml'), 'server = "https://ghcr.io"\n')

    const written = await addMirrorConfiguration({ log: silent }, {
      configPath: list, mirroredRegistries: ['https://docker.io'], mirrorTargets: [TARGET], resolveTags: true, prependExisting: false
    })
    assert.deepEqual(written.map((w) => w.path), [path.join(first, 'docker.io', 'hosts.toml'), path.join(list, 'docker.io', 'hosts.toml')])
    // What containerd's transfer service opens: filepath.Join(config_path, host, "hosts.toml").
    assert.equal(path.join(list, 'docker.io', 'hosts.toml'), `${first}:${second}/docker.io/hosts.toml`)
    const firstTree = await readTree(first)
    const literalTree = await readTree(list)
    assert.deepEqual(Object.keys(firstTree).sort(), ['_backup/ghcr.io/hosts.toml', 'docker.io/hosts.toml'])
    assert.deepEqual(Object.keys(literalTree), ['docker.io/hosts.toml'])
    assert.equal(literalTree['docker.io/hosts.toml'], firstTree['docker.io/hosts.toml'])
    assert.match(literalTree['docker.io/hosts.toml'] ?? '', /^server = 'https:\/\/registry-1\.docker\.io'\n\n\[host\.'http:\/\/127\.0\.0\.1:5000'\]/)
    assert.deepEqual(await readTree(second), { 'docker.io/ca.crt': 'docker daemon certificate' })
  })

  it('is idempotent, and prepends the first directory\'s existing hosts with their certificates into both', async () => {
    const { first, list } = await layout()
    await fs.mkdir(path.join(first, 'docker.io'))
    await fs.writeFile(path.join(first, 'docker.io', 'hosts.toml'), 'server = "https://registry-1.docker.io"\n\n[host."https://corp.example"]\n  capabilities = ["pull"]\n  ca = "corp-ca.crt"\n')
    await fs.writeFile(path.join(first, 'docker.io', 'corp-ca.crt'), 'corp ca')
    const init = { configPath: list, mirroredRegistries: ['https://docker.io'], mirrorTargets: [TARGET], resolveTags: false, prependExisting: true }
    await addMirrorConfiguration({ log: silent }, init)
    const once = { first: await readTree(first), literal: await readTree(list) }
    await addMirrorConfiguration({ log: silent }, init)
    assert.deepEqual({ first: await readTree(first), literal: await readTree(list) }, once)
    assert.equal(once.literal['docker.io/corp-ca.crt'], 'corp ca')
    assert.match(once.literal['docker.io/hosts.toml'] ?? '', /\[host\.'http:\/\/127\.0\.0\.1:5000'\][\s\S]*\[host\.'https:\/\/corp\.example'\]/)
    assert.equal(once.literal['docker.io/hosts.toml'], once.first['docker.io/hosts.toml'])
  })
})

describe('cleanupMirrorConfiguration with a multi-directory config path', () => {
  it('restores the first directory and removes the literal directory up to its top', async () => {
    const { base, first, second, list } = await layout()
    const original = { 'ghcr.io/hosts.toml': 'server = "https://ghcr.io"\n' }
    await fs.mkdir(path.join(first, 'ghcr.io'))
    await fs.writeFile(path.join(first, 'ghcr.io', 'hosts.toml'), original['ghcr.io/hosts.toml'])
    await fs.writeFile(path.join(second, 'keep'), 'docker')
    await addMirrorConfiguration({ log: silent }, { configPath: list, mirroredRegistries: [], mirrorTargets: [TARGET], resolveTags: true, prependExisting: false })
    assert.ok(await exists(path.join(list, '_default', 'hosts.toml')))

    assert.equal(await cleanupMirrorConfiguration({ log: silent }, list), true)
    assert.deepEqual(await readTree(first), original)
    assert.equal(await exists(`${first}:`), false, 'the literal directory tree is gone')
    assert.deepEqual(await readTree(second), { keep: 'docker' })
    assert.ok(await exists(path.join(base, 'etc', 'containerd')))
    // Again: nothing to do, nothing thrown.
    assert.equal(await cleanupMirrorConfiguration({ log: silent }, list), false)
  })

  it('leaves a literal directory that holds someone else\'s files after restoring it', async () => {
    const { first, list } = await layout()
    await fs.mkdir(path.join(list, 'quay.io'), { recursive: true })
    await fs.writeFile(path.join(list, 'quay.io', 'hosts.toml'), 'server = "https://quay.io"\n')
    await addMirrorConfiguration({ log: silent }, { configPath: list, mirroredRegistries: [], mirrorTargets: [TARGET], resolveTags: true, prependExisting: false })
    assert.deepEqual(Object.keys(await readTree(list)).sort(), ['_backup/quay.io/hosts.toml', '_default/hosts.toml'])
    await cleanupMirrorConfiguration({ log: silent }, list)
    assert.deepEqual(await readTree(list), { 'quay.io/hosts.toml': 'server = "https://quay.io"\n' })
    assert.deepEqual(await readTree(first), {})
  })

  it('a single directory behaves as before: the directory stays', async () => {
    const { first } = await layout()
    await addMirrorConfiguration({ log: silent }, { configPath: first, mirroredRegistries: [], mirrorTargets: [TARGET], resolveTags: true, prependExisting: false })
    assert.equal(await cleanupMirrorConfiguration({ log: silent }, first), true)
    assert.ok(await exists(first))
    assert.deepEqual(await readTree(first), {})
  })
})
