import path from 'node:path'
import type { Readable } from 'node:stream'
import type { Logger } from '../observability/logger.js'
import { arrivingKey } from '../routing/key-overlay.js'
import { NotFoundError, type ByteRange } from '../store/index.js'
import { openGrowingFile } from '../store/growing-file-stream.js'
import { IngestWatcher, type IngestWatcherInit } from './ingests.js'

/**
 * A download that has not written a byte for this long is not offered any more. containerd writes
 * in 1 MiB steps (docs/containerd-ingest.md), so even a 1 MB/s upstream grows the file every
 * second; a download that stops for longer has most likely failed, and nodes waiting on it are
 * better off choosing another node to fetch from upstream.
 */
export const ARRIVING_STALE_MS = 5_000
/** A reader at the end of the file gives up after this long without a new byte (see above). */
export const ARRIVING_STALL_TIMEOUT_MS = 8_000

/**
 * Read size when a blob that is still arriving is read as a stream; memory per reader is about
 * twice this. The handler sends it with `sendTo` instead, through the shared 1 MiB send pool.
 */
export const ARRIVING_READ_BYTES = 256 * 1024

export interface ArrivingBlobsComponents {
  log: Logger
  /** Where `arriving:<digest>` keys go (KeyOverlay). */
  keys: { add(key: string): boolean, remove(key: string): void }
  /** Called when a download of this node's starts to land. */
  onArriving?: (digest: string) => void
  /** Called when a download of this node's ended without a blob (a failed pull). */
  onAbandoned?: (digest: string) => void
  /**
   * Whether a download still under way may be offered: only one this node's containerd fetches
   * from upstream itself (PullStorm.isFirstHand). A download fed by another node through this
   * node's mirror stops when that node does, so offering it would only send a third node to wait
   * on the same failure. Whole blobs are always offered. Without it, every download is.
   */
  isFirstHand?: (digest: string) => boolean
  /** Called with the number of blobs offered after every change. */
  onCount?: (count: number) => void
}

export interface ArrivingBlobsInit extends Omit<IngestWatcherInit, 'contentPath'> {
  stallTimeoutMs?: number
}

/**
 * Blobs this node's containerd is downloading right now, advertised as `arriving:<digest>` and
 * served to peers from the ingest file as it grows (docs/pull-storms.md). It follows containerd's
 * content directory, which is only known once containerd has answered (`follow`).
 */
export class ArrivingBlobs {
  readonly #c: ArrivingBlobsComponents
  readonly #init: ArrivingBlobsInit
  #watcher: IngestWatcher | undefined
  #unsubscribe: (() => void) | undefined
  #contentPath: string | undefined
  readonly #offered = new Set<string>()

  constructor (components: ArrivingBlobsComponents, init: ArrivingBlobsInit = {}) {
    this.#c = components
    this.#init = init
  }

  get count (): number { return this.#offered.size }

  /** Watches `contentPath`'s ingest area (again, when it changed); undefined stops watching. */
  follow (contentPath: string | undefined): void {
    if (contentPath === this.#contentPath) return
    this.#stopWatcher()
    this.#contentPath = contentPath
    if (contentPath === undefined) return
    const { stallTimeoutMs: _, ...watcherInit } = this.#init
    const watcher = new IngestWatcher({ log: this.#c.log }, { staleMs: ARRIVING_STALE_MS, ...watcherInit, contentPath })
    this.#unsubscribe = watcher.subscribe((change) => {
      switch (change.type) {
        case 'arriving':
          if (this.#c.isFirstHand?.(change.digest) !== false) this.#offer(change.digest)
          break
        case 'complete':
          this.#offer(change.digest)
          break
        case 'gone':
          this.#unoffer(change.digest)
          break
        case 'abandoned':
          // Offered before its first byte (reconsider), it was never announced, so no 'gone' comes.
          if (watcher.get(change.digest, { isPendingIncluded: true }) === undefined) this.#unoffer(change.digest)
          this.#c.onAbandoned?.(change.digest)
          break
      }
    })
    this.#watcher = watcher
    watcher.start()
    this.#c.log.debug({ contentPath }, 'watching containerd downloads')
  }

  stop (): void {
    this.#stopWatcher()
    this.#contentPath = undefined
  }

  /** Offers `digest` if it is arriving and may be offered now (it just became first hand). */
  reconsider (digest: string): void {
    // Offered even before its first byte lands: the nodes waiting for it would otherwise wait for
    // containerd's first 1 MiB write, which on a slow upstream takes longer than their wait.
    if (this.#offered.has(digest) || this.#watcher?.get(digest, { isPendingIncluded: true }) === undefined) return
    if (this.#c.isFirstHand?.(digest) !== false) this.#offer(digest)
  }

  /** The blob's full size while it is offered. */
  sizeOf (digest: string): number | undefined {
    if (!this.#offered.has(digest)) return undefined
    const ingest = this.#watcher?.get(digest, { isPendingIncluded: true })
    return ingest === undefined || ingest.totalBytes <= 0 ? undefined : ingest.totalBytes
  }

  /** The size this node's own containerd expects for a blob it has started to fetch (see IngestWatcher). */
  expectedSize (digest: string): number | undefined {
    return this.#watcher?.expectedSize(digest)
  }

  async open (digest: string, range: ByteRange, signal: AbortSignal): Promise<Readable> {
    const watcher = this.#watcher
    const ingest = watcher?.get(digest, { isPendingIncluded: true })
    if (watcher === undefined || ingest === undefined) throw new NotFoundError(`${digest} is not arriving here`)
    const options = {
      start: range.start,
      end: range.end,
      signal,
      stallTimeoutMs: this.#init.stallTimeoutMs ?? ARRIVING_STALL_TIMEOUT_MS,
      // containerd writes 1 MiB at a time; reading in 64 KiB pieces cost a relay four times the
      // reads and stream turns on a node that is also downloading and unpacking.
      highWaterMark: ARRIVING_READ_BYTES,
      isAbandoned: () => watcher.isAbandoned(digest)
    }
    try {
      return await openGrowingFile(ingest.path, options)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    // Committed between the look and the open: the same bytes are now the blob file.
    const blob = this.#blobPath(digest)
    try {
      if (blob !== undefined) return await openGrowingFile(blob, options)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    throw new NotFoundError(`${digest} is no longer arriving here`)
  }

  #blobPath (digest: string): string | undefined {
    const m = /^(sha256|sha512):([a-f0-9]+)$/.exec(digest)
    if (m === null || this.#contentPath === undefined) return undefined
    return path.join(this.#contentPath, 'blobs', m[1] ?? '', m[2] ?? '')
  }

  #offer (digest: string): void {
    if (this.#offered.has(digest)) return
    if (!this.#c.keys.add(arrivingKey(digest))) return
    this.#offered.add(digest)
    this.#c.onArriving?.(digest)
    this.#c.onCount?.(this.#offered.size)
  }

  #unoffer (digest: string): void {
    if (!this.#offered.delete(digest)) return
    this.#c.keys.remove(arrivingKey(digest))
    this.#c.onCount?.(this.#offered.size)
  }

  #stopWatcher (): void {
    this.#unsubscribe?.()
    this.#unsubscribe = undefined
    this.#watcher?.stop()
    this.#watcher = undefined
    for (const digest of [...this.#offered]) this.#unoffer(digest)
  }
}
