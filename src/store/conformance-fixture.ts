// Not a test file: memory-store.test.ts runs this in a child process and expects failures,
// proving that the conformance suite notices a store that breaks the contract.
import { Readable } from 'node:stream'
import { storeConformance } from './conformance.js'
import { MemoryStore } from './memory-store.js'
import type { Descriptor, OpenOptions } from './types.js'

class LyingStore extends MemoryStore {
  override async stat (digest: string): Promise<Descriptor> {
    const real = await super.stat(digest)
    return { ...real, mediaType: 'application/vnd.oci.image.manifest.v1+json' }
  }

  override async open (digest: string, _options?: OpenOptions): Promise<Readable> {
    // Ignores ranges, flips bytes, and never reports missing content.
    if (!this.keys().includes(digest)) return Readable.from([])
    const stream = await super.open(digest)
    return stream.map((chunk: Buffer) => Buffer.from(chunk.map((b) => b ^ 0xff)))
  }
}

storeConformance('memory', async () => {
  const store = new LyingStore({ name: 'liar' })
  const existing = store.put('test')
  return {
    store,
    existing,
    notFoundDigest: new MemoryStore().put('absent').digest,
    teardown: async () => {}
  }
})
