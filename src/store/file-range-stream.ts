import type { FileHandle } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { BufferPool } from './buffer-pool.js'

export const FILE_CHUNK_BYTES = 1024 * 1024
/**
 * Send buffers: 16 of 1 MiB (16 MiB) bound the memory of any number of downloads. 1 MiB rather
 * than 256 KiB: measured with bench/datapath.ts (256 MiB layer, curl), 256 KiB reads and writes
 * cost 1.0 CPU s/GiB and reached 0.73 of nginx's sendfile, 1 MiB ones 0.48 s/GiB and 1.29; and
 * under bench/load.ts (1,000 HEAD + 1,000 GET 1 MiB connections) the 1 MiB pool did as well or
 * better (GET 1187 vs 1080 req/s, HEAD 4687 vs 1074 req/s, peak RSS 252 vs 371 MiB; one run each).
 */
export const SEND_BUFFER_BYTES = 1024 * 1024
export const SEND_BUFFER_COUNT = 16
/** Enough in flight to keep one socket busy while the next chunk is read. */
export const MAX_SEND_BUFFERS_PER_RESPONSE = 4
const WRITE_OFF_DELAY_MS = 1_000
/**
 * A response that finds the pool empty sends through a small buffer of its own instead of
 * waiting in line. Waiting made a convoy: pool buffers are held by responses whose client reads
 * slowly (a relaying peer that paused), so every other download stalled behind them, and a
 * relaying node's requests timed out and retried until clients gave up after 60 s (measured
 * with bench/load.ts, mirror target). Worst case this adds 64 KiB per download beyond the pool.
 */
export const FALLBACK_SEND_BYTES = 64 * 1024

/** The process-wide pool every response's file stream sends from. */
export const sendBufferPool = new BufferPool(SEND_BUFFER_BYTES, SEND_BUFFER_COUNT)

export interface ByteSink {
  write(chunk: Uint8Array, callback: (err?: Error | null) => void): boolean
  once(event: 'drain' | 'close', listener: () => void): unknown
  removeListener(event: 'drain' | 'close', listener: () => void): unknown
  readonly destroyed: boolean
}

/**
 * Bytes `start..end` (inclusive) of an open file. As a Readable it allocates a fresh buffer per
 * chunk (safe for any consumer). `sendTo` is the fast path for a response: buffers of a shared
 * pool, each refilled only after the socket took the previous bytes (the write callback).
 * Allocating 1 MiB per chunk made Node run a full GC every ~40 MiB and halved throughput.
 */
export class FileRangeStream extends Readable {
  private position: number
  private readonly end: number
  private readonly handle: FileHandle
  private claimed = false

  constructor (handle: FileHandle, start: number, end: number) {
    super({ highWaterMark: FILE_CHUNK_BYTES })
    this.handle = handle
    this.position = start
    this.end = end
  }

  override _read (size: number): void {
    this.claimed = true
    const length = Math.min(Math.max(size, FILE_CHUNK_BYTES), this.end - this.position + 1)
    if (length <= 0) {
      this.push(null)
      return
    }
    const buffer = Buffer.allocUnsafe(length)
    this.handle.read(buffer, 0, length, this.position).then(({ bytesRead }) => {
      if (bytesRead === 0) {
        this.destroy(new Error('file ended before the expected size'))
        return
      }
      this.position += bytesRead
      this.push(buffer.subarray(0, bytesRead))
    }, (err: Error) => { this.destroy(err) })
  }

  override _destroy (err: Error | null, callback: (error?: Error | null) => void): void {
    this.handle.close().then(() => { callback(err) }, () => { callback(err) })
  }

  /**
   * Writes the remaining range to `sink`; resolves when every byte was handed to it (see
   * `sendChunks` for the buffers it uses).
   */
  async sendTo (sink: ByteSink, signal?: AbortSignal, pool: BufferPool = sendBufferPool): Promise<void> {
    if (this.claimed) throw new Error('stream already being read')
    this.claimed = true
    // Nobody reads this stream as a Readable here: a destroy (e.g. an abort signal attached with
    // addAbortSignal) would emit an 'error' no one listens to and crash the process. Failures
    // reach the caller as this promise's rejection instead.
    this.on('error', () => {})
    try {
      await sendChunks(sink, {
        remaining: () => this.end - this.position + 1,
        isDestroyed: () => this.destroyed,
        readInto: async (buffer, length) => {
          const { bytesRead } = await this.handle.read(buffer, 0, length, this.position)
          if (bytesRead === 0) throw new Error('file ended before the expected size')
          this.position += bytesRead
          return bytesRead
        }
      }, signal, pool)
    } finally {
      this.destroy()
    }
  }
}

/** What `sendChunks` reads from: a file range, or one still being written. */
export interface ChunkSource {
  /** Bytes still to send. */
  remaining(): number
  /** True once the source was destroyed (an abort, a close): sending stops. */
  isDestroyed(): boolean
  /**
   * Fills `buffer[0..)` with 1 to `length` next bytes and advances; rejects when it cannot. May
   * resolve 0 (no byte yet) only when `waitForData` is there.
   */
  readInto(buffer: Buffer, length: number): Promise<number>
  /** Waits until bytes may be there (a file still being written); rejects when none will come. */
  waitForData?(): Promise<void>
}

/**
 * Writes `source` to `sink`; resolves when every byte was handed to it. Buffers come from `pool`
 * (shared by every response), up to `MAX_SEND_BUFFERS_PER_RESPONSE`, each refilled only after the
 * socket took its previous bytes (the write callback); a response that finds none sends through
 * one `FALLBACK_SEND_BYTES` buffer of its own, so no download ever waits for another one's client.
 */
export async function sendChunks (sink: ByteSink, source: ChunkSource, signal?: AbortSignal, pool: BufferPool = sendBufferPool): Promise<void> {
  const mine: Buffer[] = [] // taken from the pool and not in flight
  const inFlight = new Set<Buffer>()
  let own: Buffer | undefined
  let held = 0
  let isFinished = false
  const watch = new SinkWatch(sink, signal)
  try {
    while (source.remaining() > 0) {
      if (source.isDestroyed()) watch.fail(prematureClose())
      watch.check()
      let buffer = mine.pop()
      if (buffer === undefined && held < MAX_SEND_BUFFERS_PER_RESPONSE) {
        buffer = pool.tryAcquire()
        if (buffer !== undefined) held++
        else if (held === 0 && own === undefined) buffer = own = Buffer.allocUnsafe(FALLBACK_SEND_BYTES)
      }
      if (buffer === undefined) {
        // Every buffer of ours is with the socket: the next write callback frees one.
        await watch.wait()
        continue
      }
      const length = Math.min(buffer.length, source.remaining())
      let bytesRead: number
      try {
        bytesRead = await source.readInto(buffer, length)
      } catch (err) {
        mine.push(buffer)
        throw err
      }
      if (watch.error !== undefined) {
        mine.push(buffer)
        throw watch.error
      }
      if (bytesRead === 0) {
        mine.push(buffer)
        if (source.waitForData === undefined) throw new Error('source delivered no byte')
        // Nothing to send for a while (a file still arriving): the pool's buffers go back
        // meanwhile. Nine readers of one download each holding up to four of the sixteen would
        // leave every other response on its small fallback buffer for the whole download.
        for (const spare of mine.splice(0)) {
          if (spare === own) continue
          held--
          pool.release(spare)
        }
        if (own !== undefined && !inFlight.has(own)) mine.push(own)
        await source.waitForData()
        continue
      }
      inFlight.add(buffer)
      const chunk = buffer
      const hasRoom = sink.write(chunk.subarray(0, bytesRead), (err) => {
        if (!inFlight.delete(chunk)) return // already written off (see below)
        if (isFinished) {
          if (chunk !== own) {
            held--
            pool.release(chunk)
          }
        } else {
          mine.push(chunk)
        }
        if (err !== null && err !== undefined) watch.fail(err)
        else watch.wake()
      })
      if (!hasRoom && !sink.destroyed) {
        await new Promise<void>((resolve) => {
          const onDrain = (): void => { sink.removeListener('close', onDrainClose); resolve() }
          const onDrainClose = (): void => { sink.removeListener('drain', onDrain); resolve() }
          sink.once('drain', onDrain)
          sink.once('close', onDrainClose)
        })
      }
    }
    while (inFlight.size > 0 && watch.error === undefined) await watch.wait()
    watch.check()
  } finally {
    isFinished = true
    watch.dispose()
    for (const buffer of mine.splice(0)) {
      if (buffer === own) continue
      held--
      pool.release(buffer)
    }
    if (own !== undefined) inFlight.delete(own)
    if (inFlight.size > 0) writeOffAfterClose(sink, inFlight, pool)
  }
}

/**
 * Buffers still with a socket when its response ended early come back through their write
 * callbacks. A destroyed socket normally calls them; should one never come, the pool would
 * shrink for good and, in the end, every download would wait forever. So once the socket has
 * closed and had a moment to call back, what is left is written off: the pool may create
 * that many new buffers, and the old ones go to the garbage collector with the socket.
 */
function writeOffAfterClose (sink: ByteSink, inFlight: Set<Buffer>, pool: BufferPool): void {
  const writeOff = (): void => {
    const timer = setTimeout(() => {
      for (const buffer of inFlight) pool.forget(buffer)
      inFlight.clear()
    }, WRITE_OFF_DELAY_MS)
    timer.unref()
  }
  if (sink.destroyed) writeOff()
  else sink.once('close', writeOff)
}

/**
 * What a loop writing to a sink needs to know while it runs: the first write error (or a close of
 * the sink, or an abort, as a premature close), and a way to sleep until a write callback or the
 * close wakes it. `dispose` removes its listeners.
 */
export class SinkWatch {
  /** The first failure: a write error, the sink closing, the signal aborting. */
  error: Error | undefined
  readonly #sink: ByteSink
  readonly #signal: AbortSignal | undefined
  #waiting: (() => void) | undefined
  readonly #onClose = (): void => { this.fail(prematureClose()) }

  constructor (sink: ByteSink, signal?: AbortSignal) {
    this.#sink = sink
    this.#signal = signal
    sink.once('close', this.#onClose)
    signal?.addEventListener('abort', this.#onClose, { once: true })
  }

  /** Records `err` unless a failure came first, and wakes the waiter. */
  fail (err: Error): void {
    this.error ??= err
    this.wake()
  }

  /** Throws the failure, if any. */
  check (): void {
    if (this.error !== undefined) throw this.error
  }

  wake (): void {
    const waiting = this.#waiting
    this.#waiting = undefined
    waiting?.()
  }

  /** Until the next `wake` (a write callback, a failure). */
  async wait (): Promise<void> {
    await new Promise<void>((resolve) => { this.#waiting = resolve })
  }

  dispose (): void {
    this.#sink.removeListener('close', this.#onClose)
    this.#signal?.removeEventListener('abort', this.#onClose)
  }
}

/** The same error pipeline reports when the destination closes first, so callers treat both alike. */
export function prematureClose (): Error {
  return Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' })
}
