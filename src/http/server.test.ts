import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import type { Server, ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { createServer, openFilesLimit, DEFAULT_LISTEN_BACKLOG } from './server.js'
import { LogCapture, request } from './test-helpers.js'

const BIG_BODY_BYTES = 256 * 1024 * 1024
const CHUNK = Buffer.alloc(1024 * 1024, 'x')

/** Writes `total` bytes with backpressure, stopping when the response goes away. */
async function stream (res: ServerResponse, total: number): Promise<void> {
  res.writeHead(200, { 'Content-Length': total })
  let sent = 0
  while (sent < total && !res.destroyed) {
    const piece = CHUNK.subarray(0, Math.min(CHUNK.length, total - sent))
    sent += piece.length
    if (!res.write(piece)) {
      await Promise.race([once(res, 'drain'), once(res, 'close')])
    }
  }
  if (!res.destroyed) res.end()
}

async function startServer (server: Server): Promise<number> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

async function stopServer (server: Server): Promise<void> {
  server.closeAllConnections()
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
}

interface Watched { socket: Socket, closed: Promise<void>, isClosed: () => boolean, received: () => string }

/** A raw client connection that records what it received and when it closed. */
async function open (port: number): Promise<Watched> {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  let isClosed = false
  let text = ''
  socket.on('error', () => { /* a reset is one of the outcomes under test */ })
  socket.on('data', (chunk: Buffer) => { if (text.length < 200) text += chunk.toString('latin1', 0, 200) })
  const closed = new Promise<void>((resolve) => { socket.once('close', () => { isClosed = true; resolve() }) })
  return { socket, closed, isClosed: () => isClosed, received: () => text }
}

/** Fails if `promise` has not settled within `ms` (a generous bound on a wait, not a timing assertion). */
async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  const timeout = new AbortController()
  try {
    return await Promise.race([promise, delay(ms, undefined, { signal: timeout.signal }).then(() => { throw new Error(`${what}: not within ${ms} ms`) })])
  } finally {
    timeout.abort()
  }
}

describe('createServer with slow and hostile clients', () => {
  const capture = new LogCapture()
  let server: Server
  let port: number

  before(async () => {
    server = createServer((req, res) => {
      if (req.url === '/big') {
        stream(res, BIG_BODY_BYTES).catch((err: unknown) => { res.destroy(err as Error) })
      } else if (req.url === '/trickle') {
        // Slow because of the server: a byte every 100 ms. The client keeps up, so this must not be cut.
        res.writeHead(200, { 'Content-Length': 20 })
        let n = 0
        const timer = setInterval(() => {
          res.write('y')
          if (++n === 20) { clearInterval(timer); res.end() }
        }, 100)
        res.once('close', () => { clearInterval(timer) })
      } else {
        res.writeHead(200, { 'Content-Length': 2 })
        res.end('ok')
      }
    }, {
      log: capture.log,
      headersTimeoutMs: 1000,
      requestTimeoutMs: 2000,
      slowClientWindowMs: 1000,
      minSendBytes: 64 * 1024,
      checkIntervalMs: 100
    })
    port = await startServer(server)
  })
  after(async () => { await stopServer(server) })

  it('serves a normal request while slow clients are attached, then cuts each of them', async () => {
    // Headers that never end: a header line every 100 ms.
    const slowloris = await open(port)
    slowloris.socket.write('GET / HTTP/1.1\r\nHost: x\r\n')
    const drip = setInterval(() => { if (!slowloris.isClosed()) slowloris.socket.write('X-Drip: 1\r\n') }, 100)
    // A connection that never sends a byte.
    const silent = await open(port)
    // A body that is never read: the client takes nothing once the kernel buffers are full.
    const reader = await open(port)
    reader.socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n')
    reader.socket.pause()
    // A body that is taken a byte at a time (about 10 bytes a second).
    const trickleReader = await open(port)
    trickleReader.socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n')
    trickleReader.socket.pause()
    const sip = setInterval(() => { if (!trickleReader.socket.isPaused()) return; trickleReader.socket.read(1) }, 100)
    try {
      const res = await within(request(port, '/'), 10_000, 'normal request next to slow clients')
      assert.equal(res.status, 200)
      assert.equal(res.body.toString(), 'ok')
      // Served while all four were still attached: none of them held it back.
      assert.deepEqual([slowloris, silent, reader, trickleReader].map((c) => c.isClosed()), [false, false, false, false])

      await within(slowloris.closed, 20_000, 'slow headers cut')
      assert.match(slowloris.received(), /^HTTP\/1\.1 408 /)
      await within(silent.closed, 20_000, 'silent connection cut')
      // A client that does not read cannot notice the reset until it reads: the server's log
      // says when it let go, then the client drains what it had and sees the connection broken.
      for (const client of [reader, trickleReader]) {
        const cut = await capture.find((l) => l.event === 'slow_client_cut' && l.port === client.socket.localPort, 30_000)
        assert.equal(cut.level, 'INFO')
        let bytes = 0
        client.socket.on('data', (chunk: Buffer) => { bytes += chunk.length })
        client.socket.resume()
        await within(client.closed, 20_000, 'cut client to see its connection closed')
        assert.ok(bytes < BIG_BODY_BYTES, `${bytes} bytes arrived: the response was not broken off`)
      }
    } finally {
      clearInterval(drip)
      clearInterval(sip)
      for (const c of [slowloris, silent, reader, trickleReader]) c.socket.destroy()
    }
  })

  it('never cuts a response that is slow because of the server', async () => {
    const res = await within(request(port, '/trickle'), 20_000, 'trickled response')
    assert.equal(res.status, 200)
    assert.equal(res.body.toString(), 'y'.repeat(20))
  })

  it('cuts a request body that never ends after the request timeout', async () => {
    const uploader = await open(port)
    uploader.socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n')
    const drip = setInterval(() => { if (!uploader.isClosed()) uploader.socket.write('a') }, 100)
    try {
      await within(uploader.closed, 20_000, 'endless body cut')
    } finally {
      clearInterval(drip)
      uploader.socket.destroy()
    }
  })
})

describe('createServer listen backlog', () => {
  it(`listens with a backlog of ${DEFAULT_LISTEN_BACKLOG} (capped by net.core.somaxconn), whatever listen form the caller uses`, async (t) => {
    let somaxconn: number
    let ss: string
    try {
      ss = execFileSync('ss', ['-V'], { encoding: 'utf8' })
      somaxconn = Number(execFileSync('cat', ['/proc/sys/net/core/somaxconn'], { encoding: 'utf8' }).trim())
    } catch {
      t.skip('needs ss (iproute2) and /proc/sys/net/core/somaxconn')
      return
    }
    assert.ok(ss.length > 0)
    const capture = new LogCapture()
    for (const listen of [
      (s: Server) => s.listen(0, '127.0.0.1'),
      (s: Server) => s.listen({ port: 0, host: '127.0.0.1' }),
      (s: Server) => s.listen(0, '127.0.0.1', () => undefined)
    ]) {
      const server = createServer((_req, res) => { res.end() }, { log: capture.log })
      listen(server)
      try {
        await once(server, 'listening')
        const address = server.address()
        assert.ok(address !== null && typeof address !== 'string')
        // For a listening socket, ss shows the backlog in the Send-Q column.
        const line = execFileSync('ss', ['-ltnH', `sport = :${address.port}`], { encoding: 'utf8' }).trim()
        assert.equal(Number(line.split(/\s+/)[2]), Math.min(DEFAULT_LISTEN_BACKLOG, somaxconn), line)
      } finally {
        await stopServer(server)
      }
    }
  })
})

describe('createServer preparing limit', () => {
  it('starts requests in arrival order past the limit, and a streaming body does not hold the next one up', async () => {
    const started: string[] = []
    const held = new Map<string, ServerResponse>()
    const server = createServer((req, res) => {
      started.push(req.url ?? '')
      held.set(req.url ?? '', res)
    }, { log: new LogCapture().log, maxPreparing: 1, acceptors: 1 })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const address = server.address()
    assert.ok(address !== null && typeof address !== 'string')
    try {
      const answers = ['/v2/a', '/v2/b', '/v2/c'].map(async (path) => await request(address.port, path))
      const until = async (n: number): Promise<void> => { while (started.length < n) await delay(10) }
      await until(1)
      await delay(200)
      assert.deepEqual(started, ['/v2/a'], 'the others wait while /a prepares')
      // /a sends its headers and keeps streaming: /b starts, /c still waits.
      held.get('/v2/a')?.writeHead(200, { 'Content-Length': 2 })
      held.get('/v2/a')?.write('o')
      await until(2)
      await delay(200)
      assert.deepEqual(started, ['/v2/a', '/v2/b'])
      // A response that ends without an explicit writeHead lets the next one start too.
      held.get('/v2/b')?.end('b')
      await until(3)
      assert.deepEqual(started, ['/v2/a', '/v2/b', '/v2/c'])
      held.get('/v2/a')?.end('k')
      held.get('/v2/c')?.end('c')
      assert.deepEqual((await Promise.all(answers)).map((r) => r.body.toString()), ['ok', 'b', 'c'])
      // Probes never wait behind the bound, even when it is full.
      held.clear()
      const blocking = request(address.port, '/v2/d')
      await until(4)
      const probe = request(address.port, '/readyz')
      await until(5)
      assert.deepEqual(started.slice(3), ['/v2/d', '/readyz'])
      held.get('/readyz')?.end('ready')
      assert.equal((await probe).body.toString(), 'ready')
      held.get('/v2/d')?.end('d')
      await blocking
    } finally {
      await stopServer(server)
    }
  })
})

describe('createServer acceptors', () => {
  it('listens on several SO_REUSEPORT sockets that all serve, and stops them all on close', async (t) => {
    if (process.platform !== 'linux') {
      t.skip('SO_REUSEPORT acceptors are for Linux')
      return
    }
    const server = createServer((_req, res) => { res.end('ok') }, { log: new LogCapture().log, acceptors: 4 })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const address = server.address()
    assert.ok(address !== null && typeof address !== 'string')
    const listeners = (): number => execFileSync('ss', ['-ltnH', `sport = :${address.port}`], { encoding: 'utf8' }).trim().split('\n').filter((l) => l !== '').length
    await delay(50)
    assert.equal(listeners(), 4)
    // The kernel spreads connections over the sockets by address hash: enough of them reach the extra ones.
    const answers = await Promise.all(Array.from({ length: 40 }, async () => await request(address.port, '/')))
    assert.deepEqual(new Set(answers.map((a) => `${a.status} ${a.body.toString()}`)), new Set(['200 ok']))
    await stopServer(server)
    assert.equal(listeners(), 0)
  })
})

describe('openFilesLimit', () => {
  it('reads the soft limit from /proc limits text', () => {
    const text = 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n'
    assert.equal(openFilesLimit(text), 1024)
    assert.equal(openFilesLimit('Max open files            unlimited            unlimited            files\n'), Number.POSITIVE_INFINITY)
    assert.equal(openFilesLimit('nothing here'), undefined)
  })
})
