import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { Logger } from '../../observability/logger.js'
import { PUSH_PROTOCOL, DIAL_TIMEOUT_MS, MAX_FRAME_BYTES, MAX_QUEUED_BYTES, MAX_QUEUED_FRAMES } from './constants.js'

export interface PeerLinkComponents {
  log: Logger
  /** The open connection to the peer, if any; links never dial. */
  connection: () => Connection | undefined
  /** Counts frames dropped because the queue overflowed or the stream failed. */
  onDropped: (frames: number) => void
}

/**
 * The outbound push channel to one connected peer: one long-lived length-prefixed stream,
 * reopened on demand. Frames queued in the same tick go out in one write. The queue is
 * bounded; when it overflows or a write fails the queued frames are dropped, because pushes
 * are best effort and the peer's next pull repairs whatever it missed.
 */
export class PeerLink {
  readonly peerId: PeerId
  readonly #c: PeerLinkComponents
  #queue: Uint8Array[] = []
  #queuedBytes = 0
  #flushing = false
  #closed = false
  #stream: Stream | undefined
  #lp: LengthPrefixedStream<Stream> | undefined
  #idle: Array<() => void> = []

  constructor (components: PeerLinkComponents, peerId: PeerId) {
    this.#c = components
    this.peerId = peerId
  }

  enqueue (frame: Uint8Array): void {
    if (this.#closed) return
    if (this.#queue.length >= MAX_QUEUED_FRAMES || this.#queuedBytes + frame.byteLength > MAX_QUEUED_BYTES) {
      this.#c.log.warn({ peer: this.peerId.toString(), frames: this.#queue.length }, 'push queue overflow, dropping queued frames')
      this.#c.onDropped(this.#queue.length)
      this.#queue = []
      this.#queuedBytes = 0
    }
    this.#queue.push(frame)
    this.#queuedBytes += frame.byteLength
    if (!this.#flushing) {
      this.#flushing = true
      // setImmediate rather than a microtask: a burst of advertise() calls becomes one write.
      setImmediate(() => { void this.#flush() })
    }
  }

  /** Resolves once everything queued so far was written (or dropped). */
  async whenIdle (): Promise<void> {
    if (!this.#flushing) return
    await new Promise<void>((resolve) => this.#idle.push(resolve))
  }

  close (): void {
    this.#closed = true
    this.#queue = []
    this.#queuedBytes = 0
    const stream = this.#stream
    this.#stream = undefined
    this.#lp = undefined
    if (stream !== undefined) {
      stream.close().catch((err: unknown) => { stream.abort(err instanceof Error ? err : new Error(String(err))) })
    }
  }

  async #flush (): Promise<void> {
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const batch = this.#queue
        this.#queue = []
        this.#queuedBytes = 0
        try {
          const lp = await this.#open()
          if (lp === undefined) {
            this.#c.onDropped(batch.length)
            continue
          }
          await writeWithin(lp, batch, DIAL_TIMEOUT_MS)
        } catch (err) {
          this.#c.onDropped(batch.length)
          this.#c.log.debug({ peer: this.peerId.toString(), err }, 'push stream failed')
          const stream = this.#stream
          this.#stream = undefined
          this.#lp = undefined
          stream?.abort(err instanceof Error ? err : new Error(String(err)))
        }
      }
    } finally {
      this.#flushing = false
      const idle = this.#idle
      this.#idle = []
      for (const resolve of idle) resolve()
    }
  }

  async #open (): Promise<LengthPrefixedStream<Stream> | undefined> {
    if (this.#stream !== undefined && this.#lp !== undefined && this.#stream.status === 'open' && this.#stream.writeStatus === 'writable') {
      return this.#lp
    }
    const conn = this.#c.connection()
    if (conn === undefined) return undefined
    const stream = await conn.newStream(PUSH_PROTOCOL, { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
    if (this.#closed) {
      stream.abort(new Error('link closed'))
      return undefined
    }
    this.#stream = stream
    this.#lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
    return this.#lp
  }
}

/**
 * Writes `frames`, failing if the muxer stays full for `timeoutMs`. A plain timer cleared after
 * the write, not AbortSignal.timeout: that one's timer runs its full 10 s after a write that
 * finished at once (nearly all of them), and then builds a DOMException with its stack; with a
 * heartbeat to every peer every 5 s, those showed in an idle node's profile.
 */
async function writeWithin (lp: LengthPrefixedStream<Stream>, frames: Uint8Array[], timeoutMs: number): Promise<void> {
  const controller = new AbortController()
  const timer = setTimeout(() => { controller.abort(new DOMException(`push write stalled for ${timeoutMs} ms`, 'TimeoutError')) }, timeoutMs)
  timer.unref()
  try {
    await lp.writeV(frames, { signal: controller.signal })
  } finally {
    clearTimeout(timer)
  }
}
