import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { after, afterEach, before, describe, it } from 'node:test'
import { PeerHttpClient, readBufferStats, readBuffersOut, releaseIdleReadBuffers, setReadBufferBounds, type PeerHttpRequest } from './peer-http.js'

const BIG = Buffer.from(Array.from({ length: 5 * 1024 * 1024 + 3 }, (_, i) => (i * 7 + (i >> 11)) % 256))

function get (path: string, extra: Partial<PeerHttpRequest> = {}): PeerHttpRequest {
  return { method: 'GET', path, headers: { 'x-test': '1' }, signal: AbortSignal.timeout(10_000), ...extra }
}

describe('PeerHttpClient', () => {
  let server: Server
  let port: number
  const sockets = new Set<Socket>()
  let handle: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => { res.writeHead(500).end() }
  let client: PeerHttpClient

  before(async () => {
    server = createServer((req, res) => { handle(req, res) })
    server.keepAliveTimeout = 60_000
    server.on('connection', (s: Socket) => {
      sockets.add(s)
      s.once('close', () => sockets.delete(s))
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    port = (server.address() as AddressInfo).port
  })
  afterEach(async () => { await client.close() })
  after(() => {
    server.closeAllConnections()
    server.close()
  })

  const fresh = (init: Partial<ConstructorParameters<typeof PeerHttpClient>[0]> = {}): PeerHttpClient => {
    client = new PeerHttpClient({ connectTimeoutMs: 1000, headersTimeoutMs: 5000, bodyIdleTimeoutMs: 5000, ...init })
    return client
  }

  it('sends the request line and headers, and reuses the connection for the next request', async () => {
    const c = fresh()
    const seen: Array<{ url: string | undefined, header: string | undefined, remotePort: number | undefined }> = []
    handle = (req, res) => {
      seen.push({ url: req.url, header: req.headers['x-test'] as string | undefined, remotePort: req.socket.remotePort })
      res.writeHead(200, { 'Content-Length': 5, 'X-Answer': 'yes' }).end('hello')
    }
    const first = await c.request('127.0.0.1', port, get('/a?ns=docker.io'))
    assert.equal(first.statusCode, 200)
    assert.equal(first.headers['x-answer'], 'yes')
    assert.equal(await first.body.text(), 'hello')
    const second = await c.request('127.0.0.1', port, get('/b'))
    assert.equal(await second.body.text(), 'hello')
    assert.deepEqual(seen.map((s) => [s.url, s.header]), [['/a?ns=docker.io', '1'], ['/b', '1']])
    assert.equal(seen[0]?.remotePort, seen[1]?.remotePort, 'one keep-alive connection')
  })

  it('HEAD has no body even with a Content-Length, and the connection stays usable', async () => {
    const c = fresh()
    handle = (_req, res) => { res.writeHead(200, { 'Content-Length': 1234 }).end() }
    const head = await c.request('127.0.0.1', port, get('/h', { method: 'HEAD' }))
    assert.equal(head.headers['content-length'], '1234')
    assert.equal(head.body.isComplete, true)
    handle = (_req, res) => { res.writeHead(200, { 'Content-Length': 2 }).end('ok') }
    assert.equal(await (await c.request('127.0.0.1', port, get('/g'))).body.text(), 'ok')
  })

  it('streams a large body through reused buffers, pausing while the consumer holds them', async () => {
    const c = fresh()
    handle = (_req, res) => { res.writeHead(200, { 'Content-Length': BIG.length }).end(BIG) }
    const res = await c.request('127.0.0.1', port, get('/big'))
    const hash = createHash('sha256')
    let length = 0
    let maxOutstanding = 0
    const held = []
    for (;;) {
      const chunk = await res.body.read()
      if (chunk === null) break
      hash.update(chunk.data)
      length += chunk.data.length
      held.push(chunk)
      maxOutstanding = Math.max(maxOutstanding, res.body.outstanding)
      // Give buffers back late, as a slow socket would.
      if (held.length >= 3) {
        await new Promise((resolve) => setTimeout(resolve, 5))
        for (const h of held.splice(0)) res.body.release(h)
      }
    }
    for (const h of held.splice(0)) res.body.release(h)
    assert.equal(length, BIG.length)
    assert.equal(hash.digest('hex'), createHash('sha256').update(BIG).digest('hex'))
    assert.ok(maxOutstanding <= 4, `at most 4 buffers out, saw ${maxOutstanding}`)
  })

  it('hands on bytes that arrive slowly without waiting for a buffer to fill, and counts chunks of one buffer as one', async () => {
    // A client that held the bytes back would fail on the body idle timeout.
    const c = fresh({ bodyIdleTimeoutMs: 1000 })
    // The peer sends the next piece only once the client has the last one: a client that held
    // bytes back until its read buffer filled (or the body ended) would never get past the first.
    const pieces = 5
    const piece = Buffer.alloc(1000, 0x61)
    let sent = 0
    let resSide: ServerResponse | undefined
    handle = (_req, res) => {
      resSide = res
      res.writeHead(200, { 'Content-Length': pieces * piece.length })
      res.write(piece)
      sent++
    }
    const res = await c.request('127.0.0.1', port, get('/slow'))
    let got = 0
    // Held to the end: five small chunks of one read buffer are one buffer out, under the four
    // that pause the socket (counting chunks, the fifth piece would never be read).
    const held = []
    while (got < pieces * piece.length) {
      const chunk = await res.body.read()
      assert.ok(chunk !== null, 'body ended early')
      got += chunk.data.length
      held.push(chunk)
      if (got === sent * piece.length && sent < pieces) {
        sent++
        if (sent === pieces) resSide?.end(piece)
        else resSide?.write(piece)
      }
    }
    assert.equal(got, pieces * piece.length)
    assert.equal(held.length, pieces, 'one chunk per piece')
    assert.equal(res.body.outstanding, 1, 'one buffer behind them all')
    for (const chunk of held) res.body.release(chunk)
    assert.equal(res.body.outstanding, 0)
    assert.equal(await res.body.read(), null)
  })

  it('keeps a read buffer out of the pool while its socket still fills it, whoever released its first bytes', async () => {
    const c = fresh()
    // Body A arrives in two pieces with a pause between: its first bytes are handed on (by the
    // flush timer) from the buffer its socket goes on reading into. The consumer releases them at
    // once. If that sent the buffer back to the pool, body B (fast, 5 MiB) would read into it,
    // overwriting A's second piece before A's consumer reads it.
    const first = Buffer.alloc(4096, 0x41)
    const second = Buffer.from(Array.from({ length: 200 * 1024 }, (_, i) => (i * 13) % 251))
    let finishA: (() => void) | undefined
    handle = (req, res) => {
      if (req.url === '/a') {
        // The head alone first: bytes read with the head are copies, not the pooled buffer.
        res.writeHead(200, { 'Content-Length': first.length + second.length })
        res.flushHeaders()
        setTimeout(() => { res.write(first) }, 30)
        finishA = () => { res.end(second) }
      } else {
        res.writeHead(200, { 'Content-Length': BIG.length }).end(BIG)
      }
    }
    const a = await c.request('127.0.0.1', port, get('/a'))
    const head = await a.body.read()
    assert.ok(head !== null)
    assert.ok(head.pooled !== undefined, 'the first piece came in the pooled buffer the socket goes on filling')
    assert.deepEqual(head.data, first)
    a.body.release(head)
    // Twice, as a buggy consumer might: the second must not take the socket's share of the buffer.
    a.body.release(head)
    finishA?.()
    // Let A's second piece land in its buffer, then run B, holding nothing of A meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 50))
    const b = await c.request('127.0.0.1', port, get('/b'))
    const hashB = createHash('sha256')
    for (;;) {
      const chunk = await b.body.read()
      if (chunk === null) break
      hashB.update(chunk.data)
      b.body.release(chunk)
    }
    assert.equal(hashB.digest('hex'), createHash('sha256').update(BIG).digest('hex'))
    const rest: Buffer[] = []
    for (;;) {
      const chunk = await a.body.read()
      if (chunk === null) break
      rest.push(Buffer.from(chunk.data))
      a.body.release(chunk)
    }
    assert.ok(Buffer.concat(rest).equals(second), 'body A\'s second piece is intact')
  })

  it('counts the read buffers sockets hold for their next read, and gets them all back', async () => {
    const c = fresh()
    handle = (_req, res) => { res.writeHead(200, { 'Content-Length': BIG.length }).end(BIG) }
    const before = readBuffersOut().large
    // More bodies at once than there are large buffers: each socket in a body holds one for its
    // next read, and those count, so the large ones run out and the rest read into small ones.
    const responses = await Promise.all(Array.from({ length: 40 }, async (_, i) => await c.request('127.0.0.1', port, get(`/many${i}`))))
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.ok(readBuffersOut().large <= 32, `at most 32 large buffers out, saw ${readBuffersOut().large}`)
    // Half are read to the end (their connections go idle), half are given up (theirs close).
    await Promise.all(responses.map(async (res, i) => {
      if (i % 2 === 0) {
        assert.equal((await res.body.dump({ limit: BIG.length })), undefined)
      } else {
        res.body.destroy()
      }
    }))
    await c.close()
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.equal(readBuffersOut().large, before, 'every large buffer came back, including those of closed sockets')
  })

  it('bounds the read buffers of all bodies together: past it a body waits for one to come back, then goes on', async (t) => {
    const c = fresh()
    handle = (_req, res) => { res.writeHead(200, { 'Content-Length': BIG.length }).end(BIG) }
    const previous = setReadBufferBounds({ large: 1, small: 2 })
    t.after(() => { setReadBufferBounds(previous) })
    const responses = await Promise.all(Array.from({ length: 5 }, async (_, i) => await c.request('127.0.0.1', port, get(`/bounded${i}`))))
    // Every body hands over a first chunk and keeps it: the buffers behind them stay out.
    const firsts = await Promise.all(responses.map(async (res) => await res.body.read()))
    await new Promise((resolve) => setTimeout(resolve, 100))
    const out = readBuffersOut()
    assert.ok(out.large <= 1 && out.small <= 2, `at most 1 large and 2 small buffers out, saw ${out.large} and ${out.small}`)
    assert.ok(out.starved >= 2, `bodies past the bound wait for a buffer, saw ${out.starved} waiting`)
    // Each body read on by a consumer of its own, as each relay's client does, giving back what
    // it wrote: the waiting bodies get buffers as others come back, and all complete byte for byte.
    const expected = createHash('sha256').update(BIG).digest('hex')
    await Promise.all(responses.map(async (res, i) => {
      const hash = createHash('sha256')
      const first = firsts[i]
      assert.ok(first !== null && first !== undefined)
      hash.update(first.data)
      let length = first.data.length
      res.body.release(first)
      for (;;) {
        const chunk = await res.body.read()
        if (chunk === null) break
        hash.update(chunk.data)
        length += chunk.data.length
        res.body.release(chunk)
        const now = readBuffersOut()
        assert.ok(now.large <= 1 && now.small <= 2, `the bound holds while bodies read: ${now.large} large, ${now.small} small`)
      }
      assert.equal(length, BIG.length, `body ${i}`)
      assert.equal(hash.digest('hex'), expected, `body ${i}`)
    }))
    assert.deepEqual(readBuffersOut(), { large: 0, small: 0, starved: 0 })
    assert.ok(readBufferStats().waitsTotal >= 2, 'the waits are counted')
    // The pools keep what came back until no body took a buffer for a while.
    assert.equal(releaseIdleReadBuffers(60_000), 0, 'taken just now: kept')
    assert.ok(releaseIdleReadBuffers(60_000, Date.now() + 60_000) >= 1024 * 1024, 'idle: the free buffers are let go of')
    assert.equal(releaseIdleReadBuffers(60_000, Date.now() + 60_000), 0, 'and only once')
  })

  it('retries once on a new connection when a kept-alive one was closed by the peer', async () => {
    const c = fresh()
    handle = (_req, res) => { res.writeHead(200, { 'Content-Length': 2 }).end('ok') }
    assert.equal(await (await c.request('127.0.0.1', port, get('/1'))).body.text(), 'ok')
    // The server drops every idle connection, as a restarted peer would.
    for (const s of sockets) s.destroy()
    assert.equal(await (await c.request('127.0.0.1', port, get('/2'))).body.text(), 'ok')
  })

  it('fails a body that stops short, and one that delivers nothing for the idle timeout', async () => {
    const c = fresh({ bodyIdleTimeoutMs: 200 })
    handle = (_req, res) => {
      res.writeHead(200, { 'Content-Length': 10 })
      res.write('abc')
      setTimeout(() => { res.destroy() }, 20)
    }
    const short = await c.request('127.0.0.1', port, get('/short'))
    await assert.rejects(short.body.text(), /closed/)
    handle = (_req, res) => {
      res.writeHead(200, { 'Content-Length': 10 })
      res.write('abc')
    }
    const stalled = await c.request('127.0.0.1', port, get('/stall'))
    await assert.rejects(stalled.body.text(), /delivered nothing for 200 ms/)
  })

  it('aborts with the signal, before and after the head', async () => {
    const c = fresh()
    handle = () => { /* never answers */ }
    const controller = new AbortController()
    const pending = c.request('127.0.0.1', port, get('/hang', { signal: controller.signal }))
    setTimeout(() => { controller.abort(new Error('gave up')) }, 20)
    await assert.rejects(pending, /gave up/)
    handle = (_req, res) => {
      res.writeHead(200, { 'Content-Length': 10 })
      res.write('abc')
    }
    const body = new AbortController()
    const res = await c.request('127.0.0.1', port, get('/partial', { signal: body.signal }))
    body.abort(new Error('client left'))
    await assert.rejects(res.body.text(), /client left/)
  })

  it('refuses chunked bodies, and a connection that cannot be made within the connect timeout', async () => {
    const c = fresh()
    handle = (_req, res) => {
      res.writeHead(200)
      res.write('a')
      res.end('b')
    }
    await assert.rejects(c.request('127.0.0.1', port, get('/chunked')), /transfer-encoding chunked is not supported/)
    // Nothing listens there.
    const closed = createNetServer()
    closed.listen(0, '127.0.0.1')
    await once(closed, 'listening')
    const closedPort = (closed.address() as AddressInfo).port
    closed.close()
    await assert.rejects(c.request('127.0.0.1', closedPort, get('/x')), /ECONNREFUSED/)
  })

  it('opens at most maxDialsPerPeer connections to a peer at once; the rest wait and all are answered', async () => {
    const c = fresh({ maxDialsPerPeer: 2 })
    handle = (req, res) => { res.writeHead(200, { 'Content-Length': String(req.url?.length ?? 0) }).end(req.url) }
    const pending = Array.from({ length: 10 }, async (_, i) => await (await c.request('127.0.0.1', port, get(`/${i}`))).body.text())
    assert.equal(c.waiting('127.0.0.1', port), 8, 'two dials, eight requests waiting behind them')
    assert.deepEqual(await Promise.all(pending), Array.from({ length: 10 }, (_, i) => `/${i}`))
    assert.equal(c.waiting('127.0.0.1', port), 0)
  })

  it('fails the requests waiting on a peer as soon as a connection to it fails, and refuses more than maxWaitingPerPeer', async () => {
    const closed = createNetServer()
    closed.listen(0, '127.0.0.1')
    await once(closed, 'listening')
    const closedPort = (closed.address() as AddressInfo).port
    closed.close()
    const c = fresh({ maxDialsPerPeer: 1, maxWaitingPerPeer: 3 })
    const results = await Promise.allSettled(Array.from({ length: 5 }, async (_, i) => await c.request('127.0.0.1', closedPort, get(`/${i}`))))
    const reasons = results.map((r) => r.status === 'rejected' ? String((r.reason as Error).message) : 'answered')
    assert.match(reasons[0] ?? '', /ECONNREFUSED/, 'the dial itself')
    for (const r of reasons.slice(1, 4)) assert.match(r, /a connection to 127\.0\.0\.1:\d+ just failed: .*ECONNREFUSED/, 'waiters fail with it, without dialing in turn')
    assert.match(reasons[4] ?? '', /3 requests already wait for a connection/)
    assert.equal(c.waiting('127.0.0.1', closedPort), 0)
  })

  it('lets a request waiting for a connection go when its signal aborts', async () => {
    const c = fresh({ maxDialsPerPeer: 1 })
    handle = (_req, res) => { res.writeHead(200, { 'Content-Length': 2 }).end('ok') }
    const first = c.request('127.0.0.1', port, get('/first'))
    const controller = new AbortController()
    const second = c.request('127.0.0.1', port, get('/second', { signal: controller.signal }))
    assert.equal(c.waiting('127.0.0.1', port), 1)
    controller.abort(new Error('client went away'))
    await assert.rejects(second, /client went away/)
    assert.equal(c.waiting('127.0.0.1', port), 0)
    assert.equal(await (await first).body.text(), 'ok')
  })

  it('does not reuse a connection whose peer sent bytes after an answer without a body', async () => {
    const c = fresh()
    // A raw server: HEAD answered with a body anyway, in the same write as the head.
    let connections = 0
    const raw = createNetServer((s) => {
      connections++
      s.on('data', (d) => {
        const isHead = d.toString('latin1').startsWith('HEAD ')
        s.write(isHead ? 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello' : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
      })
    })
    raw.listen(0, '127.0.0.1')
    await once(raw, 'listening')
    const rawPort = (raw.address() as AddressInfo).port
    try {
      const head = await c.request('127.0.0.1', rawPort, get('/h', { method: 'HEAD' }))
      assert.equal(head.headers['content-length'], '5')
      assert.equal(head.body.isComplete, true)
      // Had the stray "hello" been left on the kept-alive connection, it would be read as the
      // start of the next answer.
      assert.equal(await (await c.request('127.0.0.1', rawPort, get('/g'))).body.text(), 'ok')
      assert.equal(connections, 2, 'the second request went over a new connection')
    } finally {
      raw.close()
    }
  })

  it('never sends a request line or header with a line break', async () => {
    const c = fresh()
    await assert.rejects(c.request('127.0.0.1', port, get('/a\r\nX-Evil: 1')), /line break/)
    await assert.rejects(c.request('127.0.0.1', port, get('/a', { headers: { authorization: 'x\r\nX-Evil: 1' } })), /line break/)
  })
})
