import { Readable } from 'node:stream'
import { parseDigest, type RangeSpec, type ResolvedRange } from '../oci/index.js'
import type { Logger } from '../observability/logger.js'
import type { Peer } from '../routing/index.js'
import { SinkWatch, prematureClose, type ByteSink } from '../store/file-range-stream.js'
import type { BodyChunk } from './peer-http.js'
import { HashSession } from './hash-worker.js'
import { DigestMismatchError, PeerFetchError, discardBody, type PeerResponse } from './peer-fetch.js'

/** Resumes in a row that deliver no byte before a blob stream is given up. */
const MAX_STALLED_RESUMES = 3
/** Peer buffers handed to the sink and not yet flushed by it; more wait for a flush. */
const MAX_WRITES_IN_FLIGHT = 3

export interface PeerBlobStreamInit {
  /** The answer that won the first race: its headers describe what this stream delivers. */
  first: PeerResponse
  /**
   * Hash the bytes and check them against the digest, holding the last one back until they match:
   * set for a whole blob (a Range cannot be checked), unless `--verify-relayed-blobs=false`.
   */
  isVerified: boolean
  /** Asks the peers again for `range` (the bytes not yet received); rejects when none can. */
  resume: (range: RangeSpec) => Promise<PeerResponse>
  /** A resumed answer reports another size: that peer cannot be continuing the same bytes. */
  onWrongSize: (peer: Peer) => void
  /** The bytes from these peers did not hash to the digest. */
  onCorrupt: (peerIds: readonly string[]) => void
  /** Called once when the stream is done, whatever the outcome (stops the peer lookup). */
  onEnd: () => void
  log: Logger
}

/**
 * The body of a blob served from peers, as one unbroken stream of the range the first answer
 * announced: when a peer's body breaks, it resumes from the first byte not yet received on
 * whichever peer `resume` picks, until the range is complete or no progress is made. A whole blob
 * is hashed as it streams and its last byte is held back until the hash checks out, so a corrupt
 * transfer ends as a failed stream and never as a complete one.
 *
 * `sendTo(sink)` is the fast path for an HTTP response: the peer's read buffers are written as
 * they are, each given back once the sink has flushed it. As a Readable (any other consumer) it
 * pushes copies.
 */
export class PeerBlobStream extends Readable {
  readonly #init: PeerBlobStreamInit
  readonly #target: ResolvedRange
  readonly #hash: HashSession | undefined
  readonly #contributors = new Set<string>()
  #current: PeerResponse | undefined
  #offset: number
  #isStarted = false
  #isEnded = false
  #pushWaiter: (() => void) | undefined
  /** Resume races run so far (for the request's log line). */
  resumes = 0

  constructor (init: PeerBlobStreamInit) {
    super({ highWaterMark: 1024 * 1024 })
    this.#init = init
    const { descriptor, range } = init.first
    this.#target = range ?? { start: 0, end: descriptor.sizeBytes - 1 }
    this.#hash = init.isVerified ? new HashSession(parseDigest(descriptor.digest).algorithm) : undefined
    this.#current = init.first
    this.#offset = this.#target.start
  }

  /** Writes the whole range to `sink`; resolves when every byte was handed to it and checked. */
  async sendTo (sink: ByteSink, signal?: AbortSignal): Promise<void> {
    this.#claim()
    let inFlight = 0
    const watch = new SinkWatch(sink, signal)
    const check = (): void => { watch.check() }
    try {
      await this.#pump(async (data, release) => {
        try {
          check()
        } catch (err) {
          release() // the write's share: this buffer is not written
          throw err
        }
        inFlight++
        sink.write(data, (err) => {
          inFlight--
          release()
          if (err !== null && err !== undefined) watch.fail(err)
          else watch.wake()
        })
        // Memory is bounded by the buffers in flight (each is written as it is, no copy), so the
        // sink's own buffering signal is not needed: wait for a flush only when too many are out.
        while (inFlight >= MAX_WRITES_IN_FLIGHT && watch.error === undefined && !sink.destroyed) await watch.wait()
        check()
      }, check)
      while (inFlight > 0 && watch.error === undefined) await watch.wait()
      check()
    } finally {
      watch.dispose()
    }
  }

  override _read (): void {
    const waiter = this.#pushWaiter
    this.#pushWaiter = undefined
    waiter?.()
    if (this.#isStarted) return
    this.#claim()
    this.#pump(async (data, release) => {
      const copy = Buffer.from(data)
      release()
      if (!this.push(copy)) await new Promise<void>((resolve) => { this.#pushWaiter = resolve })
    }, () => {
      if (this.destroyed) throw prematureClose()
    }).then(() => { this.push(null) }, (err: Error) => { this.destroy(err) })
  }

  override _destroy (err: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.#isStarted) {
      // Never read (the response failed before its body): the pump's own cleanup never runs.
      this.#hash?.abort()
      if (this.#current !== undefined) discardBody(this.#current.body)
    }
    this.#finish()
    const waiter = this.#pushWaiter
    this.#pushWaiter = undefined
    waiter?.()
    callback(err)
  }

  #claim (): void {
    if (this.#isStarted) throw new Error('stream already being read')
    this.#isStarted = true
  }

  /**
   * Reads the peers' bodies and hands every byte of the range to `write` (with a `release` to call
   * once the bytes are written: the peer buffer behind them goes back when both the write and the
   * hash are done with it), resuming after failures; the last byte of a whole blob is passed only
   * after the digest checked out.
   */
  async #pump (write: (data: Buffer, release: () => void) => Promise<void>, check: () => void): Promise<void> {
    const { log } = this.#init
    const { descriptor } = this.#init.first
    const target = this.#target
    let stalls = 0
    let held: Buffer | undefined
    try {
      for (;;) {
        check()
        if (this.#current === undefined) {
          this.resumes++
          let next: PeerResponse
          try {
            next = await this.#init.resume({ start: this.#offset, end: target.end })
          } catch (err) {
            check()
            throw this.#giveUp(err)
          }
          if (next.descriptor.sizeBytes !== descriptor.sizeBytes || next.range?.end !== target.end) {
            // A peer with a different idea of the blob's size cannot be continuing the same bytes.
            discardBody(next.body)
            this.#init.onWrongSize(next.peer)
            if (++stalls >= MAX_STALLED_RESUMES) throw this.#giveUp(new PeerFetchError(next.peer, `peer reports size ${next.descriptor.sizeBytes}, expected ${descriptor.sizeBytes}`))
            continue
          }
          this.#current = next
        }

        const current = this.#current
        const { peer, body } = current
        this.#contributors.add(peer.id)
        const before = this.#offset
        try {
          for (;;) {
            const chunk = await body.read()
            if (chunk === null) break
            const data = chunk.data
            if (this.#offset + data.length > target.end + 1) {
              body.release(chunk)
              throw new PeerFetchError(peer, `peer sent more than the ${target.end - target.start + 1} bytes announced`)
            }
            const release = this.#releaser(chunk, body)
            this.#hash?.update(data, release)
            this.#offset += data.length
            let out = data
            if (this.#hash !== undefined && this.#offset === target.end + 1) {
              // Held back until the digest checks out: with every byte sent, breaking the
              // response afterwards would no longer look like a failure to the client.
              held = Buffer.from(data.subarray(data.length - 1))
              out = data.subarray(0, data.length - 1)
            }
            if (out.length > 0) {
              await write(out, release)
            } else {
              release()
            }
          }
          if (this.#offset <= target.end) throw new PeerFetchError(peer, `body ended after ${this.#offset - target.start} of ${target.end - target.start + 1} bytes`)
          break
        } catch (err) {
          discardBody(body)
          this.#current = undefined
          check()
          // Every byte is in; whatever went wrong after the last one changes nothing.
          if (this.#offset > target.end) break
          // The peer stays in the pool: its usage count already sends the resume elsewhere when
          // another peer is left, and a lone flaky peer is still worth asking again, as in Spegel.
          if (this.#offset === before) {
            if (++stalls >= MAX_STALLED_RESUMES) throw this.#giveUp(err)
          } else {
            stalls = 0
          }
          log.warn({ peer: peer.id, address: peer.registryAddress, digest: descriptor.digest, offset: this.#offset, err: errorMessage(err) }, 'blob stream from peer failed, resuming')
        }
      }

      if (this.#hash !== undefined) {
        const { algorithm } = parseDigest(descriptor.digest)
        const actual = `${algorithm}:${await this.#hash.digest()}`
        if (actual !== descriptor.digest) {
          const peerIds = [...this.#contributors]
          this.#init.onCorrupt(peerIds)
          log.warn({ peer: peerIds.join(','), digest: descriptor.digest, actual }, 'peer served a blob that does not match its digest')
          throw new DigestMismatchError(descriptor.digest, actual, peerIds)
        }
        check()
        if (held !== undefined) await write(held, () => {})
      }
    } finally {
      this.#hash?.abort()
      if (this.#current !== undefined && !this.#current.body.isComplete) discardBody(this.#current.body)
      this.#finish()
    }
  }

  /** A `release` for `chunk`: gives its buffer back on the second call (the write's and the hash's) when hashing, on the first otherwise. */
  #releaser (chunk: BodyChunk, body: PeerResponse['body']): () => void {
    let calls = this.#hash === undefined ? 1 : 2
    return () => {
      if (--calls === 0) body.release(chunk)
    }
  }

  #giveUp (err: unknown): Error {
    const { descriptor } = this.#init.first
    this.#init.log.warn({ digest: descriptor.digest, bytes: this.#offset - this.#target.start, err: errorMessage(err) }, 'could not complete blob from peers')
    return err instanceof Error ? err : new Error(String(err))
  }

  #finish (): void {
    if (this.#isEnded) return
    this.#isEnded = true
    this.#init.onEnd()
  }
}

function errorMessage (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
