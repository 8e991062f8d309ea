import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, it } from 'node:test'
import { storeConformance } from './conformance.js'
import { NotFoundError, StoreUnavailableError } from './errors.js'
import { MemoryStore } from './memory-store.js'
import type { StoreChange } from './types.js'

storeConformance('memory', async () => {
  const store = new MemoryStore({ chunkBytes: 3 })
  const existing = store.put('test', 'application/octet-stream')
  store.tag('example.com/foo/bar:existing', existing.digest)
  const missing = new MemoryStore().put('not stored here')
  return {
    store,
    existing,
    existingRef: 'example.com/foo/bar:existing',
    existingRefDigest: existing.digest,
    notFoundDigest: missing.digest,
    teardown: async () => {}
  }
})

// The suite must be able to fail: run it in a child process against stores that lie.
describe('store conformance catches broken stores', () => {
  it('fails the checks a lying store violates, and only those', () => {
    const fixture = fileURLToPath(new URL('./conformance-fixture.js', import.meta.url))
    // Without this the child sees it runs under a test runner and skips its own tests.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env
    const child = spawnSync(process.execPath, ['--test-reporter=tap', fixture], { encoding: 'utf8', env })
    assert.equal(child.status, 1, child.stderr)
    const failed = [...child.stdout.matchAll(/^\s*not ok \d+ - (.+)$/gm)].map((m) => m[1])
    for (const name of [
      'reports its name',
      'describes existing content exactly',
      'opens existing content whose bytes hash to its digest',
      'opens a range and returns exactly those bytes',
      'rejects open of an unknown digest with NotFoundError'
    ]) {
      assert.ok(failed.includes(name), `expected failure of "${name}", failed: ${failed.join(', ')}`)
    }
    assert.ok(!failed.includes('rejects stat of an unknown digest with NotFoundError'))
  })
})

describe('MemoryStore', () => {
  it('computes the sha256 digest of the bytes', () => {
    const store = new MemoryStore()
    // sha256("test")
    assert.deepEqual(store.put('test'), {
      digest: 'sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
      sizeBytes: 4,
      mediaType: 'application/octet-stream'
    })
  })

  it('emits add and remove changes for content and tags', () => {
    const store = new MemoryStore()
    const changes: StoreChange[] = []
    const unsubscribe = store.subscribe((c) => changes.push(c))
    const d = store.put('a')
    store.put('a')
    store.tag('docker.io/library/a:1', d.digest)
    store.untag('docker.io/library/a:1')
    store.remove(d.digest)
    store.remove(d.digest)
    unsubscribe()
    store.put('b')
    assert.deepEqual(changes, [
      { type: 'add', keys: [d.digest] },
      { type: 'add', keys: ['docker.io/library/a:1'] },
      { type: 'remove', keys: ['docker.io/library/a:1'] },
      { type: 'remove', keys: [d.digest] }
    ])
  })

  it('goes unavailable with a reason and announces empty then full snapshots', async () => {
    const store = new MemoryStore()
    const d = store.put('a')
    const changes: StoreChange[] = []
    store.subscribe((c) => changes.push(c))
    store.setReadiness(false, 'containerd: connect ECONNREFUSED /x.sock')
    assert.deepEqual(store.readiness(), { isReady: false, reason: 'containerd: connect ECONNREFUSED /x.sock' })
    assert.deepEqual(store.keys(), [])
    await assert.rejects(store.stat(d.digest), (err: unknown) =>
      err instanceof StoreUnavailableError && err.reason === 'containerd: connect ECONNREFUSED /x.sock')
    await assert.rejects(store.open(d.digest), StoreUnavailableError)
    await assert.rejects(store.resolve('docker.io/library/a:1'), StoreUnavailableError)
    // Changes while unavailable are not announced on their own; the next snapshot carries them.
    const e = store.put('b')
    store.setReadiness(true)
    assert.deepEqual(changes, [
      { type: 'snapshot', keys: [] },
      { type: 'snapshot', keys: [d.digest, e.digest] }
    ])
    assert.equal((await store.stat(d.digest)).sizeBytes, 1)
  })

  it('resolves a tag whose content is missing, then stat rejects NotFoundError', async () => {
    const store = new MemoryStore()
    const missing = new MemoryStore().put('x').digest
    store.tag('docker.io/library/a:1', missing)
    assert.equal(await store.resolve('docker.io/library/a:1'), missing)
    await assert.rejects(store.stat(missing), NotFoundError)
  })

  it('rejects ranges outside the content', async () => {
    const store = new MemoryStore()
    const d = store.put('abc')
    await assert.rejects(store.open(d.digest, { range: { start: 3, end: 3 } }), RangeError)
    await assert.rejects(store.open(d.digest, { range: { start: 2, end: 1 } }), RangeError)
  })

  it('rejects tags that are not registry/repository:tag', () => {
    const store = new MemoryStore()
    assert.throws(() => store.tag('latest', 'sha256:00'), TypeError)
    assert.throws(() => store.tag('localhost:5000/foo', 'sha256:00'), TypeError)
  })

  it('destroys an open stream when its signal aborts', async () => {
    const store = new MemoryStore({ chunkBytes: 1 })
    const d = store.put(Buffer.alloc(1024))
    const controller = new AbortController()
    const stream = await store.open(d.digest, { signal: controller.signal })
    let received = 0
    await assert.rejects((async () => {
      for await (const chunk of stream) {
        received += (chunk as Buffer).length
        if (received === 10) controller.abort()
      }
    })(), { name: 'AbortError' })
    assert.ok(received < 1024)
  })

  it('keeps delivering to other listeners when one throws', () => {
    const store = new MemoryStore()
    const seen: StoreChange[] = []
    store.subscribe(() => { throw new Error('boom') })
    store.subscribe((c) => seen.push(c))
    assert.throws(() => store.put('a'), AggregateError)
    assert.equal(seen.length, 1)
  })
})
