import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { bracketIPv6Host, parseRegistryUrl, parseRegistryUrls, registryUrlProblems, WILDCARD_REGISTRY } from './index.js'

describe('bracketIPv6Host, as Spegel\'s EncapsulateIPv6Host', () => {
  const cases: Array<[string, string]> = [
    ['http://fc00:f853:ccd:e793::2:30020', 'http://[fc00:f853:ccd:e793::2]:30020'],
    ['http://[fc00:f853:ccd:e793::2]:30020', 'http://[fc00:f853:ccd:e793::2]:30020'],
    ['http://::1:5000/', 'http://[::1]:5000/'],
    ['http://10.0.0.7:30020', 'http://10.0.0.7:30020'],
    ['http://node.example:30020', 'http://node.example:30020'],
    ['no scheme::at:all', 'no scheme::at:all']
  ]
  for (const [input, want] of cases) {
    it(`${input} → ${want}`, () => { assert.equal(bracketIPv6Host(input), want) })
  }
})

describe('parseRegistryUrl', () => {
  it('keeps scheme and host:port as given; the directory is host:port', () => {
    assert.deepEqual({ ...parseRegistryUrl('http://foo.bar:5000', true) }, { isWildcard: false, url: 'http://foo.bar:5000', dir: 'foo.bar:5000' })
    assert.deepEqual({ ...parseRegistryUrl('https://docker.io', true) }, { isWildcard: false, url: 'https://docker.io', dir: 'docker.io' })
    assert.deepEqual({ ...parseRegistryUrl('http://[fd00::2]:30020', false) }, { isWildcard: false, url: 'http://[fd00::2]:30020', dir: '[fd00::2]:30020' })
  })

  it('drops a lone trailing slash', () => {
    assert.equal(parseRegistryUrl('https://docker.io/', true).url, 'https://docker.io')
  })

  it('maps both wildcards to _default, and refuses them where not allowed', () => {
    assert.equal(parseRegistryUrl('_default', true), WILDCARD_REGISTRY)
    assert.equal(parseRegistryUrl('*', true), WILDCARD_REGISTRY)
    assert.throws(() => parseRegistryUrl('*', false), /^Error: wildcard registries are not allowed$/)
  })

  it('reports every problem, with Spegel\'s wording', () => {
    assert.throws(() => parseRegistryUrl('ftp://u@x/p?q=1', true), (err: Error) => {
      assert.equal(err.message, [
        'invalid registry url scheme must be http or https: ftp://u@x/p?q=1',
        'invalid registry url path has to be empty: ftp://u@x/p?q=1',
        'invalid registry url query has to be empty: ftp://u@x/p?q=1',
        'invalid registry url user has to be empty: ftp://u@x/p?q=1'
      ].join('; '))
      return true
    })
  })

  it('rejects hosts that are missing, malformed, or unsafe to quote in hosts.toml', () => {
    assert.deepEqual(registryUrlProblems('http://'), ['host is missing'])
    assert.match(registryUrlProblems('http://fd00::2:30020').join(), /need brackets/)
    assert.equal(registryUrlProblems("http://a'b:5000").length, 1)
    assert.equal(registryUrlProblems('http://a b:5000').length, 1)
    assert.deepEqual(registryUrlProblems('http://x#frag'), ['fragment has to be empty'])
    assert.deepEqual(registryUrlProblems('docker.io'), ['scheme must be http or https', 'it must look like http(s)://host[:port]'])
  })
})

describe('parseRegistryUrls', () => {
  it('empty means every registry when wildcards are allowed', () => {
    assert.deepEqual(parseRegistryUrls([], true), [WILDCARD_REGISTRY])
    assert.deepEqual(parseRegistryUrls([], false), [])
  })

  it('refuses two wildcards, even two different spellings', () => {
    assert.throws(() => parseRegistryUrls(['_default', 'https://ghcr.io', '*'], true), /registries should not contain two wildcards/)
  })
})
