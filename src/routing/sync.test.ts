import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createLogger } from '../observability/logger.js'
import { MemoryStore } from '../store/memory-store.js'
import { MemoryRouter, MemoryRouterNetwork } from './memory-router.js'
import { startSync } from './sync.js'
import type { Peer } from './types.js'

const log = createLogger({ level: 'silent' })

async function collect (router: MemoryRouter, key: string): Promise<Peer[]> {
  const out: Peer[] = []
  for await (const p of router.lookup(key)) out.push(p)
  return out
}

describe('startSync', () => {
  it('advertises tags pinned to the digest they name in the store, and follows a tag that moves', async () => {
    const network = new MemoryRouterNetwork()
    const router = new MemoryRouter({ network }, { id: 'self', registryAddress: '10.0.0.1:5000' })
    const other = new MemoryRouter({ network }, { id: 'other', registryAddress: '10.0.0.2:5000' })
    const store = new MemoryStore()
    const tags = new Map<string, string>()
    const a = store.put('a')
    const b = store.put('b')
    store.tag('example.com/team/app:1', a.digest)
    tags.set('example.com/team/app:1', a.digest)
    const stop = startSync({ store, router, log, tagDigests: () => tags })
    try {
      assert.deepEqual(await collect(other, 'example.com/team/app:1'), [{ id: 'self', registryAddress: '10.0.0.1:5000', digest: a.digest }])
      assert.deepEqual(await collect(other, a.digest), [{ id: 'self', registryAddress: '10.0.0.1:5000' }])

      // The tag moves to content already held: no key appears or goes, the pin still follows.
      tags.set('example.com/team/app:1', b.digest)
      store.put('c')
      assert.equal((await collect(other, 'example.com/team/app:1'))[0]?.digest, b.digest)

      // A tag the store cannot name a digest for goes out bare (peers will not trust it for the tag).
      store.tag('example.com/team/unknown:1', b.digest)
      assert.deepEqual(await collect(other, 'example.com/team/unknown:1'), [{ id: 'self', registryAddress: '10.0.0.1:5000' }])

      store.untag('example.com/team/app:1')
      assert.deepEqual(await collect(other, 'example.com/team/app:1'), [])
    } finally {
      stop()
    }
  })
})
