import type { Logger } from '../observability/logger.js'
import type { StoreChange } from '../store/types.js'
import { grpc, grpcCode, isGrpcNotFound, type ContainerdClient, type ContainerdEvent } from './client.js'
import type { ContentReader } from './content-reader.js'
import { decodeEvent, eventFilters } from './events.js'
import type { ImageIndex, IndexedImage, KeyDelta } from './image-index.js'
import type { ImageWalker, WalkSource } from './image-walker.js'
import { LIST_CALL_TIMEOUT_MS, LOOSE_CONTENT_SWEEP_MS, LOOSE_CONTENT_TTL_MS, MAX_LISTED_CONTENT, MAX_PENDING_EVENTS } from './constants.js'

export interface IndexSessionComponents {
  log: Logger
  index: ImageIndex
  walker: ImageWalker
  reader: ContentReader
  emit: (change: StoreChange) => void
}

export interface IndexSessionInit {
  /**
   * Advertise a digest as soon as containerd reports new content, before any image holds it.
   * Only when no registry filter is set: a content event names no image, so a filter cannot
   * be applied to it, and "not served nor advertised" must hold.
   */
  isLooseContentAdvertised: boolean
  looseContentTtlMs?: number
  looseContentSweepMs?: number
}

export interface SessionHooks {
  /** A full listing is indexed (once per session, after the first relist). */
  onSynced: () => void
}

/**
 * Keeps the index in step with containerd while connected: subscribe first, then list, so no
 * change between the two is missed; then apply events one at a time. Leaves the index as it is
 * when the session ends: whether to keep serving it is the Store's decision.
 */
export class IndexSession {
  readonly #log: Logger
  readonly #index: ImageIndex
  readonly #walker: ImageWalker
  readonly #reader: ContentReader
  readonly #emit: (change: StoreChange) => void
  readonly #init: Required<IndexSessionInit>

  constructor (components: IndexSessionComponents, init: IndexSessionInit) {
    this.#log = components.log
    this.#index = components.index
    this.#walker = components.walker
    this.#reader = components.reader
    this.#emit = components.emit
    this.#init = { looseContentTtlMs: LOOSE_CONTENT_TTL_MS, looseContentSweepMs: LOOSE_CONTENT_SWEEP_MS, ...init }
  }

  async run (client: ContainerdClient, signal: AbortSignal, hooks: SessionHooks): Promise<void> {
    await this.#reader.choose(client, { timeoutMs: LIST_CALL_TIMEOUT_MS, signal })
    signal.throwIfAborted()
    const stream = client.subscribe(eventFilters(client.namespace))
    const onAbort = (): void => { stream.cancel() }
    signal.addEventListener('abort', onAbort, { once: true })
    const pending: ContainerdEvent[] = []
    let needsRelist = true
    let isSweepDue = false
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
    const sweep = setInterval(() => { isSweepDue = true; wakeup?.() }, this.#init.looseContentSweepMs)
    sweep.unref()
    const source = this.#walkSource(client)
    try {
      while (!signal.aborted && !ended) {
        if (needsRelist) {
          needsRelist = false
          pending.length = 0
          await this.#relist(client, source, signal)
          hooks.onSynced()
          continue
        }
        if (isSweepDue) {
          isSweepDue = false
          this.#emitDelta(this.#index.expireLoose(Date.now() - this.#init.looseContentTtlMs))
          continue
        }
        const event = pending.shift()
        if (event === undefined) {
          await new Promise<void>((resolve) => { wakeup = resolve })
          wakeup = undefined
          continue
        }
        try {
          await this.#handleEvent(client, source, event, signal)
        } catch (err) {
          if (signal.aborted) break
          this.#log.warn({ err, topic: event.topic }, 'error when handling containerd event')
        }
      }
    } finally {
      clearInterval(sweep)
      signal.removeEventListener('abort', onAbort)
      stream.cancel()
    }
    if (streamError !== undefined && !signal.aborted) throw streamError
    if (!signal.aborted) throw new Error('containerd closed the event stream')
  }

  #walkSource (client: ContainerdClient): WalkSource {
    const reader = this.#reader
    return {
      async sizeOf (digest, signal) {
        try {
          return (await client.info(digest, { timeoutMs: LIST_CALL_TIMEOUT_MS, signal })).sizeBytes
        } catch (err) {
          if (isGrpcNotFound(err)) return undefined
          throw err
        }
      },
      async read (digest, sizeBytes, signal) {
        try {
          return await reader.readSmall(client, digest, sizeBytes, { timeoutMs: LIST_CALL_TIMEOUT_MS, signal })
        } catch (err) {
          if (isGrpcNotFound(err) || (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
          throw err
        }
      }
    }
  }

  async #relist (client: ContainerdClient, perDigest: WalkSource, signal: AbortSignal): Promise<void> {
    const records = await client.listImages([], { timeoutMs: LIST_CALL_TIMEOUT_MS, signal })
    const sizes = await this.#contentSizes(client, signal)
    // Content added after the listing is missing from it, as an image added after listImages is:
    // the events that follow bring both in.
    const source: WalkSource = sizes === undefined ? perDigest : { sizeOf: async (digest) => sizes.get(digest), read: perDigest.read }
    const images = new Map<string, IndexedImage>()
    const mediaTypes = new Map<string, string>()
    for (const record of records) {
      signal.throwIfAborted()
      try {
        const walked = await this.#walker.index(source, record.name, record.target, signal)
        if (walked === undefined) continue
        images.set(record.name, walked.image)
        for (const [digest, type] of walked.mediaTypes) mediaTypes.set(digest, type)
      } catch (err) {
        // A lost connection ends the session; anything else is this image's problem only.
        if (signal.aborted || isConnectionError(err)) throw err
        this.#log.warn({ image: record.name, err: (err as Error).message }, 'skipping image that could not be indexed')
      }
    }
    this.#index.replace(images, mediaTypes)
    this.#log.info({ images: images.size, keys: this.#index.size }, 'indexed containerd images')
    // A snapshot equal to what peers already have costs nothing: the router sends only the difference.
    this.#emit({ type: 'snapshot', keys: this.#index.keys() })
  }

  /** Every blob's size from one listing, or undefined when the walk must ask per digest. */
  async #contentSizes (client: ContainerdClient, signal: AbortSignal): Promise<ReadonlyMap<string, number> | undefined> {
    try {
      return await client.contentSizes(MAX_LISTED_CONTENT, { timeoutMs: LIST_CALL_TIMEOUT_MS, signal })
    } catch (err) {
      // A lost connection ends the session; a slow, refused or oversized listing only costs speed.
      if (signal.aborted || grpcCode(err) === grpc.status.UNAVAILABLE) throw err
      this.#log.info({ err: (err as Error).message }, 'asking containerd for content sizes one digest at a time: the content listing failed')
      return undefined
    }
  }

  async #handleEvent (client: ContainerdClient, source: WalkSource, event: ContainerdEvent, signal: AbortSignal): Promise<void> {
    const decoded = decodeEvent(event)
    if (decoded === undefined) return
    await this.#reader.recheck()
    switch (decoded.kind) {
      case 'image-upsert': {
        let target
        try {
          target = (await client.getImage(decoded.name, { timeoutMs: LIST_CALL_TIMEOUT_MS, signal })).target
        } catch (err) {
          if (isGrpcNotFound(err)) {
            this.#emitDelta(this.#index.remove(decoded.name))
            return
          }
          throw err
        }
        const walked = await this.#walker.index(source, decoded.name, target, signal)
        this.#emitDelta(this.#index.upsert(decoded.name, walked?.image, walked?.mediaTypes))
        return
      }
      case 'image-delete':
        this.#emitDelta(this.#index.remove(decoded.name))
        return
      case 'content-create':
        // Content events exist from containerd 2.1: advertising a digest as soon as it lands,
        // before the image record exists, helps nodes pulling the same image at once.
        if (!this.#init.isLooseContentAdvertised) {
          this.#log.debug({ digest: decoded.digest }, 'not advertising new content before its image: registry filters apply to images')
          return
        }
        this.#emitDelta(this.#index.addLoose(decoded.digest, Date.now()))
        return
      case 'content-delete':
        this.#emitDelta(this.#index.removeContent(decoded.digest))
    }
  }

  #emitDelta (delta: KeyDelta): void {
    if (delta.removed.length > 0) this.#emit({ type: 'remove', keys: delta.removed })
    if (delta.added.length > 0) this.#emit({ type: 'add', keys: delta.added })
  }
}

function isConnectionError (err: unknown): boolean {
  const code = grpcCode(err)
  return code === grpc.status.UNAVAILABLE || code === grpc.status.CANCELLED || code === grpc.status.DEADLINE_EXCEEDED
}
