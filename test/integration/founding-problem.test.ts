// The founding report: "dial unix /run/containerd/containerd.sock: connect: connection refused",
// fixed only by restarting the pod. Each case ends with the same process serving again.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { startContainerd, containerdAvailable, type ContainerdInstance } from '../helpers/containerd.js'
import { buildImage, type BuiltImage } from '../helpers/image.js'
import { httpRequest, digestOf } from '../helpers/net.js'
import { startSpegel, type SpegelNode, type LogLine } from '../helpers/spegel.js'
import { waitFor } from '../helpers/wait.js'

const skip = containerdAvailable() ? false : 'needs root and containerd (scripts/test-all.sh installs it)'
const REF = 'example.test/founding/app:1.0'

async function manifestByTag (node: SpegelNode, image: BuiltImage): Promise<{ status: number, digest: string | undefined, body: Buffer }> {
  const res = await httpRequest(`${node.registryUrl}/v2/founding/app/manifests/1.0?ns=example.test`, { method: 'GET' })
  const header = res.headers['docker-content-digest']
  assert.ok(res.status !== 200 || header === image.top.digest, 'digest header matches the image')
  return { status: res.status, digest: typeof header === 'string' ? header : undefined, body: res.body }
}

async function assertServes (node: SpegelNode, image: BuiltImage): Promise<void> {
  const manifest = await manifestByTag(node, image)
  assert.equal(manifest.status, 200)
  assert.equal(digestOf(manifest.body), image.top.digest)
  const layer = image.platforms[0]?.layers[0]
  assert.ok(layer)
  const blob = await httpRequest(`${node.registryUrl}/v2/founding/app/blobs/${layer.digest}?ns=example.test`, { method: 'GET' })
  assert.equal(blob.status, 200)
  assert.equal(digestOf(blob.body), layer.digest)
}

/** The same cause is logged once, not once per retry. */
function assertNoRepeatedUnavailableLogs (logs: readonly LogLine[]): void {
  const lines = logs.filter((l) => l.event === 'containerd_unavailable')
  assert.ok(lines.length >= 1, 'the outage was logged')
  for (let i = 1; i < lines.length; i++) {
    const a = lines[i - 1]
    const b = lines[i]
    assert.notDeepEqual([a?.errno, a?.path, a?.reason], [b?.errno, b?.path, b?.reason], 'a repeated cause was logged twice in a row')
  }
}

/** SIGTERM, exit 0, and nothing left open that the forced exit had to cut. */
async function stopCleanly (node: SpegelNode): Promise<void> {
  const stderr = node.process.stderr
  const stderrClosed = stderr === null || stderr.closed ? Promise.resolve() : once(stderr, 'close')
  assert.equal(await node.stop(), 0)
  await stderrClosed
  const forced = node.logs.find((l) => l.event === 'exit_forced')
  assert.equal(forced, undefined, `handles kept the stopped node alive: ${JSON.stringify(forced?.handles)}`)
  assert.ok(node.logs.some((l) => l.msg === 'exit gracefully'))
}

describe('founding problem: containerd unreachable never needs a restart', { skip }, () => {
  let workDir: string
  let image: BuiltImage

  before(async () => {
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-found-'))
    image = await buildImage(path.join(workDir, 'img'), REF, [4096, 300_000])
  })
  after(async () => {
    await fs.rm(workDir, { recursive: true, force: true })
  })

  it('starts before containerd exists, then serves once containerd appears', async () => {
    const ctrd = await startContainerd()
    let node: SpegelNode | undefined
    try {
      await ctrd.importImage(path.join(workDir, 'img', 'image.tar'))
      await ctrd.stop()
      await fs.rm(ctrd.socketPath, { force: true })

      node = await startSpegel({ containerdSock: ctrd.socketPath, contentPath: ctrd.contentPath })
      const reason = await node.waitNotReady(/ENOENT/)
      assert.match(reason, /^containerd: connect ENOENT /)
      assert.ok(reason.includes(ctrd.socketPath), reason)
      // Registry requests get a fast OCI 404, so containerd falls back upstream.
      const miss = await httpRequest(`${node.registryUrl}/v2/founding/app/manifests/1.0?ns=example.test`, { method: 'HEAD' })
      assert.equal(miss.status, 404)
      const missBody = await httpRequest(`${node.registryUrl}/v2/founding/app/manifests/1.0?ns=example.test`, { method: 'GET' })
      assert.equal(JSON.parse(missBody.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN')
      const logged = await node.waitForLog((l) => l.event === 'containerd_unavailable', 'containerd_unavailable')
      assert.equal(logged.errno, 'ENOENT')
      assert.equal(typeof logged.fix, 'string')

      await ctrd.start()
      await node.waitReady()
      await assertServes(node, image)
      assert.ok(node.isAlive(), 'same process, no restart')
      assertNoRepeatedUnavailableLogs(node.logs)
    } finally {
      await node?.stop()
      await ctrd.dispose()
    }
  })

  it('survives containerd being SIGKILLed and restarted, and sees images imported afterwards', async () => {
    const ctrd = await startContainerd()
    let node: SpegelNode | undefined
    try {
      await ctrd.importImage(path.join(workDir, 'img', 'image.tar'))
      node = await startSpegel({ containerdSock: ctrd.socketPath, contentPath: ctrd.contentPath })
      await node.waitReady()
      await assertServes(node, image)

      await ctrd.kill()
      const reason = await node.waitNotReady()
      assert.match(reason, /^containerd: /)
      // The blobs stay on disk: the node serves its index a few seconds more (a quick containerd
      // restart costs peers nothing), then withdraws it.
      await node.waitForLog((l) => l.event === 'containerd_index_withdrawn', 'the index withdrawn', 45_000)
      const miss = await httpRequest(`${node.registryUrl}/v2/founding/app/manifests/1.0?ns=example.test`, { method: 'GET' })
      assert.equal(miss.status, 404, 'fast 404 while containerd is down')

      await ctrd.start()
      await node.waitReady()
      await assertServes(node, image)

      // Events were re-subscribed: a new image shows up without a restart.
      const second = await buildImage(path.join(workDir, 'img2'), 'example.test/founding/other:2.0', [2048])
      await ctrd.importImage(path.join(workDir, 'img2', 'image.tar'))
      await waitFor(async () => {
        const res = await httpRequest(`${node!.registryUrl}/v2/founding/other/manifests/2.0?ns=example.test`, { method: 'HEAD' })
        return res.status === 200 && res.headers['docker-content-digest'] === second.top.digest
      }, { timeoutMs: 10_000, what: 'image imported after the restart to be served' })
      assert.ok(node.isAlive(), 'same process, no restart')
      assert.ok(node.logs.some((l) => l.event === 'containerd_connected' && l.reconnected === true), 'reconnect logged')
      await stopCleanly(node)
    } finally {
      await node?.stop()
      await ctrd.dispose()
    }
  })

  it('notices a frozen containerd (SIGSTOP) and recovers when it thaws', async () => {
    const ctrd = await startContainerd()
    let node: SpegelNode | undefined
    try {
      await ctrd.importImage(path.join(workDir, 'img', 'image.tar'))
      node = await startSpegel({ containerdSock: ctrd.socketPath, contentPath: ctrd.contentPath })
      await node.waitReady()
      const pid = ctrd.pid
      assert.ok(pid !== undefined)
      process.kill(pid, 'SIGSTOP')
      try {
        assert.match(await node.waitNotReady(/stopped answering/, 30_000), /^containerd: /)
        await node.waitForLog((l) => l.event === 'containerd_index_withdrawn', 'the index withdrawn', 45_000)
        // Still a fast answer for containerd's pulls, never a hang.
        const miss = await httpRequest(`${node.registryUrl}/v2/founding/app/manifests/1.0?ns=example.test`, { method: 'HEAD', timeoutMs: 5000 })
        assert.equal(miss.status, 404)
      } finally {
        process.kill(pid, 'SIGCONT')
      }
      await node.waitReady(30_000)
      await assertServes(node, image)
      assert.ok(node.isAlive())
    } finally {
      await node?.stop()
      await ctrd.dispose()
    }
  })

  it('explains a socket this user may not open, and connects once permissions are fixed', async () => {
    const ctrd = await startContainerd()
    let node: SpegelNode | undefined
    try {
      await ctrd.importImage(path.join(workDir, 'img', 'image.tar'))
      node = await startSpegel({ containerdSock: ctrd.socketPath, contentPath: ctrd.contentPath, runAsUser: 'nobody' })
      const reason = await node.waitNotReady(/EACCES/)
      assert.match(reason, /^containerd: connect EACCES /)
      const logged = await node.waitForLog((l) => l.event === 'containerd_unavailable', 'permission diagnosis')
      assert.equal(logged.reason, 'permission-denied')
      assert.equal(logged.uid, 65534)
      assert.match(String(logged.msg), /permission denied/)
      assert.match(String(logged.fix), /root|group/)

      // The operator fixes permissions; the running process picks it up by itself.
      for (let dir = path.dirname(ctrd.socketPath); dir !== path.dirname(dir) && dir.startsWith(ctrd.dir); dir = path.dirname(dir)) await fs.chmod(dir, 0o711)
      await fs.chmod(ctrd.socketPath, 0o666)
      await node.waitReady()
      // The content directory stays root-only (0700): bytes come through containerd's API instead.
      await assertServes(node, image)
      assert.ok(node.logs.some((l) => l.event === 'content_path_unreadable'), 'fallback to gRPC reads was logged')
      assert.ok(node.isAlive())
    } finally {
      await node?.stop()
      await ctrd.dispose()
    }
  })

  it('names the candidates for a wrong path, and finds a well-known socket when no path is given', async (t) => {
    const defaultSock = '/run/containerd/containerd.sock'
    const wellKnown = '/run/k0s/containerd.sock'
    if (await fs.stat(defaultSock).then(() => true, () => false)) {
      t.skip(`${defaultSock} exists on this machine; discovery would pick it`)
      return
    }
    if (await fs.lstat(wellKnown).then(() => true, () => false)) {
      t.skip(`${wellKnown} already exists on this machine`)
      return
    }
    const ctrd = await startContainerd()
    const createdDir = !(await fs.stat('/run/k0s').then(() => true, () => false))
    let wrong: SpegelNode | undefined
    let discovering: SpegelNode | undefined
    try {
      await ctrd.importImage(path.join(workDir, 'img', 'image.tar'))
      await fs.mkdir('/run/k0s', { recursive: true })
      await fs.symlink(ctrd.socketPath, wellKnown)

      wrong = await startSpegel({ containerdSock: path.join(workDir, 'no-such.sock'), contentPath: ctrd.contentPath })
      assert.match(await wrong.waitNotReady(/ENOENT/), /^containerd: connect ENOENT /)
      const logged = await wrong.waitForLog((l) => l.event === 'containerd_unavailable', 'wrong path diagnosis')
      assert.equal(logged.reason, 'socket-missing')
      assert.ok(String(logged.fix).includes(wellKnown), `fix names the socket found: ${String(logged.fix)}`)

      discovering = await startSpegel({ containerdSock: defaultSock, passSocketFlag: false, contentPath: ctrd.contentPath })
      await discovering.waitReady()
      const found = await discovering.waitForLog((l) => l.event === 'containerd_socket_discovered', 'socket discovery')
      assert.equal(found.path, wellKnown)
      await assertServes(discovering, image)
    } finally {
      await wrong?.stop()
      await discovering?.stop()
      await fs.rm(wellKnown, { force: true })
      if (createdDir) await fs.rm('/run/k0s', { recursive: true, force: true })
      await ctrd.dispose()
    }
  })
})
