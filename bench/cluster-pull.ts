#!/usr/bin/env node
/**
 * Pull benchmark: a ~1 GiB image pulled with `ctr images pull --hosts-dir` through a spegel-ts
 * mirror from a peer, against the same image pulled from a local docker-registry; and the same
 * 1 GiB blob with curl through two hops (mirror, then peer) against one hop (the peer).
 *
 *   npx node dist/bench/cluster-pull.js [--size-mib 1024] [--runs 3] [--curl-runs 5] [--mode pull|fetch]
 *
 * (a) Cluster (test/helpers/cluster.ts): node 1 holds the image (ctr import), node 2 is the
 *     relay for (c). For each run a fresh node (its own new containerd and spegel-ts) joins,
 *     pulls `example.test/bench/big:1` through its own mirror (upstream unreachable), and is
 *     stopped and disposed afterwards, so the cluster is node 1 plus one puller at a time.
 * (b) Debian's docker-registry (distribution 2.8) on 127.0.0.1, the image pushed with
 *     `skopeo copy --preserve-digests`; each run a fresh private containerd pulls the same
 *     reference with a hosts.toml whose host is that registry.
 *     Runs interleave (a) and (b), alternating which goes first. `--mode fetch` uses
 *     `ctr content fetch` (no unpack) instead of `ctr images pull`.
 * (c) curl of the big layer: node 2's mirror (node 2 lacks it; it streams from node 1 and hashes
 *     on the way) against node 1 directly (with X-Spegel-Mirrored, the very request node 2 makes),
 *     interleaved, with the CPU seconds of both spegel-ts processes per run.
 * Needs root, containerd + ctr, docker-registry, skopeo and curl. Not a test: nothing asserts on
 * timing; a pull that leaves content missing or a short/failed download stops it.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, rmSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { lookupPeers, type Cluster, type ClusterNode } from '../test/helpers/cluster.js'
import { containerdSkipReason, startContainerd, type ContainerdInstance } from '../test/helpers/containerd.js'
import { buildImage, type BuiltImage } from '../test/helpers/image.js'
import { freePort, httpRequest, run } from '../test/helpers/net.js'
import { waitFor } from '../test/helpers/wait.js'
import {
  curlDownload, fixed, killQuietly, loadAverage, loadLine, median, onCleanup, parseFlags, requireTools, restartForDiskReads, runBenchmark,
  startBenchCluster, stopChild, TOOLS, type DownloadResult, type Flags
} from './cluster-common.js'

const MIB = 1024 * 1024
const NS = 'example.test'
const REPO = 'bench/big'
const TAG = '1'
const REF = `${NS}/${REPO}:${TAG}`
const SMALL_LAYERS = [4096, 256 * 1024]
const PULL_TIMEOUT_MS = 15 * 60_000
const SPEGEL_ARGS = ['--log-level', 'INFO']

const FLAGS = {
  'size-mib': { kind: 'int', default: 1024, help: 'size of the big layer' },
  runs: { kind: 'int', default: 3, help: 'pulls through the mirror and from the registry, interleaved' },
  'curl-runs': { kind: 'int', default: 5, help: 'curl downloads of the big layer, two hops and one hop, interleaved' },
  mode: { kind: 'choice', default: 'pull', choices: ['pull', 'fetch'], help: 'ctr images pull (with unpack) or ctr content fetch' }
} as const
type Options = Flags<typeof FLAGS>

// ---------------------------------------------------------------------------------------------
// Debian's docker-registry with filesystem storage in the temp dir, on loopback, access log off.

interface Registry { port: number, child: ChildProcess }

async function startRegistry (dir: string): Promise<Registry> {
  await mkdir(path.join(dir, 'data'), { recursive: true })
  const port = await freePort('127.0.0.1')
  const config = path.join(dir, 'config.yml')
  await writeFile(config, [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${path.join(dir, 'data')}`,
    'http:',
    `  addr: 127.0.0.1:${port}`,
    ''
  ].join('\n'))
  const logFd = openSync(path.join(dir, 'registry.log'), 'a')
  let child: ChildProcess
  try {
    child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', logFd, logFd] })
  } finally {
    closeSync(logFd)
  }
  const registry = { port, child }
  onCleanup('docker-registry', async () => { await stopChild(child) }, () => { killQuietly(child.pid, 'SIGKILL') })
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`docker-registry exited: ${await readFile(path.join(dir, 'registry.log'), 'utf8').catch(() => '')}`)
    return (await httpRequest(`http://127.0.0.1:${port}/v2/`, { method: 'GET', timeoutMs: 2000 })).status === 200
  }, { timeoutMs: 15_000, what: `docker-registry on port ${port}` })
  return registry
}

// ---------------------------------------------------------------------------------------------
// One pull on a fresh containerd.

async function pullWith (containerd: ContainerdInstance, mode: Options['mode'], image: BuiltImage): Promise<number> {
  const args = mode === 'pull'
    ? ['images', 'pull', '--hosts-dir', containerd.configPath, REF]
    : ['content', 'fetch', '--hosts-dir', containerd.configPath, REF]
  const start = performance.now()
  await containerd.ctr(args, { timeoutMs: PULL_TIMEOUT_MS })
  const seconds = (performance.now() - start) / 1000
  const { stdout } = await containerd.ctr(['content', 'ls', '-q'])
  const have = new Set(stdout.split('\n').map((l) => l.trim()))
  const missing = image.allDigests().filter((d) => !have.has(d))
  if (missing.length > 0) throw new Error(`after the pull, content is missing: ${missing.join(', ')}`)
  return seconds
}

async function mirrorRun (cluster: Cluster, holder: ClusterNode, image: BuiltImage, mode: Options['mode']): Promise<{ seconds: number, node: string }> {
  const node = await cluster.addNode({ extraArgs: SPEGEL_ARGS })
  try {
    await node.spegel.waitReady(60_000)
    const layer = image.platforms[0]!.layers[0]!
    await waitFor(async () => (await lookupPeers(node, REF)).includes(holder.peerId) && (await lookupPeers(node, layer.digest)).includes(holder.peerId),
      { timeoutMs: 30_000, what: `${node.name} to see the image on ${holder.name}` })
    return { seconds: await pullWith(node.containerd, mode, image), node: node.name }
  } finally {
    await node.spegel.stop()
    await node.containerd.dispose()
  }
}

async function registryRun (registry: Registry, image: BuiltImage, mode: Options['mode']): Promise<number> {
  const containerd = await startContainerd({ name: 'direct' })
  const dispose = onCleanup('direct containerd', async () => { await containerd.dispose() }, () => {
    killQuietly(containerd.pid, 'SIGKILL')
    rmSync(containerd.dir, { recursive: true, force: true })
  })
  try {
    const server = `http://127.0.0.1:${registry.port}`
    const hostsDir = path.join(containerd.configPath, NS)
    await mkdir(hostsDir, { recursive: true })
    // A [host] entry is needed: ctr 1.6 ignores a hosts.toml with only `server` and dials the
    // registry's own host instead.
    await writeFile(path.join(hostsDir, 'hosts.toml'), `server = "${server}"\n\n[host."${server}"]\n  capabilities = ["pull", "resolve"]\n`)
    return await pullWith(containerd, mode, image)
  } finally {
    await dispose()
  }
}

// ---------------------------------------------------------------------------------------------

async function main (): Promise<void> {
  const opts = parseFlags('cluster-pull', FLAGS)
  const skip = containerdSkipReason()
  if (skip !== undefined) throw new Error(skip)
  requireTools([TOOLS.dockerRegistry, TOOLS.skopeo, TOOLS.curl])
  const log = (line: string): void => { process.stdout.write(line + '\n') }
  const what = opts.mode === 'pull' ? 'ctr images pull (fetch + unpack, native snapshotter)' : 'ctr content fetch (no unpack)'
  log(`cluster-pull: ${opts.sizeMib} MiB layer + ${SMALL_LAYERS.length} small layers, ${opts.runs} runs each of ${what}, ${opts.curlRuns} curl runs; Node ${process.version}`)
  log(loadLine())

  const workDir = await mkdtemp(path.join(os.tmpdir(), 'spg-bench-pull-'))
  onCleanup('work dir', async () => { await rm(workDir, { recursive: true, force: true }) }, () => { rmSync(workDir, { recursive: true, force: true }) })

  let t = performance.now()
  const image = await buildImage(path.join(workDir, 'image'), REF, [opts.sizeMib * MIB, ...SMALL_LAYERS], { seed: 'cluster-pull' })
  const layer = image.platforms[0]!.layers[0]!
  const totalBytes = image.allDigests().reduce((sum, d) => sum + sizeOf(image, d), 0)
  log(`image built in ${fixed((performance.now() - t) / 1000)} s: ${REF}, ${image.allDigests().length} blobs, ${fixed(totalBytes / 1e6, 1)} MB; big layer ${layer.digest}`)

  const cluster = await startBenchCluster(2)
  const [n1, n2] = cluster.nodes as [ClusterNode, ClusterNode]
  t = performance.now()
  // ctr import through the helper's ctr() so the 1 GiB import gets more than its default 2 minutes.
  await n1.containerd.ctr(['images', 'import', image.archivePath!], { timeoutMs: PULL_TIMEOUT_MS })
  await n1.containerd.collectGarbage()
  await rm(image.archivePath!, { force: true })
  log(`imported into node 1 in ${fixed((performance.now() - t) / 1000)} s`)
  await restartForDiskReads(n1, [n2], layer.digest, log)

  t = performance.now()
  const registry = await startRegistry(path.join(workDir, 'registry'))
  const copy = await run('skopeo', ['copy', '--preserve-digests', '--dest-tls-verify=false',
    `oci:${image.layoutDir}:${image.tag}`, `docker://127.0.0.1:${registry.port}/${REPO}:${TAG}`], { timeoutMs: PULL_TIMEOUT_MS })
  if (copy.code !== 0) throw new Error(`skopeo copy failed: ${copy.stderr}`)
  const head = await httpRequest(`http://127.0.0.1:${registry.port}/v2/${REPO}/manifests/${TAG}`, {
    method: 'HEAD', headers: { accept: image.top.mediaType }
  })
  if (head.headers['docker-content-digest'] !== image.top.digest) {
    throw new Error(`registry serves ${String(head.headers['docker-content-digest'])} for ${REPO}:${TAG}, expected ${image.top.digest}`)
  }
  log(`pushed to docker-registry 127.0.0.1:${registry.port} in ${fixed((performance.now() - t) / 1000)} s (digests preserved)`)

  // (a) and (b), interleaved.
  const mirrorS: number[] = []
  const registryS: number[] = []
  for (let r = 0; r < opts.runs; r++) {
    const order = r % 2 === 0 ? ['mirror', 'registry'] as const : ['registry', 'mirror'] as const
    for (const kind of order) {
      if (kind === 'mirror') {
        const { seconds, node } = await mirrorRun(cluster, n1, image, opts.mode)
        mirrorS.push(seconds)
        log(`run ${r + 1} via mirror (fresh ${node} <- node1): ${fixed(seconds, 2)} s, ${fixed(totalBytes / 1e6 / seconds, 0)} MB/s; load ${loadAverage()}`)
      } else {
        const seconds = await registryRun(registry, image, opts.mode)
        registryS.push(seconds)
        log(`run ${r + 1} from docker-registry (fresh containerd): ${fixed(seconds, 2)} s, ${fixed(totalBytes / 1e6 / seconds, 0)} MB/s; load ${loadAverage()}`)
      }
    }
  }

  // (c) curl, two hops against one.
  const path2 = `/v2/${REPO}/blobs/${layer.digest}?ns=${NS}`
  const twoHop = { url: `${n2.spegel.registryUrl}${path2}`, headers: [] as string[] }
  const oneHop = { url: `${n1.spegel.registryUrl}${path2}`, headers: ['X-Spegel-Mirrored: true'] }
  const watch = [{ name: 'node1', pids: [n1.spegel.process.pid!] }, { name: 'node2', pids: [n2.spegel.process.pid!] }]
  const download = async (hop: { url: string, headers: string[] }): Promise<DownloadResult> =>
    await curlDownload(hop.url, layer.size, { headers: hop.headers, watch, timeoutMs: PULL_TIMEOUT_MS })
  await download(twoHop)
  await download(oneHop)
  const two: DownloadResult[] = []
  const one: DownloadResult[] = []
  for (let r = 0; r < opts.curlRuns; r++) {
    const order = r % 2 === 0 ? ['two', 'one'] as const : ['one', 'two'] as const
    for (const kind of order) {
      const res = await download(kind === 'two' ? twoHop : oneHop)
      ;(kind === 'two' ? two : one).push(res)
      log(`curl run ${r + 1} ${kind === 'two' ? 'two hops (curl -> node2 mirror -> node1)' : 'one hop (curl -> node1)'}: ${fixed(res.mbPerSecond, 0)} MB/s, ` +
        `${fixed(res.seconds, 2)} s; spegel CPU node1 ${fixed(res.cpuSeconds.node1!, 2)} s, node2 ${fixed(res.cpuSeconds.node2!, 2)} s`)
    }
  }
  const stillLacks = await n2.containerd.ctr(['content', 'ls', '-q'])
  if (stillLacks.stdout.includes(layer.digest)) log('note: node 2 holds the layer, so the two-hop runs may not have gone through node 1')

  const mMed = median(mirrorS)
  const rMed = median(registryS)
  const twoMed = median(two.map((x) => x.mbPerSecond))
  const oneMed = median(one.map((x) => x.mbPerSecond))
  const gib = layer.size / (1024 * MIB)
  log('')
  log('--- summary ---')
  log(`${what}, ${fixed(totalBytes / 1e6, 0)} MB image (one ${opts.sizeMib} MiB layer + small ones), fresh containerd per run, ${opts.runs} runs each:`)
  log(`  via spegel-ts mirror from a peer: median ${fixed(mMed, 2)} s, ${fixed(totalBytes / 1e6 / mMed, 0)} MB/s (runs ${mirrorS.map((s) => fixed(s, 2)).join(', ')} s)`)
  log(`  direct from docker-registry 2.8:  median ${fixed(rMed, 2)} s, ${fixed(totalBytes / 1e6 / rMed, 0)} MB/s (runs ${registryS.map((s) => fixed(s, 2)).join(', ')} s)`)
  log(`  ratio mirror/registry time ${fixed(mMed / rMed, 2)} (throughput ratio ${fixed(rMed / mMed, 2)})`)
  log(`${opts.sizeMib} MiB blob with curl, median of ${opts.curlRuns}:`)
  log(`  two hops (curl -> node 2 mirror -> node 1): ${fixed(twoMed, 0)} MB/s (runs ${two.map((x) => fixed(x.mbPerSecond, 0)).join(', ')}); ` +
    `CPU per GiB median node2 ${fixed(median(two.map((x) => x.cpuSeconds.node2!)) / gib, 2)} s, node1 ${fixed(median(two.map((x) => x.cpuSeconds.node1!)) / gib, 2)} s`)
  log(`  one hop (curl -> node 1):                   ${fixed(oneMed, 0)} MB/s (runs ${one.map((x) => fixed(x.mbPerSecond, 0)).join(', ')}); ` +
    `CPU per GiB median node1 ${fixed(median(one.map((x) => x.cpuSeconds.node1!)) / gib, 2)} s`)
  log(`  ratio two hops / one hop ${fixed(twoMed / oneMed, 2)}`)
  log(`load average at the end (1-min figure includes this benchmark): ${loadAverage()}`)
}

function sizeOf (image: BuiltImage, digest: string): number {
  if (image.index?.digest === digest) return image.index.size
  for (const p of image.platforms) {
    for (const d of [p.manifest, p.config, ...p.layers]) if (d.digest === digest) return d.size
  }
  throw new Error(`unknown digest ${digest}`)
}

runBenchmark('cluster-pull', main)
