// Several nodes on one machine, each a private containerd plus a spegel-ts process on its own
// loopback address. containerd pulls with ctr through its local node while upstream is down.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { containerdAvailable } from '../helpers/containerd.js'
import { buildImage, type BuiltImage } from '../helpers/image.js'
import { digestOf, httpRequest } from '../helpers/net.js'
import { lookupPeers, routerStatus, startCluster, type Cluster, type ClusterNode } from '../helpers/cluster.js'
import { waitFor } from '../helpers/wait.js'

const skip = containerdAvailable() ? false : 'needs root and containerd (scripts/test-all.sh installs it)'
const MiB = 1024 * 1024

async function contentDigests (node: ClusterNode): Promise<Set<string>> {
  const { stdout } = await node.containerd.ctr(['content', 'ls', '-q'])
  return new Set(stdout.split('\n').map((l) => l.trim()).filter((l) => l !== ''))
}

async function inflight (node: ClusterNode): Promise<number> {
  const res = await httpRequest(`${node.spegel.metricsUrl}/metrics`, { method: 'GET' }).catch(() => undefined)
  const match = /^http_requests_inflight\{handler="\/v2\/\*"\} (\d+)$/m.exec(res?.body.toString() ?? '')
  return Number(match?.[1] ?? 0)
}

describe('cluster: pulls across nodes with real containerd', { skip }, () => {
  let workDir: string
  let cluster: Cluster
  let app: BuiltImage
  let multi: BuiltImage

  before(async () => {
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-clustertest-'))
    app = await buildImage(path.join(workDir, 'app'), 'example.test/team/app:1.0', [4096, 3 * MiB, 24 * MiB])
    multi = await buildImage(path.join(workDir, 'multi'), 'example.test/team/multi:2.0', [64 * 1024], { multiarch: true })
    cluster = await startCluster(3)
    for (const node of cluster.nodes) await node.spegel.waitReady(60_000)
  })
  after(async () => {
    await cluster?.dispose()
    await fs.rm(workDir, { recursive: true, force: true })
  })

  it('makes an image imported on node 1 pullable through node 2 right away', async (t) => {
    const [n1, n2] = cluster.nodes
    await n1!.containerd.importImage(app.archivePath!)
    const imported = performance.now()
    await waitFor(async () => (await httpRequest(`${n2!.spegel.registryUrl}/v2/team/app/manifests/1.0?ns=example.test`, { method: 'HEAD' })).status === 200,
      { timeoutMs: 10_000, intervalMs: 10, what: 'node 2 to resolve the tag through a peer' })
    t.diagnostic(`import on node1 -> tag resolvable on node2: ${(performance.now() - imported).toFixed(0)} ms`)
  })

  it('pulls by tag on a node that lacks the image while upstream is unreachable', async () => {
    const n2 = cluster.nodes[1]!
    await n2.containerd.ctr(['images', 'pull', '--hosts-dir', n2.containerd.configPath, 'example.test/team/app:1.0'])
    const have = await contentDigests(n2)
    for (const d of app.allDigests()) assert.ok(have.has(d), `node2 has ${d}`)
  })

  it('pulls by digest on a third node', async () => {
    const n3 = cluster.nodes[2]!
    await n3.containerd.ctr(['images', 'pull', '--hosts-dir', n3.containerd.configPath, `example.test/team/app@${app.top.digest}`])
    const have = await contentDigests(n3)
    for (const d of app.allDigests()) assert.ok(have.has(d), `node3 has ${d}`)
  })

  it('pulls a multi-arch image: the index and this platform only', async () => {
    const [n1, , n3] = cluster.nodes
    await n1!.containerd.importImage(multi.archivePath!, { allPlatforms: true })
    await waitFor(async () => (await lookupPeers(n3!, 'example.test/team/multi:2.0')).length > 0, { timeoutMs: 10_000, what: 'multi-arch tag advertised' })
    await n3!.containerd.ctr(['images', 'pull', '--hosts-dir', n3!.containerd.configPath, 'example.test/team/multi:2.0'])
    const have = await contentDigests(n3!)
    const amd = multi.platforms.find((p) => p.architecture === 'amd64')!
    const arm = multi.platforms.find((p) => p.architecture === 'arm64')!
    for (const d of [multi.top.digest, amd.manifest.digest, amd.config.digest, ...amd.layers.map((l) => l.digest)]) assert.ok(have.has(d), `node3 has ${d}`)
    assert.ok(!have.has(arm.layers[0]!.digest), 'the other platform was not fetched')
  })

  it('detects a peer serving corrupted bytes and avoids it afterwards', async () => {
    const [n1, n2, n3] = cluster.nodes
    const image = await buildImage(path.join(workDir, 'corrupt'), 'example.test/team/corrupt:1', [2 * MiB])
    const layer = image.platforms[0]!.layers[0]!
    await n1!.containerd.importImage(image.archivePath!)
    // Flip bytes in node 1's copy on disk: node 1 now serves a blob that does not match its digest.
    const file = path.join(n1!.containerd.contentPath, 'blobs', 'sha256', layer.digest.slice('sha256:'.length))
    const handle = await fs.open(file, 'r+')
    await handle.write(Buffer.from('corrupted!'), 0, 10, Math.floor(layer.size / 2))
    await handle.close()
    await waitFor(async () => (await lookupPeers(n3!, layer.digest)).includes(n1!.peerId), { timeoutMs: 10_000, what: 'layer advertised by node1' })

    const url = `${n3!.spegel.registryUrl}/v2/team/corrupt/blobs/${layer.digest}`
    const first = await httpRequest(url, { method: 'GET' }).then((r) => ({ ok: r.status === 200 && digestOf(r.body) === layer.digest }), () => ({ ok: false }))
    assert.equal(first.ok, false, 'a corrupt blob is never delivered as a complete response')
    await n3!.spegel.waitForLog((l) => l.msg === 'peer served a blob that does not match its digest' && String(l.peer).includes(n1!.peerId), 'digest mismatch logged')

    // A healthy copy appears on node 2; node 3 must now get it from there, not from node 1.
    await n2!.containerd.importImage(image.archivePath!)
    await waitFor(async () => (await lookupPeers(n3!, layer.digest)).includes(n2!.peerId), { timeoutMs: 10_000, what: 'layer advertised by node2' })
    const before = n3!.spegel.logs.length
    const good = await httpRequest(url, { method: 'GET' })
    assert.equal(good.status, 200)
    assert.equal(digestOf(good.body), layer.digest)
    // The request line is logged when the response closes, just after the body arrived here.
    const served = await waitFor(() => n3!.spegel.logs.slice(before).find((l) => l.peer !== undefined && String(l.path).includes(layer.digest)),
      { timeoutMs: 5000, what: 'request log line of the healthy fetch' })
    assert.equal(served.peer, n2!.peerId, 'served by the healthy peer')
  })

  it('withdraws a node\'s content while its containerd is down and advertises it again after', async () => {
    const [n1, n2, n3] = cluster.nodes
    const key = app.top.digest
    await waitFor(async () => (await lookupPeers(n3!, key)).includes(n2!.peerId), { timeoutMs: 10_000, what: 'node2 advertises the app' })
    const pid = n2!.spegel.process.pid
    await n2!.containerd.kill()
    await waitFor(async () => !(await lookupPeers(n3!, key)).includes(n2!.peerId), { timeoutMs: 15_000, what: 'node2 content withdrawn' })
    assert.ok((await lookupPeers(n3!, key)).includes(n1!.peerId), 'node1 still advertises it')
    await n2!.containerd.start()
    await waitFor(async () => (await lookupPeers(n3!, key)).includes(n2!.peerId), { timeoutMs: 15_000, what: 'node2 content advertised again' })
    assert.equal(n2!.spegel.process.pid, pid, 'no process restart')
    assert.ok(n2!.spegel.isAlive())
  })

  it('finishes a pull from another node when the serving node is killed mid-transfer', async () => {
    const [n1, n2, n3] = cluster.nodes
    const big = await buildImage(path.join(workDir, 'big'), 'example.test/team/big:1', [4096, 384 * MiB])
    await n1!.containerd.importImage(big.archivePath!)
    await n2!.containerd.importImage(big.archivePath!)
    await waitFor(async () => (await lookupPeers(n3!, big.top.digest)).length === 2, { timeoutMs: 10_000, what: 'both holders advertised' })

    const pull = n3!.containerd.ctr(['images', 'pull', '--hosts-dir', n3!.containerd.configPath, 'example.test/team/big:1'], { timeoutMs: 300_000 })
    let pullDone = false
    void pull.then(() => { pullDone = true }, () => { pullDone = true })
    // Small blobs come and go within a poll or two; the big layer keeps a request open for seconds.
    const busyPolls = new Map<ClusterNode, number>()
    const serving = await waitFor(async () => {
      if (pullDone) throw new Error('the pull finished before a serving node could be killed')
      for (const node of [n1!, n2!]) {
        const busy = await inflight(node) > 0 ? (busyPolls.get(node) ?? 0) + 1 : 0
        busyPolls.set(node, busy)
        if (busy >= 10) return node
      }
      return undefined
    }, { timeoutMs: 60_000, intervalMs: 20, what: 'a node to be serving the big layer' })
    serving.spegel.process.kill('SIGKILL')
    await once(serving.spegel.process, 'exit')
    await pull
    const have = await contentDigests(n3!)
    for (const d of big.allDigests()) assert.ok(have.has(d), `node3 has ${d}`)
    assert.ok(n3!.spegel.logs.some((l) => l.msg === 'blob stream from peer failed, resuming'), 'the transfer resumed on another peer')

    // The killed node comes back with the same identity (--data-dir) and is found again.
    const oldId = serving.peerId
    await serving.restartSpegel()
    assert.equal(serving.peerId, oldId, 'identity kept across the restart')
    await serving.spegel.waitReady(30_000)
    await waitFor(async () => (await lookupPeers(n3!, big.top.digest)).includes(oldId), { timeoutMs: 20_000, what: 'restarted node advertised again' })
  })

  it('gives a late joiner the whole index', async () => {
    const late = await cluster.addNode()
    await late.spegel.waitReady(60_000)
    await waitFor(async () => (await routerStatus(late)).records >= 3, { timeoutMs: 20_000, what: 'late joiner to hold every record' })
    const holders = await lookupPeers(late, app.top.digest)
    assert.ok(holders.includes(cluster.nodes[0]!.peerId))
    await late.containerd.ctr(['images', 'pull', '--hosts-dir', late.containerd.configPath, 'example.test/team/app:1.0'])
  })

  it('drops a node that leaves at once, and a node that dies within the bound', async (t) => {
    const [n1, , n3] = cluster.nodes
    const late = cluster.nodes[3]!
    const key = app.top.digest
    for (const node of [n1!, n3!, late]) assert.ok(node.spegel.isAlive(), `${node.name} exited unexpectedly: ${node.spegel.stderrText().slice(-3000)}`)
    await waitFor(async () => (await lookupPeers(n1!, key)).includes(late.peerId), { timeoutMs: 15_000, what: 'late joiner advertises the app' })
    await waitFor(async () => (await lookupPeers(n1!, key)).includes(n3!.peerId), { timeoutMs: 15_000, what: 'node3 advertises the app' })

    let started = performance.now()
    await late.spegel.stop()
    await waitFor(async () => !(await lookupPeers(n1!, key)).includes(late.peerId), { timeoutMs: 10_000, intervalMs: 20, what: 'graceful leaver gone' })
    t.diagnostic(`graceful leave -> gone from node1's lookups: ${(performance.now() - started).toFixed(0)} ms`)

    started = performance.now()
    n3!.spegel.process.kill('SIGKILL')
    await waitFor(async () => !(await lookupPeers(n1!, key)).includes(n3!.peerId), { timeoutMs: 45_000, intervalMs: 100, what: 'killed node gone' })
    t.diagnostic(`SIGKILL -> gone from node1's lookups: ${(performance.now() - started).toFixed(0)} ms`)
  })
})

describe('cluster: a pre-shared key keeps other nodes out', { skip }, () => {
  it('lets nodes with the key share an index and keeps a node without it out', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-psk-'))
    const keyFile = path.join(dir, 'swarm.key')
    const { generatePskFile } = await import('../../src/routing/p2p/index.js')
    await generatePskFile(keyFile)
    const cluster = await startCluster(3, {
      nodeOptions: (i) => i < 2 ? { extraArgs: ['--router-secret-path', keyFile] } : {}
    })
    try {
      const image = await buildImage(path.join(dir, 'img'), 'example.test/psk/app:1', [4096])
      const [a, b, outsider] = cluster.nodes
      await a!.containerd.importImage(image.archivePath!)
      await waitFor(async () => (await lookupPeers(b!, image.top.digest)).includes(a!.peerId), { timeoutMs: 20_000, what: 'node with the key sees the content' })
      const status = await routerStatus(outsider!)
      assert.equal(status.records, 0, 'the node without the key holds no records')
      assert.deepEqual(await lookupPeers(outsider!, image.top.digest), [])
      const miss = await httpRequest(`${outsider!.spegel.registryUrl}/v2/psk/app/manifests/1?ns=example.test`, { method: 'HEAD' })
      assert.equal(miss.status, 404)
    } finally {
      await cluster.dispose()
      await fs.rm(dir, { recursive: true, force: true })
    }
  })
})

describe('cluster: registry filters', { skip }, () => {
  it('lets a filtered tag fall through to upstream while other tags come from peers', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-filter-'))
    // A stand-alone node with its own containerd plays the upstream registry.
    const upstream = await startCluster(1)
    let cluster: Cluster | undefined
    try {
      const image = await buildImage(path.join(dir, 'img'), 'example.test/team/app:latest', [4096])
      const up = upstream.nodes[0]!
      await up.containerd.importImage(image.archivePath!)
      await up.containerd.ctr(['images', 'tag', 'example.test/team/app:latest', 'example.test/team/app:1.0'])
      await up.spegel.waitReady(30_000)
      cluster = await startCluster(2, {
        nodeOptions: (i) => i === 1 ? { extraArgs: ['--registry-filters', ':latest$'], upstream: up.spegel.registryUrl } : {}
      })
      const [holder, filtered] = cluster.nodes
      await holder!.containerd.importImage(image.archivePath!)
      await holder!.containerd.ctr(['images', 'tag', 'example.test/team/app:latest', 'example.test/team/app:1.0'])
      await waitFor(async () => (await lookupPeers(filtered!, 'example.test/team/app:1.0')).length > 0, { timeoutMs: 20_000, what: 'tag advertised' })

      const upstreamBefore = up.spegel.logs.length
      await filtered!.containerd.ctr(['images', 'pull', '--hosts-dir', filtered!.containerd.configPath, 'example.test/team/app:latest'])
      const upstreamHits = up.spegel.logs.slice(upstreamBefore).filter((l) => String(l.path).includes('/manifests/latest'))
      assert.ok(upstreamHits.length > 0, 'the filtered tag was resolved upstream')
      const refused = filtered!.spegel.logs.find((l) => String(l.path).includes('/manifests/latest') && l.status === 404)
      assert.ok(refused, 'the local node answered 404 for the filtered tag')

      const beforeTag = up.spegel.logs.length
      await filtered!.containerd.ctr(['images', 'pull', '--hosts-dir', filtered!.containerd.configPath, 'example.test/team/app:1.0'])
      assert.ok(!up.spegel.logs.slice(beforeTag).some((l) => String(l.path).includes('/manifests/1.0')), 'an unfiltered tag never reached upstream')
    } finally {
      await cluster?.dispose()
      await upstream.dispose()
      await fs.rm(dir, { recursive: true, force: true })
    }
  })
})
