#!/usr/bin/env node
/**
 * Serving benchmark: one spegel-ts node against nginx (sendfile) on the very same file of a real
 * containerd content store, with two bare Node file servers (bench/node-file-server.ts) as
 * reference columns: what Node itself costs, and what it costs without per-chunk buffers.
 *
 *   npx node dist/bench/serve-blob.js [--size-mib 1024] [--runs 5] [--wrk-seconds 5]
 *
 * Needs root, containerd + ctr, curl, nginx, wrk and ab. Not a test: it never asserts on timing; it
 * only refuses to report numbers for responses that were wrong (status or byte count).
 * See bench/README.md.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { accessSync, constants as fsConstants, readFileSync, readdirSync, rmSync } from 'node:fs'
import { mkdtemp, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { containerdSkipReason, startContainerd, type ContainerdInstance } from '../test/helpers/containerd.js'
import { buildImage, OCI_MANIFEST } from '../test/helpers/image.js'
import { freePort, httpRequest, run } from '../test/helpers/net.js'
import { startSpegel, type SpegelNode } from '../test/helpers/spegel.js'
import { waitFor } from '../test/helpers/wait.js'

const MIB = 1024 * 1024
const REGISTRY = 'bench.local'
const REPOSITORY = 'spegel-bench/blob'
const TAG = '1.0'
const NODE_HWM_BYTES = 1024 * 1024
const CURL_TIMEOUT_MS = 10 * 60_000
const here = path.dirname(fileURLToPath(import.meta.url))

interface Options { sizeMiB: number, runs: number, wrkSeconds: number }

function parseOptions (argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      'size-mib': { type: 'string', default: '1024' },
      runs: { type: 'string', default: '5' },
      'wrk-seconds': { type: 'string', default: '5' },
      help: { type: 'boolean', short: 'h', default: false }
    },
    strict: true
  })
  if (values.help) {
    process.stdout.write('usage: node dist/bench/serve-blob.js [--size-mib 1024] [--runs 5] [--wrk-seconds 5]\n')
    process.exit(0)
  }
  const positive = (name: string, raw: string): number => {
    const n = Number(raw)
    if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${raw}`)
    return n
  }
  return {
    sizeMiB: positive('size-mib', values['size-mib']),
    runs: positive('runs', values.runs),
    wrkSeconds: positive('wrk-seconds', values['wrk-seconds'])
  }
}

// ---------------------------------------------------------------------------------------------
// Cleanup: async on the normal and the failure path, sync (kill + rmSync) on SIGINT/SIGTERM so
// an interrupted run leaves no nginx, containerd or GiB temp files behind.

interface CleanupStep { name: string, async: () => Promise<void>, sync: () => void }
const cleanupSteps: CleanupStep[] = []

async function cleanupAll (): Promise<void> {
  while (cleanupSteps.length > 0) {
    const step = cleanupSteps.pop()!
    try {
      await step.async()
    } catch (err) {
      process.stderr.write(`cleanup ${step.name} failed: ${err instanceof Error ? err.message : String(err)}\n`)
    }
  }
}

function cleanupAllSync (): void {
  while (cleanupSteps.length > 0) {
    const step = cleanupSteps.pop()!
    try {
      step.sync()
    } catch (err) {
      process.stderr.write(`cleanup ${step.name} failed: ${err instanceof Error ? err.message : String(err)}\n`)
    }
  }
}

function onSignal (signal: NodeJS.Signals): void {
  process.stderr.write(`\n${signal}: cleaning up\n`)
  cleanupAllSync()
  process.exit(128 + (os.constants.signals[signal] ?? 0))
}

function killQuietly (pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return
  try {
    process.kill(pid, signal)
  } catch (err) {
    // Already gone is what we wanted.
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
  }
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc, to tell a CPU-bound server from an I/O-bound one.

let clockTicksPerSecond = 100

interface ProcStat { ppid: number, state: string, cpuTicks: number }

function readProcStat (pid: number): ProcStat | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  // The command name may contain spaces and parentheses; the fields after the last ')' do not.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return { state: rest[0] ?? '?', ppid: Number(rest[1]), cpuTicks: Number(rest[11]) + Number(rest[12]) }
}

/** User + system CPU seconds of these processes and all their direct children (nginx workers). */
function cpuSeconds (pids: number[]): number {
  const wanted = new Set(pids)
  let ticks = 0
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    const s = readProcStat(pid)
    if (s !== undefined && (wanted.has(pid) || wanted.has(s.ppid))) ticks += s.cpuTicks
  }
  return ticks / clockTicksPerSecond
}

// ---------------------------------------------------------------------------------------------
// Servers under test.

interface Target {
  label: string
  /** Whose CPU time to count (children included). */
  pids: number[]
  blobUrl: string
  headManifestUrl: string
  getManifestUrl: string
}

interface NginxInstance { port: number, child: ChildProcess, dir: string }

async function startNginx (dir: string, root: string): Promise<NginxInstance> {
  await mkdir(path.join(dir, 'tmp'), { recursive: true })
  const port = await freePort('127.0.0.1')
  const errorLog = path.join(dir, 'error.log')
  // A private nginx: sendfile on, two workers, no access log. Also `user root`, because the content
  // store sits below 0700 temp dirs that nginx's default worker user cannot enter; and `daemon off`, so
  // the master is our child, which we reap (a daemonized master lingers as a zombie here).
  const conf = `user root;
daemon off;
worker_processes 2;
pid ${path.join(dir, 'nginx.pid')};
error_log ${errorLog} warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp; uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  server { listen 127.0.0.1:${port}; root ${root}; }
}
`
  const confFile = path.join(dir, 'nginx.conf')
  await writeFile(confFile, conf)
  const child = spawn('nginx', ['-c', confFile, '-e', errorLog], { stdio: ['ignore', 'ignore', 'inherit'] })
  const exited = once(child, 'exit').then(async ([code, signal]) => {
    const tail = await readFile(errorLog, 'utf8').catch(() => '')
    throw new Error(`nginx exited (code ${String(code)}, signal ${String(signal)}): ${tail.slice(-1000)}`)
  })
  try {
    await Promise.race([exited, waitFor(async () => {
      try {
        return (await httpRequest(`http://127.0.0.1:${port}/`, { method: 'HEAD', timeoutMs: 2000 })).status > 0
      } catch {
        return false
      }
    }, { timeoutMs: 10_000, what: `nginx on port ${port}` })])
  } catch (err) {
    stopNginxSync(child)
    throw err
  } finally {
    exited.catch(() => { /* only the start race needed it; stopNginx waits on the exit itself */ })
  }
  return { port, child, dir }
}

/** The master's children: killing only a SIGKILLed master would leave its workers serving. */
function childPids (pid: number): number[] {
  return readdirSync('/proc').filter(e => /^\d+$/.test(e)).map(Number).filter(p => readProcStat(p)?.ppid === pid)
}

function stopNginxSync (child: ChildProcess): void {
  if (child.pid === undefined) return
  // Master first: it respawns any worker that dies while it lives.
  const workers = childPids(child.pid)
  child.kill('SIGKILL')
  for (const worker of workers) killQuietly(worker, 'SIGKILL')
}

async function stopNginx (child: ChildProcess): Promise<void> {
  // SIGTERM is nginx's fast shutdown: the master stops its workers, then exits.
  await stopChild(child)
}

interface NodeRefServer { port: number, child: ChildProcess }

async function startNodeRef (root: string, mode: 'stream' | 'pool'): Promise<NodeRefServer> {
  const child = spawn(process.execPath, [path.join(here, 'node-file-server.js'), root, String(NODE_HWM_BYTES), mode], {
    stdio: ['ignore', 'pipe', 'inherit']
  })
  const lines = createInterface({ input: child.stdout! })
  const exited = once(child, 'exit').then(([code, signal]) => {
    throw new Error(`node-file-server exited (code ${String(code)}, signal ${String(signal)})`)
  })
  const first = once(lines, 'line').then(([line]) => JSON.parse(String(line)) as { port: number })
  try {
    const { port } = await Promise.race([first, exited])
    return { port, child }
  } catch (err) {
    child.kill('SIGKILL')
    throw err
  } finally {
    exited.catch(() => { /* a later exit is seen by stop; only the start race needed this */ })
    lines.close()
  }
}

async function stopChild (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const escalate = setTimeout(() => child.kill('SIGKILL'), 5000)
  try {
    await exited
  } finally {
    clearTimeout(escalate)
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements.

interface CurlResult {
  mbPerSecond: number
  seconds: number
  /** Server CPU over the download's wall time, as a share of one core. */
  cpuPercent: number
  /** Server CPU seconds spent per GiB sent: moved less than MB/s by other load on the machine. */
  cpuSecondsPerGiB: number
}

async function download (target: Target, expectedBytes: number): Promise<CurlResult> {
  const cpuBefore = cpuSeconds(target.pids)
  const res = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{speed_download} %{time_total}', target.blobUrl], {
    timeoutMs: CURL_TIMEOUT_MS
  })
  const cpu = cpuSeconds(target.pids) - cpuBefore
  if (res.code !== 0) throw new Error(`curl ${target.blobUrl} failed (${res.code ?? res.signal}): ${res.stderr.trim()}`)
  const [status, size, speed, total] = res.stdout.trim().split(' ').map(Number)
  if (status !== 200 || size !== expectedBytes) {
    throw new Error(`${target.label}: GET ${target.blobUrl} gave HTTP ${String(status)} with ${String(size)} bytes, expected 200 with ${expectedBytes}`)
  }
  const seconds = total ?? 0
  return { mbPerSecond: (speed ?? 0) / 1e6, seconds, cpuPercent: seconds > 0 ? 100 * cpu / seconds : 0, cpuSecondsPerGiB: cpu / (expectedBytes / (1024 * MIB)) }
}

interface LoadResult { requestsPerSecond: number, cpuPercent: number, warnings: string[] }

/** Runs a load generator and counts the server's CPU time over the same wall time. */
async function load (target: Target, cmd: string, args: string[], seconds: number, parse: (stdout: string) => Omit<LoadResult, 'cpuPercent'>): Promise<LoadResult> {
  const cpuBefore = cpuSeconds(target.pids)
  const started = process.hrtime.bigint()
  const res = await run(cmd, args, { timeoutMs: (seconds + 60) * 1000 })
  const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9
  const cpu = cpuSeconds(target.pids) - cpuBefore
  if (res.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${res.code ?? res.signal}): ${res.stderr.trim()}\n${res.stdout}`)
  return { ...parse(res.stdout), cpuPercent: 100 * cpu / wallSeconds }
}

async function wrk (target: Target, url: string, script: string, seconds: number): Promise<LoadResult> {
  return await load(target, 'wrk', ['-t2', '-c16', `-d${seconds}s`, '-s', script, url], seconds, (out) => {
    const m = /Requests\/sec:\s+([\d.]+)/.exec(out)
    if (m === null) throw new Error(`no Requests/sec in wrk output:\n${out}`)
    // Errors make req/s meaningless (a fast 404 is not a served manifest), so they are reported.
    const warnings = out.split('\n').filter(l => /Non-2xx|Socket errors/.test(l)).map(l => l.trim())
    return { requestsPerSecond: Number(m[1]), warnings }
  })
}

/**
 * ApacheBench with keep-alive, for HEAD: wrk 4.1's HTTP parser is never told a HEAD response has
 * no body, so it waits for Content-Length bytes and counts 0 req/s (wg/wrk#198, unfixed).
 */
async function ab (target: Target, url: string, method: 'GET' | 'HEAD', seconds: number): Promise<LoadResult> {
  // -t alone caps at 50000 requests; ab preallocates per-request stats, so keep -n bounded.
  const maxRequests = String(seconds * 200_000)
  const args = ['-k', ...(method === 'HEAD' ? ['-i'] : []), '-c', '16', '-t', String(seconds), '-n', maxRequests,
    '-H', `Accept: ${OCI_MANIFEST}, */*`, url]
  return await load(target, 'ab', args, seconds, (out) => {
    const num = (re: RegExp): number | undefined => {
      const m = re.exec(out)
      return m === null ? undefined : Number(m[1])
    }
    const rps = num(/Requests per second:\s+([\d.]+)/)
    if (rps === undefined) throw new Error(`no "Requests per second" in ab output:\n${out}`)
    const complete = num(/Complete requests:\s+(\d+)/) ?? 0
    const failed = num(/Failed requests:\s+(\d+)/) ?? 0
    const non2xx = num(/Non-2xx responses:\s+(\d+)/) ?? 0
    const keepAlive = num(/Keep-Alive requests:\s+(\d+)/) ?? 0
    const warnings: string[] = []
    if (failed > 0) warnings.push(`${failed} failed requests`)
    if (non2xx > 0) warnings.push(`${non2xx} non-2xx responses`)
    // Without keep-alive every request pays a TCP connect, a different benchmark.
    if (keepAlive < complete) warnings.push(`only ${keepAlive} of ${complete} requests reused a connection`)
    return { requestsPerSecond: rps, warnings }
  })
}

function median (values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** Other work on a 2-core machine moves every number here; say how busy it was. */
function loadText (isBeforeRun = false): string {
  const [one = 0, five = 0] = os.loadavg()
  return `load average ${one.toFixed(2)} (1 min) ${five.toFixed(2)} (5 min)${isBeforeRun && one > 0.5 ? ' -- machine already busy, numbers will be noisy' : ''}`
}

const fmt = (n: number): string => n.toFixed(0)
const ratio = (a: number, b: number): string => b > 0 ? (a / b).toFixed(2) : 'n/a'
const log = (line: string): void => { process.stdout.write(`${line}\n`) }

async function checkStatus (url: string, method: 'GET' | 'HEAD', what: string): Promise<void> {
  const res = await httpRequest(url, { method, timeoutMs: 10_000 })
  if (res.status !== 200) throw new Error(`${what}: ${method} ${url} answered ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`)
}

function findInPath (bin: string): boolean {
  return (process.env.PATH ?? '').split(':').some(d => {
    try {
      accessSync(path.join(d, bin), fsConstants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

// ---------------------------------------------------------------------------------------------

async function main (): Promise<void> {
  const opts = parseOptions(process.argv.slice(2))
  const skip = containerdSkipReason()
  if (skip !== undefined) throw new Error(skip)
  const missing = ['curl', 'nginx', 'wrk', 'ab'].filter(b => !findInPath(b))
  if (missing.length > 0) throw new Error(`missing ${missing.join(', ')}: apt-get install -y ${missing.map(b => b === 'ab' ? 'apache2-utils' : b).join(' ')}`)
  clockTicksPerSecond = Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100

  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal)

  const sizeBytes = opts.sizeMiB * MIB
  const work = await mkdtemp(path.join('/tmp', 'spegel-bench-'))
  cleanupSteps.push({
    name: `temp dir ${work}`,
    async: async () => { await rm(work, { recursive: true, force: true, maxRetries: 3 }) },
    sync: () => { rmSync(work, { recursive: true, force: true, maxRetries: 3 }) }
  })
  log(`node ${process.version}, ${os.cpus().length} cpus, ${loadText(true)}, work dir ${work}`)

  let t = Date.now()
  const ref = `${REGISTRY}/${REPOSITORY}:${TAG}`
  const image = await buildImage(path.join(work, 'image'), ref, [sizeBytes])
  const platform = image.platforms[0]!
  const layer = platform.layers[0]!
  const manifest = platform.manifest
  log(`built ${ref}: layer ${layer.digest} (${layer.size} bytes), manifest ${manifest.digest} in ${((Date.now() - t) / 1000).toFixed(1)} s`)

  t = Date.now()
  const ctrd: ContainerdInstance = await startContainerd({ name: 'bench' })
  cleanupSteps.push({
    name: 'containerd',
    async: async () => { await ctrd.dispose() },
    sync: () => {
      killQuietly(ctrd.pid, 'SIGKILL')
      rmSync(ctrd.dir, { recursive: true, force: true, maxRetries: 3 })
    }
  })
  await ctrd.importImage(image.archivePath!)
  // The layout and the archive are two more copies of the blob; only containerd's is served.
  await rm(path.join(work, 'image'), { recursive: true, force: true })
  const blobsDir = path.join(ctrd.contentPath, 'blobs', 'sha256')
  const hexOf = (digest: string): string => digest.slice('sha256:'.length)
  const blobSize = (await stat(path.join(blobsDir, hexOf(layer.digest)))).size
  if (blobSize !== sizeBytes) throw new Error(`content store holds ${blobSize} bytes for ${layer.digest}, expected ${sizeBytes}`)
  log(`imported into containerd ${ctrd.dir} in ${((Date.now() - t) / 1000).toFixed(1)} s`)

  const spegel: SpegelNode = await startSpegel({ containerdSock: ctrd.socketPath, contentPath: ctrd.contentPath, logLevel: 'INFO' })
  cleanupSteps.push({
    name: 'spegel',
    async: async () => { await spegel.stop() },
    sync: () => { spegel.process.kill('SIGKILL') }
  })
  await spegel.waitReady(60_000)
  const spegelTarget: Target = {
    label: 'spegel',
    pids: [spegel.process.pid!],
    blobUrl: `${spegel.registryUrl}/v2/${REPOSITORY}/blobs/${layer.digest}`,
    headManifestUrl: `${spegel.registryUrl}/v2/${REPOSITORY}/manifests/${TAG}?ns=${REGISTRY}`,
    getManifestUrl: `${spegel.registryUrl}/v2/${REPOSITORY}/manifests/${manifest.digest}?ns=${REGISTRY}`
  }
  // Ready means connected; the tag is only resolvable once the image walk has indexed it.
  await waitFor(async () => (await httpRequest(spegelTarget.headManifestUrl, { method: 'HEAD' })).status === 200,
    { timeoutMs: 30_000, what: `spegel to resolve ${ref}` })

  const nginxDir = path.join(work, 'nginx')
  const nginx = await startNginx(nginxDir, blobsDir)
  const nginxPid = nginx.child.pid!
  cleanupSteps.push({
    name: `nginx ${nginxPid}`,
    async: async () => { await stopNginx(nginx.child) },
    sync: () => { stopNginxSync(nginx.child) }
  })
  const nginxUrl = `http://127.0.0.1:${nginx.port}`
  const nginxTarget: Target = {
    label: 'nginx',
    pids: [nginxPid],
    blobUrl: `${nginxUrl}/${hexOf(layer.digest)}`,
    headManifestUrl: `${nginxUrl}/${hexOf(manifest.digest)}`,
    getManifestUrl: `${nginxUrl}/${hexOf(manifest.digest)}`
  }

  const nodeTargets: Target[] = []
  for (const mode of ['stream', 'pool'] as const) {
    const server = await startNodeRef(blobsDir, mode)
    cleanupSteps.push({
      name: `node-file-server ${mode}`,
      async: async () => { await stopChild(server.child) },
      sync: () => { server.child.kill('SIGKILL') }
    })
    const url = `http://127.0.0.1:${server.port}`
    nodeTargets.push({
      label: mode === 'stream' ? 'node' : 'node-pool',
      pids: [server.child.pid!],
      blobUrl: `${url}/${hexOf(layer.digest)}`,
      headManifestUrl: `${url}/${hexOf(manifest.digest)}`,
      getManifestUrl: `${url}/${hexOf(manifest.digest)}`
    })
  }
  const [nodeTarget, poolTarget] = nodeTargets as [Target, Target]
  const targets = [spegelTarget, nginxTarget, nodeTarget, poolTarget]
  for (const target of targets) {
    await checkStatus(target.headManifestUrl, 'HEAD', target.label)
    await checkStatus(target.getManifestUrl, 'GET', target.label)
  }
  log(`spegel ${spegel.registryUrl} (pid ${spegel.process.pid}), nginx ${nginxUrl} (master ${nginxPid}), node ${nodeTarget.blobUrl.split('/').slice(0, 3).join('/')} (pid ${nodeTarget.pids[0]}), node-pool ${poolTarget.blobUrl.split('/').slice(0, 3).join('/')} (pid ${poolTarget.pids[0]})`)

  // 1. Blob throughput.
  log(`\n== GET blob ${opts.sizeMiB} MiB, curl, warm-up + ${opts.runs} interleaved runs (MB = 1e6 bytes) ==`)
  for (const target of targets) {
    const r = await download(target, sizeBytes)
    log(`warm-up ${target.label.padEnd(9)} ${fmt(r.mbPerSecond).padStart(6)} MB/s  ${r.seconds.toFixed(2)} s  server cpu ${fmt(r.cpuPercent).padStart(3)}%, ${r.cpuSecondsPerGiB.toFixed(2)} s/GiB`)
  }
  const speeds = new Map<string, number[]>(targets.map(tg => [tg.label, []]))
  const cpus = new Map<string, number[]>(targets.map(tg => [tg.label, []]))
  const cpuPerGiB = new Map<string, number[]>(targets.map(tg => [tg.label, []]))
  for (let i = 1; i <= opts.runs; i++) {
    for (const target of targets) {
      const r = await download(target, sizeBytes)
      speeds.get(target.label)!.push(r.mbPerSecond)
      cpus.get(target.label)!.push(r.cpuPercent)
      cpuPerGiB.get(target.label)!.push(r.cpuSecondsPerGiB)
      log(`run ${i}   ${target.label.padEnd(9)} ${fmt(r.mbPerSecond).padStart(6)} MB/s  ${r.seconds.toFixed(2)} s  server cpu ${fmt(r.cpuPercent).padStart(3)}%, ${r.cpuSecondsPerGiB.toFixed(2)} s/GiB`)
    }
  }
  const medianSpeed = (label: string): number => median(speeds.get(label) ?? [])
  const medianCpu = (label: string): number => median(cpuPerGiB.get(label) ?? [])
  for (const target of targets) {
    log(`median  ${target.label.padEnd(9)} ${fmt(medianSpeed(target.label)).padStart(6)} MB/s          server cpu ${fmt(median(cpus.get(target.label) ?? [])).padStart(3)}%, ${medianCpu(target.label).toFixed(2)} s/GiB`)
  }

  // 2. Small requests: HEAD by tag is what containerd sends first on every pull, GET by digest next.
  const getScript = path.join(work, 'get.lua')
  // The Accept containerd sends when it fetches a manifest by digest.
  await writeFile(getScript, `wrk.method = "GET"\nwrk.headers["Accept"] = "${OCI_MANIFEST}, */*"\n`)
  const rps = new Map<string, number>()
  const small = [
    { kind: 'HEAD manifest', tool: `ab -k -i -c16 -t${opts.wrkSeconds}`, url: (tg: Target) => tg.headManifestUrl, measure: async (tg: Target) => await ab(tg, tg.headManifestUrl, 'HEAD', opts.wrkSeconds) },
    { kind: 'GET manifest', tool: `wrk -t2 -c16 -d${opts.wrkSeconds}s`, url: (tg: Target) => tg.getManifestUrl, measure: async (tg: Target) => await wrk(tg, tg.getManifestUrl, getScript, opts.wrkSeconds) },
    { kind: 'GET manifest (ab)', tool: `ab -k -c16 -t${opts.wrkSeconds}`, url: (tg: Target) => tg.getManifestUrl, measure: async (tg: Target) => await ab(tg, tg.getManifestUrl, 'GET', opts.wrkSeconds) }
  ]
  for (const { kind, tool, url, measure } of small) {
    log(`\n== ${kind} (${manifest.size} bytes), ${tool} ==`)
    // node-pool answers small files exactly as node does.
    for (const target of [spegelTarget, nginxTarget, nodeTarget]) {
      const r = await measure(target)
      rps.set(`${kind}/${target.label}`, r.requestsPerSecond)
      log(`${target.label.padEnd(9)} ${fmt(r.requestsPerSecond).padStart(7)} req/s  server cpu ${fmt(r.cpuPercent)}%  ${url(target)}`)
      for (const w of r.warnings) log(`  WARNING ${target.label}: ${w}`)
    }
  }

  const s = medianSpeed('spegel')
  const n = medianSpeed('nginx')
  const ref1 = medianSpeed(nodeTarget.label)
  const reqs = (kind: string, label: string): number => rps.get(`${kind}/${label}`) ?? 0
  const line = (kind: string): string => {
    const a = reqs(kind, 'spegel')
    const b = reqs(kind, 'nginx')
    return `${kind}: spegel ${fmt(a)} req/s, nginx ${fmt(b)} req/s, ratio ${ratio(a, b)}`
  }
  const node = nodeTarget.label
  log(`\nfinished, ${loadText()} (includes this benchmark)`)
  log('\n== summary ==')
  log(`blob ${opts.sizeMiB} MiB: spegel median ${fmt(s)} MB/s, nginx median ${fmt(n)} MB/s, ratio ${ratio(s, n)}`)
  log(line('HEAD manifest'))
  log(line('GET manifest'))
  log(line('GET manifest (ab)'))
  const pool = poolTarget.label
  log(`server CPU per GiB sent (median): ${targets.map(tg => `${tg.label} ${medianCpu(tg.label).toFixed(2)} s`).join(', ')}`)
  log(`reference, bare Node ${process.version}, 1 MiB chunks: createReadStream blob ${fmt(ref1)} MB/s (spegel/node ${ratio(s, ref1)}), ` +
    `pooled buffers blob ${fmt(medianSpeed(pool))} MB/s (spegel/node-pool ${ratio(s, medianSpeed(pool))}); ` +
    `HEAD ${fmt(reqs('HEAD manifest', node))} req/s (spegel/node ${ratio(reqs('HEAD manifest', 'spegel'), reqs('HEAD manifest', node))}), ` +
    `GET ${fmt(reqs('GET manifest', node))} req/s (spegel/node ${ratio(reqs('GET manifest', 'spegel'), reqs('GET manifest', node))})`)
}

let exitCode = 0
try {
  await main()
} catch (err) {
  exitCode = 1
  process.stderr.write(`serve-blob failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
} finally {
  await cleanupAll()
}
process.exitCode = exitCode
