import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '../../config/index.js'
import { createBootstrapper, type BootstrapConfig } from './create.js'

const ID = '12D3KooWAsvvigG9jqjMNWMmqXph6BvszxTus6Fg6k5UZda2iKDB'

const base: BootstrapConfig = {
  bootstrapKind: 'static',
  dnsBootstrapDomain: '',
  httpBootstrapAddr: '',
  httpBootstrapUrl: '',
  httpBootstrapCertDir: '',
  staticBootstrapPeers: [],
  routerAddr: { host: '', port: 5001 }
}

function configError (flag: string, pattern: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof ConfigError, String(err))
    assert.equal(err.flag, flag)
    assert.match(err.message, pattern)
    return true
  }
}

describe('createBootstrapper', () => {
  it('builds the static kind from --static-bootstrap-peers', async () => {
    const bs = createBootstrapper({ ...base, staticBootstrapPeers: [`/ip4/10.0.0.5/tcp/5001/p2p/${ID}`] })
    assert.equal(bs.kind, 'static')
    assert.deepEqual(await bs.discover(), [{ id: ID, addrs: ['/ip4/10.0.0.5/tcp/5001'] }])
  })

  it('builds the dns kind with the router port', async () => {
    const bs = createBootstrapper({ ...base, bootstrapKind: 'dns', dnsBootstrapDomain: 'localhost', routerAddr: { host: '', port: 6001 } })
    assert.equal(bs.kind, 'dns')
    assert.deepEqual((await bs.discover())[0], { addrs: ['/ip4/127.0.0.1/tcp/6001'] })
    const any = createBootstrapper({ ...base, bootstrapKind: 'dns', dnsBootstrapDomain: 'localhost', routerAddr: { host: '', port: 0 } })
    assert.deepEqual((await any.discover())[0], { addrs: ['/ip4/127.0.0.1'] })
  })

  it('builds the http kind', () => {
    const bs = createBootstrapper({ ...base, bootstrapKind: 'http', httpBootstrapAddr: ':5002' })
    assert.equal(bs.kind, 'http')
    assert.equal(typeof bs.serve, 'function')
  })

  it('names the flag at fault', async () => {
    const badCerts = await mkdtemp(join(tmpdir(), 'spegel-bootstrap-create-'))
    await writeFile(join(badCerts, 'tls.key'), 'not a key')
    assert.throws(() => createBootstrapper({ ...base, staticBootstrapPeers: ['/ip4/10.0.0.5/tcp/5001'] }), configError('--static-bootstrap-peers', /does not end in \/p2p/))
    assert.throws(() => createBootstrapper({ ...base, bootstrapKind: 'dns' }), configError('--dns-bootstrap-domain', /required with --bootstrap-kind dns/))
    assert.throws(() => createBootstrapper({ ...base, bootstrapKind: 'http' }), configError('--http-bootstrap-url', /--http-bootstrap-addr/))
    assert.throws(() => createBootstrapper({ ...base, bootstrapKind: 'http', httpBootstrapUrl: 'http://x/id', httpBootstrapCertDir: badCerts }),
      configError('--http-bootstrap-cert-dir', /^invalid --http-bootstrap-cert-dir .*both client TLS certificate and client TLS key must be provided/))
    await rm(badCerts, { recursive: true })
    const unknown = { ...base, bootstrapKind: 'mdns' } as unknown as BootstrapConfig
    assert.throws(() => createBootstrapper(unknown), configError('--bootstrap-kind', /^unknown bootstrap kind mdns; set --bootstrap-kind/))
  })
})
