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
import { Agent, request } from 'undici'
import { lookupPeers } from '../test/helpers/cluster.js'
import { containerdSkipReason } from '../test/helpers/containerd.js'
import { buildImage } from '../test/helpers/image.js'
import { waitFor } from '../test/helpers/wait.js'
import {
  abProblems, fixed, loadAverage, loadLine, onCleanup, parseFlags, percentileText, requireTools, restartForDiskReads, runAb, runBenchmark,
  startBenchCluster, summarize, TOOLS, type AbResult, type Summary
} from './cluster-common.js'

const REPO = 'bench/latency'
const TAG = '1'
const NS = 'example.test'
const WARMUP = 200

const FLAGS = {
  requests: { kind: 'int', default: 2000, help: 'sequential HEAD requests per target' },
  'ab-seconds': { kind: 'int', default: 5, help: 'ab -k -i -c16 per target' }
} as const

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

async function main (): Promise<void> {
  const opts = parseFlags('cluster-latency', FLAGS)
  const skip = containerdSkipReason()
  if (skip !== undefined) throw new Error(skip)
  requireTools([TOOLS.ab])
  const log = (line: string): void => { process.stdout.write(line + '\n') }
  log(`cluster-latency: ${opts.requests} sequential HEAD requests per target, ab ${opts.abSeconds} s per target; Node ${process.version}`)
  log(loadLine())

  const workDir = await mkdtemp(path.join(os.tmpdir(), 'spg-bench-latency-'))
  onCleanup('work dir', async () => { await rm(workDir, { recursive: true, force: true }) }, () => { rmSync(workDir, { recursive: true, force: true }) })
  const cluster = await startBenchCluster(2)
  const [n1, n2] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0]]

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
    const r = await runAb(t.url, { method: 'HEAD', seconds: opts.abSeconds, headers: t.headers })
    const { errors } = abProblems(r, t.status === 200 ? '2xx' : 'non-2xx')
    if (errors.length > 0) throw new Error(`${t.label}: ab: ${errors.join('; ')}`)
    abResults.set(t, r)
    log(`  ab -k -i -c16 ${opts.abSeconds} s, ${t.label}: ${fixed(r.requestsPerSecond, 0)} req/s (${r.complete} requests)`)
  }

  const p50 = (t: Target): number => summaries.get(t)!.p50
  const rps = (t: Target): number => abResults.get(t)!.requestsPerSecond
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
