// Many keep-alive connections at once against a real node on a real containerd: a reduced form
// of bench/load.ts (which runs 2,000 connections with ab against nginx). All connections open in
// one burst, as ab and a node starting many pods do, then each sends several requests on its
// connection. Failures are counted, never timed: every request must get its full answer.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import { connect } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { containerdAvailable, startContainerd, type ContainerdInstance } from '../helpers/containerd.js'
import { buildImage, OCI_MANIFEST, type BuiltImage } from '../helpers/image.js'
import { startSpegel, type SpegelNode } from '../helpers/spegel.js'

const CONNECTIONS = 1000
const REQUESTS_PER_CONNECTION = 3
const LAYER_BYTES = 64 * 1024
/** This process and the node each hold one descriptor per connection, plus their own. */
const NEEDED_OPEN_FILES = CONNECTIONS + 512

function openFilesLimit (): number {
  const m = /^Max open files\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
  return m === null || m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1])
}

function skipReason (): string | false {
  if (!containerdAvailable()) return 'needs root and containerd (scripts/test-all.sh installs it)'
  // Node raises its soft limit to the hard one at start, so this is what the node gets too.
  if (openFilesLimit() < NEEDED_OPEN_FILES) return `needs ${NEEDED_OPEN_FILES} open files (hard RLIMIT_NOFILE), have ${openFilesLimit()}`
  return false
}

interface Exchange { method: 'GET' | 'HEAD', target: string, bodyBytes: number }

/**
 * One keep-alive connection sending `exchanges` one after another, each answer read in full
 * (Content-Length framing). Resolves with what went wrong, or nothing.
 */
async function converse (host: string, port: number, exchanges: readonly Exchange[]): Promise<string | undefined> {
  return await new Promise<string | undefined>((resolve) => {
    const socket = connect(port, host)
    let pending: Buffer = Buffer.alloc(0)
    let index = 0
    let body: { remaining: number } | undefined
    let isDone = false
    const finish = (problem: string | undefined): void => {
      if (isDone) return
      isDone = true
      socket.destroy()
      resolve(problem)
    }
    const send = (): void => {
      const e = exchanges[index]
      if (e === undefined) {
        finish(undefined)
        return
      }
      socket.write(`${e.method} ${e.target} HTTP/1.1\r\nHost: ${host}\r\nAccept: ${OCI_MANIFEST}, */*\r\n\r\n`)
    }
    const parse = (): void => {
      for (;;) {
        if (body !== undefined) {
          const taken = Math.min(body.remaining, pending.length)
          body.remaining -= taken
          pending = pending.subarray(taken)
          if (body.remaining > 0) return
          body = undefined
          index++
          send()
          continue
        }
        const end = pending.indexOf('\r\n\r\n')
        if (end === -1) return
        const head = pending.subarray(0, end).toString('latin1')
        pending = pending.subarray(end + 4)
        const e = exchanges[index]
        if (e === undefined) return finish('an answer nobody asked for')
        const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? Number.NaN)
        if (status !== '200') return finish(`${e.method} answered ${String(status)}`)
        if (length !== e.bodyBytes) return finish(`${e.method} Content-Length ${length}, expected ${e.bodyBytes}`)
        if (/\r\nconnection: *close/i.test(head)) return finish(`${e.method}: the server closed the keep-alive connection`)
        body = { remaining: e.method === 'HEAD' ? 0 : length }
      }
    }
    socket.on('connect', send)
    socket.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
      parse()
    })
    socket.on('error', (err: NodeJS.ErrnoException) => { finish(`socket error ${err.code ?? err.message} after ${index} answers`) })
    socket.on('close', () => { finish(`connection closed after ${index} of ${exchanges.length} answers`) })
  })
}

describe(`${CONNECTIONS} keep-alive connections at once against one node`, { skip: skipReason() }, () => {
  let workDir: string
  let ctrd: ContainerdInstance
  let node: SpegelNode
  let image: BuiltImage

  before(async () => {
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-load-'))
    image = await buildImage(path.join(workDir, 'image'), 'example.test/load/app:1', [LAYER_BYTES])
    ctrd = await startContainerd({ name: 'load' })
    await ctrd.importImage(image.archivePath!)
    // INFO: a debug line per request would make the node's stderr the bottleneck.
    node = await startSpegel({ containerdSock: ctrd.socketPath, contentPath: ctrd.contentPath, logLevel: 'INFO' })
    await node.waitReady(60_000)
  })

  after(async () => {
    await node?.stop()
    await ctrd?.dispose()
    if (workDir !== undefined) await fs.rm(workDir, { recursive: true, force: true })
  })

  it('answers every request in full: HEAD manifest by tag on half the connections, GET blob on the other half', async () => {
    const platform = image.platforms[0]!
    const layer = platform.layers[0]!
    const head: Exchange = { method: 'HEAD', target: '/v2/load/app/manifests/1?ns=example.test', bodyBytes: platform.manifest.size }
    const get: Exchange = { method: 'GET', target: `/v2/load/app/blobs/${layer.digest}?ns=example.test`, bodyBytes: layer.size }
    const url = new URL(node.registryUrl)
    const outcomes = await Promise.all(Array.from({ length: CONNECTIONS }, async (_, i) =>
      await converse(url.hostname, Number(url.port), Array.from({ length: REQUESTS_PER_CONNECTION }, () => i % 2 === 0 ? head : get))))
    const failures = new Map<string, number>()
    for (const problem of outcomes) if (problem !== undefined) failures.set(problem, (failures.get(problem) ?? 0) + 1)
    assert.deepEqual(Object.fromEntries(failures), {}, `failed connections of ${CONNECTIONS}`)
    assert.ok(node.isAlive())
    assert.equal((await node.readyz()).status, 200)
  })
})
