import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { createLogger } from '../observability/logger.js'
import { NotFoundError } from '../store/errors.js'
import type { ContainerdClient } from './client.js'
import { ContentReader } from './content-reader.js'

const log = createLogger({ level: 'error', destination: new Writable({ write (_c, _e, done) { done() } }) })
const skip = existsSync('/proc/self/fd') ? false : 'counts open descriptors in /proc/self/fd (Linux)'

async function openDescriptors (): Promise<number> {
  return (await readdir('/proc/self/fd')).length
}

describe('ContentReader.openFile', { skip }, () => {
  let root: string
  let reader: ContentReader
  const blob = Buffer.alloc(3 * 1024 * 1024, 7)
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
  // A digest whose path is a directory: open() works, reads fail (EISDIR), as a broken disk might.
  const broken = `sha256:${'d'.repeat(64)}`

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'content-reader-'))
    await mkdir(path.join(root, 'blobs', 'sha256', 'd'.repeat(64)), { recursive: true })
    await writeFile(path.join(root, 'blobs', 'sha256', digest.slice(7)), blob)
    reader = new ContentReader({ log }, { contentPath: root })
    // A configured path needs no containerd to be chosen.
    await reader.choose(undefined as unknown as ContainerdClient)
    assert.equal(reader.directory(), root)
  })
  after(async () => { await rm(root, { recursive: true, force: true }) })

  it('serves whole blobs and ranges, small and large', async () => {
    const whole: Buffer[] = []
    for await (const chunk of await reader.openFile(digest, undefined)) whole.push(chunk as Buffer)
    assert.ok(Buffer.concat(whole).equals(blob))
    const part: Buffer[] = []
    for await (const chunk of await reader.openFile(digest, { start: 10, end: 19 })) part.push(chunk as Buffer)
    assert.ok(Buffer.concat(part).equals(blob.subarray(10, 20)))
  })

  it('rejects missing content with NotFoundError', async () => {
    await assert.rejects(reader.openFile(`sha256:${'0'.repeat(64)}`, undefined), NotFoundError)
  })

  it('never leaves a file handle open when reading fails, on either path', async () => {
    const before = await openDescriptors()
    for (let i = 0; i < 20; i++) {
      // Small read: fails inside openFile.
      await assert.rejects(reader.openFile(broken, { start: 0, end: 99 }), { code: 'EISDIR' })
      // Large range: a stream that fails on its first read and must close its handle.
      const stream = await reader.openFile(broken, { start: 0, end: 10 * 1024 * 1024 })
      await assert.rejects(async () => { for await (const _ of stream) { /* nothing arrives */ } }, { code: 'EISDIR' })
      // A request that goes away before reading: its signal destroys the stream.
      const request = new AbortController()
      const abandoned = await reader.openFile(digest, undefined, request.signal)
      abandoned.on('error', () => {})
      const closed = new Promise((resolve) => { abandoned.once('close', resolve) })
      request.abort()
      await closed
    }
    assert.equal(await openDescriptors(), before)
  })
})
