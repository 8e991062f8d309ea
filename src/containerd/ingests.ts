import { watch, constants as fsConstants, type FSWatcher } from 'node:fs'
import { lstat, open, readdir, stat } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from '../observability/logger.js'

export interface Ingest {
  /** `sha256:<hex>`, the trailing digest of the ref. */
  readonly digest: string
  readonly ref: string
  /** The ingest's `data` while it is written; the blob file once committed. */
  readonly path: string
  /** From the ingest's `total` file. */
  readonly totalBytes: number
  /** Size of `data` at the last look; totalBytes once committed. */
  readonly receivedBytes: number
  /** Committed: the blob file exists with totalBytes bytes. */
  readonly isComplete: boolean
}

export type IngestChange =
  | { readonly type: 'arriving', readonly digest: string }
  | { readonly type: 'gone', readonly digest: string }
  /** The blob is committed (whole and checked by containerd); also sent when 'arriving' came before. */
  | { readonly type: 'complete', readonly digest: string }
  /**
   * A download of `digest` ended without a blob (its ingest vanished uncommitted), whether or not it
   * had written anything: the pull failed, for example because upstream refused it.
   */
  | { readonly type: 'abandoned', readonly digest: string }

export interface IngestWatcherInit {
  /** containerd's content store root: `<contentPath>/ingest` and `<contentPath>/blobs`. */
  contentPath: string
  /** How often ingests that have not started (no bytes, no total yet) are looked at again. */
  pollMs?: number
  /** Full rescan of the ingest directory: the safety net for missed watch events. */
  rescanMs?: number
  maxIngests?: number
  /** How long a committed blob stays listed: the gap until containerd's image record advertises it. */
  committedTtlMs?: number
  /** An ingest whose `data` has not grown for this long (seen on the rescans) is no longer offered. */
  staleMs?: number
  now?: () => number
}

export const INGEST_POLL_MS = 20
export const INGEST_RESCAN_MS = 1_000
export const MAX_INGESTS = 1024
export const INGEST_COMMITTED_TTL_MS = 120_000
export const INGEST_STALE_MS = 60_000
/**
 * An ingest left behind empty by an aborted pull would keep the fast poll going for ever; after
 * this long without a first byte it is only looked at on the rescan.
 */
const PENDING_FAST_POLL_LIMIT_MS = 30_000
/** `ref` is `<kind>-<digest>` (~80 bytes); anything longer is not containerd's. */
const MAX_REF_BYTES = 512
const MAX_TOTAL_BYTES = 32
const DIGEST_AT_END = /(sha256):([a-f0-9]{64})$|(sha512):([a-f0-9]{128})$/

type DirState = 'pending' | 'arriving' | 'stale' | 'unsized' | 'ignored'

/** One `<contentPath>/ingest/<key>` directory. */
interface IngestDir {
  readonly name: string
  readonly seenAtMs: number
  /** When `data` last changed size (by `now`). */
  grewAtMs: number
  state: DirState
  ref: string | undefined
  digest: string | undefined
  totalBytes: number | undefined
  receivedBytes: number
}

interface Committed {
  readonly digest: string
  readonly ref: string
  readonly path: string
  readonly totalBytes: number
  readonly committedAtMs: number
}

/**
 * Watches containerd's ingest area so a node can offer a blob while it is still being
 * downloaded. inotify (fs.watch) on `ingest/` sees directories come and go at once; the first
 * bytes land in a file one level down, which inotify on `ingest/` does not report, so dirs that
 * have not started are polled every `pollMs` until they do. A full rescan every `rescanMs`
 * catches whatever the watch missed, and starts the watch once containerd creates the directory.
 */
export class IngestWatcher {
  readonly #log: Logger
  readonly #ingestPath: string
  readonly #blobsPath: string
  readonly #pollMs: number
  readonly #rescanMs: number
  readonly #maxIngests: number
  readonly #committedTtlMs: number
  readonly #staleMs: number
  readonly #now: () => number
  readonly #dirs = new Map<string, IngestDir>()
  readonly #committed = new Map<string, Committed>()
  /** Digests announced 'arriving' and not yet 'gone'. */
  readonly #announced = new Set<string>()
  /** Digests whose ingest vanished without a blob, newest last; bounded by maxIngests. */
  readonly #abandoned = new Map<string, number>()
  readonly #listeners = new Set<(change: IngestChange) => void>()
  #watcher: FSWatcher | undefined
  #watchedIno: number | undefined
  #blobWatcher: FSWatcher | undefined
  #blobWatchedIno: number | undefined
  #rescanTimer: NodeJS.Timeout | undefined
  #pollTimer: NodeJS.Timeout | undefined
  #isStarted = false
  #isScanning = false
  #isPolling = false
  #hasLoggedFull = false
  readonly #checking = new Set<string>()
  readonly #recheck = new Set<string>()

  constructor (components: { log: Logger }, init: IngestWatcherInit) {
    this.#log = components.log
    this.#ingestPath = path.join(init.contentPath, 'ingest')
    this.#blobsPath = path.join(init.contentPath, 'blobs')
    this.#pollMs = positive('pollMs', init.pollMs ?? INGEST_POLL_MS)
    this.#rescanMs = positive('rescanMs', init.rescanMs ?? INGEST_RESCAN_MS)
    this.#maxIngests = positive('maxIngests', init.maxIngests ?? MAX_INGESTS)
    this.#committedTtlMs = positive('committedTtlMs', init.committedTtlMs ?? INGEST_COMMITTED_TTL_MS)
    this.#staleMs = positive('staleMs', init.staleMs ?? INGEST_STALE_MS)
    this.#now = init.now ?? Date.now
  }

  start (): void {
    if (this.#isStarted) return
    this.#isStarted = true
    this.#rescanTimer = setInterval(() => { this.#rescan() }, this.#rescanMs)
    this.#rescanTimer.unref()
    this.#rescan()
  }

  stop (): void {
    this.#isStarted = false
    if (this.#rescanTimer !== undefined) clearInterval(this.#rescanTimer)
    if (this.#pollTimer !== undefined) clearTimeout(this.#pollTimer)
    this.#rescanTimer = undefined
    this.#pollTimer = undefined
    this.#closeWatcher()
    this.#closeBlobWatcher()
  }

  /** An ingest with bytes to offer: the committed blob, or the dir with the most bytes so far. */
  get (digest: string, options: { isPendingIncluded?: boolean } = {}): Ingest | undefined {
    const committed = this.#committed.get(digest)
    if (committed !== undefined && !this.#isExpired(committed)) {
      return { digest, ref: committed.ref, path: committed.path, totalBytes: committed.totalBytes, receivedBytes: committed.totalBytes, isComplete: true }
    }
    let best: IngestDir | undefined
    for (const dir of this.#dirs.values()) {
      if (dir.digest !== digest) continue
      // A download opened with its size but no byte yet: containerd writes 1 MiB at a time, so on
      // a slow upstream the first bytes take a while; only its own downloader may offer it.
      const isPending = options.isPendingIncluded === true && dir.state === 'pending' && dir.totalBytes !== undefined && dir.totalBytes > 0
      if (dir.state !== 'arriving' && !isPending) continue
      if (best === undefined || dir.receivedBytes > best.receivedBytes) best = dir
    }
    if (best === undefined) return undefined
    return {
      digest,
      ref: best.ref!,
      path: path.join(this.#ingestPath, best.name, 'data'),
      totalBytes: best.totalBytes!,
      receivedBytes: best.receivedBytes,
      isComplete: false
    }
  }

  /**
   * The size containerd expects for a download it has opened but may not have started (its
   * `total`), whatever its state: containerd opens the ingest before it asks any registry host,
   * so this node's mirror learns the size of a blob it is asked for from here.
   */
  expectedSize (digest: string): number | undefined {
    for (const dir of this.#dirs.values()) {
      if (dir.digest === digest && dir.totalBytes !== undefined && dir.totalBytes > 0) return dir.totalBytes
    }
    return undefined
  }

  digests (): string[] {
    return [...this.#announced].filter((digest) => this.get(digest) !== undefined)
  }

  subscribe (listener: (change: IngestChange) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /**
   * The ingest vanished (or went stale) and no committed blob exists: a reader following it should
   * give up now.
   */
  isAbandoned (digest: string): boolean {
    if (this.get(digest) !== undefined) return false
    let hasStale = false
    for (const dir of this.#dirs.values()) {
      if (dir.digest !== digest) continue
      if (dir.state !== 'stale') return false
      hasStale = true
    }
    return hasStale || this.#abandoned.has(digest)
  }

  #emit (change: IngestChange): void {
    if (!this.#isStarted) return // a look still in flight when stop() was called
    for (const listener of this.#listeners) {
      try {
        listener(change)
      } catch (err) {
        this.#log.debug({ err, digest: change.digest }, 'ingest listener threw')
      }
    }
  }

  #announceIfNew (digest: string): void {
    if (this.#announced.has(digest)) return
    this.#announced.add(digest)
    this.#abandoned.delete(digest)
    this.#emit({ type: 'arriving', digest })
  }

  /** 'gone' once nothing (no dir with bytes, no live committed entry) offers `digest` any more. */
  #goneIfUnoffered (digest: string): void {
    if (!this.#announced.has(digest) || this.get(digest) !== undefined) return
    this.#announced.delete(digest)
    this.#emit({ type: 'gone', digest })
  }

  #isExpired (committed: Committed): boolean {
    return this.#now() - committed.committedAtMs >= this.#committedTtlMs
  }

  #ensureWatcher (ino: number): void {
    if (this.#watcher !== undefined || !this.#isStarted) return
    try {
      const watcher = watch(this.#ingestPath, { persistent: false })
      watcher.on('change', (_event, filename) => {
        if (typeof filename === 'string' && filename !== '') this.#check(filename)
        else this.#rescan()
      })
      watcher.on('error', (err) => {
        // The ingest dir itself went away (containerd's root removed): the rescan restarts the watch.
        this.#log.debug({ err, path: this.#ingestPath }, 'ingest watch failed')
        if (this.#watcher === watcher) this.#closeWatcher()
      })
      this.#watcher = watcher
      this.#watchedIno = ino
    } catch (err) {
      this.#log.debug({ err, path: this.#ingestPath }, 'cannot watch the ingest directory yet')
    }
  }

  /**
   * Blobs that land in `blobs/sha256` are offered at once, for `committedTtlMs`: a small blob
   * (an image config) is often downloaded and committed between two looks at `ingest/`, and
   * containerd's image record, which makes the store advertise a blob, only comes at the end of
   * the whole pull. Deletions (garbage collection) fire the same event and are ignored.
   */
  #ensureBlobWatcher (ino: number): void {
    if (this.#blobWatcher !== undefined || !this.#isStarted) return
    const dir = path.join(this.#blobsPath, 'sha256')
    try {
      const watcher = watch(dir, { persistent: false })
      watcher.on('change', (_event, filename) => {
        if (typeof filename !== 'string' || !/^[a-f0-9]{64}$/.test(filename)) return
        this.#blobAppeared(`sha256:${filename}`).catch((err: unknown) => { this.#log.debug({ err, filename }, 'looking at a new blob failed') })
      })
      watcher.on('error', (err) => {
        this.#log.debug({ err, path: dir }, 'blob watch failed')
        if (this.#blobWatcher === watcher) this.#closeBlobWatcher()
      })
      this.#blobWatcher = watcher
      this.#blobWatchedIno = ino
    } catch (err) {
      this.#log.debug({ err, path: dir }, 'cannot watch the blob directory yet')
    }
  }

  async #blobAppeared (digest: string): Promise<void> {
    if (this.#committed.has(digest)) return
    // A download we follow: its ingest dir's end (#vanished) checks the size against its total.
    for (const dir of this.#dirs.values()) if (dir.digest === digest) return
    const file = path.join(this.#blobsPath, 'sha256', digest.slice('sha256:'.length))
    const info = await lstat(file).catch(() => undefined)
    if (!this.#isStarted || info?.isFile() !== true || info.size <= 0) return
    // Old content touched by something else is the store's business, not a fresh download.
    if (this.#now() - info.mtimeMs > this.#committedTtlMs || this.#committed.has(digest)) return
    if (this.#committed.size >= this.#maxIngests) this.#evictOldestCommitted()
    this.#committed.set(digest, { digest, ref: '', path: file, totalBytes: info.size, committedAtMs: this.#now() })
    this.#abandoned.delete(digest)
    this.#announceIfNew(digest)
    this.#emit({ type: 'complete', digest })
  }

  #closeBlobWatcher (): void {
    closeQuietly(this.#blobWatcher)
    this.#blobWatcher = undefined
    this.#blobWatchedIno = undefined
  }

  #closeWatcher (): void {
    closeQuietly(this.#watcher)
    this.#watcher = undefined
    this.#watchedIno = undefined
  }

  #rescan (): void {
    if (!this.#isStarted || this.#isScanning) return
    this.#isScanning = true
    this.#doRescan().catch((err: unknown) => {
      this.#log.debug({ err }, 'ingest rescan failed')
    }).finally(() => {
      this.#isScanning = false
      this.#schedulePoll()
    })
  }

  async #doRescan (): Promise<void> {
    // A watch follows an inode: if the directory was removed (and maybe made again), watch anew.
    const ino = (await stat(this.#ingestPath).catch(() => undefined))?.ino
    if (ino !== this.#watchedIno) this.#closeWatcher()
    if (ino !== undefined) this.#ensureWatcher(ino)
    const blobIno = (await stat(path.join(this.#blobsPath, 'sha256')).catch(() => undefined))?.ino
    if (blobIno !== this.#blobWatchedIno) this.#closeBlobWatcher()
    if (blobIno !== undefined) this.#ensureBlobWatcher(blobIno)
    let names: string[]
    try {
      names = await readdir(this.#ingestPath)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      names = []
    }
    if (!this.#isStarted) return
    const present = new Set(names)
    const work: Array<Promise<void>> = []
    for (const name of names) work.push(this.#checkName(name))
    for (const name of this.#dirs.keys()) if (!present.has(name)) work.push(this.#checkName(name))
    await Promise.all(work)
    for (const committed of [...this.#committed.values()]) {
      if (!this.#isExpired(committed)) continue
      this.#committed.delete(committed.digest)
      this.#goneIfUnoffered(committed.digest)
    }
    for (const [digest, atMs] of this.#abandoned) {
      if (this.#now() - atMs < this.#committedTtlMs) break
      this.#abandoned.delete(digest)
    }
  }

  /** A watch event: look at one dir now, outside the rescan. */
  #check (name: string): void {
    if (!this.#isStarted) return
    this.#checkName(name).catch((err: unknown) => {
      this.#log.debug({ err, name }, 'ingest check failed')
    }).finally(() => { this.#schedulePoll() })
  }

  async #checkName (name: string): Promise<void> {
    if (this.#checking.has(name)) {
      // An event during a look (created then removed at once): look again right after it.
      this.#recheck.add(name)
      return
    }
    this.#checking.add(name)
    try {
      do {
        this.#recheck.delete(name)
        await this.#checkNameOnce(name)
      } while (this.#recheck.has(name) && this.#isStarted)
    } finally {
      this.#checking.delete(name)
      this.#recheck.delete(name)
    }
  }

  async #checkNameOnce (name: string): Promise<void> {
    let dir = this.#dirs.get(name)
    const dirPath = path.join(this.#ingestPath, name)
    const stats = await lstat(dirPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined
      throw err
    })
    if (stats === undefined || !stats.isDirectory()) {
      if (dir !== undefined) await this.#vanished(dir)
      return
    }
    if (dir === undefined) {
      if (this.#dirs.size >= this.#maxIngests) {
        if (!this.#hasLoggedFull) this.#log.info({ maxIngests: this.#maxIngests }, 'too many containerd ingests; ignoring the rest')
        this.#hasLoggedFull = true
        return
      }
      dir = { name, seenAtMs: this.#now(), grewAtMs: this.#now(), state: 'pending', ref: undefined, digest: undefined, totalBytes: undefined, receivedBytes: 0 }
      this.#dirs.set(name, dir)
    }
    await this.#inspect(dir)
  }

  async #inspect (dir: IngestDir): Promise<void> {
    if (dir.state === 'ignored') return
    const dirPath = path.join(this.#ingestPath, dir.name)
    if (dir.ref === undefined) {
      const ref = await readSmallFile(path.join(dirPath, 'ref'), MAX_REF_BYTES)
      if (ref === undefined || ref === '') return // not written yet
      if (ref === null) return this.#ignore(dir, 'ref file too large or not a file')
      const m = DIGEST_AT_END.exec(ref)
      if (m === null) return this.#ignore(dir, `ref ${JSON.stringify(ref.slice(0, 100))} has no digest`)
      dir.ref = ref
      dir.digest = m[1] !== undefined ? `${m[1]}:${m[2]!}` : `${m[3]!}:${m[4]!}`
    }
    if (dir.totalBytes === undefined) {
      const total = await readSmallFile(path.join(dirPath, 'total'), MAX_TOTAL_BYTES)
      if (total === null) return this.#ignore(dir, 'total file too large or not a file')
      if (total !== undefined && total !== '') {
        const n = /^\d+$/.test(total.trim()) ? Number(total.trim()) : NaN
        if (!Number.isSafeInteger(n) || n <= 0) return this.#ignore(dir, `total ${JSON.stringify(total.slice(0, 40))} invalid`)
        dir.totalBytes = n
      }
    }
    const data = await lstat(path.join(dirPath, 'data')).catch(() => undefined)
    const receivedBytes = data?.isFile() === true ? data.size : 0
    if (this.#dirs.get(dir.name) !== dir) return // vanished while we looked
    const now = this.#now()
    if (receivedBytes !== dir.receivedBytes) dir.grewAtMs = now
    dir.receivedBytes = receivedBytes
    if (dir.totalBytes !== undefined && dir.receivedBytes > 0) {
      if (dir.receivedBytes < dir.totalBytes && now - dir.grewAtMs >= this.#staleMs) {
        // Left behind by a failed pull whose lease outlives it (containerd keeps such ingests up to
        // 24 h): offering it would only make peers wait for their stall timeout.
        dir.state = 'stale'
        this.#goneIfUnoffered(dir.digest!)
      } else {
        dir.state = 'arriving'
        this.#announceIfNew(dir.digest!)
      }
    } else if (dir.totalBytes === undefined && dir.receivedBytes > 0) {
      // A writer opened without a size; it will not write `total` later, so stop the fast poll.
      dir.state = 'unsized'
    }
  }

  #ignore (dir: IngestDir, why: string): void {
    dir.state = 'ignored'
    this.#log.debug({ name: dir.name, why }, 'ignoring containerd ingest')
  }

  /** The dir is gone: committed (the blob exists with the expected size) or abandoned. */
  async #vanished (dir: IngestDir): Promise<void> {
    if (this.#dirs.get(dir.name) !== dir) return
    this.#dirs.delete(dir.name)
    const digest = dir.digest
    if (digest === undefined || dir.ref === undefined) return
    const [alg, hex] = digest.split(':') as [string, string]
    const blobPath = path.join(this.#blobsPath, alg, hex)
    const blob = await lstat(blobPath).catch(() => undefined)
    const isCommitted = blob?.isFile() === true && (dir.totalBytes === undefined ? blob.size > 0 : blob.size === dir.totalBytes)
    if (isCommitted) {
      if (!this.#committed.has(digest)) {
        if (this.#committed.size >= this.#maxIngests) this.#evictOldestCommitted()
        this.#committed.set(digest, { digest, ref: dir.ref, path: blobPath, totalBytes: blob.size, committedAtMs: this.#now() })
      }
      this.#abandoned.delete(digest)
      this.#announceIfNew(digest)
      this.#emit({ type: 'complete', digest })
      return
    }
    const isStillIngesting = [...this.#dirs.values()].some((d) => d.digest === digest)
    if (!isStillIngesting && this.#committed.get(digest) === undefined) {
      this.#abandoned.delete(digest)
      if (this.#abandoned.size >= this.#maxIngests) {
        const oldest = this.#abandoned.keys().next().value
        if (oldest !== undefined) this.#abandoned.delete(oldest)
      }
      this.#abandoned.set(digest, this.#now())
      this.#emit({ type: 'abandoned', digest })
    }
    this.#goneIfUnoffered(digest)
  }

  #evictOldestCommitted (): void {
    const oldest = this.#committed.values().next().value
    if (oldest === undefined) return
    this.#committed.delete(oldest.digest)
    this.#goneIfUnoffered(oldest.digest)
  }

  #needsFastPoll (): boolean {
    const now = this.#now()
    for (const dir of this.#dirs.values()) {
      if (dir.state === 'pending' && now - dir.seenAtMs < PENDING_FAST_POLL_LIMIT_MS) return true
    }
    return false
  }

  #schedulePoll (): void {
    if (!this.#isStarted || this.#pollTimer !== undefined || this.#isPolling || !this.#needsFastPoll()) return
    this.#pollTimer = setTimeout(() => {
      this.#pollTimer = undefined
      this.#poll()
    }, this.#pollMs)
    this.#pollTimer.unref()
  }

  #poll (): void {
    if (!this.#isStarted) return
    this.#isPolling = true
    const now = this.#now()
    const pending = [...this.#dirs.values()].filter((d) => d.state === 'pending' && now - d.seenAtMs < PENDING_FAST_POLL_LIMIT_MS)
    Promise.all(pending.map(async (dir) => { await this.#checkName(dir.name) })).catch((err: unknown) => {
      this.#log.debug({ err }, 'ingest poll failed')
    }).finally(() => {
      this.#isPolling = false
      this.#schedulePoll()
    })
  }
}

/**
 * A small file's text: undefined when it does not exist, null when it is larger than `maxBytes`
 * or not a regular file. Non-blocking and no symlinks, so a FIFO or a link planted in the
 * ingest dir cannot hang or redirect the read.
 */
async function readSmallFile (filePath: string, maxBytes: number): Promise<string | undefined | null> {
  let handle
  try {
    handle = await open(filePath, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined
    return null
  }
  try {
    const stats = await handle.stat()
    if (!stats.isFile()) return null
    const buffer = Buffer.alloc(maxBytes + 1)
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0)
    if (bytesRead > maxBytes) return null
    return buffer.subarray(0, bytesRead).toString('utf8').trim()
  } finally {
    await handle.close().catch(() => {})
  }
}

function positive (name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} ${value} invalid: must be > 0`)
  return value
}

function closeQuietly (watcher: FSWatcher | undefined): void {
  try {
    watcher?.close()
  } catch {}
}
