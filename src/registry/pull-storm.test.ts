import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { createLogger } from '../observability/logger.js'
import { KeyOverlay, arrivingKey, fetchingKey, wantKey } from '../routing/key-overlay.js'
import { MemoryRouter, MemoryRouterNetwork } from '../routing/memory-router.js'
import { PullStorm, score, type PullStormInit, type StormOutcome } from './pull-storm.js'

const log = createLogger({ level: 'silent' })

function digestOf (text: string): string {
  return `sha256:${createHash('sha256').update(text).digest('hex')}`
}

interface TestNode {
  id: string
  router: MemoryRouter
  keys: KeyOverlay
  storm: PullStorm
  outcomes: StormOutcome[]
}

function makeNodes (ids: readonly string[], init: Partial<PullStormInit> = {}, network = new MemoryRouterNetwork()): TestNode[] {
  return ids.map((id, i) => {
    const router = new MemoryRouter({ network }, { id, registryAddress: `127.0.0.${i + 1}:5000` })
    const keys = new KeyOverlay(router)
    const outcomes: StormOutcome[] = []
    const storm = new PullStorm({ router, keys, selfId: () => id, log, onOutcome: (o) => { outcomes.push(o) } }, {
      waitMs: 2000, collectMs: 60, pollMs: 5, ...init
    })
    return { id, router, keys, storm, outcomes }
  })
}

/** What a chosen node's containerd does next: its download starts landing in the ingest area. */
function startDownloadWhenChosen (node: TestNode, digest: string, afterMs = 30): void {
  setTimeout(() => {
    node.keys.add(arrivingKey(digest))
    node.storm.onArriving(digest)
  }, afterMs)
}

async function storm (nodes: TestNode[], digest: string): Promise<StormOutcome[]> {
  const signal = new AbortController().signal
  return await Promise.all(nodes.map(async (node) => {
    const outcome = await node.storm.await(digest, signal)
    if (outcome === 'chosen' || outcome === 'timeout') startDownloadWhenChosen(node, digest)
    return outcome
  }))
}

const IDS = ['node-a', 'node-b', 'node-c', 'node-d', 'node-e', 'node-f']

describe('PullStorm', () => {
  it('six nodes asking for the same blob at once: one fetches upstream, five stream from it', async () => {
    const nodes = makeNodes(IDS)
    const digest = digestOf('layer-1')
    const outcomes = await storm(nodes, digest)
    assert.deepEqual(outcomes.filter((o) => o === 'chosen').length, 1, `outcomes ${outcomes.join(',')}`)
    assert.deepEqual(outcomes.filter((o) => o === 'source').length, 5, `outcomes ${outcomes.join(',')}`)
    // The one picked is the highest rendezvous score, the same answer every node computes.
    const expected = [...IDS].sort((a, b) => (score(digest, b) > score(digest, a) ? 1 : -1))[0]
    assert.equal(nodes[outcomes.indexOf('chosen')]?.id, expected)
    // Nobody still says it wants the blob once the waits are over.
    assert.deepEqual(nodes[0]?.router.network.get(wantKey(digest)), [])
    for (const node of nodes) node.storm.close()
  })

  it('spreads different blobs over different nodes', async () => {
    const nodes = makeNodes(IDS, { collectMs: 20 })
    const chosen = new Set<string>()
    for (let i = 0; i < 12; i++) {
      const digest = digestOf(`layer-${i}`)
      const outcomes = await storm(nodes, digest)
      assert.equal(outcomes.filter((o) => o === 'chosen').length, 1)
      chosen.add(nodes[outcomes.indexOf('chosen')]?.id ?? '')
    }
    assert.ok(chosen.size >= 3, `12 blobs went to only ${chosen.size} node(s)`)
    for (const node of nodes) node.storm.close()
  })

  it('a node that comes later waits for the node already fetching, even with a higher score', async () => {
    const digest = digestOf('late-layer')
    // Order the ids by score so the late comer would win a fresh choice.
    const [high, low] = ['x1', 'x2', 'x3', 'x4'].sort((a, b) => (score(digest, b) > score(digest, a) ? 1 : -1))
    assert.ok(high !== undefined && low !== undefined)
    const network = new MemoryRouterNetwork()
    const [first] = makeNodes([low], {}, network)
    const [late] = makeNodes([high], {}, network)
    assert.ok(first !== undefined && late !== undefined)
    const signal = new AbortController().signal
    assert.equal(await first.storm.await(digest, signal), 'chosen')
    assert.deepEqual(network.get(fetchingKey(digest)).map((p) => p.id), [low])
    const lateOutcome = late.storm.await(digest, signal)
    // The first node's download shows up a little later; only then does the late comer go.
    await sleep(150)
    startDownloadWhenChosen(first, digest, 0)
    assert.equal(await lateOutcome, 'source')
    // The arriving key took over from the fetching key.
    await sleep(10)
    assert.deepEqual(network.get(fetchingKey(digest)), [])
    first.storm.close()
    late.storm.close()
  })

  it('waits past the bound, up to twice it, for a live node that took the job and is slow to start', async () => {
    const digest = digestOf('slow-start')
    const network = new MemoryRouterNetwork()
    const [fetcher, waiter] = makeNodes(['f1', 'w1'], { waitMs: 300, collectMs: 30 }, network)
    assert.ok(fetcher !== undefined && waiter !== undefined)
    const signal = new AbortController().signal
    // The fetcher takes the job alone, before the waiter asks: the waiter sees its fetching: key.
    assert.equal(await fetcher.storm.await(digest, signal), 'chosen')
    const outcome = waiter.storm.await(digest, signal)
    // Its download shows after 1.5 times the wait: within the grace, so the waiter streams it.
    startDownloadWhenChosen(fetcher, digest, 450)
    assert.equal(await outcome, 'source')
    assert.deepEqual(waiter.outcomes, ['source'])
    fetcher.storm.close()
    waiter.storm.close()
  })

  it('never waits longer than the bound when the chosen node never delivers', async () => {
    const nodes = makeNodes(IDS.slice(0, 3), { waitMs: 300, collectMs: 30 })
    const digest = digestOf('dead-layer')
    const signal = new AbortController().signal
    // The chosen node's containerd never starts (it died): nobody ever advertises arriving.
    const started = performance.now()
    const outcomes = await Promise.all(nodes.map(async (n) => await n.storm.await(digest, signal)))
    const tookMs = performance.now() - started
    assert.equal(outcomes.filter((o) => o === 'chosen').length, 1)
    assert.equal(outcomes.filter((o) => o === 'timeout').length, 2, `outcomes ${outcomes.join(',')}`)
    // Bounded: well past 300 ms would mean a wait that does not end (not a timing measurement).
    assert.ok(tookMs < 5000, `waits ended after ${Math.round(tookMs)} ms`)
    for (const node of nodes) node.storm.close()
  })

  it('answers at once when a node holds the blob, and shares one wait between requests for the same blob', async () => {
    const nodes = makeNodes(IDS.slice(0, 2))
    const [a, b] = nodes
    assert.ok(a !== undefined && b !== undefined)
    const held = digestOf('held')
    b.router.advertise([held])
    assert.equal(await a.storm.await(held, new AbortController().signal), 'source')

    const digest = digestOf('shared')
    const signal = new AbortController().signal
    const both = await Promise.all([a.storm.await(digest, signal), a.storm.await(digest, signal)])
    assert.equal(both[0], both[1])
    // One wait, one outcome counted.
    assert.equal(a.outcomes.length, 2)
    a.storm.close()
    b.storm.close()
  })

  it('refuses to wait for more blobs than its bound, and a client that leaves does not end the shared wait', async () => {
    const [node, other] = makeNodes(['n1', 'n2'], { maxWaiting: 1, waitMs: 400, collectMs: 400 })
    assert.ok(node !== undefined && other !== undefined)
    const leaving = new AbortController()
    const first = node.storm.await(digestOf('one'), leaving.signal)
    const staying = node.storm.await(digestOf('one'), new AbortController().signal)
    assert.equal(await node.storm.await(digestOf('two'), new AbortController().signal), 'busy')
    leaving.abort(new Error('client left'))
    await assert.rejects(first, /client left/)
    assert.notEqual(await staying, 'busy')
    node.storm.close()
    other.storm.close()
  })

  it('is off with a zero wait', async () => {
    const [node] = makeNodes(['n1'], { waitMs: 0 })
    assert.ok(node !== undefined)
    assert.equal(node.storm.isEnabled, false)
    assert.equal(await node.storm.await(digestOf('x'), new AbortController().signal), 'busy')
    assert.equal(node.keys.size, 0)
  })
})

describe('KeyOverlay', () => {
  it('keeps its keys across a store snapshot and withdraws a counted key on its last remove', () => {
    const network = new MemoryRouterNetwork()
    const router = new MemoryRouter({ network }, { id: 'n1', registryAddress: '127.0.0.1:5000' })
    const keys = new KeyOverlay(router)
    const digest = digestOf('k')
    assert.equal(keys.add(wantKey(digest)), true)
    assert.equal(keys.add(wantKey(digest)), true)
    keys.replaceAll([digestOf('store-key')])
    assert.deepEqual(network.get(wantKey(digest)).map((p) => p.id), ['n1'])
    assert.deepEqual(network.get(digestOf('store-key')).map((p) => p.id), ['n1'])
    keys.remove(wantKey(digest))
    assert.deepEqual(network.get(wantKey(digest)).map((p) => p.id), ['n1'])
    keys.remove(wantKey(digest))
    assert.deepEqual(network.get(wantKey(digest)), [])
    keys.remove(wantKey(digest))
    assert.equal(keys.size, 0)
  })
})
