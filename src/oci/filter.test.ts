import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { buildFilters, isFiltered, parseRegistryUrl, regexFilter, registryAllowList } from './filter.js'

const ubuntu = { registry: 'docker.io', repository: 'library/ubuntu' }
const ubuntuLatest = { ...ubuntu, tag: 'latest' }

describe('regexFilter', () => {
  it('matches registry/repository[:tag], anywhere unless anchored', () => {
    assert.equal(regexFilter('^docker.io').matches(ubuntu), true)
    assert.equal(regexFilter('^ghcr.io').matches(ubuntu), false)
    assert.equal(regexFilter(':latest$').matches(ubuntuLatest), true)
    assert.equal(regexFilter(':latest$').matches({ ...ubuntu, tag: 'latest-rc' }), false)
    assert.equal(regexFilter(':latest$').matches(ubuntu), false)
    assert.equal(regexFilter('library/ubu').matches(ubuntu), true)
    assert.equal(regexFilter('^docker\\.io/library/ubuntu:latest$').matches(ubuntuLatest), true)
  })

  it('gives the same answer on repeated calls', () => {
    const filter = regexFilter('ubuntu')
    for (let i = 0; i < 3; i++) assert.equal(filter.matches(ubuntu), true)
  })

  it('translates leading RE2 inline flags', () => {
    assert.equal(regexFilter('(?i)^DOCKER\\.IO/').matches(ubuntu), true)
    assert.equal(regexFilter('^DOCKER\\.IO/').matches(ubuntu), false)
  })

  it('names the pattern when it is invalid', () => {
    assert.throws(() => regexFilter('(unclosed'), (err: unknown) => {
      assert.ok(err instanceof Error)
      assert.match(err.message, /^invalid registry filter "\(unclosed": /)
      assert.ok(err.cause instanceof SyntaxError)
      return true
    })
    assert.throws(() => regexFilter('(?U)x'), /invalid registry filter/)
  })
})

describe('parseRegistryUrl', () => {
  it('parses http(s) hosts and wildcards', () => {
    assert.deepEqual(parseRegistryUrl('https://docker.io'), { scheme: 'https', host: 'docker.io' })
    assert.deepEqual(parseRegistryUrl('http://foo:5000'), { scheme: 'http', host: 'foo:5000' })
    assert.deepEqual(parseRegistryUrl('HTTPS://quay.io'), { scheme: 'https', host: 'quay.io' })
    assert.deepEqual(parseRegistryUrl('http://[fc00::2]:30020'), { scheme: 'http', host: '[fc00::2]:30020' })
    assert.deepEqual(parseRegistryUrl('_default'), { wildcard: true })
    assert.deepEqual(parseRegistryUrl('*'), { wildcard: true })
  })

  it('names the value and the problem when invalid', () => {
    const cases: Array<[string, RegExp]> = [
      ['docker.io', /expected http\(s\):\/\/host\[:port\]/],
      ['ftp://docker.io', /scheme must be http or https/],
      ['https://docker.io/foo/bar', /path has to be empty/],
      ['https://docker.io/', /path has to be empty/],
      ['https://docker.io?foo=bar', /query has to be empty/],
      ['https://docker.io#x', /fragment has to be empty/],
      ['https://foo@docker.io', /user has to be empty/],
      ['https://', /is not a valid host/],
      ['https://docker_io', /is not a valid host/],
      ['http://fc00::2:30020', /is not a valid host/],
      [' https://docker.io', /expected http/],
      ['', /expected http/]
    ]
    for (const [value, problem] of cases) {
      assert.throws(() => parseRegistryUrl(value), (err: unknown) => {
        assert.ok(err instanceof Error)
        assert.ok(err.message.startsWith(`invalid registry url ${JSON.stringify(value)}`), err.message)
        assert.match(err.message, problem)
        return true
      }, value)
    }
  })
})

describe('registryAllowList', () => {
  it('is absent for an empty list or one with a wildcard', () => {
    assert.equal(registryAllowList([]), undefined)
    assert.equal(registryAllowList(['https://docker.io', '*']), undefined)
    assert.equal(registryAllowList(['_default']), undefined)
  })

  it('excludes registries that are not mirrored (Spegel\'s vector)', () => {
    const filter = registryAllowList(['https://docker.io', 'https://quay.io', 'http://localhost:5000'])
    assert.ok(filter !== undefined)
    assert.equal(filter.matches({ registry: 'localhost:6000', repository: 'foo', tag: 'bar' }), true)
    assert.equal(filter.matches({ registry: 'localhost:5000', repository: 'foo', tag: 'bar' }), false)
    assert.equal(filter.matches({ registry: 'docker.io', repository: 'foo', tag: 'bar' }), false)
    assert.equal(filter.matches({ registry: 'Docker.IO', repository: 'foo' }), false)
    // A digest request without ns has no registry and is never mirrored.
    assert.equal(filter.matches({ registry: '', repository: 'foo' }), true)
  })

  it('fails on an invalid entry', () => {
    assert.throws(() => registryAllowList(['https://docker.io', 'quay.io']), /invalid registry url "quay.io"/)
  })
})

describe('buildFilters and isFiltered', () => {
  it('combines the allow list with regex filters; any match excludes', () => {
    const filters = buildFilters(['https://docker.io', 'https://ghcr.io'], [':latest$'])
    assert.equal(filters.length, 2)
    assert.equal(isFiltered(filters, { registry: 'docker.io', repository: 'library/ubuntu', tag: '22.04' }), false)
    assert.equal(isFiltered(filters, ubuntuLatest), true)
    assert.equal(isFiltered(filters, { registry: 'quay.io', repository: 'foo', tag: '1' }), true)
  })

  it('filters nothing when nothing is configured', () => {
    const filters = buildFilters([], [])
    assert.deepEqual(filters, [])
    assert.equal(isFiltered(filters, ubuntuLatest), false)
    assert.equal(buildFilters(['*'], ['^ghcr']).length, 1)
  })
})
