// The container image, run for real: the OCI archive that `npm run image` builds is imported
// into two private containerds, each started in its own network namespace (a test "node"), and
// run by containerd and runc with exactly the args, env, mounts and security context of the
// DaemonSet that `kubectl kustomize deploy/kubernetes` renders. The init container writes
// hosts.toml, node A serves its containerd's images, node B joins through DNS bootstrap (an
// /etc/hosts that lists the pods, as a headless Service's DNS name would), and containerd B
// pulls through B's container from A's while the image's registry is unreachable. Both stop on
// SIGTERM with exit 0.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as delay } from 'node:timers/promises'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseToml } from 'smol-toml'
import { containerdSkipReason, startContainerd, type ContainerdInstance } from '../helpers/containerd.js'
import { buildImage, type BuiltImage } from '../helpers/image.js'
import { run } from '../helpers/net.js'
import { createTestNetwork, netnsSkipReason, type NetnsNode, type TcpForward, type TestNetwork } from '../helpers/netns.js'
import { waitFor } from '../helpers/wait.js'
import { PAGE_OUT_AFTER_MS, statusRssFileKiB } from '../../src/observability/page-out.js'
import {
  CAPABILITY_BITS, ctrRunPlan, effectiveCapabilities, expandVars, findDaemonSet, nodePortForwards, parseManifests,
  parseQuantity, podContainers, probeUrl, processArgv, renderKustomize, type ContainerSpec, type CtrRunPlan, type IDaemonSet
} from '../helpers/daemonset.js'

const here = path.dirname(fileURLToPath(import.meta.url))
/** The build output this file belongs to (dist/, or a developer's own dist-<name>/). */
const DIST_DIR = path.resolve(here, '../..')
const ROOT = path.resolve(DIST_DIR, '..')
const KUSTOMIZE_DIR = path.join(ROOT, 'deploy', 'kubernetes')
/** `npm run image` writes dist/image/spegel-ts.oci.tar; the test builds from and into its own build output. */
const ARCHIVE = path.join(DIST_DIR, 'image', 'spegel-ts.oci.tar')
const BUILD_SCRIPT = path.join(ROOT, 'scripts', 'build-image.sh')
const MiB = 1024 * 1024
const CTR_ENV = { ...process.env, CONTAINERD_SNAPSHOTTER: 'native' }

function findInPath (bin: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => {
    if (d === '') return false
    try {
      accessSync(path.join(d, bin), fsConstants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

function skipReason (): string | false {
  const base = containerdSkipReason() ?? netnsSkipReason()
  if (base !== undefined) return base
  for (const [bin, fix] of [['runc', 'apt-get install -y runc'], ['buildah', 'apt-get install -y buildah'], ['kubectl', 'kubectl 1.27 or newer, for kustomize 5']] as const) {
    if (!findInPath(bin)) return `${bin} not found in PATH (${fix})`
  }
  return false
}

const skip = skipReason()

// --- the test-specific part: what each hostPath and Secret of the manifest is on a test node -----

interface TestNode {
  label: 'a' | 'b'
  net: NetnsNode
  containerd: ContainerdInstance
  dataDir: string
  podDir: string
  hostsFile: string
  resolvFile: string
  /** NodePorts (and hostPorts) played on this node, by port. */
  forwards: Map<number, TcpForward>
}

/**
 * A node's hostPaths → that node's private equivalents. Anything else fails: mounting a path this
 * table does not know would run the container against the real machine's files.
 */
function hostPathTable (node: TestNode): (hostPath: string, volume: string) => string {
  const c = node.containerd
  const table: Record<string, string> = {
    // Its config.toml and certs.d/ sit side by side, as in /etc/containerd.
    '/etc/containerd': c.dir,
    '/run/containerd': c.dir,
    '/run/containerd/containerd.sock': c.socketPath,
    '/var/lib/containerd/io.containerd.content.v1.content': c.contentPath,
    '/etc/containerd/certs.d': c.configPath,
    '/etc/containerd/config.toml': c.configFile,
    '/var/lib/spegel': node.dataDir
  }
  return (hostPath, volume) => {
    const mapped = table[path.posix.normalize(hostPath).replace(/\/$/, '')]
    if (mapped === undefined) {
      throw new Error(`volume ${volume}: hostPath ${hostPath} has no test equivalent; add it to hostPathTable in test/integration/image.test.ts (known: ${Object.keys(table).join(', ')})`)
    }
    return mapped
  }
}

/** Secrets the manifest expects to exist in the cluster (created by the operator, not by kustomize). */
function clusterSecrets (psk: string): Record<string, Record<string, string>> {
  return {
    'spegel-router-psk': { psk }
  }
}

// --- helpers ---------------------------------------------------------------------------------

interface ImageConfig { Entrypoint?: string[] | null, Cmd?: string[] | null, User?: string, Env?: string[] }

async function readArchiveEntry (archive: string, entry: string): Promise<Buffer> {
  const res = await run('tar', ['-xOf', archive, entry], { timeoutMs: 60_000 })
  if (res.code !== 0) throw new Error(`tar -xOf ${archive} ${entry}: ${res.stderr.trim()}`)
  return Buffer.from(res.stdout, 'utf8')
}

/** Name and config of the single image in an OCI archive. */
async function archiveImage (archive: string): Promise<{ name: string, config: ImageConfig }> {
  const index = JSON.parse((await readArchiveEntry(archive, 'index.json')).toString()) as { manifests: Array<{ digest: string, annotations?: Record<string, string> }> }
  assert.equal(index.manifests.length, 1, 'one image in the archive')
  const top = index.manifests[0]!
  const name = top.annotations?.['org.opencontainers.image.ref.name'] ?? top.annotations?.['io.containerd.image.name']
  assert.ok(name !== undefined, 'the archive names its image')
  const blob = async (digest: string): Promise<unknown> => JSON.parse((await readArchiveEntry(archive, `blobs/sha256/${digest.slice('sha256:'.length)}`)).toString())
  const manifest = await blob(top.digest) as { config: { digest: string } }
  const config = await blob(manifest.config.digest) as { config: ImageConfig }
  return { name, config: config.config }
}

/** Newest modification time of the files the archive is built from. */
async function newestInput (): Promise<number> {
  let newest = 0
  const visit = async (p: string): Promise<void> => {
    const st = await fs.stat(p)
    if (st.isDirectory()) {
      for (const e of await fs.readdir(p)) await visit(path.join(p, e))
    } else {
      newest = Math.max(newest, st.mtimeMs)
    }
  }
  await visit(path.join(DIST_DIR, 'src'))
  for (const p of ['proto', 'package.json', 'package-lock.json', 'scripts/build-image.sh']) await visit(path.join(ROOT, p))
  return newest
}

/** Values of a list flag: `--f=a,b`, `--f a b` (until the next flag), repeated; else the env var. */
function flagValues (argv: readonly string[], env: ReadonlyArray<{ name: string, value: string }>, flag: string, envName: string): string[] | undefined {
  const out: string[] = []
  let seen = false
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a.startsWith(`--${flag}=`)) {
      seen = true
      out.push(...a.slice(flag.length + 3).split(',').filter((s) => s !== ''))
    } else if (a === `--${flag}`) {
      seen = true
      while (i + 1 < argv.length && !argv[i + 1]!.startsWith('-')) out.push(...argv[++i]!.split(',').filter((s) => s !== ''))
    }
  }
  if (seen) return out
  const e = env.find((x) => x.name === envName)
  return e === undefined ? undefined : e.value.split(',').map((s) => s.trim()).filter((s) => s !== '')
}

function flagValue (argv: readonly string[], env: ReadonlyArray<{ name: string, value: string }>, flag: string, envName: string): string | undefined {
  const values = flagValues(argv, env, flag, envName)
  return values === undefined ? undefined : values[values.length - 1]
}

function capabilitiesOf (status: string): string[] {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)
  if (m === null) throw new Error('no CapEff line in /proc/<pid>/status')
  const bits = BigInt(`0x${m[1]}`)
  return Object.entries(CAPABILITY_BITS).filter(([, bit]) => (bits >> BigInt(bit)) & 1n).map(([name]) => name).sort((a, b) => CAPABILITY_BITS[a]! - CAPABILITY_BITS[b]!)
}

/**
 * What the kernel says about the container's process, against the manifest: argv, environment,
 * mounts (read-only where asked), root filesystem, capabilities, memory limit.
 */
async function verifyProcess (pid: number, spec: ContainerSpec, plan: CtrRunPlan, argv: string[], t?: { diagnostic: (s: string) => void }): Promise<void> {
  // The pid file is written between runc's create and start, while `runc init` still waits to exec.
  const cmdline = await waitFor(async () => {
    const args = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').slice(0, -1)
    // Empty while the exec is under way (the kernel has dropped the old memory map and not yet
    // set up the new one's arguments).
    return args.length === 0 || (args[0] === 'runc' && args[1] === 'init') ? undefined : args
  }, { timeoutMs: 30_000, intervalMs: 20, what: `${spec.name}: pid ${pid} to exec the container's command` })
  assert.deepEqual(cmdline, argv, `${spec.name}: the process runs exactly the manifest's command and args`)
  const environ = new Set((await fs.readFile(`/proc/${pid}/environ`, 'utf8')).split('\0'))
  for (const e of spec.env) assert.ok(environ.has(`${e.name}=${e.value}`), `${spec.name}: env ${e.name}=${e.value}`)
  const mounts = new Map<string, string[]>()
  for (const line of (await fs.readFile(`/proc/${pid}/mountinfo`, 'utf8')).split('\n')) {
    const f = line.split(' ')
    if (f.length > 5) mounts.set(f[4]!, f[5]!.split(','))
  }
  for (const m of spec.mounts) {
    const opts = mounts.get(m.destination)
    assert.ok(opts !== undefined, `${spec.name}: ${m.destination} is mounted`)
    assert.equal(opts.includes('ro'), m.readOnly, `${spec.name}: ${m.destination} is ${m.readOnly ? 'read-only' : 'writable'}`)
  }
  assert.equal(mounts.get('/')?.includes('ro'), spec.securityContext.readOnlyRootFilesystem === true, `${spec.name}: root filesystem read-only as readOnlyRootFilesystem says`)
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8')
  if (plan.capabilities !== undefined) assert.deepEqual(capabilitiesOf(status), plan.capabilities, `${spec.name}: effective capabilities as the securityContext asks`)
  const nnp = /^NoNewPrivs:\s*(\d)$/m.exec(status)?.[1]
  assert.equal(nnp, spec.securityContext.allowPrivilegeEscalation === false ? '1' : '0', `${spec.name}: no_new_privs follows allowPrivilegeEscalation`)
  const limit = spec.resources.limits.memory
  if (limit !== undefined) {
    const got = await memoryLimitOf(pid)
    if (got === undefined) t?.diagnostic(`${spec.name}: memory limit not verified (no memory cgroup found for pid ${pid})`)
    else assert.equal(got, Math.ceil(parseQuantity(limit)), `${spec.name}: memory cgroup limit is limits.memory`)
  }
}

/** The memory limit of a process's cgroup (v1 or v2), undefined when it cannot be found. */
async function memoryLimitOf (pid: number): Promise<number | undefined> {
  const cgroups = await fs.readFile(`/proc/${pid}/cgroup`, 'utf8')
  const v1 = /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)$/m.exec(cgroups)?.[1]
  const v2 = /^0::(.*)$/m.exec(cgroups)?.[1]
  const candidates = [
    ...(v1 === undefined ? [] : [`/sys/fs/cgroup/memory${v1}/memory.limit_in_bytes`]),
    ...(v2 === undefined ? [] : [`/sys/fs/cgroup${v2}/memory.max`, `/sys/fs/cgroup/unified${v2}/memory.max`])
  ]
  for (const file of candidates) {
    const text = await fs.readFile(file, 'utf8').catch(() => undefined)
    if (text !== undefined && /^\d+$/.test(text.trim())) return Number(text.trim())
  }
  return undefined
}

interface RunningContainer {
  id: string
  node: TestNode
  spec: ContainerSpec
  child: ChildProcess
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Set once ctr has exited. */
  exitStatus: () => { code: number | null, signal: NodeJS.Signals | null } | undefined
  pidFile: string
  output: () => string
  startedAt: number
}

// --- the test ---------------------------------------------------------------------------------

describe('DaemonSet to container translation (no root needed)', () => {
  it('expands $(VAR) as Kubernetes does', () => {
    const vars = new Map([['NODE_IP', '10.0.0.1'], ['EMPTY', '']])
    assert.equal(expandVars('http://$(NODE_IP):30020', vars), 'http://10.0.0.1:30020')
    assert.equal(expandVars('$(UNSET)-$(EMPTY)-$$(NODE_IP)-$$-$x-$(open', vars), '$(UNSET)--$(NODE_IP)-$-$x-$(open')
  })

  it('parses quantities', () => {
    assert.equal(parseQuantity('512Mi'), 512 * MiB)
    assert.equal(parseQuantity('100m'), 0.1)
    assert.equal(parseQuantity('1.5G'), 1.5e9)
    assert.equal(parseQuantity('2e3'), 2000)
    assert.equal(parseQuantity(3), 3)
    assert.throws(() => parseQuantity('12 MB'), /invalid quantity/)
  })

  it('computes the CRI capability set from drop and add', () => {
    assert.deepEqual(effectiveCapabilities({ capabilities: { drop: ['ALL'] } }), [])
    assert.deepEqual(effectiveCapabilities({ capabilities: { drop: ['ALL'], add: ['NET_BIND_SERVICE', 'CAP_CHOWN'] } }), ['CAP_CHOWN', 'CAP_NET_BIND_SERVICE'])
    assert.ok(!effectiveCapabilities({ capabilities: { drop: ['NET_RAW'] } })!.includes('CAP_NET_RAW'))
    assert.equal(effectiveCapabilities({ privileged: true }), undefined)
    assert.throws(() => effectiveCapabilities({ capabilities: { add: ['NOPE'] } }), /unknown capability/)
  })

  it('reads list flags and falls back to the environment', () => {
    const env = [{ name: 'MIRROR_TARGETS', value: 'http://a:1, http://b:2' }]
    assert.deepEqual(flagValues(['configuration', '--mirror-targets', 'http://x:1', 'http://y:2', '--resolve-tags=true'], env, 'mirror-targets', 'MIRROR_TARGETS'), ['http://x:1', 'http://y:2'])
    assert.deepEqual(flagValues(['configuration', '--mirror-targets=http://x:1,http://y:2'], env, 'mirror-targets', 'MIRROR_TARGETS'), ['http://x:1', 'http://y:2'])
    assert.deepEqual(flagValues(['configuration'], env, 'mirror-targets', 'MIRROR_TARGETS'), ['http://a:1', 'http://b:2'])
    assert.equal(flagValues(['configuration'], [], 'mirror-targets', 'MIRROR_TARGETS'), undefined)
  })

  it('turns a pod template into container specs and ctr flags, and rejects unknown hostPaths', async () => {
    const scratchDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spegel-ds-unit-'))
    try {
      const hostDir = path.join(scratchDir, 'host-data')
      const objects = parseManifests(`
apiVersion: apps/v1
kind: DaemonSet
metadata: { name: x, namespace: ns1 }
spec:
  selector: { matchLabels: { app: x } }
  template:
    metadata: { labels: { app: x } }
    spec:
      containers:
        - name: main
          image: img
          args: [serve, --addr=$(NODE_IP):$(PORT), --mem=$(MEM)]
          env:
            - { name: NODE_IP, valueFrom: { fieldRef: { fieldPath: status.hostIP } } }
            - { name: PORT, value: "5000" }
            - { name: MEM, valueFrom: { resourceFieldRef: { resource: limits.memory, divisor: 1Mi } } }
            - { name: KEY, valueFrom: { secretKeyRef: { name: s1, key: k } } }
          resources: { limits: { memory: 64Mi }, requests: { cpu: 250m } }
          securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: [ALL] } }
          volumeMounts:
            - { name: data, mountPath: /data }
            - { name: secret, mountPath: /secret }
      volumes:
        - { name: data, hostPath: { path: /var/lib/x, type: DirectoryOrCreate } }
        - { name: secret, secret: { secretName: s1, defaultMode: 0400 } }
---
apiVersion: v1
kind: Secret
metadata: { name: s1, namespace: ns1 }
data: { k: ${Buffer.from('v').toString('base64')} }
`)
      const ds = findDaemonSet(objects)
      const ctx = {
        nodeName: 'n1', nodeIP: '10.1.2.3', podIP: '10.1.2.3', podName: 'x-1', scratchDir,
        nodeAllocatable: { cpu: 2, memory: '8Gi' },
        mapHostPath: (p: string) => { if (p === '/var/lib/x') return hostDir; throw new Error(`unknown hostPath ${p}`) }
      }
      const [spec] = await podContainers(ds, objects, ctx)
      assert.deepEqual(spec!.args, ['serve', '--addr=10.1.2.3:5000', '--mem=64'])
      assert.equal(spec!.env.find((e) => e.name === 'KEY')?.value, 'v')
      assert.ok(statSync(hostDir).isDirectory(), 'DirectoryOrCreate created the mapped directory')
      const secretMount = spec!.mounts.find((m) => m.destination === '/secret')!
      assert.equal(secretMount.readOnly, true)
      assert.equal(statSync(path.join(secretMount.source, 'k')).mode & 0o777, 0o400)
      assert.deepEqual(processArgv(spec!, { Entrypoint: ['/bin/app'], Cmd: ['ignored'] }), ['/bin/app', 'serve', '--addr=10.1.2.3:5000', '--mem=64'])
      const plan = ctrRunPlan(spec!, { networkNamespacePath: '/run/netns/n1' })
      const flags = plan.flags.join(' ')
      for (const f of ['--read-only', '--memory-limit 67108864', '--cpu-shares 256', '--cap-drop CAP_CHOWN', `src=${hostDir},dst=/data,options=rbind:rw`]) {
        assert.ok(flags.includes(f), `ctr flags have ${f}: ${flags}`)
      }
      assert.ok(!flags.includes('--allow-new-privs'), 'allowPrivilegeEscalation: false keeps no_new_privs')
      assert.deepEqual(plan.capabilities, [])
      await assert.rejects(podContainers(ds, objects, { ...ctx, mapHostPath: (p: string) => { throw new Error(`unknown hostPath ${p}`) } }), /unknown hostPath \/var\/lib\/x/)
    } finally {
      await fs.rm(scratchDir, { recursive: true, force: true })
    }
  })
})

describe('container image under containerd, as the rendered DaemonSet runs it', { skip, timeout: 300_000 }, () => {
  const runId = `${process.pid}-${randomBytes(2).toString('hex')}`
  let workDir: string
  let network: TestNetwork | undefined
  const nodes: TestNode[] = []
  const containers: RunningContainer[] = []
  let imageName: string
  let imageConfig: ImageConfig
  let runImage: string
  let ds: IDaemonSet
  let objects: Array<Record<string, unknown>>
  let testImage: BuiltImage
  let testRegistry: string
  let bootstrapNames: string[]
  let buildMs: number | undefined
  const reported = new Set<string>()
  const psk = `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}\n`

  async function writePodFiles (node: TestNode, bootstrapIps: string[]): Promise<void> {
    // Written in place (same inode): the file is bind-mounted into running containers, and a
    // renamed replacement would not be seen through the mount.
    const lines = ['127.0.0.1 localhost', '::1 localhost ip6-localhost ip6-loopback', `${node.net.ip} spegel-test-node-${node.label}`]
    for (const ip of bootstrapIps) lines.push(`${ip} ${bootstrapNames.join(' ')}`)
    await fs.writeFile(node.hostsFile, lines.join('\n') + '\n')
  }

  async function specsFor (node: TestNode): Promise<ContainerSpec[]> {
    return await podContainers(ds, objects, {
      nodeName: `spegel-test-node-${node.label}`,
      nodeIP: node.net.ip,
      // No CNI: pods share their node's network namespace, so the pod IP is the node IP.
      podIP: node.net.ip,
      podName: `spegel-${node.label}`,
      nodeAllocatable: { cpu: os.cpus().length, memory: os.totalmem() },
      mapHostPath: hostPathTable(node),
      secrets: clusterSecrets(psk),
      scratchDir: node.podDir
    })
  }

  async function startContainer (node: TestNode, spec: ContainerSpec, t?: { diagnostic: (s: string) => void }): Promise<RunningContainer> {
    const plan = ctrRunPlan(spec, {
      networkNamespacePath: node.net.nsPath,
      kubeletMounts: [
        { source: node.hostsFile, destination: '/etc/hosts' },
        { source: node.resolvFile, destination: '/etc/resolv.conf' }
      ],
      ...(imageConfig.User === undefined ? {} : { imageUser: imageConfig.User })
    })
    for (const line of plan.notApplied) {
      const text = `${spec.name}: not applied: ${line}`
      if (!reported.has(text)) t?.diagnostic(text)
      reported.add(text)
    }
    for (const f of plan.portForwards) {
      if (!node.forwards.has(f.hostPort)) node.forwards.set(f.hostPort, await node.net.forwardTcp({ host: node.net.ip, port: f.hostPort }, { host: node.net.ip, port: f.containerPort }))
    }
    const id = `spgimg-${runId}-${node.label}-${spec.name}`
    const runDir = path.join(node.podDir, 'ctr', spec.name)
    await fs.mkdir(runDir, { recursive: true })
    const pidFile = path.join(runDir, 'pid')
    const argv = processArgv(spec, imageConfig)
    const c = node.containerd
    const child = spawn('ctr', [
      '-a', c.socketPath, '-n', c.namespace, 'run', '--rm',
      '--runc-root', path.join(node.podDir, 'runc'), '--fifo-dir', path.join(runDir, 'fifo'), '--pid-file', pidFile,
      ...plan.flags, runImage, id, ...argv
    ], { stdio: ['ignore', 'pipe', 'pipe'], env: CTR_ENV })
    let out = ''
    const keep = (chunk: Buffer): void => {
      out += chunk.toString()
      if (out.length > 256 * 1024) out = out.slice(-128 * 1024)
    }
    child.stdout.on('data', keep)
    child.stderr.on('data', keep)
    let exit: { code: number | null, signal: NodeJS.Signals | null } | undefined
    const exited = once(child, 'exit').then(([code, signal]) => {
      exit = { code: code as number | null, signal: signal as NodeJS.Signals | null }
      return exit
    })
    const rc: RunningContainer = { id, node, spec, child, exited, exitStatus: () => exit, pidFile, output: () => out, startedAt: performance.now() }
    containers.push(rc)
    // The pid file appears once runc created the process; a failed start ends ctr first.
    const deadline = Date.now() + 60_000
    let pid: number
    for (;;) {
      const text = await fs.readFile(pidFile, 'utf8').catch(() => '')
      if (text.trim() !== '') {
        pid = Number(text.trim())
        break
      }
      if (exit !== undefined) throw new Error(`ctr run ${spec.name} on node ${node.label} exited (${exit.code ?? exit.signal}) before the container started:\n${out.slice(-3000)}`)
      if (Date.now() > deadline) throw new Error(`${spec.name} on node ${node.label} did not start within 60 s:\n${out.slice(-3000)}`)
      await Promise.race([delay(50), exited])
    }
    // A short-lived init container may be gone already; a running one is checked from outside.
    if (exit === undefined && !spec.isInit) await verifyProcess(pid, spec, plan, argv, t)
    return rc
  }

  async function runToCompletion (node: TestNode, spec: ContainerSpec, t: { diagnostic: (s: string) => void }): Promise<string> {
    const rc = await startContainer(node, spec, t)
    const { code, signal } = await waitFor(() => rc.exitStatus(),
      { timeoutMs: 60_000, intervalMs: 50, what: `init container ${spec.name} on node ${node.label} to finish` })
    assert.equal(code, 0, `init container ${spec.name} exit code (signal ${signal}); output:\n${rc.output()}`)
    return rc.output()
  }

  async function stopContainer (rc: RunningContainer): Promise<{ code: number | null, signal: NodeJS.Signals | null }> {
    // What the kubelet does: SIGTERM through the runtime, then wait up to the grace period.
    const res = await run('ctr', ['-a', rc.node.containerd.socketPath, '-n', rc.node.containerd.namespace, 'tasks', 'kill', '--signal', 'SIGTERM', rc.id], { timeoutMs: 30_000 })
    assert.equal(res.code, 0, `ctr tasks kill ${rc.id}: ${res.stderr}`)
    return await waitFor(() => rc.exitStatus(), {
      timeoutMs: rc.spec.terminationGracePeriodSeconds * 1000,
      intervalMs: 50,
      what: `${rc.spec.name} on node ${rc.node.label} to exit after SIGTERM (grace period ${rc.spec.terminationGracePeriodSeconds} s)`
    }).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- ${rc.id} output ---\n${rc.output().slice(-4000)}`, { cause: err })
    })
  }

  async function manifestVia (node: TestNode, registryUrl: string): Promise<{ status: number, digest: string | undefined }> {
    const { repo, tag } = splitRef(testImage.ref)
    const res = await node.net.http(`${registryUrl}/v2/${repo}/manifests/${tag}?ns=${testRegistry}`)
    return { status: res.status, digest: res.headers['docker-content-digest'] }
  }

  function registrySpec (specs: ContainerSpec[]): ContainerSpec {
    const s = specs.find((x) => !x.isInit && x.name === 'registry')
    assert.ok(s !== undefined, `the DaemonSet has a container named registry (has: ${specs.map((x) => x.name).join(', ')})`)
    return s
  }

  function registryBaseUrl (spec: ContainerSpec, node: TestNode): string {
    const url = new URL(probeUrl(spec, spec.readinessProbe, node.net.ip))
    return `${url.protocol}//${url.host}`
  }

  // Interrupted runs: the helpers kill containerd, shims and containers and delete the
  // namespaces; what those shims had mounted is released here.
  const mountRoots = (): string[] => [...(workDir === undefined ? [] : [workDir]), ...nodes.map((n) => n.containerd.dir)]
  const onExit = (): void => { unmountBelowSync(mountRoots()) }
  const onSignal = (signal: NodeJS.Signals): void => {
    onExit()
    process.off('exit', onExit)
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, onSignal)
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
  }

  before(async () => {
    process.on('exit', onExit)
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal)
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spegel-image-test-'))

    // The archive: reused when newer than everything it is built from, otherwise built now.
    const archiveMtime = statSync(ARCHIVE, { throwIfNoEntry: false })?.mtimeMs ?? 0
    if (archiveMtime < await newestInput()) {
      const started = performance.now()
      const res = await run('bash', [BUILD_SCRIPT], { cwd: ROOT, timeoutMs: 8 * 60_000, env: { ...process.env, IMAGE_DIST: DIST_DIR, IMAGE_OUT: ARCHIVE } })
      if (res.code !== 0) throw new Error(`scripts/build-image.sh failed (${res.code ?? res.signal}):\n${res.stderr}`)
      buildMs = performance.now() - started
    }
    ;({ name: imageName, config: imageConfig } = await archiveImage(ARCHIVE))

    // The manifests, exactly as `kubectl apply -k deploy/kubernetes` would send them.
    objects = parseManifests(await renderKustomize(KUSTOMIZE_DIR))
    ds = findDaemonSet(objects)
    const namespace = ds.metadata?.namespace ?? 'default'

    network = await createTestNetwork(2, { prefix: `spgimg${process.pid}` })
    for (const [i, label] of (['a', 'b'] as const).entries()) {
      const net = network.nodes[i]!
      const containerd = await startContainerdIn(net, workDir, label)
      const podDir = path.join(workDir, `pod-${label}`)
      await fs.mkdir(podDir, { recursive: true })
      const node: TestNode = {
        label,
        net,
        containerd,
        dataDir: path.join(workDir, `spegel-data-${label}`),
        podDir,
        hostsFile: path.join(podDir, 'hosts'),
        resolvFile: path.join(podDir, 'resolv.conf'),
        forwards: new Map()
      }
      // The kubelet's resolv.conf for a pod (ClusterFirst), without a nameserver: there is
      // no cluster DNS here, names resolve through the mounted /etc/hosts.
      await fs.writeFile(node.resolvFile, `search ${namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:1\n`)
      nodes.push(node)
    }

    // The DNS bootstrap name the registry container uses must be the headless Service's.
    const specsA = await specsFor(nodes[0]!)
    const reg = registrySpec(specsA)
    const regArgv = processArgv(reg, imageConfig)
    assert.equal(flagValue(regArgv, reg.env, 'bootstrap-kind', 'BOOTSTRAP_KIND'), 'dns', 'this test emulates the DNS bootstrap; the manifest must use it')
    const domain = flagValue(regArgv, reg.env, 'dns-bootstrap-domain', 'DNS_BOOTSTRAP_DOMAIN')
    assert.ok(domain !== undefined && domain !== '', '--dns-bootstrap-domain is set')
    const headless = objects.filter((o) => o.kind === 'Service' && (o.spec as { clusterIP?: string } | undefined)?.clusterIP === 'None')
    const svcNames = headless.map((o) => `${(o.metadata as { name: string }).name}.${(o.metadata as { namespace?: string }).namespace ?? namespace}`)
    const fqdn = domain.replace(/\.$/, '')
    const service = svcNames.find((s) => [s, `${s}.svc`, `${s}.svc.cluster.local`].includes(fqdn) || fqdn === s.split('.')[0])
    assert.ok(service !== undefined, `--dns-bootstrap-domain ${domain} names a headless Service of the manifests (${svcNames.join(', ') || 'none'})`)
    bootstrapNames = [...new Set([domain, fqdn, `${service}.svc.cluster.local`])]
    // The kubelet writes /etc/hosts before the pod's first container; the bootstrap name
    // lists only node A's pod until node B's registry container starts.
    for (const node of nodes) await writePodFiles(node, [nodes[0]!.net.ip])

    const ctrdNamespace = flagValue(regArgv, reg.env, 'containerd-namespace', 'CONTAINERD_NAMESPACE') ?? 'k8s.io'
    assert.equal(ctrdNamespace, nodes[0]!.containerd.namespace, 'the containerd namespace the manifest reads is the one images are imported into')

    // kube-proxy's part: each node's NodePorts lead to its own pod (pod IP = node IP here).
    for (const node of nodes) {
      for (const f of nodePortForwards(objects, ds, specsA)) {
        node.forwards.set(f.nodePort, await node.net.forwardTcp({ host: node.net.ip, port: f.nodePort }, { host: node.net.ip, port: f.podPort }))
      }
    }

    // A registry the manifest mirrors, so containerd sends the pull to the node.
    const mirrored = flagValues(regArgv, reg.env, 'mirrored-registries', 'MIRRORED_REGISTRIES') ?? []
    const first = mirrored.find((r) => r !== '_default' && r !== '*')
    testRegistry = first === undefined ? 'example.test' : new URL(first).host
    testImage = await buildImage(path.join(workDir, 'test-image'), `${testRegistry}/spegel-image-test/app:1.0`, [4096, 3 * MiB])
  })

  after(async () => {
    const problems: string[] = []
    for (const rc of containers) {
      const c = rc.node.containerd
      const ctr = async (args: string[]): Promise<void> => {
        const res = await run('ctr', ['-a', c.socketPath, '--connect-timeout', '5s', '-n', c.namespace, ...args], { timeoutMs: 30_000, env: CTR_ENV })
        if (res.code !== 0 && !/not found/i.test(res.stderr)) problems.push(`ctr ${args.join(' ')}: ${res.stderr.trim()}`)
      }
      if (rc.child.exitCode === null && rc.child.signalCode === null) {
        await ctr(['tasks', 'kill', '--all', '--signal', 'SIGKILL', rc.id])
        await Promise.race([rc.exited, new Promise((resolve) => setTimeout(resolve, 10_000).unref())])
        if (rc.child.exitCode === null && rc.child.signalCode === null) rc.child.kill('SIGKILL')
      }
      // `ctr run --rm` removes both after a normal exit; after a failure they may remain.
      await ctr(['tasks', 'delete', '--force', rc.id])
      await ctr(['containers', 'delete', rc.id])
    }
    for (const n of nodes) {
      for (const f of n.forwards.values()) await f.close().catch((err: unknown) => problems.push(`forwarder on ${n.label}: ${String(err)}`))
    }
    unmountBelowSync(mountRoots())
    for (const n of nodes) await n.containerd.dispose().catch((err: unknown) => problems.push(`containerd ${n.label}: ${String(err)}`))
    await network?.dispose().catch((err: unknown) => problems.push(String(err)))
    if (workDir !== undefined) await fs.rm(workDir, { recursive: true, force: true, maxRetries: 3 })
    process.off('exit', onExit)
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, onSignal)
    if (problems.length > 0) throw new Error(`cleanup: ${problems.join('\n')}`)
  })

  it('imports the archive into each node\'s containerd', async (t) => {
    const size = (await fs.stat(ARCHIVE)).size
    t.diagnostic(`archive ${path.relative(ROOT, ARCHIVE)}: ${(size / MiB).toFixed(1)} MiB (${imageName})${buildMs === undefined ? ', reused' : `, built in ${(buildMs / 1000).toFixed(1)} s`}`)
    const manifestImage = registrySpec(await specsFor(nodes[0]!)).image
    for (const node of nodes) {
      const started = performance.now()
      await node.containerd.importImage(ARCHIVE)
      t.diagnostic(`import into containerd ${node.label}: ${(performance.now() - started).toFixed(0)} ms`)
      // Run it under the name the manifest uses, as a kubelet would pull it.
      if (manifestImage !== imageName && !manifestImage.includes('@')) {
        await node.containerd.ctr(['images', 'tag', '--force', imageName, manifestImage])
      }
    }
    runImage = manifestImage !== imageName && !manifestImage.includes('@') ? manifestImage : imageName
    if (runImage !== manifestImage) t.diagnostic(`the manifest's image ${manifestImage} is pinned by digest; ran ${imageName} instead`)
    const { stdout } = await nodes[0]!.containerd.ctr(['images', 'ls', '-q'])
    assert.ok(stdout.split('\n').includes(runImage), `${runImage} is in containerd a`)
  })

  it('init containers write hosts.toml naming the mirror target the manifest intends', async (t) => {
    for (const node of nodes) {
      const inits = (await specsFor(node)).filter((s) => s.isInit)
      assert.ok(inits.length > 0, 'the DaemonSet has init containers')
      for (const spec of inits) await runToCompletion(node, spec, t)
      const config = inits.find((s) => processArgv(s, imageConfig).includes('configuration'))
      assert.ok(config !== undefined, 'an init container runs `configuration`')
      const argv = processArgv(config, imageConfig)
      const targets = flagValues(argv, config.env, 'mirror-targets', 'MIRROR_TARGETS') ?? []
      assert.ok(targets.length > 0, '--mirror-targets is set')
      assert.ok(targets.some((u) => new URL(u).hostname === node.net.ip), `a mirror target is this node's IP ${node.net.ip}: ${targets.join(', ')}`)
      const configPath = flagValue(argv, config.env, 'containerd-registry-config-path', 'CONTAINERD_REGISTRY_CONFIG_PATH') ?? '/etc/containerd/certs.d'
      const mount = config.mounts.find((m) => m.destination === configPath)
      assert.ok(mount !== undefined && mount.source === node.containerd.configPath, `${configPath} is mounted from containerd ${node.label}'s config_path`)
      const mirrored = flagValues(argv, config.env, 'mirrored-registries', 'MIRRORED_REGISTRIES') ?? ['_default']
      const dirs = mirrored.map((r) => (r === '_default' || r === '*' ? '_default' : new URL(r).host))
      for (const dir of dirs) {
        const file = path.join(node.containerd.configPath, dir, 'hosts.toml')
        const toml = parseToml(await fs.readFile(file, 'utf8')) as { host?: Record<string, unknown> }
        assert.deepEqual(Object.keys(toml.host ?? {}), targets.map((u) => u.replace(/\/$/, '')), `${path.relative(node.containerd.dir, file)} on node ${node.label}`)
      }
      t.diagnostic(`node ${node.label}: hosts.toml for ${dirs.join(', ')} → ${targets.join(', ')}`)
    }
  })

  it('runs the registry container on node A: ready, and serving containerd A\'s images', async (t) => {
    const a = nodes[0]!
    // A one-pod cluster so far: the headless Service's name resolves to node A only.
    const spec = registrySpec(await specsFor(a))
    const rc = await startContainer(a, spec, t)
    const readyUrl = probeUrl(spec, spec.readinessProbe, a.net.ip)
    await waitFor(async () => (await a.net.http(readyUrl, { timeoutMs: 2_000 })).status === 200,
      { timeoutMs: 60_000, intervalMs: 200, what: `node a's readiness probe ${readyUrl}` }).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- registry a output ---\n${rc.output().slice(-4000)}`)
    })
    t.diagnostic(`node a ready (${readyUrl}) ${(performance.now() - rc.startedAt).toFixed(0)} ms after ctr run`)
    if (spec.livenessProbe !== undefined) {
      assert.equal((await a.net.http(probeUrl(spec, spec.livenessProbe, a.net.ip))).status, 200, 'liveness probe')
    }

    await a.containerd.importImage(testImage.archivePath!)
    const base = registryBaseUrl(spec, a)
    const got = await waitFor(async () => {
      const r = await manifestVia(a, base)
      return r.status === 200 ? r : undefined
    }, { timeoutMs: 20_000, intervalMs: 100, what: `node a's registry to serve ${testImage.ref}` })
    assert.equal(got.digest, testImage.top.digest, 'the manifest digest node a serves')
  })

  it('node B joins through DNS bootstrap and containerd B pulls through it from A', async (t) => {
    const [a, b] = [nodes[0]!, nodes[1]!]
    // B's pod exists now: the headless Service's name resolves to both pods, on both nodes.
    await writePodFiles(a, [a.net.ip, b.net.ip])
    await writePodFiles(b, [a.net.ip, b.net.ip])
    const spec = registrySpec(await specsFor(b))
    const rc = await startContainer(b, spec, t)
    const readyUrl = probeUrl(spec, spec.readinessProbe, b.net.ip)
    await waitFor(async () => (await b.net.http(readyUrl, { timeoutMs: 2_000 })).status === 200,
      { timeoutMs: 60_000, intervalMs: 200, what: `node b's readiness probe ${readyUrl}` }).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- registry b output ---\n${rc.output().slice(-4000)}`)
    })
    t.diagnostic(`node b ready ${(performance.now() - rc.startedAt).toFixed(0)} ms after ctr run`)

    // B learns from A that A holds the image (B's containerd has none of it).
    const base = registryBaseUrl(spec, b)
    await waitFor(async () => (await manifestVia(b, base)).status === 200,
      { timeoutMs: 20_000, intervalMs: 100, what: `node b to resolve ${testImage.ref} through node a` })

    // containerd reaches the container through the mirror target: with a NodePort, through the
    // node's forwarder, which counts the connections.
    const hosts = parseToml(await fs.readFile(path.join(b.containerd.configPath, hostsDirFor(testRegistry, b), 'hosts.toml'), 'utf8')) as { host?: Record<string, unknown> }
    const target = new URL(Object.keys(hosts.host ?? {})[0] ?? 'http://unset')
    const forward = b.forwards.get(Number(target.port || 80))
    const before = forward?.connections() ?? 0
    const started = performance.now()
    const pull = await b.net.exec('ctr', ['-a', b.containerd.socketPath, '--connect-timeout', '5s', '-n', b.containerd.namespace,
      'images', 'pull', '--hosts-dir', b.containerd.configPath, testImage.ref], { timeoutMs: 120_000, env: CTR_ENV })
    assert.equal(pull.code, 0, `ctr images pull in node b's namespace: ${pull.stderr}\n--- registry b ---\n${rc.output().slice(-3000)}`)
    t.diagnostic(`pull on node b through its container: ${(performance.now() - started).toFixed(0)} ms`)
    if (forward !== undefined) {
      assert.ok(forward.connections() > before, `containerd b's pull went through ${target.host}`)
      t.diagnostic(`mirror target ${target.host}: ${forward.connections() - before} connection(s) forwarded to node b's pod`)
    }
    const { stdout } = await b.containerd.ctr(['content', 'ls', '-q'])
    const have = new Set(stdout.split('\n').map((l) => l.trim()))
    for (const d of testImage.allDigests()) assert.ok(have.has(d), `containerd b has ${d}`)
  })

  it('node A\'s container pages out the node executable\'s start-up pages once, and they stay out', async (t) => {
    // The image's node binary belongs to this container alone (a snapshot of its own, as a pod's
    // on its host), so the kernel can drop the start-up pages the page-out names
    // (src/observability/page-out.ts). Nodes sharing one binary, as the benchmarks' nodes do by
    // default, cannot show this.
    const rc = containers.find((c) => !c.spec.isInit && c.node.label === 'a')
    assert.ok(rc !== undefined, 'node a\'s registry container ran')
    const pid = Number((await fs.readFile(rc.pidFile, 'utf8')).trim())
    const line = await waitFor(() => rc.output().split('\n').find((l) => l.includes('paged out the start-up pages')),
      { timeoutMs: PAGE_OUT_AFTER_MS + 90_000, intervalMs: 500, what: `node a's page-out log line (${PAGE_OUT_AFTER_MS / 1000} s after start)` })
    const result = JSON.parse(line) as { errno: number, bytes: number, fileKiBBefore: number, fileKiBAfter: number }
    t.diagnostic(`page-out ${((performance.now() - rc.startedAt) / 1000).toFixed(0)} s after ctr run: ${(result.bytes / MiB).toFixed(0)} MiB of mappings, file pages ${(result.fileKiBBefore / 1024).toFixed(1)} -> ${(result.fileKiBAfter / 1024).toFixed(1)} MiB`)
    assert.equal(result.errno, 0, `madvise(MADV_PAGEOUT) errno: ${line}`)
    assert.ok(result.fileKiBAfter < result.fileKiBBefore / 2, `file pages at most half of ${result.fileKiBBefore} KiB after the page-out: ${line}`)
    // And they stay out while the node idles: only what it still runs comes back.
    await delay(5_000)
    const rssFileKiB = statusRssFileKiB(await fs.readFile(`/proc/${pid}/status`, 'utf8')) ?? Number.NaN
    t.diagnostic(`RssFile 5 s later: ${(rssFileKiB / 1024).toFixed(1)} MiB`)
    // Loose: what the idle node runs faults back in, 64 KiB around each page (10-20 MiB here).
    assert.ok(rssFileKiB < result.fileKiBBefore * 0.75, `RssFile ${rssFileKiB} KiB 5 s after the page-out, against ${result.fileKiBBefore} KiB before`)
  })

  it('stops both registry containers on SIGTERM with exit code 0', async () => {
    const running = containers.filter((rc) => !rc.spec.isInit)
    assert.equal(running.length, 2, 'two registry containers ran')
    for (const rc of running.reverse()) {
      const { code, signal } = await stopContainer(rc)
      assert.equal(signal, null, `${rc.id} ctr exit signal`)
      assert.equal(code, 0, `${rc.id} exit code after SIGTERM; output:\n${rc.output().slice(-3000)}`)
    }
  })
})

/** A private containerd whose process lives in the node's network namespace. */
async function startContainerdIn (net: NetnsNode, workDir: string, label: string): Promise<ContainerdInstance> {
  // The containerd helper spawns `containerd` from PATH; a wrapper first on PATH enters the
  // namespace and execs the real binary, so the helper's pid is containerd's own and its
  // shims and containers inherit the namespace.
  const real = (process.env.PATH ?? '').split(':').map((d) => path.join(d, 'containerd')).find((p) => {
    try {
      accessSync(p, fsConstants.X_OK)
      return true
    } catch {
      return false
    }
  })
  if (real === undefined) throw new Error('containerd not found in PATH')
  const binDir = path.join(workDir, `bin-${label}`)
  await fs.mkdir(binDir, { recursive: true })
  await fs.writeFile(path.join(binDir, 'containerd'), `#!/bin/sh\nexec ${net.wrap(real, []).map(shQuote).join(' ')} "$@"\n`, { mode: 0o755 })
  const savedPath = process.env.PATH
  process.env.PATH = `${binDir}:${savedPath ?? ''}`
  try {
    return await startContainerd({ name: `img-${label}` })
  } finally {
    process.env.PATH = savedPath
  }
}

/**
 * Lazily unmounts whatever is still mounted below `dirs` (a container's rootfs bind mount stays
 * behind when its shim was killed rather than asked to delete the task). Synchronous, so it also
 * works while the process is going down on a signal.
 */
function unmountBelowSync (dirs: readonly string[]): void {
  let mountinfo: string
  try {
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')
  } catch {
    return
  }
  const points = mountinfo.split('\n').map((l) => l.split(' ')[4]).filter((p): p is string => p !== undefined)
    .filter((p) => dirs.some((d) => p.startsWith(`${d}/`)))
    .sort((a, b) => b.length - a.length)
  for (const p of points) {
    try {
      execFileSync('umount', ['-l', p], { stdio: 'ignore' })
    } catch {
      // already gone, or not ours to remove; nothing more to do here
    }
  }
}

/** The certs.d directory containerd reads for `registry`: its own, else `_default`. */
function hostsDirFor (registry: string, node: TestNode): string {
  const own = path.join(node.containerd.configPath, registry, 'hosts.toml')
  return statSync(own, { throwIfNoEntry: false }) === undefined ? '_default' : registry
}

function shQuote (s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

function splitRef (ref: string): { repo: string, tag: string } {
  const slash = ref.indexOf('/')
  const rest = ref.slice(slash + 1)
  const colon = rest.lastIndexOf(':')
  return { repo: rest.slice(0, colon), tag: rest.slice(colon + 1) }
}
