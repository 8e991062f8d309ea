import assert from 'node:assert/strict'
import { once } from 'node:events'
import http from 'node:http'
import net from 'node:net'
import { describe, it } from 'node:test'
import { createLogger } from '../observability/logger.js'
import { addressText, closeGracefully, listen } from './lifecycle.js'
import { createServer } from './server.js'

const BODY_CHUNK = Buffer.alloc(1024 * 1024, 0x61)

/** Streams `totalBytes`, honouring backpressure, as a blob download does. */
function streamingServer (totalBytes: number): http.Server {
  return http.createServer((req, res) => {
    if (req.url === '/small') {
      res.end('ok')
      return
    }
    res.writeHead(200, { 'Content-Length': totalBytes })
    let left = totalBytes
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, BODY_CHUNK.length)
        left -= n
        if (!res.write(BODY_CHUNK.subarray(0, n))) {
          res.once('drain', pump)
          return
        }
      }
      res.end()
    }
    pump()
  })
}

/** A raw client that sends one request and then reads nothing: a stalled puller. */
async function stalledClient (port: number, path: string): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port })
  await once(socket, 'connect')
  socket.write(`GET ${path} HTTP/1.1\r\nHost: test\r\n\r\n`)
  socket.pause()
  return socket
}

describe('listen and addressText', () => {
  it('listens on the given host and port 0, and names the bound address', async () => {
    const server = http.createServer()
    const info = await listen(server, { host: '127.0.0.1', port: 0 })
    try {
      assert.ok(info.port > 0)
      assert.equal(addressText(server), `127.0.0.1:${info.port}`)
    } finally {
      await closeGracefully(server, { graceMs: 1000 })
    }
  })

  it('accepts a bracketed IPv6 host and brackets it back', async (t) => {
    const server = http.createServer()
    try {
      await listen(server, { host: '[::1]', port: 0 })
    } catch (err) {
      t.skip(`no IPv6 loopback here: ${(err as Error).message}`)
      return
    }
    try {
      assert.match(addressText(server), /^\[::1\]:\d+$/)
    } finally {
      await closeGracefully(server, { graceMs: 1000 })
    }
  })

  it('rejects with the listen error when the port is taken', async () => {
    const first = http.createServer()
    const { port } = await listen(first, { host: '127.0.0.1', port: 0 })
    try {
      await assert.rejects(listen(http.createServer(), { host: '127.0.0.1', port }), { code: 'EADDRINUSE' })
    } finally {
      await closeGracefully(first, { graceMs: 1000 })
    }
  })
})

describe('listen with several acceptors (SO_REUSEPORT)', () => {
  it('still refuses a port another of our servers listens on, instead of sharing it', async () => {
    const log = createLogger({ level: 'silent' })
    const first = createServer((_req, res) => { res.end('first') }, { log, acceptors: 4 })
    const { port } = await listen(first, { host: '127.0.0.1', port: 0 })
    try {
      const second = createServer((_req, res) => { res.end('second') }, { log, acceptors: 4 })
      await assert.rejects(listen(second, { host: '127.0.0.1', port }), { code: 'EADDRINUSE' })
      second.close()
    } finally {
      await closeGracefully(first, { graceMs: 1000 })
    }
  })
})

describe('closeGracefully', () => {
  it('closes idle keep-alive connections at once, without forcing', async () => {
    const server = streamingServer(0)
    const { port } = await listen(server, { host: '127.0.0.1', port: 0 })
    const agent = new http.Agent({ keepAlive: true })
    try {
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path: '/small', agent }, resolve).once('error', reject)
      })
      res.resume()
      await once(res, 'end')
      // The socket now idles in the agent's pool; a plain close() would wait for the keep-alive timeout.
      const result = await closeGracefully(server, { graceMs: 60_000 })
      assert.equal(result.isForced, false)
      assert.equal(server.listening, false)
    } finally {
      agent.destroy()
    }
  })

  it('lets a request in flight finish within the grace period, then closes its connection', async () => {
    let release: (() => void) | undefined
    const server = http.createServer((_req, res) => {
      release = () => { res.end('done') }
    })
    const { port } = await listen(server, { host: '127.0.0.1', port: 0 })
    const agent = new http.Agent({ keepAlive: true })
    try {
      const response = new Promise<http.IncomingMessage>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path: '/', agent }, resolve).once('error', reject)
      })
      while (release === undefined) await new Promise((resolve) => setImmediate(resolve))
      const closing = closeGracefully(server, { graceMs: 60_000 })
      // New connections are refused once closing has begun.
      await assert.rejects(new Promise((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path: '/small', agent: false }, resolve).once('error', reject)
      }), { code: 'ECONNREFUSED' })
      release()
      const res = await response
      const chunks: Buffer[] = []
      for await (const chunk of res) chunks.push(chunk as Buffer)
      assert.equal(Buffer.concat(chunks).toString(), 'done', 'the response in flight is delivered whole')
      // Its connection turns idle and is closed then (the agent would keep it for reuse).
      assert.deepEqual(await closing, { isForced: false })
    } finally {
      agent.destroy()
    }
  })

  it('cuts a stream to a reader that stalls past the grace period, so shutdown never waits for it', async () => {
    // Far more than the socket buffers hold: the server blocks on backpressure until the deadline.
    const server = streamingServer(1024 * 1024 * 1024)
    const { port } = await listen(server, { host: '127.0.0.1', port: 0 })
    const started = once(server, 'request')
    const client = await stalledClient(port, '/blob')
    const clientClosed = once(client, 'close')
    client.on('error', () => { /* a reset is one way to be cut off */ })
    // Wait until the server has a request in flight (the response has started).
    await started
    const result = await closeGracefully(server, { graceMs: 300 })
    assert.equal(result.isForced, true)
    // Reading what the kernel had buffered, the client reaches the end: the stream was cut short.
    let received = 0
    client.on('data', (chunk: Buffer) => { received += chunk.length })
    client.resume()
    await clientClosed
    assert.ok(received < 1024 * 1024 * 1024, `received ${received} bytes of 1 GiB`)
    assert.equal(server.listening, false)
  })
})
