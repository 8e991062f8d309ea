// Dead peers leave every node's lookups at once; live ones never do. Three real nodes (each a
// private containerd and a spegel-ts process on its own loopback address) hold one image; one
// of them is killed, frozen, cut off or loaded, and the others' lookups (the debug view over
// HTTP that the mirror's own lookups match) are watched.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { containerdAvailable } from '../helpers/containerd.js'
import { buildImage, type BuiltImage } from '../helpers/image.js'
import { digestOf, httpRequest, run } from '../helpers/net.js'
import { lookupPeers, startCluster, type Cluster, type ClusterNode } from '../helpers/cluster.js'
import { waitFor } from '../helpers/wait.js'

const skip = containerdAvailable() ? false : 'needs root and containerd (scripts/test-all.sh installs it)'
const MiB = 1024 * 1024
/** Generous: the aim is seconds (a prompt dial), heartbeat expiry would take 20 s. */
const GONE_DEADLINE_MS = 15_000

/** Lines a node logged about `peer` with `event`, from index `from` of its log on. */
function events (node: ClusterNode, event: string, peer: string, from = 0): number {
  return node.spegel.logs.slice(from).filter((l) => l.event === event && l.peer === peer).length
}

/** `observer` has an open router connection to `node` (its live page's view of its peers). */
async function isConnected (observer: ClusterNode, node: ClusterNode): Promise<boolean> {
  return (await peerViews(observer)).find((p) => p.id === node.peerId)?.isConnected === true
}

async function peerViews (node: ClusterNode): Promise<Array<{ id: string, lastHeardMs?: number, isConnected: boolean }>> {
  const res = await httpRequest(`${node.spegel.metricsUrl}/debug/web/api/status`)
  return (JSON.parse(res.body.toString()) as { peers: Array<{ id: string, lastHeardMs?: number, isConnected: boolean }> }).peers
}

describe('dead peers', { skip }, () => {
  let workDir: string
  let cluster: Cluster
  let image: BuiltImage
  let key: string

  /** Both other nodes offer `node` (or, with `isOffered` false, neither does). */
  const offeredBy = async (observers: ClusterNode[], node: ClusterNode, isOffered: boolean): Promise<boolean> => {
    for (const o of observers) if ((await lookupPeers(o, key)).includes(node.peerId) !== isOffered) return false
    return true
  }

  before(async () => {
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-deadpeer-'))
    image = await buildImage(path.join(workDir, 'app'), 'example.test/dead/app:1', [4096, 4 * MiB])
    key = image.top.digest
    cluster = await startCluster(3)
    for (const node of cluster.nodes) await node.spegel.waitReady(60_000)
    for (const node of cluster.nodes) await node.containerd.importImage(image.archivePath!)
    for (const node of cluster.nodes) {
      const others = cluster.nodes.filter((n) => n !== node)
      await waitFor(async () => await offeredBy(others, node, true), { timeoutMs: 20_000, what: `${node.name} offered by the others` })
    }
  })
  after(async () => {
    for (const node of cluster?.nodes ?? []) if (node.spegel.isAlive()) node.spegel.process.kill('SIGCONT')
    await cluster?.dispose()
    await fs.rm(workDir, { recursive: true, force: true })
  })

  it('never drops a live node from lookups while pulls load it', async (t) => {
    const [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode]
    const layer = image.platforms[0]!.layers[1]!
    const logFrom = [n2.spegel.logs.length, n3.spegel.logs.length]
    let requests = 0
    let isLoading = true
    // 16 clients pull the 4 MiB layer from node 1 until 160 pulls are done.
    const load = Promise.all(Array.from({ length: 16 }, async () => {
      while (requests < 160) {
        requests++
        const res = await httpRequest(`${n1.spegel.registryUrl}/v2/dead/app/blobs/${layer.digest}?ns=example.test`, { method: 'GET' })
        assert.equal(res.status, 200)
        assert.equal(digestOf(res.body), layer.digest)
      }
    })).finally(() => { isLoading = false })
    let lookups = 0
    const missing: string[] = []
    while (isLoading) {
      for (const o of [n2, n3]) {
        lookups++
        if (!(await lookupPeers(o, key)).includes(n1.peerId)) missing.push(`${o.name} at lookup ${lookups}`)
      }
    }
    await load
    t.diagnostic(`${requests} pulls of 4 MiB from node1, ${lookups} lookups on node2 and node3 meanwhile, node1 missing from ${missing.length}`)
    assert.deepEqual(missing, [], 'node1 is offered by every lookup')
    assert.equal(events(n2, 'peer_suspected', n1.peerId, logFrom[0]) + events(n3, 'peer_suspected', n1.peerId, logFrom[1]), 0, 'nobody suspected node1')
  })

  it('keeps a frozen node (SIGSTOP, no connection closes) and offers it after SIGCONT', async (t) => {
    const [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode]
    const logFrom = [n1.spegel.logs.length, n2.spegel.logs.length]
    const pid = n3.spegel.process.pid!
    n3.spegel.process.kill('SIGSTOP')
    try {
      await waitFor(async () => /^\d+ \(.*\) T /.test(await fs.readFile(`/proc/${pid}/stat`, 'utf8')), { timeoutMs: 5000, what: 'node3 to be stopped' })
      // Frozen until node1 has missed a heartbeat (every 5 s) from it, and still offers it:
      // silent loss is left to the heartbeat expiry (20 s), a frozen node's connections stay up.
      await waitFor(async () => {
        const heard = (await peerViews(n1)).find((p) => p.id === n3.peerId)?.lastHeardMs
        return heard !== undefined && Date.now() - heard > 6_000
      }, { timeoutMs: 15_000, intervalMs: 200, what: 'node1 to miss a heartbeat of the frozen node3' })
      assert.ok(await offeredBy([n1, n2], n3, true), 'still offered while frozen (its connections are up)')
    } finally {
      n3.spegel.process.kill('SIGCONT')
    }
    const resumed = performance.now()
    await waitFor(async () => await offeredBy([n1, n2], n3, true), { timeoutMs: GONE_DEADLINE_MS, what: 'node3 offered after SIGCONT' })
    t.diagnostic(`node3 offered by node1 and node2 ${(performance.now() - resumed).toFixed(0)} ms after SIGCONT`)
    assert.equal(events(n1, 'peer_suspected', n3.peerId, logFrom[0]) + events(n2, 'peer_suspected', n3.peerId, logFrom[1]), 0, 'a node with a connection up is never suspected')
  })

  it('offers a node again right after its connections were reset (ss -K)', async (t) => {
    const [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode]
    const logFrom = [n1.spegel.logs.length, n2.spegel.logs.length]
    // Every established TCP connection of node3's address (its router's, in and out; not its
    // listeners): both ends see the connection aborted, as when a middlebox resets it.
    const killed = await run('ss', ['-K', '-t', '-n', 'state', 'established', `( src ${n3.host} or dst ${n3.host} )`])
    if (killed.code !== 0 || !killed.stdout.includes(`${n3.host}:`)) {
      // SOCK_DESTROY needs a kernel built with inet_diag destroy support.
      t.skip(`ss -K reset nothing here (${killed.stderr.trim() || 'no socket listed'})`)
      return
    }
    const reset = performance.now()
    let absentPolls = 0
    await waitFor(async () => {
      const isBack = await offeredBy([n1, n2], n3, true)
      if (!isBack) absentPolls++
      return isBack && await isConnected(n1, n3) && await isConnected(n2, n3)
    }, { timeoutMs: 10_000, intervalMs: 20, what: 'node3 offered and connected again' })
    const cut = [n1, n2].filter((o, i) => o.spegel.logs.slice(logFrom[i]).some((l) => l.msg === 'connection to peer cut: checking it' && l.peer === n3.peerId))
    assert.ok(cut.length > 0, 'the reset was seen as a cut connection (not an orderly close), and checked')
    const suspected = events(n1, 'peer_suspected', n3.peerId, logFrom[0]) + events(n2, 'peer_suspected', n3.peerId, logFrom[1])
    t.diagnostic(`after the reset: node3 offered and reconnected within ${(performance.now() - reset).toFixed(0)} ms; lookups without it: ${absentPolls}; suspected by ${suspected} node(s)`)
  })

  it('drops a SIGKILLed node from every lookup within seconds, and offers it again once restarted', async (t) => {
    const [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode]
    assert.ok(await offeredBy([n1, n2], n3, true), 'node3 offered before the kill')
    const killedAt = performance.now()
    n3.spegel.process.kill('SIGKILL')
    const goneMs = new Map<string, number>()
    await waitFor(async () => {
      for (const o of [n1, n2]) {
        if (!goneMs.has(o.name) && !(await lookupPeers(o, key)).includes(n3.peerId)) goneMs.set(o.name, performance.now() - killedAt)
      }
      return goneMs.size === 2
    }, { timeoutMs: GONE_DEADLINE_MS, intervalMs: 20, what: 'node1 and node2 to stop offering the killed node3' })
    t.diagnostic(`SIGKILL -> gone from lookups: ${[...goneMs].map(([name, ms]) => `${name} ${ms.toFixed(0)} ms`).join(', ')} (heartbeat expiry alone: 20 s)`)
    // It stays gone: hearsay between the survivors does not bring it back.
    assert.ok(await offeredBy([n1, n2], n3, false))

    await n3.restartSpegel()
    await n3.spegel.waitReady(60_000)
    const restarted = performance.now()
    await waitFor(async () => await offeredBy([n1, n2], n3, true), { timeoutMs: 20_000, what: 'the restarted node3 offered again' })
    t.diagnostic(`restarted node3 offered by node1 and node2 ${(performance.now() - restarted).toFixed(0)} ms after it was ready`)
  })
})
