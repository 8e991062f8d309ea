// HashSession against node:crypto's own hash of the same bytes, on the real worker thread.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { HashSession, hashChunksPending, terminateHashWorker } from './hash-worker.js'

function shared (bytes: Buffer): Buffer {
  const out = Buffer.from(new SharedArrayBuffer(bytes.length))
  bytes.copy(out)
  return out
}

describe('HashSession', () => {
  it('hashes shared and plain chunks in order, as createHash does, and calls back for each', async () => {
    const parts = [randomBytes(1), randomBytes(300_000), randomBytes(65_536), randomBytes(12_345)]
    const session = new HashSession('sha256')
    assert.equal(session.isOffloaded, true)
    let hashed = 0
    // A view into a larger shared buffer, and a plain Buffer: both paths of update().
    const big = shared(Buffer.concat([randomBytes(10), parts[1] as Buffer, randomBytes(10)]))
    session.update(parts[0] as Buffer, () => { hashed++ })
    session.update(big.subarray(10, 10 + (parts[1] as Buffer).length), () => { hashed++ })
    session.update(shared(parts[2] as Buffer), () => { hashed++ })
    session.update(parts[3] as Buffer, () => { hashed++ })
    const expected = createHash('sha256').update(Buffer.concat(parts)).digest('hex')
    assert.equal(await session.digest(), expected)
    assert.equal(hashed, 4)
    assert.equal(hashChunksPending(), 0)
  })

  it('keeps sessions apart when their chunks interleave', async () => {
    const a = [randomBytes(1000), randomBytes(2000)]
    const b = [randomBytes(3000), randomBytes(4000)]
    const sa = new HashSession('sha256')
    const sb = new HashSession('sha512')
    sa.update(shared(a[0] as Buffer), () => {})
    sb.update(shared(b[0] as Buffer), () => {})
    sa.update(shared(a[1] as Buffer), () => {})
    sb.update(shared(b[1] as Buffer), () => {})
    const [da, db] = await Promise.all([sa.digest(), sb.digest()])
    assert.equal(da, createHash('sha256').update(Buffer.concat(a)).digest('hex'))
    assert.equal(db, createHash('sha512').update(Buffer.concat(b)).digest('hex'))
  })

  it('hashes inline when asked, with the same result', async () => {
    const bytes = randomBytes(50_000)
    const session = new HashSession('sha256', { isOffloaded: false })
    assert.equal(session.isOffloaded, false)
    let hashed = false
    session.update(shared(bytes), () => { hashed = true })
    assert.equal(hashed, true, 'inline hashing is done when update returns')
    assert.equal(await session.digest(), createHash('sha256').update(bytes).digest('hex'))
  })

  it('releases every queued chunk on abort, and refuses use after it', async () => {
    const session = new HashSession('sha256')
    let released = 0
    for (let i = 0; i < 20; i++) session.update(shared(randomBytes(100_000)), () => { released++ })
    session.abort()
    assert.equal(released, 20, 'the caller gets its buffers back at once')
    assert.throws(() => { session.update(Buffer.alloc(1), () => {}) }, /finished/)
    // Replies for the dropped session still arrive; none may be counted twice.
    const later = new HashSession('sha256')
    later.update(shared(Buffer.from('x')), () => {})
    assert.equal(await later.digest(), createHash('sha256').update('x').digest('hex'))
    assert.equal(released, 20)
    assert.equal(hashChunksPending(), 0)
  })

  // Last: it breaks the process-wide worker for good, as a crash would.
  it('fails a session in progress when the worker dies, and hashes inline afterwards', async () => {
    const session = new HashSession('sha256')
    let released = 0
    for (let i = 0; i < 50; i++) session.update(shared(randomBytes(1024 * 1024)), () => { released++ })
    await terminateHashWorker()
    // 'exit' reaches the pool asynchronously.
    for (let i = 0; i < 100 && released < 50; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.equal(released, 50, 'every buffer comes back')
    await assert.rejects(session.digest(), /hash worker/)
    const after = new HashSession('sha256')
    assert.equal(after.isOffloaded, false)
    after.update(Buffer.from('y'), () => {})
    assert.equal(await after.digest(), createHash('sha256').update('y').digest('hex'))
  })
})
