import { createHash, type Hash } from 'node:crypto'
import { Worker } from 'node:worker_threads'

/**
 * SHA-256 of relayed blobs on a worker thread.
 *
 * Why: a node relaying a blob from a peer checks its digest end to end, and on the main thread
 * that hash was more than half of the relay's cost (0.67 of 1.24 CPU s per GiB, bench/datapath.ts
 * blob-mirror row); the main thread sat at one full core while the relay ran at 0.76 of nginx's
 * relay, which checks nothing. Here the main thread only posts where the bytes are: the peer
 * client reads into SharedArrayBuffer-backed buffers (src/registry/peer-http.ts), so the worker
 * reads the same memory, and a buffer goes back to its pool only once both the socket wrote it
 * and the worker hashed it. Bytes that are not in shared memory are copied by postMessage.
 *
 * One worker for the whole process, started at the first use: hashing is sequential per blob, and
 * one thread hashes as fast as the main thread did, so many relays at once are never slower
 * than before. If the worker cannot start, sessions hash inline; if it dies, the relays under way
 * fail their digest (their clients see a broken response and retry; no peer is blamed) and later
 * sessions hash inline.
 */

type ToWorker =
  | { type: 'start', id: number, algorithm: string }
  | { type: 'update', id: number, data: Uint8Array }
  | { type: 'digest', id: number }
  | { type: 'drop', id: number }
type FromWorker =
  | { type: 'hashed', id: number }
  | { type: 'digest', id: number, hex: string }
  | { type: 'failed', id: number, message: string }

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const hashes = new Map()
parentPort.on('message', (m) => {
  try {
    if (m.type === 'start') {
      // Never answered (the main thread counts replies to updates and digests only): a failure
      // here is reported by the session's digest.
      try { hashes.set(m.id, createHash(m.algorithm)) } catch (err) { hashes.set(m.id, { error: String(err && err.message || err) }) }
      return
    }
    if (m.type === 'drop') { hashes.delete(m.id); return }
    // Every update and digest is answered, also for a dropped session: the main thread counts replies.
    const hash = hashes.get(m.id)
    if (m.type === 'update') { if (hash !== undefined && hash.error === undefined) hash.update(m.data); parentPort.postMessage({ type: 'hashed', id: m.id }); return }
    if (m.type === 'digest') {
      if (hash === undefined || hash.error !== undefined) { hashes.delete(m.id); parentPort.postMessage({ type: 'failed', id: m.id, message: hash === undefined ? 'unknown session' : hash.error }); return }
      hashes.delete(m.id)
      parentPort.postMessage({ type: 'digest', id: m.id, hex: hash.digest('hex') })
    }
  } catch (err) {
    hashes.delete(m.id)
    parentPort.postMessage({ type: 'failed', id: m.id, message: String(err && err.message || err) })
  }
})
`

interface SessionState {
  /** Callbacks of chunks posted and not yet hashed, in order. */
  readonly hashed: Array<() => void>
  onDigest?: (hex: string) => void
  onFailed?: (err: Error) => void
}

class HashWorkerPool {
  #worker: Worker | undefined
  #isBroken = false
  #nextId = 1
  #pending = 0
  readonly #sessions = new Map<number, SessionState>()

  get pending (): number { return this.#pending }

  /** The worker, started on first use; undefined when it cannot run (then hash inline). */
  worker (): Worker | undefined {
    if (this.#isBroken) return undefined
    if (this.#worker !== undefined) return this.#worker
    try {
      const worker = new Worker(WORKER_SOURCE, { eval: true, name: 'spegel-hash' })
      worker.on('message', (m: FromWorker) => { this.#onMessage(m) })
      worker.on('error', (err) => { this.#broken(err) })
      worker.on('exit', (code) => { this.#broken(new Error(`hash worker exited with code ${code}`)) })
      // An idle worker must not keep the process alive (see #awaited); after the listeners,
      // because adding a 'message' listener refs the worker again.
      worker.unref()
      this.#worker = worker
      return worker
    } catch {
      this.#isBroken = true
      return undefined
    }
  }

  register (state: SessionState): number {
    const id = this.#nextId++
    this.#sessions.set(id, state)
    return id
  }

  /** Forgets a session; returns the callbacks of its chunks still queued (the caller runs them). */
  unregister (id: number): Array<() => void> {
    const state = this.#sessions.get(id)
    if (state === undefined) return []
    this.#sessions.delete(id)
    this.#pending -= state.hashed.length
    this.#worker?.postMessage({ type: 'drop', id } satisfies ToWorker)
    return state.hashed.splice(0)
  }

  post (message: ToWorker, isChunk: boolean): void {
    if (isChunk) this.#pending++
    if (message.type === 'update' || message.type === 'digest') this.#expectReply(1)
    this.#worker?.postMessage(message)
  }

  /**
   * Replies still expected from the worker. While there are any, the worker keeps the process
   * alive, as a socket with a read pending would: someone awaits the answer.
   */
  #awaited = 0
  #expectReply (delta: number): void {
    const before = this.#awaited
    this.#awaited = Math.max(0, before + delta)
    if (before === 0 && this.#awaited > 0) this.#worker?.ref()
    else if (before > 0 && this.#awaited === 0) this.#worker?.unref()
  }

  #onMessage (m: FromWorker): void {
    // Every update and digest gets exactly one reply, also for sessions dropped meanwhile.
    this.#expectReply(-1)
    const state = this.#sessions.get(m.id)
    if (state === undefined) return
    if (m.type === 'hashed') {
      this.#pending--
      state.hashed.shift()?.()
    } else if (m.type === 'digest') {
      this.#sessions.delete(m.id)
      state.onDigest?.(m.hex)
    } else {
      this.#fail(m.id, state, new Error(`hash worker: ${m.message}`))
    }
  }

  #fail (id: number, state: SessionState, err: Error): void {
    this.#sessions.delete(id)
    this.#pending -= state.hashed.length
    // The bytes were not hashed, but their buffers must still go back to their pools.
    for (const done of state.hashed.splice(0)) done()
    state.onFailed?.(err)
  }

  #broken (err: Error): void {
    if (this.#isBroken) return
    this.#isBroken = true
    this.#worker = undefined
    this.#awaited = 0
    for (const [id, state] of [...this.#sessions]) this.#fail(id, state, err)
  }

  /** For tests: ends the worker (sessions in progress fail; later ones hash inline). */
  async terminate (): Promise<void> {
    const worker = this.#worker
    if (worker === undefined) return
    await worker.terminate()
  }
}

const pool = new HashWorkerPool()

/** Chunks waiting for the worker, over the whole process (for tests and metrics). */
export function hashChunksPending (): number { return pool.pending }

/** For tests: stops the worker as a crash would. */
export async function terminateHashWorker (): Promise<void> { await pool.terminate() }

/**
 * One blob's hash. `update` takes the next bytes and calls `onHashed` once the hash no longer
 * needs them (at once when hashing inline); `digest` resolves with the hex digest of all of them.
 * A session whose worker died rejects `digest`: the bytes it got are not known to be hashed.
 */
export class HashSession {
  readonly #algorithm: string
  readonly #state: SessionState = { hashed: [] }
  #id: number | undefined
  #inline: Hash | undefined
  #failure: Error | undefined
  #isDone = false

  constructor (algorithm: string, options: { isOffloaded?: boolean } = {}) {
    this.#algorithm = algorithm
    const worker = options.isOffloaded === false ? undefined : pool.worker()
    if (worker === undefined) {
      this.#inline = createHash(algorithm)
      return
    }
    this.#state.onFailed = (err) => { this.#failure ??= err }
    this.#id = pool.register(this.#state)
    pool.post({ type: 'start', id: this.#id, algorithm }, false)
  }

  /** True when the bytes go to the worker thread (false: hashed inline on this thread). */
  get isOffloaded (): boolean { return this.#id !== undefined }

  update (data: Uint8Array, onHashed: () => void): void {
    if (this.#isDone) throw new Error('hash session already finished')
    if (this.#inline !== undefined) {
      this.#inline.update(data)
      onHashed()
      return
    }
    if (this.#failure !== undefined) {
      onHashed()
      return
    }
    // Shared memory is read by the worker in place; other bytes are copied (just the view: a
    // plain view would make postMessage copy the whole buffer behind it). Either way `onHashed`
    // waits for the worker, so the queue never holds more than the callers' own buffers: the peer
    // client pauses its socket while its buffers are out, which bounds it.
    // A view of a whole buffer is cloned as it is; a slice would be one more copy of it.
    const isWhole = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength
    const shared = data.buffer instanceof SharedArrayBuffer || isWhole ? data : Uint8Array.prototype.slice.call(data)
    this.#state.hashed.push(onHashed)
    pool.post({ type: 'update', id: this.#id as number, data: shared }, true)
  }

  /** The digest of every byte given to `update`, as hex. */
  async digest (): Promise<string> {
    if (this.#isDone) throw new Error('hash session already finished')
    this.#isDone = true
    if (this.#inline !== undefined) return this.#inline.digest('hex')
    if (this.#failure !== undefined) throw this.#failure
    const id = this.#id as number
    return await new Promise<string>((resolve, reject) => {
      this.#state.onDigest = resolve
      this.#state.onFailed = reject
      pool.post({ type: 'digest', id }, false)
    })
  }

  /** Gives up on the hash (the stream failed): chunks still queued are released at once. */
  abort (): void {
    if (this.#isDone && this.#id === undefined) return
    this.#isDone = true
    if (this.#id !== undefined) for (const done of pool.unregister(this.#id)) done()
  }
}
