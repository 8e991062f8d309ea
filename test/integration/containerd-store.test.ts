// The containerd Store against a real containerd: the shared conformance suite, image walking,
// tags, missing content, multi-arch with one platform present, live events and bad names.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { startContainerd, containerdAvailable, type ContainerdInstance } from '../helpers/containerd.js'
import { buildImage, OCI_MANIFEST, type BuiltImage } from '../helpers/image.js'
import { waitFor } from '../helpers/wait.js'
import { ContainerdStore, ContainerdSupervisor } from '../../src/containerd/index.js'
import { storeConformance } from '../../src/store/conformance.js'
import { NotFoundError, StoreUnavailableError } from '../../src/store/errors.js'
import type { StoreChange } from '../../src/store/types.js'
import { createLogger } from '../../src/observability/logger.js'
import { regexFilter } from '../../src/oci/index.js'

const skip = containerdAvailable() ? false : 'needs root and containerd (scripts/test-all.sh installs it)'

interface Harness {
  store: ContainerdStore
  supervisor: ContainerdSupervisor
  changes: StoreChange[]
  logs: Array<Record<string, unknown>>
  stop(): Promise<void>
}

async function openStore (ctrd: ContainerdInstance, init: { contentPath?: string, filters?: string[] } = {}): Promise<Harness> {
  const logs: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write (chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') logs.push(JSON.parse(line) as Record<string, unknown>)
      done()
    }
  })
  const log = createLogger({ level: 'debug', destination: sink })
  const supervisor: ContainerdSupervisor = new ContainerdSupervisor({ log }, {
    socketPath: ctrd.socketPath,
    isSocketExplicit: true,
    namespace: 'k8s.io',
    session: (client, signal) => store.session(client, signal)
  })
  const store = new ContainerdStore({ log, supervisor }, {
    contentPath: init.contentPath ?? ctrd.contentPath,
    filters: (init.filters ?? []).map((f) => regexFilter(f))
  })
  const changes: StoreChange[] = []
  store.subscribe((change) => { changes.push(change) })
  supervisor.start()
  await waitFor(() => store.readiness().isReady, { timeoutMs: 15_000, what: 'containerd store to be ready' })
  return { store, supervisor, changes, logs, stop: () => supervisor.stop() }
}

describe('containerd store', { skip }, () => {
  let workDir: string
  let ctrd: ContainerdInstance
  let app: BuiltImage
  let multi: BuiltImage

  before(async () => {
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-store-'))
    app = await buildImage(path.join(workDir, 'app'), 'example.test/store/app:1.0', [4096, 70_000])
    multi = await buildImage(path.join(workDir, 'multi'), 'example.test/store/multi:3', [2048], { multiarch: true })
    ctrd = await startContainerd()
    await ctrd.importImage(app.archivePath!)
    await ctrd.importImage(multi.archivePath!)
  })
  after(async () => {
    await ctrd?.dispose()
    await fs.rm(workDir, { recursive: true, force: true })
  })

  storeConformance('containerd', async () => {
    const h = await openStore(ctrd)
    return {
      store: h.store,
      existingRef: 'example.test/store/app:1.0',
      existingRefDigest: app.top.digest,
      existing: { digest: app.top.digest, sizeBytes: app.top.size, mediaType: OCI_MANIFEST },
      notFoundDigest: `sha256:${'e'.repeat(64)}`,
      teardown: h.stop
    }
  })

  storeConformance('containerd', async () => {
    const layer = app.platforms[0]!.layers[1]!
    const h = await openStore(ctrd, { contentPath: path.join(workDir, 'not-a-content-dir') })
    assert.equal(h.store.contentDirectory(), undefined)
    return {
      store: h.store,
      existingRef: 'example.test/store/app:1.0',
      existingRefDigest: app.top.digest,
      existing: { digest: layer.digest, sizeBytes: layer.size, mediaType: layer.mediaType },
      notFoundDigest: `sha256:${'e'.repeat(64)}`,
      teardown: h.stop
    }
  }, { label: 'containerd, content through gRPC (no content directory)' })

  it('indexes tags and every digest present, and skips the platform that was not imported', async () => {
    const h = await openStore(ctrd)
    try {
      const keys = new Set(h.store.keys())
      for (const key of ['example.test/store/app:1.0', 'example.test/store/multi:3', ...app.allDigests()]) assert.ok(keys.has(key), `has ${key}`)
      const amd = multi.platforms.find((p) => p.architecture === 'amd64')!
      const arm = multi.platforms.find((p) => p.architecture === 'arm64')!
      for (const d of [multi.top.digest, amd.manifest.digest, amd.config.digest, ...amd.layers.map((l) => l.digest)]) assert.ok(keys.has(d), `has ${d}`)
      for (const d of [arm.manifest.digest, arm.config.digest, ...arm.layers.map((l) => l.digest)]) assert.ok(!keys.has(d), `lacks ${d}`)
      await assert.rejects(h.store.stat(arm.manifest.digest), NotFoundError)
      const snapshot = h.changes.find((c) => c.type === 'snapshot' && c.keys.length > 0)
      assert.ok(snapshot, 'a snapshot was emitted')
    } finally {
      await h.stop()
    }
  })

  it('does not advertise a layer missing from the content store', async () => {
    const other = await startContainerd()
    try {
      await other.importImage(app.archivePath!)
      const gone = app.platforms[0]!.layers[0]!.digest
      await other.ctr(['content', 'rm', gone])
      const h = await openStore(other)
      try {
        const keys = new Set(h.store.keys())
        assert.ok(!keys.has(gone), 'missing layer is not advertised')
        assert.ok(keys.has(app.top.digest))
        assert.ok(keys.has(app.platforms[0]!.layers[1]!.digest), 'the other layer still is')
        await assert.rejects(h.store.stat(gone), NotFoundError)
      } finally {
        await h.stop()
      }
    } finally {
      await other.dispose()
    }
  })

  it('emits changes for images imported and removed while running', async () => {
    const h = await openStore(ctrd)
    try {
      const late = await buildImage(path.join(workDir, 'late'), 'example.test/store/late:9', [3000])
      await ctrd.importImage(late.archivePath!)
      await waitFor(() => h.store.keys().includes('example.test/store/late:9'), { timeoutMs: 10_000, what: 'late image indexed' })
      const added = new Set(h.changes.filter((c) => c.type === 'add').flatMap((c) => c.keys))
      for (const key of ['example.test/store/late:9', ...late.allDigests()]) assert.ok(added.has(key), `added ${key}`)
      assert.equal(await h.store.resolve('example.test/store/late:9'), late.top.digest)

      await ctrd.removeImage('example.test/store/late:9')
      await waitFor(() => !h.store.keys().includes('example.test/store/late:9'), { timeoutMs: 10_000, what: 'late image withdrawn' })
      const removed = new Set(h.changes.filter((c) => c.type === 'remove').flatMap((c) => c.keys))
      for (const key of ['example.test/store/late:9', ...late.allDigests()]) assert.ok(removed.has(key), `removed ${key}`)
      await assert.rejects(h.store.resolve('example.test/store/late:9'), NotFoundError)
      // Content shared with a remaining image stays advertised.
      assert.ok(h.store.keys().includes(app.top.digest))
    } finally {
      await h.stop()
    }
  })

  it('skips images with unusable names and keeps serving the rest', async () => {
    const other = await startContainerd()
    try {
      await other.importImage(app.archivePath!)
      await other.ctr(['images', 'tag', 'example.test/store/app:1.0', 'example.test/UPPER/app:1.0'])
      await other.ctr(['images', 'tag', 'example.test/store/app:1.0', 'example.test/store/app:bad:tag'])
      await other.ctr(['images', 'tag', 'example.test/store/app:1.0', 'shortname:1'])
      const h = await openStore(other)
      try {
        const keys = h.store.keys()
        assert.ok(keys.includes('example.test/store/app:1.0'))
        assert.ok(!keys.some((k) => k.includes('UPPER') || k.includes('bad:tag') || k.startsWith('shortname')))
        const skipped = h.logs.filter((l) => l.msg === 'skipping image with unparsable name').map((l) => l.image)
        assert.deepEqual(skipped.sort(), ['example.test/UPPER/app:1.0', 'example.test/store/app:bad:tag'])
      } finally {
        await h.stop()
      }
    } finally {
      await other.dispose()
    }
  })

  it('neither lists nor serves tags matched by a registry filter', async () => {
    const h = await openStore(ctrd, { filters: [':3$'] })
    try {
      const keys = h.store.keys()
      assert.ok(keys.includes('example.test/store/app:1.0'))
      assert.ok(!keys.includes('example.test/store/multi:3'))
      assert.ok(!keys.includes(multi.top.digest), 'content only reachable through a filtered image is not advertised')
    } finally {
      await h.stop()
    }
  })

  it('switches to direct disk reads once a fresh containerd creates its content directory', async () => {
    const fresh = await startContainerd()
    try {
      const h = await openStore(fresh)
      try {
        assert.equal(h.store.contentDirectory(), undefined, 'no blobs/ directory yet: bytes come through gRPC')
        await fresh.importImage(app.archivePath!)
        await waitFor(async () => {
          if (h.store.keys().includes(app.top.digest)) (await h.store.open(app.top.digest)).destroy()
          return h.store.contentDirectory() === fresh.contentPath
        }, { timeoutMs: 15_000, what: 'the store to read from disk' })
      } finally {
        await h.stop()
      }
    } finally {
      await fresh.dispose()
    }
  })

  it('fails fast with StoreUnavailableError while containerd is down, and recovers', async () => {
    const other = await startContainerd()
    try {
      await other.importImage(app.archivePath!)
      const h = await openStore(other)
      try {
        await other.kill()
        await waitFor(() => !h.store.readiness().isReady, { timeoutMs: 10_000, what: 'store to notice containerd is gone' })
        assert.deepEqual(h.store.keys(), [], 'nothing advertised while containerd is unreachable')
        assert.ok(h.changes.some((c) => c.type === 'snapshot' && c.keys.length === 0))
        await assert.rejects(h.store.stat(app.top.digest), StoreUnavailableError)
        await assert.rejects(h.store.resolve('example.test/store/app:1.0'), StoreUnavailableError)
        await other.start()
        await waitFor(() => h.store.readiness().isReady, { timeoutMs: 15_000, what: 'store to reconnect' })
        assert.ok(h.store.keys().includes('example.test/store/app:1.0'))
        assert.equal(h.supervisor.reconnects, 1)
      } finally {
        await h.stop()
      }
    } finally {
      await other.dispose()
    }
  })
})
