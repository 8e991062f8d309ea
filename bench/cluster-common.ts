/**
 * Shared pieces of the cluster benchmarks (bench/cluster-pull.ts, cluster-latency.ts,
 * cluster-scale.ts): cleanup that also runs on failure and on SIGINT/SIGTERM, percentiles,
 * /proc readings and the machine's load average.
 */
import { readFileSync } from 'node:fs'
import os from 'node:os'
import { lookupPeers, type ClusterNode } from '../test/helpers/cluster.js'
import { run } from '../test/helpers/net.js'
import { waitFor } from '../test/helpers/wait.js'

// ---------------------------------------------------------------------------------------------
// Cleanup: async steps on the normal and the failure path (last registered runs first); on
// SIGINT/SIGTERM the sync variants (SIGKILL, rmSync), because an async cleanup of GiB temp
// dirs and a dozen daemons must not race the process exit.

interface CleanupStep { name: string, async: () => Promise<void>, sync: () => void }
const steps: CleanupStep[] = []
let signalsInstalled = false

/** Registers a cleanup step; returns a function that runs it now (and unregisters it). */
export function onCleanup (name: string, asyncStep: () => Promise<void>, syncStep: () => void): () => Promise<void> {
  const step: CleanupStep = { name, async: asyncStep, sync: syncStep }
  steps.push(step)
  installSignalHandlers()
  return async () => {
    const i = steps.indexOf(step)
    if (i < 0) return
    steps.splice(i, 1)
    await runStep(step)
  }
}

async function runStep (step: CleanupStep): Promise<void> {
  try {
    await step.async()
  } catch (err) {
    process.stderr.write(`cleanup ${step.name} failed: ${errorText(err)}\n`)
    try {
      step.sync()
    } catch {
      // The async step already reported; nothing more to do here.
    }
  }
}

export async function cleanupAll (): Promise<void> {
  while (steps.length > 0) await runStep(steps.pop()!)
}

function cleanupAllSync (): void {
  while (steps.length > 0) {
    const step = steps.pop()!
    try {
      step.sync()
    } catch (err) {
      process.stderr.write(`cleanup ${step.name} failed: ${errorText(err)}\n`)
    }
  }
}

function installSignalHandlers (): void {
  if (signalsInstalled) return
  signalsInstalled = true
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\n${signal}: cleaning up\n`)
      cleanupAllSync()
      process.exit(128 + (os.constants.signals[signal] ?? 0))
    })
  }
  process.once('exit', cleanupAllSync)
}

/** Runs `main` and always cleans up; exit code 1 on failure. */
export function runBenchmark (name: string, main: () => Promise<void>): void {
  main().then(async () => {
    await cleanupAll()
  }, async (err: unknown) => {
    process.stderr.write(`${name} failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
    await cleanupAll()
    process.exitCode = 1
  })
}

export function errorText (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

export function killQuietly (pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return
  try {
    process.kill(pid, signal)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics.

export interface Summary { n: number, min: number, p50: number, p90: number, p99: number, max: number, mean: number }

/** Nearest-rank percentile of an ascending array. */
export function percentile (sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length))
  return sorted[Math.min(sorted.length, rank) - 1]!
}

export function summarize (values: readonly number[]): Summary {
  const s = [...values].sort((a, b) => a - b)
  return {
    n: s.length,
    min: s[0] ?? Number.NaN,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p99: percentile(s, 99),
    max: s[s.length - 1] ?? Number.NaN,
    mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length)
  }
}

/** Median (mean of the middle two for an even count). */
export function median (values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b)
  if (s.length === 0) return Number.NaN
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

export function fixed (x: number, digits = 1): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x)
}

/** `p50 1.23 / p90 … / p99 … / max …` in the unit the values are in. */
export function percentileText (s: Summary, digits = 2): string {
  return `p50 ${fixed(s.p50, digits)} / p90 ${fixed(s.p90, digits)} / p99 ${fixed(s.p99, digits)} / max ${fixed(s.max, digits)}`
}

// ---------------------------------------------------------------------------------------------
// Machine and process readings.

export function loadAverage (): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
  } catch {
    return os.loadavg().map((x) => x.toFixed(2)).join(' ')
  }
}

/**
 * One line for the top (and the end) of a benchmark's output: load now, and a warning when the
 * machine is busy. Within a run the benchmark's own processes are in the load; use loadAverage().
 */
export function loadLine (): string {
  const one = Number(loadAverage().split(' ')[0])
  const cores = os.availableParallelism()
  const busy = one > 0.5 * cores ? ` (busy: 1-min load ${fixed(one, 2)} on ${cores} cores; figures will be noisy)` : ''
  return `load average ${loadAverage()}, ${cores} cores${busy}`
}

let clockTicks: number | undefined

export async function clockTicksPerSecond (): Promise<number> {
  if (clockTicks !== undefined) return clockTicks
  const res = await run('getconf', ['CLK_TCK'], { timeoutMs: 5_000 }).catch(() => undefined)
  const n = Number(res?.stdout.trim())
  clockTicks = Number.isFinite(n) && n > 0 ? n : 100
  return clockTicks
}

export interface ProcSample {
  /** utime + stime of the process itself, in clock ticks. */
  cpuTicks: number
  rssKiB: number
  /** Peak RSS (VmHWM). */
  hwmKiB: number
}

export function procSample (pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name may hold spaces and parentheses; the fields after the last ')' do not.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN)
    return { cpuTicks: Number(rest[11]) + Number(rest[12]), rssKiB: kib('VmRSS'), hwmKiB: kib('VmHWM') }
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------------------------------------
// Cluster nodes.

/**
 * A spegel-ts node started on a containerd that holds no content yet finds no `blobs` directory,
 * falls back to reading through containerd's gRPC (about 10x slower) and keeps doing so until it
 * reconnects. The holder is started that way by the cluster helper, so restart it once it holds
 * the image (the benchmarks are about the disk path), and wait until `observers` see it hold `key`.
 */
export async function restartForDiskReads (node: ClusterNode, observers: readonly ClusterNode[], key: string, log: (line: string) => void): Promise<void> {
  const started = performance.now()
  await node.restartSpegel()
  await node.spegel.waitReady(60_000)
  const fallback = node.spegel.logs.find((l) => l.event === 'content_path_unreadable')
  if (fallback !== undefined) log(`note: ${node.name} still reads content through gRPC: ${String(fallback.reason)}`)
  // Rejoining can take up to the router's rediscovery interval (30 s) when the restarted node is the bootstrap node.
  await waitFor(async () => {
    for (const o of observers) if (!(await lookupPeers(o, key)).includes(node.peerId)) return false
    return true
  }, { timeoutMs: 120_000, intervalMs: 100, what: `${observers.map((o) => o.name).join(', ')} to see ${node.name} again after its restart` })
  log(`${node.name} restarted after the import so that it reads blobs from disk (a node started on an empty containerd keeps using gRPC); ` +
    `seen again by ${observers.map((o) => o.name).join(', ')} after ${fixed((performance.now() - started) / 1000, 1)} s`)
}
