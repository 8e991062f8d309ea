#!/usr/bin/env node
/**
 * Pull storms (issue 10): N nodes pull the same new image at the same moment (or staggered),
 * with the pull-storm feature on and off, against a counting, rate-limited upstream.
 *
 *   npx node dist/bench/pull-storm.js [--nodes 6,10] [--layers 4] [--layer-mib 64] [--rate-mbs 50]
 *                                     [--stagger-ms 0] [--runs 1] [--modes on,off] [--wait '']
 *
 * Upstream is Debian's docker-registry behind a private nginx with one port per node and
 * `limit_rate` per connection (test/helpers/upstream.ts); each node is a private containerd
 * plus spegel-ts whose hosts.toml comes from `spegel configuration` (its spegel first, then its
 * upstream port). Per node count and mode a fresh cluster; per run a fresh image (new digests),
 * pulled by `ctr images pull` on every node. Prints upstream blob bytes and copies (bytes / the
 * image's blob bytes), pull-time p50/p90/max and failed pulls per run, then a summary table.
 *
 * The goal of the issue: copies <= 1.5 with the feature on, no failed pull, and the slowest
 * pull no slower than with the feature off. Not a test: it never asserts on timing.
 * Needs root, containerd + ctr, docker-registry, nginx and skopeo. See bench/README.md.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { containerdSkipReason } from '../test/helpers/containerd.js'
import type { Cluster } from '../test/helpers/cluster.js'
import {
  blobProblems, pullEverywhere, pullStormFlagSupported, pushStormImage, startStormCluster, stormOutcomes, STORM_WAIT_FLAG,
  type PullResult, type StormMode
} from '../test/helpers/storm.js'
import { startUpstream, upstreamSkipReason } from '../test/helpers/upstream.js'
import { cpuSnapshot, fixed, killQuietly, loadLine, median, onCleanup, parseFlags, runBenchmark, summarize, type CpuWatch } from './cluster-common.js'

const SPEC = {
  nodes: { kind: 'ints', default: [6, 10], min: 2, help: 'node counts, one fresh cluster per count and mode' },
  layers: { kind: 'int', default: 4, help: 'layers of the image' },
  'layer-mib': { kind: 'int', default: 64, help: 'size of each layer (MiB)' },
  'rate-mbs': { kind: 'int', default: 50, min: 0, help: 'upstream limit per connection, MB/s (10^6 bytes); 0 = unlimited' },
  'stagger-ms': { kind: 'int', default: 0, min: 0, help: 'delay between the starts of consecutive nodes\' pulls' },
  runs: { kind: 'int', default: 1, help: 'storms per node count and mode (each with a fresh image)' },
  modes: { kind: 'choices', default: ['on', 'off'], choices: ['on', 'off'], help: `on: ${STORM_WAIT_FLAG} at its default (or --wait); off: ${STORM_WAIT_FLAG}=0s` },
  wait: { kind: 'string', default: '', help: `${STORM_WAIT_FLAG} for mode on (default: the node's own default)` }
} as const

const MiB = 1024 * 1024

interface RunFigures { copies: number, blobBytes: number, pulls: PullResult[], digestProblems: number }
interface Row { nodes: number, mode: StormMode, runs: RunFigures[] }

async function main (): Promise<void> {
  const opts = parseFlags('pull-storm', SPEC)
  const skip = containerdSkipReason() ?? await upstreamSkipReason()
  if (skip !== undefined) throw new Error(skip)
  const log = (line: string): void => { process.stdout.write(`${line}\n`) }
  // Each node process and the upstream hold an exit listener (kill on exit): more than Node's default 10 at 10 nodes.
  process.setMaxListeners(2 * Math.max(...opts.nodes) + 10)
  const isFlagKnown = await pullStormFlagSupported()
  const layerBytes = opts.layerMib * MiB
  log(`pull-storm: ${opts.layers} x ${opts.layerMib} MiB layers, upstream ${opts.rateMbs === 0 ? 'unlimited' : `${opts.rateMbs} MB/s per connection`}, ` +
    `nodes ${opts.nodes.join(',')}, modes ${opts.modes.join(',')}, stagger ${opts.staggerMs} ms, ${opts.runs} run(s); Node ${process.version}`)
  if (!isFlagKnown) log(`note: this build's spegel registry has no ${STORM_WAIT_FLAG}: both modes run without it (today's behaviour, the "off" baseline)`)
  log(loadLine())

  const workDir = await mkdtemp(path.join(os.tmpdir(), 'spg-bench-storm-'))
  onCleanup('work dir', async () => { await rm(workDir, { recursive: true, force: true }) }, () => { rmSync(workDir, { recursive: true, force: true }) })
  const upstream = await startUpstream({ nodes: Math.max(...opts.nodes), rateBytesPerSecond: opts.rateMbs * 1_000_000 })
  onCleanup('upstream', async () => { await upstream.dispose() }, () => { upstream.disposeSync() })

  const rows: Row[] = []
  for (const nodes of opts.nodes) {
    // Both modes' clusters stay up and their runs alternate (on, off, off, on, ...): on 2 shared
    // cores the machine's load drifts over minutes, and a mode whose runs all came first would
    // carry that drift into the ratio. An idle cluster costs next to nothing.
    const clusters: Array<{ mode: StormMode, cluster: Cluster, row: Row, teardown: () => Promise<void> }> = []
    for (const mode of opts.modes) {
      const cluster: Cluster = await startStormCluster({ nodes, upstream, mode, ...(opts.wait === '' ? {} : { wait: opts.wait }) })
      const teardown = onCleanup('cluster', async () => { await cluster.dispose() }, () => {
        for (const n of cluster.nodes) {
          killQuietly(n.spegel.process.pid, 'SIGKILL')
          killQuietly(n.containerd.pid, 'SIGKILL')
          rmSync(n.containerd.dir, { recursive: true, force: true })
          rmSync(path.dirname(n.dataDir), { recursive: true, force: true })
        }
      })
      const row: Row = { nodes, mode, runs: [] }
      rows.push(row)
      clusters.push({ mode, cluster, row, teardown })
    }
    for (let r = 1; r <= opts.runs; r++) {
      for (const { mode, cluster, row } of r % 2 === 1 ? clusters : [...clusters].reverse()) {
        const img = await pushStormImage(upstream, workDir, `n${nodes}-${mode}-r${r}`, opts.layers, layerBytes)
        await upstream.resetCounters()
        const outcomesBefore = await stormOutcomes(cluster.nodes)
        // Where the machine's CPU went: every node shares these cores, so time that the relays
        // cost shows up in every pull (ctr itself exits before the second look and is not counted).
        const watches: CpuWatch[] = [
          { name: 'spegel-ts', pids: cluster.nodes.map((n) => n.spegel.process.pid).filter((p): p is number => p !== undefined) },
          { name: 'containerd', pids: cluster.nodes.map((n) => n.containerd.pid).filter((p): p is number => p !== undefined) },
          { name: 'nginx', pids: upstream.nginxPid === undefined ? [] : [upstream.nginxPid] },
          { name: 'registry', pids: upstream.registryPid === undefined ? [] : [upstream.registryPid] }
        ]
        // And per spegel-ts node: which node's relay work (a holder serving its download to the
        // others, or a receiver) the extra CPU of the feature goes to.
        const perNode: CpuWatch[] = cluster.nodes.map((n, i) => ({ name: `node ${i}`, pids: n.spegel.process.pid === undefined ? [] : [n.spegel.process.pid] }))
        const cpuBefore = await cpuSnapshot([...watches, ...perNode])
        const pulls = await pullEverywhere(cluster.nodes, img.ref, { staggerMs: opts.staggerMs })
        const cpuAfter = await cpuSnapshot([...watches, ...perNode])
        const used = (w: CpuWatch): number => (cpuAfter.get(w.name) ?? 0) - (cpuBefore.get(w.name) ?? 0)
        // A pid counts in one watch only: the spegel-ts total is the sum of its nodes.
        const spegelTotal = perNode.reduce((sum, w) => sum + used(w), 0)
        const cpu = watches.map((w) => `${w.name} ${fixed(w.name === 'spegel-ts' ? spegelTotal : used(w), 1)}`).join(', ') + ` (spegel-ts per node ${perNode.map((w) => fixed(used(w), 1)).join(' ')})`
        const stats = await upstream.stats()
        const outcomesAfter = await stormOutcomes(cluster.nodes)
        const outcomes = [...outcomesAfter].map(([k, v]) => `${k} ${v - (outcomesBefore.get(k) ?? 0)}`).join(', ')
        let digestProblems = 0
        for (const [i, node] of cluster.nodes.entries()) {
          if (!pulls[i]!.ok) continue
          const problems = await blobProblems(node, img.image)
          digestProblems += problems.length
          for (const p of problems) log(`  digest problem: ${p}`)
        }
        const figures: RunFigures = { copies: stats.copies(img.blobBytes), blobBytes: stats.blobBytes, pulls, digestProblems }
        row.runs.push(figures)
        const s = summarize(pulls.map((p) => p.ms / 1000))
        const failed = pulls.filter((p) => !p.ok)
        log(`${nodes} nodes, ${mode}, run ${r}: upstream ${fixed(stats.blobBytes / MiB, 1)} MiB of blobs = ${fixed(figures.copies, 2)} copies ` +
          `(per node MiB ${stats.blobBytesByNode.slice(0, nodes).map((b) => fixed(b / MiB, 0)).join(' ')}); ` +
          `pull s p50 ${fixed(s.p50, 2)} / p90 ${fixed(s.p90, 2)} / max ${fixed(s.max, 2)}; failed ${failed.length} of ${pulls.length}; digest problems ${digestProblems}` +
          (outcomes === '' ? '' : `; nodes' pull-storm waits: ${outcomes}`) + `; CPU s ${cpu}`)
        for (const f of failed) log(`  ${f.node} failed after ${fixed(f.ms / 1000, 2)} s: ${(f.error ?? '').split('\n').slice(-1)[0]?.slice(0, 300) ?? ''}`)
      }
    }
    for (const { teardown } of clusters) await teardown()
  }

  log('')
  log(`--- summary: ${opts.layers} x ${opts.layerMib} MiB image, upstream ${opts.rateMbs === 0 ? 'unlimited' : `${opts.rateMbs} MB/s per connection`}, stagger ${opts.staggerMs} ms, ${opts.runs} run(s); ` +
    `${isFlagKnown ? '' : `${STORM_WAIT_FLAG} unknown to this build, both modes are today's behaviour; `}goal: copies <= 1.5 (on), no failures, max on <= max off ---`)
  log('nodes  mode  copies median (max)  pull s p50    p90    max  failed  digest problems')
  for (const row of rows) {
    const all = row.runs.flatMap((r) => r.pulls)
    const s = summarize(all.map((p) => p.ms / 1000))
    const copies = row.runs.map((r) => r.copies)
    log(`${String(row.nodes).padStart(5)}  ${row.mode.padEnd(4)}  ${`${fixed(median(copies), 2)} (${fixed(Math.max(...copies), 2)})`.padEnd(19)}  ` +
      `${fixed(s.p50, 2).padStart(6)} ${fixed(s.p90, 2).padStart(6)} ${fixed(s.max, 2).padStart(6)}  ${String(all.filter((p) => !p.ok).length).padStart(6)}  ${row.runs.reduce((a, r) => a + r.digestProblems, 0)}`)
  }
  for (const nodes of opts.nodes) {
    const on = rows.find((r) => r.nodes === nodes && r.mode === 'on')
    const off = rows.find((r) => r.nodes === nodes && r.mode === 'off')
    if (on === undefined || off === undefined) continue
    const max = (row: Row): number => Math.max(...row.runs.flatMap((r) => r.pulls.map((p) => p.ms / 1000)))
    log(`${nodes} nodes: slowest pull on ${fixed(max(on), 2)} s vs off ${fixed(max(off), 2)} s (on/off ${fixed(max(on) / max(off), 2)}); ` +
      `copies on ${fixed(median(on.runs.map((r) => r.copies)), 2)} vs off ${fixed(median(off.runs.map((r) => r.copies)), 2)}`)
  }
  log(`finished; ${loadLine()}`)
}

runBenchmark('pull-storm', main)
