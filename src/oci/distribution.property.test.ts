// Property tests of the /v2/ path parser over generated names, references, digests and `ns`
// values. A fixed seed and run count keep them deterministic.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { distributionRequestPath, parseDistributionPath, type DistributionRequest } from './distribution.js'
import { OciError } from './errors.js'
import { isValidRegistryHost, isValidRepository, isValidTag } from './reference.js'

const SEED = 0xd157
const RUNS = 2000

const lower = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789')
const component = fc.tuple(
  fc.string({ unit: lower, minLength: 1, maxLength: 8 }),
  fc.array(fc.tuple(fc.constantFrom('.', '_', '__', '-', '--'), fc.string({ unit: lower, minLength: 1, maxLength: 6 })), { maxLength: 2 })
).map(([head, rest]) => head + rest.map(([sep, part]) => sep + part).join(''))
/** Repositories the grammar accepts (names with `manifests` or `blobs` in them included). */
const repository = fc.array(fc.oneof(component, fc.constantFrom('manifests', 'blobs', 'library', 'v2')), { minLength: 1, maxLength: 4 }).map((parts) => parts.join('/'))
const tag = fc.tuple(fc.constantFrom(...'abcXYZ019_'), fc.string({ unit: fc.constantFrom(...'abcXYZ019_.-'), maxLength: 20 })).map(([a, b]) => a + b)
const hex = (length: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: length, maxLength: length })
const digest = fc.oneof(hex(64).map((h) => `sha256:${h}`), hex(96).map((h) => `sha384:${h}`), hex(128).map((h) => `sha512:${h}`))
const host = fc.oneof(
  fc.constantFrom('docker.io', 'ghcr.io', 'example.com:5000', 'localhost', 'localhost:5000', '[::1]:5000', 'registry-1.docker.io', '10.0.0.1:443'),
  fc.tuple(fc.domain(), fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined })).map(([d, p]) => p === undefined ? d : `${d}:${p}`)
)

/** Anything a client could put in a path: valid pieces, near misses and junk. */
const segment = fc.oneof(
  component, tag, digest,
  fc.constantFrom('', '.', '..', 'manifests', 'blobs', 'uploads', 'tags', 'list', '_catalog', 'referrers', 'sha256:', 'sha256:abc', 'SHA256:' + 'a'.repeat(64), '%2e%2e', '%2f', 'a%00b', 'ü', 'a b', 'A', '-a', 'a-', 'a..b'),
  fc.string({ maxLength: 12 })
)
const anyPath = fc.oneof(
  fc.array(segment, { maxLength: 8 }).map((parts) => `/v2/${parts.join('/')}`),
  fc.string({ maxLength: 80 }).map((s) => `/v2/${s}`),
  fc.tuple(repository, fc.constantFrom('manifests', 'blobs'), fc.oneof(tag, digest, segment)).map(([r, k, ref]) => `/v2/${r}/${k}/${ref}`),
  // Near-valid requests: a name made of arbitrary segments before a valid kind and reference.
  fc.tuple(fc.array(segment, { minLength: 1, maxLength: 4 }), fc.constantFrom('manifests', 'blobs'), fc.oneof(tag, digest)).map(([r, k, ref]) => `/v2/${r.join('/')}/${k}/${ref}`),
  fc.constant(`/v2/${'a/'.repeat(200)}manifests/x`)
)
const anyNs = fc.oneof(fc.constant(null), fc.constant(''), host, fc.string({ maxLength: 30 }))

describe('parseDistributionPath (property)', () => {
  it('answers any path and ns with a request or a 4xx OciError, nothing else', () => {
    fc.assert(fc.property(anyPath, anyNs, (path, ns) => {
      let request: DistributionRequest
      try {
        request = parseDistributionPath(path, ns)
      } catch (err) {
        assert.ok(err instanceof OciError, `${path} ns=${String(ns)}: ${String(err)}`)
        assert.ok(err.status >= 400 && err.status < 500, `${path}: status ${err.status}`)
        return
      }
      // Whatever was accepted is well-formed, so it can become a store key and a peer URL.
      assert.ok(isValidRepository(request.repository), request.repository)
      assert.ok(request.registry === '' || isValidRegistryHost(request.registry), request.registry)
      if (request.tag !== undefined) {
        assert.ok(isValidTag(request.tag))
        assert.equal(request.kind, 'manifest')
        assert.equal(request.key, `${request.registry}/${request.repository}:${request.tag}`)
      } else {
        assert.equal(request.key, request.digest)
      }
    }), { seed: SEED, numRuns: RUNS })
  })

  it('reads back every valid request from the path it would send a peer', () => {
    fc.assert(fc.property(repository, fc.constantFrom('manifest', 'blob') as fc.Arbitrary<'manifest' | 'blob'>, fc.oneof(tag, digest), fc.option(host, { nil: undefined }),
      (repo, kind, reference, registry) => {
        const isTag = !reference.includes(':')
        fc.pre(!(isTag && (kind === 'blob' || registry === undefined)))
        const wanted: DistributionRequest = {
          kind,
          repository: repo,
          registry: registry ?? '',
          ...(isTag ? { tag: reference } : { digest: reference }),
          key: isTag ? `${registry ?? ''}/${repo}:${reference}` : reference
        }
        const path = distributionRequestPath(wanted)
        const q = path.indexOf('?')
        const ns = q === -1 ? null : new URLSearchParams(path.slice(q + 1)).get('ns')
        const parsed = parseDistributionPath(q === -1 ? path : path.slice(0, q), ns)
        // Without ns, a first component that looks like a host is read as the registry (skopeo's form).
        if (registry === undefined && parsed.registry !== '') {
          assert.equal(`${parsed.registry}/${parsed.repository}`, repo)
          return
        }
        assert.deepEqual(parsed, wanted)
      }), { seed: SEED, numRuns: RUNS })
  })
})
