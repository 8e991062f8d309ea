import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { startContainerd, type ContainerdInstance } from './containerd.js'
import { freePort, httpRequest } from './net.js'
import { startSpegel, type SpegelNode } from './spegel.js'

export interface ClusterNode {
  readonly name: string
  readonly host: string
  readonly dataDir: string
  readonly containerd: ContainerdInstance
  spegel: SpegelNode
  peerId: string
  /** Starts spegel again on the same addresses and data dir (after stop or kill). */
  restartSpegel(): Promise<void>
}

export interface NodeOptions {
  extraArgs?: string[]
  /** Point this node's containerd at its own spegel for `registry` (default example.test). */
  mirroredRegistry?: string
  /** The registry's `server` in hosts.toml; default an address that refuses connections (upstream down). */
  upstream?: string
  containerdSock?: string
  /** Run the image's bundle rather than the modules (SpegelNodeInit.bundle). */
  bundle?: boolean
}

export interface Cluster {
  readonly nodes: ClusterNode[]
  readonly bootstrapUrl: string
  addNode(options?: NodeOptions): Promise<ClusterNode>
  dispose(): Promise<void>
}

/** Debug view of a node (metrics port): which peers it would ask for `key`. */
export async function lookupPeers (node: ClusterNode, key: string): Promise<string[]> {
  const res = await httpRequest(`${node.spegel.metricsUrl}/debug/lookup?key=${encodeURIComponent(key)}`, { method: 'GET' })
  if (res.status !== 200) throw new Error(`lookup on ${node.name}: ${res.status} ${res.body.toString()}`)
  return (JSON.parse(res.body.toString()) as { peers: Array<{ id: string }> }).peers.map((p) => p.id)
}

export async function routerStatus (node: ClusterNode): Promise<{ records: number, keys: number, peers: number, isReady: boolean }> {
  const res = await httpRequest(`${node.spegel.metricsUrl}/debug/status`, { method: 'GET' })
  return (JSON.parse(res.body.toString()) as { router: { records: number, keys: number, peers: number, isReady: boolean } }).router
}

/**
 * Nodes on distinct loopback addresses, each a private containerd and a spegel-ts process,
 * joined through the first node's HTTP bootstrap endpoint. Each containerd's hosts.toml
 * points at its own node, with an upstream that refuses connections.
 */
export async function startCluster (count: number, init: { firstHost?: number, nodeOptions?: (index: number) => NodeOptions } = {}): Promise<Cluster> {
  const workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-cluster-'))
  const base = init.firstHost ?? 20 + Math.floor(Math.random() * 200)
  const firstHost = `127.0.${base}.1`
  const bootstrapPort = await freePort(firstHost)
  const bootstrapUrl = `http://${firstHost}:${bootstrapPort}/id`
  const nodes: ClusterNode[] = []

  const addNode = async (options: NodeOptions = {}): Promise<ClusterNode> => {
    const index = nodes.length
    const host = `127.0.${base}.${index + 1}`
    const name = `node${index + 1}`
    const dataDir = path.join(workDir, name)
    await fs.mkdir(dataDir, { recursive: true })
    const containerd = await startContainerd({ name })
    const registryPort = await freePort(host)
    const routerPort = await freePort(host)
    const metricsPort = await freePort(host)
    const bootstrapArgs = ['--bootstrap-kind', 'http', '--http-bootstrap-url', bootstrapUrl,
      ...(index === 0 ? ['--http-bootstrap-addr', `${host}:${bootstrapPort}`] : [])]
    const launch = async (): Promise<SpegelNode> => await startSpegel({
      host,
      registryPort,
      routerPort,
      metricsPort,
      containerdSock: options.containerdSock ?? containerd.socketPath,
      contentPath: containerd.contentPath,
      bootstrapArgs,
      bundle: options.bundle,
      extraArgs: ['--data-dir', dataDir, '--containerd-config', containerd.configFile, '--containerd-registry-config-path', containerd.configPath, ...(options.extraArgs ?? [])]
    })
    let spegel: SpegelNode
    let running
    try {
      spegel = await launch()
      running = await spegel.waitForLog((l) => l.msg === 'running spegel', 'running spegel').catch(async (err: unknown) => {
        await spegel.stop()
        throw err
      })
    } catch (err) {
      await containerd.dispose()
      throw err
    }
    const registry = options.mirroredRegistry ?? 'example.test'
    const hostsDir = path.join(containerd.configPath, registry)
    await fs.mkdir(hostsDir, { recursive: true })
    await fs.writeFile(path.join(hostsDir, 'hosts.toml'), [
      `server = "${options.upstream ?? 'http://127.0.0.1:9'}"`,
      '',
      `[host."${spegel.registryUrl}"]`,
      '  capabilities = ["pull", "resolve"]',
      ''
    ].join('\n'))
    const node: ClusterNode = {
      name,
      host,
      dataDir,
      containerd,
      spegel,
      peerId: String(running.peerId),
      async restartSpegel () {
        await node.spegel.stop()
        node.spegel = await launch()
        const again = await node.spegel.waitForLog((l) => l.msg === 'running spegel', 'running spegel')
        node.peerId = String(again.peerId)
      }
    }
    nodes.push(node)
    return node
  }

  const dispose = async (): Promise<void> => {
    for (const node of nodes) await node.spegel.stop().catch(() => undefined)
    for (const node of nodes) await node.containerd.dispose()
    await fs.rm(workDir, { recursive: true, force: true })
  }
  try {
    for (let i = 0; i < count; i++) await addNode(init.nodeOptions?.(i))
  } catch (err) {
    // Nothing may outlive a failed start: a stray node process keeps the test runner alive.
    await dispose()
    throw err
  }
  return { nodes, bootstrapUrl, addNode, dispose }
}
