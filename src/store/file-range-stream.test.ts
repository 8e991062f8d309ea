import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import fs from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { addAbortSignal } from 'node:stream'
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
