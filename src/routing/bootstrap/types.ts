/** A peer to dial, as a bootstrapper found it. */
export interface BootstrapPeer {
  /** libp2p peer id when known (static multiaddrs carry `/p2p/<id>`; DNS answers do not). */
  readonly id?: string
  /** Multiaddrs such as `/ip4/10.0.0.5/tcp/5001`; may lack the port (then the router's own port is used). */
  readonly addrs: readonly string[]
}

export interface SelfInfo {
  readonly id: string
  readonly addrs: readonly string[]
}

/**
 * Finds peers to join the cluster through (Spegel's Bootstrapper, pkg/routing/libp2p/bootstrap.go).
 * `discover` may be called many times (with backoff by the router); `serve` runs for the life of
 * the node when the kind needs to answer others (the http kind's `/id`).
 */
export interface Bootstrapper {
  readonly kind: 'dns' | 'http' | 'static'
  discover(options?: { signal?: AbortSignal }): Promise<BootstrapPeer[]>
  serve?(self: () => SelfInfo, signal: AbortSignal): Promise<void>
}
