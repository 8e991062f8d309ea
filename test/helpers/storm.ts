/**
 * Pull-storm wiring shared by test/integration/pull-storm.test.ts and bench/pull-storm.ts: a
 * cluster (test/helpers/cluster.ts) whose containerds get hosts.toml from `spegel configuration`
 * (this node's spegel first, then the node's own port of the counting upstream), images pushed
 * to that upstream, and N pulls at once (or staggered) with their times and a digest check.
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { startCluster, type Cluster, type ClusterNode } from './cluster.js'
import { criClient } from './cri.js'
import { buildImage, type BuiltImage } from './image.js'
import { httpRequest, run } from './net.js'
import { MAIN_JS } from './spegel.js'
import { imageBlobBytes, type Upstream } from './upstream.js'

/** The made-up registry name in refs; each node's hosts.toml sends it to its own upstream port. */
export const STORM_REGISTRY = 'storm.test'
export const STORM_REPO = 'storm/app'

/**
 * `on`: the pull-storm feature as shipped (`--pull-storm-wait` at its default, or `STORM_WAIT`);
 * `off`: `--pull-storm-wait=0s`. When the node does not know the flag yet, neither passes it,
 * so both are today's behaviour (the `off` baseline); `pullStormFlagSupported` says which.
 */
export type StormMode = 'on' | 'off'
export const STORM_WAIT_FLAG = '--pull-storm-wait'

let flagSupported: boolean | undefined

/** Whether this build's `spegel registry` knows --pull-storm-wait (asked once, from --help). */
export async function pullStormFlagSupported (): Promise<boolean> {
  if (flagSupported !== undefined) return flagSupported
  const res = await run(process.execPath, [MAIN_JS, 'registry', '--help'], { timeoutMs: 30_000 })
  flagSupported = res.stdout.includes(STORM_WAIT_FLAG)
  return flagSupported
}

/** The spegel registry flags for a mode; `wait` (e.g. '2s') overrides the node's default for `on`. */
export async function pullStormArgs (mode: StormMode, wait?: string): Promise<string[]> {
  if (!(await pullStormFlagSupported())) return []
  if (mode === 'off') return [`${STORM_WAIT_FLAG}=0s`]
  return wait === undefined ? [] : [`${STORM_WAIT_FLAG}=${wait}`]
}

/**
 * Replaces the node's hosts.toml for STORM_REGISTRY by what `spegel configuration` writes (the
 * DaemonSet's init container), mirror = this node's spegel. `spegel configuration` derives
 * `server` from the registry name (http://storm.test); a real node resolves that name to the
 * registry through DNS, here the line is pointed at the node's own upstream port instead, the
 * one edit made to its output.
 */
export async function configureHostsWithSpegel (node: ClusterNode, upstreamUrl: string): Promise<string> {
  const configPath = node.containerd.configPath
  await rm(path.join(configPath, STORM_REGISTRY), { recursive: true, force: true })
  const res = await run(process.execPath, [MAIN_JS, 'configuration', '--containerd-registry-config-path', configPath,
    '--mirror-targets', node.spegel.registryUrl, '--mirrored-registries', `http://${STORM_REGISTRY}`], {
    timeoutMs: 30_000,
    env: { ...process.env, SPEGEL_BASIC_AUTH_DIR: '/nonexistent-basic-auth' }
  })
  if (res.code !== 0) throw new Error(`spegel configuration for ${node.name} failed (${res.code ?? res.signal}): ${res.stderr}`)
  const file = path.join(configPath, STORM_REGISTRY, 'hosts.toml')
  const written = await readFile(file, 'utf8')
  const server = `server = 'http://${STORM_REGISTRY}'`
  if (!written.startsWith(server) || !written.includes(`[host.'${node.spegel.registryUrl}']`)) {
    throw new Error(`unexpected hosts.toml from spegel configuration for ${node.name}:\n${written}`)
  }
  const toml = written.replace(server, `server = '${upstreamUrl}'`)
  await writeFile(file, toml)
  return toml
}

export interface StormClusterInit {
  nodes: number
  upstream: Upstream
  mode: StormMode
  /** For mode `on`: the --pull-storm-wait value (default: the node's own default). */
  wait?: string
  logLevel?: string
  extraArgs?: string[]
}

/** A cluster with one upstream port per node (node i -> upstream.nodeUrl(i)), hosts.toml by `spegel configuration`, every node ready. */
export async function startStormCluster (init: StormClusterInit): Promise<Cluster> {
  if (init.upstream.nodeCount < init.nodes) throw new Error(`upstream has ${init.upstream.nodeCount} node ports, cluster wants ${init.nodes}`)
  const stormArgs = await pullStormArgs(init.mode, init.wait)
  const cluster = await startCluster(init.nodes, {
    nodeOptions: (i) => ({
      mirroredRegistry: STORM_REGISTRY,
      upstream: init.upstream.nodeUrl(i),
      extraArgs: ['--log-level', init.logLevel ?? 'INFO', ...stormArgs, ...(init.extraArgs ?? [])]
    })
  })
  try {
    for (const [i, node] of cluster.nodes.entries()) {
      await node.spegel.waitReady(60_000)
      await configureHostsWithSpegel(node, init.upstream.nodeUrl(i))
    }
  } catch (err) {
    await cluster.dispose()
    throw err
  }
  return cluster
}

export interface StormImage {
  readonly image: BuiltImage
  readonly ref: string
  /** Config + layers: what one copy of the image costs upstream. */
  readonly blobBytes: number
}

/** Builds a fresh image (unique digests) of `layers` × `layerBytes`, pushes it, deletes the local layout. */
export async function pushStormImage (upstream: Upstream, workDir: string, tag: string, layers: number, layerBytes: number): Promise<StormImage> {
  const dir = path.join(workDir, `image-${tag}`)
  await mkdir(dir, { recursive: true })
  const ref = `${STORM_REGISTRY}/${STORM_REPO}:${tag}`
  const image = await buildImage(dir, ref, new Array<number>(layers).fill(layerBytes), { archive: false })
  try {
    await upstream.push(image, STORM_REPO)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
  return { image, ref, blobBytes: imageBlobBytes(image) }
}

export type PullVia = 'ctr' | 'cri'

export interface PullResult {
  readonly node: string
  readonly via: PullVia
  readonly ok: boolean
  /** From the start of this node's pull to its end (ms), also for a failed pull. */
  readonly ms: number
  readonly error?: string
}

export async function pullOn (node: ClusterNode, ref: string, via: PullVia, timeoutMs = 600_000): Promise<PullResult> {
  const started = performance.now()
  try {
    if (via === 'ctr') {
      await node.containerd.ctr(['images', 'pull', '--hosts-dir', node.containerd.configPath, ref], { timeoutMs })
    } else {
      const cri = criClient(node.containerd.socketPath)
      try {
        await cri.pullImage(ref, { timeoutMs })
      } finally {
        cri.close()
      }
    }
    return { node: node.name, via, ok: true, ms: performance.now() - started }
  } catch (err) {
    return { node: node.name, via, ok: false, ms: performance.now() - started, error: err instanceof Error ? err.message : String(err) }
  }
}

export interface StormPullOptions {
  /** Delay between the starts of consecutive nodes (0 = all at once). */
  staggerMs?: number
  /** How each node pulls (default ctr). */
  via?: (index: number) => PullVia
  timeoutMs?: number
}

/** Every node pulls `ref`, node i starting i × staggerMs after the first; never rejects. */
export async function pullEverywhere (nodes: readonly ClusterNode[], ref: string, opts: StormPullOptions = {}): Promise<PullResult[]> {
  const stagger = opts.staggerMs ?? 0
  return await Promise.all(nodes.map(async (node, i) => {
    if (stagger > 0 && i > 0) await new Promise((resolve) => setTimeout(resolve, i * stagger))
    return await pullOn(node, ref, opts.via?.(i) ?? 'ctr', opts.timeoutMs)
  }))
}

/** Problems with the node's copy of the image: each blob must be in the content store and hash to its digest. */
export async function blobProblems (node: ClusterNode, image: BuiltImage): Promise<string[]> {
  const problems: string[] = []
  for (const digest of image.allDigests()) {
    const file = path.join(node.containerd.contentPath, 'blobs', 'sha256', digest.slice('sha256:'.length))
    try {
      const hash = createHash('sha256')
      for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
      const got = `sha256:${hash.digest('hex')}`
      if (got !== digest) problems.push(`${node.name}: ${digest} hashes to ${got}`)
    } catch (err) {
      problems.push(`${node.name}: ${digest} missing (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
    }
  }
  return problems
}

/**
 * The nodes' `spegel_pull_storm_waits_total` by outcome (source, chosen, timeout, busy), summed
 * over `nodes`; empty when the build has no such metric. Take one before and one after a storm.
 */
export async function stormOutcomes (nodes: readonly ClusterNode[]): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  for (const node of nodes) {
    const res = await httpRequest(`${node.spegel.metricsUrl}/metrics`, { method: 'GET', timeoutMs: 10_000 }).catch(() => undefined)
    for (const m of (res?.body.toString('utf8') ?? '').matchAll(/^spegel_pull_storm_waits_total\{[^}]*outcome="([^"]+)"[^}]*\} ([\d.e+]+)$/gm)) {
      out.set(m[1]!, (out.get(m[1]!) ?? 0) + Number(m[2]))
    }
  }
  return out
}
