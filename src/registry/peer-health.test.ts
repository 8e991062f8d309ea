import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { BadPeers, PeerLoad } from './peer-health.js'

describe('BadPeers', () => {
  it('remembers a peer per key until the TTL passes', () => {
    let now = 1000
    const bad = new BadPeers({ ttlMs: 100, now: () => now })
    bad.add('sha256:a', 'p1')
    assert.ok(bad.has('sha256:a', 'p1'))
    assert.equal(bad.has('sha256:b', 'p1'), false, 'only for that key')
    assert.equal(bad.has('sha256:a', 'p2'), false)
    now += 100
    assert.equal(bad.has('sha256:a', 'p1'), false)
    assert.equal(bad.keyCount, 0, 'expired entries are dropped when checked')
  })

  it('keeps at most maxKeys keys, dropping the least recently marked', () => {
    const bad = new BadPeers({ maxKeys: 2 })
    bad.add('k1', 'p')
    bad.add('k2', 'p')
    bad.add('k1', 'q')
    bad.add('k3', 'p')
    assert.equal(bad.keyCount, 2)
    assert.equal(bad.has('k2', 'p'), false)
    assert.ok(bad.has('k1', 'p'))
    assert.ok(bad.has('k3', 'p'))
    assert.equal(bad.count('k1'), 2)
  })
})

describe('PeerLoad', () => {
  it('counts requests in flight per peer; ending twice counts once', () => {
    const load = new PeerLoad()
    const end1 = load.begin('p')
    const end2 = load.begin('p')
    assert.equal(load.active('p'), 2)
    end1()
    end1()
    assert.equal(load.active('p'), 1)
    end2()
    assert.equal(load.active('p'), 0)
  })

  it('scores recently failed peers after busy ones, for a while', () => {
    let now = 0
    const load = new PeerLoad({ recentFailureMs: 50, now: () => now })
    load.begin('busy')
    load.failed('dead')
    assert.ok(load.score('dead') > load.score('busy'))
    assert.ok(load.score('busy') > load.score('idle'))
    now = 50
    assert.equal(load.score('dead'), 0)
  })
})
