/**
 * Scale test of the P2P router: 30 node processes on 127.0.0.10..39, each bootstrapping from 3
 * random earlier nodes. Every node must converge to the full index (every record, every key),
 * and a SIGKILLed node must vanish from every other node within the expiry bound.
 *
 * Knobs (env): SCALE_NODES (30), SCALE_KEYS (200 per node), SCALE_STAGGER_MS (100),
 * SCALE_RESULT_FILE (write the measured figures as JSON there).
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { after, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createLogger } from '../../src/observability/logger.js'
import { DEFAULT_EXPIRY_MS } from '../../src/routing/p2p/constants.js'
import { loadOrCreatePrivateKey } from '../../src/routing/p2p/identity.js'
import { freePort } from '../helpers/net.js'
import { waitFor } from '../helpers/wait.js'
import type { NodeConfig } from '../scale/node.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const NODE_JS = path.resolve(here, '../scale/node.js')
const N = Number(process.env.SCALE_NODES ?? 30)
const KEYS = Number(process.env.SCALE_KEYS ?? 200)
const STAGGER_MS = Number(process.env.SCALE_STAGGER_MS ?? 100)
const CONVERGE_DEADLINE_MS = 120_000
/** The expiry bound plus a few status ticks. */
const DROP_DEADLINE_MS = DEFAULT_EXPIRY_MS + 15_000
const STATUS_INTERVAL_MS = 250

interface Status {
  event: 'status'
  index: number
  t: number
  ready: boolean
  peers: number
  records: number
  keys: number
  origins: string[]
  unproven?: string[]
  probeFound: number
  rssBytes: number
  cpu: { user: number, system: number }
  counters: Record<string, number>
}

interface Node {
  index: number
  peerId: string
  host: string
  child?: ChildProcess
  latest?: Status
  statuses: Status[]
  stderr: string
  exited: boolean
  /** When the node's router was up (its `started` line). */
  startedAt?: number
}

const children = new Set<ChildProcess>()
const killAll = (): void => { for (const c of children) c.kill('SIGKILL') }
process.once('exit', killAll)
after(killAll)

it(`${N} router processes converge to the full index, and a killed node disappears`, { timeout: 300_000 }, async (t) => {
  assert.ok(existsSync(NODE_JS), `${NODE_JS} is missing; build with npx tsc -p tsconfig.json`)
  const dir = await mkdtemp(path.join(tmpdir(), 'spegel-scale-'))
  t.after(async () => {
    killAll()
    await rm(dir, { recursive: true, force: true })
  })
  const port = await freePort('127.0.0.10')
  const log = createLogger({ level: 'silent' })

  // Identities made up front, so every node's static bootstrap list can name its peers' ids
  // before they start (the real retry path then covers peers that are not up yet).
  const nodes: Node[] = []
  for (let i = 0; i < N; i++) {
    const dataDir = path.join(dir, `node-${i}`)
    const key = await loadOrCreatePrivateKey(dataDir, log)
    nodes.push({ index: i, peerId: peerIdFromPrivateKey(key).toString(), host: `127.0.0.${10 + i}`, statuses: [], stderr: '', exited: false })
  }
  const addrOf = (n: Node): string => `/ip4/${n.host}/tcp/${port}/p2p/${n.peerId}`

  const firstSpawn = Date.now()
  for (const node of nodes) {
    const earlier = nodes.slice(0, node.index)
    const peers = shuffle([...earlier]).slice(0, 3).map(addrOf)
    const cfg: NodeConfig = {
      index: node.index,
      host: node.host,
      port,
      dataDir: path.join(dir, `node-${node.index}`),
      peers,
      keys: KEYS,
      statusIntervalMs: STATUS_INTERVAL_MS,
      probeIndex: (node.index + 1) % N,
      ...(process.env.SCALE_LOG_LEVEL === undefined ? {} : { logLevel: process.env.SCALE_LOG_LEVEL })
    }
    const child = spawn(process.execPath, [NODE_JS, JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'pipe'] })
    children.add(child)
    node.child = child
    child.once('exit', () => { node.exited = true; children.delete(child) })
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => { node.stderr = (node.stderr + chunk).slice(-2_000_000) })
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let msg: { event?: string }
      try {
        msg = JSON.parse(line) as { event?: string }
      } catch {
        return // not ours (a stray library print); the status lines are what matter
      }
      if (msg.event === 'started') node.startedAt = (msg as { t: number }).t
      if (msg.event === 'status') {
        node.latest = msg as Status
        node.statuses.push(msg as Status)
        if (node.statuses.length > 4000) node.statuses.splice(0, 2000)
      }
    })
    await delay(STAGGER_MS)
  }
  const lastSpawn = Date.now()

  const failFast = (): void => {
    const dead = nodes.filter((n) => n.exited)
    if (dead.length > 0) throw new Error(`node ${dead[0]?.index} exited early: ${dead[0]?.stderr ?? ''}`)
  }
  const converged = (n: Node): boolean => {
    const s = n.latest
    return s !== undefined && s.ready && s.origins.length === N - 1 && s.keys === (N - 1) * KEYS && s.probeFound === 1
  }
  const convergedAt = new Map<number, number>()
  await waitFor(() => {
    failFast()
    for (const n of nodes) if (!convergedAt.has(n.index) && converged(n)) convergedAt.set(n.index, n.latest?.t ?? Date.now())
    return nodes.every(converged)
  }, {
    timeoutMs: CONVERGE_DEADLINE_MS,
    intervalMs: 100,
    what: `all ${N} nodes to hold ${N - 1} other records and ${(N - 1) * KEYS} keys`
  }).catch((err: Error) => {
    const behind = nodes.filter((n) => !converged(n)).map((n) => ({
      index: n.index,
      missing: nodes.filter((o) => o !== n && !(n.latest?.origins ?? []).includes(o.peerId)).map((o) => o.index),
      keys: n.latest?.keys,
      unproven: (n.latest?.unproven ?? []).map((id) => nodes.find((o) => o.peerId === id)?.index),
      probeFound: n.latest?.probeFound,
      ready: n.latest?.ready,
      peers: n.latest?.peers,
      counters: n.latest?.counters,
      stderrTail: n.stderr.slice(-2_000)
    }))
    if (process.env.SCALE_DEBUG_DIR !== undefined) {
      for (const n of nodes) void writeFile(path.join(process.env.SCALE_DEBUG_DIR, `node-${n.index}.log`), `${n.peerId}\n${n.stderr}`)
    }
    throw new Error(`${err.message}\n${JSON.stringify(behind, null, 1)}`)
  })
  const allConverged = Math.max(...convergedAt.values())
  if (process.env.SCALE_DEBUG_DIR !== undefined) {
    for (const n of nodes) await writeFile(path.join(process.env.SCALE_DEBUG_DIR, `node-${n.index}.log`), `${n.peerId}\n${n.stderr}`)
    for (const n of nodes) await writeFile(path.join(process.env.SCALE_DEBUG_DIR, `status-${n.index}.jsonl`), n.statuses.map((s) => JSON.stringify({ ...s, origins: s.origins.length })).join('\n'))
    await writeFile(path.join(process.env.SCALE_DEBUG_DIR, 'converged.json'), JSON.stringify([...convergedAt].map(([i, at]) => ({ i, ms: at - lastSpawn }))))
  }

  // Idle figures over a few seconds of a converged cluster.
  const idleFrom = new Map(nodes.map((n) => [n.index, n.latest!]))
  await delay(5_000)
  const idle = nodes.map((n) => {
    const a = idleFrom.get(n.index)!
    const b = n.latest!
    const cpuUs = (b.cpu.user + b.cpu.system) - (a.cpu.user + a.cpu.system)
    return { cpuPercent: b.t > a.t ? cpuUs / 10 / (b.t - a.t) : 0, rssMb: b.rssBytes / 2 ** 20 }
  })

  // Crash a node in the middle of the bootstrap order (others dialled it, it dialled others).
  const victim = nodes[Math.floor(N / 2)]!
  const killedAt = Date.now()
  victim.child?.kill('SIGKILL')
  const others = nodes.filter((n) => n !== victim)
  const droppedAt = new Map<number, number>()
  await waitFor(() => {
    for (const n of others) {
      if (n.exited) throw new Error(`node ${n.index} exited: ${n.stderr}`)
      const s = n.latest
      if (!droppedAt.has(n.index) && s !== undefined && s.t > killedAt && !s.origins.includes(victim.peerId)) droppedAt.set(n.index, s.t)
    }
    return droppedAt.size === others.length
  }, { timeoutMs: DROP_DEADLINE_MS, intervalMs: 100, what: `every node to drop the killed node ${victim.index}` })
  // Once dropped, a node must not bring the dead record back (a late sync from a peer that heard of it later).
  await delay(2 * STATUS_INTERVAL_MS)
  for (const n of others) assert.ok(!n.latest!.origins.includes(victim.peerId), `node ${n.index} resurrected the killed node`)

  const drops = [...droppedAt.values()].map((v) => v - killedAt).sort((a, b) => a - b)
  const result = {
    nodes: N,
    keysPerNode: KEYS,
    spawnMs: lastSpawn - firstSpawn,
    convergedAfterFirstSpawnMs: allConverged - firstSpawn,
    convergedAfterLastSpawnMs: allConverged - lastSpawn,
    // Process start-up (loading libp2p) on 2 shared cores dominates the figures above; this one is the protocol's.
    convergedAfterLastRouterUpMs: allConverged - Math.max(...nodes.map((n) => n.startedAt ?? 0)),
    killDropMs: { min: drops[0], p50: drops[Math.floor(drops.length / 2)], max: drops[drops.length - 1] },
    expiryMs: DEFAULT_EXPIRY_MS,
    idleCpuPercent: { mean: round(mean(idle.map((i) => i.cpuPercent))), max: round(Math.max(...idle.map((i) => i.cpuPercent))) },
    rssMb: { mean: round(mean(idle.map((i) => i.rssMb))), max: round(Math.max(...idle.map((i) => i.rssMb))) },
    connections: { min: Math.min(...others.map((n) => n.latest!.peers)), max: Math.max(...others.map((n) => n.latest!.peers)) }
  }
  t.diagnostic(JSON.stringify(result))
  if (process.env.SCALE_RESULT_FILE !== undefined) await writeFile(process.env.SCALE_RESULT_FILE, JSON.stringify(result, null, 2))

  // Graceful stop of the rest: each says goodbye and exits on its own.
  await Promise.all(others.map(async (n) => {
    if (n.child === undefined || n.exited) return
    const exited = once(n.child, 'exit')
    n.child.kill('SIGTERM')
    await Promise.race([exited, delay(15_000).then(() => { n.child?.kill('SIGKILL') })])
  }))
})

function shuffle<T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const tmp = items[i] as T
    items[i] = items[j] as T
    items[j] = tmp
  }
  return items
}

function mean (xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
}

function round (x: number): number {
  return Math.round(x * 10) / 10
}
