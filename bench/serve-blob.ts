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
import { rmSync } from 'node:fs'
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { containerdSkipReason, startContainerd, type ContainerdInstance } from '../test/helpers/containerd.js'
import { buildImage, OCI_MANIFEST } from '../test/helpers/image.js'
import { httpRequest, run } from '../test/helpers/net.js'
import { startSpegel, type SpegelNode } from '../test/helpers/spegel.js'
import { waitFor } from '../test/helpers/wait.js'
import {
  abProblems, cpuSnapshot, curlDownload, killQuietly, loadAverage, loadLine, median, onCleanup, parseFlags, requireTools, runAb,
  runBenchmark, stopChild, TOOLS, type CpuWatch
} from './cluster-common.js'
import { startNginxFileServer } from './references.js'

const MIB = 1024 * 1024
const REGISTRY = 'bench.local'
const REPOSITORY = 'spegel-bench/blob'
const TAG = '1.0'
const NODE_HWM_BYTES = 1024 * 1024
const CURL_TIMEOUT_MS = 10 * 60_000
const here = path.dirname(fileURLToPath(import.meta.url))

const FLAGS = {
  'size-mib': { kind: 'int', default: 1024, help: 'size of the one layer served' },
  runs: { kind: 'int', default: 5, help: 'interleaved downloads per server after one warm-up each' },
  'wrk-seconds': { kind: 'int', default: 5, help: 'seconds per small-request measurement (wrk and ab)' }
} as const

// ---------------------------------------------------------------------------------------------
// Servers under test.

interface Target {
  label: string
  /** Whose CPU time to count (direct children included: nginx workers). */
  watch: CpuWatch
  blobUrl: string
  headManifestUrl: string
  getManifestUrl: string
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
  const r = await curlDownload(target.blobUrl, expectedBytes, { watch: [target.watch], timeoutMs: CURL_TIMEOUT_MS })
  const cpu = r.cpuSeconds[target.watch.name] ?? 0
  return { mbPerSecond: r.mbPerSecond, seconds: r.seconds, cpuPercent: r.seconds > 0 ? 100 * cpu / r.seconds : 0, cpuSecondsPerGiB: cpu / (expectedBytes / (1024 * MIB)) }
}

interface LoadResult { requestsPerSecond: number, cpuPercent: number, warnings: string[] }

async function wrk (target: Target, url: string, script: string, seconds: number): Promise<LoadResult> {
  const before = await cpuSnapshot([target.watch])
  const started = performance.now()
  const res = await run('wrk', ['-t2', '-c16', `-d${seconds}s`, '-s', script, url], { timeoutMs: (seconds + 60) * 1000 })
  const wallSeconds = (performance.now() - started) / 1000
  const cpu = (await cpuSnapshot([target.watch])).get(target.watch.name)! - before.get(target.watch.name)!
  if (res.code !== 0) throw new Error(`wrk ${url} failed (${res.code ?? res.signal}): ${res.stderr.trim()}\n${res.stdout}`)
  const m = /Requests\/sec:\s+([\d.]+)/.exec(res.stdout)
  if (m === null) throw new Error(`no Requests/sec in wrk output:\n${res.stdout}`)
  // Errors make req/s meaningless (a fast 404 is not a served manifest), so they are reported.
  const warnings = res.stdout.split('\n').filter(l => /Non-2xx|Socket errors/.test(l)).map(l => l.trim())
  return { requestsPerSecond: Number(m[1]), cpuPercent: 100 * cpu / wallSeconds, warnings }
}

async function ab (target: Target, url: string, method: 'GET' | 'HEAD', seconds: number): Promise<LoadResult> {
  const r = await runAb(url, { method, seconds, headers: { Accept: `${OCI_MANIFEST}, */*` }, watch: [target.watch] })
  const { errors, warnings } = abProblems(r)
  return { requestsPerSecond: r.requestsPerSecond, cpuPercent: 100 * (r.cpuSeconds[target.watch.name] ?? 0) / r.wallSeconds, warnings: [...errors, ...warnings] }
}

const fmt = (n: number): string => n.toFixed(0)
const ratio = (a: number, b: number): string => b > 0 ? (a / b).toFixed(2) : 'n/a'
const log = (line: string): void => { process.stdout.write(`${line}\n`) }

async function checkStatus (url: string, method: 'GET' | 'HEAD', what: string): Promise<void> {
  const res = await httpRequest(url, { method, timeoutMs: 10_000 })
  if (res.status !== 200) throw new Error(`${what}: ${method} ${url} answered ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`)
}

// ---------------------------------------------------------------------------------------------

async function main (): Promise<void> {
  const opts = parseFlags('serve-blob', FLAGS)
  const skip = containerdSkipReason()
  if (skip !== undefined) throw new Error(skip)
  requireTools([TOOLS.curl, TOOLS.nginx, TOOLS.wrk, TOOLS.ab])

  const sizeBytes = opts.sizeMib * MIB
  const work = await mkdtemp(path.join('/tmp', 'spegel-bench-'))
  onCleanup(`temp dir ${work}`, async () => { await rm(work, { recursive: true, force: true, maxRetries: 3 }) },
    () => { rmSync(work, { recursive: true, force: true, maxRetries: 3 }) })
  log(`node ${process.version}, ${os.cpus().length} cpus, ${loadLine()}, work dir ${work}`)

  let t = Date.now()
  const ref = `${REGISTRY}/${REPOSITORY}:${TAG}`
  const image = await buildImage(path.join(work, 'image'), ref, [sizeBytes])
  const platform = image.platforms[0]!
  const layer = platform.layers[0]!
  const manifest = platform.manifest
  log(`built ${ref}: layer ${layer.digest} (${layer.size} bytes), manifest ${manifest.digest} in ${((Date.now() - t) / 1000).toFixed(1)} s`)

  t = Date.now()
  const ctrd: ContainerdInstance = await startContainerd({ name: 'bench' })
  onCleanup('containerd', async () => { await ctrd.dispose() }, () => {
    killQuietly(ctrd.pid, 'SIGKILL')
    rmSync(ctrd.dir, { recursive: true, force: true, maxRetries: 3 })
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
  onCleanup('spegel', async () => { await spegel.stop() }, () => { spegel.process.kill('SIGKILL') })
  await spegel.waitReady(60_000)
  const spegelTarget: Target = {
    label: 'spegel',
    watch: { name: 'spegel', pids: [spegel.process.pid!] },
    blobUrl: `${spegel.registryUrl}/v2/${REPOSITORY}/blobs/${layer.digest}`,
    headManifestUrl: `${spegel.registryUrl}/v2/${REPOSITORY}/manifests/${TAG}?ns=${REGISTRY}`,
    getManifestUrl: `${spegel.registryUrl}/v2/${REPOSITORY}/manifests/${manifest.digest}?ns=${REGISTRY}`
  }
  // Ready means connected; the tag is only resolvable once the image walk has indexed it.
  await waitFor(async () => (await httpRequest(spegelTarget.headManifestUrl, { method: 'HEAD' })).status === 200,
    { timeoutMs: 30_000, what: `spegel to resolve ${ref}` })

  const nginx = await startNginxFileServer(path.join(work, 'nginx'), blobsDir, 'nginx')
  const nginxPid = nginx.pid
  const nginxUrl = nginx.url
  const nginxTarget: Target = {
    label: 'nginx',
    watch: nginx.watch,
    blobUrl: `${nginxUrl}/${hexOf(layer.digest)}`,
    headManifestUrl: `${nginxUrl}/${hexOf(manifest.digest)}`,
    getManifestUrl: `${nginxUrl}/${hexOf(manifest.digest)}`
  }

  const nodeTargets: Target[] = []
  for (const mode of ['stream', 'pool'] as const) {
    const server = await startNodeRef(blobsDir, mode)
    onCleanup(`node-file-server ${mode}`, async () => { await stopChild(server.child) }, () => { server.child.kill('SIGKILL') })
    const url = `http://127.0.0.1:${server.port}`
    const label = mode === 'stream' ? 'node' : 'node-pool'
    nodeTargets.push({
      label,
      watch: { name: label, pids: [server.child.pid!] },
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
  log(`spegel ${spegel.registryUrl} (pid ${spegel.process.pid}), nginx ${nginxUrl} (master ${nginxPid}), node ${nodeTarget.blobUrl.split('/').slice(0, 3).join('/')} (pid ${nodeTarget.watch.pids[0]}), node-pool ${poolTarget.blobUrl.split('/').slice(0, 3).join('/')} (pid ${poolTarget.watch.pids[0]})`)

  // 1. Blob throughput.
  log(`\n== GET blob ${opts.sizeMib} MiB, curl, warm-up + ${opts.runs} interleaved runs (MB = 1e6 bytes) ==`)
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
  log(`\nfinished, load average ${loadAverage()} (includes this benchmark)`)
  log('\n== summary ==')
  log(`blob ${opts.sizeMib} MiB: spegel median ${fmt(s)} MB/s, nginx median ${fmt(n)} MB/s, ratio ${ratio(s, n)}`)
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

runBenchmark('serve-blob', main)
