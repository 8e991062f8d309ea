// `spegel doctor` against a real private containerd: healthy node, missing socket, stale socket
// after SIGKILL, and a non-root user facing containerd's root 0660 socket.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { runChecks, runDoctor } from '../../src/cli/doctor.js'
import type { CheckResult, DoctorConfig } from '../../src/cli/doctor.js'
import { nodeAddresses } from '../../src/cli/doctor/hosts.js'
import { containerdSkipReason, startContainerd } from '../helpers/containerd.js'
import type { ContainerdInstance } from '../helpers/containerd.js'
import { buildImage, MIN_LAYER_BYTES } from '../helpers/image.js'
import { run } from '../helpers/net.js'
import { generatePskFile } from '../../src/routing/p2p/psk.js'

const ALL_IDS = [
  'socket', 'socket-permissions', 'selinux', 'containerd', 'containerd-version', 'images',
  'content-path', 'containerd-config', 'config-path', 'discard-unpacked-layers', 'pull-path', 'hosts-config', 'router-psk'
]
const IMAGE_REF = 'docker.io/library/doctor:1.0'
const REGISTRY_PORT = 5000

const skip = containerdSkipReason() ?? (os.arch() === 'x64' ? false : 'imports assume an amd64 host (ctr imports the host platform)')

function configFor (c: ContainerdInstance, overrides: Partial<DoctorConfig> = {}): DoctorConfig {
  return {
    logLevel: 'INFO',
    containerdSock: c.socketPath,
    containerdSockExplicit: true,
    containerdNamespace: c.namespace,
    containerdContentPath: '',
    containerdConfig: c.configFile,
    containerdRegistryConfigPath: c.configPath,
    registryAddr: { host: '', port: REGISTRY_PORT },
    routerSecretPath: '',
    output: 'text',
    ...overrides
  }
}

function byId (checks: readonly CheckResult[], id: string): CheckResult {
  const found = checks.find((c) => c.id === id)
  assert.ok(found !== undefined, `no check ${id}`)
  return found
}

async function writeMirror (c: ContainerdInstance, registry: string, target: string): Promise<void> {
  await mkdir(path.join(c.configPath, registry), { recursive: true })
  await writeFile(path.join(c.configPath, registry, 'hosts.toml'), `server = 'https://registry-1.docker.io'

[host.'${target}']
capabilities = ['pull', 'resolve']
dial_timeout = '200ms'
`)
}

async function doctor (config: DoctorConfig): Promise<{ code: number, out: string }> {
  let out = ''
  const code = await runDoctor(config, { stdout: (s) => { out += s } })
  return { code, out }
}

describe('doctor against a healthy containerd', { skip }, () => {
  let c: ContainerdInstance
  let work: string
  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'doctor-img-'))
    c = await startContainerd({ name: 'doctor' })
    const image = await buildImage(work, IMAGE_REF, [MIN_LAYER_BYTES])
    assert.ok(image.archivePath !== undefined)
    await c.importImage(image.archivePath)
    await writeMirror(c, 'docker.io', `http://127.0.0.1:${REGISTRY_PORT}`)
  })
  after(async () => {
    await c?.dispose()
    await rm(work, { recursive: true, force: true })
  })

  it('exits 0 with every check passing or warning, one line each and a summary', async () => {
    const { code, out } = await doctor(configFor(c))
    assert.equal(code, 0, out)
    const lines = out.trimEnd().split('\n')
    const checkLines = lines.filter((l) => /^\[(PASS|WARN|FAIL|SKIP)\] /.test(l))
    assert.equal(checkLines.length, ALL_IDS.length, out)
    assert.ok(checkLines.every((l) => l.startsWith('[PASS]') || l.startsWith('[WARN]')), out)
    assert.match(out, new RegExp(`^\\[PASS\\] containerd socket +${c.socketPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is a socket`, 'm'))
    assert.match(lines.at(-1) ?? '', /^13 checks: .*0 failed, 0 skipped: this node is ready for spegel$/)
  })

  it('passes the checks that a healthy node must pass, with what it found', async () => {
    const checks = await runChecks(configFor(c))
    for (const id of ['socket', 'socket-permissions', 'containerd', 'images', 'content-path', 'containerd-config', 'config-path', 'discard-unpacked-layers', 'pull-path', 'hosts-config']) {
      assert.equal(byId(checks, id).status, 'pass', `${id}: ${byId(checks, id).detail}`)
    }
    assert.match(byId(checks, 'images').detail, /docker\.io\/library\/doctor:1\.0/)
    // Discovered through introspection, and cross-checked against an image's blob on disk.
    assert.match(byId(checks, 'content-path').detail, new RegExp(`^${c.contentPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(discovered from containerd\\) is readable and holds`))
    assert.match(byId(checks, 'hosts-config').detail, /mirrors docker\.io through this node on port 5000/)
    // Debian 12's containerd, which these tests use, is 1.6: older than 2.1 is a warning, not a failure.
    assert.match(byId(checks, 'containerd-version').detail, /^containerd \d+\.\d+/)
  })

  it('fails a content path that is readable but not this containerd\'s store', async () => {
    const other = await mkdtemp(path.join(os.tmpdir(), 'doctor-content-'))
    try {
      await mkdir(path.join(other, 'blobs', 'sha256'), { recursive: true })
      const { code, out } = await doctor(configFor(c, { containerdContentPath: other }))
      assert.equal(code, 1, out)
      assert.match(out, /\[FAIL\] content directory +.*is readable but lacks sha256:[0-9a-f]{64} \(target of docker\.io\/library\/doctor:1\.0\)/)
      const checks = await runChecks(configFor(c, { containerdContentPath: c.contentPath }))
      assert.equal(byId(checks, 'content-path').status, 'pass')
    } finally {
      await rm(other, { recursive: true, force: true })
    }
  })

  it('fails when no hosts.toml points at this node, suggesting spegel configuration', async () => {
    const elsewhere = await mkdtemp(path.join(os.tmpdir(), 'doctor-certs-'))
    try {
      await mkdir(path.join(elsewhere, 'docker.io'))
      // Documentation ranges (RFC 5737); take one this machine does not have.
      const local = new Set(nodeAddresses())
      const foreign = ['203.0.113.77', '198.51.100.77', '192.0.2.77'].find((a) => !local.has(a))
      assert.ok(foreign !== undefined)
      await writeFile(path.join(elsewhere, 'docker.io', 'hosts.toml'), `[host.'http://${foreign}:30020']\ncapabilities = ['pull', 'resolve']\n`)
      const checks = await runChecks(configFor(c, { containerdRegistryConfigPath: elsewhere }))
      const hosts = byId(checks, 'hosts-config')
      assert.equal(hosts.status, 'fail')
      assert.match(hosts.detail, new RegExp(`docker\\.io → ${foreign.replace(/\./g, '\\.')}:30020, not at this node's addresses`))
      assert.match(hosts.fix ?? '', /spegel configuration --containerd-registry-config-path .* --mirror-targets http:\/\/\S+:5000/)
      // containerd reads c.configPath, not this directory.
      assert.equal(byId(checks, 'config-path').status, 'warn')
    } finally {
      await rm(elsewhere, { recursive: true, force: true })
    }
  })

  it('warns about a router without a pre-shared key, passes a valid key and fails one the registry would refuse', async () => {
    const keys = await mkdtemp(path.join(os.tmpdir(), 'doctor-psk-'))
    try {
      const none = byId(await runChecks(configFor(c)), 'router-psk')
      assert.equal(none.status, 'warn')
      assert.match(none.detail, /no --router-secret-path/)
      assert.match(none.fix ?? '', /--router-secret-path .*ROUTER_SECRET_PATH/)
      const warned = await doctor(configFor(c))
      assert.equal(warned.code, 0, 'a warning does not fail doctor')
      assert.match(warned.out, /^\[WARN\] router pre-shared key +no --router-secret-path/m)

      const good = path.join(keys, 'router.psk')
      await generatePskFile(good)
      const valid = byId(await runChecks(configFor(c, { routerSecretPath: good })), 'router-psk')
      assert.equal(valid.status, 'pass', valid.detail)

      const bad = path.join(keys, 'bad.psk')
      await writeFile(bad, '/key/swarm/psk/1.0.0/\n/base16/\nnot-hex\n')
      for (const [file, why] of [[bad, /64-digit hex key/], [path.join(keys, 'missing.psk'), /cannot be read/]] as const) {
        const check = byId(await runChecks(configFor(c, { routerSecretPath: file })), 'router-psk')
        assert.equal(check.status, 'fail')
        assert.match(check.detail, why)
        assert.ok(check.detail.includes(file), check.detail)
      }
      assert.equal((await doctor(configFor(c, { routerSecretPath: bad }))).code, 1)
    } finally {
      await rm(keys, { recursive: true, force: true })
    }
  })

  it('prints JSON with ok and every check id', async () => {
    const { code, out } = await doctor(configFor(c, { output: 'json' }))
    assert.equal(code, 0)
    const report = JSON.parse(out) as { ok: unknown, checks: Array<Record<string, unknown>> }
    assert.equal(report.ok, true)
    assert.deepEqual(report.checks.map((k) => k.id), ALL_IDS)
    for (const k of report.checks) {
      assert.equal(typeof k.title, 'string')
      assert.ok(['pass', 'warn', 'fail', 'skip'].includes(String(k.status)))
      assert.equal(typeof k.detail, 'string')
    }
  })
})

describe('doctor with a socket that does not exist', () => {
  let dir: string
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'doctor-nosock-'))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('exits 1, fails the socket check with a fix naming --containerd-sock and skips what needs containerd', async () => {
    const missing = path.join(dir, 'containerd.sock')
    const config: DoctorConfig = {
      logLevel: 'INFO',
      containerdSock: missing,
      containerdSockExplicit: true,
      containerdNamespace: 'k8s.io',
      containerdContentPath: '',
      containerdConfig: path.join(dir, 'config.toml'),
      containerdRegistryConfigPath: path.join(dir, 'certs.d'),
      registryAddr: { host: '', port: REGISTRY_PORT },
      routerSecretPath: '',
      output: 'text'
    }
    const { code, out } = await doctor(config)
    assert.equal(code, 1, out)
    assert.match(out, /^\[FAIL\] containerd socket +.*containerd\.sock does not exist$/m)
    assert.match(out, /^ +fix: .*--containerd-sock/m)
    const checks = await runChecks(config)
    assert.equal(byId(checks, 'socket').status, 'fail')
    for (const id of ['containerd', 'containerd-version', 'images', 'content-path']) {
      const check = byId(checks, id)
      assert.equal(check.status, 'skip', `${id}: ${check.detail}`)
      assert.match(check.detail, /does not exist/)
    }
  })
})

describe('doctor with a stale socket after containerd was killed', { skip }, () => {
  let c: ContainerdInstance
  before(async () => {
    c = await startContainerd({ name: 'doctor-stale' })
    await c.kill()
  })
  after(async () => {
    await c?.dispose()
  })

  it('diagnoses ECONNREFUSED on a socket file that is still there', async () => {
    const { code, out } = await doctor(configFor(c))
    assert.equal(code, 1, out)
    const checks = await runChecks(configFor(c))
    assert.equal(byId(checks, 'socket').status, 'pass', 'the socket file stays behind after SIGKILL')
    const reachable = byId(checks, 'containerd')
    assert.equal(reachable.status, 'fail')
    assert.match(reachable.detail, /refuses connections .*\[ECONNREFUSED\]/)
    assert.match(reachable.fix ?? '', /start containerd/)
    assert.equal(byId(checks, 'containerd-version').status, 'skip')
    assert.match(byId(checks, 'containerd-version').detail, /ECONNREFUSED/)
    assert.equal(byId(checks, 'images').status, 'skip')
  })
})

const runuser = ['/usr/sbin/runuser', '/sbin/runuser', '/usr/bin/runuser'].find((p) => spawnSync(p, ['--help']).status === 0)
const nobodyUid = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim())
const nobodySkip = skip !== false ? skip : runuser === undefined ? 'runuser not found' : Number.isNaN(nobodyUid) ? 'no user nobody' : false

describe('doctor as user nobody against root\'s 0660 socket', { skip: nobodySkip }, () => {
  let c: ContainerdInstance
  const fixture = fileURLToPath(new URL('../fixtures/doctor-run.js', import.meta.url))

  async function doctorAsNobody (): Promise<{ ok: boolean, checks: CheckResult[] }> {
    const config = configFor(c, { output: 'json' })
    const res = await run(runuser ?? 'runuser', ['-u', 'nobody', '--', process.execPath, fixture, JSON.stringify(config)], { cwd: '/', timeoutMs: 60_000 })
    assert.equal(res.code, 1, `stdout: ${res.stdout}\nstderr: ${res.stderr}`)
    return JSON.parse(res.stdout) as { ok: boolean, checks: CheckResult[] }
  }

  before(async () => {
    c = await startContainerd({ name: 'doctor-nobody' })
  })
  after(async () => {
    await c?.dispose()
  })

  it('fails socket permissions naming the socket mode and the uid', async () => {
    // mkdtemp made the instance dir 0700; open it so the socket's own mode is what stops nobody.
    await chmod(c.dir, 0o755)
    const report = await doctorAsNobody()
    assert.equal(report.ok, false)
    assert.equal(byId(report.checks, 'socket').status, 'pass')
    const perms = byId(report.checks, 'socket-permissions')
    assert.equal(perms.status, 'fail')
    assert.match(perms.detail, new RegExp(`socket mode 0660 owner 0:0 gives uid ${nobodyUid} `))
    assert.match(perms.fix ?? '', /root \(uid 0\) or as a member of group 0/)
    const reachable = byId(report.checks, 'containerd')
    assert.equal(reachable.status, 'skip')
    assert.match(reachable.detail, /permission denied/)
  })

  it('names the directory that nobody cannot search when that is what blocks', async () => {
    await chmod(c.dir, 0o700)
    const report = await doctorAsNobody()
    assert.equal(byId(report.checks, 'socket').status, 'skip')
    const perms = byId(report.checks, 'socket-permissions')
    assert.equal(perms.status, 'fail')
    assert.match(perms.detail, new RegExp(`directory ${c.dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(mode 0700, owner 0:0\\) cannot be searched by uid ${nobodyUid}`))
    assert.match(perms.fix ?? '', /searchable \(x\) by uid/)
  })
})
