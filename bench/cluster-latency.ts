#!/usr/bin/env node
/**
 * Lookup and not-found latency through a node's mirror: a 2-node cluster (test/helpers/cluster.ts),
 * a small image imported on node 1 only, HEAD requests sent to node 2 (which lacks it).
 *
 *   npx node dist/bench/cluster-latency.js [--requests 2000] [--ab-seconds 5]
 *
 * Sequential requests, one keep-alive connection per target, interleaved round-robin so that
 * other load on the machine hits every target alike:
 *  - found: HEAD blob by digest via node 2 (lookup, then HEAD to node 1), and HEAD manifest by tag
 *    (what containerd sends first);
 *  - not found: HEAD blob of a digest nobody holds via node 2 (lookup finds nobody: 404);
 *  - references: the same blob HEAD sent to node 1 directly (local content, one hop), and the
 *    unknown digest sent to node 1 with `X-Spegel-Mirrored: true` (a local 404, no lookup).
 * Then throughput with ApacheBench (`ab -k -i -c16`, HEAD; wrk cannot do HEAD, wg/wrk#198).
 * Needs root, containerd + ctr, ab. Not a test: no assertion on timing; a wrong status stops it.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { Agent, request } from 'undici'
import { startCluster, lookupPeers } from '../test/helpers/cluster.js'
import { containerdSkipReason } from '../test/helpers/containerd.js'
import { buildImage } from '../test/helpers/image.js'
import { run } from '../test/helpers/net.js'
import { waitFor } from '../test/helpers/wait.js'
import { fixed, killQuietly, loadAverage, loadLine, onCleanup, percentileText, restartForDiskReads, runBenchmark, summarize, type Summary } from './cluster-common.js'

const REPO = 'bench/latency'
const TAG = '1'
const NS = 'example.test'
const WARMUP = 200

interface Options { requests: number, abSeconds: number }

function parseOptions (): Options {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string', default: '2000' },
      'ab-seconds': { type: 'string', default: '5' },
      help: { type: 'boolean', short: 'h', default: false }
    },
    strict: true
  })
  if (values.help) {
    process.stdout.write('usage: node dist/bench/cluster-latency.js [--requests 2000] [--ab-seconds 5]\n')
    process.exit(0)
  }
  const int = (name: string, raw: string): number => {
    const n = Number(raw)
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${raw}`)
    return n
  }
  return { requests: int('requests', values.requests), abSeconds: int('ab-seconds', values['ab-seconds']) }
}

interface Target {
  label: string
  url: string
  headers: Record<string, string>
  status: number
  agent: Agent
  samplesMs: number[]
}

async function headOnce (t: Target): Promise<number> {
  const start = performance.now()
  const res = await request(t.url, { method: 'HEAD', headers: t.headers, dispatcher: t.agent })
  await res.body.dump()
  const ms = performance.now() - start
  if (res.statusCode !== t.status) throw new Error(`${t.label}: HEAD ${t.url} answered ${res.statusCode}, expected ${t.status}`)
  return ms
}

interface AbResult { rps: number, complete: number, failed: number, non2xx: number }

async function ab (url: string, headers: Record<string, string>, seconds: number): Promise<AbResult> {
  const args = ['-k', '-i', '-c', '16', '-t', String(seconds), '-n', '10000000', '-q',
    ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url]
  const res = await run('ab', args, { timeoutMs: (seconds + 60) * 1000 })
  if (res.code !== 0) throw new Error(`ab ${args.join(' ')} failed (${res.code ?? res.signal}): ${res.stderr.trim()}`)
  const num = (re: RegExp): number => Number(re.exec(res.stdout)?.[1] ?? 0)
  return {
    rps: num(/Requests per second:\s+([\d.]+)/),
    complete: num(/Complete requests:\s+(\d+)/),
    failed: num(/Failed requests:\s+(\d+)/),
    non2xx: num(/Non-2xx responses:\s+(\d+)/)
  }
}

async function main (): Promise<void> {
  const opts = parseOptions()
  const skip = containerdSkipReason()
  if (skip !== undefined) throw new Error(skip)
  if ((await run('ab', ['-V']).catch(() => undefined))?.code !== 0) throw new Error('ab not found (apt-get install -y apache2-utils)')
  const log = (line: string): void => { process.stdout.write(line + '\n') }
  log(`cluster-latency: ${opts.requests} sequential HEAD requests per target, ab ${opts.abSeconds} s per target; Node ${process.version}`)
  log(loadLine())

  const workDir = await mkdtemp(path.join(os.tmpdir(), 'spg-bench-latency-'))
  onCleanup('work dir', async () => { await rm(workDir, { recursive: true, force: true }) }, () => { rmSync(workDir, { recursive: true, force: true }) })
  // INFO: the helper's default DEBUG logs a line per request, which would be measured too.
  const cluster = await startCluster(2, { nodeOptions: () => ({ extraArgs: ['--log-level', 'INFO'] }) })
  onCleanup('cluster', async () => { await cluster.dispose() }, () => {
    for (const n of cluster.nodes) {
      killQuietly(n.spegel.process.pid, 'SIGKILL')
      killQuietly(n.containerd.pid, 'SIGKILL')
      rmSync(n.containerd.dir, { recursive: true, force: true })
      // The helper's work dir holds the nodes' data dirs.
      rmSync(path.dirname(n.dataDir), { recursive: true, force: true })
    }
  })
  const [n1, n2] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0]]
  for (const n of cluster.nodes) await n.spegel.waitReady(60_000)

  const image = await buildImage(path.join(workDir, 'image'), `${NS}/${REPO}:${TAG}`, [4096, 64 * 1024])
  await n1!.containerd.importImage(image.archivePath!)
  const layer = image.platforms[0]!.layers[1]!
  await restartForDiskReads(n1!, [n2!], layer.digest, log)
  await waitFor(async () => (await lookupPeers(n2!, `${NS}/${REPO}:${TAG}`)).includes(n1!.peerId), { timeoutMs: 15_000, what: 'node 2 to see node 1\'s tag' })
  const missing = `sha256:${randomBytes(32).toString('hex')}`

  const agents: Agent[] = []
  onCleanup('http agents', async () => { await Promise.all(agents.map(async (a) => { await a.close() })) }, () => undefined)
  const target = (label: string, base: string, p: string, status: number, headers: Record<string, string> = {}): Target => {
    // One connection per target: sequential requests on a warm keep-alive connection, as containerd reuses its own.
    const agent = new Agent({ connections: 1, keepAliveTimeout: 60_000 })
    agents.push(agent)
    return { label, url: `${base}${p}?ns=${NS}`, headers, status, agent, samplesMs: [] }
  }
  const foundBlob = target('HEAD blob held by node 1, via node 2', n2!.spegel.registryUrl, `/v2/${REPO}/blobs/${layer.digest}`, 200)
  const foundTag = target('HEAD manifest by tag held by node 1, via node 2', n2!.spegel.registryUrl, `/v2/${REPO}/manifests/${TAG}`, 200)
  const notFound = target('HEAD blob nobody holds, via node 2 (404)', n2!.spegel.registryUrl, `/v2/${REPO}/blobs/${missing}`, 404)
  const direct = target('reference: HEAD blob on node 1 directly (local)', n1!.spegel.registryUrl, `/v2/${REPO}/blobs/${layer.digest}`, 200, { 'X-Spegel-Mirrored': 'true' })
  const localMiss = target('reference: HEAD unknown blob on node 1, X-Spegel-Mirrored (local 404)', n1!.spegel.registryUrl, `/v2/${REPO}/blobs/${missing}`, 404, { 'X-Spegel-Mirrored': 'true' })
  const targets = [foundBlob, foundTag, notFound, direct, localMiss]

  for (let i = 0; i < WARMUP; i++) for (const t of targets) await headOnce(t)
  log(`after warm-up: load ${loadAverage()}`)
  const started = performance.now()
  for (let i = 0; i < opts.requests; i++) for (const t of targets) t.samplesMs.push(await headOnce(t))
  log(`${opts.requests * targets.length} requests in ${fixed((performance.now() - started) / 1000, 1)} s; load ${loadAverage()}`)
  const summaries = new Map<Target, Summary>(targets.map((t) => [t, summarize(t.samplesMs)]))
  for (const t of targets) log(`  ${t.label}: ${percentileText(summaries.get(t)!, 3)} ms (mean ${fixed(summaries.get(t)!.mean, 3)})`)

  const abTargets = [foundBlob, notFound, direct, localMiss]
  const abResults = new Map<Target, AbResult>()
  for (const t of abTargets) {
    const r = await ab(t.url, t.headers, opts.abSeconds)
    const wrong = t.status === 200 ? r.non2xx : r.complete - r.non2xx
    if (r.failed > 0 || wrong > 0 || r.complete === 0) throw new Error(`${t.label}: ab saw ${r.failed} failed requests and ${wrong} unexpected statuses of ${r.complete}`)
    abResults.set(t, r)
    log(`  ab -k -i -c16 ${opts.abSeconds} s, ${t.label}: ${fixed(r.rps, 0)} req/s (${r.complete} requests)`)
  }

  const p50 = (t: Target): number => summaries.get(t)!.p50
  const rps = (t: Target): number => abResults.get(t)!.rps
  log('')
  log('--- summary ---')
  log(`HEAD latency, ${opts.requests} sequential requests each, keep-alive, ms:`)
  for (const t of targets) log(`  ${t.label}: ${percentileText(summaries.get(t)!, 3)}`)
  log(`ratio p50 found via peer / direct on the holder: blob ${fixed(p50(foundBlob) / p50(direct), 2)}, manifest by tag ${fixed(p50(foundTag) / p50(direct), 2)}`)
  log(`ratio p50 404 via mirror (lookup, nobody) / local 404 without lookup: ${fixed(p50(notFound) / p50(localMiss), 2)}`)
  log(`throughput (ab -k -i -c16, ${opts.abSeconds} s): found via peer ${fixed(rps(foundBlob), 0)} req/s, 404 via mirror ${fixed(rps(notFound), 0)} req/s, ` +
    `direct on holder ${fixed(rps(direct), 0)} req/s, local 404 ${fixed(rps(localMiss), 0)} req/s; ` +
    `ratio found-via-peer/direct ${fixed(rps(foundBlob) / rps(direct), 2)}, 404-via-mirror/local-404 ${fixed(rps(notFound) / rps(localMiss), 2)}`)
  log(`load average at the end (1-min figure includes this benchmark): ${loadAverage()}`)
}

runBenchmark('cluster-latency', main)
