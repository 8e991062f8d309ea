import type { FileHandle } from 'node:fs/promises'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { Readable, addAbortSignal } from 'node:stream'
import type { Logger } from '../observability/logger.js'
import { parseDigest } from '../oci/index.js'
import { NotFoundError } from '../store/errors.js'
import type { ByteRange } from '../store/types.js'
import { FileRangeStream } from '../store/file-range-stream.js'
import type { CallOptions, ContainerdClient } from './client.js'
import { contentPathReadable } from './diagnose.js'
import { CONTENT_ROOT_RECHECK_MS, SMALL_READ_LIMIT_BYTES } from './constants.js'

const SIZE_CACHE_TTL_MS = 2_000
const SIZE_CACHE_ENTRIES = 4_096

export interface ContentReaderComponents {
  log: Logger
}

export interface ContentReaderInit {
  /** Content store root for direct reads; empty means ask containerd (introspection). */
  contentPath: string
}

/**
 * Content bytes: straight from containerd's content directory when it is readable, else
 * through containerd's gRPC Read (about 10x slower). The directory, once chosen, stays in use
 * while containerd is away: its blobs stay on disk.
 */
export class ContentReader {
  readonly #log: Logger
  readonly #configuredPath: string
  #root: string | undefined
  /** The content directory we would read if it were readable; re-checked while it is not. */
  #candidate = ''
  #lastCheckMs = 0
  /** Recent stat results by file path, oldest first (Map order); bounded by SIZE_CACHE_ENTRIES. */
  readonly #sizes = new Map<string, { sizeBytes: number, atMs: number }>()

  constructor (components: ContentReaderComponents, init: ContentReaderInit) {
    this.#log = components.log
    this.#configuredPath = init.contentPath
  }

  /** Direct-read directory in use, or undefined when bytes come through gRPC. */
  directory (): string | undefined {
    return this.#root
  }

  /**
   * The content directory containerd uses (configured, or discovered at the last connect), read or
   * not: a fresh containerd has no `blobs/` yet, but its downloads already land in `ingest/`.
   */
  candidate (): string | undefined {
    return this.#candidate === '' ? undefined : this.#candidate
  }

  /** Picks the directory at the start of a session (discovering it from containerd when not configured). */
  async choose (client: ContainerdClient, options: CallOptions = {}): Promise<void> {
    let root = this.#configuredPath
    if (root === '') {
      try {
        root = (await client.pluginExports('io.containerd.content.v1', 'content', options))?.root ?? ''
      } catch (err) {
        options.signal?.throwIfAborted()
        this.#log.warn({ err }, 'could not discover the content path through introspection')
      }
    }
    this.#candidate = root
    this.#lastCheckMs = Date.now()
    const check = await contentPathReadable(root)
    if (check.readable) {
      if (root !== this.#root) this.#log.info({ path: root }, 'reading content directly from disk')
      this.#root = root
      return
    }
    this.#root = undefined
    this.#log.warn({ event: 'content_path_unreadable', path: root, reason: check.reason, fix: 'mount containerd\'s content directory (e.g. /var/lib/containerd/io.containerd.content.v1.content) read-only and set --containerd-content-path; serving through gRPC is about 10x slower' },
      'falling back to reading content from the containerd socket')
  }

  /**
   * A fresh containerd has no `blobs/` directory until the first content lands, so a node
   * started next to it would read through gRPC forever; look again now and then.
   */
  async recheck (): Promise<void> {
    if (this.#root !== undefined || this.#candidate === '' || Date.now() - this.#lastCheckMs < CONTENT_ROOT_RECHECK_MS) return
    this.#lastCheckMs = Date.now()
    if ((await contentPathReadable(this.#candidate)).readable && this.#root === undefined) {
      this.#root = this.#candidate
      this.#log.info({ path: this.#root }, 'content directory became readable; reading content directly from disk')
    }
  }

  blobFile (digest: string): string | undefined {
    if (this.#root === undefined) return undefined
    const { algorithm, hex } = parseDigest(digest)
    return path.join(this.#root, 'blobs', algorithm, hex)
  }

  /**
   * Size of a blob on disk; undefined when there is no directory or no such file. A size seen
   * in the last `SIZE_CACHE_TTL_MS` is answered from memory: content is immutable by digest, and
   * under load a stat waits in libuv's four-thread pool behind every file read in flight (a
   * HEAD measured 0.8 s at 1,000 concurrent downloads). A blob removed meanwhile is caught when
   * it is opened, which answers 404 as if it had never been here.
   */
  async fileSize (digest: string): Promise<number | undefined> {
    const file = this.blobFile(digest)
    if (file === undefined) return undefined
    const nowMs = performance.now()
    const cached = this.#sizes.get(file)
    if (cached !== undefined && nowMs - cached.atMs < SIZE_CACHE_TTL_MS) return cached.sizeBytes
    try {
      const sizeBytes = (await fsp.stat(file)).size
      this.#sizes.delete(file)
      if (this.#sizes.size >= SIZE_CACHE_ENTRIES) this.#sizes.delete(this.#sizes.keys().next().value as string)
      this.#sizes.set(file, { sizeBytes, atMs: nowMs })
      return sizeBytes
    } catch {
      this.#sizes.delete(file)
      // Gone from disk (or unreadable): the caller asks containerd, which knows best.
      return undefined
    }
  }

  /**
   * Bytes of `range` (or all) of a blob on disk. Small ranges are read at once; larger ones
   * stream from the open file, which the stream closes. The handle never outlives a failure.
   */
  async openFile (digest: string, range: ByteRange | undefined, signal?: AbortSignal): Promise<Readable> {
    signal?.throwIfAborted()
    const file = this.blobFile(digest)
    if (file === undefined) throw new Error('no readable content directory')
    let handle: FileHandle
    try {
      handle = await fsp.open(file, 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`content ${digest}`, { cause: err })
      throw err
    }
    let owned: FileHandle | undefined = handle
    try {
      const start = range?.start ?? 0
      const end = range?.end ?? (await handle.stat()).size - 1
      const length = end - start + 1
      if (length <= SMALL_READ_LIMIT_BYTES) {
        const buffer = Buffer.allocUnsafe(Math.max(0, length))
        let read = 0
        while (read < length) {
          const { bytesRead } = await handle.read(buffer, read, length - read, start + read)
          if (bytesRead === 0) break
          read += bytesRead
        }
        return Readable.from([buffer.subarray(0, read)], { objectMode: false })
      }
      const stream = new FileRangeStream(handle, start, end)
      owned = undefined // the stream closes it when destroyed or done
      if (signal !== undefined) addAbortSignal(signal, stream)
      return stream
    } finally {
      await owned?.close()
    }
  }

  /** Streams a blob through containerd; the call is cancelled when the stream closes or `options.signal` aborts. */
  openThroughGrpc (client: ContainerdClient, digest: string, range: ByteRange | undefined, options: CallOptions = {}): Readable {
    const offset = range?.start ?? 0
    const sizeBytes = range === undefined ? 0 : range.end - range.start + 1
    const call = client.read(digest, offset, sizeBytes, options)
    // Errors reach the reader through the iterator below; this listener only keeps a call
    // that nobody iterates (a reader that gave up) from crashing the process when it fails.
    call.on('error', () => {})
    async function * chunks (): AsyncGenerator<Buffer> {
      for await (const message of call) yield (message as { data: Buffer }).data
    }
    const stream = Readable.from(chunks(), { objectMode: false })
    stream.once('close', () => { call.cancel() })
    return stream
  }

  /** The whole of a small blob (manifests, configs), from disk or through containerd. */
  async readSmall (client: ContainerdClient | undefined, digest: string, sizeBytes: number, options: CallOptions = {}): Promise<Buffer> {
    const file = this.blobFile(digest)
    if (file !== undefined) return await fsp.readFile(file, options.signal === undefined ? undefined : { signal: options.signal })
    if (client === undefined) throw new Error('containerd is not connected')
    const parts: Buffer[] = []
    const call = client.read(digest, 0, sizeBytes, options)
    for await (const message of call) parts.push((message as { data: Buffer }).data)
    return Buffer.concat(parts)
  }
}
