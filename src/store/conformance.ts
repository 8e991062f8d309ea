import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { NotFoundError } from './errors.js'
import type { Descriptor, Store } from './types.js'

export interface StoreConformanceContext {
  store: Store
  /** A tag `registry/repository:tag` the store holds; checked only when given. */
  existingRef?: string
  /** The digest `existingRef` resolves to. */
  existingRefDigest?: string
  /** Content the store holds, described exactly as stat() must return it. */
  existing: Descriptor
  /** A well-formed digest the store does not hold. */
  notFoundDigest: string
  /** A well-formed tag the store does not hold; defaults to one nobody would push. */
  notFoundRef?: string
  teardown(): Promise<void>
}

const DEFAULT_NOT_FOUND_REF = 'example.com/spegel-conformance/not-found:never'

/**
 * Registers the Store contract (Spegel's pkg/store/storetest/conformance.go) as node:test suites.
 * `name` is also the `store.name` every implementation must report. `setup` runs once for the
 * suite.
 */
export function storeConformance (name: string, setup: () => Promise<StoreConformanceContext>, options: { label?: string } = {}): void {
  describe(`store conformance: ${options.label ?? name}`, () => {
    let ctx: StoreConformanceContext | undefined
    const get = (): StoreConformanceContext => {
      assert.ok(ctx !== undefined, 'setup did not complete')
      return ctx
    }

    before(async () => {
      ctx = await setup()
      assert.ok(ctx.existing.digest !== '', 'existing descriptor must be set')
      assert.ok(ctx.notFoundDigest !== '', 'notFoundDigest must be set')
      assert.notEqual(ctx.notFoundDigest, ctx.existing.digest)
    })
    after(async () => {
      await ctx?.teardown()
    })

    it('reports its name', () => {
      assert.equal(get().store.name, name)
    })

    it('is ready', () => {
      assert.equal(get().store.readiness().isReady, true)
    })

    it('rejects resolve of an unknown tag with NotFoundError', async () => {
      const { store, notFoundRef } = get()
      await assert.rejects(store.resolve(notFoundRef ?? DEFAULT_NOT_FOUND_REF), NotFoundError)
    })

    it('resolves the existing tag to its digest', async (t) => {
      const { store, existingRef, existingRefDigest } = get()
      if (existingRef === undefined) {
        t.skip('no existingRef configured')
        return
      }
      assert.equal(await store.resolve(existingRef), existingRefDigest)
    })

    it('rejects stat of an unknown digest with NotFoundError', async () => {
      const { store, notFoundDigest } = get()
      await assert.rejects(store.stat(notFoundDigest), NotFoundError)
    })

    it('rejects open of an unknown digest with NotFoundError', async () => {
      const { store, notFoundDigest } = get()
      await assert.rejects(store.open(notFoundDigest), NotFoundError)
    })

    it('describes existing content exactly', async () => {
      const { store, existing } = get()
      const got = await store.stat(existing.digest)
      assert.deepEqual(
        { digest: got.digest, sizeBytes: got.sizeBytes, mediaType: got.mediaType },
        { digest: existing.digest, sizeBytes: existing.sizeBytes, mediaType: existing.mediaType }
      )
    })

    it('opens existing content whose bytes hash to its digest', async () => {
      const { store, existing } = get()
      const bytes = await readAll(await store.open(existing.digest))
      assert.equal(bytes.length, existing.sizeBytes)
      assert.equal(sha256(bytes), existing.digest)
    })

    it('opens a range and returns exactly those bytes', async () => {
      const { store, existing } = get()
      const whole = await readAll(await store.open(existing.digest))
      const size = whole.length
      assert.ok(size > 0, 'existing content must not be empty to test ranges')
      const ranges = [
        { start: 0, end: 0 },
        { start: Math.floor(size / 4), end: Math.max(Math.floor(size / 4), Math.floor(size / 2)) },
        { start: size - 1, end: size - 1 },
        { start: 0, end: size - 1 }
      ]
      for (const range of ranges) {
        const part = await readAll(await store.open(existing.digest, { range }))
        assert.ok(part.equals(whole.subarray(range.start, range.end + 1)), `range ${range.start}-${range.end}`)
      }
    })

    it('rejects calls with an already aborted signal', async () => {
      const { store, existing } = get()
      const signal = AbortSignal.abort()
      await assert.rejects(store.stat(existing.digest, { signal }), { name: 'AbortError' })
      await assert.rejects(store.open(existing.digest, { signal }), { name: 'AbortError' })
    })

    it('lists the existing content among its keys', () => {
      const { store, existing, existingRef } = get()
      const keys = store.keys()
      assert.ok(keys.includes(existing.digest), `keys lack ${existing.digest}`)
      if (existingRef !== undefined) assert.ok(keys.includes(existingRef), `keys lack ${existingRef}`)
    })

    it('returns an unsubscribe function from subscribe', () => {
      const unsubscribe = get().store.subscribe(() => {})
      assert.equal(typeof unsubscribe, 'function')
      unsubscribe()
      unsubscribe()
    })
  })
}

async function readAll (stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const chunk of stream) parts.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array))
  return Buffer.concat(parts)
}

function sha256 (bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}
