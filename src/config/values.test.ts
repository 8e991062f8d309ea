import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { ValueError } from './errors.js'
import { checkPeerMultiaddr, checkRegex, checkRegistryUrls, parseBool, parseCsv, parseInteger, parseLogLevel } from './values.js'

const PEER = '12D3KooWAsvvigG9jqjMNWMmqXph6BvszxTus6Fg6k5UZda2iKDB'

describe('parseCsv (list env vars)', () => {
  const cases: Array<[string, string[]]> = [
    ['', []],
    ['a', ['a']],
    ['https://docker.io,https://ghcr.io', ['https://docker.io', 'https://ghcr.io']],
    ['a, b ,c', ['a', 'b', 'c']],
    ['a,,b,', ['a', 'b']],
    ['"a,b",c', ['a,b', 'c']],
    ['"say ""hi""",x', ['say "hi"', 'x']],
    ['a\nb', ['a', 'b']]
  ]
  for (const [input, want] of cases) {
    it(`splits ${JSON.stringify(input)}`, () => { assert.deepEqual(parseCsv(input), want) })
  }
  it('rejects broken quoting', () => {
    assert.throws(() => parseCsv('"a,b'), ValueError)
    assert.throws(() => parseCsv('a"b'), ValueError)
    assert.throws(() => parseCsv('"a"b,c'), ValueError)
  })
})

describe('scalar parsers', () => {
  it('parses booleans like strconv.ParseBool', () => {
    for (const t of ['1', 't', 'T', 'true', 'TRUE', 'True']) assert.equal(parseBool(t), true)
    for (const f of ['0', 'f', 'F', 'false', 'FALSE', 'False']) assert.equal(parseBool(f), false)
    for (const bad of ['', 'yes', 'on', 'tRuE']) assert.throws(() => parseBool(bad), /use true or false/)
  })
  it('parses integers with a minimum', () => {
    assert.equal(parseInteger('3', 1), 3)
    assert.throws(() => parseInteger('0', 1), /out of range/)
    assert.throws(() => parseInteger('1.5', 1), /not an integer/)
    assert.throws(() => parseInteger('', 1), /not an integer/)
  })
  it('parses log levels case-insensitively', () => {
    assert.equal(parseLogLevel('debug'), 'DEBUG')
    assert.equal(parseLogLevel('Warn'), 'WARN')
    assert.throws(() => parseLogLevel('trace'), /use DEBUG, INFO, WARN or ERROR/)
  })
})

describe('registry URLs and filters', () => {
  it('accepts URLs and one wildcard', () => {
    assert.deepEqual(checkRegistryUrls(['https://docker.io', 'http://foo.bar:5000', '_default']), ['https://docker.io', 'http://foo.bar:5000', '_default'])
    assert.deepEqual(checkRegistryUrls(['*']), ['*'])
  })
  it('rejects what Spegel rejects', () => {
    assert.throws(() => checkRegistryUrls(['docker.io']), /not a URL|scheme must be http or https/)
    assert.throws(() => checkRegistryUrls(['ftp://docker.io']), /scheme must be http or https/)
    assert.throws(() => checkRegistryUrls(['https://docker.io/library']), /path has to be empty/)
    assert.throws(() => checkRegistryUrls(['https://docker.io?x=1']), /query has to be empty/)
    assert.throws(() => checkRegistryUrls(['https://u:p@docker.io']), /user has to be empty/)
    assert.throws(() => checkRegistryUrls(['_default', '*']), /two wildcards/)
  })
  it('checks regular expressions', () => {
    assert.equal(checkRegex('^docker.io'), '^docker.io')
    assert.throws(() => checkRegex('(unclosed'), /invalid regular expression/)
    assert.throws(() => checkRegex(''), /filter out every image/)
  })
})

describe('checkPeerMultiaddr', () => {
  for (const good of [
    `/ip4/10.0.0.5/tcp/5001/p2p/${PEER}`,
    `/ip6/fd00::1/tcp/5001/p2p/${PEER}`,
    `/dns4/spegel-0.spegel/tcp/5001/p2p/${PEER}`,
    `/ip4/10.0.0.5/udp/5001/quic-v1/p2p/${PEER}`,
    '/ip4/10.0.0.5/tcp/4001/ipfs/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N'
  ]) {
    it(`accepts ${good}`, () => { assert.equal(checkPeerMultiaddr(good), good) })
  }
  const bad: Array<[string, RegExp]> = [
    ['10.0.0.5:5001', /not a multiaddr/],
    ['/ip4/10.0.0.5/tcp/5001', /does not end in \/p2p\/<peer-id>/],
    [`/p2p/${PEER}`, /no address before \/p2p/],
    [`/ip4/10.0.0.300/tcp/5001/p2p/${PEER}`, /invalid value "10.0.0.300" for \/ip4/],
    [`/ip4/10.0.0.5/tcp/99999/p2p/${PEER}`, /invalid value "99999" for \/tcp/],
    ['/ip4/10.0.0.5/tcp/5001/p2p/not-a-peer-id', /invalid value "not-a-peer-id" for \/p2p/],
    ['/ip4/10.0.0.5/tcp/5001/p2p/', /invalid value "" for \/p2p/],
    [`/ip4/10.0.0.5/tcpx/5001/p2p/${PEER}`, /unknown multiaddr protocol "tcpx"/]
  ]
  for (const [input, message] of bad) {
    it(`rejects ${input}`, () => {
      assert.throws(() => checkPeerMultiaddr(input), (err: unknown) => {
        assert.ok(err instanceof ValueError)
        assert.match(err.reason, message)
        assert.match(err.fix, /\/p2p\/<peer-id>/)
        return true
      })
    })
  }
})
