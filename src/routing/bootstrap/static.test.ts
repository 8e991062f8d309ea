import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { ConfigError } from '../../config/index.js'
import { staticBootstrapper } from './static.js'

const ID = '12D3KooWAsvvigG9jqjMNWMmqXph6BvszxTus6Fg6k5UZda2iKDB'

describe('staticBootstrapper', () => {
  it('splits /p2p/<id> off each multiaddr', async () => {
    const bs = staticBootstrapper([`/ip4/10.0.0.5/tcp/5001/p2p/${ID}`, `/ip6/fd00::1/tcp/5001/p2p/${ID}`, `/dns4/spegel-0/tcp/5001/p2p/${ID}`])
    assert.equal(bs.kind, 'static')
    assert.equal(bs.serve, undefined)
    assert.deepEqual(await bs.discover(), [
      { id: ID, addrs: ['/ip4/10.0.0.5/tcp/5001'] },
      { id: ID, addrs: ['/ip6/fd00::1/tcp/5001'] },
      { id: ID, addrs: ['/dns4/spegel-0/tcp/5001'] }
    ])
  })

  it('accepts the legacy /ipfs/ name and a bare peer id', async () => {
    const bs = staticBootstrapper([`/ip4/10.0.0.5/tcp/5001/ipfs/${ID}`, `/p2p/${ID}`])
    assert.deepEqual(await bs.discover(), [{ id: ID, addrs: ['/ip4/10.0.0.5/tcp/5001'] }, { id: ID, addrs: [] }])
  })

  it('is a one-node cluster without peers', async () => {
    assert.deepEqual(await staticBootstrapper([]).discover(), [])
  })

  it('returns a fresh array each time, so a caller cannot change the next answer', async () => {
    const bs = staticBootstrapper([`/ip4/10.0.0.5/tcp/5001/p2p/${ID}`])
    const first = await bs.discover()
    first.pop()
    assert.equal((await bs.discover()).length, 1)
  })

  for (const [name, input] of [
    ['no /p2p part', '/ip4/10.0.0.5/tcp/5001'],
    ['an invalid peer id', '/ip4/10.0.0.5/tcp/5001/p2p/notapeerid'],
    ['an unknown protocol', `/ip4/10.0.0.5/bogus/5001/p2p/${ID}`],
    ['not a multiaddr', '10.0.0.5:5001']
  ] as const) {
    it(`rejects ${name}, naming the flag`, () => {
      assert.throws(() => staticBootstrapper([`/ip4/10.0.0.6/tcp/5001/p2p/${ID}`, input]), (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.equal(err.flag, '--static-bootstrap-peers')
        assert.ok(err.message.startsWith(`invalid --static-bootstrap-peers entry ${JSON.stringify(input)}: `), err.message)
        assert.match(err.message, /set --static-bootstrap-peers \(env STATIC_BOOTSTRAP_PEERS\)/)
        return true
      })
    })
  }

  it('honours an aborted signal', async () => {
    const bs = staticBootstrapper([])
    const reason = new Error('stop')
    await assert.rejects(bs.discover({ signal: AbortSignal.abort(reason) }), (err) => err === reason)
  })
})
