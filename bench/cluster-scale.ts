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
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { DEFAULT_EXPIRY_MS, DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_SYNC_INTERVAL_MS } from '../src/routing/p2p/constants.js'
import { waitFor } from '../test/helpers/wait.js'
import type { NodeConfig } from '../test/scale/node.js'
import { nodeKeys } from '../test/scale/keys.js'
import { fixed, loadAverage, loadLine, median, parseFlags, percentileText, runBenchmark, summarize, type Flags } from './cluster-common.js'
import {
  awaitReply, BENCH_NODE_JS, bootstrapPeers, command, CONVERGE_TIMEOUT_MS, failFast, idleReading, idleText, monotonicMs, prepareCluster, send,
  spawnBenchNode, spawnNode, STAGGER_MS, startRouterNodes, type IdleReading
} from './router-cluster.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const SCALE_NODE_JS = path.resolve(here, '../test/scale/node.js')
const SEEN_TIMEOUT_MS = 60_000
const REFERENCE_STATUS_INTERVAL_MS = 1_000

const FLAGS = {
  sizes: { kind: 'ints', default: [10, 30], min: 2, help: 'cluster sizes, one run each' },
  keys: { kind: 'int', default: 5000, help: 'keys each node advertises' },
  trials: { kind: 'int', default: 20, help: 'small deltas timed per size' },
  'idle-seconds': { kind: 'int', default: 20 },
  'reference-nodes': { kind: 'int', default: 30, min: 0, help: 'test/scale/node.js processes for the idle cross-check (0 skips it)' }
} as const
type Options = Flags<typeof FLAGS>

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
    const { nodes, startupMs } = await startRouterNodes(run, size, opts.keys)
    log(`[${size} nodes] full index everywhere ${fixed(startupMs / 1000, 1)} s after the last router was up (status polled every 0.5 s)`)

    const idle = await idleReading(nodes, opts.idleSeconds, () => { failFast(nodes) })
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
    const idle = await idleReading(nodes, opts.idleSeconds, () => { failFast(nodes) })
    log(`[reference, ${size} test/scale/node.js] idle ${opts.idleSeconds} s: ${idleText(idle)}; load ${loadAverage()}`)
    return idle
  } finally {
    await run.teardown()
  }
}

async function main (): Promise<void> {
  const opts = parseFlags('cluster-scale', FLAGS)
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

runBenchmark('cluster-scale', main)
