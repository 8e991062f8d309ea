/**
 * Router-only nodes for the scale and idle benchmarks (bench/cluster-scale.ts, bench/datapath.ts):
 * N processes on loopback addresses 127.1.x.y of this machine, each the P2P router of the scale
 * test advertising its own keys (bench/cluster-scale-node.ts, driven over stdin), bootstrapping
 * from 3 random earlier nodes; and the idle reading of a converged cluster (RSS and CPU of every
 * node from /proc) that the full spegel-ts nodes of bench/datapath.ts use as well.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { setTimeout as delay } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createLogger } from '../src/observability/logger.js'
import { loadOrCreatePrivateKey } from '../src/routing/p2p/identity.js'
import { shuffle } from '../src/routing/p2p/util.js'
import { freePort } from '../test/helpers/net.js'
import { copyNodeBinary } from '../test/helpers/node-binary.js'
import { waitFor } from '../test/helpers/wait.js'
import { clockTicksPerSecond, errorText, fixed, killQuietly, onCleanup, procSample, summarize, threadRunNs, type ProcSample } from './cluster-common.js'
import type { ScaleBenchNodeConfig } from './cluster-scale-node.js'

const here = path.dirname(fileURLToPath(import.meta.url))
export const BENCH_NODE_JS = path.join(here, 'cluster-scale-node.js')
/** The same process bundled as the image's node is (scripts/bundle.mjs). */
export const BENCH_NODE_BUNDLE_JS = path.join(here, 'cluster-scale-node.bundle.js')

/**
 * The router process's script: the bundle when SPEGEL_TEST_BUNDLE=1 (bench/datapath.ts sets it
 * unless given --modules), as the full nodes then run the image's bundle; the modules otherwise.
 */
export function benchNodeScript (): string {
  return process.env.SPEGEL_TEST_BUNDLE === '1' ? BENCH_NODE_BUNDLE_JS : BENCH_NODE_JS
}
export const STAGGER_MS = 100
const BOOTSTRAP_PEERS = 3
export const CONVERGE_TIMEOUT_MS = 240_000
/** Before an idle reading by default: the last pulls and dials of start-up are done. */
export const SETTLE_SECONDS = 5

// ---------------------------------------------------------------------------------------------
// Node processes.

export interface NodeProc {
  index: number
  host: string
  port: number
  peerId: string
  dataDir: string
  child: ChildProcess
  pid: number
  stderr: string
  exited: boolean
  /** CLOCK_MONOTONIC ms of the `started` line (bench nodes) or the orchestrator's receipt (reference). */
  startedAt?: number
  /** Reference nodes: the last status line. */
  latest?: { ready: boolean, origins: string[], keys: number }
  /** Bench nodes: replies by command id, and waiters for them. */
  replies: Map<number, Record<string, unknown>>
  waiters: Map<number, (line: Record<string, unknown>) => void>
}

export function monotonicMs (): number {
  return Number(process.hrtime.bigint()) / 1e6
}

let nextCommandId = 1

/**
 * The V8 flags the image starts spegel-ts with (its NODE_OPTIONS: Dockerfile, scripts/build-image.sh,
 * deploy/kubernetes/base/daemonset.yaml; docs/image.md says why), so an idle reading is of what
 * production runs. A NODE_OPTIONS in this process's environment (bench/datapath.ts --node-options)
 * replaces them.
 */
const PRODUCTION_NODE_OPTIONS = '--max-semi-space-size=1 --v8-pool-size=1'
/** The image's malloc settings, likewise; each variable set in this process's environment wins. */
const PRODUCTION_MALLOC_ENV = { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_TRIM_THRESHOLD_: '131072' }

/**
 * The image's NODE_OPTIONS and malloc environment for a node, with whatever of it this process's
 * environment sets instead. A malloc variable set to `unset` is left out, to measure glibc's own
 * behaviour (any value, even an empty one, would replace it: an empty threshold reads as 0).
 *
 * NODE_EXTRA_CA_CERTS is always left out: neither the image nor the DaemonSet sets it (a node
 * never talks TLS to a registry), but a build machine may (this one does, for npm). Node then
 * reads that whole CA bundle when the first module needs TLS, which in a full node is gRPC's
 * http2 at start-up: 0.6-0.8 MiB more RSS per full node (3 nodes × 5,000 keys, two runs each
 * way) that a deployed node does not hold.
 */
export function productionEnv (): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { NODE_OPTIONS: process.env.NODE_OPTIONS ?? PRODUCTION_NODE_OPTIONS, NODE_EXTRA_CA_CERTS: undefined }
  for (const [name, production] of Object.entries(PRODUCTION_MALLOC_ENV)) {
    const value = process.env[name] ?? production
    env[name] = value === 'unset' ? undefined : value
  }
  return env
}

/**
 * V8 flags that NODE_OPTIONS refuses (--no-opt, --optimize-for-size, ...), to measure what they
 * would give on the command line: SPEGEL_BENCH_NODE_ARGS='--optimize-for-size' (space-separated).
 */
const EXTRA_NODE_ARGS = (process.env.SPEGEL_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')

export function spawnNode (script: string, config: object, base: Omit<NodeProc, 'child' | 'pid' | 'stderr' | 'exited' | 'replies' | 'waiters'>): NodeProc {
  const env = {
    ...process.env,
    ...productionEnv()
  }
  // SPEGEL_BENCH_OWN_BINARY=1 (datapath.ts --own-binary): a binary of its own, as a pod has on its
  // host. Processes sharing one binary share its pages, and the kernel pages out none of those
  // (src/observability/page-out.ts), so every page start-up touched would stay in every node.
  const binary = process.env.SPEGEL_BENCH_OWN_BINARY === '1' ? copyNodeBinary(base.dataDir) : process.execPath
  const child = spawn(binary, [...EXTRA_NODE_ARGS, script, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'], env })
  if (child.pid === undefined) throw new Error(`cannot spawn ${script}`)
  const node: NodeProc = { ...base, child, pid: child.pid, stderr: '', exited: false, replies: new Map(), waiters: new Map() }
  child.once('exit', () => { node.exited = true })
  child.stdin?.on('error', () => { /* the node died; its exit is reported by the waits */ })
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => { node.stderr = (node.stderr + chunk).slice(-20_000) })
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: Record<string, unknown>
    try {
      line = JSON.parse(text) as Record<string, unknown>
    } catch {
      return // a stray library print, not ours
    }
    if (line.event === 'started') node.startedAt = typeof line.t === 'number' ? line.t : monotonicMs()
    if (line.event === 'status' && line.id === undefined) {
      node.latest = { ready: line.ready === true, origins: line.origins as string[], keys: Number(line.keys) }
      node.startedAt ??= monotonicMs()
    }
    if (typeof line.id === 'number' && line.id > 0) {
      const key = replyKey(line)
      const waiter = node.waiters.get(key)
      if (waiter !== undefined) {
        node.waiters.delete(key)
        waiter(line)
      } else {
        node.replies.set(key, line)
      }
    }
  })
  return node
}

/** `seen` replies share their command's id with `watching`; keep them apart. */
function replyKey (line: Record<string, unknown>): number {
  return (line.event === 'seen' ? -1 : 1) * Number(line.id)
}

export async function awaitReply (node: NodeProc, key: number, timeoutMs: number, what: string): Promise<Record<string, unknown>> {
  const have = node.replies.get(key)
  if (have !== undefined) {
    node.replies.delete(key)
    return have
  }
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      node.waiters.delete(key)
      reject(new Error(`node ${node.index}: no ${what} within ${timeoutMs} ms${node.exited ? ` (exited: ${node.stderr.slice(-1000)})` : ''}`))
    }, timeoutMs)
    node.waiters.set(key, (line) => { clearTimeout(timer); resolve(line) })
  })
}

export function send (node: NodeProc, cmd: Record<string, unknown>): number {
  const id = nextCommandId++
  node.child.stdin?.write(JSON.stringify({ ...cmd, id }) + '\n')
  return id
}

export async function command (node: NodeProc, cmd: Record<string, unknown>, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const id = send(node, cmd)
  return await awaitReply(node, id, timeoutMs, `reply to ${String(cmd.cmd)}`)
}

export async function stopNodes (nodes: readonly NodeProc[]): Promise<void> {
  await Promise.all(nodes.map(async (n) => {
    if (n.exited) return
    const exited = once(n.child, 'exit')
    n.child.kill('SIGTERM')
    const escalate = setTimeout(() => { n.child.kill('SIGKILL') }, 15_000)
    await exited
    clearTimeout(escalate)
  }))
}

// ---------------------------------------------------------------------------------------------
// A cluster of one size.

export interface ClusterRun {
  dir: string
  nodes: NodeProc[]
  identities: Array<{ peerId: string, dataDir: string, host: string, port: number }>
  addrOf: (i: number) => string
  teardown: () => Promise<void>
}

export async function prepareCluster (size: number, label: string): Promise<ClusterRun> {
  const dir = await mkdtemp(path.join(tmpdir(), `spg-bench-scale-${label}-`))
  const nodes: NodeProc[] = []
  const teardown = onCleanup(`${label} cluster`, async () => {
    await stopNodes(nodes)
    await rm(dir, { recursive: true, force: true })
  }, () => {
    for (const n of nodes) killQuietly(n.pid, 'SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  // 127.1.x.y: away from the test helpers' 127.0.x.y, so a test run on the machine does not clash.
  const subnet = 1 + Math.floor(Math.random() * 250)
  const log = createLogger({ level: 'silent' })
  const identities: ClusterRun['identities'] = []
  for (let i = 0; i < size; i++) {
    const dataDir = path.join(dir, `node-${i}`)
    const key = await loadOrCreatePrivateKey(dataDir, log)
    const host = `127.1.${subnet}.${10 + i}`
    identities.push({ peerId: peerIdFromPrivateKey(key).toString(), dataDir, host, port: await freePort(host) })
  }
  const addrOf = (i: number): string => {
    const id = identities[i]!
    return `/ip4/${id.host}/tcp/${id.port}/p2p/${id.peerId}`
  }
  return { dir, nodes, identities, addrOf, teardown }
}

/** Identities of `index`'s bootstrap peers: 3 random earlier nodes, as the scale test picks them. */
export function bootstrapPeers (run: ClusterRun, index: number, among: number): string[] {
  return shuffle(Array.from({ length: among }, (_, i) => i).filter((i) => i !== index)).slice(0, BOOTSTRAP_PEERS).map(run.addrOf)
}

export function spawnBenchNode (run: ClusterRun, index: number, keys: number, peers: string[]): NodeProc {
  const id = run.identities[index]!
  const cfg: ScaleBenchNodeConfig = { index, host: id.host, port: id.port, dataDir: id.dataDir, peers, keys }
  const node = spawnNode(benchNodeScript(), cfg, { index, host: id.host, port: id.port, peerId: id.peerId, dataDir: id.dataDir })
  run.nodes.push(node)
  return node
}

export function failFast (nodes: readonly NodeProc[]): void {
  const dead = nodes.find((n) => n.exited)
  if (dead !== undefined) throw new Error(`node ${dead.index} exited early: ${dead.stderr.slice(-2000)}`)
}

/** Polls every bench node's status until each holds every other node's record and keys. */
export async function waitConverged (nodes: readonly NodeProc[], keysPerNode: number, timeoutMs = CONVERGE_TIMEOUT_MS): Promise<void> {
  const n = nodes.length
  let behind = n
  await waitFor(async () => {
    failFast(nodes)
    const statuses = await Promise.all(nodes.map(async (node) => await command(node, { cmd: 'status' })))
    behind = statuses.filter((s) => !(s.ready === true && s.origins === n - 1 && s.keys === (n - 1) * keysPerNode)).length
    return behind === 0
  }, { timeoutMs, intervalMs: 500, what: `${n} nodes to hold the full index` })
    .catch((err: unknown) => { throw new Error(`${errorText(err)} (${behind} still behind)`, { cause: err }) })
}

export interface IdleReading {
  rssMiB: number[]
  hwmMiB: number[]
  anonMiB: number[]
  fileMiB: number[]
  cpuPercent: number[]
  /** The main thread's (the event loop's) share of `cpuPercent`, from schedstat. */
  mainThreadPercent: number[]
  /** Every thread, from schedstat: the same as `cpuPercent` to within the ticks' rounding. */
  threadsPercent: number[]
}

/** A process whose idle figures are read: router processes, or full spegel-ts nodes. */
export interface IdleTarget { index: number, pid: number }

/**
 * CPU and RSS of every node from /proc over `seconds`, `settleSeconds` after the call, with
 * nothing sent to them meanwhile; `checkAlive` throws when a node died during the window.
 */
export async function idleReading (nodes: readonly IdleTarget[], seconds: number, checkAlive: () => void, settleSeconds = SETTLE_SECONDS): Promise<IdleReading> {
  const ticks = await clockTicksPerSecond()
  await delay(settleSeconds * 1000)
  const before = new Map<number, ProcSample>()
  const runBefore = new Map<number, { mainNs: number, allNs: number }>()
  for (const n of nodes) {
    const s = procSample(n.pid)
    if (s !== undefined) before.set(n.pid, s)
    const r = threadRunNs(n.pid)
    if (r !== undefined) runBefore.set(n.pid, r)
  }
  const t0 = monotonicMs()
  await delay(seconds * 1000)
  const elapsedS = (monotonicMs() - t0) / 1000
  checkAlive()
  const reading: IdleReading = { rssMiB: [], hwmMiB: [], anonMiB: [], fileMiB: [], cpuPercent: [], mainThreadPercent: [], threadsPercent: [] }
  for (const n of nodes) {
    const a = before.get(n.pid)
    const b = procSample(n.pid)
    const runA = runBefore.get(n.pid)
    const runB = threadRunNs(n.pid)
    if (a === undefined || b === undefined) throw new Error(`no /proc reading for node ${n.index} (pid ${n.pid})`)
    reading.cpuPercent.push(((b.cpuTicks - a.cpuTicks) / ticks) / elapsedS * 100)
    if (runA !== undefined && runB !== undefined) {
      reading.mainThreadPercent.push((runB.mainNs - runA.mainNs) / 1e9 / elapsedS * 100)
      reading.threadsPercent.push((runB.allNs - runA.allNs) / 1e9 / elapsedS * 100)
    }
    reading.rssMiB.push(b.rssKiB / 1024)
    reading.hwmMiB.push(b.hwmKiB / 1024)
    reading.anonMiB.push(b.anonKiB / 1024)
    reading.fileMiB.push(b.fileKiB / 1024)
  }
  return reading
}

export function idleText (r: IdleReading): string {
  const rss = summarize(r.rssMiB)
  const cpu = summarize(r.cpuPercent)
  const hwm = summarize(r.hwmMiB)
  const anon = summarize(r.anonMiB)
  const file = summarize(r.fileMiB)
  return `RSS per node median ${fixed(rss.p50)} MiB (min ${fixed(rss.min)}, max ${fixed(rss.max)}; peak VmHWM max ${fixed(hwm.max)} MiB; ` +
    `of it anonymous median ${fixed(anon.p50)} MiB, max ${fixed(anon.max)}, file pages median ${fixed(file.p50)} MiB), ` +
    `idle CPU per node median ${fixed(cpu.p50, 2)} % of a core (mean ${fixed(cpu.mean, 2)}, max ${fixed(cpu.max, 2)}; all nodes together ${fixed(cpu.mean * cpu.n, 1)} %${schedstatText(r)})`
}

/** "; schedstat: …" with the medians of every thread and of the main thread, or '' when none were read. */
export function schedstatText (r: IdleReading): string {
  if (r.mainThreadPercent.length === 0) return ''
  return `; schedstat: all threads median ${fixed(summarize(r.threadsPercent).p50, 2)} %, main thread median ${fixed(summarize(r.mainThreadPercent).p50, 2)} %`
}

/**
 * Starts nodes 0..size-1 of `run` (100 ms apart, each bootstrapping from 3 random earlier ones)
 * and waits until every one holds every other node's record and keys (4 minutes by default). Returns
 * the nodes and the time from the last router being up to the full index everywhere.
 */
export async function startRouterNodes (run: ClusterRun, size: number, keys: number, convergeTimeoutMs = CONVERGE_TIMEOUT_MS): Promise<{ nodes: NodeProc[], startupMs: number }> {
  for (let i = 0; i < size; i++) {
    spawnBenchNode(run, i, keys, bootstrapPeers(run, i, i))
    await delay(STAGGER_MS)
  }
  const nodes = [...run.nodes]
  await waitFor(() => { failFast(nodes); return nodes.every((n) => n.startedAt !== undefined) },
    { timeoutMs: 120_000, intervalMs: 50, what: 'every node to start' })
  const lastUp = Math.max(...nodes.map((n) => n.startedAt!))
  await waitConverged(nodes, keys, convergeTimeoutMs)
  return { nodes, startupMs: monotonicMs() - lastUp }
}
