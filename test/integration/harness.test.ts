// Proves the shared test helpers against the real thing: a private containerd 1.6, images built
// by buildImage and imported with ctr, crash and restart, cleanup. Other integration tests rely on
// these behaviours, so they are asserted here once.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { containerdSkipReason, startContainerd } from '../helpers/containerd.js'
import type { ContainerdInstance } from '../helpers/containerd.js'
import { buildImage, MIN_LAYER_BYTES, OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST, writeTestBlob } from '../helpers/image.js'
import type { BuiltImage } from '../helpers/image.js'
import { digestOf, freePort, httpRequest, run, sha256 } from '../helpers/net.js'
import { waitFor } from '../helpers/wait.js'

const skip = containerdSkipReason() ?? (os.arch() === 'x64' ? false : 'imports assume an amd64 host (ctr imports the host platform)')

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function contentDigests (c: ContainerdInstance): Promise<Set<string>> {
  const { stdout } = await c.ctr(['content', 'ls', '-q'])
  return new Set(stdout.split('\n').map(s => s.trim()).filter(s => s !== ''))
}

async function imageNames (c: ContainerdInstance): Promise<Set<string>> {
  const { stdout } = await c.ctr(['images', 'ls', '-q'])
  return new Set(stdout.split('\n').map(s => s.trim()).filter(s => s !== ''))
}

describe('wait and net helpers', () => {
  it('waitFor returns the first truthy probe value and retries after errors', async () => {
    let calls = 0
    const value = await waitFor(() => {
      calls++
      if (calls === 1) throw new Error('not yet')
      return calls < 3 ? false : `ok after ${calls}`
    }, { timeoutMs: 5_000, intervalMs: 1, what: 'the third call' })
    assert.equal(value, 'ok after 3')
  })

  it('waitFor times out naming what it waited for and the last probe error', async () => {
    await assert.rejects(
      waitFor(() => { throw new Error('socket ENOENT') }, { timeoutMs: 30, intervalMs: 5, what: 'the unicorn' }),
      (err: Error) => /the unicorn/.test(err.message) && /socket ENOENT/.test(err.message)
    )
  })

  it('run resolves with the exit code instead of throwing, and rejects when the command does not exist', async () => {
    const res = await run('sh', ['-c', 'echo out; echo err >&2; exit 3'])
    assert.deepEqual(res, { code: 3, signal: null, stdout: 'out\n', stderr: 'err\n' })
    await assert.rejects(run('/nonexistent/binary', []), /ENOENT/)
  })

  it('httpRequest returns status, headers and body and does not follow redirects', async () => {
    const port = await freePort()
    const srv = createServer((req, res) => {
      if (req.url === '/redirect') {
        res.writeHead(307, { location: '/body' }).end()
        return
      }
      res.writeHead(200, { 'x-method': req.method ?? '', 'content-type': 'text/plain' }).end(req.method === 'HEAD' ? undefined : 'hello')
    })
    srv.listen(port, '127.0.0.1')
    await once(srv, 'listening')
    try {
      const got = await httpRequest(`http://127.0.0.1:${port}/body`)
      assert.equal(got.status, 200)
      assert.equal(got.body.toString(), 'hello')
      assert.equal(sha256(got.body), sha256('hello'))
      assert.equal(digestOf('hello'), `sha256:${sha256('hello')}`)
      const head = await httpRequest(`http://127.0.0.1:${port}/body`, { method: 'HEAD' })
      assert.equal(head.headers['x-method'], 'HEAD')
      assert.equal(head.body.length, 0)
      const redirect = await httpRequest(`http://127.0.0.1:${port}/redirect`)
      assert.equal(redirect.status, 307)
      assert.equal(redirect.headers.location, '/body')
    } finally {
      srv.close()
    }
  })
})

describe('buildImage', () => {
  let work: string
  before(async () => { work = await mkdtemp(path.join(os.tmpdir(), 'spegel-img-')) })
  after(async () => { await rm(work, { recursive: true, force: true }) })

  it('writes layers of the exact requested sizes whose bytes hash to their digests', async () => {
    const sizes = [2048, MIN_LAYER_BYTES, 1024 * 1024 + 7]
    const img = await buildImage(path.join(work, 'a'), 'example.test/library/sizes:v1', sizes)
    const amd64 = img.platforms[0]
    assert.ok(amd64 !== undefined)
    assert.equal(img.platforms.length, 1)
    assert.equal(img.index, undefined)
    assert.deepEqual(img.top, amd64.manifest)
    assert.equal(img.top.mediaType, OCI_MANIFEST)
    assert.deepEqual(amd64.layers.map(l => l.size), sizes)
    for (const blob of [amd64.manifest, amd64.config, ...amd64.layers]) {
      const bytes = await readFile(img.blobPath(blob.digest))
      assert.equal(bytes.length, blob.size)
      assert.equal(digestOf(bytes), blob.digest)
    }
    for (const layer of amd64.layers) {
      assert.equal(layer.mediaType, OCI_LAYER_TAR)
      // Still a tar that tar can list, despite the random trailer after end-of-archive.
      const listed = await run('tar', ['-tf', img.blobPath(layer.digest)])
      assert.equal(listed.code, 0, listed.stderr)
      assert.match(listed.stdout, /^data-amd64-\d\.bin\n$/)
    }
    const last = await readFile(img.blobPath(amd64.layers[0]!.digest))
    assert.notDeepEqual(last.subarray(-64), Buffer.alloc(64), 'the last bytes of a 2048-byte layer are random')
    const manifest = JSON.parse(await readFile(img.blobPath(amd64.manifest.digest), 'utf8')) as { layers: unknown[], config: unknown }
    assert.deepEqual(manifest.layers, amd64.layers)
    assert.deepEqual(manifest.config, amd64.config)
    const index = JSON.parse(await readFile(path.join(img.layoutDir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string, annotations: Record<string, string> }> }
    assert.equal(index.manifests[0]?.digest, img.top.digest)
    assert.equal(index.manifests[0]?.annotations['io.containerd.image.name'], img.ref)
    assert.equal(index.manifests[0]?.annotations['org.opencontainers.image.ref.name'], 'v1')
    assert.ok(img.archivePath !== undefined && (await stat(img.archivePath)).size > 1024 * 1024)
  })

  it('is reproducible with a seed and unique without one', async () => {
    const a = await buildImage(path.join(work, 's1'), 'example.test/r:1', [4096], { seed: 'fixed', archive: false })
    const b = await buildImage(path.join(work, 's2'), 'example.test/r:1', [4096], { seed: 'fixed', archive: false })
    const c = await buildImage(path.join(work, 's3'), 'example.test/r:1', [4096], { archive: false })
    assert.equal(a.top.digest, b.top.digest)
    assert.notEqual(a.top.digest, c.top.digest)
    assert.equal(a.archivePath, undefined)
    assert.equal(existsSync(path.join(work, 's1', 'image.tar')), false)
  })

  it('rejects layer sizes that cannot hold a tar', async () => {
    await assert.rejects(buildImage(path.join(work, 'bad'), 'example.test/r:1', [100]), /layer size 100 invalid/)
  })

  it('writeTestBlob writes exact sizes, reproducibly with a seed', async () => {
    const a = await writeTestBlob(path.join(work, 'blob-a'), 3000, { seed: 'x' })
    const b = await writeTestBlob(path.join(work, 'blob-b'), 3000, { seed: 'x' })
    const bytes = await readFile(a.path)
    assert.equal(bytes.length, 3000)
    assert.equal(digestOf(bytes), a.digest)
    assert.equal(a.digest, b.digest)
  })
})

describe('private containerd', { skip }, () => {
  let ctrd: ContainerdInstance
  let work: string
  let single: BuiltImage
  let multiAll: BuiltImage
  let multiHost: BuiltImage
  const startedPids: number[] = []

  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'spegel-harness-'))
    ctrd = await startContainerd({ name: 'harness' })
    if (ctrd.pid !== undefined) startedPids.push(ctrd.pid)
    single = await buildImage(path.join(work, 'single'), 'docker.io/library/harness-single:1.0', [2048, 64 * 1024, 1024 * 1024])
    multiAll = await buildImage(path.join(work, 'multi-all'), 'example.test/library/harness-multi:all', [8192], { multiarch: true })
    multiHost = await buildImage(path.join(work, 'multi-host'), 'example.test/library/harness-multi:host', [8192], { multiarch: true })
  })

  after(async () => {
    await ctrd?.dispose()
    await rm(work, { recursive: true, force: true })
    for (const pid of startedPids) assert.equal(isAlive(pid), false, `containerd ${pid} left running`)
  })

  it('keeps everything under one short temp dir with a version 2 config', async () => {
    assert.ok(ctrd.isRunning())
    assert.equal(typeof ctrd.pid, 'number')
    assert.match(path.basename(ctrd.dir), /^spegel-ctrd-harness-/)
    for (const p of [ctrd.socketPath, ctrd.contentPath, ctrd.configPath, ctrd.configFile]) {
      assert.ok(p.startsWith(ctrd.dir + path.sep), `${p} under ${ctrd.dir}`)
    }
    assert.ok(Buffer.byteLength(`${ctrd.socketPath}.ttrpc`) <= 107)
    assert.equal(ctrd.namespace, 'k8s.io')
    const toml = await readFile(ctrd.configFile, 'utf8')
    assert.match(toml, /^version = 2$/m)
    assert.match(toml, /stream_server_port = "0"/)
    assert.match(toml, /disable_tcp_service = true/)
    assert.match(toml, /discard_unpacked_layers = false/)
    assert.ok(toml.includes(`config_path = ${JSON.stringify(ctrd.configPath)}`))
    const { stdout } = await ctrd.ctr(['version'])
    assert.match(stdout, /Server:[\s\S]*1\.6\./)
  })

  it('ctr rejects with the stderr of a failed command', async () => {
    await assert.rejects(ctrd.ctr(['content', 'get', `sha256:${'0'.repeat(64)}`]), /not found/)
  })

  it('imports a single-platform image with every blob in the content store', async () => {
    await ctrd.importImage(single.archivePath!)
    assert.ok((await imageNames(ctrd)).has(single.ref))
    const content = await contentDigests(ctrd)
    for (const d of single.allDigests()) assert.ok(content.has(d), `${d} in content store`)
    // The blob files are where contentPath says, byte for byte what buildImage wrote.
    for (const layer of single.platforms[0]!.layers) {
      const stored = await readFile(path.join(ctrd.contentPath, 'blobs', 'sha256', layer.digest.slice('sha256:'.length)))
      assert.equal(digestOf(stored), layer.digest)
      assert.equal(stored.length, layer.size)
    }
  })

  it('imports all platforms of a multiarch image with --all-platforms', async () => {
    await ctrd.importImage(multiAll.archivePath!, { allPlatforms: true })
    const { stdout } = await ctrd.ctr(['images', 'ls'])
    const row = stdout.split('\n').find(l => l.startsWith(multiAll.ref + ' '))
    assert.ok(row !== undefined, `${multiAll.ref} listed`)
    assert.ok(row.includes(OCI_INDEX) && row.includes(multiAll.index!.digest))
    const content = await contentDigests(ctrd)
    assert.equal(multiAll.platforms.length, 2)
    for (const d of multiAll.allDigests()) assert.ok(content.has(d), `${d} in content store`)
  })

  it('imports only the host platform without --all-platforms: arm64 blobs are missing', async () => {
    await ctrd.importImage(multiHost.archivePath!)
    assert.ok((await imageNames(ctrd)).has(multiHost.ref))
    const content = await contentDigests(ctrd)
    const [amd64, arm64] = multiHost.platforms
    assert.equal(arm64?.architecture, 'arm64')
    assert.ok(content.has(multiHost.index!.digest), 'index stored')
    for (const d of [amd64!.manifest.digest, amd64!.config.digest, ...amd64!.layers.map(l => l.digest)]) {
      assert.ok(content.has(d), `amd64 ${d} stored`)
    }
    for (const d of [arm64.manifest.digest, arm64.config.digest, ...arm64.layers.map(l => l.digest)]) {
      assert.equal(content.has(d), false, `arm64 ${d} must be missing`)
    }
  })

  it('collectGarbage removes the other-platform blobs ctr import leaves to an asynchronous GC', async () => {
    const img = await buildImage(path.join(work, 'multi-nogc'), 'example.test/library/harness-multi:nogc', [4096], { multiarch: true })
    await ctrd.importImage(img.archivePath!, { gc: false })
    await ctrd.collectGarbage()
    const content = await contentDigests(ctrd)
    const arm64 = img.platforms[1]!
    assert.ok(content.has(img.platforms[0]!.layers[0]!.digest))
    for (const d of [arm64.manifest.digest, arm64.config.digest, arm64.layers[0]!.digest]) {
      assert.equal(content.has(d), false, `arm64 ${d} collected`)
    }
  })

  it('survives kill -9: the socket goes stale, start() brings it back with its content', async () => {
    const oldPid = ctrd.pid
    assert.ok(oldPid !== undefined)
    await ctrd.kill()
    assert.equal(ctrd.isRunning(), false)
    assert.equal(ctrd.pid, undefined)
    assert.equal(isAlive(oldPid), false)
    assert.ok(existsSync(ctrd.socketPath), 'SIGKILL leaves the socket file behind')
    await assert.rejects(ctrd.ctr(['version'], { timeoutMs: 10_000 }), /connection refused|connect/i)

    await ctrd.start()
    assert.ok(ctrd.isRunning())
    assert.notEqual(ctrd.pid, oldPid)
    startedPids.push(ctrd.pid!)
    assert.ok((await imageNames(ctrd)).has(single.ref))
    assert.ok((await contentDigests(ctrd)).has(single.platforms[0]!.layers[0]!.digest))
  })

  it('stops cleanly on SIGTERM and starts again', async () => {
    await ctrd.stop()
    assert.equal(ctrd.isRunning(), false)
    await ctrd.start()
    startedPids.push(ctrd.pid!)
    assert.ok((await imageNames(ctrd)).has(multiAll.ref))
  })

  it('removeImage deletes the image; content goes once the CRI sha256 alias is removed too', async () => {
    const config = single.platforms[0]!.config.digest
    // The CRI plugin gives every image in k8s.io a second name, its config digest.
    assert.ok((await imageNames(ctrd)).has(config))
    await ctrd.removeImage(single.ref)
    assert.equal((await imageNames(ctrd)).has(single.ref), false)
    assert.ok((await contentDigests(ctrd)).has(single.top.digest), 'alias still holds the content')
    await ctrd.removeImage(config)
    const content = await contentDigests(ctrd)
    for (const d of single.allDigests()) assert.equal(content.has(d), false, `${d} collected`)
  })
})

describe('containerd lifecycle', { skip }, () => {
  it('fails start() fast with the log tail when containerd cannot run, and dispose removes everything', async () => {
    const c = await startContainerd({ name: 'lifecycle', discardUnpackedLayers: true })
    const firstPid = c.pid!
    try {
      assert.match(await readFile(c.configFile, 'utf8'), /discard_unpacked_layers = true/)
      await c.stop()
      const good = await readFile(c.configFile, 'utf8')
      await writeFile(c.configFile, 'version = 2\nthis is not toml\n')
      await assert.rejects(c.start(), (err: Error) =>
        /did not become ready/.test(err.message) && /containerd exited/.test(err.message) && err.message.includes(c.logPath))
      assert.equal(c.isRunning(), false)
      await writeFile(c.configFile, good)
      await c.start()
      assert.ok(c.isRunning())
    } finally {
      const pid = c.pid
      await c.dispose()
      assert.equal(existsSync(c.dir), false, 'temp dir removed')
      assert.equal(isAlive(firstPid), false)
      if (pid !== undefined) assert.equal(isAlive(pid), false)
    }
    await c.dispose()
    await assert.rejects(c.start(), /disposed/)
  })

  it('runs two instances side by side without clashing', async () => {
    const [a, b] = await Promise.all([startContainerd({ name: 'a' }), startContainerd({ name: 'b' })])
    try {
      assert.notEqual(a.dir, b.dir)
      await a.ctr(['version'])
      await b.ctr(['version'])
    } finally {
      await Promise.all([a.dispose(), b.dispose()])
    }
  })
})
