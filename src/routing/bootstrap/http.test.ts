import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile, copyFile } from 'node:fs/promises'
import { createServer as createHttpServer, type Server, type RequestListener } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TLSSocket } from 'node:tls'
import { promisify } from 'node:util'
import { ConfigError } from '../../config/index.js'
import { BootstrapError } from './errors.js'
import { httpBootstrapper, parseIdResponse } from './http.js'
import type { Bootstrapper, SelfInfo } from './types.js'

const ID = '12D3KooWAsvvigG9jqjMNWMmqXph6BvszxTus6Fg6k5UZda2iKDB'
const SELF: SelfInfo = { id: ID, addrs: ['/ip4/127.0.0.1/tcp/4001'] }

interface Serving {
  port: number
  stop: () => Promise<void>
}

/** Runs `serve` on 127.0.0.1 with a kernel-chosen port; resolves once it listens. */
async function startServe (self: () => SelfInfo = () => SELF): Promise<Serving & { bs: Bootstrapper }> {
  const controller = new AbortController()
  let onListening!: (a: AddressInfo) => void
  const listening = new Promise<AddressInfo>((resolve) => { onListening = resolve })
  const bs = httpBootstrapper({ addr: '127.0.0.1:0', url: '', certDir: '', onListening })
  assert.ok(bs.serve !== undefined)
  const served = bs.serve(self, controller.signal)
  const address = await Promise.race([listening, served.then(() => { throw new Error('serve ended before listening') })])
  return { bs, port: address.port, stop: async () => { controller.abort(); await served } }
}

async function listen (server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { resolve() })
  })
  return (server.address() as AddressInfo).port
}

async function close (server: Server): Promise<void> {
  server.closeAllConnections()
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
}

async function withServer (handler: RequestListener, fn: (url: string) => Promise<void>): Promise<void> {
  const server = createHttpServer(handler)
  const port = await listen(server)
  try {
    await fn(`http://127.0.0.1:${port}/id`)
  } finally {
    await close(server)
  }
}

async function rejectsWith (promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof BootstrapError, String(err))
    assert.match(err.message, pattern)
    return true
  })
}

describe('httpBootstrapper serve and discover', () => {
  it('serves this node\'s AddrInfo on /id and a child discovers it (Spegel\'s test vector)', async () => {
    const parent = await startServe()
    try {
      const child = httpBootstrapper({ addr: '', url: `http://127.0.0.1:${parent.port}/id`, certDir: '' })
      assert.equal(child.kind, 'http')
      assert.deepEqual(await child.discover(), [{ id: ID, addrs: ['/ip4/127.0.0.1/tcp/4001'] }])
    } finally {
      await parent.stop()
    }
  })

  it('answers exactly libp2p\'s AddrInfo JSON, for any method, and reads self on every request', async () => {
    let addrs = ['/ip4/10.0.0.5/tcp/5001']
    const parent = await startServe(() => ({ id: ID, addrs }))
    try {
      const url = `http://127.0.0.1:${parent.port}/id`
      const get = await fetch(url)
      assert.equal(get.status, 200)
      assert.equal(get.headers.get('content-type'), 'application/json')
      assert.equal(await get.text(), `[{"ID":"${ID}","Addrs":["/ip4/10.0.0.5/tcp/5001"]}]`)
      addrs = ['/ip4/10.0.0.6/tcp/5001', '/ip6/fd00::6/tcp/5001']
      const post = await fetch(`${url}?x=1`, { method: 'POST', body: 'ignored' })
      assert.equal(post.status, 200)
      assert.deepEqual(await post.json(), [{ ID: ID, Addrs: addrs }])
    } finally {
      await parent.stop()
    }
  })

  it('answers 404 for every other path', async () => {
    const parent = await startServe()
    try {
      for (const path of ['/', '/id/', '/ids', '/v2/', '/id/x']) {
        const res = await fetch(`http://127.0.0.1:${parent.port}${path}`)
        assert.equal(res.status, 404, path)
        assert.equal(await res.text(), '404 page not found\n')
      }
    } finally {
      await parent.stop()
    }
  })

  it('stops listening when its signal aborts', async () => {
    const parent = await startServe()
    const url = `http://127.0.0.1:${parent.port}/id`
    assert.equal((await fetch(url)).status, 200)
    await parent.stop()
    await assert.rejects(fetch(url))
  })

  it('fails when the address is taken, naming the flag', async () => {
    const blocker = createHttpServer()
    const port = await listen(blocker)
    try {
      const bs = httpBootstrapper({ addr: `127.0.0.1:${port}`, url: '', certDir: '' })
      await rejectsWith(bs.serve?.(() => SELF, new AbortController().signal) ?? Promise.resolve(), new RegExp(`^cannot serve /id on --http-bootstrap-addr 127.0.0.1:${port}: .*EADDRINUSE`))
    } finally {
      await close(blocker)
    }
  })

  it('only waits when no address is set, and discovers nothing without a URL', async () => {
    const bs = httpBootstrapper({ addr: '', url: '', certDir: '' })
    const controller = new AbortController()
    let ended = false
    const served = bs.serve?.(() => SELF, controller.signal).then(() => { ended = true })
    assert.deepEqual(await bs.discover(), [])
    assert.equal(ended, false)
    controller.abort()
    await served
    assert.equal(ended, true)
  })

  it('rejects a non-200 answer with its status', async () => {
    await withServer((_req, res) => { res.writeHead(503); res.end('not ready') }, async (url) => {
      await rejectsWith(httpBootstrapper({ addr: '', url, certDir: '' }).discover(), /unexpected status 503: not ready/)
    })
  })

  it('rejects an answer that is not bootstrap JSON', async () => {
    await withServer((_req, res) => { res.end('<html>') }, async (url) => {
      await rejectsWith(httpBootstrapper({ addr: '', url, certDir: '' }).discover(), /^invalid answer from http:\/\/127\.0\.0\.1:\d+\/id: /)
    })
  })

  it('rejects an oversized answer', async () => {
    const big = Buffer.alloc(2 * 1024 * 1024, 0x20)
    await withServer((_req, res) => { res.end(big) }, async (url) => {
      await rejectsWith(httpBootstrapper({ addr: '', url, certDir: '' }).discover(), /larger than 1048576 bytes/)
    })
  })

  it('rejects an unreachable endpoint', async () => {
    const server = createHttpServer()
    const port = await listen(server)
    await close(server)
    await rejectsWith(httpBootstrapper({ addr: '', url: `http://127.0.0.1:${port}/id`, certDir: '' }).discover(), /^GET http:\/\/127\.0\.0\.1:\d+\/id failed: .*ECONNREFUSED/)
  })

  it('times out an endpoint that never answers', async () => {
    await withServer(() => { /* never answers */ }, async (url) => {
      await rejectsWith(httpBootstrapper({ addr: '', url, certDir: '', timeoutMs: 100 }).discover(), /timed out after 100 ms/)
    })
  })

  it('stops at the caller\'s abort with its reason', async () => {
    const controller = new AbortController()
    const reason = new Error('shutting down')
    await withServer(() => { controller.abort(reason) }, async (url) => {
      await assert.rejects(httpBootstrapper({ addr: '', url, certDir: '' }).discover({ signal: controller.signal }), (err) => err === reason)
    })
  })
})

describe('parseIdResponse', () => {
  it('reads Spegel\'s array, with the ID missing, empty or set', () => {
    assert.deepEqual(parseIdResponse(JSON.stringify([
      { Addrs: ['/ip4/10.1.2.3'] },
      { ID: '', Addrs: ['/ip4/10.1.2.4/tcp/5001'] },
      { ID, Addrs: ['/ip4/10.1.2.5/tcp/5001', '/ip6/fd00::5/tcp/5001'] }
    ])), [
      { addrs: ['/ip4/10.1.2.3'] },
      { addrs: ['/ip4/10.1.2.4/tcp/5001'] },
      { id: ID, addrs: ['/ip4/10.1.2.5/tcp/5001', '/ip6/fd00::5/tcp/5001'] }
    ])
  })

  it('keeps the first 3 entries and does not look at the rest', () => {
    const entries = [1, 2, 3].map((i) => ({ Addrs: [`/ip4/10.0.0.${i}`] }))
    assert.equal(parseIdResponse(JSON.stringify([...entries, { ID: 'garbage', Addrs: ['nope'] }])).length, 3)
  })

  it('matches keys ignoring case, as Go does, and takes null as nothing', () => {
    assert.deepEqual(parseIdResponse(`[{"id":"${ID}","addrs":null}]`), [{ id: ID, addrs: [] }])
    assert.deepEqual(parseIdResponse('null'), [])
    assert.deepEqual(parseIdResponse('[]'), [])
  })

  it('accepts a single object and a list of multiaddr strings', () => {
    assert.deepEqual(parseIdResponse(`{"ID":"${ID}","Addrs":["/ip4/10.0.0.1/tcp/5001"]}`), [{ id: ID, addrs: ['/ip4/10.0.0.1/tcp/5001'] }])
    assert.deepEqual(parseIdResponse(JSON.stringify([`/ip4/10.0.0.1/tcp/5001/p2p/${ID}`, '/ip4/10.0.0.2'])), [
      { id: ID, addrs: ['/ip4/10.0.0.1/tcp/5001'] }, { addrs: ['/ip4/10.0.0.2'] }
    ])
  })

  it('rejects bad multiaddrs, peer ids and shapes', () => {
    assert.throws(() => parseIdResponse('[{"Addrs":["10.0.0.1:5001"]}]'), /^Error: entry 0: /)
    assert.throws(() => parseIdResponse('[{"ID":"notapeerid","Addrs":[]}]'), /entry 0/)
    assert.throws(() => parseIdResponse('[{"ID":5}]'), /ID must be a string/)
    assert.throws(() => parseIdResponse('[{"Addrs":"/ip4/10.0.0.1"}]'), /Addrs must be an array/)
    assert.throws(() => parseIdResponse('[[1]]'), /expected an object/)
    assert.throws(() => parseIdResponse('{'))
  })
})

describe('httpBootstrapper construction', () => {
  it('names --http-bootstrap-addr and --http-bootstrap-url when they are malformed', () => {
    assert.throws(() => httpBootstrapper({ addr: '5002', url: '', certDir: '' }), (err: unknown) => err instanceof ConfigError && err.flag === '--http-bootstrap-addr')
    assert.throws(() => httpBootstrapper({ addr: '', url: 'ftp://x/id', certDir: '' }), (err: unknown) => err instanceof ConfigError && err.flag === '--http-bootstrap-url')
  })
})

const exec = promisify(execFile)

async function openssl (cwd: string, ...args: string[]): Promise<void> {
  await exec('openssl', args, { cwd })
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, all made by openssl now. */
async function makeCerts (dir: string): Promise<void> {
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  await openssl(dir, 'req', '-x509', ...key, '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=test-ca', '-days', '1',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  for (const [name, ext] of [['srv', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'], ['client', 'extendedKeyUsage=clientAuth\n']] as const) {
    await writeFile(join(dir, `${name}.ext`), ext)
    await openssl(dir, 'req', ...key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name === 'srv' ? 'srv' : 'bootstrap'}`)
    await openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', name === 'srv' ? '2' : '3',
      '-days', '1', '-out', `${name}.crt`, '-extfile', `${name}.ext`)
  }
}

/** A cert dir for --http-bootstrap-cert-dir holding the named files (dest name → source in `certs`). */
async function certDir (root: string, certs: string, name: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, name)
  await mkdir(dir)
  for (const [dest, src] of Object.entries(files)) await copyFile(join(certs, src), join(dir, dest))
  return dir
}

describe('httpBootstrapper over mTLS', () => {
  let root = ''
  let certs = ''
  let server: Server | undefined
  let url = ''
  const clientNames: string[] = []

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'spegel-bootstrap-tls-'))
    certs = join(root, 'certs')
    await mkdir(certs)
    await makeCerts(certs)
    server = createHttpsServer({
      key: await readFile(join(certs, 'srv.key')),
      cert: await readFile(join(certs, 'srv.crt')),
      ca: await readFile(join(certs, 'ca.crt')),
      requestCert: true,
      rejectUnauthorized: true
    }, (req, res) => {
      clientNames.push(String((req.socket as TLSSocket).getPeerCertificate().subject.CN))
      res.end(JSON.stringify([{ Addrs: ['/ip4/10.1.2.3'] }]))
    })
    const port = await listen(server)
    url = `https://127.0.0.1:${port}/id`
  })

  after(async () => {
    if (server !== undefined) await close(server)
    await rm(root, { recursive: true, force: true })
  })

  it('presents the client certificate and trusts ca.crt (Spegel\'s test vector)', async () => {
    const dir = await certDir(root, certs, 'full', { 'ca.crt': 'ca.crt', 'tls.crt': 'client.crt', 'tls.key': 'client.key' })
    assert.deepEqual(await httpBootstrapper({ addr: '', url, certDir: dir }).discover(), [{ addrs: ['/ip4/10.1.2.3'] }])
    assert.deepEqual(clientNames, ['bootstrap'])
  })

  it('is refused by the server without a client certificate', async () => {
    const dir = await certDir(root, certs, 'ca-only', { 'ca.crt': 'ca.crt' })
    await rejectsWith(httpBootstrapper({ addr: '', url, certDir: dir }).discover(), /^GET https:\/\/127\.0\.0\.1:\d+\/id failed: /)
  })

  it('does not trust the server without ca.crt', async () => {
    const dir = await certDir(root, certs, 'client-only', { 'tls.crt': 'client.crt', 'tls.key': 'client.key' })
    await rejectsWith(httpBootstrapper({ addr: '', url, certDir: dir }).discover(), /certificate/i)
    await rejectsWith(httpBootstrapper({ addr: '', url, certDir: '' }).discover(), /certificate/i)
  })

  it('rejects bad cert dirs at construction, naming the flag (Spegel\'s messages)', async () => {
    const bad = join(root, 'bad')
    await mkdir(bad)
    await writeFile(join(bad, 'ca.crt'), '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n')
    const certOnly = await certDir(root, certs, 'cert-only', { 'tls.crt': 'client.crt' })
    const keyOnly = await certDir(root, certs, 'key-only', { 'tls.key': 'client.key' })
    const mismatch = await certDir(root, certs, 'mismatch', { 'tls.crt': 'client.crt', 'tls.key': 'srv.key' })
    for (const [dir, pattern] of [
      [bad, /no valid CA certs found/],
      [certOnly, /both client TLS certificate and client TLS key must be provided/],
      [keyOnly, /both client TLS certificate and client TLS key must be provided/],
      [mismatch, /./]
    ] as const) {
      assert.throws(() => httpBootstrapper({ addr: '', url, certDir: dir }), (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.equal(err.flag, '--http-bootstrap-cert-dir')
        assert.match(err.message, pattern)
        return true
      }, dir)
    }
  })

  it('accepts an empty or missing directory as no TLS customisation', async () => {
    httpBootstrapper({ addr: '', url, certDir: join(root, 'does-not-exist') })
    httpBootstrapper({ addr: '', url, certDir: await certDir(root, certs, 'empty', {}) })
  })
})
