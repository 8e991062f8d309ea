import fsp from 'node:fs/promises'
import path from 'node:path'
import { Readable, addAbortSignal } from 'node:stream'
import { FileRangeStream } from '../store/file-range-stream.js'
import type { Logger } from '../observability/logger.js'
import {
  childDescriptors,
  fingerprintMediaType,
  isFiltered,
  isManifestMediaType,
  MEDIA_TYPE_SNIFF_LIMIT_BYTES,
  parseDigest,
  parseImageReference,
  tagName,
  type ReferenceFilter
} from '../oci/index.js'
import { NotFoundError, StoreUnavailableError } from '../store/errors.js'
import type { Descriptor, ImageLister, ImageSummary, OpenOptions, Store, StoreCallOptions, StoreChange, StoreListener, StoreReadiness } from '../store/types.js'
import { grpc, grpcCode, isGrpcNotFound, type ContainerdClient, type ContainerdEvent } from './client.js'
import { decodeEvent, eventFilters } from './events.js'
import { contentPathReadable } from './diagnose.js'
import type { ContainerdSupervisor } from './supervisor.js'
import { CONTENT_ROOT_RECHECK_MS, LIST_CALL_TIMEOUT_MS, MAX_PENDING_EVENTS, REQUEST_CALL_TIMEOUT_MS, SMALL_READ_LIMIT_BYTES } from './constants.js'

export interface ContainerdStoreComponents {
  log: Logger
  supervisor: ContainerdSupervisor
}

export interface ContainerdStoreInit {
  /** Content store root for direct reads; empty means ask containerd (introspection). */
  contentPath: string
  filters: readonly ReferenceFilter[]
}

interface IndexedImage {
  readonly registry: string
  readonly repository: string
  /** Bytes of `digests`, for the web page. */
  readonly sizeBytes: number
  readonly targetDigest: string
  /** Tag key (`registry/repo:tag`) when the image name has a tag. */
  readonly tag?: string
  /** Digests present in the content store, root first. */
  readonly digests: readonly string[]
}

/** Media types learned while walking; kept only for digests currently advertised. */
type MediaTypes = Map<string, string>

/**
 * The node's containerd as a Store: an index of every image (tags and the digests really
 * present in the content store), kept up to date from events, rebuilt on every reconnect.
 */
export class ContainerdStore implements Store, ImageLister {
  readonly name = 'containerd'
  private readonly log: Logger
  private readonly supervisor: ContainerdSupervisor
  private readonly filters: readonly ReferenceFilter[]
  private readonly configuredContentPath: string
  private contentRoot: string | undefined
  /** The content directory we would read if it were readable; re-checked while it is not. */
  private candidateRoot = ''
  private lastRootCheckMs = 0
  private indexed = new Map<string, IndexedImage>()
  private mediaTypes: MediaTypes = new Map()
  /** Key -> how many images (or loose content events) hold it. */
  private keyCounts = new Map<string, number>()
  private readonly listeners = new Set<StoreListener>()
  private synced = false

  constructor (components: ContainerdStoreComponents, init: ContainerdStoreInit) {
    this.log = components.log.child({ component: 'containerd-store' })
    this.supervisor = components.supervisor
    this.filters = init.filters
    this.configuredContentPath = init.contentPath
  }

  readiness (): StoreReadiness {
    const state = this.supervisor.state()
    if (state.name !== 'connected') return { isReady: false, reason: state.reason ?? `containerd: ${state.name}` }
    if (!this.synced) return { isReady: false, reason: 'containerd: listing images' }
    return { isReady: true }
  }

  keys (): readonly string[] {
    return [...this.keyCounts.keys()]
  }

  subscribe (listener: StoreListener): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** Per registry: tags, image roots and content digests advertised (Spegel's gauges). */
  advertisedCounts (): Map<string, { tags: number, images: number, contents: number }> {
    const perRegistry = new Map<string, { tags: Set<string>, images: Set<string>, contents: Set<string> }>()
    for (const image of this.indexed.values()) {
      let entry = perRegistry.get(image.registry)
      if (entry === undefined) {
        entry = { tags: new Set(), images: new Set(), contents: new Set() }
        perRegistry.set(image.registry, entry)
      }
      if (image.tag !== undefined) entry.tags.add(image.tag)
      entry.images.add(image.targetDigest)
      for (const digest of image.digests) entry.contents.add(digest)
    }
    const counts = new Map<string, { tags: number, images: number, contents: number }>()
    for (const [registry, e] of perRegistry) counts.set(registry, { tags: e.tags.size, images: e.images.size, contents: e.contents.size })
    return counts
  }

  images (): ImageSummary[] {
    const out: ImageSummary[] = []
    for (const [name, image] of this.indexed) {
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
    const out = new Set<string>()
    for (const image of this.indexed.values()) out.add(image.registry)
    return out
  }

  /** Direct-read directory in use, or undefined when bytes come through gRPC. */
  contentDirectory (): string | undefined {
    return this.contentRoot
  }

  private emit (change: StoreChange): void {
    if (change.type !== 'snapshot' && change.keys.length === 0) return
    for (const listener of this.listeners) {
      try {
        listener(change)
      } catch (err) {
        this.log.error({ err }, 'store listener failed')
      }
    }
  }

  private client (): ContainerdClient {
    const client = this.supervisor.client()
    if (client === undefined) throw new StoreUnavailableError(this.supervisor.state().reason ?? 'containerd: not connected')
    return client
  }

  async resolve (ref: string, options: StoreCallOptions = {}): Promise<string> {
    options.signal?.throwIfAborted()
    const client = this.client()
    const indexed = this.indexed.get(ref)
    if (indexed !== undefined) return indexed.targetDigest
    try {
      const image = await client.getImage(ref, { timeoutMs: REQUEST_CALL_TIMEOUT_MS, signal: options.signal })
      return image.target.digest
    } catch (err) {
      throw this.translate(err, `image ${ref}`)
    }
  }

  async stat (digest: string, options: StoreCallOptions = {}): Promise<Descriptor> {
    options.signal?.throwIfAborted()
    const client = this.client()
    let sizeBytes: number
    // Digests from our own walk are known to be in this namespace: a file stat is enough.
    const knownType = this.mediaTypes.get(digest)
    const file = this.blobFile(digest)
    if (knownType !== undefined && file !== undefined) {
      try {
        sizeBytes = (await fsp.stat(file)).size
        return { digest, sizeBytes, mediaType: knownType }
      } catch {
        // fall through to containerd, which knows best
      }
    }
    try {
      sizeBytes = (await client.info(digest, { timeoutMs: REQUEST_CALL_TIMEOUT_MS, signal: options.signal })).sizeBytes
    } catch (err) {
      throw this.translate(err, `content ${digest}`)
    }
    const mediaType = knownType ?? await this.sniffMediaType(digest, sizeBytes, options)
    return { digest, sizeBytes, mediaType }
  }

  async open (digest: string, options: OpenOptions = {}): Promise<Readable> {
    options.signal?.throwIfAborted()
    const client = this.client()
    await this.recheckContentRoot()
    const file = this.blobFile(digest)
    const range = options.range
    if (file !== undefined) {
      try {
        const handle = await fsp.open(file, 'r')
        const start = range?.start ?? 0
        const end = range?.end ?? (await handle.stat()).size - 1
        const length = end - start + 1
        if (length <= SMALL_READ_LIMIT_BYTES) {
          try {
            const buffer = Buffer.allocUnsafe(Math.max(0, length))
            let read = 0
            while (read < length) {
              const { bytesRead } = await handle.read(buffer, read, length - read, start + read)
              if (bytesRead === 0) break
              read += bytesRead
            }
            return Readable.from([buffer.subarray(0, read)], { objectMode: false })
          } finally {
            await handle.close()
          }
        }
        const stream = new FileRangeStream(handle, start, end)
        if (options.signal !== undefined) addAbortSignal(options.signal, stream)
        return stream
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`content ${digest}`, { cause: err })
        throw err
      }
    }
    // No readable content directory: stream through containerd (about 10x slower).
    try {
      await client.info(digest, { timeoutMs: REQUEST_CALL_TIMEOUT_MS, signal: options.signal })
    } catch (err) {
      throw this.translate(err, `content ${digest}`)
    }
    const offset = range?.start ?? 0
    const sizeBytes = range === undefined ? 0 : range.end - range.start + 1
    const call = client.read(digest, offset, sizeBytes)
    // Errors reach the reader through the iterator below; this listener only keeps a call
    // that nobody iterates (a reader that gave up) from crashing the process when it fails.
    call.on('error', () => {})
    options.signal?.addEventListener('abort', () => { call.cancel() }, { once: true })
    async function * chunks (): AsyncGenerator<Buffer> {
      for await (const message of call) yield (message as { data: Buffer }).data
    }
    const stream = Readable.from(chunks(), { objectMode: false })
    stream.once('close', () => { call.cancel() })
    return stream
  }

  /**
   * A fresh containerd has no `blobs/` directory until the first content lands, so a node
   * started next to it would read through gRPC forever; look again now and then.
   */
  private async recheckContentRoot (): Promise<void> {
    if (this.contentRoot !== undefined || this.candidateRoot === '' || Date.now() - this.lastRootCheckMs < CONTENT_ROOT_RECHECK_MS) return
    this.lastRootCheckMs = Date.now()
    if ((await contentPathReadable(this.candidateRoot)).readable && this.contentRoot === undefined) {
      this.contentRoot = this.candidateRoot
      this.log.info({ path: this.contentRoot }, 'content directory became readable; reading content directly from disk')
    }
  }

  private blobFile (digest: string): string | undefined {
    if (this.contentRoot === undefined) return undefined
    const { algorithm, hex } = parseDigest(digest)
    return path.join(this.contentRoot, 'blobs', algorithm, hex)
  }

  private translate (err: unknown, what: string): Error {
    if (isGrpcNotFound(err)) return new NotFoundError(what, { cause: err })
    if (this.supervisor.client() === undefined) return new StoreUnavailableError(this.supervisor.state().reason ?? 'containerd: not connected', { cause: err })
    return err instanceof Error ? err : new Error(String(err))
  }

  private async readSmall (client: ContainerdClient, digest: string, sizeBytes: number, signal?: AbortSignal): Promise<Buffer> {
    const file = this.blobFile(digest)
    if (file !== undefined) return await fsp.readFile(file, { signal })
    const parts: Buffer[] = []
    for await (const message of client.read(digest, 0, sizeBytes)) parts.push((message as { data: Buffer }).data)
    return Buffer.concat(parts)
  }

  private async sniffMediaType (digest: string, sizeBytes: number, options: StoreCallOptions): Promise<string> {
    if (sizeBytes > MEDIA_TYPE_SNIFF_LIMIT_BYTES) return 'application/octet-stream'
    try {
      return fingerprintMediaType(await this.readSmall(this.client(), digest, sizeBytes, options.signal))
    } catch (err) {
      throw this.translate(err, `content ${digest}`)
    }
  }

  // ---- session: runs while connected (called by the supervisor) ----

  /** Subscribe first, then list, so no change between the two is missed. */
  readonly session = async (client: ContainerdClient, signal: AbortSignal): Promise<void> => {
    this.synced = false
    this.contentRoot = await this.chooseContentRoot(client)
    const stream = client.subscribe(eventFilters(client.namespace))
    const onAbort = (): void => { stream.cancel() }
    signal.addEventListener('abort', onAbort, { once: true })
    const pending: ContainerdEvent[] = []
    let needsRelist = true
    let wakeup: (() => void) | undefined
    let streamError: Error | undefined
    let ended = false
    stream.on('data', (envelope: { namespace: string, topic: string, event: { type_url: string, value: Buffer } | null }) => {
      if (pending.length >= MAX_PENDING_EVENTS) {
        needsRelist = true
        pending.length = 0
      } else {
        pending.push({ namespace: envelope.namespace, topic: envelope.topic, typeUrl: envelope.event?.type_url ?? '', payload: envelope.event?.value ?? Buffer.alloc(0) })
      }
      wakeup?.()
    })
    stream.on('error', (err: Error) => { streamError = err; ended = true; wakeup?.() })
    stream.on('end', () => { ended = true; wakeup?.() })
    try {
      while (!signal.aborted && !ended) {
        if (needsRelist) {
          needsRelist = false
          pending.length = 0
          await this.relist(client, signal)
          this.synced = true
          continue
        }
        const event = pending.shift()
        if (event === undefined) {
          await new Promise<void>((resolve) => { wakeup = resolve })
          wakeup = undefined
          continue
        }
        try {
          await this.handleEvent(client, event, signal)
        } catch (err) {
          if (signal.aborted) break
          this.log.warn({ err, topic: event.topic }, 'error when handling containerd event')
        }
      }
    } finally {
      signal.removeEventListener('abort', onAbort)
      stream.cancel()
      this.synced = false
      this.clearAll()
    }
    if (streamError !== undefined && !signal.aborted) throw streamError
    if (!signal.aborted) throw new Error('containerd closed the event stream')
  }

  private async chooseContentRoot (client: ContainerdClient): Promise<string | undefined> {
    let root = this.configuredContentPath
    if (root === '') {
      try {
        root = (await client.pluginExports('io.containerd.content.v1', 'content'))?.root ?? ''
      } catch (err) {
        this.log.warn({ err }, 'could not discover the content path through introspection')
      }
    }
    this.candidateRoot = root
    this.lastRootCheckMs = Date.now()
    const check = await contentPathReadable(root)
    if (check.readable) {
      if (root !== this.contentRoot) this.log.info({ path: root }, 'reading content directly from disk')
      return root
    }
    this.log.warn({ event: 'content_path_unreadable', path: root, reason: check.reason, fix: 'mount containerd\'s content directory (e.g. /var/lib/containerd/io.containerd.content.v1.content) read-only and set --containerd-content-path; serving through gRPC is about 10x slower' },
      'falling back to reading content from the containerd socket')
    return undefined
  }

  private clearAll (): void {
    const hadKeys = this.keyCounts.size > 0
    this.indexed = new Map()
    this.mediaTypes = new Map()
    this.keyCounts = new Map()
    if (hadKeys) this.emit({ type: 'snapshot', keys: [] })
  }

  private async relist (client: ContainerdClient, signal: AbortSignal): Promise<void> {
    const records = await client.listImages([], { timeoutMs: LIST_CALL_TIMEOUT_MS, signal })
    const images = new Map<string, IndexedImage>()
    const mediaTypes: MediaTypes = new Map()
    for (const record of records) {
      signal.throwIfAborted()
      try {
        const indexed = await this.indexImage(client, record.name, record.target, mediaTypes, signal)
        if (indexed !== undefined) images.set(record.name, indexed)
      } catch (err) {
        // A lost connection ends the session; anything else is this image's problem only.
        if (signal.aborted || isConnectionError(err)) throw err
        this.log.warn({ image: record.name, err: (err as Error).message }, 'skipping image that could not be indexed')
      }
    }
    this.indexed = images
    this.mediaTypes = mediaTypes
    this.keyCounts = new Map()
    for (const image of images.values()) this.countKeys(image, +1)
    this.log.info({ images: images.size, keys: this.keyCounts.size }, 'indexed containerd images')
    this.emit({ type: 'snapshot', keys: this.keys() })
  }

  /** Undefined for names we skip (no registry, unparsable, filtered): one bad name never stops the node. */
  private async indexImage (client: ContainerdClient, name: string, target: { mediaType: string, digest: string, sizeBytes: number }, mediaTypes: MediaTypes, signal: AbortSignal): Promise<IndexedImage | undefined> {
    if (!name.includes('/')) return undefined
    let reference
    try {
      reference = parseImageReference(name, { digest: target.digest })
    } catch (err) {
      this.log.warn({ image: name, err: (err as Error).message }, 'skipping image with unparsable name')
      return undefined
    }
    if (isFiltered(this.filters, reference)) {
      this.log.debug({ image: name }, 'skipping filtered image')
      return undefined
    }
    const { digests, sizeBytes } = await this.walk(client, target, mediaTypes, signal)
    const tag = tagName(reference)
    const base = { registry: reference.registry, repository: reference.repository, sizeBytes, targetDigest: target.digest, digests }
    return tag === undefined ? base : { ...base, tag }
  }

  /** Depth first; content missing from the store is skipped with its children (a listed image can lack layers). */
  private async walk (client: ContainerdClient, root: { mediaType: string, digest: string, sizeBytes: number }, mediaTypes: MediaTypes, signal: AbortSignal): Promise<{ digests: string[], sizeBytes: number }> {
    const found: string[] = []
    let total = 0
    const stack = [root]
    const seen = new Set<string>()
    while (stack.length > 0) {
      const descriptor = stack.pop()
      if (descriptor === undefined || seen.has(descriptor.digest)) continue
      seen.add(descriptor.digest)
      let sizeBytes: number
      try {
        sizeBytes = (await client.info(descriptor.digest, { timeoutMs: LIST_CALL_TIMEOUT_MS, signal })).sizeBytes
      } catch (err) {
        if (isGrpcNotFound(err)) continue
        throw err
      }
      found.push(descriptor.digest)
      total += sizeBytes
      mediaTypes.set(descriptor.digest, descriptor.mediaType)
      if (isManifestMediaType(descriptor.mediaType) && sizeBytes <= MEDIA_TYPE_SNIFF_LIMIT_BYTES) {
        let bytes: Buffer
        try {
          bytes = await this.readSmall(client, descriptor.digest, sizeBytes, signal)
        } catch (err) {
          if (isGrpcNotFound(err) || (err as NodeJS.ErrnoException).code === 'ENOENT') continue
          throw err
        }
        let children
        try {
          children = childDescriptors(descriptor.mediaType, bytes)
        } catch (err) {
          this.log.warn({ digest: descriptor.digest, err: (err as Error).message }, 'not walking children of an unreadable manifest')
          continue
        }
        // Reverse so the stack pops them in document order (config before layers).
        for (let i = children.length - 1; i >= 0; i--) {
          const child = children[i]
          if (child !== undefined) stack.push({ mediaType: child.mediaType, digest: child.digest, sizeBytes: child.size })
        }
      }
    }
    return { digests: found, sizeBytes: total }
  }

  private imageKeys (image: IndexedImage): string[] {
    return image.tag === undefined ? [...image.digests] : [image.tag, ...image.digests]
  }

  /** Returns the keys that appeared (delta +1) or disappeared (delta -1). */
  private countKeys (image: IndexedImage, delta: 1 | -1): string[] {
    const changed: string[] = []
    for (const key of this.imageKeys(image)) {
      const before = this.keyCounts.get(key) ?? 0
      const after = before + delta
      if (after <= 0) {
        this.keyCounts.delete(key)
        this.mediaTypes.delete(key)
        if (before > 0) changed.push(key)
      } else {
        this.keyCounts.set(key, after)
        if (before === 0) changed.push(key)
      }
    }
    return changed
  }

  private async handleEvent (client: ContainerdClient, event: ContainerdEvent, signal: AbortSignal): Promise<void> {
    const decoded = decodeEvent(event)
    if (decoded === undefined) return
    await this.recheckContentRoot()
    if (decoded.kind === 'image-upsert') {
      let target
      try {
        target = (await client.getImage(decoded.name, { timeoutMs: LIST_CALL_TIMEOUT_MS, signal })).target
      } catch (err) {
        if (isGrpcNotFound(err)) return this.removeImage(decoded.name)
        throw err
      }
      const mediaTypes: MediaTypes = new Map()
      const indexed = await this.indexImage(client, decoded.name, target, mediaTypes, signal)
      const previous = this.indexed.get(decoded.name)
      const removed = previous === undefined ? [] : this.countKeys(previous, -1)
      let added: string[] = []
      if (indexed === undefined) {
        this.indexed.delete(decoded.name)
      } else {
        for (const [digest, type] of mediaTypes) this.mediaTypes.set(digest, type)
        this.indexed.set(decoded.name, indexed)
        added = this.countKeys(indexed, +1)
      }
      this.emitDelta(added, removed)
      return
    }
    if (decoded.kind === 'image-delete') {
      this.removeImage(decoded.name)
      return
    }
    // Content events exist from containerd 2.1: advertise a digest as soon as it lands,
    // before the image record exists (helps nodes pulling the same image at once).
    if (decoded.kind === 'content-create') {
      if (this.keyCounts.has(decoded.digest)) return
      this.keyCounts.set(decoded.digest, 1)
      this.emit({ type: 'add', keys: [decoded.digest] })
      return
    }
    if (decoded.kind === 'content-delete' && this.keyCounts.has(decoded.digest)) {
      this.keyCounts.delete(decoded.digest)
      this.mediaTypes.delete(decoded.digest)
      for (const [name, image] of this.indexed) {
        if (image.digests.includes(decoded.digest)) {
          // The size goes stale until the next relist; it is for display only.
          this.indexed.set(name, { ...image, digests: image.digests.filter((d) => d !== decoded.digest) })
        }
      }
      this.emit({ type: 'remove', keys: [decoded.digest] })
    }
  }

  private removeImage (name: string): void {
    const previous = this.indexed.get(name)
    if (previous === undefined) return
    this.indexed.delete(name)
    this.emitDelta([], this.countKeys(previous, -1))
  }

  /** A key that both disappeared and reappeared in one change is no change at all. */
  private emitDelta (added: string[], removed: string[]): void {
    const addedSet = new Set(added)
    const removedSet = new Set(removed)
    this.emit({ type: 'remove', keys: removed.filter((k) => !addedSet.has(k)) })
    this.emit({ type: 'add', keys: added.filter((k) => !removedSet.has(k)) })
  }
}

function isConnectionError (err: unknown): boolean {
  const code = grpcCode(err)
  return code === grpc.status.UNAVAILABLE || code === grpc.status.CANCELLED || code === grpc.status.DEADLINE_EXCEEDED
}
