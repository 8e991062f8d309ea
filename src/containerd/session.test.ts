// Content events exist from containerd 2.1; the test machines run 1.6, which never sends them,
// so this drives the session with a stand-in client that does.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { Writable } from 'node:stream'
import { describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { createLogger } from '../observability/logger.js'
import { MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST, regexFilter } from '../oci/index.js'
import type { StoreChange } from '../store/types.js'
import { grpc, type ContainerdClient, type ImageRecord } from './client.js'
import { ContentReader } from './content-reader.js'
import { ImageIndex } from './image-index.js'
import { ImageWalker } from './image-walker.js'
import { IndexSession } from './session.js'

const log = createLogger({ level: 'error', destination: new Writable({ write (_c, _e, done) { done() } }) })

/** Protobuf bytes of a message whose field 1 is `value` (ContentCreate.digest, ImageCreate.name). */
function field1 (value: string): Buffer {
  const bytes = Buffer.from(value)
  return Buffer.concat([Buffer.from([0x0a, bytes.length]), bytes])
}

class StandInContainerd {
  readonly namespace = 'k8s.io'
  readonly blobs = new Map<string, Buffer>()
  readonly images = new Map<string, ImageRecord>()
  readonly events = Object.assign(new EventEmitter(), { cancel: () => {} })

  add (content: string): { digest: string, size: number } {
    const bytes = Buffer.from(content)
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`
    this.blobs.set(digest, bytes)
    return { digest, size: bytes.length }
  }

  /** An image (manifest, config, one layer) in the store; returns its digests. */
  addImage (name: string): string[] {
    const config = this.add(`{"architecture":"amd64","os":"linux","rootfs":{},"n":"${name}"}`)
    const layer = this.add(`layer of ${name}`)
    const manifest = this.add(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, config: { mediaType: MEDIA_TYPE_OCI_CONFIG, ...config }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }] }))
    this.images.set(name, { name, labels: {}, target: { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: manifest.digest, sizeBytes: manifest.size } })
    return [manifest.digest, config.digest, layer.digest]
  }

  send (topic: string, value: string): void {
    this.events.emit('data', { namespace: this.namespace, topic, event: { type_url: 'x', value: field1(value) } })
  }

  subscribe (): EventEmitter { return this.events }
  async pluginExports (): Promise<undefined> { return undefined }
  async listImages (): Promise<ImageRecord[]> { return [...this.images.values()] }
  async getImage (name: string): Promise<ImageRecord> {
    const image = this.images.get(name)
    if (image === undefined) throw Object.assign(new Error('not found'), { code: grpc.status.NOT_FOUND })
    return image
  }

  /** What contentSizes answers with instead of the sizes, when set. */
  listingError: Error | undefined
  contentListings = 0
  infoCalls = 0

  async contentSizes (): Promise<Map<string, number>> {
    this.contentListings++
    if (this.listingError !== undefined) throw this.listingError
    return new Map([...this.blobs].map(([digest, blob]) => [digest, blob.length]))
  }

  async info (digest: string): Promise<{ digest: string, sizeBytes: number }> {
    this.infoCalls++
    const blob = this.blobs.get(digest)
    if (blob === undefined) throw Object.assign(new Error('not found'), { code: grpc.status.NOT_FOUND })
    return { digest, sizeBytes: blob.length }
  }

  read (digest: string): AsyncIterable<{ data: Buffer }> {
    const blob = this.blobs.get(digest)
    return (async function * () { if (blob !== undefined) yield { data: blob } })()
  }
}

async function startSession (filters: string[], ttlMs = 60_000, ctrd = new StandInContainerd()): Promise<{ ctrd: StandInContainerd, index: ImageIndex, changes: StoreChange[], stop: () => Promise<void> }> {
  const index = new ImageIndex()
  const changes: StoreChange[] = []
  const session = new IndexSession({
    log,
    index,
    walker: new ImageWalker({ log }, { filters: filters.map((f) => regexFilter(f)) }),
    reader: new ContentReader({ log }, { contentPath: '' }),
    emit: (change) => { changes.push(change) }
  }, { isLooseContentAdvertised: filters.length === 0, looseContentTtlMs: ttlMs, looseContentSweepMs: 10 })
  const controller = new AbortController()
  let synced = false
  const running = session.run(ctrd as unknown as ContainerdClient, controller.signal, { onSynced: () => { synced = true } }).catch(() => {})
  while (!synced) await delay(5)
  return { ctrd, index, changes, stop: async () => { controller.abort(); ctrd.events.emit('end'); await running } }
}

async function until (condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (condition()) return
    await delay(10)
  }
  assert.fail(`timed out waiting for ${what}`)
}

describe('IndexSession content events', () => {
  it('advertises new content at once when no filter is set, and withdraws it if no image claims it', async () => {
    const s = await startSession([], 50)
    try {
      const loose = s.ctrd.add('pulled blob')
      s.ctrd.send('/content/create', loose.digest)
      await until(() => s.changes.some((c) => c.type === 'add' && c.keys.includes(loose.digest)), 'the loose digest to be advertised')
      await until(() => s.changes.some((c) => c.type === 'remove' && c.keys.includes(loose.digest)), 'the unclaimed digest to expire')
      assert.ok(!s.index.has(loose.digest))
    } finally {
      await s.stop()
    }
  })

  it('keeps a digest an image claims, and withdraws it with that image', async () => {
    const s = await startSession([], 50)
    try {
      const digests = s.ctrd.addImage('example.test/app:1')
      const layer = digests[2]!
      s.ctrd.send('/content/create', layer)
      await until(() => s.index.has(layer), 'the layer to be advertised')
      s.ctrd.send('/images/create', 'example.test/app:1')
      await until(() => s.index.has('example.test/app:1'), 'the image to be indexed')
      // A loose digest announced later expires; the layer, held by the image now, stays.
      const sentinel = s.ctrd.add('sentinel')
      s.ctrd.send('/content/create', sentinel.digest)
      await until(() => s.changes.some((c) => c.type === 'remove' && c.keys.includes(sentinel.digest)), 'a later loose digest to expire')
      assert.ok(s.index.has(layer))
      assert.ok(!s.changes.some((c) => c.type === 'remove' && c.keys.includes(layer)))
      s.ctrd.images.delete('example.test/app:1')
      s.ctrd.send('/images/delete', 'example.test/app:1')
      await until(() => s.changes.some((c) => c.type === 'remove' && c.keys.includes(layer)), 'the layer to leave with its image')
    } finally {
      await s.stop()
    }
  })

  it('advertises nothing from a content event when registry filters are set', async () => {
    const s = await startSession([':latest$'])
    try {
      const digests = s.ctrd.addImage('example.test/app:latest')
      for (const digest of digests) s.ctrd.send('/content/create', digest)
      s.ctrd.send('/images/create', 'example.test/app:latest')
      // An event after them, so their handling is done when it shows up.
      const marker = s.ctrd.addImage('example.test/marker:1')
      s.ctrd.send('/images/create', 'example.test/marker:1')
      await until(() => s.index.has('example.test/marker:1'), 'the marker image to be indexed')
      for (const digest of digests) assert.ok(!s.index.has(digest), `filtered content ${digest} is not advertised`)
      const added = new Set(s.changes.flatMap((c) => c.type === 'add' ? c.keys : []))
      for (const digest of digests) assert.ok(!added.has(digest))
      assert.ok(added.has(marker[2]!))
    } finally {
      await s.stop()
    }
  })
})

describe('IndexSession relist', () => {
  function withImages (): { ctrd: StandInContainerd, keys: string[] } {
    const ctrd = new StandInContainerd()
    const keys: string[] = []
    for (let i = 0; i < 5; i++) keys.push(`example.test/app-${i}:1`, ...ctrd.addImage(`example.test/app-${i}:1`))
    // Content no image holds is listed but not advertised.
    ctrd.add('an unreferenced blob')
    return { ctrd, keys }
  }

  it('learns every size from one content listing and asks nothing per digest', async () => {
    const { ctrd, keys } = withImages()
    const s = await startSession([], 60_000, ctrd)
    try {
      assert.equal(ctrd.contentListings, 1)
      assert.equal(ctrd.infoCalls, 0)
      assert.deepEqual(new Set(s.index.keys()), new Set(keys))
    } finally {
      await s.stop()
    }
  })

  it('asks per digest, and indexes the same keys, when the listing fails', async () => {
    const { ctrd, keys } = withImages()
    ctrd.listingError = Object.assign(new Error('unknown method List'), { code: grpc.status.UNIMPLEMENTED })
    const s = await startSession([], 60_000, ctrd)
    try {
      assert.equal(ctrd.contentListings, 1)
      assert.equal(ctrd.infoCalls, keys.length - 5, 'one Info per digest')
      assert.deepEqual(new Set(s.index.keys()), new Set(keys))
    } finally {
      await s.stop()
    }
  })

  it('skips, as the per-digest walk does, a layer the listing lacks', async () => {
    const { ctrd, keys } = withImages()
    const gone = keys[3]!
    ctrd.blobs.delete(gone)
    const s = await startSession([], 60_000, ctrd)
    try {
      assert.equal(ctrd.infoCalls, 0)
      assert.ok(!s.index.has(gone))
      assert.deepEqual(new Set(s.index.keys()), new Set(keys.filter((k) => k !== gone)))
    } finally {
      await s.stop()
    }
  })
})
