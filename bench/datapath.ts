#!/usr/bin/env node
/**
 * Data-path benchmark: every figure of the data-path issue in one run, spegel-ts against a
 * reference measured the same way at the same time.
 *
 *   npx node dist/bench/datapath.js [--size-mib 512] [--runs 5] [--ab-seconds 5]
 *     [--rows blob-local,blob-mirror,head-local,head-mirror,idle] [--nodes 30] [--keys 5000]
 *     [--idle-seconds 20] [--settle-seconds 5] [--idle-nodes full,router] [--node-options ...] [--cpu-prof-dir DIR]
 *     [--unverified-relay] [--link-mbit N] [--modules]
 *
 * Rows (each prints every run, then a median; the end block is for pasting into a note):
 *  - blob-local: curl GET of a `--size-mib` layer from node a, which holds it, against nginx
 *    (sendfile) serving the very same file of a's content store.
 *  - blob-mirror: the same GET sent to node b, which lacks it and relays a's answer (b -> a),
 *    against one hop (the blob-local figure of a) and against nginx relaying a (proxy_pass,
 *    keep-alive upstream, 1 MiB buffers); with the relaying process's CPU seconds per GiB.
 *    b hashes the layer as it relays it (`--verify-relayed-blobs`); `--unverified-relay` starts
 *    the nodes with that switched off, to measure what the check costs. `--link-mbit` puts node
 *    a behind a link of that rate (bench/link-limit.ts), as a holder on another machine is.
 *  - head-local, head-mirror: `ab -k -i -c16` HEAD of the manifest by tag on a, and through b,
 *    against nginx serving the manifest file, and nginx relaying a.
 *  - idle: `--nodes` nodes advertising `--keys` keys each, converged, then RSS and CPU of every
 *    node from /proc over `--idle-seconds` with nothing asked of them. `full`: spegel-ts nodes
 *    (one private containerd, one namespace per node holding images that make `--keys` keys);
 *    `router`: the router-only processes of bench/cluster-scale.ts, as the issue measured.
 * spegel-ts nodes run the bundle the image runs (dist/src/cli/spegel.bundle.js), and router
 * processes their own bundle (dist/bench/cluster-scale-node.bundle.js); `--modules` runs
 * dist/src/main.js and dist/bench/cluster-scale-node.js instead.
 * blob and HEAD targets run interleaved, one warm-up each first, the order rotated every run.
 * Two real nodes of test/helpers/cluster.ts (private containerd each); nginx instances from
 * bench/references.ts. Needs root, containerd + ctr, nginx, curl and ab (the idle `router` row
 * needs only the build). Not a test: nothing asserts on timing; a wrong answer (status, bytes,
 * failed or non-2xx requests) stops it. See bench/README.md.
 */
import { randomBytes, createHash } from 'node:crypto'
import { existsSync, rmSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { lookupPeers, type ClusterNode } from '../test/helpers/cluster.js'
import { containerdSkipReason, startContainerd, type ContainerdInstance } from '../test/helpers/containerd.js'
import { buildImage, OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST, type BlobRef } from '../test/helpers/image.js'
import { httpRequest, run } from '../test/helpers/net.js'
import { copyNodeBinary } from '../test/helpers/node-binary.js'
import { BUNDLE_JS, startSpegel, type SpegelNode, type SpegelNodeInit } from '../test/helpers/spegel.js'
import { waitFor } from '../test/helpers/wait.js'
import {
  abProblems, curlDownload, errorText, fixed, killQuietly, loadAverage, loadLine, median, onCleanup, parseFlags, procSample, requireTools,
  restartForDiskReads, runAb, runBenchmark, startBenchCluster, summarize, TOOLS, type CpuWatch, type Flags, type Tool
} from './cluster-common.js'
import { limitSender } from './link-limit.js'
import { startNginxFileServer, startNginxProxy, type Nginx } from './references.js'
import { BENCH_NODE_BUNDLE_JS, BENCH_NODE_JS, bootstrapPeers, failFast, idleReading, idleText, prepareCluster, productionEnv, schedstatText, SETTLE_SECONDS, startRouterNodes, type IdleReading } from './router-cluster.js'

const MIB = 1024 * 1024
const GIB = 1024 * MIB
const NS = 'example.test'
const REPO = 'bench/datapath'
const TAG = '1'
const REF = `${NS}/${REPO}:${TAG}`
const IMPORT_TIMEOUT_MS = 15 * 60_000
const CURL_TIMEOUT_MS = 15 * 60_000
const AB_WARMUP_SECONDS = 1
/** Keys per image of the idle row's full nodes: tag + manifest + config + 47 layers. */
const KEYS_PER_IMAGE = 50
/** How long the idle row's nodes may take to hold the full index. */
const CONVERGE_TIMEOUT_MS = 15 * 60_000

const ROWS = ['blob-local', 'blob-mirror', 'head-local', 'head-mirror', 'idle'] as const
type Row = typeof ROWS[number]

/** The issue's goals, printed next to each ratio; nothing here checks them. */
const GOALS = {
  blobLocal: 0.9,
  blobMirrorOfOneHop: 0.85,
  blobMirrorOfNginx: 1.0,
  headLocal: 0.4,
  headMirror: 0.5,
  idleRssMiB: 96,
  idleCpuPercent: 1
}

const FLAGS = {
  'size-mib': { kind: 'int', default: 512, help: 'size of the layer node a holds' },
  runs: { kind: 'int', default: 5, help: 'measurements per target after a warm-up, interleaved; medians of these' },
  'ab-seconds': { kind: 'int', default: 5, help: 'seconds per ab run (HEAD rows)' },
  rows: { kind: 'choices', default: ROWS, choices: ROWS, help: 'which rows to measure' },
  nodes: { kind: 'int', default: 30, min: 2, help: 'idle row: nodes' },
  keys: { kind: 'int', default: 5000, min: 4, help: 'idle row: keys each node advertises' },
  'idle-seconds': { kind: 'int', default: 20, help: 'idle row: the window CPU is counted over' },
  'settle-seconds': { kind: 'int', default: SETTLE_SECONDS, help: 'idle row: the wait between the full index everywhere and the window; past 30 s it covers a node\'s first heap-trimmer check after the burst (steady state rather than the burst\'s aftermath)' },
  'idle-nodes': { kind: 'choices', default: ['full', 'router'], choices: ['full', 'router'], help: 'idle row: full spegel-ts nodes, router-only processes, or both' },
  'node-options': { kind: 'string', default: '', help: 'NODE_OPTIONS for the spegel-ts nodes, e.g. --node-options=--max-semi-space-size=1' },
  modules: { kind: 'boolean', help: 'run the spegel-ts nodes from dist/src/main.js, module by module, instead of the bundle the image runs (dist/src/cli/spegel.bundle.js), and the router processes from dist/bench/cluster-scale-node.js instead of its bundle' },
  'link-mbit': { kind: 'int', default: 0, min: 0, help: 'blob-mirror row: everything node a sends leaves at this many Mbit/s at most (HTB on lo, bench/link-limit.ts; needs root), as when the holder is another machine: one hop, the relay through b and nginx\'s relay all fetch through that link. 0: no limit. Not with blob-local (nginx\'s file server is not behind the link)' },
  'unverified-relay': { kind: 'boolean', help: 'data rows: nodes run with --verify-relayed-blobs=false (node b relays the layer without hashing it; containerd would still check it at commit)' },
  'cpu-prof-dir': { kind: 'string', default: '', help: 'write a V8 CPU profile of every spegel-ts node there (--cpu-prof; written when a node stops)' },
  'own-binary': { kind: 'boolean', help: 'idle row: every node runs its own copy of the node binary, as a pod does on its own host (nodes sharing one binary share its pages, which the kernel never pages out: src/observability/page-out.ts); 126 MB of /tmp per node' }
} as const
type Options = Flags<typeof FLAGS>

const log = (line: string): void => { process.stdout.write(line + '\n') }
const fmt0 = (x: number): string => fixed(x, 0)
const ratio = (a: number, b: number): string => b > 0 ? (a / b).toFixed(2) : 'n/a'
const hexOf = (digest: string): string => digest.slice('sha256:'.length)

// ---------------------------------------------------------------------------------------------
// The data path: node a holds one big layer, node b relays it, nginx serves and relays the same.

interface DataPath {
  a: ClusterNode
  b: ClusterNode
  layer: BlobRef
  manifest: BlobRef
  watch: { a: CpuWatch, b: CpuWatch, bMain: CpuWatch, nginxFile: CpuWatch, nginxRelay: CpuWatch }
  nginxFile: Nginx
  nginxRelay: Nginx
  teardown: () => Promise<void>
}

async function setUpDataPath (workDir: string, opts: Options): Promise<DataPath> {
  let t = performance.now()
  const image = await buildImage(path.join(workDir, 'image'), REF, [opts.sizeMib * MIB], { seed: 'datapath' })
  const layer = image.platforms[0]!.layers[0]!
  const manifest = image.platforms[0]!.manifest
  log(`built ${REF} in ${fixed((performance.now() - t) / 1000)} s: layer ${layer.digest} (${layer.size} bytes), manifest ${manifest.digest} (${manifest.size} bytes)`)

  const cluster = await startBenchCluster(2, opts.unverifiedRelay ? { extraArgs: ['--verify-relayed-blobs', 'false'] } : {})
  const [a, b] = cluster.nodes as [ClusterNode, ClusterNode]
  t = performance.now()
  await a.containerd.ctr(['images', 'import', image.archivePath!], { timeoutMs: IMPORT_TIMEOUT_MS })
  await a.containerd.collectGarbage()
  // The layout and the archive are two more copies of the layer; only containerd's is served.
  await rm(path.join(workDir, 'image'), { recursive: true, force: true })
  log(`imported into node a (${a.name}, ${a.spegel.registryUrl}) in ${fixed((performance.now() - t) / 1000)} s; node b is ${b.name}, ${b.spegel.registryUrl}`)
  await restartForDiskReads(a, [b], layer.digest, log)
  await waitFor(async () => (await lookupPeers(b, REF)).includes(a.peerId), { timeoutMs: 30_000, what: 'node b to see node a\'s tag' })

  const blobsDir = path.join(a.containerd.contentPath, 'blobs', 'sha256')
  const nginxFile = await startNginxFileServer(path.join(workDir, 'nginx-file'), blobsDir, 'nginx file')
  const upstream = new URL(a.spegel.registryUrl).host
  const nginxRelay = await startNginxProxy(path.join(workDir, 'nginx-relay'), upstream, 'nginx relay')
  log(`nginx serving a's content directory at ${nginxFile.url} (master ${nginxFile.pid}); nginx relaying a (${upstream}) at ${nginxRelay.url} (master ${nginxRelay.pid})`)
  return {
    a,
    b,
    layer,
    manifest,
    watch: { a: { name: 'node a', pids: [a.spegel.process.pid!] }, b: { name: 'node b', pids: [b.spegel.process.pid!] }, bMain: { name: 'node b main thread', pids: [b.spegel.process.pid!], mainThreadOnly: true }, nginxFile: nginxFile.watch, nginxRelay: nginxRelay.watch },
    nginxFile,
    nginxRelay,
    teardown: async () => {
      await nginxRelay.stop()
      await nginxFile.stop()
      await cluster.teardown()
    }
  }
}

/** Whether node b holds the layer itself: then a "relayed" figure would be a local one. */
async function bHolds (dp: DataPath): Promise<boolean> {
  const { stdout } = await dp.b.containerd.ctr(['content', 'ls', '-q'])
  return stdout.split('\n').some((l) => l.trim() === dp.layer.digest)
}

// ---------------------------------------------------------------------------------------------
// Targets: one per server and path, each with the process that answers the client (`server`)
// and, for relayed ones, the holder behind it (`origin`).

type TargetName = 'spegel local' | 'nginx file' | 'spegel via b' | 'nginx relay'

interface Target {
  name: TargetName
  blobUrl: string
  headUrl: string
  server: CpuWatch
  /** The server's main thread alone (spegel-ts hashes relayed blobs on a worker thread). */
  serverMain?: CpuWatch
  origin?: CpuWatch
}

function targets (dp: DataPath): Record<TargetName, Target> {
  const blobPath = `/v2/${REPO}/blobs/${dp.layer.digest}?ns=${NS}`
  const headPath = `/v2/${REPO}/manifests/${TAG}?ns=${NS}`
  return {
    'spegel local': { name: 'spegel local', blobUrl: dp.a.spegel.registryUrl + blobPath, headUrl: dp.a.spegel.registryUrl + headPath, server: dp.watch.a },
    'nginx file': { name: 'nginx file', blobUrl: `${dp.nginxFile.url}/${hexOf(dp.layer.digest)}`, headUrl: `${dp.nginxFile.url}/${hexOf(dp.manifest.digest)}`, server: dp.watch.nginxFile },
    'spegel via b': { name: 'spegel via b', blobUrl: dp.b.spegel.registryUrl + blobPath, headUrl: dp.b.spegel.registryUrl + headPath, server: dp.watch.b, serverMain: dp.watch.bMain, origin: dp.watch.a },
    'nginx relay': { name: 'nginx relay', blobUrl: dp.nginxRelay.url + blobPath, headUrl: dp.nginxRelay.url + headPath, server: dp.watch.nginxRelay, origin: dp.watch.a }
  }
}

/** The Accept containerd sends for a manifest. */
const MANIFEST_HEADERS = { Accept: `${OCI_MANIFEST}, application/vnd.oci.image.index.v1+json, */*` }

async function checkTarget (t: Target, dp: DataPath): Promise<void> {
  const head = await httpRequest(t.headUrl, { method: 'HEAD', headers: MANIFEST_HEADERS, timeoutMs: 10_000 })
  if (head.status !== 200 || Number(head.headers['content-length']) !== dp.manifest.size) {
    throw new Error(`${t.name}: HEAD ${t.headUrl} answered ${head.status} with Content-Length ${String(head.headers['content-length'])}, expected 200 and ${dp.manifest.size}`)
  }
  const blob = await httpRequest(t.blobUrl, { method: 'HEAD', timeoutMs: 10_000 })
  if (blob.status !== 200 || Number(blob.headers['content-length']) !== dp.layer.size) {
    throw new Error(`${t.name}: HEAD ${t.blobUrl} answered ${blob.status} with Content-Length ${String(blob.headers['content-length'])}, expected 200 and ${dp.layer.size}`)
  }
}

/** `runs` rounds over `items`, the first one rotating, so no target always follows the same one. */
function* rotations<T> (items: readonly T[], runs: number): Generator<[number, T]> {
  for (let r = 0; r < runs; r++) {
    for (let i = 0; i < items.length; i++) yield [r + 1, items[(r + i) % items.length]!]
  }
}

// ---------------------------------------------------------------------------------------------
// Blob rows.

interface BlobRun { mbPerSecond: number, seconds: number, serverCpuPerGiB: number, serverCpuPercent: number, originCpuPerGiB?: number, mainThreadCpuPerGiB?: number }

async function blobRun (t: Target, bytes: number): Promise<BlobRun> {
  const watch = [t.server, ...(t.origin === undefined ? [] : [t.origin]), ...(t.serverMain === undefined ? [] : [t.serverMain])]
  const r = await curlDownload(t.blobUrl, bytes, { watch, timeoutMs: CURL_TIMEOUT_MS })
  const server = r.cpuSeconds[t.server.name] ?? 0
  const origin = t.origin === undefined ? undefined : r.cpuSeconds[t.origin.name] ?? 0
  const main = t.serverMain === undefined ? undefined : r.cpuSeconds[t.serverMain.name] ?? 0
  return {
    mbPerSecond: r.mbPerSecond,
    seconds: r.seconds,
    serverCpuPerGiB: server / (bytes / GIB),
    serverCpuPercent: r.seconds > 0 ? 100 * server / r.seconds : 0,
    ...(origin === undefined ? {} : { originCpuPerGiB: origin / (bytes / GIB) }),
    ...(main === undefined ? {} : { mainThreadCpuPerGiB: main / (bytes / GIB) })
  }
}

function blobRunText (t: Target, r: BlobRun): string {
  const who = t.origin === undefined ? 'server' : 'relay'
  return `${t.name.padEnd(12)} ${fmt0(r.mbPerSecond).padStart(6)} MB/s  ${fixed(r.seconds, 2).padStart(6)} s  ${who} CPU ${fmt0(r.serverCpuPercent).padStart(3)} % of a core, ${fixed(r.serverCpuPerGiB, 2)} s/GiB` +
    (r.mainThreadCpuPerGiB === undefined ? '' : ` (main thread ${fixed(r.mainThreadCpuPerGiB, 2)})`) +
    (r.originCpuPerGiB === undefined ? '' : `; holder a ${fixed(r.originCpuPerGiB, 2)} s/GiB`)
}

async function measureBlobs (dp: DataPath, list: readonly Target[], opts: Options): Promise<Map<TargetName, BlobRun[]>> {
  log(`\n== blob GET ${opts.sizeMib} MiB with curl: warm-up, then ${opts.runs} interleaved runs (MB = 10^6 bytes; CPU from /proc, nginx workers included) ==`)
  for (const t of list) log(`warm-up ${blobRunText(t, await blobRun(t, dp.layer.size))}`)
  const runs = new Map<TargetName, BlobRun[]>(list.map((t) => [t.name, []]))
  for (const [r, t] of rotations(list, opts.runs)) {
    const res = await blobRun(t, dp.layer.size)
    runs.get(t.name)!.push(res)
    log(`run ${r}   ${blobRunText(t, res)}`)
  }
  for (const t of list) {
    const rs = runs.get(t.name)!
    log(`median  ${t.name.padEnd(12)} ${fmt0(median(rs.map((x) => x.mbPerSecond))).padStart(6)} MB/s  (runs ${rs.map((x) => fmt0(x.mbPerSecond)).join(', ')}); ` +
      `${t.origin === undefined ? 'server' : 'relay'} CPU ${fixed(median(rs.map((x) => x.serverCpuPerGiB)), 2)} s/GiB` +
      (t.origin === undefined ? '' : `, holder a ${fixed(median(rs.map((x) => x.originCpuPerGiB ?? Number.NaN)), 2)} s/GiB`))
  }
  if (list.some((t) => t.name === 'spegel via b') && await bHolds(dp)) {
    log('WARNING: node b holds the layer now, so its figures are not relayed ones')
  }
  log(`load average ${loadAverage()}`)
  return runs
}

// ---------------------------------------------------------------------------------------------
// HEAD rows.

interface HeadRun { requestsPerSecond: number, serverCpuPercent: number, originCpuPercent?: number, warnings: string[] }

async function headRun (t: Target, seconds: number): Promise<HeadRun> {
  const watch = t.origin === undefined ? [t.server] : [t.server, t.origin]
  const r = await runAb(t.headUrl, { method: 'HEAD', seconds, headers: MANIFEST_HEADERS, watch })
  const { errors, warnings } = abProblems(r)
  if (errors.length > 0) throw new Error(`${t.name}: ab HEAD ${t.headUrl}: ${errors.join('; ')}`)
  const pct = (w: CpuWatch): number => 100 * (r.cpuSeconds[w.name] ?? 0) / r.wallSeconds
  return { requestsPerSecond: r.requestsPerSecond, serverCpuPercent: pct(t.server), ...(t.origin === undefined ? {} : { originCpuPercent: pct(t.origin) }), warnings }
}

function headRunText (t: Target, r: HeadRun): string {
  return `${t.name.padEnd(12)} ${fmt0(r.requestsPerSecond).padStart(7)} req/s  ${t.origin === undefined ? 'server' : 'relay'} CPU ${fmt0(r.serverCpuPercent).padStart(3)} % of a core` +
    (r.originCpuPercent === undefined ? '' : `, holder a ${fmt0(r.originCpuPercent)} %`) + r.warnings.map((w) => `  WARNING: ${w}`).join('')
}

async function measureHeads (dp: DataPath, list: readonly Target[], opts: Options): Promise<Map<TargetName, HeadRun[]>> {
  log(`\n== HEAD manifest by tag (${dp.manifest.size} bytes), ab -k -i -c16 -t${opts.abSeconds}: ${AB_WARMUP_SECONDS} s warm-up, then ${opts.runs} interleaved runs ==`)
  for (const t of list) log(`warm-up ${headRunText(t, await headRun(t, AB_WARMUP_SECONDS))}`)
  const runs = new Map<TargetName, HeadRun[]>(list.map((t) => [t.name, []]))
  for (const [r, t] of rotations(list, opts.runs)) {
    const res = await headRun(t, opts.abSeconds)
    runs.get(t.name)!.push(res)
    log(`run ${r}   ${headRunText(t, res)}`)
  }
  for (const t of list) {
    const rs = runs.get(t.name)!
    log(`median  ${t.name.padEnd(12)} ${fmt0(median(rs.map((x) => x.requestsPerSecond))).padStart(7)} req/s  (runs ${rs.map((x) => fmt0(x.requestsPerSecond)).join(', ')}); ${t.origin === undefined ? 'server' : 'relay'} CPU ${fmt0(median(rs.map((x) => x.serverCpuPercent)))} % of a core`)
  }
  log(`load average ${loadAverage()}`)
  return runs
}

// ---------------------------------------------------------------------------------------------
// Idle row.

/**
 * An OCI layout of `keys` keys' worth of images (a tag, a manifest, a config and tiny layers each;
 * `KEYS_PER_IMAGE` keys an image), all distinct to `seed`, as an archive for `ctr images import
 * --no-unpack` (the layers are not tars; nothing unpacks or serves them here).
 */
async function writeKeyImages (dir: string, seed: string, keys: number): Promise<string> {
  const layoutDir = path.join(dir, 'layout')
  const blobsDir = path.join(layoutDir, 'blobs', 'sha256')
  await mkdir(blobsDir, { recursive: true })
  const put = async (mediaType: string, bytes: Buffer): Promise<BlobRef> => {
    const hex = createHash('sha256').update(bytes).digest('hex')
    await writeFile(path.join(blobsDir, hex), bytes)
    return { mediaType, digest: `sha256:${hex}`, size: bytes.length }
  }
  const images = Math.ceil(keys / KEYS_PER_IMAGE)
  const manifests: object[] = []
  for (let i = 0; i < images; i++) {
    // Spread the keys so that every image has at least a tag, a manifest, a config and a layer.
    const imageKeys = Math.floor(keys / images) + (i < keys % images ? 1 : 0)
    const layers: BlobRef[] = []
    for (let j = 0; j < imageKeys - 3; j++) layers.push(await put(OCI_LAYER_TAR, Buffer.from(`${seed} image ${i} layer ${j}`)))
    const config = await put(OCI_CONFIG, Buffer.from(JSON.stringify({
      architecture: 'amd64', os: 'linux', config: { Labels: { seed, image: String(i) } }, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) }
    })))
    const manifest = await put(OCI_MANIFEST, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers })))
    const ref = `${NS}/idle-${seed}/app-${i}:v1`
    manifests.push({ ...manifest, annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': 'v1' } })
  }
  await writeFile(path.join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  await writeFile(path.join(layoutDir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }))
  const archive = path.join(dir, 'images.tar')
  const res = await run('tar', ['-C', layoutDir, '-cf', archive, '.'], { timeoutMs: 5 * 60_000 })
  if (res.code !== 0) throw new Error(`tar of ${layoutDir} failed: ${res.stderr}`)
  await rm(layoutDir, { recursive: true, force: true })
  return archive
}

interface DebugStatus { store: { keys: number, isReady?: boolean }, router: { isReady: boolean, records?: number, keys?: number, ownKeys?: number } }

async function debugStatus (node: SpegelNode): Promise<DebugStatus> {
  const res = await httpRequest(`${node.metricsUrl}/debug/status`, { method: 'GET', timeoutMs: 10_000 })
  if (res.status !== 200) throw new Error(`GET ${node.metricsUrl}/debug/status answered ${res.status}`)
  return JSON.parse(res.body.toString('utf8')) as DebugStatus
}

/**
 * `nodes` full spegel-ts nodes, each reading its own namespace of one private containerd that
 * holds `keys` keys' worth of distinct images per namespace; idle figures once every node holds
 * every other node's record and keys.
 */
async function idleFull (opts: Options, workDir: string): Promise<IdleReading> {
  // containerd's content and metadata on tmpfs when there is one: the 30 x 5,000 blob imports are
  // the slow part of this row, and nothing here measures the disk.
  const shm = existsSync('/dev/shm') ? '/dev/shm' : undefined
  let t = performance.now()
  const ctrd: ContainerdInstance = await startContainerd({ name: 'idle', ...(shm === undefined ? {} : { baseDir: shm }) })
  const disposeContainerd = onCleanup('idle containerd', async () => { await ctrd.dispose() }, () => {
    killQuietly(ctrd.pid, 'SIGKILL')
    rmSync(ctrd.dir, { recursive: true, force: true })
  })
  try {
    const salt = randomBytes(3).toString('hex')
    const namespaces = Array.from({ length: opts.nodes }, (_, i) => `idle-${i}`)
    // Two imports at a time: one writes its layout while the other talks to containerd.
    let next = 0
    let done = 0
    await Promise.all([0, 1].map(async () => {
      while (next < namespaces.length) {
        const i = next++
        const dir = path.join(workDir, `idle-images-${i}`)
        const archive = await writeKeyImages(dir, `${salt}-${i}`, opts.keys)
        await ctrd.ctr(['images', 'import', '--no-unpack', archive], { namespace: namespaces[i]!, timeoutMs: IMPORT_TIMEOUT_MS })
        await rm(dir, { recursive: true, force: true })
        done++
        if (done % 5 === 0 || done === opts.nodes) log(`[idle, full nodes] imported ${done} of ${opts.nodes} namespaces (${opts.keys} keys each) in ${fixed((performance.now() - t) / 1000)} s; load ${loadAverage()}`)
      }
    }))

    const run = await prepareCluster(opts.nodes, 'idle-full')
    const nodes: SpegelNode[] = []
    const stopNodes = onCleanup('idle spegel-ts nodes', async () => {
      await Promise.all(nodes.map(async (n) => { await n.stop() }))
    }, () => { for (const n of nodes) killQuietly(n.process.pid, 'SIGKILL') })
    try {
      t = performance.now()
      const checkAlive = (): void => {
        const dead = nodes.findIndex((n) => !n.isAlive())
        if (dead >= 0) throw new Error(`idle node ${dead} exited: ${nodes[dead]!.stderrText().slice(-2000)}`)
      }
      // A rolling join: each node starts once the one before holds every earlier node's record, so
      // a start does not compete with the pulls the previous join caused.
      let ownKeys = 0
      let slowestStartS = 0
      for (const [i, namespace] of namespaces.entries()) {
        const id = run.identities[i]!
        const peers = bootstrapPeers(run, i, i)
        const nodeStarted = performance.now()
        const node = await startIdleNode(i, {
          host: id.host,
          routerPort: id.port,
          containerdSock: ctrd.socketPath,
          contentPath: ctrd.contentPath,
          logLevel: 'INFO',
          // What the image runs with, as for the router processes.
          env: productionEnv(),
          ...(opts.ownBinary ? { nodeBinary: copyNodeBinary(id.dataDir) } : {}),
          bootstrapArgs: ['--bootstrap-kind', 'static', ...(peers.length === 0 ? [] : ['--static-bootstrap-peers', ...peers])],
          extraArgs: ['--data-dir', id.dataDir, '--containerd-namespace', namespace, '--containerd-config', ctrd.configFile,
            '--containerd-registry-config-path', ctrd.configPath]
        })
        nodes.push(node)
        slowestStartS = Math.max(slowestStartS, (performance.now() - nodeStarted) / 1000)
        if (i === 0) {
          await waitFor(async () => {
            checkAlive()
            const s = await debugStatus(node)
            ownKeys = s.store.keys
            return s.store.keys > 0 && s.router.ownKeys === s.store.keys
          }, { timeoutMs: 120_000, intervalMs: 500, what: 'node 0 to index and advertise its images' })
          if (ownKeys !== opts.keys) log(`[idle, full nodes] note: a node advertises ${ownKeys} keys, not the ${opts.keys} its images were made for`)
        } else {
          await waitFor(async () => {
            checkAlive()
            const s = await debugStatus(node)
            return s.router.records === i && s.router.keys === i * ownKeys
          }, { timeoutMs: CONVERGE_TIMEOUT_MS, intervalMs: 500, what: `idle node ${i} to hold the records of the ${i} nodes before it` })
        }
        if ((i + 1) % 5 === 0 || i + 1 === opts.nodes) {
          log(`[idle, full nodes] ${i + 1} of ${opts.nodes} spegel-ts nodes up and synced after ${fixed((performance.now() - t) / 1000)} s ` +
            `(slowest start to /livez ${fixed(slowestStartS)} s); load ${loadAverage()}`)
        }
      }
      let behind = opts.nodes
      await waitFor(async () => {
        checkAlive()
        const all = await Promise.all(nodes.map(async (n) => await debugStatus(n)))
        behind = all.filter((s) => !(s.router.isReady && s.router.records === opts.nodes - 1 && s.router.keys === (opts.nodes - 1) * ownKeys && s.router.ownKeys === ownKeys)).length
        return behind === 0
      }, { timeoutMs: CONVERGE_TIMEOUT_MS, intervalMs: 1000, what: `${opts.nodes} spegel-ts nodes to hold the full index` })
        .catch((err: unknown) => { throw new Error(`${errorText(err)} (${behind} still behind)`, { cause: err }) })
      log(`[idle, full nodes] full index everywhere (${opts.nodes - 1} records, ${(opts.nodes - 1) * ownKeys} keys) ${fixed((performance.now() - t) / 1000)} s after the first start`)
      const idle = await idleReading(nodes.map((n, index) => ({ index, pid: n.process.pid! })), opts.idleSeconds, checkAlive, opts.settleSeconds)
      const ctrdRss = ctrd.pid === undefined ? undefined : procSample(ctrd.pid)?.rssKiB
      log(`[idle, ${opts.nodes} full spegel-ts nodes x ${ownKeys} keys] idle ${opts.idleSeconds} s: ${idleText(idle)}` +
        `${ctrdRss === undefined ? '' : `; the shared containerd ${fixed(ctrdRss / 1024)} MiB`}; load ${loadAverage()}`)
      return idle
    } finally {
      await stopNodes()
      await run.teardown()
    }
  } finally {
    await disposeContainerd()
  }
}

/**
 * startSpegel, again up to twice when the node does not answer /livez within the helper's 60 s:
 * 30 nodes starting on 2 cores that other work also uses can take that long.
 */
async function startIdleNode (index: number, init: SpegelNodeInit): Promise<SpegelNode> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startSpegel(init)
    } catch (err) {
      if (attempt === 3) throw err
      log(`[idle, full nodes] node ${index}, attempt ${attempt}: ${errorText(err)}; load ${loadAverage()}; starting it again`)
      // The helper SIGKILLs the node; give the kernel a moment to release its router port.
      await delay(1000)
    }
  }
}

async function idleRouter (opts: Options): Promise<IdleReading> {
  const run = await prepareCluster(opts.nodes, 'idle-router')
  try {
    // Longer than cluster-scale's 4 minutes: the 30 nodes converged in 2 to more than 4 minutes
    // while other work kept the load average of the 2 cores at 20 to 45.
    const { nodes, startupMs } = await startRouterNodes(run, opts.nodes, opts.keys, CONVERGE_TIMEOUT_MS)
    log(`[idle, router processes] full index everywhere ${fixed(startupMs / 1000, 1)} s after the last router was up`)
    const idle = await idleReading(nodes, opts.idleSeconds, () => { failFast(nodes) }, opts.settleSeconds)
    log(`[idle, ${opts.nodes} router processes x ${opts.keys} keys, ${Object.entries(productionEnv()).map(([k, v]) => `${k}=${v ?? 'unset'}`).join(', ')}] idle ${opts.idleSeconds} s: ${idleText(idle)}; load ${loadAverage()}`)
    return idle
  } finally {
    await run.teardown()
  }
}

// ---------------------------------------------------------------------------------------------

function requirements (rows: readonly Row[], opts: Options): string[] {
  const problems: string[] = []
  const dataRows = rows.some((r) => r !== 'idle')
  if (dataRows || (rows.includes('idle') && opts.idleNodes.includes('full'))) {
    const skip = containerdSkipReason()
    if (skip !== undefined) problems.push(skip)
  }
  const tools: Tool[] = []
  if (dataRows) tools.push(TOOLS.nginx)
  if (rows.includes('blob-local') || rows.includes('blob-mirror')) tools.push(TOOLS.curl)
  if (opts.linkMbit > 0) {
    if (rows.includes('blob-local')) problems.push('--link-mbit limits node a alone, and the blob-local row compares a with nginx\'s file server, which is not behind the link: pass --rows blob-mirror (with the HEAD rows if wanted)')
    if (!rows.includes('blob-mirror')) problems.push('--link-mbit applies to the blob-mirror row only: add it to --rows')
    if (process.getuid?.() !== 0) problems.push('--link-mbit needs root (it adds a qdisc to lo with tc)')
    tools.push(TOOLS.tc)
  }
  if (rows.includes('head-local') || rows.includes('head-mirror')) tools.push(TOOLS.ab)
  try {
    requireTools(tools)
  } catch (err) {
    problems.push(errorText(err))
  }
  const needsNodes = rows.some((r) => r !== 'idle') || (rows.includes('idle') && opts.idleNodes.includes('full'))
  if (needsNodes && !opts.modules && !existsSync(BUNDLE_JS)) problems.push(`${BUNDLE_JS} is missing: build with npm run build (or pass --modules)`)
  if (rows.includes('idle') && opts.idleNodes.includes('router')) {
    const script = opts.modules ? BENCH_NODE_JS : BENCH_NODE_BUNDLE_JS
    if (!existsSync(script)) problems.push(`${script} is missing: build with npm run build${opts.modules ? '' : ' (or pass --modules)'}`)
  }
  return problems
}

function idleSummary (label: string, r: IdleReading): string {
  const rss = summarize(r.rssMiB)
  const cpu = summarize(r.cpuPercent)
  const anon = summarize(r.anonMiB)
  return `${label}: RSS median/max ${fixed(rss.p50)}/${fixed(rss.max)} MiB (goal <= ${GOALS.idleRssMiB}; anonymous ${fixed(anon.p50)}/${fixed(anon.max)}), ` +
    `CPU % of a core median/max ${fixed(cpu.p50, 2)}/${fixed(cpu.max, 2)} (goal < ${GOALS.idleCpuPercent}${schedstatText(r)})`
}

async function main (): Promise<void> {
  const opts = parseFlags('datapath', FLAGS)
  const rows = ROWS.filter((r) => opts.rows.includes(r))
  const problems = requirements(rows, opts)
  if (problems.length > 0) throw new Error(`cannot run ${rows.join(', ')}:\n  ${problems.join('\n  ')}`)
  // The image runs the bundle; memory differs by about 11 MiB a node (docs/image.md).
  if (!opts.modules) process.env.SPEGEL_TEST_BUNDLE = '1'
  if (opts.ownBinary) process.env.SPEGEL_BENCH_OWN_BINARY = '1'
  // Read by every node this process starts, not by this process (it is already running).
  const nodeOptions = [opts.nodeOptions, opts.cpuProfDir === '' ? '' : `--cpu-prof --cpu-prof-dir=${path.resolve(opts.cpuProfDir)}`].filter((o) => o !== '').join(' ')
  if (nodeOptions !== '') process.env.NODE_OPTIONS = nodeOptions
  // Every spegel-ts node and containerd adds a process 'exit' listener of its own.
  process.setMaxListeners(Math.max(process.getMaxListeners(), 2 * opts.nodes + 20))

  const startLoad = loadLine()
  log(`datapath: rows ${rows.join(', ')}; ${opts.sizeMib} MiB layer, ${opts.runs} runs, ab ${opts.abSeconds} s; idle ${opts.nodes} nodes x ${opts.keys} keys ` +
    `(${opts.idleNodes.join(' and ')}), ${opts.idleSeconds} s; Node ${process.version}; spegel-ts nodes and router processes run ${opts.modules ? 'their modules' : 'bundles'}${nodeOptions === '' ? '' : `; nodes run with NODE_OPTIONS=${nodeOptions}`}`)
  log(startLoad)
  const started = performance.now()

  const workDir = await mkdtemp(path.join(os.tmpdir(), 'spg-bench-datapath-'))
  onCleanup('work dir', async () => { await rm(workDir, { recursive: true, force: true }) }, () => { rmSync(workDir, { recursive: true, force: true }) })

  const summary: string[] = []
  let failed = true
  try {
    await measureRows(rows, opts, workDir, summary)
    failed = false
  } finally {
    // On a failure too: the rows done so far are worth their figures.
    log('')
    log(`--- summary${failed ? ' (only what was measured before the failure)' : ''} ---`)
    for (const line of summary) log(line)
    log(`${startLoad.replace('load average', 'load average at start')}; at the end ${loadAverage()} (includes this benchmark); ${fixed((performance.now() - started) / 60_000, 1)} min`)
  }
}

async function measureRows (rows: readonly Row[], opts: Options, workDir: string, summary: string[]): Promise<void> {
  const dataRows = rows.filter((r) => r !== 'idle')
  if (dataRows.length > 0) {
    const dp = await setUpDataPath(workDir, opts)
    const all = targets(dp)
    for (const t of Object.values(all)) await checkTarget(t, dp)
    if (await bHolds(dp)) throw new Error('node b holds the layer before any run: nothing would be relayed')
    const pick = (local: boolean, mirror: boolean): Target[] => [
      ...(local || mirror ? [all['spegel local']] : []),
      ...(local ? [all['nginx file']] : []),
      ...(mirror ? [all['spegel via b'], all['nginx relay']] : [])
    ]
    const medianOf = <R>(m: Map<TargetName, R[]>, name: TargetName, f: (r: R) => number): number => median((m.get(name) ?? []).map(f))

    const blobTargets = pick(rows.includes('blob-local'), rows.includes('blob-mirror'))
    if (blobTargets.length > 0) {
      const link = opts.linkMbit > 0 ? await limitSender(new URL(dp.a.spegel.registryUrl).hostname, opts.linkMbit) : undefined
      if (link !== undefined) log(`link: ${link.text}`)
      let b: Map<TargetName, BlobRun[]>
      try {
        b = await measureBlobs(dp, blobTargets, opts)
      } finally {
        await link?.remove()
      }
      const mbps = (n: TargetName): number => medianOf(b, n, (r) => r.mbPerSecond)
      const cpu = (n: TargetName): string => fixed(medianOf(b, n, (r) => r.serverCpuPerGiB), 2)
      const head = `(${opts.sizeMib} MiB, median of ${opts.runs})`
      if (rows.includes('blob-local')) {
        summary.push(`blob GET local ${head}: spegel ${fmt0(mbps('spegel local'))} MB/s, nginx ${fmt0(mbps('nginx file'))} MB/s, ` +
          `ratio ${ratio(mbps('spegel local'), mbps('nginx file'))} (goal >= ${GOALS.blobLocal}); server CPU s/GiB: spegel ${cpu('spegel local')}, nginx ${cpu('nginx file')}`)
      }
      if (rows.includes('blob-mirror')) {
        const x = mbps('spegel via b')
        summary.push(`blob GET via mirror ${head}${opts.unverifiedRelay ? ', relay unverified' : ''}${opts.linkMbit > 0 ? `, node a behind a ${opts.linkMbit} Mbit/s link` : ''}: spegel ${fmt0(x)} MB/s, one hop ${fmt0(mbps('spegel local'))}, nginx relay ${fmt0(mbps('nginx relay'))}: ` +
          `ratio ${ratio(x, mbps('spegel local'))}, ${ratio(x, mbps('nginx relay'))} (goals >= ${GOALS.blobMirrorOfOneHop}, >= ${GOALS.blobMirrorOfNginx.toFixed(1)}); ` +
          `relaying node CPU s/GiB: spegel ${cpu('spegel via b')} (main thread ${fixed(medianOf(b, 'spegel via b', (r) => r.mainThreadCpuPerGiB ?? Number.NaN), 2)}), nginx ${cpu('nginx relay')} ` +
          `(holder a behind them: ${fixed(medianOf(b, 'spegel via b', (r) => r.originCpuPerGiB ?? Number.NaN), 2)}, ${fixed(medianOf(b, 'nginx relay', (r) => r.originCpuPerGiB ?? Number.NaN), 2)}); ` +
          // The one-hop goal asks a relay to cost the client 15 % at most; nginx's relay of the same
          // holder, printed against the same one hop, says how far any relay gets on this machine.
          `nginx relay itself: ${ratio(mbps('nginx relay'), mbps('spegel local'))} of one hop`)
      }
    }
    const headTargets = pick(rows.includes('head-local'), rows.includes('head-mirror'))
    if (headTargets.length > 0) {
      const h = await measureHeads(dp, headTargets, opts)
      const rps = (n: TargetName): number => medianOf(h, n, (r) => r.requestsPerSecond)
      const head = `(ab -k -i -c16 ${opts.abSeconds} s, median of ${opts.runs})`
      if (rows.includes('head-local')) {
        summary.push(`HEAD manifest local ${head}: spegel ${fmt0(rps('spegel local'))} req/s, nginx ${fmt0(rps('nginx file'))} req/s, ratio ${ratio(rps('spegel local'), rps('nginx file'))} (goal >= ${GOALS.headLocal})`)
      }
      if (rows.includes('head-mirror')) {
        summary.push(`HEAD manifest via mirror ${head}: spegel ${fmt0(rps('spegel via b'))} req/s, nginx relay ${fmt0(rps('nginx relay'))} req/s, ` +
          `ratio ${ratio(rps('spegel via b'), rps('nginx relay'))} (goal >= ${GOALS.headMirror}); one hop ${fmt0(rps('spegel local'))} req/s`)
      }
    }
    await dp.teardown()
  }

  if (rows.includes('idle')) {
    log(`\n== idle: ${opts.nodes} nodes x ${opts.keys} keys, ${opts.idleSeconds} s window after a ${opts.settleSeconds} s settle ==`)
    // Router processes first: quick, and the issue's own measure.
    if (opts.idleNodes.includes('router')) {
      const r = await idleRouter(opts)
      summary.push(idleSummary(`idle ${opts.nodes} router processes x ${opts.keys} keys (as the issue), ${opts.settleSeconds} s after sync${opts.ownBinary ? ', a node binary each' : ''}`, r))
    }
    if (opts.idleNodes.includes('full')) {
      const r = await idleFull(opts, workDir)
      summary.push(idleSummary(`idle ${opts.nodes} full spegel-ts nodes x ${opts.keys} keys, ${opts.settleSeconds} s after sync${opts.ownBinary ? ', a node binary each' : ''}`, r))
    }
  }
}

runBenchmark('datapath', main)
