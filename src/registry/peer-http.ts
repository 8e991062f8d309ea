import net from 'node:net'

/**
 * A minimal HTTP/1.1 client for requests to peers: keep-alive connections per peer, one request
 * at a time on each, bodies with a Content-Length (every spegel-ts answer has one).
 *
 * A body's reads fill one pooled buffer, each read into the space the last left, and the buffer
 * goes to the consumer when it is nearly full, when the body ends, or FLUSH_AFTER_MS after its
 * first unsent byte. From a peer behind a real link (5 Gbit/s in bench/datapath.ts --link-mbit)
 * reads return about 70 KiB each, and handing each on alone (a hash message, a socket write, their
 * callbacks) cost the relaying node 1.68-1.76 CPU s/GiB; filling, 1.28-1.60 (bench/README.md).
 * From a holder on the same machine reads return most of a megabyte either way.
 *
 * Why not undici: relaying a blob through undici cost 6-9 CPU seconds per GiB on the relaying
 * node (measured with bench/datapath.ts), most of it per-chunk work on 32-64 KiB pieces: socket
 * reads into fresh buffers, the parser copying each into its own memory, a stream push, an
 * async-iterator step and a socket write each. Here the socket reads straight into a few reused
 * 1 MiB buffers (`onread`), the body hands those buffers to the consumer without a copy, and a
 * buffer goes back to the pool once the consumer has written it out (`release`). When chunks of
 * MAX_CHUNKS_IN_FLIGHT buffers are out in one response, the socket stops reading until one comes
 * back, which is the backpressure.
 */

/** Size of the reused read buffers of a body; the kernel fills what it has, up to this. */
export const READ_BUFFER_BYTES = 1024 * 1024
/** Pooled buffers handed to a response's consumer and not yet released, before reading pauses. */
const MAX_CHUNKS_IN_FLIGHT = 4
/**
 * Free large buffers kept for reuse: as many as may be out. Keeping fewer let most released
 * buffers go to the garbage collector, and a relay at 200 MB/s then left 400+ MiB of dead
 * 1 MiB buffers waiting for V8 (RSS over 1 GiB under bench/load.ts, mirror target, while a heap
 * snapshot after a full GC showed 62 MiB live).
 */
const FREE_BUFFERS_KEPT = 32
/** A read is not given less room than this: the buffer is handed on before it gets that full. */
const MIN_READ_BYTES = 64 * 1024
/**
 * Bytes read into a body's buffer wait at most this long for more before they are handed on. Long
 * enough for ten 64 KiB reads at 1 Gbit/s, short against any transfer it delays.
 */
const FLUSH_AFTER_MS = 4
/** A response head larger than this is refused. */
const MAX_HEAD_BYTES = 64 * 1024
/**
 * Reads outside a body (response heads, idle keep-alive connections) go into this one shared
 * buffer, so an idle connection pins no memory; bytes that must outlive the read are copied.
 */
const SHARED_BUFFER = Buffer.allocUnsafe(64 * 1024)
const HEAD_END = Buffer.from('\r\n\r\n', 'latin1')

/** Idle connections are closed after this; peers' servers keep theirs for 95 s, so we close first. */
const DEFAULT_IDLE_TIMEOUT_MS = 30_000
/**
 * A relaying node has as many requests to a peer in flight as its clients ask for at once. Keeping
 * only 32 idle closed most connections as bursts of responses completed, and the next requests
 * opened new ones: 17,000 connections for 25,000 relayed blobs under bench/load.ts (mirror target),
 * some of which timed out connecting to the busy peer and failed their request.
 */
const DEFAULT_MAX_IDLE_PER_PEER = 512
/**
 * Connections to one peer being opened at once; further requests wait for one of them, or for a
 * connection a response is done with, whichever comes first. A node relaying to a thousand
 * clients at once otherwise opened a thousand connections to the holder in the same moment: past
 * the holder's listen backlog (511 for Node) the kernel drops the handshakes, they time out
 * (1 s), the holder counts as unreachable, and the blob was answered 404 (bench/load.ts, mirror
 * target: thousands of 404s in 5 runs of 26). Opening 32 at a time costs a loopback or LAN round
 * trip per 32 connections.
 */
const DEFAULT_MAX_DIALS_PER_PEER = 32
/** Requests waiting for a connection to one peer; past this a request fails at once (ERR_BUSY). */
const DEFAULT_MAX_WAITING_PER_PEER = 4096

/**
 * Read buffers of READ_BUFFER_BYTES out at once, over every response. Past it, bodies read into
 * SMALL_READ_BUFFER_BYTES buffers: a node relaying to a thousand clients at once otherwise held
 * up to 4 MiB per response (1.3 GiB RSS measured with bench/load.ts, mirror target).
 */
let maxLargeBuffersOut = 32
/**
 * 128 KiB: at glibc's mmap threshold as the image sets it (MALLOC_MMAP_THRESHOLD_=131072), so
 * each lives in a mapping of its own rather than among the heap's small chunks, and two 64 KiB
 * reads fill one before it is handed on. Under bench/load.ts (mirror target) 64 KiB buffers gave
 * 368 and 427 relayed req/s, 128 KiB ones 498 and 460, for the same bound in bytes.
 */
const SMALL_READ_BUFFER_BYTES = 128 * 1024

const freeBuffers: Buffer[] = []
/**
 * Large buffers out of the free list: held by bodies (delivered, not yet released) and taken by
 * sockets for their next read. Node asks for the next read's buffer as soon as a read completes,
 * so every connection in a body holds one before any byte arrives; counting only delivered
 * buffers let a thousand relays take a fresh 1 MiB buffer each (about 1 GiB RSS under
 * bench/load.ts, mirror target). A connection lets go of the buffer it fills when the body ends or
 * the socket closes.
 */
let largeBuffersOut = 0

/**
 * Small buffers out at once, over every response: with the large ones, the bound on the memory
 * bodies read into (96 MiB). A connection whose body needs a buffer past it stops reading until
 * one comes back (`starved` below). Without a bound a relaying node held as many as its clients
 * asked for: 1,750 of 64 KiB for a thousand relays at once, and its glibc heap grew past 300 MiB
 * (RSS 526-571 MiB, above the DaemonSet's 512 MiB limit) under bench/load.ts, mirror target.
 */
let maxSmallBuffersOut = 512
/**
 * Small buffers are reused too, as many as may be out. A dropped one waits for a garbage
 * collection that nothing prompts: V8 does not count a SharedArrayBuffer's memory as external,
 * so it never collects for them. Keeping 512 of up to 1,750 out made 600 new ones a second
 * under bench/load.ts (mirror target) while the dead ones filled the glibc heap.
 */
const freeSmallBuffers: Buffer[] = []
let smallBuffersOut = 0
/** Buffers promised to woken connections that have not read yet, so one return wakes one. */
let reservedBuffers = 0
/**
 * Connections whose body waits for a read buffer, in the order they stopped. One resumes each
 * time a buffer comes back; a connection leaves the set when it resumes or closes.
 */
const starved = new Set<{ wake: () => void }>()
/** Times a body stopped reading for want of a buffer (spegel_mirror_read_buffer_waits_total). */
let starvedTotal = 0

/**
 * A read buffer out of the pool, with its users counted: the connection filling it, and every
 * chunk of it handed to a body and not yet released. It goes back to the pool when the last one
 * is done, never while a socket may still read into it.
 */
export class PooledBuffer {
  readonly buffer: Buffer
  #users = 1
  constructor (buffer: Buffer) { this.buffer = buffer }
  use (): void { this.#users++ }
  done (): void {
    if (this.#users <= 0) return
    if (--this.#users === 0) giveBuffer(this.buffer)
  }
}

/** Whether a body may take another read buffer within the bound. */
function canTakeBuffer (): boolean {
  // A reservation may be taken from either pool, so it holds a place in both.
  return largeBuffersOut + reservedBuffers < maxLargeBuffersOut || smallBuffersOut + reservedBuffers < maxSmallBuffersOut
}

/** Wakes the connection that waited longest for a buffer, when there is room for one. */
function wakeStarved (): void {
  const next = starved.values().next()
  if (next.done === true || !canTakeBuffer()) return
  starved.delete(next.value)
  reservedBuffers++
  next.value.wake()
}

/** When a body last took a read buffer (for releaseIdleReadBuffers). */
let lastTakeMs = 0

/**
 * A read buffer: large while fewer than maxLargeBuffersOut are out, small otherwise. Callers
 * check canTakeBuffer() first, or hold a reservation.
 */
function takeBuffer (): PooledBuffer {
  lastTakeMs = Date.now()
  if (largeBuffersOut >= maxLargeBuffersOut) {
    smallBuffersOut++
    return new PooledBuffer(freeSmallBuffers.pop() ?? sharedBuffer(SMALL_READ_BUFFER_BYTES))
  }
  largeBuffersOut++
  return new PooledBuffer(freeBuffers.pop() ?? sharedBuffer(READ_BUFFER_BYTES))
}

/**
 * Body buffers live in shared memory so that the hash worker (hash-worker.ts) reads the bytes in
 * place while the same buffer is written to the client; plain buffers would be copied to it.
 */
function sharedBuffer (bytes: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(bytes))
}

function giveBuffer (buffer: Buffer): void {
  if (buffer.length === READ_BUFFER_BYTES) {
    largeBuffersOut--
    if (freeBuffers.length < FREE_BUFFERS_KEPT) freeBuffers.push(buffer)
  } else if (buffer.length === SMALL_READ_BUFFER_BYTES) {
    smallBuffersOut--
    if (freeSmallBuffers.length < maxSmallBuffersOut) freeSmallBuffers.push(buffer)
  }
  // The room goes to the connection that waited longest.
  wakeStarved()
}

/**
 * Chunks a body may hold before its socket pauses: while large buffers are all out, one, so the
 * small buffers spread over many relays rather than four to a relay.
 */
function chunksInFlightLimit (): number {
  return largeBuffersOut >= maxLargeBuffersOut ? 1 : MAX_CHUNKS_IN_FLIGHT
}

/** Read buffers pooled here and not in the free lists, and connections waiting for one (for tests). */
export function readBuffersOut (): { large: number, small: number, starved: number } {
  return { large: largeBuffersOut, small: smallBuffersOut, starved: starved.size }
}

/** Bytes of read buffers out now, and how many times a body waited for one. */
export function readBufferStats (): { bytesOut: number, waitsTotal: number } {
  return {
    bytesOut: largeBuffersOut * READ_BUFFER_BYTES + smallBuffersOut * SMALL_READ_BUFFER_BYTES,
    waitsTotal: starvedTotal
  }
}

/**
 * Lets go of the free read buffers when no body took one for `idleMs`; returns their bytes, which
 * a garbage collection then frees (the heap trimmer runs one). After a burst of relays the pools
 * otherwise kept 96 MiB for good: a relaying node idled at 294 MiB RSS after bench/load.ts
 * (mirror target), 34 MiB of it glibc heap and 28 MiB V8's.
 */
export function releaseIdleReadBuffers (idleMs: number, nowMs = Date.now()): number {
  if (nowMs - lastTakeMs < idleMs) return 0
  const bytes = freeBuffers.length * READ_BUFFER_BYTES + freeSmallBuffers.length * SMALL_READ_BUFFER_BYTES
  freeBuffers.length = 0
  freeSmallBuffers.length = 0
  return bytes
}

/**
 * Sets the bounds on read buffers out (for tests: the defaults take hundreds of connections to
 * reach); returns the previous ones. Only while none is out.
 */
export function setReadBufferBounds (bounds: { large: number, small: number }): { large: number, small: number } {
  if (largeBuffersOut + smallBuffersOut + reservedBuffers > 0) throw new Error('read buffers are out')
  const previous = { large: maxLargeBuffersOut, small: maxSmallBuffersOut }
  maxLargeBuffersOut = bounds.large
  maxSmallBuffersOut = bounds.small
  return previous
}

export interface PeerHttpInit {
  /** A peer that does not accept the connection within this fails the request. */
  connectTimeoutMs: number
  /** Backstop for a peer that accepts and never answers (callers' deadlines come first). */
  headersTimeoutMs: number
  /** A body that delivers nothing for this long while we are reading fails. */
  bodyIdleTimeoutMs: number
  /** Idle keep-alive connections are closed after this (peers keep theirs for 95 s). */
  idleTimeoutMs?: number
  /** Idle connections kept per peer. */
  maxIdlePerPeer?: number
  /** Connections to one peer being opened at once; more requests wait (see DEFAULT_MAX_DIALS_PER_PEER). */
  maxDialsPerPeer?: number
  /** Requests waiting for a connection to one peer before more fail at once. */
  maxWaitingPerPeer?: number
}

export interface PeerHttpRequest {
  method: 'GET' | 'HEAD'
  /** Path and query, already encoded. */
  path: string
  /** Lower-case names. */
  headers: Readonly<Record<string, string>>
  signal: AbortSignal
  bodyIdleTimeoutMs?: number
}

export interface PeerHttpResponse {
  statusCode: number
  /** Lower-case names; the first value of a repeated header. */
  headers: Record<string, string>
  body: PeerBody
}

/** A request that never reached a peer's HTTP layer, or broke before its answer was complete. */
export class PeerHttpError extends Error {
  readonly code: string
  constructor (code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'PeerHttpError'
    this.code = code
  }
}

/** A piece of a body. `release` it once its bytes were written out; it may be reused then. */
export interface BodyChunk {
  readonly data: Buffer
  /** The pooled buffer behind `data`, when there is one. */
  readonly pooled: PooledBuffer | undefined
}

/**
 * The body of one response, read chunk by chunk with `read()` (each chunk `release`d when done),
 * or whole with `text()`, `dump()` or async iteration (copies; for small bodies).
 */
export class PeerBody {
  #queue: BodyChunk[] = []
  #isEnded = false
  #error: Error | undefined
  #isDestroyed = false
  #waiter: ((value: void) => void) | undefined
  /**
   * Pooled buffers behind chunks handed out and not yet released, with how many such chunks each
   * has: the backpressure counts buffers, so the small chunks a slow peer's bytes make (flushed
   * from one buffer as they come) do not pause the socket while they pin nothing more.
   */
  readonly #outstanding = new Map<PooledBuffer, number>()
  /** Chunks released already: a second release of one must not take another user's share. */
  readonly #released = new WeakSet<BodyChunk>()
  #closeListeners: Array<() => void> = []
  #isClosed = false
  /** Set by the connection: called when a pooled chunk comes back, or the consumer gives up. */
  onRelease: (() => void) | undefined
  onDestroy: (() => void) | undefined

  /** Pooled buffers behind the chunks delivered and not yet released. */
  get outstanding (): number { return this.#outstanding.size }
  get isComplete (): boolean { return this.#isEnded && this.#queue.length === 0 }
  get destroyed (): boolean { return this.#isDestroyed }

  /** Takes `data`; a `pooled` buffer behind it counts this chunk as one more user of it. */
  push (data: Buffer, pooled: PooledBuffer | undefined): void {
    if (this.#isDestroyed) return
    if (pooled !== undefined) {
      pooled.use()
      this.#outstanding.set(pooled, (this.#outstanding.get(pooled) ?? 0) + 1)
    }
    this.#queue.push({ data, pooled })
    this.#wake()
  }

  end (): void {
    this.#isEnded = true
    this.#wake()
    if (this.#queue.length === 0) this.markClosed()
  }

  fail (err: Error): void {
    if (this.#isEnded || this.#isDestroyed) return
    this.#error ??= err
    this.#wake()
    this.markClosed()
  }

  /** The next chunk, or null after the last one; rejects when the body broke. */
  async read (): Promise<BodyChunk | null> {
    for (;;) {
      if (this.#isDestroyed) throw this.#error ?? new PeerHttpError('ERR_BODY_DESTROYED', 'body was destroyed')
      const chunk = this.#queue.shift()
      if (chunk !== undefined) {
        if (this.#isEnded && this.#queue.length === 0) this.markClosed()
        return chunk
      }
      if (this.#error !== undefined) throw this.#error
      if (this.#isEnded) return null
      await new Promise<void>((resolve) => { this.#waiter = resolve })
    }
  }

  release (chunk: BodyChunk): void {
    if (chunk.pooled === undefined || this.#released.has(chunk)) return
    this.#released.add(chunk)
    this.#unhold(chunk.pooled)
    this.onRelease?.()
  }

  /** One chunk of `pooled` is done with. */
  #unhold (pooled: PooledBuffer): void {
    const n = this.#outstanding.get(pooled) ?? 0
    if (n <= 1) this.#outstanding.delete(pooled)
    else this.#outstanding.set(pooled, n - 1)
    pooled.done()
  }

  /** Copies of the chunks, for small bodies. */
  async * [Symbol.asyncIterator] (): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        const chunk = await this.read()
        if (chunk === null) return
        const copy = chunk.pooled === undefined ? chunk.data : Buffer.from(chunk.data)
        this.release(chunk)
        yield copy
      }
    } finally {
      if (!this.isComplete) this.destroy()
    }
  }

  async text (): Promise<string> {
    const parts: Buffer[] = []
    for await (const part of this) parts.push(part)
    return Buffer.concat(parts).toString('utf8')
  }

  /** Reads and drops the body; past `limit` bytes it is destroyed instead (the connection is lost). */
  async dump (options: { limit?: number, signal?: AbortSignal } = {}): Promise<void> {
    const limit = options.limit ?? 128 * 1024
    let length = 0
    for (;;) {
      if (options.signal?.aborted === true) {
        this.destroy()
        return
      }
      let chunk: BodyChunk | null
      try {
        chunk = await this.read()
      } catch {
        return
      }
      if (chunk === null) return
      length += chunk.data.length
      this.release(chunk)
      if (length > limit) {
        this.destroy()
        return
      }
    }
  }

  /** Gives up on the body: queued buffers go back, an unfinished connection is closed. */
  destroy (err?: Error): void {
    if (this.#isDestroyed) return
    this.#isDestroyed = true
    if (err !== undefined) this.#error ??= err
    for (const chunk of this.#queue) {
      if (chunk.pooled !== undefined) this.#unhold(chunk.pooled)
    }
    this.#queue = []
    this.#wake()
    this.onDestroy?.()
    this.markClosed()
  }

  /** Called once when the body ended, failed or was destroyed. */
  onClose (listener: () => void): void {
    if (this.#isClosed) listener()
    else this.#closeListeners.push(listener)
  }

  /** Runs the `onClose` listeners, once. Protected: MultiPeerBody, a body of its own making, closes through it. */
  protected markClosed (): void {
    if (this.#isClosed) return
    this.#isClosed = true
    for (const listener of this.#closeListeners.splice(0)) listener()
  }

  #wake (): void {
    const waiter = this.#waiter
    this.#waiter = undefined
    waiter?.()
  }
}

type State = 'connecting' | 'head' | 'body' | 'idle' | 'closed'

/** One keep-alive connection; one request at a time. */
class Connection {
  readonly socket: net.Socket
  state: State = 'connecting'
  /** Set once a request completed on it: a failure before any answer byte may be a stale keep-alive. */
  isReused = false
  #client: PeerHttpClient
  readonly key: string
  #head: Buffer | undefined
  #remaining = 0
  #isUntilClose = false
  #isPaused = false
  #isReusable = true
  #bodyIdleTimeoutMs = 0
  #gotBytes = false
  #body: PeerBody | undefined
  #resolve: ((res: PeerHttpResponse) => void) | undefined
  #reject: ((err: Error) => void) | undefined
  #isHeadRequest = false
  #signal: AbortSignal | undefined
  #onAbort: (() => void) | undefined
  #timer: NodeJS.Timeout | undefined
  /** The error an abort failed the request with (never retried). */
  #abortedBy: Error | undefined
  /**
   * The body's buffer its reads are filling (this connection is one of its users until it moves to
   * the next): bytes [0, #sent) were handed to the body, [#sent, #filled) not yet; Node holds the
   * view from #filled for the socket's next read, so a read in a body lands there.
   */
  #fill: PooledBuffer | undefined
  #filled = 0
  #sent = 0
  #flushTimer: NodeJS.Timeout | undefined
  #isConnected = false
  /** Its place among the connections waiting for a read buffer (see `starved`). */
  #starvedEntry: { wake: () => void } | undefined
  /** Woken from `starved`: one buffer is reserved for its next read. */
  #hasReservation = false
  /** Told when the connection could not be made (not when a request's abort ended the attempt). */
  onDialFailed: ((err: Error) => void) | undefined

  constructor (client: PeerHttpClient, key: string, host: string, port: number, connectTimeoutMs: number) {
    this.#client = client
    this.key = key
    this.socket = net.connect({
      host,
      port,
      noDelay: true,
      onread: {
        buffer: () => {
          if (this.state !== 'body') return SHARED_BUFFER
          // Node asks for the next read's buffer right after each read, even one after which this
          // socket stops reading. Past the bound, none is taken: a read after the wake-up lands
          // in the shared buffer and is copied into the buffer reserved for it (#adopt).
          if (this.#mustWaitForBuffer()) return SHARED_BUFFER
          return (this.#fill ?? this.#takeFill()).buffer.subarray(this.#filled)
        },
        callback: (nread, buffer) => this.#onRead(nread, buffer as Buffer)
      }
    })
    this.#timer = setTimeout(() => { this.#fail(new PeerHttpError('ETIMEDOUT', `connect timed out after ${connectTimeoutMs} ms`)) }, connectTimeoutMs)
    this.#timer.unref()
    this.socket.once('connect', () => {
      this.#isConnected = true
      clearTimeout(this.#timer)
      this.#timer = undefined
    })
    this.socket.on('error', (err) => { this.#fail(err) })
    this.socket.on('end', () => {
      if (this.state === 'body' && this.#isUntilClose) {
        this.#finishBody(false)
        return
      }
      this.#fail(new PeerHttpError('ECONNRESET', 'peer closed the connection'))
    })
    this.socket.on('close', () => {
      this.#fail(new PeerHttpError('ECONNRESET', 'connection closed'))
      // Node reads nothing more into it: this connection's use of the fill ends here.
      this.#dropFill()
    })
    this.socket.on('timeout', () => {
      this.#fail(new PeerHttpError('ETIMEDOUT', this.state === 'body' ? `body delivered nothing for ${this.#bodyIdleTimeoutMs} ms` : 'timed out'))
    })
  }

  /** Sends a request; resolves with the response once its head is in. */
  send (request: PeerHttpRequest, hostPort: string, headersTimeoutMs: number, bodyIdleTimeoutMs: number): Promise<PeerHttpResponse> {
    return new Promise((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
      this.#head = undefined
      this.#gotBytes = false
      this.#isHeadRequest = request.method === 'HEAD'
      this.#bodyIdleTimeoutMs = bodyIdleTimeoutMs
      this.#body = undefined
      if (this.state !== 'connecting') this.state = 'head'
      const signal = request.signal
      const onAbort = (): void => {
        this.#abortedBy = abortError(signal)
        this.#fail(this.#abortedBy)
      }
      if (signal.aborted) {
        onAbort()
        return
      }
      this.#signal = signal
      this.#onAbort = onAbort
      signal.addEventListener('abort', this.#onAbort, { once: true })
      let text = `${request.method} ${request.path} HTTP/1.1\r\nhost: ${hostPort}\r\n`
      for (const [name, value] of Object.entries(request.headers)) text += `${name}: ${value}\r\n`
      text += '\r\n'
      if (/[\r\n]/.test(request.path) || Object.entries(request.headers).some(([n, v]) => /[\r\n]/.test(n) || /[\r\n]/.test(v))) {
        this.#fail(new PeerHttpError('ERR_INVALID_CHAR', 'request path or header contains a line break'))
        return
      }
      if (this.state === 'connecting') {
        this.socket.once('connect', () => {
          if (this.state !== 'connecting') return
          this.state = 'head'
          this.socket.setTimeout(headersTimeoutMs)
          this.socket.write(text, 'latin1')
        })
      } else {
        this.socket.setTimeout(headersTimeoutMs)
        this.socket.write(text, 'latin1')
      }
    })
  }

  #onRead (nread: number, buffer: Buffer): boolean {
    if (this.state !== 'head' && this.state !== 'body') {
      // Bytes nobody asked for (on an idle connection, say): the connection cannot be trusted.
      this.#fail(new PeerHttpError('ERR_UNEXPECTED_DATA', 'peer sent bytes outside a response'))
      return false
    }
    this.#gotBytes = true
    if (this.state === 'head') {
      let bytes = buffer.subarray(0, nread)
      if (this.#head !== undefined) bytes = Buffer.concat([this.#head, bytes])
      const end = bytes.indexOf(HEAD_END)
      if (end === -1) {
        if (bytes.length > MAX_HEAD_BYTES) {
          this.#fail(new PeerHttpError('ERR_HEADERS_OVERFLOW', `response head larger than ${MAX_HEAD_BYTES} bytes`))
          return false
        }
        this.#head = Buffer.from(bytes)
        return true
      }
      this.#head = undefined
      if (!this.#startBody(bytes.toString('latin1', 0, end))) return false
      const rest = bytes.subarray(end + HEAD_END.length)
      if (rest.length > 0) {
        if ((this.state as State) !== 'body') {
          // Bytes after an answer that has no body (HEAD, 204, 304, Content-Length: 0): nothing
          // asked for them, so the connection cannot be trusted with another request.
          this.#fail(new PeerHttpError('ERR_UNEXPECTED_DATA', 'peer sent bytes after an answer without a body'))
          return false
        }
        this.#adopt(rest)
      }
    } else if (this.#fill !== undefined) {
      this.#filledBy(this.#fill, nread)
    } else {
      this.#adopt(buffer.subarray(0, nread))
    }
    if (this.state === 'body' && this.#body !== undefined && this.#body.outstanding >= chunksInFlightLimit()) {
      this.#isPaused = true
      this.socket.setTimeout(0)
      return false
    }
    if (this.state === 'body' && this.#mustWaitForBuffer()) {
      this.#starve()
      return false
    }
    return (this.state as State) !== 'closed'
  }

  /** The body's next read would need a buffer past the bound: no fill, no reservation, no room. */
  #mustWaitForBuffer (): boolean {
    return this.#fill === undefined && !this.#hasReservation && !canTakeBuffer()
  }

  /** Takes the body's next buffer to fill, turning a reservation into it when there is one. */
  #takeFill (): PooledBuffer {
    if (this.#hasReservation) {
      // Nobody else is woken for this buffer: it was promised to this connection.
      this.#hasReservation = false
      reservedBuffers--
    }
    const fill = takeBuffer()
    this.#fill = fill
    this.#filled = 0
    this.#sent = 0
    return fill
  }

  /**
   * Body bytes read into the shared buffer (what followed a head, or the first read after a wait
   * for a buffer) are copied into the buffer the body's next reads fill. A fresh copy per response
   * instead was a 64 KiB malloc that only a garbage collection freed, and the hash worker got it
   * copied once more (a plain buffer is cloned, a shared one read in place): under bench/load.ts
   * (mirror target) those copies were 2,500 mallocs of 64 KiB in 6 s. Past the bound on buffers,
   * or when a head split over reads left more than a small buffer holds (rare), a plain copy.
   */
  #adopt (bytes: Buffer): void {
    if (this.#fill === undefined && (this.#hasReservation || canTakeBuffer())) {
      const fill = this.#takeFill()
      if (bytes.length <= fill.buffer.length) {
        bytes.copy(fill.buffer)
        this.#filledBy(fill, bytes.length)
        return
      }
      this.#fill = undefined
      fill.done()
    }
    this.#deliver(Buffer.from(bytes))
  }

  /**
   * The body's next read would need a buffer past the bound: the socket stops reading until one
   * comes back. Not the peer's fault, so the body's idle timer stops meanwhile.
   */
  #starve (): void {
    this.socket.setTimeout(0)
    if (this.#starvedEntry !== undefined) return
    const entry = {
      wake: () => {
        this.#starvedEntry = undefined
        this.#hasReservation = true
        if (this.state !== 'body') {
          this.#dropReservation()
          return
        }
        // Still held back by its consumer: onRelease resumes it, and the reservation keeps.
        if (this.#isPaused) return
        this.socket.setTimeout(this.#bodyIdleTimeoutMs)
        this.socket.resume()
      }
    }
    // The socket is paused already: #onRead returns false after this, and onRelease calls it
    // only on a socket paused for its consumer.
    this.#starvedEntry = entry
    starved.add(entry)
    starvedTotal++
  }

  /** Leaves the queue for buffers and gives back a reserved one. */
  #dropReservation (): void {
    if (this.#starvedEntry !== undefined) {
      starved.delete(this.#starvedEntry)
      this.#starvedEntry = undefined
    }
    if (this.#hasReservation) {
      this.#hasReservation = false
      reservedBuffers--
      wakeStarved()
    }
  }

  /** Parses the head; false when it was unusable (the request has failed). */
  #startBody (head: string): boolean {
    const lines = head.split('\r\n')
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')
    if (status === null) {
      this.#fail(new PeerHttpError('ERR_INVALID_RESPONSE', `not an HTTP/1.1 response: ${JSON.stringify((lines[0] ?? '').slice(0, 100))}`))
      return false
    }
    const statusCode = Number(status[1])
    const headers: Record<string, string> = {}
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] ?? ''
      const colon = line.indexOf(':')
      if (colon <= 0) continue
      const name = line.slice(0, colon).trim().toLowerCase()
      if (!(name in headers)) headers[name] = line.slice(colon + 1).trim()
    }
    if (statusCode < 200) {
      // Informational answers only follow requests that ask for them (Expect); these never do.
      this.#fail(new PeerHttpError('ERR_INVALID_RESPONSE', `unexpected informational status ${statusCode}`))
      return false
    }
    if ((headers.connection ?? '').toLowerCase().includes('close') || lines[0]?.startsWith('HTTP/1.0') === true) this.#isReusable = false
    const length = headers['content-length']
    this.#isUntilClose = false
    if (this.#isHeadRequest || statusCode === 204 || statusCode === 304) {
      this.#remaining = 0
    } else if (headers['transfer-encoding'] !== undefined) {
      this.#fail(new PeerHttpError('ERR_UNSUPPORTED', `transfer-encoding ${headers['transfer-encoding']} is not supported`))
      return false
    } else if (length !== undefined && /^\d+$/.test(length)) {
      this.#remaining = Number(length)
    } else {
      this.#remaining = Number.POSITIVE_INFINITY
      this.#isUntilClose = true
      this.#isReusable = false
    }
    const body = new PeerBody()
    body.onRelease = () => {
      if (this.#isPaused && this.#body === body && body.outstanding < chunksInFlightLimit() && this.state === 'body') {
        this.#isPaused = false
        // Waiting for a read buffer as well: the wake-up resumes it.
        if (this.#starvedEntry !== undefined) return
        if (this.#mustWaitForBuffer()) {
          this.#starve()
          return
        }
        this.socket.setTimeout(this.#bodyIdleTimeoutMs)
        this.socket.resume()
      }
    }
    body.onDestroy = () => {
      if (this.#body === body && this.state === 'body') this.#fail(new PeerHttpError('ERR_BODY_DESTROYED', 'body was destroyed'))
    }
    this.#body = body
    this.state = 'body'
    this.socket.setTimeout(this.#bodyIdleTimeoutMs)
    const resolve = this.#resolve
    this.#resolve = undefined
    this.#reject = undefined
    resolve?.({ statusCode, headers, body })
    if (this.#remaining === 0) this.#finishBody(true)
    return true
  }

  /** Bytes not in the fill (what followed a head): handed on at once. */
  #deliver (data: Buffer): void {
    const body = this.#body
    if (body === undefined) return
    const part = data.subarray(0, this.#announced(data.length))
    this.#remaining -= part.length
    if (part.length > 0) body.push(part, undefined)
    if (this.#remaining === 0) this.#finishBody(true)
  }

  /** Of `n` bytes read, how many belong to the body; past its Content-Length the connection is spent. */
  #announced (n: number): number {
    if (n <= this.#remaining) return n
    // More than announced on a connection with one request in flight: never reuse it.
    this.#isReusable = false
    return this.#remaining
  }

  /** A read put `nread` bytes into `fill` (this.#fill) at #filled. */
  #filledBy (fill: PooledBuffer, nread: number): void {
    const n = this.#announced(nread)
    this.#filled += n
    this.#remaining -= n
    if (this.#remaining === 0) {
      this.#finishBody(true)
    } else if (fill.buffer.length - this.#filled < MIN_READ_BYTES) {
      // Handed on whole, and the next read takes a fresh buffer.
      this.#dropFill()
    } else if (this.#flushTimer === undefined && this.#filled > this.#sent) {
      this.#flushTimer = setTimeout(() => {
        this.#flushTimer = undefined
        this.#flush()
      }, FLUSH_AFTER_MS)
    }
  }

  /** Hands the fill's unsent bytes to the body. */
  #flush (): void {
    clearTimeout(this.#flushTimer)
    this.#flushTimer = undefined
    const fill = this.#fill
    const body = this.#body
    if (fill === undefined || this.#filled === this.#sent) return
    const data = fill.buffer.subarray(this.#sent, this.#filled)
    this.#sent = this.#filled
    if (body !== undefined && this.state === 'body') body.push(data, fill)
  }

  /** Hands on what the fill holds and lets go of it (the next read of a body takes a fresh one). */
  #dropFill (): void {
    this.#flush()
    const fill = this.#fill
    this.#fill = undefined
    fill?.done()
  }

  #finishBody (isComplete: boolean): void {
    // The fill's last bytes first; its buffer stays the connection's only while a body reads.
    this.#dropFill()
    this.#dropReservation()
    const body = this.#body
    this.#detachSignal()
    body?.end()
    this.socket.setTimeout(0)
    if (isComplete && this.#isReusable) {
      this.state = 'idle'
      this.isReused = true
      this.#body = undefined
      if (this.#isPaused) {
        this.#isPaused = false
        this.socket.resume()
      }
      this.#client.release(this)
    } else {
      this.state = 'closed'
      this.socket.destroy()
    }
  }

  #detachSignal (): void {
    if (this.#onAbort !== undefined) this.#signal?.removeEventListener('abort', this.#onAbort)
    this.#onAbort = undefined
    this.#signal = undefined
  }

  #fail (err: Error): void {
    if (this.state === 'closed') return
    // What arrived before the failure is the body's: a consumer that resumes elsewhere (a Range
    // from the first byte it lacks) then asks for less.
    if (this.state === 'body') this.#flush()
    const wasIdle = this.state === 'idle'
    this.state = 'closed'
    clearTimeout(this.#timer)
    this.#detachSignal()
    const reject = this.#reject
    this.#resolve = undefined
    this.#reject = undefined
    const isAbort = this.#abortedBy !== undefined && err === this.#abortedBy
    if (!this.#isConnected && !isAbort) this.onDialFailed?.(err)
    this.#dropReservation()
    if (reject !== undefined) {
      reject(this.isReused && !this.#gotBytes && !isAbort ? new StaleConnectionError(err) : err)
    }
    this.#body?.fail(err)
    this.#body = undefined
    this.socket.destroy()
    if (wasIdle) this.#client.forget(this)
  }

  /** Closes an idle connection. */
  close (): void {
    if (this.state === 'idle') this.#fail(new PeerHttpError('ERR_CLOSED', 'client closed'))
  }
}

/** A kept-alive connection failed before any answer byte: the peer closed it meanwhile. */
class StaleConnectionError extends Error {
  constructor (cause: Error) {
    super(cause.message, { cause })
    this.name = 'StaleConnectionError'
  }
}

function abortError (signal: AbortSignal): Error {
  const reason: unknown = signal.reason
  if (reason instanceof Error) return reason
  return new DOMException('This operation was aborted', 'AbortError')
}

/**
 * A request waiting for a connection to a peer: it is handed an idle one, told to try again (a
 * dial finished, so it may open one), or failed with the error a dial to that peer just met.
 */
interface Waiter {
  settle: (outcome: Connection | 'retry' | Error) => void
}

/** Dials under way to one peer and the requests waiting behind them (entry dropped when both are none). */
interface Dials {
  dialing: number
  waiting: Set<Waiter>
}

/** Fails every request waiting in `dials` with `err`. */
function failWaiters (dials: Dials, err: Error): void {
  const waiters = [...dials.waiting]
  dials.waiting.clear()
  for (const w of waiters) w.settle(err)
}

/** The pool key and Host header of a peer: `host:port`, an IPv6 address in brackets. */
function hostPortOf (host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

/** Keep-alive connections to peers, one pool per `host:port`. */
export class PeerHttpClient {
  readonly #init: PeerHttpInit
  readonly #idle = new Map<string, Connection[]>()
  readonly #idleSince = new Map<Connection, number>()
  /** Per `host:port` with a dial under way or a request waiting; bounded by the peers asked at once. */
  readonly #dials = new Map<string, Dials>()
  readonly #maxDials: number
  readonly #maxWaiting: number
  #sweeper: NodeJS.Timeout | undefined
  #isClosed = false

  constructor (init: PeerHttpInit) {
    this.#init = init
    this.#maxDials = init.maxDialsPerPeer ?? DEFAULT_MAX_DIALS_PER_PEER
    this.#maxWaiting = init.maxWaitingPerPeer ?? DEFAULT_MAX_WAITING_PER_PEER
    if (!Number.isSafeInteger(this.#maxDials) || this.#maxDials < 1) throw new RangeError(`maxDialsPerPeer must be a positive integer, got ${this.#maxDials}`)
    if (!Number.isSafeInteger(this.#maxWaiting) || this.#maxWaiting < 0) throw new RangeError(`maxWaitingPerPeer must be a non-negative integer, got ${this.#maxWaiting}`)
  }

  /** Sends `request` to `host:port`; resolves with the response head, its body still to read. */
  async request (host: string, port: number, request: PeerHttpRequest): Promise<PeerHttpResponse> {
    if (this.#isClosed) throw new PeerHttpError('ERR_CLOSED', 'client is closed')
    const hostPort = hostPortOf(host, port)
    const bodyIdle = request.bodyIdleTimeoutMs ?? this.#init.bodyIdleTimeoutMs
    for (;;) {
      let connection = this.#take(hostPort) ?? this.#dial(hostPort, host, port)
      if (connection === undefined) {
        const handed = await this.#wait(hostPort, request.signal)
        // Closed by its peer between the hand-over and now: it was never ours to use.
        if (handed === undefined || handed.state !== 'idle' || handed.socket.destroyed) continue
        if (request.signal.aborted) {
          this.release(handed)
          throw abortError(request.signal)
        }
        connection = handed
      }
      try {
        return await connection.send(request, hostPort, this.#init.headersTimeoutMs, bodyIdle)
      } catch (err) {
        // A kept-alive connection the peer closed meanwhile: the request never reached it. A new
        // connection is never stale, so this ends.
        if (err instanceof StaleConnectionError && !request.signal.aborted) continue
        throw err instanceof StaleConnectionError ? err.cause : err
      }
    }
  }

  /** Requests waiting for a connection to `host:port` (for tests and metrics). */
  waiting (host: string, port: number): number {
    return this.#dials.get(hostPortOf(host, port))?.waiting.size ?? 0
  }

  /** A new connection, unless `maxDialsPerPeer` are being opened to that peer already. */
  #dial (key: string, host: string, port: number): Connection | undefined {
    let dials = this.#dials.get(key)
    if (dials !== undefined && dials.dialing >= this.#maxDials) return undefined
    if (dials === undefined) {
      dials = { dialing: 0, waiting: new Set() }
      this.#dials.set(key, dials)
    }
    dials.dialing++
    const connection = new Connection(this, key, host, port, this.#init.connectTimeoutMs)
    const d = dials
    let isCounted = true
    /** The dial ended: connected, or closed for a reason other than the peer (`undefined`), or failed. */
    const done = (err: Error | undefined): void => {
      if (!isCounted) return
      isCounted = false
      d.dialing--
      if (err === undefined) {
        // One waiter takes the freed slot (the others wait for connections coming free or for it).
        this.#nextWaiter(key, d)?.settle('retry')
      } else if (d.waiting.size > 0) {
        // A peer that did not take this connection will not take theirs: they fail now instead of
        // each paying the connect timeout in turn, 32 at a time.
        const code = (err as { code?: unknown }).code
        failWaiters(d, new PeerHttpError(typeof code === 'string' ? code : 'ECONNREFUSED', `a connection to ${key} just failed: ${err.message}`, { cause: err }))
      }
      this.#forgetIfIdle(key, d)
    }
    connection.socket.once('connect', () => { done(undefined) })
    connection.onDialFailed = (err) => { done(err) }
    // After onDialFailed when the peer failed it; otherwise the request's abort or the client's close ended it.
    connection.socket.once('close', () => { done(undefined) })
    return connection
  }

  /** Waits for a connection to `key` to come free or for a dial slot (undefined: try again). */
  async #wait (key: string, signal: AbortSignal): Promise<Connection | undefined> {
    if (signal.aborted) throw abortError(signal)
    const dials = this.#dials.get(key)
    // No dial under way any more (it ended between the checks): try again at once.
    if (dials === undefined) return undefined
    if (dials.waiting.size >= this.#maxWaiting) {
      throw new PeerHttpError('ERR_BUSY', `${dials.waiting.size} requests already wait for a connection to ${key}`)
    }
    return await new Promise<Connection | undefined>((resolve, reject) => {
      const onAbort = (): void => {
        dials.waiting.delete(waiter)
        this.#forgetIfIdle(key, dials)
        reject(abortError(signal))
      }
      const waiter: Waiter = {
        settle: (outcome) => {
          signal.removeEventListener('abort', onAbort)
          if (outcome === 'retry') resolve(undefined)
          else if (outcome instanceof Error) reject(outcome)
          else resolve(outcome)
        }
      }
      dials.waiting.add(waiter)
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** The request that waited longest for `key`, out of the queue. */
  #nextWaiter (key: string, dials: Dials): Waiter | undefined {
    const first = dials.waiting.values().next()
    if (first.done === true) return undefined
    dials.waiting.delete(first.value)
    this.#forgetIfIdle(key, dials)
    return first.value
  }

  /** Drops the entry of `key` once no dial is under way and nobody waits. */
  #forgetIfIdle (key: string, dials: Dials): void {
    if (dials.dialing === 0 && dials.waiting.size === 0 && this.#dials.get(key) === dials) this.#dials.delete(key)
  }

  /** A connection whose response is complete comes back here. */
  release (connection: Connection): void {
    if (this.#isClosed) {
      connection.close()
      return
    }
    // A request waiting for this peer takes it at once.
    const dials = this.#dials.get(connection.key)
    const waiter = dials === undefined ? undefined : this.#nextWaiter(connection.key, dials)
    if (waiter !== undefined) {
      waiter.settle(connection)
      return
    }
    let list = this.#idle.get(connection.key)
    if (list === undefined) {
      list = []
      this.#idle.set(connection.key, list)
    }
    if (list.length >= (this.#init.maxIdlePerPeer ?? DEFAULT_MAX_IDLE_PER_PEER)) {
      connection.close()
      return
    }
    list.push(connection)
    // An idle connection never keeps the process alive; one in use does, like any request.
    connection.socket.unref()
    this.#idleSince.set(connection, Date.now())
    this.#sweep()
  }

  forget (connection: Connection): void {
    this.#idleSince.delete(connection)
    const list = this.#idle.get(connection.key)
    if (list === undefined) return
    const i = list.indexOf(connection)
    if (i !== -1) list.splice(i, 1)
    if (list.length === 0) this.#idle.delete(connection.key)
  }

  #take (key: string): Connection | undefined {
    const list = this.#idle.get(key)
    if (list === undefined) return undefined
    for (;;) {
      const connection = list.pop()
      if (connection === undefined) {
        this.#idle.delete(key)
        return undefined
      }
      this.#idleSince.delete(connection)
      if (connection.state === 'idle' && !connection.socket.destroyed) {
        if (list.length === 0) this.#idle.delete(key)
        connection.socket.ref()
        return connection
      }
    }
  }

  /** Closes connections idle for longer than the idle timeout; one unref'd timer for all. */
  #sweep (): void {
    if (this.#sweeper !== undefined) return
    const idleMs = this.#init.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS
    this.#sweeper = setTimeout(() => {
      this.#sweeper = undefined
      const now = Date.now()
      for (const [connection, since] of this.#idleSince) {
        if (now - since >= idleMs) connection.close()
      }
      if (this.#idleSince.size > 0) this.#sweep()
    }, Math.max(100, Math.floor(idleMs / 2)))
    this.#sweeper.unref()
  }

  async close (): Promise<void> {
    this.#isClosed = true
    clearTimeout(this.#sweeper)
    for (const dials of this.#dials.values()) failWaiters(dials, new PeerHttpError('ERR_CLOSED', 'client is closed'))
    for (const connection of [...this.#idleSince.keys()]) connection.close()
    this.#idle.clear()
    this.#idleSince.clear()
  }
}
