import type { Readable } from 'node:stream'

/** What the registry needs to know about a piece of content before serving it. */
export interface Descriptor {
  readonly digest: string
  readonly sizeBytes: number
  readonly mediaType: string
}

export interface ByteRange {
  /** First byte, inclusive. */
  readonly start: number
  /** Last byte, inclusive. */
  readonly end: number
}

export interface StoreCallOptions {
  signal?: AbortSignal
}

export interface OpenOptions extends StoreCallOptions {
  range?: ByteRange
}

export interface StoreReadiness {
  readonly isReady: boolean
  /** Short operator-facing reason when not ready, e.g. `containerd: connect ECONNREFUSED /run/containerd/containerd.sock`. */
  readonly reason?: string
}

/**
 * A change in the set of keys this node can serve. Keys are digests (`sha256:…`) and
 * tag names (`registry/repository:tag`). `snapshot` replaces everything known before
 * (sent after every (re)connect to the backing store, and `keys` is empty while the
 * store is unreachable, so peers stop being sent here).
 */
export type StoreChange =
  | { readonly type: 'snapshot', readonly keys: readonly string[] }
  | { readonly type: 'add', readonly keys: readonly string[] }
  | { readonly type: 'remove', readonly keys: readonly string[] }

export type StoreListener = (change: StoreChange) => void

/**
 * Content this node holds. Missing content always rejects with NotFoundError;
 * an unreachable backend rejects with StoreUnavailableError.
 */
export interface Store {
  readonly name: string
  readiness(): StoreReadiness
  /** Tag name `registry/repository:tag` to the digest of its manifest or index. */
  resolve(ref: string, options?: StoreCallOptions): Promise<string>
  stat(digest: string, options?: StoreCallOptions): Promise<Descriptor>
  /** A stream of the content bytes (or of `range` only). */
  open(digest: string, options?: OpenOptions): Promise<Readable>
  /** Every key currently served, as advertised. */
  keys(): readonly string[]
  /** Listen for key changes; returns the unsubscribe function. */
  subscribe(listener: StoreListener): () => void
}

/** One image a store holds, for operators (the web page); not used to serve content. */
export interface ImageSummary {
  /** The store's name for it, e.g. `docker.io/library/nginx:1.27` or `…@sha256:…`. */
  readonly name: string
  readonly registry: string
  readonly repository: string
  readonly tag?: string
  /** Digest of the manifest or index the name points to. */
  readonly digest: string
  /** Bytes of the content of this image present in the store (other platforms' layers are often absent). */
  readonly sizeBytes: number
  /** Digests of this image present in the store, root first. */
  readonly digests: readonly string[]
}

/** A store that can list its images (containerd's can; serving needs no list). */
export interface ImageLister {
  images(): ImageSummary[]
}
