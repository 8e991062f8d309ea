/**
 * CPU per manifest HEAD: one spegel-ts node against a bare node:http server that answers every
 * request with the same status and headers, both driven by `ab -k -i -c16 -n N`, runs
 * interleaved. Figures are the server's CPU time (user + system from /proc) divided by the
 * requests, in µs: unlike req/s, which on a 2-core machine also measures ab and whatever else
 * runs, this moves little with load, and the ratio to the bare server is what spegel-ts adds on
 * top of Node's own HTTP stack and the kernel.
 *
 *   npx node dist/bench/head-cost.js [--requests 100000] [--runs 5]
 *
 * Needs root, containerd + ctr and ab (apt-get install -y containerd apache2-utils).
 */
import { execFile, spawn } from 'node:child_process'
import { rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { containerdSkipReason, startContainerd } from '../test/helpers/containerd.js'
import { buildImage } from '../test/helpers/image.js'
import { freePort } from '../test/helpers/net.js'
import { startSpegel } from '../test/helpers/spegel.js'
import { waitFor } from '../test/helpers/wait.js'
import { fixed, killQuietly, loadLine, median, onCleanup, parseFlags, procSample, requireTools, runBenchmark, TOOLS } from './cluster-common.js'

const REGISTRY = 'bench.local'
const REPOSITORY = 'spegel-bench/head'
const TAG = '1.0'

const flags = parseFlags('head-cost', {
  requests: { kind: 'int', default: 100_000, help: 'requests per run (ab -n)' },
  runs: { kind: 'int', default: 5, help: 'runs per server, interleaved' }
})

/** The bare server: the status and headers spegel-ts answers the HEAD with, nothing else. */
function bareServerSource (headers: Record<string, string>, port: number): string {
  return `const http = require('node:http')
const headers = ${JSON.stringify(headers)}
http.createServer((req, res) => { res.writeHead(200, headers); res.end() }).listen(${port}, '127.0.0.1', () => { process.stdout.write('up\\n') })`
}

interface Target { label: string, pid: number, url: string, perRequestUs: number[] }

async function ab (url: string, requests: number): Promise<{ rps: number }> {
  const { stdout } = await promisify(execFile)('ab', ['-k', '-i', '-c16', '-n', String(requests), url], { maxBuffer: 1 << 20 })
  const failed = Number(/Failed requests:\s+(\d+)/.exec(stdout)?.[1] ?? Number.NaN)
  const non2xx = /Non-2xx responses:\s+(\d+)/.exec(stdout)?.[1]
  if (failed !== 0 || non2xx !== undefined) throw new Error(`ab ${url}: ${failed} failed, ${non2xx ?? 0} non-2xx`)
  return { rps: Number(/Requests per second:\s+([\d.]+)/.exec(stdout)?.[1] ?? Number.NaN) }
}

runBenchmark('head-cost', async () => {
  const skip = containerdSkipReason()
  if (skip !== undefined) throw new Error(skip)
  requireTools([TOOLS.ab])
  const ticksPerSecond = Number((await promisify(execFile)('getconf', ['CLK_TCK'])).stdout.trim())
  console.log(`head-cost: ${flags.requests} HEADs per run, ${flags.runs} runs; Node ${process.version}, ${os.cpus().length} cpus, ${loadLine()}`)

  const work = await mkdtemp(path.join(os.tmpdir(), 'spg-bench-head-'))
  onCleanup(`temp dir ${work}`, async () => { await rm(work, { recursive: true, force: true }) }, () => { rmSync(work, { recursive: true, force: true }) })
  const image = await buildImage(path.join(work, 'image'), `${REGISTRY}/${REPOSITORY}:${TAG}`, [4096])
  const ctrd = await startContainerd({ name: 'head-cost' })
  onCleanup('containerd', async () => { await ctrd.dispose() }, () => { killQuietly(ctrd.pid, 'SIGKILL') })
  await ctrd.importImage(image.archivePath!)
  const spegel = await startSpegel({ containerdSock: ctrd.socketPath, contentPath: ctrd.contentPath, logLevel: 'INFO' })
  onCleanup('spegel', async () => { await spegel.stop() }, () => { spegel.process.kill('SIGKILL') })
  await spegel.waitReady(60_000)
  const spegelUrl = `${spegel.registryUrl}/v2/${REPOSITORY}/manifests/${TAG}?ns=${REGISTRY}`

  // The bare server answers with exactly the headers spegel-ts sent, so both write the same bytes.
  const head = await fetch(spegelUrl, { method: 'HEAD' })
  if (head.status !== 200) throw new Error(`spegel-ts answered the HEAD with ${head.status}`)
  const headers: Record<string, string> = {}
  for (const [k, v] of head.headers) if (!['date', 'connection', 'keep-alive'].includes(k)) headers[k] = v
  const port = await freePort('127.0.0.1')
  const bare = spawn(process.execPath, ['-e', bareServerSource(headers, port)], { stdio: ['ignore', 'pipe', 'inherit'] })
  onCleanup('bare server', async () => { bare.kill() }, () => { bare.kill('SIGKILL') })
  let up = false
  bare.stdout.on('data', () => { up = true })
  await waitFor(() => up, { timeoutMs: 10_000, intervalMs: 20, what: 'the bare server to listen' })

  const targets: Target[] = [
    { label: 'spegel-ts', pid: spegel.process.pid!, url: spegelUrl, perRequestUs: [] },
    { label: 'bare node:http', pid: bare.pid!, url: `http://127.0.0.1:${port}/v2/${REPOSITORY}/manifests/${TAG}`, perRequestUs: [] }
  ]
  for (const t of targets) await ab(t.url, Math.min(20_000, flags.requests)) // warm-up: JIT and caches
  for (let run = 1; run <= flags.runs; run++) {
    for (const t of run % 2 === 1 ? targets : [...targets].reverse()) {
      const before = procSample(t.pid)
      const { rps } = await ab(t.url, flags.requests)
      const after = procSample(t.pid)
      if (before === undefined || after === undefined) throw new Error(`${t.label} (pid ${t.pid}) is gone`)
      const us = (after.cpuTicks - before.cpuTicks) / ticksPerSecond / flags.requests * 1e6
      t.perRequestUs.push(us)
      console.log(`run ${run}  ${t.label.padEnd(15)} ${fixed(rps, 0).padStart(6)} req/s  ${fixed(us, 1).padStart(5)} µs CPU per request`)
    }
  }
  const [s, b] = targets.map((t) => median(t.perRequestUs)) as [number, number]
  // The machine's noise only ever adds CPU time (a busy or throttled core makes every request
  // dearer, for either server), so the least of several runs is the steadiest figure to compare.
  const [sMin, bMin] = targets.map((t) => Math.min(...t.perRequestUs)) as [number, number]
  console.log('\n--- summary ---')
  console.log(`HEAD manifest CPU per request (${flags.runs} x ${flags.requests}): median spegel-ts ${fixed(s, 1)} µs, bare node:http ${fixed(b, 1)} µs, ratio ${fixed(s / b, 2)}; ` +
    `least spegel-ts ${fixed(sMin, 1)} µs, bare ${fixed(bMin, 1)} µs, ratio ${fixed(sMin / bMin, 2)}; ${loadLine()}`)
})
