#!/usr/bin/env node
/**
 * Router-only scale benchmark: N router processes on loopback addresses of this machine, each
 * advertising `--keys` keys, as the scale test runs them.
 *
 *   npx node dist/bench/cluster-scale.js [--sizes 10,30] [--keys 5000] [--trials 20] [--idle-seconds 20]
 *
 * For each size:
 *  1. start-up: N processes (100 ms apart, each bootstrapping from 3 random earlier ones) until
 *     every node holds the full index;
 *  2. idle: RSS and CPU of every node from /proc over `--idle-seconds` of a converged cluster;
 *  3. propagation: `--trials` times, a random node advertises an image's worth of new keys (tag,
 *     manifest, config, layer: one delta, as an import causes); the time from advertise() on
 *     that node to the keys being returned by lookup() on each other node;
 *  4. late joiner: one more node starts; the time until it holds the full index, and until every
 *     other node's lookups return its keys (its 5,000-key record is too big for a delta, so this
 *     is the heartbeat + pull path).
 * These nodes are bench/cluster-scale-node.ts (the scale test's router, driven over stdin).
 * Then, as a cross-check with the scale test's own node (test/scale/node.ts, unchanged), the
 * idle reading again on 30 of those (`--reference-nodes`, 0 to skip); that node also reports a
 * status line once a second, which is in its figure.
 * Not a test: it asserts nothing about timing. See bench/README.md.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { setTimeout as delay } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULT_EXPIRY_MS, DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_SYNC_INTERVAL_MS } from '../src/routing/p2p/constants.js'
import { loadOrCreatePrivateKey } from '../src/routing/p2p/identity.js'
import { freePort } from '../test/helpers/net.js'
import { waitFor } from '../test/helpers/wait.js'
import type { NodeConfig } from '../test/scale/node.js'
import { nodeKeys } from '../test/scale/keys.js'
import {
  clockTicksPerSecond, fixed, killQuietly, loadAverage, loadLine, median, onCleanup, percentileText, procSample, runBenchmark, summarize,
  type ProcSample
} from './cluster-common.js'
import type { ScaleBenchNodeConfig } from './cluster-scale-node.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const BENCH_NODE_JS = path.join(here, 'cluster-scale-node.js')
const SCALE_NODE_JS = path.resolve(here, '../test/scale/node.js')
const STAGGER_MS = 100
const BOOTSTRAP_PEERS = 3
const CONVERGE_TIMEOUT_MS = 240_000
const SEEN_TIMEOUT_MS = 60_000
const SETTLE_MS = 5_000
const REFERENCE_STATUS_INTERVAL_MS = 1_000

interface Options { sizes: number[], keys: number, trials: number, idleSeconds: number, referenceNodes: number }

function parseOptions (): Options {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '10,30' },
      keys: { type: 'string', default: '5000' },
      trials: { type: 'string', default: '20' },
      'idle-seconds': { type: 'string', default: '20' },
      'reference-nodes': { type: 'string', default: '30' },
      help: { type: 'boolean', short: 'h', default: false }
    },
    strict: true
  })
  if (values.help) {
    process.stdout.write('usage: node dist/bench/cluster-scale.js [--sizes 10,30] [--keys 5000] [--trials 20] [--idle-seconds 20] [--reference-nodes 30]\n')
    process.exit(0)
  }
  const int = (name: string, raw: string, min: number): number => {
    const n = Number(raw)
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${raw}`)
    return n
  }
  return {
    sizes: values.sizes.split(',').map((s) => int('sizes', s.trim(), 2)),
    keys: int('keys', values.keys, 1),
    trials: int('trials', values.trials, 1),
    idleSeconds: int('idle-seconds', values['idle-seconds'], 1),
    referenceNodes: int('reference-nodes', values['reference-nodes'], 0)
  }
}

// ---------------------------------------------------------------------------------------------
// Node processes.

interface NodeProc {
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

function monotonicMs (): number {
  return Number(process.hrtime.bigint()) / 1e6
}

let nextCommandId = 1

function spawnNode (script: string, config: object, base: Omit<NodeProc, 'child' | 'pid' | 'stderr' | 'exited' | 'replies' | 'waiters'>): NodeProc {
  const child = spawn(process.execPath, [script, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'] })
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

async function awaitReply (node: NodeProc, key: number, timeoutMs: number, what: string): Promise<Record<string, unknown>> {
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

function send (node: NodeProc, cmd: Record<string, unknown>): number {
  const id = nextCommandId++
  node.child.stdin?.write(JSON.stringify({ ...cmd, id }) + '\n')
  return id
}

async function command (node: NodeProc, cmd: Record<string, unknown>, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const id = send(node, cmd)
  return await awaitReply(node, id, timeoutMs, `reply to ${String(cmd.cmd)}`)
}

async function stopNodes (nodes: readonly NodeProc[]): Promise<void> {
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

interface ClusterRun {
  dir: string
  nodes: NodeProc[]
  identities: Array<{ peerId: string, dataDir: string, host: string, port: number }>
  addrOf: (i: number) => string
  teardown: () => Promise<void>
}

async function prepareCluster (size: number, label: string): Promise<ClusterRun> {
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
function bootstrapPeers (run: ClusterRun, index: number, among: number): string[] {
  return shuffle(Array.from({ length: among }, (_, i) => i).filter((i) => i !== index)).slice(0, BOOTSTRAP_PEERS).map(run.addrOf)
}

function spawnBenchNode (run: ClusterRun, index: number, keys: number, peers: string[]): NodeProc {
  const id = run.identities[index]!
  const cfg: ScaleBenchNodeConfig = { index, host: id.host, port: id.port, dataDir: id.dataDir, peers, keys }
  const node = spawnNode(BENCH_NODE_JS, cfg, { index, host: id.host, port: id.port, peerId: id.peerId, dataDir: id.dataDir })
  run.nodes.push(node)
  return node
}

function failFast (nodes: readonly NodeProc[]): void {
  const dead = nodes.find((n) => n.exited)
  if (dead !== undefined) throw new Error(`node ${dead.index} exited early: ${dead.stderr.slice(-2000)}`)
}

/** Polls every bench node's status until each holds every other node's record and keys. */
async function waitConverged (nodes: readonly NodeProc[], keysPerNode: number): Promise<void> {
  const n = nodes.length
  let behind = n
  await waitFor(async () => {
    failFast(nodes)
    const statuses = await Promise.all(nodes.map(async (node) => await command(node, { cmd: 'status' })))
    behind = statuses.filter((s) => !(s.ready === true && s.origins === n - 1 && s.keys === (n - 1) * keysPerNode)).length
    return behind === 0
  }, { timeoutMs: CONVERGE_TIMEOUT_MS, intervalMs: 500, what: `${n} nodes to hold the full index (${behind} behind)` })
}

interface IdleReading { rssMiB: number[], hwmMiB: number[], cpuPercent: number[] }

/** CPU and RSS of every node from /proc over `seconds`, with nothing sent to them meanwhile. */
async function idleReading (nodes: readonly NodeProc[], seconds: number): Promise<IdleReading> {
  const ticks = await clockTicksPerSecond()
  await delay(SETTLE_MS)
  const before = new Map<number, ProcSample>()
  for (const n of nodes) {
    const s = procSample(n.pid)
    if (s !== undefined) before.set(n.pid, s)
  }
  const t0 = monotonicMs()
  await delay(seconds * 1000)
  const elapsedS = (monotonicMs() - t0) / 1000
  failFast(nodes)
  const reading: IdleReading = { rssMiB: [], hwmMiB: [], cpuPercent: [] }
  for (const n of nodes) {
    const a = before.get(n.pid)
    const b = procSample(n.pid)
    if (a === undefined || b === undefined) throw new Error(`no /proc reading for node ${n.index} (pid ${n.pid})`)
    reading.cpuPercent.push(((b.cpuTicks - a.cpuTicks) / ticks) / elapsedS * 100)
    reading.rssMiB.push(b.rssKiB / 1024)
    reading.hwmMiB.push(b.hwmKiB / 1024)
  }
  return reading
}

function idleText (r: IdleReading): string {
  const rss = summarize(r.rssMiB)
  const cpu = summarize(r.cpuPercent)
  const hwm = summarize(r.hwmMiB)
  return `RSS per node median ${fixed(rss.p50)} MiB (min ${fixed(rss.min)}, max ${fixed(rss.max)}; peak VmHWM max ${fixed(hwm.max)} MiB), ` +
    `idle CPU per node median ${fixed(cpu.p50, 2)} % of a core (mean ${fixed(cpu.mean, 2)}, max ${fixed(cpu.max, 2)}; all nodes together ${fixed(cpu.mean * cpu.n, 1)} %)`
}

interface SizeResult {
  size: number
  startupMs: number
  idle: IdleReading
  /** Per trial: the slowest node; and every (trial, node) figure. */
  allVisibleMs: number[]
  perNodeMs: number[]
  viaPull: number
  lateFullIndexMs: number
  lateSeenByAllMs: number
  lateSeenMs: number[]
}

async function runSize (size: number, opts: Options, log: (line: string) => void): Promise<SizeResult> {
  const run = await prepareCluster(size + 1, `n${size}`)
  try {
    log(`[${size} nodes] starting ${size} nodes with ${opts.keys} keys each; load ${loadAverage()}`)
    for (let i = 0; i < size; i++) {
      spawnBenchNode(run, i, opts.keys, bootstrapPeers(run, i, i))
      await delay(STAGGER_MS)
    }
    const nodes = [...run.nodes]
    await waitFor(() => { failFast(nodes); return nodes.every((n) => n.startedAt !== undefined) },
      { timeoutMs: 120_000, intervalMs: 50, what: 'every node to start' })
    const lastUp = Math.max(...nodes.map((n) => n.startedAt!))
    await waitConverged(nodes, opts.keys)
    const startupMs = monotonicMs() - lastUp
    log(`[${size} nodes] full index everywhere ${fixed(startupMs / 1000, 1)} s after the last router was up (status polled every 0.5 s)`)

    const idle = await idleReading(nodes, opts.idleSeconds)
    log(`[${size} nodes] idle ${opts.idleSeconds} s: ${idleText(idle)}; load ${loadAverage()}`)

    // Propagation of a small delta.
    const salt = randomBytes(4).toString('hex')
    const allVisibleMs: number[] = []
    const perNodeMs: number[] = []
    let viaPull = 0
    for (let t = 0; t < opts.trials; t++) {
      const origin = nodes[Math.floor(Math.random() * size)]!
      const keys = [
        `example.test/bench/app-${salt}:${t}`,
        ...[0, 1, 2].map((j) => `sha256:${createHash('sha256').update(`${salt}-${size}-${t}-${j}`).digest('hex')}`)
      ]
      const watchers = nodes.filter((n) => n !== origin)
      const ids = await Promise.all(watchers.map(async (n) => {
        const id = send(n, { cmd: 'watch', keys })
        await awaitReply(n, id, 10_000, 'watching')
        return id
      }))
      const added = await command(origin, { cmd: 'add', keys })
      const seen = await Promise.all(watchers.map(async (n, i) => await awaitReply(n, -ids[i]!, SEEN_TIMEOUT_MS, `sight of trial ${t}'s keys`)))
      const lat = seen.map((s) => Number(s.t) - Number(added.t))
      viaPull += seen.filter((s) => s.via === 'pull').length
      perNodeMs.push(...lat)
      allVisibleMs.push(Math.max(...lat))
      // Spread trials over the heartbeat cycle instead of locking onto one phase of it.
      await delay(100 + Math.random() * 400)
    }
    const all = summarize(allVisibleMs)
    log(`[${size} nodes] ${opts.trials} deltas of 4 keys: visible on all ${size - 1} others after ${percentileText(all)} ms; ` +
      `per node ${percentileText(summarize(perNodeMs))} ms; ${viaPull} of ${perNodeMs.length} arrivals through a pull`)

    // A late joiner with a full-size record.
    const lateIndex = size
    const firstKey = nodeKeys(lateIndex, 1)[0]!
    const lastKey = nodeKeys(lateIndex, opts.keys)[opts.keys - 1]!
    const ids = await Promise.all(nodes.map(async (n) => {
      const id = send(n, { cmd: 'watch', keys: [firstKey, lastKey] })
      await awaitReply(n, id, 10_000, 'watching')
      return id
    }))
    const late = spawnBenchNode(run, lateIndex, opts.keys, bootstrapPeers(run, lateIndex, size))
    await waitFor(() => { failFast([late]); return late.startedAt !== undefined }, { timeoutMs: 60_000, intervalMs: 10, what: 'the late node to start' })
    let lateFullAt = 0
    let lastStatus = ''
    await waitFor(async () => {
      failFast([late])
      const s = await command(late, { cmd: 'status' })
      lateFullAt = monotonicMs()
      lastStatus = JSON.stringify(s)
      // The trials' keys are in the index too.
      return s.ready === true && s.origins === size && s.keys === size * opts.keys + 4 * opts.trials
    }, { timeoutMs: CONVERGE_TIMEOUT_MS, intervalMs: 20, what: 'the late node to hold the full index' })
      .catch((err: Error) => { throw new Error(`${err.message}; last status ${lastStatus}`) })
    const seen = await Promise.all(nodes.map(async (n, i) => await awaitReply(n, -ids[i]!, SEEN_TIMEOUT_MS + DEFAULT_HEARTBEAT_INTERVAL_MS, 'sight of the late node\'s keys')))
    const lateSeenMs = seen.map((s) => Number(s.t) - late.startedAt!)
    const lateFullIndexMs = lateFullAt - late.startedAt!
    log(`[${size} nodes] late joiner: full index (${size} records, ${size * opts.keys} keys) ${fixed(lateFullIndexMs, 0)} ms after its router was up; ` +
      `its keys visible on all ${size} others after ${fixed(Math.max(...lateSeenMs), 0)} ms (per node ${percentileText(summarize(lateSeenMs), 0)} ms)`)
    return { size, startupMs, idle, allVisibleMs, perNodeMs, viaPull, lateFullIndexMs, lateSeenByAllMs: Math.max(...lateSeenMs), lateSeenMs }
  } finally {
    await run.teardown()
  }
}

/** The idle reading on the scale test's own node (test/scale/node.js), unchanged. */
async function runReference (size: number, opts: Options, log: (line: string) => void): Promise<IdleReading> {
  const run = await prepareCluster(size, 'ref')
  try {
    log(`[reference, ${size} test/scale/node.js] starting with ${opts.keys} keys each; load ${loadAverage()}`)
    for (let i = 0; i < size; i++) {
      const id = run.identities[i]!
      const cfg: NodeConfig = {
        index: i,
        host: id.host,
        port: id.port,
        dataDir: id.dataDir,
        peers: bootstrapPeers(run, i, i),
        keys: opts.keys,
        statusIntervalMs: REFERENCE_STATUS_INTERVAL_MS,
        probeIndex: (i + 1) % size
      }
      run.nodes.push(spawnNode(SCALE_NODE_JS, cfg, { index: i, host: id.host, port: id.port, peerId: id.peerId, dataDir: id.dataDir }))
      await delay(STAGGER_MS)
    }
    const nodes = run.nodes
    await waitFor(() => {
      failFast(nodes)
      return nodes.every((n) => n.latest !== undefined && n.latest.ready && n.latest.origins.length === size - 1 && n.latest.keys === (size - 1) * opts.keys)
    }, { timeoutMs: CONVERGE_TIMEOUT_MS, intervalMs: 200, what: `${size} reference nodes to hold the full index` })
    const idle = await idleReading(nodes, opts.idleSeconds)
    log(`[reference, ${size} test/scale/node.js] idle ${opts.idleSeconds} s: ${idleText(idle)}; load ${loadAverage()}`)
    return idle
  } finally {
    await run.teardown()
  }
}

async function main (): Promise<void> {
  const opts = parseOptions()
  for (const script of [BENCH_NODE_JS, SCALE_NODE_JS]) {
    if (!existsSync(script)) throw new Error(`${script} is missing; build with npx tsc -p tsconfig.json`)
  }
  const log = (line: string): void => { process.stdout.write(line + '\n') }
  log(`cluster-scale: sizes ${opts.sizes.join(', ')}, ${opts.keys} keys per node, ${opts.trials} trials, idle window ${opts.idleSeconds} s; ` +
    `router defaults: heartbeat ${DEFAULT_HEARTBEAT_INTERVAL_MS / 1000} s, sync ${DEFAULT_SYNC_INTERVAL_MS / 1000} s, expiry ${DEFAULT_EXPIRY_MS / 1000} s; Node ${process.version}`)
  log(loadLine())
  const results: SizeResult[] = []
  for (const size of opts.sizes) results.push(await runSize(size, opts, log))
  const reference = opts.referenceNodes > 0 ? await runReference(opts.referenceNodes, opts, log) : undefined

  log('')
  log('--- summary ---')
  for (const r of results) {
    log(`${r.size} nodes x ${opts.keys} keys: start-up to full index ${fixed(r.startupMs / 1000, 1)} s after the last router was up`)
    log(`  key added -> visible on all ${r.size - 1} others: ${percentileText(summarize(r.allVisibleMs))} ms (${r.allVisibleMs.length} trials; median per node ${fixed(median(r.perNodeMs), 2)} ms; ${r.viaPull}/${r.perNodeMs.length} via pull)`)
    log(`  late joiner: full index after ${fixed(r.lateFullIndexMs, 0)} ms; its ${opts.keys} keys on all others after ${fixed(r.lateSeenByAllMs, 0)} ms`)
    log(`  idle: ${idleText(r.idle)}`)
  }
  if (reference !== undefined) log(`reference ${opts.referenceNodes} x test/scale/node.js (status line every 1 s), idle: ${idleText(reference)}`)
  log(`load average at the end (1-min figure includes this benchmark): ${loadAverage()}`)
}

function shuffle<T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const tmp = items[i] as T
    items[i] = items[j] as T
    items[j] = tmp
  }
  return items
}

runBenchmark('cluster-scale', main)
