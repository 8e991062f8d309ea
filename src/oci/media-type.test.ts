import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { gzipSync } from 'node:zlib'
import { OciError } from './errors.js'
import {
  childDescriptors, fingerprintMediaType, isIndexMediaType, isManifestMediaType, isValidMediaType, MANIFEST_MEDIA_TYPES, toMediaType,
  MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_EMPTY,
  MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCTET_STREAM, MEDIA_TYPE_SNIFF_LIMIT_BYTES
} from './media-type.js'

const D1 = 'sha256:' + '1'.repeat(64)
const D2 = 'sha256:' + '2'.repeat(64)
const D3 = 'sha256:' + '3'.repeat(64)
const LAYER_TYPE = 'application/vnd.oci.image.layer.v1.tar+gzip'

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)
const json = (value: unknown): Uint8Array => bytes(JSON.stringify(value))

const index = {
  schemaVersion: 2,
  mediaType: MEDIA_TYPE_OCI_INDEX,
  manifests: [
    { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: D1, size: 1234, platform: { architecture: 'amd64', os: 'linux' } },
    { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: D2, size: 99, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } }
  ]
}
const manifest = {
  schemaVersion: 2,
  mediaType: MEDIA_TYPE_OCI_MANIFEST,
  config: { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: D1, size: 585 },
  layers: [{ mediaType: LAYER_TYPE, digest: D2, size: 3_000_000 }, { mediaType: LAYER_TYPE, digest: D3, size: 12 }]
}
const config = {
  architecture: 'amd64',
  os: 'linux',
  config: { Env: ['PATH=/usr/bin'] },
  rootfs: { type: 'layers', diff_ids: [D2] },
  history: [{ created_by: 'x' }]
}
const withoutMediaType = (v: Record<string, unknown>): Record<string, unknown> => {
  const { mediaType: _, ...rest } = v
  return rest
}

describe('media type sets', () => {
  it('knows the four manifest types, two of them indexes', () => {
    assert.deepEqual([...MANIFEST_MEDIA_TYPES].sort(), [
      MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST
    ].sort())
    assert.ok(isManifestMediaType(MEDIA_TYPE_DOCKER_MANIFEST))
    assert.ok(!isManifestMediaType(MEDIA_TYPE_OCI_CONFIG))
    assert.ok(!isManifestMediaType('application/vnd.docker.distribution.manifest.v1+prettyjws'))
    assert.ok(isIndexMediaType(MEDIA_TYPE_OCI_INDEX))
    assert.ok(isIndexMediaType(MEDIA_TYPE_DOCKER_MANIFEST_LIST))
    assert.ok(!isIndexMediaType(MEDIA_TYPE_OCI_MANIFEST))
  })
})

describe('fingerprintMediaType', () => {
  it('uses mediaType when schemaVersion is 2', () => {
    assert.equal(fingerprintMediaType(json(index)), MEDIA_TYPE_OCI_INDEX)
    assert.equal(fingerprintMediaType(json(manifest)), MEDIA_TYPE_OCI_MANIFEST)
    assert.equal(fingerprintMediaType(json({ ...manifest, mediaType: MEDIA_TYPE_DOCKER_MANIFEST })), MEDIA_TYPE_DOCKER_MANIFEST)
    assert.equal(fingerprintMediaType(json({ ...index, mediaType: MEDIA_TYPE_DOCKER_MANIFEST_LIST })), MEDIA_TYPE_DOCKER_MANIFEST_LIST)
    // Key order does not matter.
    assert.equal(fingerprintMediaType(bytes(`{"manifests":[],"mediaType":"${MEDIA_TYPE_DOCKER_MANIFEST_LIST}","schemaVersion":2}`)), MEDIA_TYPE_DOCKER_MANIFEST_LIST)
  })

  it('infers index, manifest and config from their keys', () => {
    assert.equal(fingerprintMediaType(json(withoutMediaType(index))), MEDIA_TYPE_OCI_INDEX)
    assert.equal(fingerprintMediaType(json(withoutMediaType(manifest))), MEDIA_TYPE_OCI_MANIFEST)
    assert.equal(fingerprintMediaType(json({ ...manifest, schemaVersion: 1 })), MEDIA_TYPE_OCI_MANIFEST)
    assert.equal(fingerprintMediaType(json(config)), MEDIA_TYPE_OCI_CONFIG)
    assert.equal(fingerprintMediaType(bytes('  \n' + JSON.stringify(config, null, 2))), MEDIA_TYPE_OCI_CONFIG)
    assert.equal(fingerprintMediaType(json({ schemaVersion: 2, manifests: [] })), MEDIA_TYPE_OCI_INDEX)
  })

  it('recognises exactly {} as the empty descriptor', () => {
    assert.equal(fingerprintMediaType(bytes('{}')), MEDIA_TYPE_OCI_EMPTY)
    assert.equal(fingerprintMediaType(bytes('{ }')), MEDIA_TYPE_OCTET_STREAM)
  })

  it('serves what it cannot classify as octet-stream (deviation: Spegel fails)', () => {
    const cases: Array<[string, Uint8Array]> = [
      ['empty', new Uint8Array()],
      ['gzip layer', gzipSync(bytes('{"not":"seen"}'))],
      ['unknown object', json({ unexpected: 'value' })],
      ['array', json([1, 2])],
      ['string', json('x')],
      ['number', bytes('123')],
      ['null', bytes('null')],
      ['truncated', bytes('{"schemaVersion":2,')],
      ['invalid utf-8', new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
      ['config missing rootfs', json({ architecture: 'amd64', os: 'linux' })],
      ['config with wrong types', json({ architecture: 1, os: 'linux', rootfs: {} })],
      ['manifest without layers', json({ config: { digest: D1 } })],
      ['manifests not descriptors', json({ manifests: ['a'] })],
      ['manifests with bad field types', json({ manifests: [{ size: '12' }] })],
      ['layers not an array', json({ config: {}, layers: {} })]
    ]
    for (const [name, content] of cases) assert.equal(fingerprintMediaType(content), MEDIA_TYPE_OCTET_STREAM, name)
  })

  it('never returns a mediaType field that is not a media type', () => {
    assert.equal(fingerprintMediaType(json({ schemaVersion: 2, mediaType: 'text/html\r\nX-Evil: 1' })), MEDIA_TYPE_OCTET_STREAM)
    assert.equal(fingerprintMediaType(json({ ...manifest, mediaType: 'not a type' })), MEDIA_TYPE_OCI_MANIFEST)
    assert.equal(fingerprintMediaType(json({ ...manifest, mediaType: '' })), MEDIA_TYPE_OCI_MANIFEST)
  })

  it('does not sniff content over the limit', () => {
    const big = new Uint8Array(MEDIA_TYPE_SNIFF_LIMIT_BYTES + 1).fill(0x20)
    big.set(json(withoutMediaType(manifest)))
    assert.equal(fingerprintMediaType(big), MEDIA_TYPE_OCTET_STREAM)
    const atLimit = big.subarray(0, MEDIA_TYPE_SNIFF_LIMIT_BYTES)
    assert.equal(fingerprintMediaType(atLimit), MEDIA_TYPE_OCI_MANIFEST)
  })
})

describe('childDescriptors', () => {
  it('lists an index\'s manifests with platforms', () => {
    assert.deepEqual(childDescriptors(MEDIA_TYPE_OCI_INDEX, json(index)), [
      { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: D1, size: 1234, platform: { architecture: 'amd64', os: 'linux' } },
      { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: D2, size: 99, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } }
    ])
    assert.equal(childDescriptors(MEDIA_TYPE_DOCKER_MANIFEST_LIST, json(index)).length, 2)
  })

  it('lists a manifest\'s config, then its layers', () => {
    assert.deepEqual(childDescriptors(MEDIA_TYPE_OCI_MANIFEST, json(manifest)).map(d => d.digest), [D1, D2, D3])
    assert.deepEqual(childDescriptors(MEDIA_TYPE_DOCKER_MANIFEST, json(manifest))[0], { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: D1, size: 585 })
  })

  it('has no children for other types', () => {
    assert.deepEqual(childDescriptors(MEDIA_TYPE_OCI_CONFIG, json(config)), [])
    assert.deepEqual(childDescriptors(MEDIA_TYPE_OCTET_STREAM, new Uint8Array([1, 2, 3])), [])
  })

  it('skips entries that are not valid descriptors and drops unknown fields', () => {
    const messy = {
      schemaVersion: 2,
      manifests: [
        { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: 'sha256:123', size: 1 },
        { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: D1.toUpperCase(), size: 1 },
        { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: D1, size: -1 },
        { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: D1, size: '1' },
        { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: D1, size: 1.5 },
        { digest: D1, size: 1 },
        { mediaType: 7, digest: D1, size: 1 },
        null,
        'x',
        { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: D3, size: 0, platform: { os: 'linux', architecture: 5 }, annotations: { a: 'b' } }
      ]
    }
    assert.deepEqual(childDescriptors(MEDIA_TYPE_OCI_INDEX, json(messy)), [
      { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: D3, size: 0, platform: { os: 'linux' } }
    ])
    assert.deepEqual(childDescriptors(MEDIA_TYPE_OCI_INDEX, json({ manifests: 'nope' })), [])
    assert.deepEqual(childDescriptors(MEDIA_TYPE_OCI_MANIFEST, json({ config: { digest: 'bad' }, layers: manifest.layers })).map(d => d.digest), [D2, D3])
  })

  it('turns a media type that is not RFC 6838 syntax into application/octet-stream, keeping the entry', () => {
    // Each of these would make Node's writeHead throw (or forge a header) if it became Content-Type.
    const bad = [
      'application/vnd.oci.image.layer.v1.tar\r\nX-Injected: 1',
      'application/vnd.oci.image.layer.v1.tar\u0000',
      'application/vnd.ocı.image.layer.v1.tar',
      'application/vnd.oci.image.layer.v1.tar\u2028',
      'application/vnd.oci.image.layer.v1.tar; charset=utf-8',
      'no-slash',
      ' application/json'
    ]
    const withBad = { ...manifest, layers: bad.map((mediaType, i) => ({ mediaType, digest: i % 2 === 0 ? D2 : D3, size: 1 })) }
    const children = childDescriptors(MEDIA_TYPE_OCI_MANIFEST, json(withBad))
    assert.equal(children.length, 1 + bad.length, 'no entry is dropped')
    assert.equal(children[0]?.mediaType, MEDIA_TYPE_OCI_CONFIG)
    for (const child of children.slice(1)) assert.equal(child.mediaType, MEDIA_TYPE_OCTET_STREAM)
  })

  it('reports a manifest whose bytes are not a JSON object', () => {
    for (const content of [bytes('not json'), json([]), new Uint8Array()]) {
      assert.throws(() => childDescriptors(MEDIA_TYPE_OCI_MANIFEST, content), (err: unknown) => {
        assert.ok(err instanceof OciError)
        assert.equal(err.code, 'MANIFEST_INVALID')
        return true
      })
    }
  })
})

describe('isValidMediaType and toMediaType', () => {
  it('accept bare type/subtype and refuse everything a header cannot carry', () => {
    for (const ok of [LAYER_TYPE, MEDIA_TYPE_OCI_MANIFEST, 'application/vnd.docker.image.rootfs.diff.tar.gzip', 'text/plain', 'a/b']) {
      assert.ok(isValidMediaType(ok), ok)
      assert.equal(toMediaType(ok), ok)
    }
    for (const bad of ['', 'a', 'a/', '/b', 'a/b c', 'a/b\n', 'a/\u00e9', 'a/b;x=y', 'a/b/c', 'x'.repeat(128) + '/b']) {
      assert.ok(!isValidMediaType(bad), JSON.stringify(bad))
      assert.equal(toMediaType(bad), MEDIA_TYPE_OCTET_STREAM)
    }
  })
})
