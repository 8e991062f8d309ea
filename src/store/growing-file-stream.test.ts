// openGrowingFile against real files that a "writer" (timers here) appends to while they are read.
import { describe, it, beforeEach, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { Readable } from 'node:stream'
import { setTimeout as delay } from 'node:timers/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { BufferPool } from './buffer-pool.js'
import { openGrowingFile, IngestStalledError } from './growing-file-stream.js'

async function collect (stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const chunk of stream) parts.push(chunk as Buffer)
  return Buffer.concat(parts)
}

/** Appends `bytes` to `file` in `steps` pieces, `everyMs` apart; resolves when all are written. */
async function appendInSteps (file: string, bytes: Buffer, steps: number, everyMs: number): Promise<void> {
  const step = Math.ceil(bytes.length / steps)
  for (let at = 0; at < bytes.length; at += step) {
    await delay(everyMs)
    await fs.appendFile(file, bytes.subarray(at, at + step))
  }
}

function openFds (): Promise<string[]> {
  return fs.readdir('/proc/self/fd')
}

async function fdsPointingAt (file: string): Promise<number> {
  let n = 0
  for (const fd of await openFds()) {
    const target = await fs.readlink(path.join('/proc/self/fd', fd)).catch(() => '')
    if (target.startsWith(file)) n++
  }
  return n
}

async function eventually (probe: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 5_000
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await delay(10)
  }
}

describe('openGrowingFile', () => {
  let dir: string
  let file: string

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-growing-'))
    file = path.join(dir, 'data')
  })
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })

  it('rejects with the fs error when the file does not exist', async () => {
    await assert.rejects(openGrowingFile(file, { start: 0, end: 9 }), { code: 'ENOENT' })
  })

  it('delivers a whole file that grows in steps', async () => {
    const bytes = randomBytes(300_000)
    await fs.writeFile(file, '')
    const stream = await openGrowingFile(file, { start: 0, end: bytes.length - 1, pollMs: 5, highWaterMark: 16 * 1024 })
    const [got] = await Promise.all([collect(stream), appendInSteps(file, bytes, 17, 15)])
    assert.ok(got.equals(bytes))
    await eventually(async () => await fdsPointingAt(file) === 0, 'the fd to be closed at the end')
  })

  it('delivers exactly a middle range, stopping before bytes beyond it', async () => {
    const bytes = randomBytes(100_000)
    await fs.writeFile(file, bytes.subarray(0, 10))
    const stream = await openGrowingFile(file, { start: 12_345, end: 67_889, pollMs: 5 })
    const [got] = await Promise.all([collect(stream), appendInSteps(file, bytes.subarray(10), 9, 10)])
    assert.ok(got.equals(bytes.subarray(12_345, 67_890)))
  })

  it('delivers an empty range and a range already on disk', async () => {
    const bytes = randomBytes(1000)
    await fs.writeFile(file, bytes)
    assert.equal((await collect(await openGrowingFile(file, { start: 5, end: 4 }))).length, 0)
    assert.ok((await collect(await openGrowingFile(file, { start: 0, end: 999 }))).equals(bytes))
  })

  it('keeps delivering after the file is renamed into the blob store mid-read', async () => {
    const bytes = randomBytes(200_000)
    await fs.writeFile(file, bytes.subarray(0, 50_000))
    const stream = await openGrowingFile(file, { start: 0, end: bytes.length - 1, pollMs: 5, highWaterMark: 8 * 1024 })
    const writer = (async () => {
      const fh = await fs.open(file, 'a')
      try {
        await delay(20)
        await fh.write(bytes.subarray(50_000, 120_000))
        // containerd's commit: rename data into blobs/, remove the ingest dir, the writer's fd stays valid.
        const blobDir = path.join(dir, 'blobs', 'sha256')
        await fs.mkdir(blobDir, { recursive: true })
        await fs.rename(file, path.join(blobDir, 'blob'))
        await delay(20)
        await fh.write(bytes.subarray(120_000))
      } finally {
        await fh.close()
      }
    })()
    const [got] = await Promise.all([collect(stream), writer])
    assert.ok(got.equals(bytes))
  })

  it('fails with IngestStalledError when no byte arrives for stallTimeoutMs', async () => {
    await fs.writeFile(file, randomBytes(100))
    const stream = await openGrowingFile(file, { start: 0, end: 999, pollMs: 5, stallTimeoutMs: 100 })
    await assert.rejects(collect(stream), IngestStalledError)
    await eventually(async () => await fdsPointingAt(file) === 0, 'the fd to be closed after the stall')
  })

  it('fails at once when the writer abandoned the file', async () => {
    await fs.writeFile(file, randomBytes(100))
    let asked = 0
    const stream = await openGrowingFile(file, {
      start: 0,
      end: 999,
      pollMs: 5,
      stallTimeoutMs: 60_000,
      isAbandoned: () => { asked++; return asked >= 3 }
    })
    await assert.rejects(collect(stream), IngestStalledError)
    assert.equal(asked, 3)
  })

  it('fails at once when the file is removed short of the range', async () => {
    await fs.writeFile(file, randomBytes(100))
    const stream = await openGrowingFile(file, { start: 0, end: 999, pollMs: 5, stallTimeoutMs: 60_000 })
    const result = collect(stream)
    await delay(30)
    await fs.rm(file)
    await assert.rejects(result, IngestStalledError)
  })

  it('delivers the range when the file is removed after holding all of it', async () => {
    const bytes = randomBytes(1000)
    await fs.writeFile(file, bytes)
    const stream = await openGrowingFile(file, { start: 0, end: 999, pollMs: 5 })
    await fs.rm(file)
    assert.ok((await collect(stream)).equals(bytes))
  })

  it('closes the fd when the signal aborts a read that waits for bytes', async () => {
    await fs.writeFile(file, randomBytes(100))
    const controller = new AbortController()
    const stream = await openGrowingFile(file, { start: 0, end: 999_999, pollMs: 5, stallTimeoutMs: 60_000, signal: controller.signal })
    const result = collect(stream)
    await delay(50)
    assert.equal(await fdsPointingAt(file), 1)
    controller.abort()
    await assert.rejects(result, { name: 'AbortError' })
    await eventually(async () => await fdsPointingAt(file) === 0, 'the fd to be closed after the abort')
  })

  it('closes the fd when the consumer destroys the stream', async () => {
    await fs.writeFile(file, randomBytes(100))
    const stream = await openGrowingFile(file, { start: 0, end: 999_999, pollMs: 5 })
    stream.resume()
    await delay(30)
    stream.destroy()
    await eventually(async () => await fdsPointingAt(file) === 0, 'the fd to be closed after destroy')
  })

  it('rejects an already aborted signal and bad ranges without leaking an fd', async () => {
    await fs.writeFile(file, randomBytes(10))
    await assert.rejects(openGrowingFile(file, { start: 0, end: 9, signal: AbortSignal.abort() }), { name: 'AbortError' })
    await assert.rejects(openGrowingFile(file, { start: -1, end: 9 }), RangeError)
    await assert.rejects(openGrowingFile(file, { start: 5, end: 2 }), RangeError)
    assert.equal(await fdsPointingAt(file), 0)
  })

  it('holds memory bounded by the highWaterMark when the consumer does not read', async () => {
    const bytes = randomBytes(2 * 1024 * 1024)
    await fs.writeFile(file, bytes)
    const stream = await openGrowingFile(file, { start: 0, end: bytes.length - 1, highWaterMark: 16 * 1024 })
    stream.pause()
    stream.on('data', () => {})
    stream.pause()
    await delay(100)
    assert.ok(stream.readableLength <= 2 * 16 * 1024, `buffered ${stream.readableLength}`)
    stream.destroy()
  })

  describe('sendTo (the response fast path, through a real socket)', () => {
    /** A server whose only response is `send(res)`; resolves with the bytes a client got and send's outcome. */
    async function serveOnce (send: (res: http.ServerResponse) => Promise<void>): Promise<{ body: Buffer, outcome: Error | undefined }> {
      let outcome: Promise<Error | undefined> = Promise.resolve(undefined)
      const server = http.createServer((_req, res) => {
        outcome = send(res).then(() => { res.end(); return undefined }, (err: Error) => { res.destroy(); return err })
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      try {
        const port = (server.address() as AddressInfo).port
        const body = await new Promise<Buffer>((resolve) => {
          http.get({ host: '127.0.0.1', port, path: '/' }, (res) => {
            const parts: Buffer[] = []
            res.on('data', (c: Buffer) => parts.push(c))
            res.on('end', () => resolve(Buffer.concat(parts)))
            res.on('error', () => resolve(Buffer.concat(parts)))
            res.on('aborted', () => resolve(Buffer.concat(parts)))
          }).on('error', () => resolve(Buffer.alloc(0)))
        })
        return { body, outcome: await outcome }
      } finally {
        server.closeAllConnections()
        await new Promise((resolve) => server.close(resolve))
      }
    }

    it('sends a range of a file that grows, with pool buffers that all come back', async () => {
      const bytes = randomBytes(3 * 1024 * 1024 + 777)
      await fs.writeFile(file, bytes.subarray(0, 1000))
      const pool = new BufferPool(256 * 1024, 2)
      const stream = await openGrowingFile(file, { start: 10, end: bytes.length - 6, pollMs: 5 })
      const writer = appendInSteps(file, bytes.subarray(1000), 23, 5)
      const { body, outcome } = await serveOnce(async (res) => await stream.sendTo(res, undefined, pool))
      await writer
      assert.equal(outcome, undefined)
      assert.ok(body.equals(bytes.subarray(10, bytes.length - 5)), `got ${body.length} bytes`)
      assert.equal(pool.available, 2, 'every buffer came back')
      await eventually(async () => await fdsPointingAt(file) === 0, 'the fd to be closed at the end')
      await assert.rejects(stream.sendTo(new http.ServerResponse(new http.IncomingMessage(null as never))), /already/)
    })

    it('serves nine readers of one growing file at once (one shared look at its end), each exactly', async () => {
      const bytes = randomBytes(2 * 1024 * 1024 + 99)
      await fs.writeFile(file, bytes.subarray(0, 10))
      const pool = new BufferPool(128 * 1024, 8)
      const streams = await Promise.all(Array.from({ length: 9 }, async (_, i) => await openGrowingFile(file, { start: i * 1000, end: bytes.length - 1, pollMs: 5 })))
      const writer = appendInSteps(file, bytes.subarray(10), 31, 4)
      const results = await Promise.all(streams.map(async (stream) => await serveOnce(async (res) => await stream.sendTo(res, undefined, pool))))
      await writer
      for (const [i, { body, outcome }] of results.entries()) {
        assert.equal(outcome, undefined, `reader ${i}`)
        assert.ok(body.equals(bytes.subarray(i * 1000)), `reader ${i} got ${body.length} bytes`)
      }
      assert.equal(pool.available, 8, 'every buffer came back')
      await eventually(async () => await fdsPointingAt(file) === 0, 'every fd to be closed')
    })

    it('holds no send buffer while it waits for the file to grow', async () => {
      const bytes = randomBytes(600_000)
      await fs.writeFile(file, bytes.subarray(0, 300_000))
      const pool = new BufferPool(64 * 1024, 4)
      const stream = await openGrowingFile(file, { start: 0, end: bytes.length - 1, pollMs: 5 })
      const served = serveOnce(async (res) => await stream.sendTo(res, undefined, pool))
      // All that is there went out; now it waits at the end of the file with every buffer back.
      await eventually(async () => pool.available === 4 && pool.created > 0, 'the buffers to go back while waiting')
      await fs.appendFile(file, bytes.subarray(300_000))
      const { body, outcome } = await served
      assert.equal(outcome, undefined)
      assert.ok(body.equals(bytes))
    })

    it('rejects with IngestStalledError, returns its buffers and closes the fd when the file stops growing', async () => {
      await fs.writeFile(file, randomBytes(5000))
      const pool = new BufferPool(64 * 1024, 4)
      const stream = await openGrowingFile(file, { start: 0, end: 99_999, pollMs: 5, stallTimeoutMs: 150 })
      const { body, outcome } = await serveOnce(async (res) => await stream.sendTo(res, undefined, pool))
      assert.ok(outcome instanceof IngestStalledError, `outcome ${String(outcome)}`)
      assert.equal(body.length, 5000, 'what was there was sent, then the response was cut')
      await eventually(async () => pool.available === 4, 'every buffer to come back')
      await eventually(async () => await fdsPointingAt(file) === 0, 'the fd to be closed after the stall')
    })

    it('stops waiting for bytes when the signal aborts', async () => {
      await fs.writeFile(file, randomBytes(100))
      const controller = new AbortController()
      const stream = await openGrowingFile(file, { start: 0, end: 999_999, pollMs: 5, stallTimeoutMs: 60_000, signal: controller.signal })
      setTimeout(() => { controller.abort() }, 60)
      const { outcome } = await serveOnce(async (res) => await stream.sendTo(res, controller.signal))
      assert.ok(outcome !== undefined, 'the send failed')
      await eventually(async () => await fdsPointingAt(file) === 0, 'the fd to be closed after the abort')
    })
  })
})
