import type { ResolvedRange } from '../oci/index.js'
import type { Peer } from '../routing/index.js'
import { PeerBody, PeerHttpError, READ_BUFFER_BYTES, type BodyChunk } from './peer-http.js'
import { PeerFetchError, type PeerResponse } from './peer-fetch.js'

/** Bytes asked of one peer in one Range request. */
export const DEFAULT_PARALLEL_CHUNK_BYTES = 8 * 1024 * 1024
/** Chunks from the one being delivered onwards that may be fetched at once. */
export const DEFAULT_PARALLEL_WINDOW = 4
/** Range requests to one peer at once, so one fast holder does not end up with the whole window. */
export const DEFAULT_PARALLEL_PER_PEER = 2
/**
 * Bytes received ahead of the delivery order and copied out of the peer buffers. Past it the
 * chunks ahead stop reading and their sockets pause (peer-http's backpressure). Three chunks
 * keep three holders busy while the chunk being delivered comes from a fourth or a slow one.
 */
export const DEFAULT_PARALLEL_AHEAD_BYTES = 3 * DEFAULT_PARALLEL_CHUNK_BYTES
/**
 * The chunk being delivered is taken from its holder and asked of another when that one has
 * delivered at least this rate (bytes per ms of reading) times faster: otherwise one slow holder
 * holds up every chunk behind its own, and the whole blob goes at its pace.
 */
const STEAL_RATE_FACTOR = 3
/** Reading time a holder's rate is judged on, at least. */
const STEAL_MIN_READ_MS = 200
/** Left of the chunk being delivered, at least, for taking it elsewhere to be worth a request. */
const STEAL_MIN_BYTES = 256 * 1024
/** Pieces the chunk being delivered may have queued, not yet taken by the consumer. */
const MAX_HEAD_QUEUE = 2
/**
 * Bytes received ahead of order are copied into buffers of this size, filled up before they are
 * queued: a paced peer's socket delivers a few hundred KiB per read, and a 1 MiB buffer per read
 * would hold several times the bytes counted.
 */
const COPY_BUFFER_BYTES = READ_BUFFER_BYTES
/**
 * Free copy buffers kept for reuse over all bodies: left to the garbage collector, fresh 1 MiB
 * buffers at a few hundred MB/s pile up before V8 collects them (see peer-http.ts).
 */
const COPY_BUFFERS_KEPT = 32
const freeCopyBuffers: Buffer[] = []

function takeCopyBuffer (): Buffer {
  // Shared memory like peer-http's read buffers, so a hash worker can read the bytes in place.
  return freeCopyBuffers.pop() ?? Buffer.from(new SharedArrayBuffer(COPY_BUFFER_BYTES))
}

function giveCopyBuffer (buffer: Buffer): void {
  if (freeCopyBuffers.length < COPY_BUFFERS_KEPT) freeCopyBuffers.push(buffer)
}

export interface MultiPeerBodyInit {
  /**
   * The answer that won the race, for the range `target` starts with: it carries the first chunk,
   * then it is dropped (its connection closes).
   */
  first: PeerResponse
  /** The absolute bytes this body delivers, in order. */
  target: ResolvedRange
  /** Peers holding the whole blob (the winner among them); chunks are spread over these. */
  holders: readonly Peer[]
  /** Asks `peer` for `range` of the same content; the answer's headers are checked here again. */
  fetch: (peer: Peer, range: ResolvedRange, signal: AbortSignal) => Promise<PeerResponse>
  /** A peer's request or body failed; it gets no more chunks of this body. */
  onPeerFailed?: (peer: Peer, err: unknown) => void
  /** Ends the chunk requests in flight (the mirror request finished). */
  signal?: AbortSignal
  chunkBytes?: number
  window?: number
  perPeer?: number
  aheadBytes?: number
}

interface Item {
  readonly chunk: BodyChunk
  /** The peer body the piece belongs to, when it is its pooled buffer (released back to it). */
  readonly body: PeerBody | undefined
  /** Bytes counted as held ahead of order (copies made while the chunk was not being delivered). */
  readonly ahead: number
  /** The copy buffer behind `chunk.data`, given back once the consumer releases it. */
  readonly copy?: Buffer
}

interface Chunk {
  readonly index: number
  readonly start: number
  readonly end: number
  /** The next absolute byte to receive: a re-request starts here. */
  next: number
  readonly queue: Item[]
  /** A body is being read, or a request is on its way. */
  isBusy: boolean
  /** Sources so far, for the log and tests. */
  sources: number
  /** The copy buffer being filled while the chunk is ahead of order, and the bytes in it. */
  fill: Buffer | undefined
  filled: number
  /** The body being read for it, and whose. */
  body: PeerBody | undefined
  owner: PeerState | undefined
}

interface PeerState {
  readonly peer: Peer
  active: number
  assigned: number
  isFailed: boolean
  /** A chunk was taken from it for being too slow: it gets chunks only when no other holder can. */
  isSlow: boolean
  /** Bytes received and milliseconds spent waiting for them (not counting pauses for the bound). */
  bytes: number
  readMs: number
}

/**
 * A blob's bytes fetched from several holders at once, in Range chunks, and delivered strictly in
 * order through the same contract as a single peer's body (`read()` a chunk, `release` it once
 * written), so PeerBlobStream consumes it unchanged and keeps hashing and checking the digest over
 * the whole stream.
 *
 * The chunk being delivered passes the peer's pooled buffers through without a copy. A chunk
 * ahead of it is copied out of the peer buffers (so its connection does not hold pooled buffers)
 * up to `aheadBytes` over all chunks; past that its reading waits and its socket pauses.
 *
 * A holder whose request or body fails gets no more chunks; its chunk is asked again of another
 * holder from the first byte not yet received. With no holder left, `read()` rejects once the
 * bytes received so far are delivered, and PeerBlobStream resumes on its own.
 */
export class MultiPeerBody extends PeerBody {
  readonly #init: MultiPeerBodyInit
  readonly #chunkBytes: number
  readonly #window: number
  readonly #perPeer: number
  readonly #aheadLimit: number
  readonly #chunkCount: number
  readonly #chunks = new Map<number, Chunk>()
  readonly #peers = new Map<string, PeerState>()
  readonly #handedOut = new Map<BodyChunk, PeerBody>()
  readonly #copiesOut = new Map<BodyChunk, Buffer>()
  readonly #bodies = new Set<PeerBody>()
  /** Bodies given up for being slow: their pumps end without blaming the peer. */
  readonly #stolen = new WeakSet<PeerBody>()
  readonly #controller = new AbortController()
  readonly #signal: AbortSignal
  readonly #contributors = new Set<string>()
  #head = 0
  #aheadBytes = 0
  #reserved = 0
  #error: Error | undefined
  #isDestroyed = false
  #wake: () => void = () => {}
  #changed: Promise<void>
  /** Most bytes ever held ahead of order (for tests and the log). */
  maxAheadBytes = 0
  /** Range requests sent (the first answer not counted). */
  requests = 0
  /** Chunks taken from a slow holder and asked of a faster one. */
  steals = 0

  constructor (init: MultiPeerBodyInit) {
    super()
    this.#init = init
    this.#chunkBytes = Math.max(READ_BUFFER_BYTES, init.chunkBytes ?? DEFAULT_PARALLEL_CHUNK_BYTES)
    this.#window = Math.max(1, init.window ?? DEFAULT_PARALLEL_WINDOW)
    this.#perPeer = Math.max(1, init.perPeer ?? DEFAULT_PARALLEL_PER_PEER)
    // At least one read buffer, or a chunk ahead could never read anything.
    this.#aheadLimit = Math.max(READ_BUFFER_BYTES, init.aheadBytes ?? DEFAULT_PARALLEL_AHEAD_BYTES)
    this.#chunkCount = Math.ceil((init.target.end - init.target.start + 1) / this.#chunkBytes)
    this.#signal = init.signal === undefined ? this.#controller.signal : AbortSignal.any([this.#controller.signal, init.signal])
    this.#changed = new Promise((resolve) => { this.#wake = resolve })
    for (const peer of init.holders) {
      if (!this.#peers.has(peer.id)) this.#peers.set(peer.id, { peer, active: 0, assigned: 0, isFailed: false, isSlow: false, bytes: 0, readMs: 0 })
    }
    const firstPeer = init.first.peer
    let state = this.#peers.get(firstPeer.id)
    if (state === undefined) {
      state = { peer: firstPeer, active: 0, assigned: 0, isFailed: false, isSlow: false, bytes: 0, readMs: 0 }
      this.#peers.set(firstPeer.id, state)
    }
    const chunk = this.#chunk(0)
    chunk.isBusy = true
    chunk.sources++
    state.active++
    state.assigned++
    this.#bodies.add(init.first.body)
    // The client left: every chunk request and body fails quietly on the abort, so nothing else
    // would wake a read() waiting for the next chunk, and its peer buffers would never return.
    const onAbort = (): void => { this.destroy(new PeerHttpError('ERR_ABORTED', 'the request was aborted')) }
    if (init.signal?.aborted === true) {
      onAbort()
      return
    }
    init.signal?.addEventListener('abort', onAbort, { once: true })
    this.onClose(() => { init.signal?.removeEventListener('abort', onAbort) })
    void this.#pump(chunk, state, init.first.body)
    this.#schedule()
  }

  /** Peers whose bytes were delivered (all of them answer for a digest mismatch). */
  get contributors (): readonly string[] {
    return [...this.#contributors]
  }

  /** Bytes held ahead of the delivery order right now. */
  get aheadBytes (): number {
    return this.#aheadBytes
  }

  override get outstanding (): number { return this.#handedOut.size + this.#copiesOut.size }
  override get isComplete (): boolean { return this.#head >= this.#chunkCount }
  override get destroyed (): boolean { return this.#isDestroyed }

  override async read (): Promise<BodyChunk | null> {
    for (;;) {
      if (this.#isDestroyed) throw this.#error ?? new PeerHttpError('ERR_BODY_DESTROYED', 'body was destroyed')
      if (this.#head >= this.#chunkCount) {
        this.markClosed()
        return null
      }
      const chunk = this.#chunk(this.#head)
      // Bytes copied while the chunk was ahead, and its pump is waiting on its peer: hand them out.
      if (chunk.queue.length === 0) this.#flush(chunk)
      const item = chunk.queue.shift()
      if (item !== undefined) {
        this.#aheadBytes -= item.ahead
        if (item.body !== undefined) this.#handedOut.set(item.chunk, item.body)
        if (item.copy !== undefined) this.#copiesOut.set(item.chunk, item.copy)
        this.#notify()
        return item.chunk
      }
      if (chunk.next > chunk.end) {
        this.#chunks.delete(this.#head)
        this.#head++
        this.#schedule()
        this.#notify()
        continue
      }
      if (this.#error !== undefined) throw this.#error
      this.#stealIfSlow(chunk)
      await this.#changed
    }
  }

  /**
   * The consumer waits on `chunk`: when its holder reads far slower than another holder that has
   * room for a request, the chunk's remaining bytes are asked of that one instead. Judged only when
   * the consumer waits, so it is checked at every piece any chunk receives; a holder that stops
   * sending altogether is caught by the body idle timeout instead.
   */
  #stealIfSlow (chunk: Chunk): void {
    const slow = chunk.owner
    const body = chunk.body
    if (slow === undefined || body === undefined || chunk.end + 1 - chunk.next < STEAL_MIN_BYTES || slow.readMs < STEAL_MIN_READ_MS) return
    const slowRate = slow.bytes / slow.readMs
    let fast: PeerState | undefined
    for (const state of this.#peers.values()) {
      // A fast holder may have spent next to no time reading: judged on a read buffer's worth of bytes instead.
      if (state === slow || state.isFailed || state.isSlow || state.active >= this.#perPeer || state.bytes < READ_BUFFER_BYTES) continue
      const rate = state.bytes / Math.max(1, state.readMs)
      if (rate >= STEAL_RATE_FACTOR * slowRate && (fast === undefined || rate > fast.bytes / Math.max(1, fast.readMs))) fast = state
    }
    if (fast === undefined) return
    this.steals++
    slow.isSlow = true
    slow.active--
    this.#stolen.add(body)
    this.#bodies.delete(body)
    chunk.body = undefined
    chunk.owner = undefined
    body.destroy()
    this.#start(chunk, fast)
  }

  override release (chunk: BodyChunk): void {
    const copy = this.#copiesOut.get(chunk)
    if (copy !== undefined) {
      this.#copiesOut.delete(chunk)
      giveCopyBuffer(copy)
      return
    }
    const body = this.#handedOut.get(chunk)
    if (body === undefined) return
    this.#handedOut.delete(chunk)
    body.release(chunk)
  }

  override destroy (err?: Error): void {
    if (this.#isDestroyed) return
    this.#isDestroyed = true
    if (err !== undefined) this.#error ??= err
    this.#controller.abort(new Error('multi-peer body was destroyed'))
    for (const chunk of this.#chunks.values()) {
      for (const item of chunk.queue.splice(0)) {
        item.body?.release(item.chunk)
        if (item.copy !== undefined) giveCopyBuffer(item.copy)
      }
      if (chunk.fill !== undefined) giveCopyBuffer(chunk.fill)
      chunk.fill = undefined
    }
    for (const body of this.#bodies) body.destroy()
    this.#bodies.clear()
    this.#aheadBytes = 0
    this.#notify()
    this.markClosed()
  }

  #notify (): void {
    const wake = this.#wake
    this.#changed = new Promise((resolve) => { this.#wake = resolve })
    wake()
  }

  #chunk (index: number): Chunk {
    let chunk = this.#chunks.get(index)
    if (chunk === undefined) {
      const start = this.#init.target.start + index * this.#chunkBytes
      chunk = { index, start, end: Math.min(start + this.#chunkBytes - 1, this.#init.target.end), next: start, queue: [], isBusy: false, sources: 0, fill: undefined, filled: 0, body: undefined, owner: undefined }
      this.#chunks.set(index, chunk)
    }
    return chunk
  }

  /** Sends requests for the chunks in the window that have no source, to the least busy holders. */
  #schedule (): void {
    if (this.#isDestroyed || this.#error !== undefined) return
    const last = Math.min(this.#head + this.#window, this.#chunkCount)
    for (let index = this.#head; index < last; index++) {
      const chunk = this.#chunk(index)
      if (chunk.isBusy || chunk.next > chunk.end) continue
      // The chunk being delivered may go past the per-peer limit: the chunks ahead that fill it
      // may be waiting for it (the bound on bytes held out of order), which would never end.
      const state = this.#pickPeer(index === this.#head)
      if (state === undefined) {
        if ([...this.#peers.values()].every((s) => s.isFailed)) {
          this.#error = new PeerFetchError(this.#init.first.peer, `no holder left for bytes ${chunk.next}-${chunk.end}: every one failed`)
          this.#notify()
        }
        return
      }
      this.#start(chunk, state)
    }
  }

  #pickPeer (isHead: boolean): PeerState | undefined {
    let best: PeerState | undefined
    for (const isSlowOk of [false, true]) {
      for (const state of this.#peers.values()) {
        if (state.isFailed || (state.isSlow && !isSlowOk) || (state.active >= this.#perPeer && !isHead)) continue
        if (best === undefined || state.active < best.active || (state.active === best.active && state.assigned < best.assigned)) best = state
      }
      // A slow holder still beats none, but only for the chunk being delivered.
      if (best !== undefined || !isHead) break
    }
    return best
  }

  #start (chunk: Chunk, state: PeerState): void {
    chunk.isBusy = true
    chunk.sources++
    state.active++
    state.assigned++
    this.requests++
    const range = { start: chunk.next, end: chunk.end }
    const { first } = this.#init
    this.#init.fetch(state.peer, range, this.#signal).then((response) => {
      if (this.#isDestroyed) {
        response.body.destroy()
        return
      }
      const served = response.range
      if (served?.start !== range.start || served.end !== range.end || response.descriptor.sizeBytes !== first.descriptor.sizeBytes ||
        response.descriptor.digest !== first.descriptor.digest) {
        response.body.destroy()
        this.#failed(chunk, state, new PeerFetchError(state.peer, `peer answered ${response.descriptor.digest} ${served?.start ?? 0}-${served?.end ?? response.descriptor.sizeBytes - 1}/${response.descriptor.sizeBytes} for bytes ${range.start}-${range.end}/${first.descriptor.sizeBytes}`, { status: response.status }))
        return
      }
      this.#bodies.add(response.body)
      void this.#pump(chunk, state, response.body)
    }, (err: unknown) => {
      // Our own abort (the request is over) says nothing about the peer.
      if (this.#isDestroyed || this.#signal.aborted) return
      this.#failed(chunk, state, err)
    })
  }

  #failed (chunk: Chunk, state: PeerState, err: unknown): void {
    chunk.isBusy = false
    state.active--
    state.isFailed = true
    this.#init.onPeerFailed?.(state.peer, err)
    this.#schedule()
    this.#notify()
  }

  /** Queues the bytes copied so far for `chunk`, so they can be handed out. */
  #flush (chunk: Chunk): void {
    const fill = chunk.fill
    if (fill === undefined) return
    chunk.fill = undefined
    const filled = chunk.filled
    chunk.filled = 0
    if (filled === 0) {
      giveCopyBuffer(fill)
      return
    }
    chunk.queue.push({ chunk: { data: fill.subarray(0, filled), pooled: undefined }, body: undefined, ahead: filled, copy: fill })
  }

  /** Reads `body` into `chunk` until the chunk is complete; a break hands the chunk to another holder. */
  async #pump (chunk: Chunk, state: PeerState, body: PeerBody): Promise<void> {
    chunk.body = body
    chunk.owner = state
    try {
      while (chunk.next <= chunk.end) {
        for (;;) {
          if (this.#isDestroyed || this.#stolen.has(body)) return
          if (chunk.index === this.#head ? chunk.queue.length < MAX_HEAD_QUEUE : this.#aheadBytes + this.#reserved + READ_BUFFER_BYTES <= this.#aheadLimit) break
          await this.#changed
        }
        const isAhead = chunk.index !== this.#head
        // A read delivers up to one read buffer; reserving it keeps concurrent reads within the bound.
        if (isAhead) this.#reserved += READ_BUFFER_BYTES
        let piece: BodyChunk | null
        const readStart = performance.now()
        try {
          piece = await body.read()
        } finally {
          if (isAhead) this.#reserved -= READ_BUFFER_BYTES
          state.readMs += performance.now() - readStart
        }
        if (piece !== null) state.bytes += piece.data.length
        // A piece that arrived as the chunk was taken elsewhere: the new request covers its bytes.
        if (this.#isDestroyed || this.#stolen.has(body)) {
          if (piece !== null) body.release(piece)
          return
        }
        if (piece === null) throw new PeerFetchError(state.peer, `body ended at byte ${chunk.next}, expected up to ${chunk.end}`)
        this.#contributors.add(state.peer.id)
        const room = chunk.end + 1 - chunk.next
        if (chunk.index === this.#head) {
          this.#flush(chunk)
          if (piece.data.length > room) {
            // Only the first answer runs past its chunk: keep the chunk's part, drop that body below.
            chunk.queue.push({ chunk: { data: Buffer.from(piece.data.subarray(0, room)), pooled: undefined }, body: undefined, ahead: 0 })
            body.release(piece)
          } else {
            chunk.queue.push({ chunk: piece, body, ahead: 0 })
          }
        } else {
          let data = piece.data.length > room ? piece.data.subarray(0, room) : piece.data
          this.#aheadBytes += data.length
          if (this.#aheadBytes > this.maxAheadBytes) this.maxAheadBytes = this.#aheadBytes
          while (data.length > 0) {
            chunk.fill ??= takeCopyBuffer()
            const n = data.copy(chunk.fill, chunk.filled)
            chunk.filled += n
            data = data.subarray(n)
            if (chunk.filled === chunk.fill.length) this.#flush(chunk)
          }
          body.release(piece)
        }
        chunk.next += Math.min(piece.data.length, room)
        if (chunk.next > chunk.end) this.#flush(chunk)
        this.#notify()
      }
      // The first answer covers more than its chunk: its connection is given up.
      if (!body.isComplete) body.destroy()
      this.#bodies.delete(body)
      chunk.body = undefined
      chunk.owner = undefined
      chunk.isBusy = false
      state.active--
      this.#schedule()
      this.#notify()
    } catch (err) {
      body.destroy()
      this.#bodies.delete(body)
      // Taken over by a faster holder (#stealIfSlow), which already owns the chunk.
      if (this.#isDestroyed || this.#signal.aborted || this.#stolen.has(body)) return
      chunk.body = undefined
      chunk.owner = undefined
      this.#failed(chunk, state, err)
    }
  }
}
