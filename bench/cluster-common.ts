/**
 * Shared pieces of the benchmarks (bench/*.ts): flag parsing, a check for the tools a benchmark
 * needs, cleanup that also runs on failure and on SIGINT/SIGTERM/SIGHUP, percentiles, /proc
 * readings, the machine's load average, and the two clients every HTTP figure comes from
 * (curl for one big download, ApacheBench for small requests), each with the CPU time the
 * servers spent meanwhile.
 */
import { accessSync, constants as fsConstants, readFileSync, readdirSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { lookupPeers, startCluster, type Cluster, type ClusterNode, type NodeOptions } from '../test/helpers/cluster.js'
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
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
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
  /** The anonymous part of RSS (RssAnon): what only this process holds. */
  anonKiB: number
  /** File pages in RSS (RssFile): mostly the node binary, held once per machine by the page cache. */
  fileKiB: number
}

export function procSample (pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name may hold spaces and parentheses; the fields after the last ')' do not.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN)
    return { cpuTicks: Number(rest[11]) + Number(rest[12]), rssKiB: kib('VmRSS'), hwmKiB: kib('VmHWM'), anonKiB: kib('RssAnon'), fileKiB: kib('RssFile') }
  } catch {
    return undefined
  }
}

/**
 * Time on a CPU of `pid`'s main thread and of all its threads together, in nanoseconds, from
 * the schedstat file of every task under /proc/<pid>/task. Finer than the clock ticks of /proc/<pid>/stat (10 ms each),
 * which an idle node at 1 % of a core collects only 20 of in a 20 s window; and it tells the
 * event loop's thread from V8's and libuv's helpers.
 */
export function threadRunNs (pid: number): { mainNs: number, allNs: number } | undefined {
  try {
    let allNs = 0
    let mainNs = Number.NaN
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      let ns: number
      try {
        ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0])
      } catch {
        continue // the thread ended between the listing and the read
      }
      allNs += ns
      if (Number(tid) === pid) mainNs = ns
    }
    return Number.isFinite(mainNs) ? { mainNs, allNs } : undefined
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------------------------------------
// Cluster nodes.

/**
 * A cluster of `count` nodes (test/helpers/cluster.ts), every node ready, removed by the cleanup
 * (SIGKILL and a synchronous delete on a signal). Nodes log at INFO unless `extraArgs` says
 * otherwise: the helper's default DEBUG writes a line per request, which would be measured too.
 */
export async function startBenchCluster (count: number, nodeOptions: NodeOptions = {}): Promise<Cluster & { teardown: () => Promise<void> }> {
  const options: NodeOptions = { ...nodeOptions, extraArgs: ['--log-level', 'INFO', ...(nodeOptions.extraArgs ?? [])] }
  const cluster = await startCluster(count, { nodeOptions: () => options })
  const teardown = onCleanup('cluster', async () => { await cluster.dispose() }, () => {
    for (const n of cluster.nodes) {
      killQuietly(n.spegel.process.pid, 'SIGKILL')
      killQuietly(n.containerd.pid, 'SIGKILL')
      rmSync(n.containerd.dir, { recursive: true, force: true })
      // The helper's work dir holds the nodes' data dirs.
      rmSync(path.dirname(n.dataDir), { recursive: true, force: true })
    }
  })
  for (const n of cluster.nodes) await n.spegel.waitReady(60_000)
  return Object.assign(cluster, { teardown })
}

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

// ---------------------------------------------------------------------------------------------
// Flags: every benchmark declares its flags once (name, kind, default, help) and gets typed
// values, a usage line and the same errors.

export type FlagSpec =
  | { kind: 'int', default: number, min?: number, help?: string }
  | { kind: 'ints', default: readonly number[], min?: number, help?: string }
  | { kind: 'choice', default: string, choices: readonly string[], help?: string }
  | { kind: 'choices', default: readonly string[], choices: readonly string[], help?: string }
  | { kind: 'string', default: string, help?: string }
  | { kind: 'boolean', help?: string }

type FlagValue<S extends FlagSpec> =
  S extends { kind: 'int' } ? number
    : S extends { kind: 'ints' } ? number[]
      : S extends { kind: 'choice', choices: ReadonlyArray<infer C> } ? C
        : S extends { kind: 'choices', choices: ReadonlyArray<infer C> } ? C[]
          : S extends { kind: 'boolean' } ? boolean
            : string

/** `size-mib` -> `sizeMib`. */
type Camel<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S

export type Flags<S extends Record<string, FlagSpec>> = { [K in keyof S & string as Camel<K>]: FlagValue<S[K]> }

class UsageError extends Error {}

function defaultText (spec: FlagSpec): string {
  switch (spec.kind) {
    case 'boolean': return ''
    case 'ints': case 'choices': return ` ${spec.default.join(',')}`
    default: return ` ${String(spec.default)}`
  }
}

/** The usage line of a benchmark script (`dist/bench/<script>.js`), then one line per flag with help. */
export function usageText (script: string, spec: Record<string, FlagSpec>): string {
  const flags = Object.entries(spec).map(([name, f]) => `[--${name}${defaultText(f)}]`).join(' ')
  const lines = [`usage: node dist/bench/${script}.js ${flags}`]
  for (const [name, f] of Object.entries(spec)) {
    const choices = f.kind === 'choice' || f.kind === 'choices' ? ` (${f.choices.join(f.kind === 'choice' ? '|' : ', ')})` : ''
    if (f.help !== undefined || choices !== '') lines.push(`  --${name}: ${f.help ?? ''}${choices}`)
  }
  return lines.join('\n') + '\n'
}

/**
 * Parses `argv` against `spec` (flag name -> kind and default). `--help` prints the usage and
 * exits 0; an unknown flag or a bad value prints the reason and the usage and exits 2.
 */
export function parseFlags<const S extends Record<string, FlagSpec>> (script: string, spec: S, argv: readonly string[] = process.argv.slice(2)): Flags<S> {
  try {
    return parseFlagsOrThrow(spec, argv)
  } catch (err) {
    if (err instanceof UsageError && err.message === 'help') {
      process.stdout.write(usageText(script, spec))
      process.exit(0)
    }
    process.stderr.write(`${script}: ${errorText(err)}\n${usageText(script, spec)}`)
    process.exit(2)
  }
}

function parseFlagsOrThrow<S extends Record<string, FlagSpec>> (spec: S, argv: readonly string[]): Flags<S> {
  const options: Record<string, { type: 'string' | 'boolean', short?: string }> = { help: { type: 'boolean', short: 'h' } }
  for (const [name, f] of Object.entries(spec)) options[name] = { type: f.kind === 'boolean' ? 'boolean' : 'string' }
  const { values } = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false })
  if (values.help === true) throw new UsageError('help')
  const int = (name: string, raw: string, min: number): number => {
    const n = Number(raw)
    if (raw.trim() === '' || !Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`)
    return n
  }
  const choice = (name: string, raw: string, choices: readonly string[]): string => {
    if (!choices.includes(raw)) throw new UsageError(`--${name}: ${JSON.stringify(raw)} is not one of ${choices.join(', ')}`)
    return raw
  }
  const list = (raw: string): string[] => raw.split(',').map((s) => s.trim()).filter((s) => s !== '')
  const out: Record<string, unknown> = {}
  for (const [name, f] of Object.entries(spec)) {
    const key = name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
    const raw = values[name]
    if (f.kind === 'boolean') {
      out[key] = raw === true
      continue
    }
    if (typeof raw !== 'string') {
      out[key] = f.kind === 'ints' || f.kind === 'choices' ? [...f.default] : f.default
      continue
    }
    switch (f.kind) {
      case 'int': out[key] = int(name, raw, f.min ?? 1); break
      case 'ints': {
        const items = list(raw).map((s) => int(name, s, f.min ?? 1))
        if (items.length === 0) throw new UsageError(`--${name} needs at least one value`)
        out[key] = items
        break
      }
      case 'choice': out[key] = choice(name, raw, f.choices); break
      case 'choices': {
        const items = list(raw).map((s) => choice(name, s, f.choices))
        if (items.length === 0) throw new UsageError(`--${name} needs at least one of ${f.choices.join(', ')}`)
        out[key] = [...new Set(items)]
        break
      }
      case 'string': out[key] = raw; break
    }
  }
  return out as Flags<S>
}

// ---------------------------------------------------------------------------------------------
// Tools a benchmark needs.

export function findInPath (bin: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (dir === '') continue
    try {
      accessSync(path.join(dir, bin), fsConstants.X_OK)
      return path.join(dir, bin)
    } catch {
      // Not in this PATH entry; keep looking.
    }
  }
  return undefined
}

/** A command and the Debian package that installs it. */
export interface Tool { bin: string, pkg: string }

export const TOOLS = {
  curl: { bin: 'curl', pkg: 'curl' },
  ab: { bin: 'ab', pkg: 'apache2-utils' },
  wrk: { bin: 'wrk', pkg: 'wrk' },
  nginx: { bin: 'nginx', pkg: 'nginx-light' },
  skopeo: { bin: 'skopeo', pkg: 'skopeo' },
  dockerRegistry: { bin: 'docker-registry', pkg: 'docker-registry' },
  tc: { bin: 'tc', pkg: 'iproute2' }
} as const satisfies Record<string, Tool>

/** Throws one error naming every missing tool and the apt-get line that installs them all. */
export function requireTools (tools: readonly Tool[]): void {
  const missing = tools.filter((t) => findInPath(t.bin) === undefined)
  if (missing.length === 0) return
  throw new Error(`missing ${missing.map((t) => t.bin).join(', ')}: apt-get install -y ${[...new Set(missing.map((t) => t.pkg))].join(' ')}`)
}

// ---------------------------------------------------------------------------------------------
// Child processes.

export { stopChild } from '../test/helpers/net.js'

function procParent (pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
  } catch {
    return undefined
  }
}

/** Direct children of `pid` (an nginx master's workers). */
export function childPids (pid: number): number[] {
  return readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number).filter((p) => procParent(p) === pid)
}

/**
 * Processes whose CPU time is counted together: `pids` and their direct children (nginx workers).
 * `mainThreadOnly` counts only each pid's main thread (its other threads, e.g. spegel-ts's hash
 * worker and libuv's pool, left out) and no children: the thread a Node process cannot outgrow.
 */
export interface CpuWatch { name: string, pids: readonly number[], mainThreadOnly?: boolean }

/** User + system CPU seconds of each watch (processes and their direct children) now. */
export async function cpuSnapshot (watches: readonly CpuWatch[]): Promise<Map<string, number>> {
  const ticks = await clockTicksPerSecond()
  const out = new Map<string, number>(watches.map((w) => [w.name, 0]))
  if (watches.length === 0) return out
  const owner = new Map<number, string>()
  for (const w of watches) {
    if (w.mainThreadOnly === true) {
      for (const pid of w.pids) out.set(w.name, out.get(w.name)! + (threadTicks(pid, pid) ?? 0) / ticks)
      continue
    }
    for (const pid of w.pids) owner.set(pid, w.name)
  }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    const parent = procParent(pid)
    const name = owner.get(pid) ?? (parent === undefined ? undefined : owner.get(parent))
    if (name === undefined) continue
    const s = procSample(pid)
    if (s !== undefined) out.set(name, out.get(name)! + s.cpuTicks / ticks)
  }
  return out
}

/** User + system clock ticks of one thread of `pid`. */
function threadTicks (pid: number, tid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(rest[11]) + Number(rest[12])
  } catch {
    return undefined
  }
}

function cpuDelta (before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [name, b] of before) out[name] = (after.get(name) ?? b) - b
  return out
}

// ---------------------------------------------------------------------------------------------
// HTTP clients.

export interface DownloadResult {
  /** MB = 10^6 bytes, from curl's speed_download. */
  mbPerSecond: number
  seconds: number
  /** CPU seconds each watch spent over the download. */
  cpuSeconds: Record<string, number>
}

/** One `curl` GET to /dev/null; fails on an error, a non-200 status or a wrong byte count. */
export async function curlDownload (url: string, expectBytes: number, opts: { headers?: readonly string[], watch?: readonly CpuWatch[], timeoutMs?: number } = {}): Promise<DownloadResult> {
  const watch = opts.watch ?? []
  const before = await cpuSnapshot(watch)
  const args = ['-s', '-S', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{speed_download} %{time_total}',
    ...(opts.headers ?? []).flatMap((h) => ['-H', h]), url]
  const res = await run('curl', args, { timeoutMs: opts.timeoutMs ?? 15 * 60_000 })
  const cpu = cpuDelta(before, await cpuSnapshot(watch))
  const [code, size, speed, total] = res.stdout.trim().split(' ')
  if (res.code !== 0 || code !== '200' || Number(size) !== expectBytes) {
    throw new Error(`curl ${url}: exit ${res.code ?? res.signal}, HTTP ${code}, ${size} of ${expectBytes} bytes: ${res.stderr.trim()}`)
  }
  return { mbPerSecond: Number(speed) / 1e6, seconds: Number(total), cpuSeconds: cpu }
}

export interface AbResult {
  requestsPerSecond: number
  complete: number
  failed: number
  non2xx: number
  keepAlive: number
  wallSeconds: number
  cpuSeconds: Record<string, number>
}

/**
 * ApacheBench with keep-alive for `seconds` (`-i` for HEAD: wrk 4.1 waits for a HEAD response's
 * Content-Length bytes of body and counts 0 req/s, wg/wrk#198). Resolves with what ab counted;
 * see abProblems for what makes the figure meaningless.
 */
export async function runAb (url: string, opts: { method: 'GET' | 'HEAD', seconds: number, concurrency?: number, headers?: Record<string, string>, watch?: readonly CpuWatch[] }): Promise<AbResult> {
  const watch = opts.watch ?? []
  // -t alone caps at 50000 requests, and ab preallocates per-request stats, so -n stays bounded.
  const args = ['-k', ...(opts.method === 'HEAD' ? ['-i'] : []), '-q', '-c', String(opts.concurrency ?? 16), '-t', String(opts.seconds),
    '-n', String(opts.seconds * 200_000), ...Object.entries(opts.headers ?? {}).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url]
  const before = await cpuSnapshot(watch)
  const started = performance.now()
  const res = await run('ab', args, { timeoutMs: (opts.seconds + 60) * 1000 })
  const wallSeconds = (performance.now() - started) / 1000
  const cpu = cpuDelta(before, await cpuSnapshot(watch))
  if (res.code !== 0) throw new Error(`ab ${args.join(' ')} failed (${res.code ?? res.signal}): ${res.stderr.trim()}\n${res.stdout}`)
  const num = (re: RegExp): number | undefined => {
    const m = re.exec(res.stdout)
    return m === null ? undefined : Number(m[1])
  }
  const rps = num(/Requests per second:\s+([\d.]+)/)
  if (rps === undefined) throw new Error(`no "Requests per second" in ab output:\n${res.stdout}`)
  return {
    requestsPerSecond: rps,
    complete: num(/Complete requests:\s+(\d+)/) ?? 0,
    failed: num(/Failed requests:\s+(\d+)/) ?? 0,
    non2xx: num(/Non-2xx responses:\s+(\d+)/) ?? 0,
    keepAlive: num(/Keep-Alive requests:\s+(\d+)/) ?? 0,
    wallSeconds,
    cpuSeconds: cpu
  }
}

/**
 * What makes an ab figure wrong: failed requests, answers other than the expected class (2xx, or
 * only non-2xx when a 404 is the point), no requests at all; and, as a lesser warning, requests
 * that did not reuse a connection (each of those pays a TCP connect: another benchmark).
 */
export function abProblems (r: AbResult, expect: '2xx' | 'non-2xx' = '2xx'): { errors: string[], warnings: string[] } {
  const errors: string[] = []
  const warnings: string[] = []
  if (r.complete === 0) errors.push('no request completed')
  if (r.failed > 0) errors.push(`${r.failed} of ${r.complete} requests failed`)
  const wrong = expect === '2xx' ? r.non2xx : r.complete - r.non2xx
  if (wrong > 0) errors.push(`${wrong} of ${r.complete} answers were ${expect === '2xx' ? 'not 2xx' : '2xx'}`)
  if (r.keepAlive < r.complete) warnings.push(`only ${r.keepAlive} of ${r.complete} requests reused a connection`)
  return { errors, warnings }
}
