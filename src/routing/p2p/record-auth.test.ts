import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { Writable } from 'node:stream'
import { createLogger } from '../../observability/logger.js'
import { StatementKind } from './codec.js'
import { AddressProofs, RecordAuth, REFUSAL_REASONS, Refusals, checkAddressClaims, remoteIp, tcpAddress } from './record-auth.js'

async function signer (): Promise<RecordAuth> {
  const privateKey = await generateKeyPair('Ed25519')
  return new RecordAuth({ privateKey }, { selfId: peerIdFromPrivateKey(privateKey).toString() })
}

describe('RecordAuth', () => {
  it('verifies what an origin signed, and nothing altered, re-kinded or claimed for another origin', async () => {
    const [a, b] = [await signer(), await signer()]
    const payload = new Uint8Array([1, 2, 3])
    const s = a.statement(StatementKind.Delta, 10, 2, payload)
    assert.equal(b.verify(s), true)
    assert.equal(b.verify({ ...s, payload: new Uint8Array([1, 2, 4]) }), false, 'payload changed')
    assert.equal(b.verify({ ...s, seq: 3 }), false, 'seq changed')
    assert.equal(b.verify({ ...s, epoch: 11 }), false, 'epoch changed')
    assert.equal(b.verify({ ...s, kind: StatementKind.Record }), false, 'a delta cannot pass for a record')
    assert.equal(b.verify({ ...s, origin: b.selfId }), false, 'signed by a, claimed for b')
    const flipped = new Uint8Array(s.signature)
    flipped[0] = (flipped[0] ?? 0) ^ 1
    assert.equal(b.verify({ ...s, signature: flipped }), false)
    assert.equal(b.verify({ ...s, signature: new Uint8Array(63) }), false)
    // Origins that are no Ed25519 peer id, or another spelling of one, have no key to verify with.
    for (const origin of ['', 'nobody', 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N', peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toCID().toString()]) {
      assert.equal(b.verify({ ...s, origin }), false, origin)
    }
  })
})

describe('address claims', () => {
  it('accepts a registry address at one of the announced IPs, and says which addresses prove it', () => {
    const c = checkAddressClaims('10.0.0.5:5000', ['/ip4/10.0.0.9/tcp/5001', '/ip4/10.0.0.5/tcp/5001'])
    assert.deepEqual(c, { address: { ip: '10.0.0.5', port: 5000, hostPort: '10.0.0.5:5000' }, registryAddrs: ['/ip4/10.0.0.5/tcp/5001'] })
    assert.equal(typeof checkAddressClaims('[fd00::5]:5000', ['/ip6/fd00::5/tcp/5001']), 'object')
  })

  it('refuses hostnames, URLs, metadata addresses, unannounced IPs and odd announced addresses', () => {
    const ok = ['/ip4/10.0.0.5/tcp/5001']
    for (const [address, addrs] of [
      ['evil.example:5000', ok], ['http://10.0.0.5:5000/x', ok], ['10.0.0.5:5000/v2', ok], ['169.254.169.254:80', ['/ip4/169.254.169.254/tcp/80']],
      ['10.0.0.6:5000', ok], ['10.0.0.5:5000', []], ['10.0.0.5:5000', ['/dns4/evil.example/tcp/5001']],
      ['10.0.0.5:5000', ['/ip4/10.0.0.5/tcp/5001/ws']], ['10.0.0.5:5000', ['/ip4/10.0.0.5/udp/5001/quic-v1']],
      ['10.0.0.5:5000', ['/ip4/10.0.0.5/tcp/5001', '/ip4/169.254.169.254/tcp/80']], ['10.0.0.5:5000', ['not a multiaddr']]
    ] as Array<[string, string[]]>) {
      assert.equal(typeof checkAddressClaims(address, addrs), 'string', `${address} ${addrs.join(' ')}`)
    }
  })

  it('reads IPs from multiaddrs canonically', () => {
    assert.deepEqual(tcpAddress('/ip6/::ffff:10.0.0.1/tcp/7'), { ip: '10.0.0.1', port: 7 })
    assert.equal(remoteIp(multiaddr('/ip4/127.0.0.9/tcp/4001/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK')), '127.0.0.9')
    assert.equal(remoteIp(multiaddr('/dns4/example.com/tcp/1')), undefined)
  })

  it('remembers where peers were seen, and forgets them', () => {
    const proofs = new AddressProofs()
    assert.equal(proofs.saw('a', '10.0.0.1'), true)
    assert.equal(proofs.saw('a', '10.0.0.1'), false)
    assert.equal(proofs.has('a', '10.0.0.1'), true)
    assert.equal(proofs.has('a', '10.0.0.2'), false)
    assert.equal(proofs.has('b', '10.0.0.1'), false)
    proofs.forget('a')
    assert.equal(proofs.has('a', '10.0.0.1'), false)
  })
})

describe('Refusals', () => {
  it('counts every refusal by reason and logs the first per peer and reason', async () => {
    const lines: Array<Record<string, unknown>> = []
    const destination = new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        for (const text of chunk.toString('utf8').split('\n')) if (text.trim() !== '') lines.push(JSON.parse(text) as Record<string, unknown>)
        callback()
      }
    })
    const log = createLogger({ level: 'warn', destination })
    const refusals = new Refusals({ log })
    assert.deepEqual([...refusals.counts().keys()], [...REFUSAL_REASONS])
    refusals.refuse('bad-signature', 'p1', { origin: 'o', what: 'x' })
    refusals.refuse('bad-signature', 'p1', { origin: 'o', what: 'y' })
    refusals.refuse('bad-signature', 'p2', { what: 'z' })
    refusals.refuse('malformed', 'p1', { what: 'w' })
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(refusals.counts().get('bad-signature'), 3)
    assert.equal(refusals.counts().get('malformed'), 1)
    assert.equal(refusals.counts().get('oversized'), 0)
    assert.deepEqual(lines.map((l) => [l.peer, l.reason, l.detail, l.event]), [
      ['p1', 'bad-signature', 'x', 'router_frame_refused'], ['p2', 'bad-signature', 'z', 'router_frame_refused'], ['p1', 'malformed', 'w', 'router_frame_refused']
    ])
  })
})
