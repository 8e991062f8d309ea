import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { dnsBootstrapper, type DnsResolver } from './dns.js'
import { BootstrapError } from './errors.js'
import { compareIp, ipMultiaddr } from './ip.js'

function notFound (): Error {
  return Object.assign(new Error('queryA ENOTFOUND peers'), { code: 'ENOTFOUND' })
}

/** A resolver answering from a table; a function value is called instead (to throw). */
function table (answers: { 4?: readonly string[] | (() => never), 6?: readonly string[] | (() => never) }): { resolver: DnsResolver, calls: Array<[string, number]> } {
  const calls: Array<[string, number]> = []
  const resolver: DnsResolver = async (hostname, family) => {
    calls.push([hostname, family])
    const a = answers[family]
    if (a === undefined) throw notFound()
    if (typeof a === 'function') a()
    return a as readonly string[]
  }
  return { resolver, calls }
}

describe('dnsBootstrapper', () => {
  it('answers Spegel\'s test vector: A 10.1.2.3 is one peer without id', async () => {
    const { resolver, calls } = table({ 4: ['10.1.2.3'] })
    const bs = dnsBootstrapper('peers', { resolver })
    assert.equal(bs.kind, 'dns')
    assert.equal(bs.serve, undefined)
    assert.deepEqual(await bs.discover(), [{ addrs: ['/ip4/10.1.2.3'] }])
    assert.deepEqual(calls.sort(), [['peers', 4], ['peers', 6]])
  })

  it('sorts each family numerically and keeps the first 3, IPv4 first', async () => {
    const { resolver } = table({
      4: ['10.0.0.10', '10.0.0.9', '9.255.255.255', '10.0.0.2', '10.0.1.1'],
      6: ['fd00::10', 'fd00::9', '2001:db8::1', 'fd00::a', '::ffff:10.0.0.1']
    })
    const peers = await dnsBootstrapper('peers', { resolver, port: 5001 }).discover()
    assert.deepEqual(peers.map((p) => p.addrs), [
      ['/ip4/9.255.255.255/tcp/5001'], ['/ip4/10.0.0.2/tcp/5001'], ['/ip4/10.0.0.9/tcp/5001'],
      ['/ip6/::ffff:10.0.0.1/tcp/5001'], ['/ip6/2001:db8::1/tcp/5001'], ['/ip6/fd00::9/tcp/5001']
    ])
    assert.ok(peers.every((p) => p.id === undefined))
  })

  it('writes IPv6 zones as /ip6zone and leaves the port off when unknown', async () => {
    const { resolver } = table({ 6: ['fe80::1%eth0', 'fd00::1'] })
    assert.deepEqual(await dnsBootstrapper('peers', { resolver, port: 0 }).discover(), [
      { addrs: ['/ip6/fd00::1'] }, { addrs: ['/ip6zone/eth0/ip6/fe80::1'] }
    ])
  })

  it('drops duplicates and answers of the wrong family (IP literals come back as they are)', async () => {
    const { resolver } = table({ 4: ['10.0.0.1', '10.0.0.1', '10.0.0.2'], 6: ['10.0.0.3'] })
    assert.deepEqual(await dnsBootstrapper('peers', { resolver }).discover(), [{ addrs: ['/ip4/10.0.0.1'] }, { addrs: ['/ip4/10.0.0.2'] }])
  })

  it('returns [] when the name has no records', async () => {
    const { resolver } = table({})
    assert.deepEqual(await dnsBootstrapper('peers', { resolver }).discover(), [])
    const nodata: DnsResolver = async () => { throw Object.assign(new Error('no data'), { code: 'ENODATA' }) }
    assert.deepEqual(await dnsBootstrapper('peers', { resolver: nodata }).discover(), [])
  })

  it('ignores a failing family when the other answers, as Spegel does', async () => {
    const { resolver } = table({ 4: ['10.0.0.1'], 6: () => { throw Object.assign(new Error('server failure'), { code: 'ESERVFAIL' }) } })
    assert.deepEqual(await dnsBootstrapper('peers', { resolver }).discover(), [{ addrs: ['/ip4/10.0.0.1'] }])
  })

  it('throws when lookups fail and nothing was found', async () => {
    const fail = (): never => { throw Object.assign(new Error('getaddrinfo EAI_AGAIN peers'), { code: 'EAI_AGAIN' }) }
    for (const answers of [{ 4: fail, 6: fail }, { 4: fail }]) {
      const { resolver } = table(answers)
      await assert.rejects(dnsBootstrapper('peers', { resolver }).discover(), (err: unknown) => {
        assert.ok(err instanceof BootstrapError)
        assert.match(err.message, /^resolving --dns-bootstrap-domain peers failed: getaddrinfo EAI_AGAIN peers/)
        assert.ok(err.cause instanceof AggregateError)
        return true
      })
    }
  })

  it('gives each lookup a timeout', async () => {
    const hang: DnsResolver = async (_h, _f, { signal }) => await new Promise((_resolve, reject) => {
      signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
    })
    await assert.rejects(dnsBootstrapper('peers', { resolver: hang, timeoutMs: 50 }).discover(), (err: unknown) => {
      assert.ok(err instanceof BootstrapError)
      assert.match(err.message, /timed out after 50 ms/)
      return true
    })
  })

  it('stops at the caller\'s abort with its reason', async () => {
    const controller = new AbortController()
    const reason = new Error('shutting down')
    const hang: DnsResolver = async (_h, _f, { signal }) => await new Promise((_resolve, reject) => {
      signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
      controller.abort(reason)
    })
    await assert.rejects(dnsBootstrapper('peers', { resolver: hang }).discover({ signal: controller.signal }), (err) => err === reason)
  })

  it('resolves localhost through the system resolver', async () => {
    const peers = await dnsBootstrapper('localhost', { port: 5001 }).discover()
    assert.ok(peers.length > 0)
    assert.deepEqual(peers[0], { addrs: ['/ip4/127.0.0.1/tcp/5001'] })
    for (const p of peers) {
      assert.ok(['/ip4/127.0.0.1/tcp/5001', '/ip6/::1/tcp/5001'].includes(p.addrs[0] ?? ''), String(p.addrs))
    }
  })

  it('takes an IP literal as its own answer', async () => {
    assert.deepEqual(await dnsBootstrapper('10.0.0.5', { port: 5001 }).discover(), [{ addrs: ['/ip4/10.0.0.5/tcp/5001'] }])
  })
})

describe('compareIp', () => {
  it('orders like Go\'s netip.Addr.Compare', () => {
    const sorted = ['fd00::1%b', '::', '10.0.0.10', 'fd00::1', '1.2.3.4', '::ffff:1.2.3.4', '10.0.0.9', 'fd00::1%a', '1::']
      .sort(compareIp)
    assert.deepEqual(sorted, ['1.2.3.4', '10.0.0.9', '10.0.0.10', '::', '::ffff:1.2.3.4', '1::', 'fd00::1', 'fd00::1%a', 'fd00::1%b'])
  })
})

describe('ipMultiaddr', () => {
  it('formats both families and zones', () => {
    assert.equal(ipMultiaddr('10.1.2.3'), '/ip4/10.1.2.3')
    assert.equal(ipMultiaddr('::1'), '/ip6/::1')
    assert.equal(ipMultiaddr('fe80::1%eth0'), '/ip6zone/eth0/ip6/fe80::1')
    assert.throws(() => ipMultiaddr('spegel'))
  })
})
