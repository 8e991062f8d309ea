import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { Writable } from 'node:stream'
import { describe, it } from 'node:test'
import { createLogger } from '../observability/logger.js'
import { MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCTET_STREAM, regexFilter } from '../oci/index.js'
import { ImageWalker, type WalkSource } from './image-walker.js'

const LAYER = 'application/vnd.oci.image.layer.v1.tar'
const log = createLogger({ level: 'error', destination: new Writable({ write (_c, _e, done) { done() } }) })

/** A content store in memory: what the walk would find in containerd. */
class MemorySource implements WalkSource {
  readonly blobs = new Map<string, Buffer>()
  add (content: string | Buffer): { digest: string, size: number } {
    const bytes = typeof content === 'string' ? Buffer.from(content) : content
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`
    this.blobs.set(digest, bytes)
    return { digest, size: bytes.length }
  }

  async sizeOf (digest: string): Promise<number | undefined> {
    return this.blobs.get(digest)?.length
  }

  async read (digest: string): Promise<Uint8Array | undefined> {
    return this.blobs.get(digest)
  }
}

function manifestOf (source: MemorySource, layerType = LAYER): { manifest: { digest: string, size: number }, config: { digest: string }, layers: Array<{ digest: string }> } {
  const config = source.add('{"architecture":"amd64","os":"linux","rootfs":{}}')
  const layers = [source.add(Buffer.from('layer one')), source.add(Buffer.from('layer two'))]
  const manifest = source.add(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_MANIFEST,
    config: { mediaType: MEDIA_TYPE_OCI_CONFIG, ...config },
    layers: layers.map((l) => ({ mediaType: layerType, ...l }))
  }))
  return { manifest, config, layers }
}

describe('ImageWalker', () => {
  const signal = new AbortController().signal

  it('indexes the tag and every digest present, root first, in document order', async () => {
    const source = new MemorySource()
    const { manifest, config, layers } = manifestOf(source)
    const walker = new ImageWalker({ log }, { filters: [] })
    const walked = await walker.index(source, 'example.test/app:1', { mediaType: MEDIA_TYPE_OCI_MANIFEST, ...manifest, sizeBytes: manifest.size }, signal)
    assert.ok(walked)
    assert.equal(walked.image.tag, 'example.test/app:1')
    assert.deepEqual(walked.image.digests, [manifest.digest, config.digest, ...layers.map((l) => l.digest)])
    assert.equal(walked.mediaTypes.get(layers[0]!.digest), LAYER)
    assert.equal(walked.image.sizeBytes, [...source.blobs.values()].reduce((n, b) => n + b.length, 0))
  })

  it('skips content that is missing, with its children (one platform of an index)', async () => {
    const source = new MemorySource()
    const present = manifestOf(source)
    const absent = { digest: `sha256:${'a'.repeat(64)}`, size: 10 }
    const index = source.add(JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_OCI_INDEX,
      manifests: [{ mediaType: MEDIA_TYPE_OCI_MANIFEST, ...present.manifest }, { mediaType: MEDIA_TYPE_OCI_MANIFEST, ...absent }]
    }))
    const walker = new ImageWalker({ log }, { filters: [] })
    const walked = await walker.index(source, 'example.test/multi@' + index.digest, { mediaType: MEDIA_TYPE_OCI_INDEX, digest: index.digest, sizeBytes: index.size }, signal)
    assert.ok(walked)
    assert.equal(walked.image.tag, undefined)
    assert.ok(!walked.image.digests.includes(absent.digest))
    assert.equal(walked.image.digests.length, 1 + 4)
  })

  it('never passes on a media type a header cannot carry, from a manifest or from the image record', async () => {
    const source = new MemorySource()
    const { manifest, layers } = manifestOf(source, 'application/vnd.oci.image.layer.v1.tar\r\nX-Evil: 1')
    const walker = new ImageWalker({ log }, { filters: [] })
    const walked = await walker.index(source, 'example.test/app:1', { mediaType: MEDIA_TYPE_OCI_MANIFEST, ...manifest, sizeBytes: manifest.size }, signal)
    assert.ok(walked)
    for (const layer of layers) {
      assert.ok(walked.image.digests.includes(layer.digest), 'the layer is still indexed')
      assert.equal(walked.mediaTypes.get(layer.digest), MEDIA_TYPE_OCTET_STREAM)
    }
    const blob = source.add('just bytes')
    const odd = await walker.index(source, 'example.test/blob:1', { mediaType: 'application/ȷson', digest: blob.digest, sizeBytes: blob.size }, signal)
    assert.equal(odd?.mediaTypes.get(blob.digest), MEDIA_TYPE_OCTET_STREAM)
  })

  it('skips names without a registry, unparsable names and filtered images', async () => {
    const source = new MemorySource()
    const { manifest } = manifestOf(source)
    const target = { mediaType: MEDIA_TYPE_OCI_MANIFEST, ...manifest, sizeBytes: manifest.size }
    const walker = new ImageWalker({ log }, { filters: [regexFilter(':latest$')] })
    assert.equal(await walker.index(source, 'sha256:' + 'b'.repeat(64), target, signal), undefined)
    assert.equal(await walker.index(source, 'example.test/UPPER/app:1', target, signal), undefined)
    assert.equal(await walker.index(source, 'example.test/app:latest', target, signal), undefined)
    assert.ok(await walker.index(source, 'example.test/app:1', target, signal))
  })

  it('stops when its signal aborts', async () => {
    const source = new MemorySource()
    const { manifest } = manifestOf(source)
    const walker = new ImageWalker({ log }, { filters: [] })
    const aborted = AbortSignal.abort(new Error('session lost'))
    await assert.rejects(walker.index(source, 'example.test/app:1', { mediaType: MEDIA_TYPE_OCI_MANIFEST, ...manifest, sizeBytes: manifest.size }, aborted), /session lost/)
  })
})
