import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import fs from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { addAbortSignal } from 'node:stream'
import { BufferPool } from './buffer-pool.js'
import { FileRangeStream, FILE_CHUNK_BYTES, type ByteSink } from './file-range-stream.js'

/**
 * Like a socket: keeps a reference to each chunk and only copies it when the "kernel" takes it,
 * later, in random order of timing. Reusing a buffer before its callback would corrupt the copy.
 */
class LazySink extends EventEmitter implements ByteSink {
  readonly parts: Buffer[] = []
  destroyed = false
  private readonly queue: Array<{ chunk: Uint8Array, callback: (err?: Error | null) => void }> = []
  private draining = false
  write (chunk: Uint8Array, callback: (err?: Error | null) => void): boolean {
    this.queue.push({ chunk, callback })
    if (!this.draining) this.takeLater()
    return this.queue.length < 2
  }

  /** In order, like a socket, but after a random delay each. */
  private takeLater (): void {
    this.draining = true
    setTimeout(() => {
      const next = this.queue.shift()
      if (next !== undefined) {
        this.parts.push(Buffer.from(next.chunk))
        next.callback(null)
      }
      if (this.queue.length > 0) this.takeLater()
      else {
        this.draining = false
        this.emit('drain')
      }
    }, Math.floor(Math.random() * 3))
  }
}

describe('FileRangeStream', () => {
  let dir: string
  let file: string
  let data: Buffer

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-frs-'))
    file = path.join(dir, 'blob')
    data = randomBytes(5 * FILE_CHUNK_BYTES + 12345)
    await fs.writeFile(file, data)
  })
  after(async () => { await fs.rm(dir, { recursive: true, force: true }) })

  it('reads a range as a Readable', async () => {
    const stream = new FileRangeStream(await fs.open(file), 100, 3 * FILE_CHUNK_BYTES + 7)
    const parts: Buffer[] = []
    for await (const chunk of stream) parts.push(chunk as Buffer)
    assert.deepEqual(Buffer.concat(parts), data.subarray(100, 3 * FILE_CHUNK_BYTES + 8))
  })

  it('sends through reused buffers without corrupting bytes still queued', async () => {
    for (const [start, end] of [[0, data.length - 1], [7, 2 * FILE_CHUNK_BYTES], [data.length - 1, data.length - 1]] as const) {
      const sink = new LazySink()
      await new FileRangeStream(await fs.open(file), start, end).sendTo(sink)
      assert.ok(Buffer.concat(sink.parts).equals(data.subarray(start, end + 1)), `range ${start}-${end}`)
    }
  })

  it('rejects, without an unhandled error event, when destroyed through an abort signal mid-send', async () => {
    const controller = new AbortController()
    const stream = new FileRangeStream(await fs.open(file), 0, data.length - 1)
    addAbortSignal(controller.signal, stream)
    // A sink that never takes anything: the send stalls until the abort.
    const stalled = Object.assign(new EventEmitter(), { destroyed: false, write: () => false })
    const sending = stream.sendTo(stalled as unknown as ByteSink, controller.signal)
    setImmediate(() => { controller.abort() })
    await assert.rejects(sending)
    assert.equal(stream.destroyed, true)
  })

  it('serves many responses at once from a pool smaller than their number, each exactly', async () => {
    const pool = new BufferPool(64 * 1024, 3)
    const ranges = Array.from({ length: 12 }, (_, i) => [i * 1000, Math.min(data.length - 1, i * 1000 + 300_000 + i)] as const)
    const sinks = ranges.map(() => new LazySink())
    await Promise.all(ranges.map(async ([start, end], i) => {
      await new FileRangeStream(await fs.open(file), start, end).sendTo(sinks[i] as LazySink, undefined, pool)
    }))
    ranges.forEach(([start, end], i) => {
      assert.ok(Buffer.concat((sinks[i] as LazySink).parts).equals(data.subarray(start, end + 1)), `range ${start}-${end}`)
    })
    assert.ok(pool.created <= 3)
    assert.equal(pool.available, 3, 'every buffer came back')
  })

  it('gives its buffers back when the client goes away mid-send', async () => {
    const pool = new BufferPool(64 * 1024, 2)
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Length': data.length })
      void fs.open(file).then((h) => new FileRangeStream(h, 0, data.length - 1).sendTo(res, undefined, pool)).then(() => res.end(), () => res.destroy())
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as { port: number }
    try {
      await new Promise<void>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/' }, (res) => {
          res.once('data', () => { req.destroy(); resolve() })
        })
        req.on('error', () => {})
      })
      const deadline = Date.now() + 10_000
      while (pool.available < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
      assert.equal(pool.available, 2)
    } finally {
      server.close()
    }
  })

  it('fails when the file is shorter than the range', async () => {
    const sink = new LazySink()
    await assert.rejects(new FileRangeStream(await fs.open(file), 0, data.length + 10).sendTo(sink), /file ended/)
  })

  it('serves a slow HTTP client exactly', async () => {
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Length': data.length })
      void fs.open(file).then((h) => new FileRangeStream(h, 0, data.length - 1).sendTo(res)).then(() => res.end(), () => res.destroy())
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as { port: number }
    try {
      const hash = createHash('sha256')
      await new Promise<void>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path: '/' }, (res) => {
          res.on('data', (chunk: Buffer) => {
            hash.update(chunk)
            res.pause()
            setTimeout(() => res.resume(), 1)
          })
          res.on('end', resolve)
          res.on('error', reject)
        }).on('error', reject)
      })
      assert.equal(hash.digest('hex'), createHash('sha256').update(data).digest('hex'))
    } finally {
      server.close()
    }
  })
})
