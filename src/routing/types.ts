export interface RouterReadiness {
  readonly isReady: boolean
  readonly reason?: string
}

/** A peer that advertised a key: where its registry listens. */
export interface Peer {
  readonly id: string
  /** `host:port` of the peer's registry (IPv6 hosts in brackets). */
  readonly registryAddress: string
}

export interface LookupOptions {
  signal?: AbortSignal
  /** Most peers to return. */
  limit?: number
}

/**
 * Finds which peers hold a key (digest or `registry/repository:tag`) and tells peers
 * which keys this node holds. Never returns this node itself.
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
