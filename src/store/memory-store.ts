import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { NotFoundError, StoreUnavailableError } from './errors.js'
import type {
  Descriptor, OpenOptions, Store, StoreCallOptions, StoreChange, StoreListener, StoreReadiness
} from './types.js'

const DEFAULT_CHUNK_BYTES = 64 * 1024

export interface MemoryStoreInit {
  /** Defaults to `memory`. */
  name?: string
  /**
   * Size of the chunks `open` streams. Small chunks make a large blob arrive in many
   * pieces, so tests exercise backpressure and aborts mid-body like a file stream would.
   */
  chunkBytes?: number
}

interface Blob {
  readonly bytes: Buffer
  readonly mediaType: string
}

/** In-process Store for tests: blobs and tags in maps, readiness switchable. */
export class MemoryStore implements Store {
  readonly name: string
  readonly #chunkBytes: number
  readonly #blobs = new Map<string, Blob>()
  readonly #tags = new Map<string, string>()
  readonly #listeners = new Set<StoreListener>()
  #readiness: StoreReadiness = { isReady: true }

  constructor (init: MemoryStoreInit = {}) {
    this.name = init.name ?? 'memory'
    this.#chunkBytes = init.chunkBytes ?? DEFAULT_CHUNK_BYTES
    if (!Number.isInteger(this.#chunkBytes) || this.#chunkBytes < 1) {
      throw new RangeError(`chunkBytes must be a positive integer, got ${String(init.chunkBytes)}`)
    }
  }

  readiness (): StoreReadiness {
    return this.#readiness
  }

  /**
   * Going unready makes every call reject with StoreUnavailableError and announces an
   * empty snapshot (peers must stop being sent here); going ready announces everything again.
   */
  setReadiness (isReady: boolean, reason?: string): void {
    const wasReady = this.#readiness.isReady
    this.#readiness = isReady ? { isReady } : { isReady, reason: reason ?? `${this.name}: not ready` }
    if (wasReady !== isReady) this.#emit({ type: 'snapshot', keys: this.keys() })
  }

  /** Stores bytes under their sha256 digest; returns the descriptor. */
  put (bytes: Uint8Array | string, mediaType = 'application/octet-stream'): Descriptor {
    // Copy so later mutation of the caller's buffer cannot change content behind its digest.
    const copy = Buffer.from(typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes)
    const digest = `sha256:${createHash('sha256').update(copy).digest('hex')}`
    const isNew = !this.#blobs.has(digest)
    this.#blobs.set(digest, { bytes: copy, mediaType })
    if (isNew) this.#emitIfReady({ type: 'add', keys: [digest] })
    return { digest, sizeBytes: copy.length, mediaType }
  }

  /**
   * Points `registry/repository:tag` at a digest. The digest need not be stored, as in
   * containerd an image record can outlive its content.
   */
  tag (ref: string, digest: string): void {
    const slash = ref.indexOf('/')
    if (slash <= 0 || ref.lastIndexOf(':') < ref.lastIndexOf('/')) {
      throw new TypeError(`tag reference must look like registry/repository:tag, got ${ref}`)
    }
    this.#tags.set(ref, digest)
    this.#emitIfReady({ type: 'add', keys: [ref] })
  }

  untag (ref: string): boolean {
    const existed = this.#tags.delete(ref)
    if (existed) this.#emitIfReady({ type: 'remove', keys: [ref] })
    return existed
  }

  remove (digest: string): boolean {
    const existed = this.#blobs.delete(digest)
    if (existed) this.#emitIfReady({ type: 'remove', keys: [digest] })
    return existed
  }

  async resolve (ref: string, options: StoreCallOptions = {}): Promise<string> {
    this.#check(options)
    const digest = this.#tags.get(ref)
    if (digest === undefined) throw new NotFoundError(`tag ${ref}`)
    return digest
  }

  async stat (digest: string, options: StoreCallOptions = {}): Promise<Descriptor> {
    this.#check(options)
    const blob = this.#get(digest)
    return { digest, sizeBytes: blob.bytes.length, mediaType: blob.mediaType }
  }

  async open (digest: string, options: OpenOptions = {}): Promise<Readable> {
    this.#check(options)
    const { bytes } = this.#get(digest)
    let view = bytes
    if (options.range !== undefined) {
      const { start, end } = options.range
      // Callers resolve ranges against stat() first, so a bad one here is a caller bug.
      if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start > end || end >= bytes.length) {
        throw new RangeError(`range ${start}-${end} is outside content of ${bytes.length} bytes`)
      }
      view = bytes.subarray(start, end + 1)
    }
    const readableOptions = options.signal === undefined ? { objectMode: false } : { objectMode: false, signal: options.signal }
    return Readable.from(chunks(view, this.#chunkBytes), readableOptions)
  }

  keys (): readonly string[] {
    if (!this.#readiness.isReady) return []
    return [...this.#blobs.keys(), ...this.#tags.keys()]
  }

  subscribe (listener: StoreListener): () => void {
    // Wrap so the same function subscribed twice gets two independent subscriptions.
    const entry: StoreListener = (change) => { listener(change) }
    this.#listeners.add(entry)
    return () => { this.#listeners.delete(entry) }
  }

  #check (options: StoreCallOptions): void {
    options.signal?.throwIfAborted()
    if (!this.#readiness.isReady) {
      throw new StoreUnavailableError(this.#readiness.reason ?? `${this.name}: not ready`)
    }
  }

  #get (digest: string): Blob {
    const blob = this.#blobs.get(digest)
    if (blob === undefined) throw new NotFoundError(`content ${digest}`)
    return blob
  }

  #emitIfReady (change: StoreChange): void {
    if (this.#readiness.isReady) this.#emit(change)
  }

  #emit (change: StoreChange): void {
    const errors: unknown[] = []
    for (const listener of [...this.#listeners]) {
      try {
        listener(change)
      } catch (err) {
        // One faulty listener must not starve the others of the change.
        errors.push(err)
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'store listener failed')
  }
}

function * chunks (bytes: Buffer, chunkBytes: number): Generator<Buffer> {
  for (let offset = 0; offset < bytes.length; offset += chunkBytes) {
    yield bytes.subarray(offset, Math.min(offset + chunkBytes, bytes.length))
  }
}
