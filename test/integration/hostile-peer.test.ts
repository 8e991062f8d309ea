/**
 * A hostile peer against honest nodes: it forges other nodes' deltas, records and goodbyes, relays
 * tampered bytes, claims registry addresses that are not its own, sends oversized, truncated and
 * unsigned frames, and opens streams it never reads. Every attempt is refused or bounded, the
 * honest nodes keep sharing their index (and, with real containerd, keep serving pulls), and the
 * refusals are counted by reason. Without the cluster's pre-shared key it cannot connect at all.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLogger } from '../../src/observability/logger.js'
import { staticBootstrapper } from '../../src/routing/bootstrap/static.js'
import { collect } from '../../src/routing/conformance.js'
import {
  FrameType, StatementKind, compactKey, encodeDeltaFrame, encodeDeltaPayload, encodeGoodbyeFrame
} from '../../src/routing/p2p/codec.js'
import { MAX_FRAME_BYTES, PULL_PROTOCOL, PUSH_PROTOCOL } from '../../src/routing/p2p/constants.js'
import { createP2PRouter, generatePskFile, type P2PRouter, type P2PRouterInit } from '../../src/routing/p2p/index.js'
import type { RefusalReason } from '../../src/routing/p2p/record-auth.js'
import { pinTag } from '../../src/routing/tag-key.js'
import { containerdAvailable } from '../helpers/containerd.js'
import { lookupPeers, startCluster, type Cluster, type ClusterNode } from '../helpers/cluster.js'
import { HostilePeer } from '../helpers/hostile-peer.js'
import { buildImage, type BuiltImage } from '../helpers/image.js'
import { freePort, httpRequest } from '../helpers/net.js'
import { waitFor } from '../helpers/wait.js'

const log = createLogger({ level: (process.env.ROUTER_TEST_LOG_LEVEL ?? 'silent') as 'silent' })
/** Heartbeats often, expiry and periodic pulls far off: what happens within a deadline is the attack's doing. */
const LIVENESS = { heartbeatIntervalMs: 500, expiryMs: 120_000, pullIntervalMs: 120_000 }
const DEADLINE_MS = 20_000

const digest = (): string => `sha256:${randomBytes(32).toString('hex')}`
const ids = async (router: P2PRouter, key: string): Promise<string[]> => (await collect(router, key)).map((p) => p.id).sort()
const refused = (router: P2PRouter, reason: RefusalReason): number => router.status().refused[reason]
const hostOf = (router: P2PRouter): string => /^\/ip4\/([^/]+)/.exec(router.multiaddrs()[0] ?? '')?.[1] ?? ''
const portOf = (router: P2PRouter): string => /\/tcp\/(\d+)/.exec(router.multiaddrs()[0] ?? '')?.[1] ?? ''

/** An unsigned LEB128 varint, for hand-made length prefixes. */
function varint (n: number): number[] {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return out
}

async function startRouter (host: string, peers: string[], init: Partial<P2PRouterInit> = {}): Promise<P2PRouter> {
  const router = await createP2PRouter({ log }, {
    listen: { host, port: 0 }, dataDir: '', secretPath: '', registryAddress: `${host}:5000`, bootstrapper: staticBootstrapper(peers), ...LIVENESS, ...init
  })
  await router.start()
  return router
}

/** Waits until `counter()` exceeds `before`; returns the new value. */
async function waitMore (counter: () => number, before: number, what: string, timeoutMs = DEADLINE_MS): Promise<number> {
  return await waitFor(() => { const n = counter(); return n > before ? n : undefined }, { timeoutMs, what })
}

describe('a hostile peer against in-process routers (no pre-shared key)', () => {
  let a: P2PRouter, b: P2PRouter, c: P2PRouter
  let h: HostilePeer
  const hHost = '127.0.1.9'
  let dropFromB = false
  const legitKey = digest()
  const legitRecord = (): Parameters<HostilePeer['recordFrame']>[3] => ({ registryAddress: `${hHost}:5000`, addrs: h.addrs(), keys: [legitKey] })

  before(async () => {
    a = await startRouter('127.0.1.1', [])
    b = await startRouter('127.0.1.2', a.multiaddrs())
    // While dropFromB is set, c takes b's deltas only from the hostile peer, and no news of b's
    // version (heartbeats, Have) that would make it pull: a tampered relay reaches it first.
    c = await startRouter('127.0.1.3', [...a.multiaddrs(), ...b.multiaddrs()], {
      hooks: {
        dropInbound: (m, from) => dropFromB && (m.type === FrameType.Heartbeat || m.type === FrameType.Have ||
          (m.type === FrameType.Delta && m.statement.origin === b.peerId && from !== h.peerId))
      }
    })
    h = await HostilePeer.start({ host: hHost })
    h.seq = 1
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, legitRecord())]
    // It joins as a node does: connects, then announces its version (the nodes pull its record).
    for (const r of [a, c]) {
      await h.dial(r.multiaddrs()[0]!)
      await h.heartbeat(r.peerId)
    }
    // Its own record at its own address is a member's like any other: proven by a connection and offered.
    await waitFor(async () => (await Promise.all([a, b, c].map(async (r) => (await ids(r, legitKey)).includes(h.peerId)))).every(Boolean),
      { timeoutMs: DEADLINE_MS, what: 'every honest node to offer the hostile peer\'s own key' })
  })
  after(async () => {
    await Promise.allSettled([a, b, c].map(async (r) => { await r?.stop() }))
    await h?.stop()
  })

  it('refuses a delta forged for another node', async () => {
    const key = digest()
    const { epoch, seq } = b.version()
    const payload = encodeDeltaPayload({ removes: [], adds: [compactKey(key)], tagDigests: undefined, recordSignature: new Uint8Array(64) })
    const before = refused(a, 'bad-signature')
    await h.push(a.peerId, [encodeDeltaFrame(h.sign(StatementKind.Delta, b.peerId, epoch, seq + 1, payload).bytes)])
    await waitMore(() => refused(a, 'bad-signature'), before, 'a to refuse the forged delta')
    assert.deepEqual(await ids(a, key), [])
    assert.deepEqual(a.knownVersion(b.peerId), { epoch, seq })
  })

  it('refuses tampered relayed bytes, and takes the untouched bytes from the same relay', async () => {
    dropFromB = true
    try {
      const key = digest()
      const seen = h.deltasOf(b.peerId).length
      b.advertise([key])
      await waitFor(() => h.deltasOf(b.peerId).length > seen, { timeoutMs: DEADLINE_MS, what: 'the hostile peer to receive b\'s delta through a' })
      const genuine = h.deltasOf(b.peerId).at(-1)!
      const tampered = Buffer.from(genuine)
      const at = tampered.indexOf(Buffer.from(key.slice(7), 'hex'))
      assert.ok(at > 0, 'the key is in the frame')
      tampered[at] = (tampered[at] ?? 0) ^ 0xff
      const before = refused(c, 'bad-signature')
      await h.push(c.peerId, [tampered])
      await waitMore(() => refused(c, 'bad-signature'), before, 'c to refuse the tampered relay')
      assert.deepEqual(await ids(c, key), [])
      await h.push(c.peerId, [genuine])
      await waitFor(async () => (await ids(c, key)).includes(b.peerId), { timeoutMs: DEADLINE_MS, what: 'c to apply the genuine bytes' })
    } finally {
      dropFromB = false
    }
  })

  it('refuses a goodbye forged for a live node', async () => {
    const key = digest()
    b.advertise([key])
    await waitFor(async () => (await ids(a, key)).includes(b.peerId), { timeoutMs: DEADLINE_MS, what: 'a to find b\'s key' })
    const before = refused(a, 'bad-signature') + refused(c, 'bad-signature')
    const goodbye = encodeGoodbyeFrame(h.sign(StatementKind.Goodbye, b.peerId, b.version().epoch, b.version().seq, new Uint8Array(0)).bytes)
    await h.push(a.peerId, [goodbye])
    await h.push(c.peerId, [goodbye])
    await waitFor(() => refused(a, 'bad-signature') + refused(c, 'bad-signature') >= before + 2, { timeoutMs: DEADLINE_MS, what: 'a and c to refuse the forged goodbye' })
    assert.ok(a.origins().includes(b.peerId) && c.origins().includes(b.peerId))
    assert.deepEqual(await ids(a, key), [b.peerId])
    assert.equal(a.status().counters.goodbyes, 0)
  })

  it('refuses a record forged for another node in a pull answer, and a heartbeat speaking for another node', async () => {
    const key = digest()
    const { epoch, seq } = b.version()
    h.pullAnswer = () => [h.recordFrame(b.peerId, epoch, seq + 5, { registryAddress: `${hHost}:5000`, addrs: h.addrs(), keys: [key] })]
    const before = refused(a, 'bad-signature')
    // Hearsay of a newer version of b makes a pull from the hostile peer, whose answer is checked.
    await h.heartbeat(a.peerId, [{ origin: b.peerId, epoch, seq: seq + 5, ageMs: 0 }])
    await waitMore(() => refused(a, 'bad-signature'), before, 'a to refuse the forged record')
    assert.deepEqual(await ids(a, key), [])
    assert.equal(a.knownVersion(b.peerId)?.seq, b.version().seq)
    assert.deepEqual((await collect(a, legitKey)).find((p) => p.id === b.peerId), undefined)

    const wrong = refused(a, 'wrong-sender')
    await h.heartbeat(a.peerId, [], b.peerId)
    await waitMore(() => refused(a, 'wrong-sender'), wrong, 'a to refuse a heartbeat for b from the hostile peer')
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, legitRecord())]
  })

  it('does not move its epoch for hearsay about itself', async () => {
    const epoch = a.version().epoch
    const pulls = h.pullsAnswered
    await h.heartbeat(a.peerId, [{ origin: a.peerId, epoch: 2 ** 53 - 2, seq: 1, ageMs: 0 }])
    // The hearsay only makes a pull; nothing in it is signed by a, so nothing moves.
    await waitMore(() => h.pullsAnswered, pulls, 'a to pull from the hostile peer')
    assert.equal(a.version().epoch, epoch)
    const key = digest()
    a.advertise([key])
    await waitFor(async () => (await ids(b, key)).includes(a.peerId), { timeoutMs: DEADLINE_MS, what: 'a\'s changes to keep flowing' })
  })

  it('refuses its own records that point the registry anywhere but itself', async () => {
    const cases: Array<{ what: string, registryAddress: string, addrs: () => string[] }> = [
      { what: 'a hostname', registryAddress: 'evil.example:5000', addrs: () => h.addrs() },
      { what: 'the metadata service', registryAddress: '169.254.169.254:80', addrs: () => ['/ip4/169.254.169.254/tcp/80'] },
      { what: 'a URL with a path', registryAddress: `http://${hHost}:5000/v2/`, addrs: () => h.addrs() },
      { what: 'a path', registryAddress: `${hHost}:5000/v2`, addrs: () => h.addrs() },
      { what: 'an IP it does not announce', registryAddress: `${hostOf(b)}:5000`, addrs: () => h.addrs() }
    ]
    for (const c of cases) {
      const key = digest()
      h.seq++
      h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, { registryAddress: c.registryAddress, addrs: c.addrs(), keys: [key] })]
      const before = refused(a, 'bad-address')
      await h.heartbeat(a.peerId)
      await waitMore(() => refused(a, 'bad-address'), before, `a to refuse ${c.what}`)
      assert.deepEqual(await ids(a, key), [], c.what)
    }
    assert.ok((await ids(a, legitKey)).includes(h.peerId), 'the last good record stays')

    // Another node's IP, announced as its own: kept (it is signed), never offered, since the
    // hostile peer cannot be reached as itself there.
    const key = digest()
    h.seq++
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, { registryAddress: `${hostOf(b)}:5000`, addrs: [`/ip4/${hostOf(b)}/tcp/${portOf(b)}`], keys: [key] })]
    const before = refused(a, 'unverified-address')
    await h.heartbeat(a.peerId)
    await waitFor(() => a.knownVersion(h.peerId)?.seq === h.seq, { timeoutMs: DEADLINE_MS, what: 'a to store the record' })
    assert.deepEqual(await ids(a, key), [])
    assert.equal(a.peers().find((p) => p.id === h.peerId)?.isAddressProven, false)
    await waitMore(() => refused(a, 'unverified-address'), before, 'a to give up proving the address', 40_000)
    assert.deepEqual(await ids(a, key), [])

    // Back at its own address, it is offered again.
    h.seq++
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, legitRecord())]
    await h.heartbeat(a.peerId)
    await waitFor(async () => (await ids(a, legitKey)).includes(h.peerId), { timeoutMs: DEADLINE_MS, what: 'a to offer the hostile peer at its own address again' })
  })

  it('refuses oversized, truncated and unsigned frames', async () => {
    const oversized = refused(a, 'oversized')
    await h.pushRaw(a.peerId, Uint8Array.from([...varint(MAX_FRAME_BYTES + 1), 1, 2, 3]))
    await waitMore(() => refused(a, 'oversized'), oversized, 'a to refuse an oversized frame')

    const malformed = refused(a, 'malformed')
    const genuine = h.deltasOf(b.peerId).at(-1)!
    await h.push(a.peerId, [genuine.subarray(0, Math.floor(genuine.length / 2)), Uint8Array.of(99, 1, 2)])
    await waitFor(() => refused(a, 'malformed') >= malformed + 2, { timeoutMs: DEADLINE_MS, what: 'a to refuse a truncated frame and an unknown one' })

    const unsigned = refused(a, 'unsigned')
    await h.pushRaw(a.peerId, Uint8Array.of(3, 3, 1, 111), '/spegel-ts/index/delta/1').catch(() => undefined)
    await waitMore(() => refused(a, 'unsigned'), unsigned, 'a to refuse the unsigned protocol')
  })

  it('keeps working while streams are opened and never read', async () => {
    for (let i = 0; i < 16; i++) {
      await h.openIdle(a.peerId, PULL_PROTOCOL, Uint8Array.of(FrameType.PullRequest, 0))
      await h.openIdle(a.peerId, PUSH_PROTOCOL)
    }
    const keys = [digest(), pinTag('example.com/team/app:1', digest())]
    b.advertise(keys)
    await waitFor(async () => (await ids(a, keys[0]!)).includes(b.peerId) && (await ids(c, 'example.com/team/app:1')).includes(b.peerId),
      { timeoutMs: DEADLINE_MS, what: 'b\'s change to reach a and c' })
    assert.deepEqual(await collect(c, 'example.com/team/app:1'), [{ id: b.peerId, registryAddress: `${hostOf(b)}:5000`, digest: keys[1]!.split('@')[1] }])
    // Nothing the hostile peer did changed what honest nodes say about each other.
    for (const r of [a, c]) assert.deepEqual((await collect(r, keys[0]!)), [{ id: b.peerId, registryAddress: `${hostOf(b)}:5000` }])
    for (const reason of ['bad-signature', 'wrong-sender', 'bad-address', 'unverified-address', 'oversized', 'malformed', 'unsigned'] as const) {
      assert.ok(refused(a, reason) + refused(c, reason) >= 1, reason)
    }
    assert.equal(refused(b, 'bad-signature'), 0, 'b never heard of the forgeries: nothing forged was relayed')
  })
})

describe('a hostile peer against routers with a pre-shared key', () => {
  it('cannot connect without the key; with it, its forgeries are refused like any member\'s', async (t) => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'spegel-hostile-'))
    t.after(async () => { await fs.rm(dir, { recursive: true, force: true }) })
    const psk = path.join(dir, 'cluster.key')
    await generatePskFile(psk)
    const a = await startRouter('127.0.2.1', [], { secretPath: psk })
    const b = await startRouter('127.0.2.2', a.multiaddrs(), { secretPath: psk })
    const outsider = await HostilePeer.start({ host: '127.0.2.8' })
    const insider = await HostilePeer.start({ host: '127.0.2.9', secretPath: psk })
    t.after(async () => { await Promise.allSettled([a.stop(), b.stop(), outsider.stop(), insider.stop()]) })
    await waitFor(() => a.origins().includes(b.peerId) && b.origins().includes(a.peerId), { timeoutMs: DEADLINE_MS, what: 'a and b to know each other' })

    await assert.rejects(outsider.dial(a.multiaddrs()[0]!))
    assert.equal(outsider.node.peers().length, 0)
    assert.ok(!a.peers().some((p) => p.id === outsider.peerId))

    await insider.dial(a.multiaddrs()[0]!)
    const before = refused(a, 'bad-signature')
    await insider.push(a.peerId, [encodeGoodbyeFrame(insider.sign(StatementKind.Goodbye, b.peerId, b.version().epoch, 0, new Uint8Array(0)).bytes)])
    await waitMore(() => refused(a, 'bad-signature'), before, 'a to refuse the insider\'s forged goodbye')
    assert.ok(a.origins().includes(b.peerId))
  })
})

const skip = containerdAvailable() ? false : 'needs root and containerd (scripts/test-all.sh installs it)'

describe('a hostile peer inside a cluster of real nodes (pre-shared key, real containerd)', { skip }, () => {
  let dir: string
  let cluster: Cluster
  let image: BuiltImage
  let h: HostilePeer
  let liar: Server
  const liarRequests: string[] = []

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-hostile-'))
    const psk = path.join(dir, 'swarm.key')
    await generatePskFile(psk)
    image = await buildImage(path.join(dir, 'img'), 'example.test/hostile/app:1.0', [4096, 64 * 1024])
    cluster = await startCluster(2, { nodeOptions: () => ({ extraArgs: ['--router-secret-path', psk] }) })
    for (const node of cluster.nodes) await node.spegel.waitReady(60_000)
    const n1 = cluster.nodes[0]!
    // The hostile peer lives beside the cluster, with the key, and runs a registry that lies.
    const hHost = n1.host.replace(/\.\d+$/, '.200')
    h = await HostilePeer.start({ host: hHost, secretPath: psk })
    const forged = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }))
    const forgedDigest = `sha256:${createHash('sha256').update(forged).digest('hex')}`
    const port = await freePort(hHost)
    liar = createServer((req, res) => {
      liarRequests.push(`${req.method ?? ''} ${req.url ?? ''}`)
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', 'content-length': forged.length, 'docker-content-digest': forgedDigest })
      res.end(req.method === 'HEAD' ? undefined : forged)
    })
    liar.listen(port, hHost)
    await once(liar, 'listening')
    await n1.containerd.importImage(image.archivePath!)
    await waitFor(async () => (await lookupPeers(cluster.nodes[1]!, image.top.digest)).includes(n1.peerId), { timeoutMs: DEADLINE_MS, what: 'node 2 to see node 1\'s image' })

    // It claims the tag at the digest node 1 names, and serves something else under it.
    h.seq = 1
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, {
      registryAddress: `${hHost}:${port}`,
      addrs: h.addrs(),
      keys: ['example.test/hostile/app:1.0', 'example.test/hostile/app:2.0', image.top.digest],
      pins: new Map([['example.test/hostile/app:1.0', image.top.digest], ['example.test/hostile/app:2.0', image.top.digest]])
    })]
    // It joins as a node does: connects, then announces its version (the nodes pull its record).
    for (const node of cluster.nodes) {
      await h.dial(`/ip4/${node.host}/tcp/${node.spegel.routerPort}/p2p/${node.peerId}`)
      await h.heartbeat(node.peerId)
    }
    await waitFor(async () => (await Promise.all(cluster.nodes.map(async (n) => (await lookupPeers(n, 'example.test/hostile/app:1.0')).includes(h.peerId)))).every(Boolean),
      { timeoutMs: DEADLINE_MS, what: 'both nodes to offer the hostile peer for the tag' })
  })
  after(async () => {
    await h?.stop()
    liar?.close()
    await cluster?.dispose()
    if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true })
  })

  it('refuses forged records, goodbyes and addresses, and the honest nodes keep serving real pulls', async () => {
    const [n1, n2] = cluster.nodes as [ClusterNode, ClusterNode]
    // What node 1 says about itself, learnt the way any member can.
    const own = (await h.pull(n1.peerId)).find((f) => f.type === FrameType.Record && f.statement.origin === n1.peerId)
    assert.ok(own !== undefined && own.type === FrameType.Record)
    const { epoch, seq } = own.statement
    const bad = randomBytes(32).toString('hex')
    const hostileAnswer = h.pullAnswer
    h.pullAnswer = () => [
      ...hostileAnswer(''),
      // Node 1's record, forged: its registry at the hostile peer, the tag at another digest.
      h.recordFrame(n1.peerId, epoch, seq + 10, { registryAddress: `${h.node.announcedAddrs()[0]?.split('/')[2] ?? ''}:5000`, addrs: h.addrs(), keys: ['example.test/hostile/app:1.0'], pins: new Map([['example.test/hostile/app:1.0', `sha256:${bad}`]]) })
    ]
    await h.heartbeat(n2.peerId, [{ origin: n1.peerId, epoch, seq: seq + 10, ageMs: 0 }])
    await h.push(n2.peerId, [encodeGoodbyeFrame(h.sign(StatementKind.Goodbye, n1.peerId, epoch, seq, new Uint8Array(0)).bytes)])
    await waitFor(async () => (await refusedOn(n2.spegel.metricsUrl, 'bad-signature')) >= 2, { timeoutMs: DEADLINE_MS, what: 'node 2 to count the forged record and goodbye' })

    // A tag only the lying registry claims: its answer is not the digest it signed, so node 2
    // refuses it and answers 404 (containerd would go upstream) instead of serving another image.
    const only = await httpRequest(`${n2.spegel.registryUrl}/v2/hostile/app/manifests/2.0?ns=example.test`, { method: 'HEAD' })
    assert.equal(only.status, 404)
    assert.ok(liarRequests.some((r) => r.includes('/manifests/2.0')), 'the lying registry was asked')
    await n2.spegel.waitForLog((l) => l.msg === 'peer answered a tag with another digest than its record names' && l.peer === h.peerId, 'the lie refused')
    // Where node 1 holds the tag too, every answer is node 1's, whichever holder is asked first.
    for (let i = 0; i < 5; i++) {
      const res = await httpRequest(`${n2.spegel.registryUrl}/v2/hostile/app/manifests/1.0?ns=example.test`, { method: 'HEAD' })
      assert.equal(res.status, 200)
      assert.equal(res.headers['docker-content-digest'], image.top.digest)
    }

    // Pulls through node 2 still work and bring the real image; the lying registry never wins.
    await n2.containerd.ctr(['images', 'pull', '--hosts-dir', n2.containerd.configPath, 'example.test/hostile/app:1.0'])
    const { stdout } = await n2.containerd.ctr(['images', 'ls', '-q'])
    assert.ok(stdout.includes('example.test/hostile/app:1.0'))
    const content = new Set((await n2.containerd.ctr(['content', 'ls', '-q'])).stdout.split('\n').map((l) => l.trim()))
    for (const d of image.allDigests()) assert.ok(content.has(d), `node 2 has ${d}`)
    assert.ok((await lookupPeers(n2, image.top.digest)).includes(n1.peerId), 'node 1 is still offered')

    // A record pointing at the metadata service is refused outright.
    h.seq++
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, { registryAddress: '169.254.169.254:80', addrs: ['/ip4/169.254.169.254/tcp/80'], keys: [digest()] })]
    await h.heartbeat(n1.peerId)
    await waitFor(async () => (await refusedOn(n1.spegel.metricsUrl, 'bad-address')) >= 1, { timeoutMs: DEADLINE_MS, what: 'node 1 to count the bad address' })
    const metrics = (await httpRequest(`${n2.spegel.metricsUrl}/metrics`, { method: 'GET' })).body.toString()
    for (const reason of ['malformed', 'oversized', 'unsigned', 'bad-signature', 'wrong-sender', 'bad-address', 'unverified-address']) {
      assert.match(metrics, new RegExp(`^spegel_router_frames_refused_total\\{reason="${reason}"\\} \\d+$`, 'm'), `the ${reason} series exists`)
    }
  })
})

async function refusedOn (metricsUrl: string, reason: string): Promise<number> {
  const text = (await httpRequest(`${metricsUrl}/metrics`, { method: 'GET' })).body.toString()
  return Number(new RegExp(`^spegel_router_frames_refused_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0)
}
