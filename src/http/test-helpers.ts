// Helpers for tests that talk to a real server on 127.0.0.1. Not used at run time.
import { once } from 'node:events'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect, type Server as NetServer, type Socket } from 'node:net'
import { Writable } from 'node:stream'
import { setTimeout as delay } from 'node:timers/promises'
import { createLogger, type Logger } from '../observability/logger.js'
import { createServer } from './server.js'

export interface TestResponse {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
}

export interface TestServer {
  server: Server
  port: number
  close(): Promise<void>
}

export async function startTestServer (handler: (req: IncomingMessage, res: ServerResponse) => void, log: Logger): Promise<TestServer> {
  const server = createServer(handler, { log })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('server has no port')
  return {
    server,
    port: address.port,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve, reject) => server.close((err) => { err === undefined ? resolve() : reject(err) }))
    }
  }
}

/**
 * Listens on 127.0.0.1 at a free port. `close` destroys the connections still open (a peer
 * that never answers, a paced body) and waits for the server to close. `sockets` are the open ones.
 */
export async function listenLocal (server: NetServer): Promise<{ port: number, sockets: ReadonlySet<Socket>, close: () => Promise<void> }> {
  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => { sockets.delete(socket) })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('server has no port')
  return {
    port: address.port,
    sockets,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      server.close()
      await once(server, 'close')
    }
  }
}

/** One request on its own connection (no agent), body collected. */
export async function request (port: number, path: string, options: { method?: string, headers?: Record<string, string> } = {}): Promise<TestResponse> {
  const req = httpRequest({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.headers, agent: false })
  req.end()
  const [res] = await once(req, 'response') as [IncomingMessage]
  const parts: Buffer[] = []
  for await (const chunk of res) parts.push(chunk as Buffer)
  return { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }
}

/**
 * A request written byte for byte on a TCP socket, for paths that http clients would
 * normalise (`..`, `%2f`). Reads until the server closes (Connection: close).
 */
export async function rawRequest (port: number, method: string, target: string, headers: Record<string, string> = {}): Promise<TestResponse> {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  const head = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)]
  socket.end(`${head.join('\r\n')}\r\n\r\n`)
  const parts: Buffer[] = []
  for await (const chunk of socket) parts.push(chunk as Buffer)
  const raw = Buffer.concat(parts)
  const split = raw.indexOf('\r\n\r\n')
  if (split === -1) throw new Error(`incomplete response: ${raw.toString('latin1')}`)
  const [statusLine = '', ...headerLines] = raw.subarray(0, split).toString('latin1').split('\r\n')
  const status = Number(statusLine.split(' ')[1])
  const parsed: IncomingHttpHeaders = {}
  for (const line of headerLines) {
    const colon = line.indexOf(':')
    parsed[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status, headers: parsed, body: raw.subarray(split + 4) }
}

export interface LogLine {
  level: string
  msg: string
  [field: string]: unknown
}

/** A debug-level logger whose JSON lines are kept for assertions. */
export class LogCapture {
  readonly lines: LogLine[] = []
  readonly log: Logger
  readonly #waiters = new Set<() => void>()

  constructor () {
    const destination = new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        for (const text of chunk.toString('utf8').split('\n')) {
          if (text.trim() !== '') this.lines.push(JSON.parse(text) as LogLine)
        }
        for (const wake of this.#waiters) wake()
        callback()
      }
    })
    this.log = createLogger({ level: 'debug', destination })
  }

  /** The first line matching `predicate`, waiting for it up to `timeoutMs`. */
  async find (predicate: (line: LogLine) => boolean, timeoutMs = 5000): Promise<LogLine> {
    const signal = AbortSignal.timeout(timeoutMs)
    while (true) {
      const line = this.lines.find(predicate)
      if (line !== undefined) return line
      if (signal.aborted) throw new Error(`no matching log line within ${timeoutMs} ms; have:\n${this.lines.map((l) => JSON.stringify(l)).join('\n')}`)
      await new Promise<void>((resolve) => {
        const wake = (): void => { cleanup(); resolve() }
        const cleanup = (): void => { this.#waiters.delete(wake); signal.removeEventListener('abort', wake) }
        this.#waiters.add(wake)
        signal.addEventListener('abort', wake)
      })
    }
  }
}

/** Retries `check` until it stops throwing, for state that settles just after a response (metrics on close). */
export async function eventually (check: () => void | Promise<void>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (true) {
    try {
      await check()
      return
    } catch (err) {
      if (Date.now() > deadline) throw err
    }
    await delay(5)
  }
}
