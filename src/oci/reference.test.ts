import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  isValidRegistryHost, isValidRepository, parseImageReference, parseRegistryHost, referenceIdentifier,
  referenceString, tagName
} from './reference.js'

const DIGEST = 'sha256:c0669ef34cdc14332c0f1ab0c2c01acb91d96014b172f1a76f3a39e63d1f0bda'
const OTHER = 'sha256:ec4306b243d98cce7c3b1f994f2dae660059ef521b2b24588cfdc950bd816d4c'

const REGISTRIES = [
  'docker.io', 'quay.io', 'ghcr.com', 'example.com:2135', '127.0.0.1', '127.0.0.1:3', '[::1]:8080', '[::1]',
  'localhost', 'localhost:5000', 'registry:5000', '1234.dkr.ecr.eu-west-1.amazonaws.com'
]

describe('parseImageReference (strict)', () => {
  const cases = [
    { image: 'library/ubuntu:latest', repository: 'library/ubuntu', tag: 'latest' },
    { image: 'library/alpine:3.18.0', repository: 'library/alpine', tag: '3.18.0' },
    { image: `jetstack/cert-manager-controller:3.18.0@${DIGEST}`, repository: 'jetstack/cert-manager-controller', tag: '3.18.0', digest: DIGEST },
    { image: `fluxcd/helm-controller@${DIGEST}`, repository: 'fluxcd/helm-controller', digest: DIGEST },
    { image: 'ubuntu:22.04', repository: 'ubuntu', tag: '22.04' }
  ]
  for (const registry of REGISTRIES) {
    for (const c of cases) {
      it(`${registry}/${c.image}`, () => {
        const ref = parseImageReference(`${registry}/${c.image}`)
        const expected: Record<string, string> = { registry, repository: c.repository }
        if (c.tag !== undefined) expected.tag = c.tag
        if (c.digest !== undefined) expected.digest = c.digest
        assert.deepEqual(ref, expected)
        assert.equal(referenceString(ref), `${registry}/${c.image}`)
        assert.equal(tagName(ref), c.tag === undefined ? undefined : `${registry}/${c.repository}:${c.tag}`)
        assert.equal(referenceIdentifier(ref), c.digest ?? `${registry}/${c.repository}:${c.tag}`)
      })
    }
  }

  it('treats single-label first components without a port as part of the repository', () => {
    assert.throws(() => parseImageReference('library/ubuntu:latest'), {
      message: 'could not parse image library/ubuntu:latest: reference needs to contain a registry'
    })
    assert.deepEqual(parseImageReference('registry/foo:1', { strict: false }), { registry: 'docker.io', repository: 'registry/foo', tag: '1' })
  })

  it('applies an extra digest and checks it against the parsed one', () => {
    assert.deepEqual(parseImageReference('docker.io/foo/bar', { digest: DIGEST }), { registry: 'docker.io', repository: 'foo/bar', digest: DIGEST })
    assert.deepEqual(parseImageReference(`docker.io/foo/bar@${DIGEST}`, { digest: DIGEST }).digest, DIGEST)
    assert.throws(() => parseImageReference(`quay.io/jetstack/cert-manager-webhook@${DIGEST}`, { digest: OTHER }), {
      message: `could not parse image quay.io/jetstack/cert-manager-webhook@${DIGEST}: set digest ${OTHER} does not match parsed digest ${DIGEST}`
    })
  })

  it('requires a digest only when asked', () => {
    assert.throws(() => parseImageReference('ghcr.io/spegel-org/spegel:v1', { requireDigest: true }), {
      message: 'could not parse image ghcr.io/spegel-org/spegel:v1: image needs to contain a digest'
    })
    assert.equal(parseImageReference('ghcr.io/spegel-org/spegel:v1', { requireDigest: true, digest: DIGEST }).digest, DIGEST)
  })

  it('rejects malformed references with a prefixed message', () => {
    const cases: Array<[string, RegExp]> = [
      ['https://example.com/test:latest', /: invalid reference format$/],
      ['example%#$.com/foo', /: registry example%#\$\.com is not a valid host\[:port\]$/],
      ['::1/foo:bar', /: ip6 address ::1 needs to be encapsulated in square brackets$/],
      ['[::g]/foo:bar', /: registry \[::g\] is not a valid host/],
      ['example.com:99999/foo:bar', /not a valid host/],
      ['ghcr.io/spegel-org/spegel', /: either tag or digest has to be set$/],
      ['ghcr.io/Spegel/spegel:v1', /: repository Spegel\/spegel is invalid$/],
      ['ghcr.io/foo___bar:v1', /: repository foo___bar is invalid$/],
      ['ghcr.io/foo:v1:v2', /: tag v1:v2 is invalid$/],
      ['ghcr.io/foo:', /: tag {2}is invalid$/],
      ['ghcr.io/foo:-x', /: tag -x is invalid$/],
      ['ghcr.io/:v1', /: reference needs to contain a repository$/],
      ['ghcr.io/foo@sha256:123', /: invalid checksum digest length$/],
      ['ghcr.io/foo@', /: invalid checksum digest format$/],
      ['ghcr.io//foo:v1', /: repository \/foo is invalid$/],
      ['ghcr.io/foo/../bar:v1', /: repository foo\/\.\.\/bar is invalid$/]
    ]
    for (const [input, message] of cases) {
      assert.throws(() => parseImageReference(input), (err: unknown) => {
        assert.ok(err instanceof Error)
        assert.ok(err.message.startsWith(`could not parse image ${input}: `), err.message)
        assert.match(err.message, message)
        return true
      }, input)
    }
  })

  it('keeps the digest error as the cause', () => {
    assert.throws(() => parseImageReference('ghcr.io/foo@sha256:1'), (err: unknown) => {
      assert.ok(err instanceof Error)
      assert.ok(err.cause instanceof Error)
      assert.equal(err.cause.message, 'invalid checksum digest length')
      return true
    })
  })
})

describe('parseImageReference (non-strict defaults)', () => {
  it('fills in docker.io, library/ and latest', () => {
    assert.equal(referenceString(parseImageReference('ubuntu', { strict: false })), 'docker.io/library/ubuntu:latest')
    assert.equal(referenceString(parseImageReference('docker.io/ubuntu', { strict: false })), 'docker.io/library/ubuntu:latest')
    assert.equal(referenceString(parseImageReference(`phillebaba/spegel:test@${DIGEST}`, { strict: false })), `docker.io/phillebaba/spegel:test@${DIGEST}`)
    assert.equal(referenceString(parseImageReference('ghcr.io/ubuntu', { strict: false })), 'ghcr.io/ubuntu:latest')
  })

  it('does not invent a tag for a digest reference', () => {
    const ref = parseImageReference(`ubuntu@${DIGEST}`, { strict: false })
    assert.equal(referenceString(ref), `docker.io/library/ubuntu@${DIGEST}`)
    assert.equal(tagName(ref), undefined)
  })
})

describe('registry hosts', () => {
  it('accepts host[:port] and bracketed IPv6', () => {
    for (const host of REGISTRIES) assert.ok(isValidRegistryHost(host), host)
    assert.deepEqual(parseRegistryHost('[fc00::2]:30020'), { hostname: 'fc00::2', port: 30020, isIPv6: true })
    assert.deepEqual(parseRegistryHost('foo.bar'), { hostname: 'foo.bar', port: undefined, isIPv6: false })
  })

  it('rejects everything else', () => {
    const bad = ['', '::1', '[::1', '::1]', '[foo]', 'foo:', 'foo:0', 'foo:65536', 'foo:123456', 'foo_bar.com', '-foo.com',
      'foo-.com', 'foo..com', '.foo', 'foo.', 'foo/bar', 'user@foo', 'foo bar', '[fe80::1%25eth0]', 'foo:5000:1', 'a'.repeat(256)]
    for (const host of bad) assert.equal(isValidRegistryHost(host), false, host)
  })
})

describe('isValidRepository', () => {
  it('follows the distribution grammar', () => {
    for (const ok of ['foo', 'foo/bar', 'hello-static-empty--0ix3q', 'test/foo__bar------test_baz', 'a.b_c-d/e']) {
      assert.ok(isValidRepository(ok), ok)
    }
    for (const bad of ['', 'Foo', 'foo___bar', 'foo/', '/foo', 'foo//bar', 'foo/../bar', '-foo', 'foo-', 'foo..bar', 'a'.repeat(256)]) {
      assert.equal(isValidRepository(bad), false, bad)
    }
  })

  it('terminates on hostile input (no catastrophic backtracking)', { timeout: 10_000 }, () => {
    // An ambiguous grammar would hang here (2^120 paths); the timeout only stops a hung run.
    assert.equal(isValidRepository('a-'.repeat(120) + '!'), false)
    assert.equal(isValidRepository('a__'.repeat(80) + '_'), false)
  })
})
