import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { LocalOnlyRouter, MemoryRouter, MemoryRouterNetwork } from './memory-router.js'
import { routerConformance } from './conformance.js'
import type { Peer, Router } from './types.js'

async function collect (router: Router, key: string, options?: Parameters<Router['lookup']>[1]): Promise<Peer[]> {
  const peers: Peer[] = []
  for await (const peer of router.lookup(key, options)) peers.push(peer)
  return peers
}

describe('MemoryRouter', () => {
  const network = (): { a: MemoryRouter, b: MemoryRouter, c: MemoryRouter } => {
    const net = new MemoryRouterNetwork()
    return {
      a: new MemoryRouter({ network: net }, { id: 'a', registryAddress: '10.0.0.1:5000' }),
      b: new MemoryRouter({ network: net }, { id: 'b', registryAddress: '10.0.0.2:5000' }),
      c: new MemoryRouter({ network: net }, { id: 'c', registryAddress: '[fd00::3]:5000' })
    }
  }

  it('finds keys advertised by other routers on the same network, never itself', async () => {
    const { a, b, c } = network()
    a.advertise(['sha256:x'])
    b.advertise(['sha256:x', 'sha256:x'])
    assert.deepEqual(await collect(c, 'sha256:x'), [
      { id: 'a', registryAddress: '10.0.0.1:5000' },
      { id: 'b', registryAddress: '10.0.0.2:5000' }
    ])
    assert.deepEqual(await collect(a, 'sha256:x'), [{ id: 'b', registryAddress: '10.0.0.2:5000' }])
    assert.deepEqual(await collect(a, 'sha256:unknown'), [])
  })

  it('honours the limit', async () => {
    const { a, b, c } = network()
    a.advertise(['k'])
    b.advertise(['k'])
    assert.equal((await collect(c, 'k', { limit: 1 })).length, 1)
  })

  it('withdraw and replaceAll remove this node only', async () => {
    const { a, b, c } = network()
    a.advertise(['k1', 'k2'])
    b.advertise(['k1'])
    a.withdraw(['k1'])
    assert.deepEqual((await collect(c, 'k1')).map((p) => p.id), ['b'])
    a.replaceAll(['k3'])
    assert.deepEqual(await collect(c, 'k2'), [])
    assert.deepEqual((await collect(c, 'k3')).map((p) => p.id), ['a'])
    assert.deepEqual(a.advertisedKeys(), ['k3'])
    assert.deepEqual([...a.network.keys()].sort(), ['k1', 'k3'])
  })

  it('rejects a lookup with an aborted signal', async () => {
    const { a } = network()
    await assert.rejects(collect(a, 'k', { signal: AbortSignal.abort() }), { name: 'AbortError' })
  })

  it('reports readiness with a reason', () => {
    const { a } = network()
    assert.deepEqual(a.readiness(), { isReady: true })
    a.setReadiness(false, 'routing table is empty')
    assert.deepEqual(a.readiness(), { isReady: false, reason: 'routing table is empty' })
  })

  it('works without a shared network', async () => {
    const r = new MemoryRouter({}, { id: 'solo', registryAddress: '127.0.0.1:5000' })
    r.advertise(['k'])
    assert.deepEqual(await collect(r, 'k'), [])
    assert.deepEqual(r.network.get('k'), [{ id: 'solo', registryAddress: '127.0.0.1:5000' }])
  })
})

describe('LocalOnlyRouter', () => {
  it('is ready, finds nobody and records advertised keys', async () => {
    const r = new LocalOnlyRouter()
    assert.deepEqual(r.readiness(), { isReady: true })
    r.advertise(['a', 'b'])
    assert.deepEqual(await collect(r, 'a'), [])
    r.withdraw(['a'])
    assert.deepEqual(r.advertisedKeys(), ['b'])
    r.replaceAll(['c'])
    assert.deepEqual(r.advertisedKeys(), ['c'])
  })
})

routerConformance('MemoryRouter', async () => {
  const network = new MemoryRouterNetwork()
  const selves = [
    { id: 'node-a', registryAddress: '10.0.0.1:5000' },
    { id: 'node-b', registryAddress: '10.0.0.2:5000' },
    { id: 'node-c', registryAddress: '[fd00::3]:5000' }
  ]
  return {
    routers: selves.map((s) => new MemoryRouter({ network }, s)),
    selves,
    settle: async () => {},
    teardown: async () => {}
  }
})
