import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import { createLogger } from '../../src/observability/logger.js'
import { staticBootstrapper } from '../../src/routing/bootstrap/static.js'
import type { Bootstrapper } from '../../src/routing/bootstrap/types.js'
import { collect, routerConformance } from '../../src/routing/conformance.js'
import { FrameType } from '../../src/routing/p2p/codec.js'
import { createP2PRouter, generatePskFile, type P2PRouter, type P2PRouterInit } from '../../src/routing/p2p/index.js'
import { freePort } from '../helpers/net.js'
import { waitFor } from '../helpers/wait.js'

const log = createLogger({ level: (process.env.ROUTER_TEST_LOG_LEVEL ?? 'warn') as 'warn' })

/** Fast liveness for tests that need a dead node to expire; deadlines below stay generous. */
const FAST = { heartbeatIntervalMs: 200, expiryMs: 2_000, pullIntervalMs: 1_000 }
/** Slow liveness: anything that happens within a test's deadline cannot be explained by expiry or periodic sync. */
const SLOW = { heartbeatIntervalMs: 60_000, expiryMs: 120_000, pullIntervalMs: 60_000 }

let nextHost = 50
/** A fresh loopback address per node, so nodes never share a listen address across tests. */
function host (): string {
  assert.ok(nextHost < 250, 'out of loopback addresses')
  return `127.0.0.${nextHost++}`
}

const running = new Set<P2PRouter>()
after(async () => {
  await Promise.allSettled([...running].map(async (r) => { await r.stop({ goodbye: false }) }))
})

interface NodeOptions extends Partial<P2PRouterInit> {
  /** Multiaddrs to bootstrap from (static bootstrapper); ignored when `bootstrapper` is given. */
  peers?: string[]
}

async function startNode (opts: NodeOptions = {}): Promise<P2PRouter> {
  const h = opts.listen?.host ?? host()
  const router = await createP2PRouter({ log }, {
    listen: { host: h, port: 0 },
    dataDir: '',
    secretPath: '',
    registryAddress: `${h}:5000`,
    bootstrapper: staticBootstrapper(opts.peers ?? []),
    ...FAST,
    ...opts
  })
  running.add(router)
  await router.start()
  return router
}

async function stopNode (router: P2PRouter, goodbye = true): Promise<void> {
  await router.stop({ goodbye })
  running.delete(router)
}

/** Starts `n` nodes, each bootstrapping from every earlier one, and waits until all are ready. */
async function startCluster (n: number, opts: NodeOptions = {}): Promise<P2PRouter[]> {
  const routers: P2PRouter[] = []
  for (let i = 0; i < n; i++) {
    routers.push(await startNode({ ...opts, peers: routers.flatMap((r) => r.multiaddrs()) }))
  }
  await waitFor(() => routers.every((r) => r.readiness().isReady), { timeoutMs: 15_000, what: 'every node to be ready' })
  return routers
}

/** Every node holds every other node's current record version. */
async function settle (routers: readonly P2PRouter[], timeoutMs = 15_000): Promise<void> {
  await waitFor(() => routers.every((a) => routers.every((b) => {
    if (a === b) return true
    const known = a.knownVersion(b.peerId)
    const v = b.version()
    return known !== undefined && known.epoch === v.epoch && known.seq === v.seq
  })), { timeoutMs, what: 'every node to hold every other node\'s latest record' })
}

async function holders (router: P2PRouter, key: string): Promise<string[]> {
  return (await collect(router, key)).map((p) => p.id).sort()
}

function digest (): string {
  return `sha256:${randomBytes(32).toString('hex')}`
}

routerConformance('P2PRouter (3 nodes, one process)', async () => {
  const routers = await startCluster(3)
  return {
    routers,
    selves: routers.map((r) => ({ id: r.peerId, registryAddress: r.status().multiaddrs[0]?.split('/')[2] + ':5000' })),
    settle: async () => { await settle(routers) },
    teardown: async () => { await Promise.all(routers.map(async (r) => { await stopNode(r) })) }
  }
})

describe('P2PRouter', () => {
  it('is not ready before bootstrap, and a lone node is a ready one-node cluster', async () => {
    const h = host()
    const router = await createP2PRouter({ log }, {
      listen: { host: h, port: 0 }, dataDir: '', secretPath: '', registryAddress: `${h}:5000`, bootstrapper: staticBootstrapper([])
    })
    assert.deepEqual(router.readiness(), { isReady: false, reason: 'bootstrapping' })
    running.add(router)
    await router.start()
    await waitFor(() => router.readiness().isReady, { timeoutMs: 10_000, what: 'a lone node to be ready' })
    router.advertise([digest()])
    const s = router.status()
    assert.equal(s.peers, 0)
    assert.equal(s.records, 0)
    assert.equal(s.ownKeys, 1)
    assert.match(router.multiaddrs()[0] ?? '', /^\/ip4\/127\.0\.0\.\d+\/tcp\/\d+\/p2p\/12D3KooW/)
    await stopNode(router)
  })

  it('bootstraps from addresses without peer id or port (DNS style), skipping itself', async () => {
    const [ha, hb] = [host(), host()]
    const port = await freePort(ha)
    // Both nodes get the same answer, as from a DNS name listing every node; the port comes from the node's own.
    const dns: Bootstrapper = { kind: 'dns', discover: async () => [{ addrs: [`/ip4/${ha}`] }, { addrs: [`/ip4/${hb}`] }] }
    const a = await startNode({ listen: { host: ha, port }, bootstrapper: dns })
    const b = await startNode({ listen: { host: hb, port }, bootstrapper: dns })
    await waitFor(() => a.readiness().isReady && b.readiness().isReady, { timeoutMs: 20_000, what: 'both DNS-bootstrapped nodes to be ready' })
    const key = digest()
    a.advertise([key])
    await waitFor(async () => (await holders(b, key)).includes(a.peerId), { timeoutMs: 10_000, what: 'b to find a\'s key' })
    assert.deepEqual(await collect(b, key), [{ id: a.peerId, registryAddress: `${ha}:5000` }])
    await Promise.all([stopNode(a), stopNode(b)])
  })

  it('runs the bootstrapper\'s server for its whole life with this node\'s id and addresses', async () => {
    let served: { id: string, addrs: readonly string[] } | undefined
    let stopped = false
    const serving: Bootstrapper = {
      kind: 'http',
      discover: async () => [],
      serve: async (self, signal) => {
        served = self()
        await new Promise<void>((resolve) => { signal.addEventListener('abort', () => { resolve() }, { once: true }) })
        stopped = true
      }
    }
    const a = await startNode({ bootstrapper: serving })
    await waitFor(() => served, { timeoutMs: 5_000, what: 'serve() to be called' })
    assert.equal(served?.id, a.peerId)
    assert.deepEqual(served?.addrs, a.multiaddrs().map((m) => m.replace(/\/p2p\/.*$/, '')))
    assert.equal(stopped, false)
    await stopNode(a)
    assert.equal(stopped, true)
  })

  it('a node that leaves gracefully disappears from every replica at once', async () => {
    const [a, b, c] = await startCluster(3, SLOW)
    assert.ok(a !== undefined && b !== undefined && c !== undefined)
    const key = digest()
    c.advertise([key])
    await waitFor(async () => (await holders(a, key)).length === 1 && (await holders(b, key)).length === 1, { timeoutMs: 10_000, what: 'a and b to find c' })
    await stopNode(c)
    // Expiry is 120 s here, so only the goodbye can explain this.
    await waitFor(async () => (await holders(a, key)).length === 0 && (await holders(b, key)).length === 0, { timeoutMs: 5_000, what: 'c to vanish from a and b' })
    assert.ok(!a.origins().includes(c.peerId))
    assert.ok(!b.origins().includes(c.peerId))
    // A later sync must not bring the record back: a and b still sync with each other.
    const probe = digest()
    a.advertise([probe])
    await waitFor(async () => (await holders(b, probe)).length === 1, { timeoutMs: 10_000, what: 'b to see a new key from a' })
    assert.equal(b.knownVersion(c.peerId), undefined)
    await Promise.all([stopNode(a), stopNode(b)])
  })

  it('a node that dies without goodbye disappears within the expiry bound', async () => {
    const [a, b, c] = await startCluster(3, FAST)
    assert.ok(a !== undefined && b !== undefined && c !== undefined)
    const key = digest()
    c.advertise([key])
    await waitFor(async () => (await holders(a, key)).length === 1 && (await holders(b, key)).length === 1, { timeoutMs: 10_000, what: 'a and b to find c' })
    await stopNode(c, false)
    await waitFor(async () => (await holders(a, key)).length === 0 && (await holders(b, key)).length === 0, { timeoutMs: 15_000, what: 'c to expire on a and b' })
    await waitFor(() => !a.origins().includes(c.peerId) && a.status().counters.expired >= 1, { timeoutMs: 10_000, what: 'a to sweep c' })
    assert.equal(a.status().counters.goodbyes, 0)
    // a and b stay alive for each other: heartbeats keep flowing.
    assert.deepEqual(a.origins(), [b.peerId])
    await Promise.all([stopNode(a), stopNode(b)])
  })

  it('a late joiner gets the whole index from one peer', async () => {
    const [a, b, c] = await startCluster(3, SLOW)
    assert.ok(a !== undefined && b !== undefined && c !== undefined)
    const shared = Array.from({ length: 50 }, digest)
    const keysA = [...Array.from({ length: 300 }, digest), ...shared]
    const keysB = [...Array.from({ length: 300 }, (_, i) => `registry.example/app${i}:latest`), ...shared]
    a.replaceAll(keysA)
    b.replaceAll(keysB)
    c.advertise([digest()])
    await settle([a, b, c])
    const d = await startNode({ ...SLOW, peers: a.multiaddrs() })
    await settle([a, b, c, d])
    assert.equal(d.readiness().isReady, true)
    assert.deepEqual(d.origins().sort(), [a.peerId, b.peerId, c.peerId].sort())
    for (const k of keysA.slice(0, 300)) assert.deepEqual(await holders(d, k), [a.peerId])
    for (const k of keysB.slice(0, 300)) assert.deepEqual(await holders(d, k), [b.peerId])
    for (const k of shared) assert.deepEqual(await holders(d, k), [a.peerId, b.peerId].sort())
    assert.equal(d.status().keys, 650 + 1)
    await Promise.all([a, b, c, d].map(async (r) => { await stopNode(r) }))
  })

  it('keeps its peer id across restarts with a data directory, and peers replace the old record', async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), 'spegel-router-'))
    t.after(async () => { await rm(dir, { recursive: true, force: true }) })
    const dataDir = path.join(dir, 'data')
    const a = await startNode({ ...SLOW })
    const b1 = await startNode({ ...SLOW, dataDir, peers: a.multiaddrs() })
    const keyFile = path.join(dataDir, 'private.key')
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600)
    assert.match(await readFile(keyFile, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/)
    const old = digest()
    b1.advertise([old])
    await waitFor(async () => (await holders(a, old)).length === 1, { timeoutMs: 10_000, what: 'a to find b\'s first key' })
    // Dies silently; the restarted node has a newer epoch, which replaces the record well before expiry.
    await stopNode(b1, false)
    const b2 = await startNode({ ...SLOW, dataDir, peers: a.multiaddrs() })
    assert.equal(b2.peerId, b1.peerId)
    const fresh = digest()
    b2.advertise([fresh])
    await waitFor(async () => (await holders(a, fresh)).length === 1 && (await holders(a, old)).length === 0,
      { timeoutMs: 10_000, what: 'a to replace b\'s record with the restarted one' })
    await Promise.all([stopNode(a), stopNode(b2)])
  })

  it('refuses to start with an unparsable key file, naming it', async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), 'spegel-router-'))
    t.after(async () => { await rm(dir, { recursive: true, force: true }) })
    const keyFile = path.join(dir, 'private.key')
    await writeFile(keyFile, '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n')
    await assert.rejects(createP2PRouter({ log }, {
      listen: { host: host(), port: 0 }, dataDir: dir, secretPath: '', registryAddress: '127.0.0.1:5000', bootstrapper: staticBootstrapper([])
    }), (err: Error) => err.name === 'ConfigError' && err.message.includes(keyFile))
  })

  it('refuses to start with a registry address that is not a usable IP:port', async () => {
    for (const registryAddress of ['registry.local:5000', '169.254.169.254:80', '127.0.0.1:5000/v2']) {
      await assert.rejects(createP2PRouter({ log }, {
        listen: { host: host(), port: 0 }, dataDir: '', secretPath: '', registryAddress, bootstrapper: staticBootstrapper([])
      }), (err: Error) => err.name === 'ConfigError' && err.message.includes(registryAddress), registryAddress)
    }
  })

  it('with a pre-shared key, only nodes holding the key can join', async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), 'spegel-psk-'))
    t.after(async () => { await rm(dir, { recursive: true, force: true }) })
    const psk = path.join(dir, 'cluster.key')
    const otherPsk = path.join(dir, 'other.key')
    await generatePskFile(psk)
    await generatePskFile(otherPsk)
    const a = await startNode({ ...FAST, secretPath: psk })
    const b = await startNode({ ...FAST, secretPath: psk, peers: a.multiaddrs() })
    const key = digest()
    a.advertise([key])
    await waitFor(async () => (await holders(b, key)).length === 1, { timeoutMs: 10_000, what: 'b (same key) to find a\'s key' })

    const open = await startNode({ ...FAST, peers: a.multiaddrs() })
    const wrong = await startNode({ ...FAST, secretPath: otherPsk, peers: a.multiaddrs() })
    await waitFor(() => [open, wrong].every((r) => r.status().counters.bootstrapRounds >= 2 && r.status().counters.dialFailures >= 2),
      { timeoutMs: 20_000, what: 'the outsiders to fail several bootstrap rounds' })
    for (const outsider of [open, wrong]) {
      assert.equal(outsider.status().peers, 0)
      assert.deepEqual(outsider.origins(), [])
      assert.deepEqual(await holders(outsider, key), [])
      assert.deepEqual(outsider.readiness(), { isReady: false, reason: 'bootstrapping' })
      assert.ok(!a.origins().includes(outsider.peerId))
    }
    assert.deepEqual(a.origins(), [b.peerId])
    await Promise.all([a, b, open, wrong].map(async (r) => { await stopNode(r) }))
  })

  it('a gap in the delta sequence triggers a pull', async () => {
    let dropNext = false
    let dropped = 0
    const a = await startNode({ ...SLOW })
    const b = await startNode({
      ...SLOW,
      peers: a.multiaddrs(),
      hooks: {
        dropInbound: (m) => {
          if (!dropNext || m.type !== FrameType.Delta) return false
          dropNext = false
          dropped++
          return true
        }
      }
    })
    await waitFor(() => b.readiness().isReady, { timeoutMs: 10_000, what: 'b to be ready' })
    await settle([a, b])
    // A pull still running could carry the dropped change and hide the gap.
    await waitFor(() => a.status().pullsInFlight === 0 && b.status().pullsInFlight === 0, { timeoutMs: 10_000, what: 'pulls to finish' })
    const pullsBefore = b.status().counters.pullsOk
    const [k1, k2] = [digest(), digest()]
    dropNext = true
    a.advertise([k1])
    await waitFor(() => dropped === 1, { timeoutMs: 10_000, what: 'the first delta to be dropped' })
    assert.deepEqual(await holders(b, k1), [])
    a.advertise([k2])
    // Heartbeats and periodic syncs are a minute apart here: only the gap can cause this pull.
    await waitFor(async () => (await holders(b, k1)).length === 1 && (await holders(b, k2)).length === 1,
      { timeoutMs: 10_000, what: 'b to repair the gap' })
    assert.ok(b.status().counters.gaps >= 1)
    assert.ok(b.status().counters.pullsOk > pullsBefore)
    await Promise.all([stopNode(a), stopNode(b)])
  })

  it('a large snapshot goes out as a version announcement and is pulled', async () => {
    const [a, b, c] = await startCluster(3, SLOW)
    assert.ok(a !== undefined && b !== undefined && c !== undefined)
    // 5,000 digests are ~170 KB as a delta, over the push limit.
    const keys = Array.from({ length: 5_000 }, digest)
    a.replaceAll(keys)
    await waitFor(() => [b, c].every((r) => r.knownVersion(a.peerId)?.seq === a.version().seq),
      { timeoutMs: 15_000, what: 'b and c to pull a\'s snapshot' })
    for (const k of keys.slice(0, 100)) assert.deepEqual(await holders(c, k), [a.peerId])
    assert.equal(c.status().keys, 5_000)
    await Promise.all([a, b, c].map(async (r) => { await stopNode(r) }))
  })
})
