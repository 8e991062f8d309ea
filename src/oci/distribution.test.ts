import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { distributionRequestPath, parseDistributionPath } from './distribution.js'
import { OciError, type OciErrorCode } from './errors.js'

const NGINX_MANIFEST = 'sha256:0a404ca8e119d061cdb2dceee824c914cdc69b31bc7b5956ef5a520436a80d39'
const NGINX_BLOB = 'sha256:295c7be079025306c4f1d65997fcf7adb411c88f139ad1d34b537164aa060369'

function ociError (code: OciErrorCode, status: number, message?: string | RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof OciError, String(err))
    assert.equal(err.code, code)
    assert.equal(err.status, status)
    if (typeof message === 'string') assert.equal(err.message, message)
    else if (message !== undefined) assert.match(err.message, message)
    return true
  }
}

describe('parseDistributionPath', () => {
  it('parses Spegel\'s vectors', () => {
    assert.deepEqual(parseDistributionPath('/v2/foo/bar/manifests/hello-world', 'example.com'), {
      kind: 'manifest', repository: 'foo/bar', registry: 'example.com', tag: 'hello-world', key: 'example.com/foo/bar:hello-world'
    })
    assert.deepEqual(parseDistributionPath('/v2/test/manifests/latest', 'example.com'), {
      kind: 'manifest', repository: 'test', registry: 'example.com', tag: 'latest', key: 'example.com/test:latest'
    })
    assert.deepEqual(parseDistributionPath(`/v2/library/nginx/manifests/${NGINX_MANIFEST}`, 'docker.io'), {
      kind: 'manifest', repository: 'library/nginx', registry: 'docker.io', digest: NGINX_MANIFEST, key: NGINX_MANIFEST
    })
    assert.deepEqual(parseDistributionPath(`/v2/library/nginx/blobs/${NGINX_BLOB}`, 'docker.io'), {
      kind: 'blob', repository: 'library/nginx', registry: 'docker.io', digest: NGINX_BLOB, key: NGINX_BLOB
    })
    assert.equal(parseDistributionPath('/v2/hello-static-empty--0ix3q/manifests/latest', 'docker.io').repository, 'hello-static-empty--0ix3q')
    assert.equal(parseDistributionPath('/v2/test/foo__bar------test_baz/manifests/latest', 'docker.io').repository, 'test/foo__bar------test_baz')
  })

  it('reports Spegel\'s error messages with OCI codes', () => {
    assert.throws(() => parseDistributionPath('/v2/spegel-org/spegel/v0.0.1', 'example.com'),
      ociError('NAME_UNKNOWN', 404, 'distribution path could not be parsed'))
    assert.throws(() => parseDistributionPath('/v2/spegel-org/spegel/blobs/v0.0.1', 'example.com'),
      ociError('DIGEST_INVALID', 400, 'invalid checksum digest format'))
    assert.throws(() => parseDistributionPath('/v2/spegel-org/spegel/blobs/sha256:123', 'example.com'),
      ociError('DIGEST_INVALID', 400, 'invalid checksum digest length'))
    assert.throws(() => parseDistributionPath('/v2/spegel-org/spegel/manifests/v0.0.1', null),
      ociError('NAME_INVALID', 400, 'the ns query parameter is required for tag references'))
    assert.throws(() => parseDistributionPath('/v2/spegel-org/spegel/manifests/v0.0.1', ''),
      ociError('NAME_INVALID', 400, 'the ns query parameter is required for tag references'))
    assert.throws(() => parseDistributionPath('/v2/spegel-org/spegel/manifests/sha253:foobar', null),
      ociError('DIGEST_INVALID', 400, 'unsupported digest algorithm'))
    assert.throws(() => parseDistributionPath('/v2/foo___bar/manifests/dev', 'docker.io'),
      ociError('NAME_INVALID', 400, /foo___bar/))
    assert.throws(() => parseDistributionPath('/v2/foo/bar/invalid/' + NGINX_BLOB, 'docker.io'),
      ociError('NAME_UNKNOWN', 404))
  })

  it('takes the registry from the first path component when ns is absent', () => {
    assert.deepEqual(parseDistributionPath('/v2/docker.io/library/nginx/manifests/1.27', null), {
      kind: 'manifest', repository: 'library/nginx', registry: 'docker.io', tag: '1.27', key: 'docker.io/library/nginx:1.27'
    })
    assert.deepEqual(parseDistributionPath('/v2/localhost/app/manifests/v1', ''), {
      kind: 'manifest', repository: 'app', registry: 'localhost', tag: 'v1', key: 'localhost/app:v1'
    })
    // ns wins: the dotted component is then part of the repository.
    assert.equal(parseDistributionPath('/v2/docker.io/library/nginx/manifests/1.27', 'example.com').repository, 'docker.io/library/nginx')
    // A single component is a repository, never a registry.
    assert.throws(() => parseDistributionPath('/v2/my.app/manifests/v1', null),
      ociError('NAME_INVALID', 400, 'the ns query parameter is required for tag references'))
  })

  it('serves digests without ns, with an empty registry', () => {
    assert.deepEqual(parseDistributionPath(`/v2/foo/blobs/${NGINX_BLOB}`, null), {
      kind: 'blob', repository: 'foo', registry: '', digest: NGINX_BLOB, key: NGINX_BLOB
    })
  })

  it('validates ns as host[:port]', () => {
    for (const ns of ['docker.io', 'foo.bar:5000', '[::1]:5000', 'localhost', '10.0.0.1:30020']) {
      assert.equal(parseDistributionPath('/v2/foo/manifests/v1', ns).registry, ns)
    }
    for (const ns of ['docker.io/evil', 'docker.io?x', 'a b', '::1', 'docker.io:', 'https://docker.io', '..']) {
      assert.throws(() => parseDistributionPath('/v2/foo/manifests/v1', ns), ociError('NAME_INVALID', 400, /ns query parameter/), ns)
      assert.throws(() => parseDistributionPath(`/v2/foo/blobs/${NGINX_BLOB}`, ns), ociError('NAME_INVALID', 400), ns)
    }
  })

  it('takes the last manifests/blobs segment as the kind, so names may contain those words', () => {
    const req = parseDistributionPath(`/v2/blobs/manifests/x/manifests/${NGINX_MANIFEST}`, null)
    assert.equal(req.repository, 'blobs/manifests/x')
    assert.equal(req.kind, 'manifest')
    assert.equal(parseDistributionPath(`/v2/foo/manifests/blobs/${NGINX_BLOB}`, null).repository, 'foo/manifests')
  })

  it('answers unsupported endpoints with UNSUPPORTED 404', () => {
    const paths = [
      '/v2/_catalog',
      '/v2/library/nginx/tags/list',
      `/v2/library/nginx/referrers/${NGINX_MANIFEST}`,
      '/v2/library/nginx/blobs/uploads/',
      '/v2/library/nginx/blobs/uploads',
      '/v2/library/nginx/blobs/uploads/5b0f5c3e-6f9e-4b79-9a55-0f2b0e8c1d2a'
    ]
    for (const path of paths) {
      assert.throws(() => parseDistributionPath(path, 'docker.io'), ociError('UNSUPPORTED', 404), path)
    }
  })

  it('answers paths that are not distribution requests with NAME_UNKNOWN 404', () => {
    for (const path of ['/v2/', '/v3/foo/manifests/latest', '/v2/foo', '/v2/foo/manifests', '/v2/foo/tags']) {
      assert.throws(() => parseDistributionPath(path, 'docker.io'), ociError('NAME_UNKNOWN', 404), path)
    }
  })

  it('rejects a tag on /blobs/ as an invalid digest', () => {
    assert.throws(() => parseDistributionPath('/v2/foo/blobs/latest', 'docker.io'), ociError('DIGEST_INVALID', 400))
  })

  it('never turns traversal or encoding into a valid request', () => {
    const hostile = [
      `/v2/foo/../bar/blobs/${NGINX_BLOB}`,
      `/v2/../foo/blobs/${NGINX_BLOB}`,
      `/v2/foo/./bar/blobs/${NGINX_BLOB}`,
      `/v2//foo/blobs/${NGINX_BLOB}`,
      `/v2/foo//bar/blobs/${NGINX_BLOB}`,
      `/v2/foo/blobs//${NGINX_BLOB}`,
      `/v2/foo/blobs/${NGINX_BLOB}/`,
      `/v2/foo/%2e%2e/bar/blobs/${NGINX_BLOB}`,
      `/v2/foo%2Fbar/blobs/${NGINX_BLOB}`,
      `/v2/foo%2fbar/manifests/latest`,
      `/v2/f%6Fo/manifests/latest`,
      `/v2/foo/manifests/lat%65st`,
      `/v2/foo/blobs/sha256%3A${NGINX_BLOB.slice(7)}`,
      `/v2/foo\\..\\bar/manifests/latest`,
      `/v2/foo/manifests/..`,
      `/v2/foo/manifests/.`,
      '/v2/foo/manifests/latest?ns=x',
      '/v2/foo/manifests/latest#x',
      '/v2/foo bar/manifests/latest',
      '/v2/föo/manifests/latest',
      `/v2/${'a/'.repeat(200)}manifests/latest`
    ]
    for (const path of hostile) {
      assert.throws(() => parseDistributionPath(path, 'docker.io'), (err: unknown) => {
        assert.ok(err instanceof OciError, path)
        assert.ok(err.status >= 400 && err.status < 500, path)
        return true
      }, path)
    }
  })

  it('rejects encoding and dot segments up front, before any grammar check', () => {
    // The grammar would reject these too; each guard is tested on its own so neither can quietly go.
    for (const path of [`/v2/foo/%2e%2e/blobs/${NGINX_BLOB}`, '/v2/f%6Fo/manifests/latest', '/v2/foo\\bar/manifests/latest']) {
      assert.throws(() => parseDistributionPath(path, 'docker.io'), ociError('NAME_INVALID', 400, /characters that are not allowed/), path)
    }
    for (const path of [`/v2/foo/../bar/blobs/${NGINX_BLOB}`, `/v2//foo/blobs/${NGINX_BLOB}`, '/v2/foo/manifests/..', '/v2/foo/manifests/latest/']) {
      assert.throws(() => parseDistributionPath(path, 'docker.io'), ociError('NAME_INVALID', 400, /empty or dot segments/), path)
    }
  })
})

describe('distributionRequestPath', () => {
  it('round-trips through the parser', () => {
    const requests = [
      parseDistributionPath('/v2/foo/bar/manifests/hello-world', 'example.com'),
      parseDistributionPath(`/v2/library/nginx/blobs/${NGINX_BLOB}`, 'docker.io'),
      parseDistributionPath(`/v2/library/nginx/manifests/${NGINX_MANIFEST}`, null),
      parseDistributionPath('/v2/foo/manifests/v1', '[::1]:5000')
    ]
    for (const req of requests) {
      const url = new URL(distributionRequestPath(req), 'http://peer')
      assert.deepEqual(parseDistributionPath(url.pathname, url.searchParams.get('ns')), req)
    }
    assert.equal(distributionRequestPath(requests[0]!), '/v2/foo/bar/manifests/hello-world?ns=example.com')
    assert.equal(distributionRequestPath(requests[2]!), `/v2/library/nginx/manifests/${NGINX_MANIFEST}`)
  })
})
