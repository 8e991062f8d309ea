#!/usr/bin/env node
/**
 * Reference line for bench/serve-blob.ts: the plainest Node server that can serve a file, so the
 * benchmark can tell what spegel loses to Node itself and what it loses to its own code.
 *
 * Usage: node dist/bench/node-file-server.js ROOT [HWM_BYTES=1048576] [MODE=stream|pool]
 * Listens on 127.0.0.1 on a kernel-chosen port and prints `{"port":N}` as the first stdout line.
 * GET/HEAD /<name> answers ROOT/<name>; files up to 256 KiB are read with one read (as spegel
 * does, because per-request createReadStream is slow on Node 24). Bigger ones are sent with
 * - `stream`: fs.createReadStream(HWM_BYTES) piped into the response, as everyone writes it;
 * - `pool`: FileHandle.read into a few buffers of HWM_BYTES allocated once per response, each
 *   reused only after the socket has taken it. createReadStream allocates a fresh buffer per
 *   chunk, and V8 answers that external memory with a full mark-compact every few tens of MiB,
 *   whose cost grows with the live heap: `pool` shows what serving costs without that churn.
 */
import { once } from 'node:events'
import { createReadStream } from 'node:fs'
import { open, readFile, stat } from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'

const SMALL_READ_LIMIT_BYTES = 256 * 1024
const DEFAULT_HWM_BYTES = 1024 * 1024
const POOL_BUFFERS = 4

const [root, hwmArg, modeArg = 'stream'] = process.argv.slice(2)
if (root === undefined || (modeArg !== 'stream' && modeArg !== 'pool')) {
  process.stderr.write('usage: node-file-server.js ROOT [HWM_BYTES] [stream|pool]\n')
  process.exit(2)
}
const highWaterMark = hwmArg === undefined ? DEFAULT_HWM_BYTES : Number(hwmArg)
if (!Number.isSafeInteger(highWaterMark) || highWaterMark <= 0) {
  process.stderr.write(`invalid HWM_BYTES ${String(hwmArg)}\n`)
  process.exit(2)
}

async function handle (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { 'Content-Length': 0 }).end()
    return
  }
  const name = path.basename(decodeURIComponent((req.url ?? '/').split('?')[0] ?? '/'))
  const file = path.join(root!, name)
  let size: number
  try {
    const st = await stat(file)
    if (!st.isFile()) throw new Error('not a file')
    size = st.size
  } catch {
    res.writeHead(404, { 'Content-Length': 0 }).end()
    return
  }
  const headers = { 'Content-Type': 'application/octet-stream', 'Content-Length': size }
  if (req.method === 'HEAD') {
    res.writeHead(200, headers).end()
    return
  }
  if (size <= SMALL_READ_LIMIT_BYTES) {
    const body = await readFile(file)
    res.writeHead(200, headers).end(body)
    return
  }
  res.writeHead(200, headers)
  if (modeArg === 'pool') {
    await sendPooled(file, size, res)
    return
  }
  await pipeline(createReadStream(file, { highWaterMark }), res)
}

async function sendPooled (file: string, size: number, res: http.ServerResponse): Promise<void> {
  const buffers = Array.from({ length: POOL_BUFFERS }, () => Buffer.allocUnsafeSlow(highWaterMark))
  // Settles when the socket no longer needs buffers[i]; a buffer is refilled only after that.
  const written: Array<Promise<void> | undefined> = new Array(POOL_BUFFERS).fill(undefined)
  const fh = await open(file, 'r')
  try {
    let position = 0
    for (let i = 0; position < size; i = (i + 1) % POOL_BUFFERS) {
      await written[i]
      const buffer = buffers[i]!
      const { bytesRead } = await fh.read(buffer, 0, Math.min(highWaterMark, size - position), position)
      if (bytesRead === 0) throw new Error(`${file} shrank below ${size} bytes`)
      position += bytesRead
      if (res.destroyed) throw new Error('client went away')
      written[i] = new Promise((resolve, reject) => {
        res.write(buffer.subarray(0, bytesRead), (err) => { err == null ? resolve() : reject(err) })
      })
      // Rejections are awaited in order above; until then they must not count as unhandled.
      written[i]!.catch(() => {})
    }
    await Promise.all(written)
    res.end()
  } finally {
    await fh.close()
  }
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err: unknown) => {
    // A client that hangs up mid-blob ends up here; the response can only be cut off.
    if (!res.headersSent) res.writeHead(500, { 'Content-Length': 0 }).end()
    else res.destroy(err instanceof Error ? err : undefined)
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1')
await once(server, 'listening')
const address = server.address()
if (address === null || typeof address === 'string') throw new Error(`unexpected address ${String(address)}`)
process.stdout.write(`${JSON.stringify({ port: address.port })}\n`)
process.on('SIGTERM', () => { server.close(); server.closeAllConnections() })
