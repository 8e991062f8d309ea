import { open, type FileHandle } from 'node:fs/promises'
import { Readable, addAbortSignal } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import type { BufferPool } from './buffer-pool.js'
import { prematureClose, sendBufferPool, sendChunks, type ByteSink } from './file-range-stream.js'

/** The file stopped growing before the range was delivered: the writer stalled or gave up. */
export class IngestStalledError extends Error {
  readonly code = 'INGEST_STALLED'
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'IngestStalledError'
  }
}

export interface GrowingFileOptions {
  /** First byte to deliver. */
  start: number
  /** Last byte to deliver (inclusive); the file must eventually hold it. */
  end: number
  /** Wait between reads that hit the current end of the file. */
  pollMs?: number
  /** No new byte for this long: the stream fails with IngestStalledError. */
  stallTimeoutMs?: number
  /** Asked at the end of the file: true means the writer is gone, so fail now rather than at the stall timeout. */
  isAbandoned?: () => boolean
  signal?: AbortSignal
  highWaterMark?: number
}

export const GROWING_POLL_MS = 20
export const GROWING_STALL_TIMEOUT_MS = 10_000
export const GROWING_HIGH_WATER_MARK = 64 * 1024

/**
 * Longest a reader that sends with `sendTo` sleeps at the end of the file before it looks at its
 * own stall and abandon checks again, when the file does not grow meanwhile.
 */
const GROWTH_CHECK_MS = 250

interface GrowthWaiter {
  readonly handle: FileHandle
  readonly position: number
  readonly wake: () => void
}

/**
 * Readers of one file waiting at its end, with one `fstat` per poll for all of them.
 *
 * Why: a node that fetched a layer upstream in a pull storm serves it to every other node while
 * it arrives, so ten nodes put nine readers on each file. Each polling on its own (a read that
 * returns nothing, then an fstat, every 20 ms) made hundreds of thread-pool calls a second on
 * the node that also downloads and unpacks. One look per file wakes exactly the readers the
 * file has grown past.
 */
class SharedGrowth {
  readonly #key: string
  readonly #pollMs: number
  readonly #waiters = new Set<GrowthWaiter>()
  #timer: NodeJS.Timeout | undefined
  #isLooking = false

  constructor (key: string, pollMs: number) {
    this.#key = key
    this.#pollMs = pollMs
  }

  /** Resolves once the file holds bytes past `position`, is unlinked, or after `maxMs`. */
  async wait (handle: FileHandle, position: number, maxMs: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { done() }, maxMs)
      const waiter: GrowthWaiter = { handle, position, wake: () => { done() } }
      const done = (): void => {
        clearTimeout(timer)
        this.#waiters.delete(waiter)
        this.#release()
        resolve()
      }
      this.#waiters.add(waiter)
      this.#schedule()
    })
  }

  #schedule (): void {
    if (this.#timer !== undefined || this.#isLooking) return
    this.#timer = setTimeout(() => { void this.#look() }, this.#pollMs)
  }

  async #look (): Promise<void> {
    this.#timer = undefined
    // Through a handle still open: a reader destroyed meanwhile (an abort) closed its own, and
    // stays in the set until its wait times out.
    let first: GrowthWaiter | undefined
    for (const waiter of this.#waiters) {
      if (waiter.handle.fd >= 0) {
        first = waiter
        break
      }
    }
    if (first === undefined) {
      if (this.#waiters.size > 0) this.#schedule()
      return
    }
    this.#isLooking = true
    let size = Number.POSITIVE_INFINITY // on an error, every reader reads and sees it for itself
    try {
      const stats = await first.handle.stat()
      if (stats.nlink > 0) size = stats.size
    } catch {}
    this.#isLooking = false
    for (const waiter of [...this.#waiters]) if (size > waiter.position) waiter.wake()
    if (this.#waiters.size > 0) this.#schedule()
  }

  #release (): void {
    if (this.#waiters.size > 0) return
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    if (sharedGrowth.get(this.#key) === this) sharedGrowth.delete(this.#key)
  }
}

/** Per file (device and inode, the same across containerd's rename on commit). */
const sharedGrowth = new Map<string, SharedGrowth>()

function growthOf (key: string, pollMs: number): SharedGrowth {
  let growth = sharedGrowth.get(key)
  if (growth === undefined) {
    growth = new SharedGrowth(key, pollMs)
    sharedGrowth.set(key, growth)
  }
  return growth
}

/**
 * Bytes `start..end` of a file another process is still appending to (a containerd ingest's
 * `data`). Positional reads on one fd: when containerd commits, it renames the file into the blob
 * store and this fd keeps reading the same inode, so a commit mid-read changes nothing.
 * At the end of the file it waits `pollMs` and reads again; a timer rather than fs.watch because
 * an ingest grows in many small writes and a watch per reader would cost more than a 20 ms poll.
 */
class GrowingFileStream extends Readable {
  readonly #handle: FileHandle
  readonly #end: number
  readonly #pollMs: number
  readonly #stallTimeoutMs: number
  readonly #isAbandoned: (() => boolean) | undefined
  readonly #chunkBytes: number
  #position: number
  #lastProgressMs = Date.now()
  #timer: NodeJS.Timeout | undefined
  /** A buffer that came back empty from a read at the end of the file, kept for the next try. */
  #spare: Buffer | undefined
  #isReading = false
  #isEnded = false
  /** Read as a Readable or sent with sendTo: one or the other, once. */
  #isClaimed = false
  /** `dev:ino`, to share the end-of-file looks with other readers of the file (SharedGrowth). */
  #fileKey: string | undefined

  constructor (handle: FileHandle, options: GrowingFileOptions, fileKey?: string) {
    const highWaterMark = options.highWaterMark ?? GROWING_HIGH_WATER_MARK
    super({ highWaterMark })
    this.#handle = handle
    this.#fileKey = fileKey
    this.#position = options.start
    this.#end = options.end
    this.#pollMs = options.pollMs ?? GROWING_POLL_MS
    this.#stallTimeoutMs = options.stallTimeoutMs ?? GROWING_STALL_TIMEOUT_MS
    this.#isAbandoned = options.isAbandoned
    this.#chunkBytes = highWaterMark
  }

  override _read (): void {
    this.#isClaimed = true
    if (this.#isReading || this.#timer !== undefined) return
    this.#readOnce()
  }

  #readOnce (): void {
    this.#timer = undefined
    if (this.destroyed) return
    const length = Math.min(this.#chunkBytes, this.#end - this.#position + 1)
    if (length <= 0) {
      this.#endIfDone()
      return
    }
    let buffer = this.#spare
    this.#spare = undefined
    if (buffer === undefined || buffer.length < length) buffer = Buffer.allocUnsafe(length)
    this.#isReading = true
    this.#readAt(buffer, length).then((bytesRead) => {
      this.#isReading = false
      if (this.destroyed) return
      if (bytesRead > 0) {
        this.push(buffer.subarray(0, bytesRead))
        this.#endIfDone()
        return
      }
      this.#spare = buffer
      this.#atEndOfFile()
    }, (err: Error) => {
      this.#isReading = false
      this.destroy(err)
    })
  }

  /** One positional read; at the end of the file, also checks the file was not removed meanwhile. */
  async #readAt (buffer: Buffer, length: number): Promise<number> {
    const { bytesRead } = await this.#handle.read(buffer, 0, length, this.#position)
    if (bytesRead > 0) {
      this.#position += bytesRead
      this.#lastProgressMs = Date.now()
      return bytesRead
    }
    const stats = await this.#handle.stat()
    // Unlinked (nlink 0) short of the range: the ingest was removed (aborted pull, containerd's
    // GC). A commit renames the file instead, which keeps its link.
    if (stats.nlink === 0 && stats.size <= this.#position) {
      throw new IngestStalledError(`the file was removed at byte ${this.#position} of ${this.#end + 1}`)
    }
    return 0
  }

  #endIfDone (): void {
    if (this.#position <= this.#end || this.#isEnded || this.destroyed) return
    this.#isEnded = true
    this.push(null)
  }

  #atEndOfFile (): void {
    let waitMs: number
    try {
      waitMs = this.#endOfFileWaitMs()
    } catch (err) {
      this.destroy(err as Error)
      return
    }
    this.#timer = setTimeout(() => { this.#readOnce() }, waitMs)
  }

  /** How long to wait before reading again at the end of the file; throws when waiting is pointless. */
  #endOfFileWaitMs (): number {
    if (this.#isAbandoned?.() === true) {
      throw new IngestStalledError(`the writer abandoned the file at byte ${this.#position} of ${this.#end + 1}`)
    }
    const idleMs = Date.now() - this.#lastProgressMs
    if (idleMs >= this.#stallTimeoutMs) {
      throw new IngestStalledError(`no new byte for ${idleMs} ms at byte ${this.#position} of ${this.#end + 1}`)
    }
    return Math.min(this.#pollMs, this.#stallTimeoutMs - idleMs)
  }

  /**
   * Writes the range to `sink` through the shared send pool (`sendChunks`), as FileRangeStream
   * does for whole blobs. Piping this stream instead allocated a fresh buffer per read: a node
   * serving a layer that was still arriving to five peers spent ~14 CPU s per GiB, against ~1.2 for
   * a whole blob (bench/pull-storm.ts with SPEGEL_TEST_CPU_PROF_DIR), mostly in allocation and GC.
   */
  async sendTo (sink: ByteSink, signal?: AbortSignal, pool: BufferPool = sendBufferPool): Promise<void> {
    if (this.#isClaimed) throw new Error('stream already being read')
    this.#isClaimed = true
    // See FileRangeStream.sendTo: failures reach the caller as the rejection, not as 'error'.
    this.on('error', () => {})
    try {
      await sendChunks(sink, {
        remaining: () => this.#end - this.#position + 1,
        isDestroyed: () => this.destroyed,
        readInto: async (buffer, length) => {
          const bytesRead = await this.#readAt(buffer, length)
          if (bytesRead === 0 && this.destroyed) throw prematureClose()
          return bytesRead
        },
        // At the end of the file, without holding a send buffer (see sendChunks).
        waitForData: async () => {
          const waitMs = this.#endOfFileWaitMs()
          if (this.#fileKey === undefined) await sleep(waitMs)
          else await growthOf(this.#fileKey, this.#pollMs).wait(this.#handle, this.#position, Math.max(waitMs, Math.min(GROWTH_CHECK_MS, this.#stallTimeoutMs - (Date.now() - this.#lastProgressMs))))
          if (this.destroyed) throw prematureClose()
        }
      }, signal, pool)
    } finally {
      this.destroy()
    }
  }

  override _destroy (err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#spare = undefined
    this.#handle.close().then(() => { callback(err) }, () => { callback(err) })
  }
}

/** A growing file's range: a Readable, or sent to a response with `sendTo` (the fast path). */
export type GrowingFile = Readable & { sendTo(sink: ByteSink, signal?: AbortSignal, pool?: BufferPool): Promise<void> }

/**
 * Opens `path` (rejecting with the fs error, e.g. ENOENT, when it cannot) and returns a Readable
 * of exactly `end - start + 1` bytes, waiting for bytes that are not written yet. Memory: the
 * Readable's buffer (highWaterMark) plus one chunk being read.
 */
export async function openGrowingFile (path: string, options: GrowingFileOptions): Promise<GrowingFile> {
  const { start, end } = options
  if (!Number.isSafeInteger(start) || start < 0) throw new RangeError(`start ${start} invalid`)
  if (!Number.isSafeInteger(end) || end < start - 1) throw new RangeError(`end ${end} invalid for start ${start}`)
  for (const [name, value] of [['pollMs', options.pollMs], ['stallTimeoutMs', options.stallTimeoutMs], ['highWaterMark', options.highWaterMark]] as const) {
    if (value !== undefined && !(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} ${value} invalid: must be > 0`)
  }
  options.signal?.throwIfAborted()
  const handle = await open(path, 'r')
  if (options.signal?.aborted === true) {
    await handle.close()
    options.signal.throwIfAborted()
  }
  let fileKey: string | undefined
  try {
    const stats = await handle.stat()
    fileKey = `${stats.dev}:${stats.ino}`
  } catch {}
  const stream = new GrowingFileStream(handle, options, fileKey)
  if (options.signal !== undefined) addAbortSignal(options.signal, stream)
  return stream
}
