import type { Readable } from 'node:stream'
import type { Logger } from '../observability/logger.js'
import { fingerprintMediaType, MEDIA_TYPE_OCTET_STREAM, MEDIA_TYPE_SNIFF_LIMIT_BYTES, type ReferenceFilter } from '../oci/index.js'
import { NotFoundError, StoreUnavailableError } from '../store/errors.js'
import type { Descriptor, ImageLister, ImageSummary, OpenOptions, Store, StoreCallOptions, StoreChange, StoreListener, StoreReadiness } from '../store/types.js'
import { isGrpcNotFound, type ContainerdClient } from './client.js'
import { ContentReader } from './content-reader.js'
import { ImageIndex, type AdvertisedCounts } from './image-index.js'
import { ImageWalker } from './image-walker.js'
import { IndexSession } from './session.js'
import type { ContainerdSupervisor } from './supervisor.js'
import { INDEX_RETAIN_MS, REQUEST_CALL_TIMEOUT_MS } from './constants.js'

export interface ContainerdStoreComponents {
  log: Logger
  supervisor: ContainerdSupervisor
}

export interface ContainerdStoreInit {
  /** Content store root for direct reads; empty means ask containerd (introspection). */
  contentPath: string
  filters: readonly ReferenceFilter[]
  /** How long the index outlives a lost session when the content directory is readable (default INDEX_RETAIN_MS). */
  retainIndexMs?: number
}

/**
 * The node's containerd as a Store: an index of every image (tags and the digests really
 * present in the content store), kept up to date from events, rebuilt on every reconnect.
 *
 * When containerd goes away, the blobs stay on disk. With a readable content directory the
 * index stays advertised and served for `retainIndexMs`: everything advertised can still be
 * served, so a containerd restart costs peers nothing (no withdrawal, no re-advertising). Only
 * what needs containerd fails (unknown tags and digests, gRPC reads), with
 * StoreUnavailableError. Without a content directory nothing can be served, so the index is
 * withdrawn at once.
 */
export class ContainerdStore implements Store, ImageLister {
  readonly name = 'containerd'
  readonly #log: Logger
  readonly #supervisor: ContainerdSupervisor
  readonly #index = new ImageIndex()
  readonly #reader: ContentReader
  readonly #session: IndexSession
  readonly #listeners = new Set<StoreListener>()
  readonly #retainIndexMs: number
  /** A full listing is indexed and has not been withdrawn since. */
  #hasIndex = false
  /** Signal of the running session: gRPC reads end with it, so a frozen containerd never holds a request. */
  #sessionSignal: AbortSignal | undefined
  /** When the session that built the retained index was lost. */
  #lostAtMs: number | undefined
  #withdrawTimer: NodeJS.Timeout | undefined

  constructor (components: ContainerdStoreComponents, init: ContainerdStoreInit) {
    this.#log = components.log.child({ component: 'containerd-store' })
    this.#supervisor = components.supervisor
    this.#retainIndexMs = init.retainIndexMs ?? INDEX_RETAIN_MS
    this.#reader = new ContentReader({ log: this.#log }, { contentPath: init.contentPath })
    const walker = new ImageWalker({ log: this.#log }, { filters: init.filters })
    this.#session = new IndexSession(
      { log: this.#log, index: this.#index, walker, reader: this.#reader, emit: (change) => { this.#emit(change) } },
      { isLooseContentAdvertised: init.filters.length === 0 }
    )
    components.supervisor.onSession({
      run: async (client, signal) => { await this.#run(client, signal) },
      stopped: () => { this.#stopped() }
    })
  }

  /**
   * Not ready as soon as containerd is gone, with its reason: new images go unseen and unknown
   * tags cannot be resolved, and operators must learn that at once. Readiness does not decide
   * what peers are sent here (the index does), so the retained index keeps serving them.
   */
  readiness (): StoreReadiness {
    const state = this.#supervisor.state()
    if (state.name === 'connected') return this.#hasIndex ? { isReady: true } : { isReady: false, reason: 'containerd: listing images' }
    const reason = state.reason ?? `containerd: ${state.name}`
    if (this.#isServing()) return { isReady: false, reason: `${reason}; still serving its last index from disk` }
    return { isReady: false, reason }
  }

  keys (): readonly string[] {
    return this.#index.keys()
  }

  subscribe (listener: StoreListener): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /** Per registry: tags, image roots and content digests advertised (Spegel's gauges). */
  advertisedCounts (): Map<string, AdvertisedCounts> {
    return this.#index.advertisedCounts()
  }

  images (): ImageSummary[] {
    const out: ImageSummary[] = []
    for (const [name, image] of this.#index.images()) {
      out.push({
        name,
        registry: image.registry,
        repository: image.repository,
        ...(image.tag === undefined ? {} : { tag: image.tag.slice(image.tag.lastIndexOf(':') + 1) }),
        digest: image.targetDigest,
        sizeBytes: image.sizeBytes,
        digests: image.digests
      })
    }
    return out
  }

  /** Registries of the images held now (a closed set for metric labels). */
  registries (): Set<string> {
    return this.#index.registries()
  }

  /** Direct-read directory in use, or undefined when bytes come through gRPC. */
  contentDirectory (): string | undefined {
    return this.#reader.directory()
  }

  /** Where containerd's content store lives, readable yet or not (see ContentReader.candidate). */
  contentRoot (): string | undefined {
    return this.#reader.candidate()
  }

  async resolve (ref: string, options: StoreCallOptions = {}): Promise<string> {
    options.signal?.throwIfAborted()
    const indexed = this.#index.target(ref)
    if (indexed !== undefined) return indexed
    const client = this.#client()
    try {
      const image = await client.getImage(ref, { timeoutMs: REQUEST_CALL_TIMEOUT_MS, signal: this.#callSignal(options.signal) })
      return image.target.digest
    } catch (err) {
      throw this.#translate(err, `image ${ref}`)
    }
  }

  async stat (digest: string, options: StoreCallOptions = {}): Promise<Descriptor> {
    options.signal?.throwIfAborted()
    // Digests from our own walk are known to be in this namespace: a file stat is enough.
    const knownType = this.#index.mediaType(digest)
    if (knownType !== undefined) {
      const sizeBytes = await this.#reader.fileSize(digest)
      if (sizeBytes !== undefined) return { digest, sizeBytes, mediaType: knownType }
    }
    const client = this.#client()
    let sizeBytes: number
    try {
      sizeBytes = (await client.info(digest, { timeoutMs: REQUEST_CALL_TIMEOUT_MS, signal: this.#callSignal(options.signal) })).sizeBytes
    } catch (err) {
      throw this.#translate(err, `content ${digest}`)
    }
    const mediaType = knownType ?? await this.#sniffMediaType(client, digest, sizeBytes, options)
    return { digest, sizeBytes, mediaType }
  }

  async open (digest: string, options: OpenOptions = {}): Promise<Readable> {
    options.signal?.throwIfAborted()
    await this.#reader.recheck()
    if (this.#reader.directory() !== undefined) return await this.#reader.openFile(digest, options.range, options.signal)
    // No readable content directory: stream through containerd (about 10x slower).
    const client = this.#client()
    const signal = this.#callSignal(options.signal)
    try {
      await client.info(digest, { timeoutMs: REQUEST_CALL_TIMEOUT_MS, signal })
    } catch (err) {
      throw this.#translate(err, `content ${digest}`)
    }
    return this.#reader.openThroughGrpc(client, digest, options.range, signal === undefined ? {} : { signal })
  }

  #isServing (): boolean {
    if (!this.#hasIndex) return false
    return this.#supervisor.state().name === 'connected' || this.#reader.directory() !== undefined
  }

  #emit (change: StoreChange): void {
    if (change.type !== 'snapshot' && change.keys.length === 0) return
    for (const listener of this.#listeners) {
      try {
        listener(change)
      } catch (err) {
        this.#log.error({ err }, 'store listener failed')
      }
    }
  }

  #client (): ContainerdClient {
    const client = this.#supervisor.client()
    if (client === undefined) throw new StoreUnavailableError(this.#supervisor.state().reason ?? 'containerd: not connected')
    return client
  }

  /** The request's signal joined with the session's: a call ends when either does. */
  #callSignal (signal: AbortSignal | undefined): AbortSignal | undefined {
    const session = this.#sessionSignal
    if (session === undefined) return signal
    return signal === undefined ? session : AbortSignal.any([signal, session])
  }

  #translate (err: unknown, what: string): Error {
    if (err instanceof NotFoundError || err instanceof StoreUnavailableError) return err
    if (isGrpcNotFound(err) || (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return new NotFoundError(what, { cause: err })
    if (this.#supervisor.client() === undefined) return new StoreUnavailableError(this.#supervisor.state().reason ?? 'containerd: not connected', { cause: err })
    return err instanceof Error ? err : new Error(String(err))
  }

  async #sniffMediaType (client: ContainerdClient, digest: string, sizeBytes: number, options: StoreCallOptions): Promise<string> {
    if (sizeBytes > MEDIA_TYPE_SNIFF_LIMIT_BYTES) return MEDIA_TYPE_OCTET_STREAM
    const signal = this.#callSignal(options.signal)
    try {
      return fingerprintMediaType(await this.#reader.readSmall(client, digest, sizeBytes, { timeoutMs: REQUEST_CALL_TIMEOUT_MS, ...(signal === undefined ? {} : { signal }) }))
    } catch (err) {
      throw this.#translate(err, `content ${digest}`)
    }
  }

  // ---- session lifecycle (called by the supervisor) ----

  async #run (client: ContainerdClient, signal: AbortSignal): Promise<void> {
    // Connected again: the listing will replace a retained index, which serves until then.
    this.#clearWithdrawTimer()
    this.#sessionSignal = signal
    try {
      await this.#session.run(client, signal, {
        onSynced: () => {
          this.#hasIndex = true
          this.#lostAtMs = undefined
        }
      })
    } finally {
      this.#sessionSignal = undefined
      this.#sessionEnded()
    }
  }

  #sessionEnded (): void {
    if (!this.#hasIndex) return
    if (this.#reader.directory() === undefined) {
      this.#withdraw('no content directory to serve from while containerd is away')
      return
    }
    // Counted from the first loss: sessions that fail at once do not extend it.
    this.#lostAtMs ??= Date.now()
    const remainingMs = this.#lostAtMs + this.#retainIndexMs - Date.now()
    if (remainingMs <= 0) {
      this.#withdraw('containerd did not come back in time')
      return
    }
    this.#clearWithdrawTimer()
    this.#withdrawTimer = setTimeout(() => { this.#withdraw('containerd did not come back in time') }, remainingMs)
    this.#withdrawTimer.unref()
  }

  /** Stops advertising: peers are no longer sent here for content containerd may have lost. */
  #withdraw (why: string): void {
    this.#clearWithdrawTimer()
    const lostForMs = this.#lostAtMs === undefined ? 0 : Date.now() - this.#lostAtMs
    this.#hasIndex = false
    this.#lostAtMs = undefined
    if (!this.#index.clear()) return
    this.#log.info({ event: 'containerd_index_withdrawn', reason: why, lostForMs }, 'withdrew every advertised key until containerd is back')
    this.#emit({ type: 'snapshot', keys: [] })
  }

  #stopped (): void {
    this.#clearWithdrawTimer()
    this.#hasIndex = false
    this.#lostAtMs = undefined
    if (this.#index.clear()) this.#emit({ type: 'snapshot', keys: [] })
  }

  #clearWithdrawTimer (): void {
    if (this.#withdrawTimer !== undefined) clearTimeout(this.#withdrawTimer)
    this.#withdrawTimer = undefined
  }
}
