import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { analyseAccess, chooseSocket, contentPathReadable, diagnoseSocket, probeSocket } from './diagnose.js'
import { backoffDelayMs } from '../resilience/backoff.js'

describe('socket diagnosis', () => {
  let dir: string
  let server: net.Server
  let socketPath: string

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-diag-'))
    socketPath = path.join(dir, 'live.sock')
    server = net.createServer((s) => s.end())
    await new Promise<void>((resolve) => server.listen(socketPath, resolve))
  })
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => { resolve() }))
    await fs.rm(dir, { recursive: true, force: true })
  })

  it('probes with the errno the OS gives', async () => {
    assert.equal(await probeSocket(socketPath), undefined)
    assert.equal(await probeSocket(path.join(dir, 'missing.sock')), 'ENOENT')
    const file = path.join(dir, 'plain-file')
    await fs.writeFile(file, '')
    assert.equal(await probeSocket(file), 'ECONNREFUSED')
  })

  it('tells a missing socket, a regular file and a refused socket apart, each with a fix', async () => {
    const missing = await diagnoseSocket(path.join(dir, 'missing.sock'), 'ENOENT')
    assert.equal(missing.problem, 'socket-missing')
    assert.match(missing.fix, /--containerd-sock|well-known/)
    const file = path.join(dir, 'plain-file')
    assert.equal((await diagnoseSocket(file, 'ECONNREFUSED')).problem, 'not-a-socket')
    assert.equal((await diagnoseSocket(socketPath, 'ECONNREFUSED')).problem, 'connection-refused')
    const refused = await diagnoseSocket(socketPath, 'ECONNREFUSED')
    assert.match(refused.fix, /directory/)
  })

  it('explains permissions from mode, owner and groups', async () => {
    const nobody = { uid: 65534, gid: 65534, groups: [65534] }
    await fs.chmod(socketPath, 0o660)
    await fs.chmod(dir, 0o755)
    const denied = await analyseAccess(socketPath, nobody)
    assert.equal(denied.canConnect, false)
    assert.match(denied.explanation ?? '', /0660/)
    assert.match(denied.explanation ?? '', /uid 65534/)
    const st = await fs.stat(socketPath)
    assert.equal((await analyseAccess(socketPath, { uid: 1234, gid: 9, groups: [st.gid] })).canConnect, true, 'group member may connect')
    await fs.chmod(dir, 0o700)
    const dirDenied = await analyseAccess(socketPath, nobody)
    assert.equal(dirDenied.canConnect, false)
    assert.match(dirDenied.explanation ?? '', new RegExp(`directory ${dir}`))
    await fs.chmod(dir, 0o755)
    assert.equal((await analyseAccess(socketPath, { uid: 0, gid: 0, groups: [] })).canConnect, true, 'root always may')
  })

  it('prefers an explicit path, then the default, then a well-known socket', async () => {
    const explicit = await chooseSocket(path.join(dir, 'nowhere.sock'), true)
    assert.equal(explicit.source, 'flag')
    assert.equal(explicit.socketPath, path.join(dir, 'nowhere.sock'))
    const present = await chooseSocket(socketPath, false)
    assert.deepEqual([present.source, present.socketPath], ['default', socketPath])
  })

  it('reports whether the content directory is readable', async () => {
    assert.equal((await contentPathReadable('')).readable, false)
    assert.equal((await contentPathReadable(path.join(dir, 'nope'))).readable, false)
    await fs.mkdir(path.join(dir, 'content', 'blobs'), { recursive: true })
    assert.equal((await contentPathReadable(path.join(dir, 'content'))).readable, true)
  })
})

describe('reconnect backoff', () => {
  it('grows exponentially from the initial delay, is capped and jittered', () => {
    // As the supervisor calls it: attempts from 0, half jitter.
    const low = (attempt: number): number => backoffDelayMs(attempt + 1, { initialMs: 100, maxMs: 5000, jitter: 0.5, random: () => 1 })
    const high = (attempt: number): number => backoffDelayMs(attempt + 1, { initialMs: 100, maxMs: 5000, jitter: 0.5, random: () => 0 })
    assert.deepEqual([0, 1, 2, 3].map(high), [100, 200, 400, 800])
    assert.deepEqual([0, 1, 2, 3].map(low), [50, 100, 200, 400])
    assert.equal(high(20), 5000)
    assert.equal(high(1000), 5000, 'no overflow on huge attempt counts')
    assert.equal(low(20), 2500)
  })
})
