// The OCI pull API over a real containerd's content, checked with real clients (skopeo,
// a second containerd pulling through this node as its mirror) and the OCI conformance pull checks.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { startContainerd, containerdAvailable, type ContainerdInstance } from '../helpers/containerd.js'
import { buildImage, type BuiltImage } from '../helpers/image.js'
import { httpRequest, run, digestOf } from '../helpers/net.js'
import { startSpegel, type SpegelNode } from '../helpers/spegel.js'

const skip = containerdAvailable() ? false : 'needs root and containerd (scripts/test-all.sh installs it)'
const INDEX_TYPE = 'application/vnd.oci.image.index.v1+json'
const MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json'

describe('pull API against a real containerd', { skip }, () => {
  let workDir: string
  let ctrd: ContainerdInstance
  let node: SpegelNode
  let single: BuiltImage
  let multi: BuiltImage
  /** A 2048-byte layer blob  for the conformance Range vectors. */
  let blob2048: { digest: string, size: number }

  const url = (p: string): string => `${node.registryUrl}${p}`

  before(async () => {
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-api-'))
    single = await buildImage(path.join(workDir, 'single'), 'example.test/team/app:1.0', [2048, 3 * 1024 * 1024 + 17])
    multi = await buildImage(path.join(workDir, 'multi'), 'example.test/team/multi:2.0', [2000], { multiarch: true })
    const layer = single.platforms[0]?.layers[0]
    assert.ok(layer)
    assert.equal(layer.size, 2048)
    blob2048 = layer
    ctrd = await startContainerd()
    await ctrd.importImage(path.join(workDir, 'single', 'image.tar'))
    // amd64 only: the index and arm64 manifest are listed but the arm64 content is missing.
    await ctrd.importImage(path.join(workDir, 'multi', 'image.tar'))
    node = await startSpegel({ containerdSock: ctrd.socketPath, contentPath: ctrd.contentPath })
    await node.waitReady()
  })

  after(async () => {
    await node?.stop()
    await ctrd?.dispose()
    await fs.rm(workDir, { recursive: true, force: true })
  })

  it('answers the API version check', async () => {
    const res = await httpRequest(url('/v2/'), { method: 'GET' })
    assert.equal(res.status, 200)
  })

  it('serves manifests by tag and by digest, GET and HEAD, with exact headers', async () => {
    for (const ref of ['1.0', single.top.digest]) {
      const get = await httpRequest(url(`/v2/team/app/manifests/${ref}?ns=example.test`), { method: 'GET', headers: { accept: MANIFEST_TYPE } })
      assert.equal(get.status, 200)
      assert.equal(get.headers['content-type'], MANIFEST_TYPE)
      assert.equal(get.headers['docker-content-digest'], single.top.digest)
      assert.equal(Number(get.headers['content-length']), single.top.size)
      assert.equal(get.headers['oci-namespace'], 'example.test')
      assert.equal(digestOf(get.body), single.top.digest)
      const head = await httpRequest(url(`/v2/team/app/manifests/${ref}?ns=example.test`), { method: 'HEAD' })
      assert.equal(head.status, 200)
      assert.equal(head.body.length, 0)
      for (const h of ['content-type', 'content-length', 'docker-content-digest']) assert.equal(head.headers[h], get.headers[h], h)
    }
  })

  it('serves an index whose other platform is missing, and 404s the missing platform', async () => {
    const index = await httpRequest(url(`/v2/team/multi/manifests/2.0?ns=example.test`), { method: 'GET' })
    assert.equal(index.status, 200)
    assert.equal(index.headers['content-type'], INDEX_TYPE)
    assert.equal(digestOf(index.body), multi.top.digest)
    const arm = multi.platforms.find((p) => p.architecture === 'arm64')
    const amd = multi.platforms.find((p) => p.architecture === 'amd64')
    assert.ok(arm && amd)
    assert.equal((await httpRequest(url(`/v2/team/multi/manifests/${amd.manifest.digest}`), { method: 'HEAD' })).status, 200)
    const missing = await httpRequest(url(`/v2/team/multi/manifests/${arm.manifest.digest}`), { method: 'GET' })
    assert.equal(missing.status, 404)
    assert.equal(JSON.parse(missing.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN')
  })

  it('serves blobs with the digest the bytes hash to, large ones streamed', async () => {
    const platform = single.platforms[0]
    assert.ok(platform)
    for (const b of [platform.config, ...platform.layers]) {
      const head = await httpRequest(url(`/v2/team/app/blobs/${b.digest}`), { method: 'HEAD' })
      assert.equal(head.status, 200)
      assert.equal(Number(head.headers['content-length']), b.size)
      assert.equal(head.headers['docker-content-digest'], b.digest)
      assert.equal(head.headers['accept-ranges'], 'bytes')
      const get = await httpRequest(url(`/v2/team/app/blobs/${b.digest}`), { method: 'GET' })
      assert.equal(get.status, 200)
      assert.equal(get.body.length, b.size)
      assert.equal(digestOf(get.body), b.digest)
    }
  })

  it('passes every conformance Range vector on a 2048-byte blob', async () => {
    const full = (await httpRequest(url(`/v2/team/app/blobs/${blob2048.digest}`), { method: 'GET' })).body
    const vectors: Array<[string, number, string | undefined]> = [
      ['bytes=500-1499', 206, 'bytes 500-1499/2048'],
      ['bytes=500-', 206, 'bytes 500-2047/2048'],
      ['bytes=-500', 206, 'bytes 1548-2047/2048'],
      ['bytes=2000-5000', 206, 'bytes 2000-2047/2048'],
      ['bytes=0-0', 206, 'bytes 0-0/2048'],
      ['bytes=500-0', 416, undefined],
      ['bytes=5000-10000', 416, undefined],
      ['bytes=2048-', 416, undefined]
    ]
    for (const [range, status, contentRange] of vectors) {
      const res = await httpRequest(url(`/v2/team/app/blobs/${blob2048.digest}`), { method: 'GET', headers: { range } })
      assert.equal(res.status, status, range)
      if (contentRange !== undefined) {
        assert.equal(res.headers['content-range'], contentRange, range)
        const [, s, e] = /bytes (\d+)-(\d+)/.exec(contentRange) ?? []
        assert.deepEqual(res.body, full.subarray(Number(s), Number(e) + 1), range)
        assert.equal(Number(res.headers['content-length']), Number(e) - Number(s) + 1)
      } else {
        assert.equal(JSON.parse(res.body.toString()).errors[0].code, 'UNSUPPORTED')
        assert.equal(res.headers['content-range'], 'bytes */2048')
      }
    }
  })

  it('answers missing and malformed requests with OCI errors and serves nothing outside the store', async () => {
    const cases: Array<[string, string, number, string]> = [
      ['GET', '/v2/team/app/manifests/9.9?ns=example.test', 404, 'MANIFEST_UNKNOWN'],
      ['GET', '/v2/team/nothing/manifests/1.0?ns=example.test', 404, 'MANIFEST_UNKNOWN'],
      ['GET', `/v2/team/app/blobs/sha256:${'0'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
      ['GET', '/v2/team/app/manifests/sha256:baddigeststring', 400, 'DIGEST_INVALID'],
      ['GET', `/v2/team/app/blobs/md5:${'0'.repeat(32)}`, 400, 'DIGEST_INVALID'],
      ['GET', `/v2/Team/App/blobs/${blob2048.digest}`, 400, 'NAME_INVALID'],
      ['GET', `/v2/team/app/blobs/${single.top.digest}`, 404, 'BLOB_UNKNOWN'],
      ['GET', `/v2/team/app/manifests/${blob2048.digest}`, 404, 'MANIFEST_UNKNOWN'],
      ['DELETE', `/v2/team/app/manifests/${single.top.digest}`, 405, 'UNSUPPORTED'],
      ['PUT', '/v2/team/app/manifests/1.0', 405, 'UNSUPPORTED'],
      ['POST', '/v2/team/app/blobs/uploads/', 405, 'UNSUPPORTED']
    ]
    for (const [method, p, status, code] of cases) {
      const res = await httpRequest(url(p), { method })
      assert.equal(res.status, status, `${method} ${p}`)
      assert.equal(res.headers['content-type'], 'application/json', `${method} ${p}`)
      assert.equal(JSON.parse(res.body.toString()).errors[0].code, code, `${method} ${p}`)
    }
  })

  it('exports Spegel\'s advertised gauges and containerd health on /metrics', async () => {
    const res = await httpRequest(`${node.metricsUrl}/metrics`, { method: 'GET' })
    assert.equal(res.status, 200)
    const text = res.body.toString()
    assert.match(text, /^spegel_advertised_image_tags\{registry="example.test"\} 2$/m)
    assert.match(text, /^spegel_advertised_image_digests\{registry="example.test"\} 2$/m)
    // single: manifest, config, 2 layers; multi: index, amd64 manifest, config, layer.
    assert.match(text, /^spegel_advertised_content_digests\{registry="example.test"\} 8$/m)
    assert.match(text, /^spegel_containerd_up 1$/m)
    assert.match(text, /^http_requests_inflight\{handler="\/v2\/\*"\} 0$/m)
  })

  it('is copied by skopeo with the digests intact', async () => {
    const out = path.join(workDir, 'skopeo-out')
    const host = node.registryUrl.replace('http://', '')
    const res = await run('skopeo', ['copy', '--src-tls-verify=false', '--preserve-digests', `docker://${host}/example.test/team/app:1.0`, `oci:${out}:1.0`], { timeoutMs: 120_000 })
    assert.equal(res.code, 0, res.stderr)
    for (const b of [single.platforms[0]!.config, ...single.platforms[0]!.layers]) {
      const bytes = await fs.readFile(path.join(out, 'blobs', 'sha256', b.digest.slice('sha256:'.length)))
      assert.equal(digestOf(bytes), b.digest)
    }
  })

  it('is the mirror a second containerd pulls through while upstream is unreachable', async () => {
    const puller = await startContainerd()
    try {
      const hostsDir = path.join(puller.configPath, 'example.test')
      await fs.mkdir(hostsDir, { recursive: true })
      // Port 9 (discard) on loopback refuses connections: upstream is down.
      await fs.writeFile(path.join(hostsDir, 'hosts.toml'), [
        'server = "http://127.0.0.1:9"',
        '',
        `[host."${node.registryUrl}"]`,
        '  capabilities = ["pull", "resolve"]',
        ''
      ].join('\n'))
      await puller.ctr(['images', 'pull', '--hosts-dir', puller.configPath, 'example.test/team/app:1.0'])
      const { stdout } = await puller.ctr(['content', 'ls', '-q'])
      for (const b of [single.top, single.platforms[0]!.config, ...single.platforms[0]!.layers]) assert.ok(stdout.includes(b.digest), `puller has ${b.digest}`)
      const images = await puller.ctr(['images', 'ls', '-q'])
      assert.ok(images.stdout.includes('example.test/team/app:1.0'))
    } finally {
      await puller.dispose()
    }
  })
})
