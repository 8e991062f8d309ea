import assert from 'node:assert/strict'
import { once } from 'node:events'
import fs from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import type { CleanupConfig, CleanupWaitConfig } from '../config/index.js'
import { createLogger, type Logger } from '../observability/logger.js'
import { createCleanupProbeServer, runCleanup, runCleanupWait } from './cleanup.js'
import { runCli, type CliHandlers } from './program.js'

interface LogRecord { level: string, msg: string, [key: string]: unknown }

function captureLogger (): { log: Logger, records: LogRecord[], logged: (msg: string) => Promise<void> } {
  const records: LogRecord[] = []
  const waiters: Array<{ msg: string, resolve: () => void }> = []
  const sink = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line === '') continue
        const record = JSON.parse(line) as LogRecord
        records.push(record)
        for (const w of waiters.filter((x) => x.msg === record.msg)) w.resolve()
      }
      cb()
    }
  })
  const logged = async (msg: string): Promise<void> => {
    if (records.some((r) => r.msg === msg)) return
    await new Promise<void>((resolve) => { waiters.push({ msg, resolve }) })
  }
  return { log: createLogger({ level: 'debug', destination: sink }), records, logged }
}

async function listenOn (server: http.Server, host: string, port = 0): Promise<number> {
  server.listen(port, host)
  await once(server, 'listening')
  return (server.address() as AddressInfo).port
}

async function close (server: http.Server): Promise<void> {
  const closed = once(server, 'close')
  server.close()
  server.closeAllConnections()
  await closed
}

/** A server whose answer to each request is decided by `statusFor(n)` (n counts from 1); undefined never answers. */
function scriptedServer (statusFor: (n: number) => number | undefined): http.Server & { requests: number } {
  const server = http.createServer((req, res) => {
    server.requests++
    const status = statusFor(server.requests)
    if (status !== undefined) res.writeHead(status, { 'Content-Length': 0 }).end()
  }) as http.Server & { requests: number }
  server.requests = 0
  return server
}

async function get (port: number, pathname: string, method = 'GET', host = '127.0.0.1'): Promise<number> {
  return await new Promise((resolve, reject) => {
    const req = http.request({ host, port, path: pathname, method, agent: false }, (res) => {
      res.resume()
      res.once('end', () => { resolve(res.statusCode ?? 0) })
    })
    req.once('error', reject)
    req.end()
  })
}

describe('cleanup probe server', () => {
  let server: http.Server
  let port: number
  before(async () => {
    server = createCleanupProbeServer()
    port = await listenOn(server, '127.0.0.1')
  })
  after(async () => { await close(server) })

  it('answers 200 only to GET /readyz', async () => {
    assert.equal(await get(port, '/readyz'), 200)
    assert.equal(await get(port, '/readyz?probe=1'), 200)
    assert.equal(await get(port, '/'), 404)
    assert.equal(await get(port, '/livez'), 404)
    assert.equal(await get(port, '/readyz', 'POST'), 404)
    assert.equal(await get(port, '/readyz', 'HEAD'), 404)
    assert.equal(await get(port, '/readyz/x'), 404)
  })
})

describe('runCleanup', () => {
  let dir: string
  before(async () => { dir = await fs.mkdtemp(path.join(os.tmpdir(), 'run-cleanup-')) })
  after(async () => { await fs.rm(dir, { recursive: true, force: true }) })

  const config = (configPath: string, port = 0): CleanupConfig => ({ logLevel: 'INFO', addr: { host: '127.0.0.1', port }, containerdRegistryConfigPath: configPath })

  it('restores the backup, serves /readyz until shutdown, then exits 0', async () => {
    const configPath = path.join(dir, 'restore')
    await fs.mkdir(path.join(configPath, '_backup', 'ghcr.io'), { recursive: true })
    await fs.writeFile(path.join(configPath, '_backup', 'ghcr.io', 'hosts.toml'), 'server = "https://ghcr.io"')
    await fs.mkdir(path.join(configPath, 'docker.io'))
    await fs.writeFile(path.join(configPath, 'docker.io', 'hosts.toml'), 'spegel wrote this')
    const shutdown = new AbortController()
    const { log, records } = captureLogger()
    let listening: (address: AddressInfo) => void = () => {}
    const bound = new Promise<AddressInfo>((resolve) => { listening = resolve })
    const result = runCleanup(config(configPath), { shutdown: shutdown.signal, log, onListening: (a) => { listening(a) } })
    const address = await bound
    // The probe only answers once the files are back.
    assert.deepEqual(await fs.readdir(configPath), ['ghcr.io'])
    assert.equal(await get(address.port, '/readyz'), 200)
    shutdown.abort()
    assert.equal(await result, 0)
    await assert.rejects(get(address.port, '/readyz'), { code: 'ECONNREFUSED' })
    assert.deepEqual(records.map((r) => r.msg), ['recovering containerd host configuration', 'waiting to be shutdown', 'exit gracefully'])
    assert.equal(records[1]?.addr, `127.0.0.1:${address.port}`)
  })

  it('without a backup it changes nothing and still reports done', async () => {
    const configPath = path.join(dir, 'nothing')
    await fs.mkdir(path.join(configPath, 'docker.io'), { recursive: true })
    const shutdown = new AbortController()
    const { log, records } = captureLogger()
    const result = runCleanup(config(configPath), {
      shutdown: shutdown.signal,
      log,
      onListening: (a) => { get(a.port, '/readyz').then((status) => { assert.equal(status, 200); shutdown.abort() }, (err: unknown) => { shutdown.abort(err) }) }
    })
    assert.equal(await result, 0)
    assert.deepEqual(await fs.readdir(configPath), ['docker.io'])
    assert.equal(records[0]?.msg, 'skipping cleanup because backup directory does not exist')
  })

  it('exits 1 when the probe address is taken', async () => {
    const blocker = http.createServer()
    const port = await listenOn(blocker, '127.0.0.1')
    try {
      const { log, records } = captureLogger()
      assert.equal(await runCleanup(config(path.join(dir, 'taken'), port), { shutdown: new AbortController().signal, log }), 1)
      assert.equal(records.at(-1)?.msg, 'exit with error')
      assert.match(String(records.at(-1)?.err), /EADDRINUSE/)
    } finally {
      await close(blocker)
    }
  })
})

describe('runCleanupWait', () => {
  const waitConfig = (port: number, threshold = 3, host = '127.0.0.1'): CleanupWaitConfig => ({
    logLevel: 'INFO', probeEndpoint: { host, port }, threshold, periodMs: 10
  })
  const counts = (records: readonly LogRecord[]): unknown[] => records.filter((r) => r.msg === 'probe ran successfully').map((r) => r.count)

  it('reaches the threshold against cleanup\'s probe server and exits 0', async () => {
    const cleanupShutdown = new AbortController()
    const configPath = await fs.mkdtemp(path.join(os.tmpdir(), 'cleanup-wait-'))
    let listening: (address: AddressInfo) => void = () => {}
    const bound = new Promise<AddressInfo>((resolve) => { listening = resolve })
    const cleanup = runCleanup({ logLevel: 'INFO', addr: { host: '127.0.0.1', port: 0 }, containerdRegistryConfigPath: configPath },
      { shutdown: cleanupShutdown.signal, log: createLogger({ level: 'silent' }), onListening: (a) => { listening(a) } })
    try {
      const { port } = await bound
      const { log, records } = captureLogger()
      // No lookup seam: the system resolver turns the literal into itself.
      assert.equal(await runCleanupWait(waitConfig(port), { shutdown: AbortSignal.timeout(10_000), log }), 0)
      assert.deepEqual(counts(records), [1, 2, 3])
      assert.deepEqual(records.slice(-2).map((r) => r.msg), ['probe threshold reached', 'exit gracefully'])
    } finally {
      cleanupShutdown.abort()
      assert.equal(await cleanup, 0)
      await fs.rm(configPath, { recursive: true, force: true })
    }
  })

  it('a failed round resets the count', async () => {
    const server = scriptedServer((n) => n === 2 ? 500 : 200)
    const port = await listenOn(server, '127.0.0.1')
    try {
      const { log, records } = captureLogger()
      assert.equal(await runCleanupWait(waitConfig(port), { shutdown: AbortSignal.timeout(10_000), log }), 0)
      assert.deepEqual(counts(records), [1, 1, 2, 3])
      const failure = records.find((r) => r.msg === 'cleanup probe request failed')
      assert.match(String(failure?.err), /returned 500/)
      assert.equal(failure?.level, 'WARN')
    } finally {
      await close(server)
    }
  })

  it('never succeeds against a server that answers 500, and fails when shut down', async () => {
    const server = scriptedServer(() => 500)
    const port = await listenOn(server, '127.0.0.1')
    try {
      const { log, records } = captureLogger()
      assert.equal(await runCleanupWait(waitConfig(port), { shutdown: AbortSignal.timeout(300), log }), 1)
      assert.ok(server.requests >= 2, 'probed repeatedly')
      assert.deepEqual(counts(records), [])
      assert.equal(records.at(-1)?.msg, 'exit with error')
    } finally {
      await close(server)
    }
  })

  it('gives up on a probe that gets no answer after the probe timeout, and keeps probing', async () => {
    const server = scriptedServer((n) => n === 1 ? undefined : 200)
    const port = await listenOn(server, '127.0.0.1')
    try {
      const { log, records } = captureLogger()
      assert.equal(await runCleanupWait(waitConfig(port, 1), { shutdown: AbortSignal.timeout(10_000), log, probeTimeoutMs: 100 }), 0)
      assert.equal(records.filter((r) => r.msg === 'cleanup probe request failed').length, 1)
      assert.deepEqual(counts(records), [1])
    } finally {
      await close(server)
    }
  })

  it('every address of the name must answer 200', async () => {
    const good = scriptedServer(() => 200)
    const port = await listenOn(good, '127.0.0.1')
    const bad = scriptedServer((n) => n <= 2 ? 503 : 200)
    await listenOn(bad, '127.0.0.2', port)
    try {
      const { log, records } = captureLogger()
      const lookup = async (host: string): Promise<string[]> => {
        assert.equal(host, 'spegel-cleanup.spegel.svc')
        return ['127.0.0.1', '127.0.0.2']
      }
      assert.equal(await runCleanupWait(waitConfig(port, 2, 'spegel-cleanup.spegel.svc'), { shutdown: AbortSignal.timeout(10_000), log, lookup }), 0)
      assert.equal(records.filter((r) => r.msg === 'cleanup probe request failed').length, 2)
      assert.deepEqual(counts(records), [1, 2])
      assert.equal(records.find((r) => r.msg === 'probe ran successfully')?.addresses, 2)
    } finally {
      await close(good)
      await close(bad)
    }
  })

  it('a failed or empty lookup resets the count and is retried', async () => {
    const server = scriptedServer(() => 200)
    const port = await listenOn(server, '127.0.0.1')
    try {
      const answers: Array<string[] | Error> = [['127.0.0.1'], new Error('no such host'), [], ['127.0.0.1'], ['127.0.0.1']]
      const lookup = async (): Promise<string[]> => {
        const next = answers.shift() ?? ['127.0.0.1']
        if (next instanceof Error) throw next
        return next
      }
      const { log, records } = captureLogger()
      assert.equal(await runCleanupWait(waitConfig(port, 2, 'cleanup.test'), { shutdown: AbortSignal.timeout(10_000), log, lookup }), 0)
      assert.deepEqual(records.filter((r) => r.msg.startsWith('cleanup probe')).map((r) => [r.msg, r.err]), [
        ['cleanup probe lookup failed', 'cannot resolve cleanup.test: no such host'],
        ['cleanup probe lookup failed', 'cleanup.test resolved to no addresses']
      ])
      assert.deepEqual(counts(records), [1, 1, 2])
    } finally {
      await close(server)
    }
  })

  it('a shutdown during the wait between rounds ends it at once with exit 1', async () => {
    const server = scriptedServer(() => 200)
    const port = await listenOn(server, '127.0.0.1')
    try {
      const shutdown = new AbortController()
      const { log, records, logged } = captureLogger()
      const config = { ...waitConfig(port, 5), periodMs: 3_600_000 }
      const result = runCleanupWait(config, { shutdown: shutdown.signal, log })
      // Shut down once the first round is in; the next would be an hour away.
      await logged('probe ran successfully')
      shutdown.abort()
      assert.equal(await result, 1)
      assert.equal(records.at(-1)?.msg, 'exit with error')
    } finally {
      await close(server)
    }
  })
})

interface Recorded {
  code: number
  stderr: string
  cleanup: CleanupConfig[]
  cleanupWait: CleanupWaitConfig[]
}

async function runRecorded (argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Recorded> {
  const r: Recorded = { code: -1, stderr: '', cleanup: [], cleanupWait: [] }
  const handlers: CliHandlers = {
    registry: async () => { throw new Error('registry must not run') },
    doctor: async () => { throw new Error('doctor must not run') },
    configuration: async () => { throw new Error('configuration must not run') },
    cleanup: async (c) => { r.cleanup.push(c); return 0 },
    cleanupWait: async (c) => { r.cleanupWait.push(c); return 0 }
  }
  r.code = await runCli(argv, env, handlers, { stdout: () => {}, stderr: (s) => { r.stderr += s } })
  return r
}

async function usageError (argv: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const r = await runRecorded(argv, env)
  assert.equal(r.code, 2, `expected exit 2, got ${r.code}: ${r.stderr}`)
  assert.equal(r.cleanup.length + r.cleanupWait.length, 0, 'handler must not run')
  return r.stderr
}

describe('runCli cleanup and cleanup-wait: flags and env', () => {
  it('cleanup reads --addr and the config path from argv or env', async () => {
    let r = await runRecorded(['cleanup', '--addr', ':8080'])
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(r.cleanup, [{ logLevel: 'INFO', addr: { host: '', port: 8080 }, containerdRegistryConfigPath: '/etc/containerd/certs.d' }])
    r = await runRecorded(['cleanup'], { ADDR: '[::]:9000', CONTAINERD_REGISTRY_CONFIG_PATH: '/host/certs.d' })
    assert.deepEqual(r.cleanup, [{ logLevel: 'INFO', addr: { host: '::', port: 9000 }, containerdRegistryConfigPath: '/host/certs.d' }])
    r = await runRecorded(['cleanup', '--addr=127.0.0.1:1', '--containerd-registry-config-path', '/flag'], { ADDR: ':2', CONTAINERD_REGISTRY_CONFIG_PATH: '/env' })
    assert.deepEqual(r.cleanup, [{ logLevel: 'INFO', addr: { host: '127.0.0.1', port: 1 }, containerdRegistryConfigPath: '/flag' }])
  })

  it('cleanup-wait reads every setting from argv or env', async () => {
    let r = await runRecorded(['cleanup-wait', '--probe-endpoint', 'spegel-cleanup.spegel.svc.cluster.local:8080'])
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(r.cleanupWait, [{ logLevel: 'INFO', probeEndpoint: { host: 'spegel-cleanup.spegel.svc.cluster.local', port: 8080 }, threshold: 3, periodMs: 2000 }])
    r = await runRecorded(['cleanup-wait'], { PROBE_ENDPOINT: 'x:1', THRESHOLD: '5', PERIOD: '1m30s', LOG_LEVEL: 'debug' })
    assert.deepEqual(r.cleanupWait, [{ logLevel: 'DEBUG', probeEndpoint: { host: 'x', port: 1 }, threshold: 5, periodMs: 90_000 }])
    r = await runRecorded(['cleanup-wait', '--probe-endpoint=y:2', '--threshold', '1', '--period', '100ms'], { PROBE_ENDPOINT: 'x:1', THRESHOLD: '5', PERIOD: '1m' })
    assert.deepEqual(r.cleanupWait, [{ logLevel: 'INFO', probeEndpoint: { host: 'y', port: 2 }, threshold: 1, periodMs: 100 }])
  })

  it('required and bad values are argument errors naming the flag', async () => {
    assert.match(await usageError(['cleanup']), /--addr is required.*ADDR/)
    assert.match(await usageError(['cleanup', '--addr', 'nope']), /--addr/)
    assert.match(await usageError(['cleanup-wait']), /--probe-endpoint is required.*PROBE_ENDPOINT/)
    assert.match(await usageError(['cleanup-wait', '--probe-endpoint', ':8080']), /--probe-endpoint.*host is empty/)
    assert.match(await usageError(['cleanup-wait', '--probe-endpoint', 'x:1', '--threshold', '0']), /--threshold/)
    assert.match(await usageError(['cleanup-wait', '--probe-endpoint', 'x:1'], { PERIOD: '2' }), /env PERIOD \(--period\)/)
    assert.match(await usageError(['cleanup-wait', '--probe-endpoint', 'x:1', '--period', '0s']), /--period/)
  })
})
