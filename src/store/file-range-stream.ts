import type { FileHandle } from 'node:fs/promises'
import { Readable } from 'node:stream'

export const FILE_CHUNK_BYTES = 1024 * 1024
/** Buffers in flight per response when sending: enough to keep the socket busy while we read. */
const SEND_BUFFERS = 4

export interface ByteSink {
  write(chunk: Uint8Array, callback: (err?: Error | null) => void): boolean
  once(event: 'drain' | 'close', listener: () => void): unknown
  removeListener(event: 'drain' | 'close', listener: () => void): unknown
  readonly destroyed: boolean
}

/**
 * Bytes `start..end` (inclusive) of an open file. As a Readable it allocates a fresh buffer per
 * chunk (safe for any consumer). `sendTo` is the fast path for a response: a few buffers are
 * reused, each refilled only after the socket took the previous bytes (the write callback).
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

  /** Writes the remaining range to `sink`; resolves when every byte was handed to it. */
  async sendTo (sink: ByteSink, signal?: AbortSignal): Promise<void> {
    if (this.claimed) throw new Error('stream already being read')
    this.claimed = true
    // Nobody reads this stream as a Readable here: a destroy (e.g. an abort signal attached with
    // addAbortSignal) would emit an 'error' no one listens to and crash the process. Failures
    // reach the caller as this promise's rejection instead.
    this.on('error', () => {})
    const free: Buffer[] = Array.from({ length: SEND_BUFFERS }, () => Buffer.allocUnsafe(FILE_CHUNK_BYTES))
    let waiting: (() => void) | undefined
    let writeError: Error | undefined
    const wake = (): void => {
      const w = waiting
      waiting = undefined
      w?.()
    }
    const onClose = (): void => { writeError ??= prematureClose(); wake() }
    sink.once('close', onClose)
    const onAbort = (): void => { writeError ??= prematureClose(); wake() }
    signal?.addEventListener('abort', onAbort, { once: true })
    let inFlight = 0
    try {
      while (this.position <= this.end) {
        if (this.destroyed) writeError ??= prematureClose()
        if (writeError !== undefined) throw writeError
        const buffer = free.pop()
        if (buffer === undefined) {
          await new Promise<void>((resolve) => { waiting = resolve })
          continue
        }
        const length = Math.min(buffer.length, this.end - this.position + 1)
        const { bytesRead } = await this.handle.read(buffer, 0, length, this.position)
        if (bytesRead === 0) throw new Error('file ended before the expected size')
        this.position += bytesRead
        if (writeError !== undefined) throw writeError
        inFlight++
        const hasRoom = sink.write(buffer.subarray(0, bytesRead), (err) => {
          inFlight--
          if (err !== null && err !== undefined) writeError ??= err
          free.push(buffer)
          wake()
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
      while (inFlight > 0 && writeError === undefined) await new Promise<void>((resolve) => { waiting = resolve })
      if (writeError !== undefined) throw writeError
    } finally {
      sink.removeListener('close', onClose)
      signal?.removeEventListener('abort', onAbort)
      this.destroy()
    }
  }
}

/** The same error pipeline reports when the destination closes first, so callers treat both alike. */
function prematureClose (): Error {
  return Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' })
}
