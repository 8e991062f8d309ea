export interface RouterReadiness {
  readonly isReady: boolean
  readonly reason?: string
}

/** A peer that advertised a key: where its registry listens. */
export interface Peer {
  readonly id: string
  /** `IP:port` of the peer's registry (IPv6 in brackets); never a hostname. */
  readonly registryAddress: string
  /**
   * For a tag advertised pinned (`registry/repository:tag@<digest>`): the digest the peer says the
   * tag names. A tag answer from this peer is worth something only when it is this digest.
   */
  readonly digest?: string
}

export interface LookupOptions {
  signal?: AbortSignal
  /** Most peers to return. */
  limit?: number
}

/**
 * Finds which peers hold a key (digest or `registry/repository:tag`) and tells peers
 * which keys this node holds. Never returns this node itself.
 *
 * Keys are opaque strings, with one form a router understands: a tag advertised as
 * `registry/repository:tag@<digest>` (see pinTag) is held under the tag, and lookups of the tag
 * yield peers carrying that digest. `withdraw` takes the tag with or without its digest.
 */
export interface Router {
  readonly name: string
  readiness(): RouterReadiness
  lookup(key: string, options?: LookupOptions): AsyncIterable<Peer>
  advertise(keys: readonly string[]): void
  withdraw(keys: readonly string[]): void
  /** Replace this node's whole record (after a relist of the store). */
  replaceAll(keys: readonly string[]): void
}
