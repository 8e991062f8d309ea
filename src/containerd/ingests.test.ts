// IngestWatcher against real directories laid out as containerd's local content store does.
import { describe, it, beforeEach, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { Writable } from 'node:stream'
import { createLogger } from '../observability/logger.js'
import { IngestWatcher, type IngestChange } from './ingests.js'

const log = createLogger({ level: 'error', destination: new Writable({ write (_c, _e, done) { done() } }) })
const EVENTUALLY_MS = 5_000

async function eventually (probe: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + EVENTUALLY_MS
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await delay(10)
  }
}

interface Fake {
  digest: string
  hex: string
  bytes: Buffer
  dir: string
  data: string
}

/** A blob and the ingest dir containerd would make for it (ref and total; no data yet). */
async function startIngest (contentPath: string, opts: { size?: number, kind?: string, refSuffix?: string, bytes?: Buffer, total?: boolean } = {}): Promise<Fake> {
  const bytes = opts.bytes ?? randomBytes(opts.size ?? 4096)
  const hex = createHash('sha256').update(bytes).digest('hex')
  const ref = `${opts.kind ?? 'layer'}-sha256:${hex}${opts.refSuffix ?? ''}`
  const dir = path.join(contentPath, 'ingest', createHash('sha256').update(ref + randomBytes(4).toString('hex')).digest('hex'))
  await fs.mkdir(dir, { recursive: true })
  await fs.writeFile(path.join(dir, 'ref'), ref)
  await fs.writeFile(path.join(dir, 'startedat'), new Date().toISOString())
  await fs.writeFile(path.join(dir, 'updatedat'), new Date().toISOString())
  if (opts.total !== false) await fs.writeFile(path.join(dir, 'total'), String(bytes.length))
  const data = path.join(dir, 'data')
  await fs.writeFile(data, '')
  return { digest: `sha256:${hex}`, hex, bytes, dir, data }
}

async function commit (contentPath: string, f: Fake): Promise<string> {
  const blob = path.join(contentPath, 'blobs', 'sha256', f.hex)
  await fs.mkdir(path.dirname(blob), { recursive: true })
  await fs.rename(f.data, blob)
  await fs.rm(f.dir, { recursive: true })
  return blob
}

describe('IngestWatcher', () => {
  let contentPath: string
  let watcher: IngestWatcher | undefined
  let changes: IngestChange[]
  /** Digests of 'abandoned' changes, kept apart: most tests follow what is offered. */
  let abandoned: string[]
  let completed: string[]

  beforeEach(async () => {
    contentPath = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-ingest-'))
    changes = []
    abandoned = []
    completed = []
  })
  afterEach(async () => {
    watcher?.stop()
    watcher = undefined
    await fs.rm(contentPath, { recursive: true, force: true })
  })

  function watch (init: Partial<ConstructorParameters<typeof IngestWatcher>[1]> = {}): IngestWatcher {
    watcher = new IngestWatcher({ log }, { contentPath, rescanMs: 100, ...init })
    watcher.subscribe((c) => {
      if (c.type === 'abandoned') abandoned.push(c.digest)
      else if (c.type === 'complete') completed.push(c.digest)
      else changes.push(c)
    })
    watcher.start()
    watcher.start() // idempotent
    return watcher
  }

  it('announces a digest once its first bytes land, not before, and follows its growth', async () => {
    await fs.mkdir(path.join(contentPath, 'ingest'), { recursive: true })
    const w = watch()
    const f = await startIngest(contentPath, { size: 3000 })
    // Several poll and rescan rounds with an empty data file: nothing to offer yet.
    await delay(300)
    assert.deepEqual(changes, [])
    assert.equal(w.get(f.digest), undefined)
    await fs.appendFile(f.data, f.bytes.subarray(0, 1000))
    await eventually(() => changes.length > 0, 'arriving')
    assert.deepEqual(changes, [{ type: 'arriving', digest: f.digest }])
    const ingest = w.get(f.digest)!
    assert.equal(ingest.path, f.data)
    assert.equal(ingest.totalBytes, 3000)
    assert.equal(ingest.isComplete, false)
    assert.ok(ingest.ref.endsWith(f.hex))
    assert.deepEqual(w.digests(), [f.digest])
    await fs.appendFile(f.data, f.bytes.subarray(1000, 2000))
    await eventually(() => w.get(f.digest)?.receivedBytes === 2000, 'receivedBytes to follow the file')
    assert.equal(changes.length, 1, 'arriving fires once')
  })

  it('sees ingests come and go through the watch alone (no rescan)', async () => {
    await fs.mkdir(path.join(contentPath, 'ingest'), { recursive: true })
    const w = watch({ rescanMs: 600_000 })
    await delay(50) // the first scan starts the watch
    const f = await startIngest(contentPath)
    await fs.appendFile(f.data, f.bytes.subarray(0, 10))
    await eventually(() => w.get(f.digest) !== undefined, 'arriving through the watch and the poll')
    await fs.rm(f.dir, { recursive: true })
    await eventually(() => changes.length === 2, 'gone through the watch')
    const g = await startIngest(contentPath)
    await fs.appendFile(g.data, g.bytes)
    await commit(contentPath, g)
    // Too fast to be seen in progress, or seen: either way it ends complete or was never seen.
    await delay(200)
    const got = w.get(g.digest)
    assert.ok(got === undefined || got.isComplete, JSON.stringify(got))
  })

  it('reports gone when the ingest dir is removed without a blob, and the digest is abandoned', async () => {
    const w = watch()
    const f = await startIngest(contentPath)
    await fs.appendFile(f.data, f.bytes.subarray(0, 10))
    await eventually(() => w.get(f.digest) !== undefined, 'arriving')
    assert.equal(w.isAbandoned(f.digest), false)
    await fs.rm(f.dir, { recursive: true })
    await eventually(() => changes.some((c) => c.type === 'gone'), 'gone')
    assert.deepEqual(changes, [{ type: 'arriving', digest: f.digest }, { type: 'gone', digest: f.digest }])
    assert.deepEqual(abandoned, [f.digest])
    assert.equal(w.get(f.digest), undefined)
    assert.equal(w.isAbandoned(f.digest), true)
    assert.deepEqual(w.digests(), [])
  })

  it('keeps a committed blob as complete until its TTL runs out', async () => {
    let nowMs = 1_000_000
    const w = watch({ now: () => nowMs, committedTtlMs: 60_000 })
    const f = await startIngest(contentPath)
    await fs.appendFile(f.data, f.bytes.subarray(0, 100))
    await eventually(() => w.get(f.digest) !== undefined, 'arriving')
    await fs.appendFile(f.data, f.bytes.subarray(100))
    const blob = await commit(contentPath, f)
    await eventually(() => w.get(f.digest)?.isComplete === true, 'complete')
    const done = w.get(f.digest)!
    assert.equal(done.path, blob)
    assert.equal(done.receivedBytes, f.bytes.length)
    assert.equal(done.totalBytes, f.bytes.length)
    assert.equal(w.isAbandoned(f.digest), false)
    // Several rescans within the TTL change nothing.
    await delay(300)
    assert.deepEqual(changes, [{ type: 'arriving', digest: f.digest }])
    nowMs += 60_000
    await eventually(() => changes.length === 2, 'gone after the TTL')
    assert.deepEqual(changes[1], { type: 'gone', digest: f.digest })
    assert.equal(w.get(f.digest), undefined)
    assert.equal(w.isAbandoned(f.digest), false)
  })

  it('stops offering an ingest that stopped growing, and offers it again when it grows', async () => {
    let nowMs = 1_000_000
    const w = watch({ now: () => nowMs, staleMs: 30_000 })
    const f = await startIngest(contentPath)
    await fs.appendFile(f.data, f.bytes.subarray(0, 100))
    await eventually(() => w.get(f.digest) !== undefined, 'arriving')
    assert.equal(w.isAbandoned(f.digest), false)
    nowMs += 30_000
    await eventually(() => changes.length === 2, 'gone once stale')
    assert.deepEqual(changes[1], { type: 'gone', digest: f.digest })
    assert.equal(w.get(f.digest), undefined)
    assert.equal(w.isAbandoned(f.digest), true, 'a reader of a stale ingest gives up')
    await fs.appendFile(f.data, f.bytes.subarray(100, 200))
    await eventually(() => changes.length === 3, 'arriving again')
    assert.deepEqual(changes[2], { type: 'arriving', digest: f.digest })
    assert.equal(w.get(f.digest)?.receivedBytes, 200)
  })

  it('treats a blob committed between two looks as arriving and complete', async () => {
    // Seen while still empty (the rescans), then filled and committed before the next poll.
    const w = watch({ pollMs: 60_000 })
    const f = await startIngest(contentPath)
    await delay(300)
    await fs.appendFile(f.data, f.bytes)
    await commit(contentPath, f)
    await eventually(() => w.get(f.digest)?.isComplete === true, 'complete')
    assert.deepEqual(changes, [{ type: 'arriving', digest: f.digest }])
    await eventually(() => completed.length === 1, 'complete event')
    assert.deepEqual(completed, [f.digest])
  })

  it('offers a blob that lands in the blob store without its ingest ever being seen (a small config)', async () => {
    const w = watch({ rescanMs: 60_000 })
    // Let the watches start (the first rescan runs at start).
    await fs.mkdir(path.join(contentPath, 'blobs', 'sha256'), { recursive: true })
    w.stop()
    const again = watch({ rescanMs: 60_000 })
    await delay(100)
    const bytes = randomBytes(300)
    const hex = createHash('sha256').update(bytes).digest('hex')
    const tmp = path.join(contentPath, 'tmp-blob')
    await fs.writeFile(tmp, bytes)
    await fs.rename(tmp, path.join(contentPath, 'blobs', 'sha256', hex))
    await eventually(() => again.get(`sha256:${hex}`)?.isComplete === true, 'offered once committed')
    assert.deepEqual(changes.filter((c) => c.digest === `sha256:${hex}`), [{ type: 'arriving', digest: `sha256:${hex}` }])
    assert.equal(again.get(`sha256:${hex}`)?.totalBytes, 300)
    // A file with an old mtime moved in (not a fresh download) is the store's business.
    const old = randomBytes(200)
    const oldHex = createHash('sha256').update(old).digest('hex')
    await fs.writeFile(tmp, old)
    const longAgo = new Date(Date.now() - 3_600_000)
    await fs.utimes(tmp, longAgo, longAgo)
    await fs.rename(tmp, path.join(contentPath, 'blobs', 'sha256', oldHex))
    await delay(200)
    assert.equal(again.get(`sha256:${oldHex}`), undefined)
  })

  it('reports gone when the blob left behind has the wrong size', async () => {
    const w = watch()
    const f = await startIngest(contentPath)
    await fs.appendFile(f.data, f.bytes.subarray(0, 10))
    await eventually(() => w.get(f.digest) !== undefined, 'arriving')
    await commit(contentPath, f) // only 10 of 4096 bytes: not a committed blob
    await eventually(() => changes.length === 2, 'gone')
    assert.deepEqual(changes[1], { type: 'gone', digest: f.digest })
    assert.equal(w.isAbandoned(f.digest), true)
  })

  it('starts without the ingest directory and picks it up once created', async () => {
    const w = watch()
    await delay(250)
    const f = await startIngest(contentPath)
    await fs.appendFile(f.data, f.bytes.subarray(0, 1))
    await eventually(() => w.get(f.digest) !== undefined, 'arriving after the directory appeared')
    // The directory removed and made again: still followed.
    await fs.rm(path.join(contentPath, 'ingest'), { recursive: true })
    await eventually(() => changes.length === 2, 'gone with the directory')
    const g = await startIngest(contentPath)
    await fs.appendFile(g.data, g.bytes.subarray(0, 1))
    await eventually(() => w.get(g.digest) !== undefined, 'arriving in the new directory')
  })

  it('tracks several ingests of one digest and offers the one with most bytes', async () => {
    const w = watch()
    const bytes = randomBytes(5000)
    const a = await startIngest(contentPath, { bytes, kind: 'layer' })
    const b = await startIngest(contentPath, { bytes, kind: 'layer' })
    await fs.appendFile(a.data, bytes.subarray(0, 100))
    await fs.appendFile(b.data, bytes.subarray(0, 3000))
    await eventually(() => w.get(a.digest)?.receivedBytes === 3000, 'the larger ingest')
    assert.equal(w.get(a.digest)!.path, b.data)
    await fs.rm(b.dir, { recursive: true })
    await eventually(() => w.get(a.digest)?.path === a.data, 'the other ingest after one vanished')
    assert.equal(w.isAbandoned(a.digest), false)
    assert.deepEqual(changes, [{ type: 'arriving', digest: a.digest }])
    await fs.rm(a.dir, { recursive: true })
    await eventually(() => changes.length === 2, 'gone after both vanished')
    assert.deepEqual(changes[1], { type: 'gone', digest: a.digest })
  })

  it('ignores odd ingest dirs: no ref, a ref without digest, a huge total, no total', async () => {
    // Laid out before the watcher starts: it must see each odd file as it ends up, not the valid one first written.
    const ingest = path.join(contentPath, 'ingest')
    await fs.mkdir(path.join(ingest, 'noref'), { recursive: true })
    await fs.writeFile(path.join(ingest, 'noref', 'data'), 'abc')
    await fs.mkdir(path.join(ingest, 'nodigest'))
    await fs.writeFile(path.join(ingest, 'nodigest', 'ref'), 'some-upload-session')
    await fs.writeFile(path.join(ingest, 'nodigest', 'total'), '3')
    await fs.writeFile(path.join(ingest, 'nodigest', 'data'), 'abc')
    await fs.writeFile(path.join(ingest, 'a-file-not-a-dir'), 'x')
    const huge = await startIngest(contentPath, { size: 10 })
    await fs.writeFile(path.join(huge.dir, 'total'), '1'.repeat(10 * 1024 * 1024))
    await fs.appendFile(huge.data, huge.bytes)
    const hugeRef = await startIngest(contentPath, { size: 10 })
    await fs.writeFile(path.join(hugeRef.dir, 'ref'), `layer-${'x'.repeat(1024 * 1024)}sha256:${hugeRef.hex}`)
    await fs.appendFile(hugeRef.data, hugeRef.bytes)
    const unsized = await startIngest(contentPath, { size: 10, total: false })
    await fs.appendFile(unsized.data, unsized.bytes)
    const zero = await startIngest(contentPath, { size: 10 })
    await fs.writeFile(path.join(zero.dir, 'total'), '0')
    await fs.appendFile(zero.data, zero.bytes)
    const w = watch()
    const good = await startIngest(contentPath, { size: 10 })
    await fs.appendFile(good.data, good.bytes)
    await eventually(() => w.get(good.digest) !== undefined, 'the good ingest')
    await delay(300)
    assert.deepEqual(changes, [{ type: 'arriving', digest: good.digest }])
    assert.deepEqual(w.digests(), [good.digest])
  })

  it('tracks at most maxIngests dirs', async () => {
    const w = watch({ maxIngests: 3 })
    const fakes: Fake[] = []
    for (let i = 0; i < 6; i++) {
      const f = await startIngest(contentPath, { size: 10 })
      await fs.appendFile(f.data, f.bytes)
      fakes.push(f)
    }
    await eventually(() => w.digests().length === 3, 'three tracked')
    await delay(300)
    assert.equal(w.digests().length, 3)
    assert.equal(changes.length, 3)
    // Room again once some go: the rest are picked up on the rescan.
    const tracked = new Set(w.digests())
    for (const f of fakes) if (tracked.has(f.digest)) await fs.rm(f.dir, { recursive: true })
    await eventually(() => w.digests().length === 3 && w.digests().every((d) => !tracked.has(d)), 'the other three')
  })

  it('stops: no more events after stop', async () => {
    const w = watch()
    w.stop()
    const f = await startIngest(contentPath)
    await fs.appendFile(f.data, f.bytes)
    await delay(300)
    assert.deepEqual(changes, [])
  })
})
