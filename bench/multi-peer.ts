#!/usr/bin/env node
/**
 * Multi-peer fetch benchmark (`--mirror-parallel-min-size`, src/registry/multi-peer-body.ts): one
 * blob held whole by `--holders` peers, fetched through one mirror node that lacks it, with the
 * parallel fetch on and off.
 *
 *   flock /tmp/spegel-bench.lock npx node dist/bench/multi-peer.js [--size-mib 256] [--runs 3]
 *     [--rates-mib 40,0] [--holders 3] [--chunk-mib 8] [--slow-mib 0]
 *
 * For each per-peer rate of `--rates-mib` (MiB/s each holder may send, over all its connections;
 * 0: loopback, no limit; `--slow-mib` slows the last holder alone) it prints every run, the median seconds and MB/s of each mode, the ratio
 * on/off, and the CPU seconds of the mirror node per GiB. Runs are interleaved and their order is
 * rotated, after one warm-up each.
 *
 * The holders are plain HTTP servers in one child process, answering as spegel-ts peers do (200,
 * or 206 for a Range, with Docker-Content-Digest), each paced by a token bucket shared by its
 * connections: a per-peer bandwidth limit, so that two connections to one holder do not count as
 * two holders (nginx `limit_rate` is per request). The mirror node runs in this process: the real
 * createMirror + registry handler, its router a MemoryRouter listing the holders. The client is
 * curl to /dev/null. Not a test: nothing asserts on timing; a wrong answer (status, byte count)
 * stops it. See bench/README.md.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { Registry } from 'prom-client'
import { startTestServer, type TestServer } from '../src/http/test-helpers.js'
import { createLogger } from '../src/observability/logger.js'
import { createMetrics } from '../src/observability/metrics.js'
import { MemoryRouter, MemoryRouterNetwork } from '../src/routing/memory-router.js'
import { MemoryStore } from '../src/store/memory-store.js'
import { createRegistryHandler } from '../src/registry/handler.js'
import { createMirror, type Mirror } from '../src/registry/mirror.js'
import { stopChild } from '../test/helpers/net.js'
import { curlDownload, fixed, loadAverage, loadLine, median, onCleanup, parseFlags, requireTools, runBenchmark, TOOLS } from './cluster-common.js'

const MIB = 1024 * 1024
const GIB = 1024 * MIB
const REPO = 'bench/multi-peer'

const FLAGS = {
  'size-mib': { kind: 'int', default: 256, min: 1, help: 'size of the blob the holders serve' },
  runs: { kind: 'int', default: 3, min: 1, help: 'measurements per mode and rate after a warm-up, interleaved; medians of these' },
  'rates-mib': { kind: 'ints', default: [40, 0], min: 0, help: 'per-holder bandwidth limits to measure, MiB/s (0: none, loopback)' },
  holders: { kind: 'int', default: 3, min: 2, help: 'peers holding the whole blob' },
  'chunk-mib': { kind: 'int', default: 8, min: 1, help: 'bytes per Range request with the feature on' },
  'min-size-mib': { kind: 'int', default: 32, min: 1, help: '--mirror-parallel-min-size of the "on" mirror' },
  'slow-mib': { kind: 'int', default: 0, min: 0, help: 'the last holder sends at most this many MiB/s instead (0: as the others)' }
} as const

// ---------------------------------------------------------------------------------------------
// Holders (child process): `multi-peer.js --serve-holders <size-bytes> <rate-bytes-per-s> <count> <last-rate>`

/** Bytes per paced write: 256 KiB at 40 MiB/s is one write every 6 ms. */
const PACE_BYTES = 256 * 1024

async function serveHolders (sizeBytes: number, baseRateBytes: number, count: number, lastRateBytes: number): Promise<void> {
  const blob = randomBytes(sizeBytes)
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
  const ports: number[] = []
  for (let i = 0; i < count; i++) {
    const rateBytes = i === count - 1 && lastRateBytes > 0 ? lastRateBytes : baseRateBytes
    // One bucket per holder, shared by all its connections: the holder's uplink.
    let nextFree = 0
    const pace = async (bytes: number): Promise<void> => {
      const now = performance.now()
      const startAt = Math.max(now, nextFree)
      nextFree = startAt + bytes / rateBytes * 1000
      if (startAt > now) await sleep(startAt - now)
    }
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      void answer(req, res)
    })
    const answer = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
      const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
      const start = m === null ? 0 : Number(m[1])
      const end = m === null || m[2] === '' ? sizeBytes - 1 : Math.min(Number(m[2]), sizeBytes - 1)
      const headers = { 'content-type': 'application/octet-stream', 'docker-content-digest': digest, 'content-length': end - start + 1 }
      if (m === null) res.writeHead(200, headers)
      else res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${sizeBytes}` })
      const step = rateBytes > 0 ? PACE_BYTES : MIB
      for (let at = start; at <= end; at += step) {
        if (res.destroyed) return
        const piece = blob.subarray(at, Math.min(at + step, end + 1))
        if (rateBytes > 0) await pace(piece.length)
        if (!res.write(piece)) await drained(res)
      }
      res.end()
    }
    server.keepAliveTimeout = 95_000
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    ports.push((server.address() as AddressInfo).port)
  }
  process.stdout.write(JSON.stringify({ digest, ports }) + '\n')
}

/** Resolves on 'drain' or 'close', whichever comes first, leaving no listener behind. */
async function drained (res: ServerResponse): Promise<void> {
  await new Promise<void>((resolve) => {
    const done = (): void => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.on('drain', done)
    res.on('close', done)
  })
}

interface Holders { child: ChildProcess, digest: string, ports: number[], stop: () => Promise<void> }

async function startHolders (sizeBytes: number, rateBytes: number, count: number, lastRateBytes: number): Promise<Holders> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve-holders', String(sizeBytes), String(rateBytes), String(count), String(lastRateBytes)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const stop = onCleanup('holders', async () => { await stopChild(child) }, () => { child.kill('SIGKILL') })
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const [line] = await Promise.race([
    once(lines, 'line') as Promise<[string]>,
    once(child, 'exit').then(([code]) => { throw new Error(`holder process exited (${String(code)}) before it listened`) })
  ])
  const { digest, ports } = JSON.parse(line) as { digest: string, ports: number[] }
  return { child, digest, ports, stop }
}

// ---------------------------------------------------------------------------------------------
// Mirror nodes (this process)

interface MirrorNode { port: number, mirror: Mirror, server: TestServer }

async function startMirrorNode (holders: Holders, parallelMinBytes: number, chunkBytes: number): Promise<MirrorNode> {
  const log = createLogger({ level: 'silent' })
  const network = new MemoryRouterNetwork()
  const router = new MemoryRouter({ network }, { id: 'self', registryAddress: '127.0.0.1:1' })
  holders.ports.forEach((port, i) => { network.add(holders.digest, { id: `holder-${i}`, registryAddress: `127.0.0.1:${port}` }) })
  const metrics = createMetrics(new Registry(), { collectDefault: false })
  const mirror = createMirror({ router, log, metrics }, { resolveTimeoutMs: 20, resolveRetries: 3, parallelMinBytes, parallelChunkBytes: chunkBytes })
  const handler = createRegistryHandler({ store: new MemoryStore(), router, metrics, log }, { filters: [], mirror })
  const server = await startTestServer(handler, log)
  return { port: server.port, mirror, server }
}

async function stopMirrorNode (node: MirrorNode): Promise<void> {
  await node.server.close()
  await node.mirror.close()
}

// ---------------------------------------------------------------------------------------------

const MODES = ['on', 'off'] as const
type Mode = typeof MODES[number]

async function main (): Promise<void> {
  const flags = parseFlags('multi-peer', FLAGS)
  requireTools([TOOLS.curl])
  const sizeBytes = flags.sizeMib * MIB
  process.stdout.write(`multi-peer: ${flags.sizeMib} MiB blob, ${flags.holders} holders, chunks ${flags.chunkMib} MiB, runs ${flags.runs}; ${loadLine()}\n`)
  const summary: string[] = []
  for (const rateMib of flags.ratesMib) {
    const holders = await startHolders(sizeBytes, rateMib * MIB, flags.holders, flags.slowMib * MIB)
    const nodes: Record<Mode, MirrorNode> = {
      on: await startMirrorNode(holders, flags.minSizeMib * MIB, flags.chunkMib * MIB),
      off: await startMirrorNode(holders, 0, flags.chunkMib * MIB)
    }
    const rateText = (rateMib === 0 ? 'no limit (loopback)' : `${rateMib} MiB/s per holder`) + (flags.slowMib > 0 ? `, the last one ${flags.slowMib} MiB/s` : '')
    process.stdout.write(`\n${rateText}; load average before ${loadAverage()}\n`)
    const seconds: Record<Mode, number[]> = { on: [], off: [] }
    const cpu: Record<Mode, number[]> = { on: [], off: [] }
    const watch = [{ name: 'mirror', pids: [process.pid] }, { name: 'holders', pids: [holders.child.pid as number] }]
    for (let run = 0; run <= flags.runs; run++) {
      const order = run % 2 === 0 ? MODES : [...MODES].reverse()
      for (const mode of order) {
        const url = `http://127.0.0.1:${nodes[mode].port}/v2/${REPO}/blobs/${holders.digest}?ns=docker.io`
        const r = await curlDownload(url, sizeBytes, { watch })
        const mirrorCpu = r.cpuSeconds.mirror ?? 0
        if (run === 0) {
          process.stdout.write(`  warm-up ${mode}: ${fixed(r.seconds, 2)} s\n`)
          continue
        }
        seconds[mode].push(r.seconds)
        cpu[mode].push(mirrorCpu / (sizeBytes / GIB))
        process.stdout.write(`  run ${run} ${mode.padEnd(3)}: ${fixed(r.seconds, 2)} s, ${fixed(r.mbPerSecond, 1)} MB/s, mirror CPU ${fixed(mirrorCpu, 2)} s, holders CPU ${fixed(r.cpuSeconds.holders ?? 0, 2)} s\n`)
      }
    }
    const on = median(seconds.on)
    const off = median(seconds.off)
    const mb = (s: number): string => fixed(sizeBytes / 1e6 / s, 1)
    const line = `${rateText}: on ${fixed(on, 2)} s (${mb(on)} MB/s, ${fixed(median(cpu.on), 2)} CPU s/GiB), off ${fixed(off, 2)} s (${mb(off)} MB/s, ${fixed(median(cpu.off), 2)} CPU s/GiB); on/off throughput ${fixed(off / on, 2)}x; load average after ${loadAverage()}`
    process.stdout.write(`  median ${line}\n`)
    summary.push(line)
    await stopMirrorNode(nodes.on)
    await stopMirrorNode(nodes.off)
    await holders.stop()
  }
  process.stdout.write(`\n--- multi-peer, ${flags.sizeMib} MiB, ${flags.holders} holders, ${flags.chunkMib} MiB chunks, median of ${flags.runs} ---\n${summary.join('\n')}\n${loadLine()}\n`)
}

if (process.argv[2] === '--serve-holders') {
  serveHolders(Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5]), Number(process.argv[6])).catch((err: unknown) => {
    process.stderr.write(`holders failed: ${String(err)}\n`)
    process.exit(1)
  })
} else {
  runBenchmark('multi-peer', main)
}
