#!/usr/bin/env node
/**
 * Many concurrent keep-alive connections: spegel-ts (local content, and mirrored content relayed
 * by a second node) against nginx serving the very same files, in the same run.
 *
 *   npx node dist/bench/load.js [--connections 1000] [--requests 25000] [--seconds 0] [--runs 3]
 *                               [--blob-kib 1024] [--targets local,mirror,nginx]
 *
 * Per run and target, two ApacheBench processes at once, each with `--connections` keep-alive
 * connections: `ab -k -i` (HEAD manifest by tag, what containerd sends first) and `ab -k` (GET of a
 * `--blob-kib` blob), so 2 × `--connections` connections are open on the server. It prints ab's
 * failed requests with its breakdown (connect, receive, length, exceptions), non-2xx answers,
 * req/s, latency percentiles and the server's peak RSS (VmHWM after resetting it), and the
 * kernel's listen-queue overflow counters, then medians over the runs.
 *
 * Needs root (containerd; resetting VmHWM), containerd + ctr, ab (apache2-utils) and nginx.
 * Not a test: it never asserts on timing. See bench/README.md.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { startCluster, lookupPeers, type ClusterNode } from '../test/helpers/cluster.js'
import { containerdSkipReason } from '../test/helpers/containerd.js'
import { buildImage, OCI_MANIFEST } from '../test/helpers/image.js'
import { freePort, httpRequest, run } from '../test/helpers/net.js'
import { waitFor } from '../test/helpers/wait.js'
import { fixed, killQuietly, loadLine, median, onCleanup, restartForDiskReads, runBenchmark } from './cluster-common.js'

const NS = 'bench.local'
const REPO = 'spegel-load/blob'
const TAG = '1.0'
const TARGET_NAMES = ['local', 'mirror', 'nginx'] as const
type TargetName = typeof TARGET_NAMES[number]

interface Options {
  connections: number
  requests: number
  seconds: number
  runs: number
  blobKiB: number
  targets: TargetName[]
  nodeLogLevel: string
  nodeOptions: string
  isHold: boolean
}

function parseOptions (): Options {
  const { values } = parseArgs({
    options: {
      connections: { type: 'string', default: '1000' },
      requests: { type: 'string', default: '25000' },
      seconds: { type: 'string', default: '0' },
      runs: { type: 'string', default: '3' },
      'blob-kib': { type: 'string', default: '1024' },
      targets: { type: 'string', default: TARGET_NAMES.join(',') },
      'node-log-level': { type: 'string', default: 'INFO' },
      'node-options': { type: 'string', default: '' },
      hold: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false }
    },
    strict: true
  })
  if (values.help) {
    process.stdout.write('usage: node dist/bench/load.js [--connections 1000] [--requests 25000] [--seconds 0] [--runs 3] [--blob-kib 1024] [--targets local,mirror,nginx]\n' +
      '  --connections  keep-alive connections of each of the two ab processes (HEAD and GET)\n' +
      '  --requests     requests of each ab process per run\n' +
      '  --seconds      when > 0, each ab process also stops after this many seconds (ab -t)\n' +
      '  --node-log-level  DEBUG adds a count of non-2xx and broken responses per run from the nodes\' request log lines (costs throughput)\n' +
      '  --node-options  NODE_OPTIONS for the spegel-ts nodes, e.g. --node-options=--max-semi-space-size=1 (what a 512 MiB container limit gives V8)\n' +
      '  --hold         set everything up, print the URLs, and wait for Ctrl-C (to run ab by hand)\n')
    process.exit(0)
  }
  const int = (name: string, raw: string, min: number): number => {
    const n = Number(raw)
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${raw}`)
    return n
  }
  const targets = values.targets.split(',').map((t) => t.trim()).filter((t) => t !== '')
  for (const t of targets) {
    if (!(TARGET_NAMES as readonly string[]).includes(t)) throw new Error(`--targets: unknown target ${t} (known: ${TARGET_NAMES.join(', ')})`)
  }
  const connections = int('connections', values.connections, 1)
  const requests = int('requests', values.requests, 1)
  if (requests < connections) throw new Error('--requests must be at least --connections (ab refuses otherwise)')
  return {
    connections,
    requests,
    seconds: int('seconds', values.seconds, 0),
    runs: int('runs', values.runs, 1),
    blobKiB: int('blob-kib', values['blob-kib'], 2),
    targets: targets as TargetName[],
    nodeLogLevel: values['node-log-level'],
    nodeOptions: values['node-options'],
    isHold: values.hold
  }
}

// ---------------------------------------------------------------------------------------------
// /proc readings.

/** The process and its direct children (nginx workers). */
function processTree (pid: number): number[] {
  const pids = [pid]
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (ppid === pid) pids.push(Number(entry))
    } catch {
      // Gone between readdir and read.
    }
  }
  return pids
}

function statusKiB (pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0)
  } catch {
    return 0
  }
}

/** Resets VmHWM to the current RSS (needs root or the same user). False when not allowed. */
function resetPeak (pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
    return true
  } catch {
    return false
  }
}

function openFilesLimit (pid: number): string {
  try {
    const line = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'))
    const [soft, hard] = (line ?? '').replace('Max open files', '').trim().split(/\s+/)
    return `${soft ?? '?'} soft / ${hard ?? '?'} hard`
  } catch {
    return 'unknown'
  }
}

/** Kernel TCP counters that say whether connections were lost before the server saw them. */
function tcpCounters (): Map<string, number> {
  const out = new Map<string, number>()
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n')
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i]!.split(/\s+/)
      const values = lines[i + 1]!.split(/\s+/)
      if (names[0] !== 'TcpExt:') continue
      names.forEach((n, j) => { if (j > 0) out.set(n, Number(values[j])) })
    }
  } catch {
    // Not Linux: the counters are just not printed.
  }
  return out
}

const WATCHED_TCP = ['ListenOverflows', 'ListenDrops', 'TCPAbortOnData', 'TCPAbortOnClose', 'TCPReqQFullDrop', 'TCPReqQFullDoCookies', 'SyncookiesSent'] as const

// ---------------------------------------------------------------------------------------------
// nginx on the same files.

interface Nginx { port: number, child: ChildProcess }

async function startNginx (dir: string, root: string): Promise<Nginx> {
  await mkdir(path.join(dir, 'tmp'), { recursive: true })
  const port = await freePort('127.0.0.1')
  const errorLog = path.join(dir, 'error.log')
  // Two workers (one per core here), enough worker_connections for every ab connection (its
  // default 512 would refuse them), sendfile, no access log, and nginx's default listen backlog
  // (511, as Node's before spegel-ts raised its own); `user root` to enter the 0700 temp dirs,
  // `daemon off` so that the master is our child.
  const conf = `user root;
daemon off;
worker_processes 2;
worker_rlimit_nofile 65536;
pid ${path.join(dir, 'nginx.pid')};
error_log ${errorLog} warn;
events { worker_connections 8192; }
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
  return { port, child }
}

function stopNginxSync (child: ChildProcess): void {
  if (child.pid === undefined) return
  // Master first: it respawns any worker that dies while it lives.
  const workers = processTree(child.pid).slice(1)
  child.kill('SIGKILL')
  for (const worker of workers) killQuietly(worker, 'SIGKILL')
}

async function stopNginx (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const escalate = setTimeout(() => { stopNginxSync(child) }, 5000)
  try {
    await exited
  } finally {
    clearTimeout(escalate)
  }
}

// ---------------------------------------------------------------------------------------------
// ApacheBench.

interface AbResult {
  complete: number
  failed: number
  connect: number
  receive: number
  length: number
  exceptions: number
  non2xx: number
  keepAlive: number
  rps: number
  totalBytes: number
  /** From ab's "Percentage of the requests served within a certain time (ms)" table. */
  p50: number
  p90: number
  p99: number
  max: number
  seconds: number
}

async function ab (method: 'HEAD' | 'GET', url: string, opts: Options): Promise<AbResult> {
  // -r: count receive errors instead of exiting at the first one (which would hide the rest).
  // -s 60: ab's per-request timeout; a connection the server never answers shows up as a failure.
  const args = ['-k', '-r', '-s', '60', ...(method === 'HEAD' ? ['-i'] : []), '-c', String(opts.connections), '-n', String(opts.requests),
    ...(opts.seconds > 0 ? ['-t', String(opts.seconds)] : []), '-H', `Accept: ${OCI_MANIFEST}, */*`, url]
  const res = await run('ab', args, { timeoutMs: 30 * 60_000 })
  const out = res.stdout
  const num = (re: RegExp): number => Number(re.exec(out)?.[1] ?? Number.NaN)
  const complete = num(/Complete requests:\s+(\d+)/)
  if (res.code !== 0 || !Number.isFinite(complete)) throw new Error(`ab ${args.join(' ')} failed (${res.code ?? res.signal}): ${res.stderr.trim()}\n${out}`)
  const breakdown = /\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)/.exec(out)
  const pct = (p: number): number => num(new RegExp(`^\\s+${p}%\\s+(\\d+)`, 'm'))
  return {
    complete,
    failed: num(/Failed requests:\s+(\d+)/),
    connect: Number(breakdown?.[1] ?? 0),
    receive: Number(breakdown?.[2] ?? 0),
    length: Number(breakdown?.[3] ?? 0),
    exceptions: Number(breakdown?.[4] ?? 0),
    non2xx: Number(/Non-2xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0),
    keepAlive: Number(/Keep-Alive requests:\s+(\d+)/.exec(out)?.[1] ?? 0),
    rps: num(/Requests per second:\s+([\d.]+)/),
    totalBytes: num(/Total transferred:\s+(\d+)/),
    p50: pct(50),
    p90: pct(90),
    p99: pct(99),
    max: num(/^\s+100%\s+(\d+)/m),
    seconds: num(/Time taken for tests:\s+([\d.]+)/)
  }
}

// ---------------------------------------------------------------------------------------------

interface Target {
  name: TargetName
  label: string
  /** The server whose RSS is the figure (nginx: master and workers). */
  pid: number
  /** Others whose RSS is printed alongside (the holder behind the mirror). */
  alsoPids: Array<{ label: string, pid: number }>
  headUrl: string
  getUrl: string
  node?: ClusterNode
}

interface RunResult {
  head: AbResult
  get: AbResult
  peakRssKiB: number
  idleRssKiB: number
  alsoPeakKiB: number[]
  tcp: Map<string, number>
  /** warn/error log lines the node wrote during the run, by message. */
  nodeLogs: Map<string, number>
}

async function runOnce (target: Target, opts: Options): Promise<RunResult> {
  const pids = processTree(target.pid)
  const idleRssKiB = pids.reduce((sum, pid) => sum + statusKiB(pid, 'VmRSS'), 0)
  const isReset = pids.every(resetPeak) && target.alsoPids.every((p) => resetPeak(p.pid))
  // Fallback when VmHWM cannot be reset: sample RSS every 100 ms.
  let sampledPeak = idleRssKiB
  const sampler = setInterval(() => {
    sampledPeak = Math.max(sampledPeak, pids.reduce((sum, pid) => sum + statusKiB(pid, 'VmRSS'), 0))
  }, 100)
  const logsBefore = target.node?.spegel.logs.length ?? 0
  const tcpBefore = tcpCounters()
  let head: AbResult
  let get: AbResult
  try {
    [head, get] = await Promise.all([ab('HEAD', target.headUrl, opts), ab('GET', target.getUrl, opts)])
  } finally {
    clearInterval(sampler)
  }
  const tcpAfter = tcpCounters()
  const tcp = new Map<string, number>()
  for (const name of WATCHED_TCP) {
    const delta = (tcpAfter.get(name) ?? 0) - (tcpBefore.get(name) ?? 0)
    if (delta !== 0) tcp.set(name, delta)
  }
  const nodeLogs = new Map<string, number>()
  for (const line of target.node?.spegel.logs.slice(logsBefore) ?? []) {
    const isOddRequest = line.msg === 'request' && (line.status !== 200 || line.aborted === true)
    if (line.level !== 'WARN' && line.level !== 'ERROR' && !isOddRequest) continue
    const key = `${String(line.level)} ${String(line.msg)}${line.aborted === true ? ' aborted' : ''}${line.status === undefined ? '' : ` ${String(line.status)}`}${line.err === undefined ? '' : `: ${typeof line.err === 'object' && line.err !== null ? String((line.err as { message?: unknown }).message) : String(line.err)}`}`
    // Numbers (durations, ports, sizes) would make every line its own group.
    const group = key.replace(/\d+(\.\d+)?/g, 'N').slice(0, 200)
    nodeLogs.set(group, (nodeLogs.get(group) ?? 0) + 1)
  }
  const peakRssKiB = isReset ? pids.reduce((sum, pid) => sum + statusKiB(pid, 'VmHWM'), 0) : sampledPeak
  const alsoPeakKiB = target.alsoPids.map((p) => isReset ? statusKiB(p.pid, 'VmHWM') : statusKiB(p.pid, 'VmRSS'))
  return { head, get, peakRssKiB, idleRssKiB, alsoPeakKiB, tcp, nodeLogs }
}

const mib = (kib: number): string => fixed(kib / 1024, 0)

function abText (r: AbResult): string {
  const failures = r.failed > 0 ? ` (connect ${r.connect}, receive ${r.receive}, length ${r.length}, exceptions ${r.exceptions})` : ''
  return `${r.complete} done, failed ${r.failed}${failures}, non-2xx ${r.non2xx}, keep-alive ${r.keepAlive}, ${fixed(r.rps, 0)} req/s, ms p50 ${r.p50} p90 ${r.p90} p99 ${r.p99} max ${r.max}`
}

async function main (): Promise<void> {
  const opts = parseOptions()
  const skip = containerdSkipReason()
  if (skip !== undefined) throw new Error(skip)
  for (const [bin, pkg, args] of [['ab', 'apache2-utils', ['-V']], ['nginx', 'nginx', ['-v']]] as const) {
    const res = await run(bin, args).catch(() => undefined)
    if (res?.code !== 0) throw new Error(`${bin} not found (apt-get install -y ${pkg})`)
  }
  const log = (line: string): void => { process.stdout.write(`${line}\n`) }
  const connections = 2 * opts.connections
  log(`load: per run and target, ab -k -i (HEAD manifest) and ab -k (GET ${opts.blobKiB} KiB blob) at once, ${opts.connections} keep-alive connections and ${opts.requests} requests each` +
    `${opts.seconds > 0 ? ` (at most ${opts.seconds} s)` : ''}: ${connections} connections; ${opts.runs} run(s); Node ${process.version}`)
  log(loadLine())
  const somaxconn = readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim()
  // Node raises its own soft limit to the hard one at start, so ab (our child) inherits that.
  log(`open files: this process ${openFilesLimit(process.pid)} (ab inherits it); net.core.somaxconn ${somaxconn}`)

  // The nodes inherit this process's environment (test/helpers/spegel.ts); ab, nginx and containerd ignore it.
  if (opts.nodeOptions !== '') process.env.NODE_OPTIONS = opts.nodeOptions
  log(`spegel-ts nodes: NODE_OPTIONS=${process.env.NODE_OPTIONS ?? ''}`)
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'spg-bench-load-'))
  onCleanup('work dir', async () => { await rm(workDir, { recursive: true, force: true }) }, () => { rmSync(workDir, { recursive: true, force: true }) })
  // INFO: the helper's default DEBUG writes a line per request, which would be measured too.
  const cluster = await startCluster(2, { nodeOptions: () => ({ extraArgs: ['--log-level', opts.nodeLogLevel], mirroredRegistry: NS }) })
  onCleanup('cluster', async () => { await cluster.dispose() }, () => {
    for (const n of cluster.nodes) {
      killQuietly(n.spegel.process.pid, 'SIGKILL')
      killQuietly(n.containerd.pid, 'SIGKILL')
      rmSync(n.containerd.dir, { recursive: true, force: true })
      rmSync(path.dirname(n.dataDir), { recursive: true, force: true })
    }
  })
  const [n1, n2] = cluster.nodes as [ClusterNode, ClusterNode]
  for (const n of cluster.nodes) await n.spegel.waitReady(60_000)

  const image = await buildImage(path.join(workDir, 'image'), `${NS}/${REPO}:${TAG}`, [opts.blobKiB * 1024])
  await n1.containerd.importImage(image.archivePath!)
  await rm(path.join(workDir, 'image'), { recursive: true, force: true })
  const layer = image.platforms[0]!.layers[0]!
  const manifest = image.platforms[0]!.manifest
  await restartForDiskReads(n1, [n2], layer.digest, log)
  await waitFor(async () => (await lookupPeers(n2, `${NS}/${REPO}:${TAG}`)).includes(n1.peerId), { timeoutMs: 15_000, what: 'node 2 to see node 1\'s tag' })

  const blobsDir = path.join(n1.containerd.contentPath, 'blobs', 'sha256')
  const nginx = await startNginx(path.join(workDir, 'nginx'), blobsDir)
  onCleanup('nginx', async () => { await stopNginx(nginx.child) }, () => { stopNginxSync(nginx.child) })

  const paths = { head: `/v2/${REPO}/manifests/${TAG}?ns=${NS}`, get: `/v2/${REPO}/blobs/${layer.digest}?ns=${NS}` }
  const hex = (digest: string): string => digest.slice('sha256:'.length)
  const all: Record<TargetName, Target> = {
    local: { name: 'local', label: 'spegel local', pid: n1.spegel.process.pid!, alsoPids: [], headUrl: `${n1.spegel.registryUrl}${paths.head}`, getUrl: `${n1.spegel.registryUrl}${paths.get}`, node: n1 },
    mirror: {
      name: 'mirror',
      label: 'spegel mirror',
      pid: n2.spegel.process.pid!,
      alsoPids: [{ label: 'holder', pid: n1.spegel.process.pid! }],
      headUrl: `${n2.spegel.registryUrl}${paths.head}`,
      getUrl: `${n2.spegel.registryUrl}${paths.get}`,
      node: n2
    },
    nginx: { name: 'nginx', label: 'nginx', pid: nginx.child.pid!, alsoPids: [], headUrl: `http://127.0.0.1:${nginx.port}/${hex(manifest.digest)}`, getUrl: `http://127.0.0.1:${nginx.port}/${hex(layer.digest)}` }
  }
  const targets = opts.targets.map((t) => all[t])
  for (const t of targets) {
    for (const [method, url, size] of [['HEAD', t.headUrl, manifest.size], ['GET', t.getUrl, layer.size]] as const) {
      const res = await httpRequest(url, { method, headers: { Accept: `${OCI_MANIFEST}, */*` } })
      if (res.status !== 200 || Number(res.headers['content-length']) !== size) {
        throw new Error(`${t.label}: ${method} ${url} answered ${res.status} with Content-Length ${String(res.headers['content-length'])}, expected 200 and ${size}`)
      }
    }
    log(`${t.label}: pid ${t.pid}, open files ${openFilesLimit(t.pid)}, RSS ${mib(statusKiB(t.pid, 'VmRSS'))} MiB idle; HEAD ${t.headUrl}; GET ${t.getUrl}`)
  }

  if (opts.isHold) {
    log('holding: run ab by hand against the URLs above; Ctrl-C cleans up')
    await new Promise<never>(() => { setInterval(() => undefined, 60_000) })
  }

  const results = new Map<TargetName, RunResult[]>(targets.map((t) => [t.name, []]))
  for (let run = 1; run <= opts.runs; run++) {
    // Rotate the order so that no target always runs first (cold) or last.
    const order = targets.map((_, i) => targets[(i + run - 1) % targets.length]!)
    for (const t of order) {
      const r = await runOnce(t, opts)
      results.get(t.name)!.push(r)
      log(`run ${run} ${t.label}: peak RSS ${mib(r.peakRssKiB)} MiB (idle ${mib(r.idleRssKiB)} MiB)` +
        t.alsoPids.map((p, i) => `, ${p.label} peak ${mib(r.alsoPeakKiB[i] ?? 0)} MiB`).join('') +
        (r.tcp.size === 0 ? '' : `; kernel ${[...r.tcp].map(([k, v]) => `${k} +${v}`).join(', ')}`))
      log(`  HEAD manifest: ${abText(r.head)}`)
      log(`  GET blob:      ${abText(r.get)}, ${fixed(r.get.totalBytes / r.get.seconds / 1e6, 0)} MB/s`)
      for (const [msg, count] of r.nodeLogs) log(`  node log x${count}: ${msg}`)
    }
  }

  log('')
  log(`--- summary: medians over ${opts.runs} run(s), ${connections} keep-alive connections (${opts.connections} HEAD manifest + ${opts.connections} GET ${opts.blobKiB} KiB blob), ${opts.requests} requests each ---`)
  log('target         failed (all runs)  HEAD req/s  HEAD ms p50/p90/p99  GET req/s  GET ms p50/p90/p99  peak RSS MiB (max)')
  for (const t of targets) {
    const rs = results.get(t.name)!
    const failed = rs.reduce((sum, r) => sum + r.head.failed + r.get.failed + r.head.non2xx + r.get.non2xx, 0)
    const total = rs.reduce((sum, r) => sum + r.head.complete + r.get.complete, 0)
    const med = (f: (r: RunResult) => number): number => median(rs.map(f))
    const pcts = (f: (r: RunResult) => AbResult): string => `${med((r) => f(r).p50)}/${med((r) => f(r).p90)}/${med((r) => f(r).p99)}`
    log(`${t.label.padEnd(14)} ${`${failed} of ${total}`.padEnd(18)} ${fixed(med((r) => r.head.rps), 0).padStart(10)}  ${pcts((r) => r.head).padStart(19)}  ${fixed(med((r) => r.get.rps), 0).padStart(9)}  ${pcts((r) => r.get).padStart(18)}  ${mib(med((r) => r.peakRssKiB))} (${mib(Math.max(...rs.map((r) => r.peakRssKiB)))})` +
      t.alsoPids.map((p, i) => `; ${p.label} ${mib(med((r) => r.alsoPeakKiB[i] ?? 0))}`).join(''))
  }
  log('failed = ab failed requests + non-2xx answers; RSS of nginx = master + workers; ms from ab (per request, includes waiting behind other connections)')
  log(`finished; ${loadLine()}`)
}

runBenchmark('load', main)
