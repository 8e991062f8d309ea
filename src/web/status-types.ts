// The JSON the debug page reads. Shared by the server (src/web/status.ts) and the browser
// script (src/web/ui/app.ts, compiled without Node's types), so this file imports nothing.

/** Something an operator should fix, shown on the page (and logged once by the node). */
export interface NodeWarning {
  /** Stable identifier, e.g. `no-router-psk`. */
  readonly id: string
  readonly severity: 'error' | 'warning' | 'info'
  readonly message: string
  readonly fix: string
}

/** One line of the containerd checklist, as `spegel doctor` would print it. */
export interface ContainerdCheck {
  readonly name: string
  readonly status: 'ok' | 'warn' | 'fail'
  readonly detail: string
  readonly fix?: string
}

/** What the web page needs from containerd's supervisor, as plain values. */
export interface ContainerdView {
  readonly state: string
  readonly socketPath: string
  readonly namespace: string
  readonly version?: string
  /** Unix ms of the last state change. */
  readonly sinceMs: number
  readonly reason?: string
  readonly problem?: { readonly id: string, readonly message: string, readonly fix: string }
  /** Direct-read content directory in use; undefined while reading through gRPC (or not connected). */
  readonly contentDirectory?: string
  readonly configuredContentPath: string
}

export interface PeerView {
  readonly id: string
  readonly registryAddress: string
  readonly addrs: readonly string[]
  readonly keyCount: number
  readonly lastHeardMs?: number
  readonly isAlive: boolean
  readonly isConnected: boolean
}

export interface RouterView {
  readonly peerId: string
  readonly isReady: boolean
  readonly reason?: string
  readonly multiaddrs: readonly string[]
  readonly records: number
  readonly keys: number
  readonly ownKeys: number
  readonly peers: readonly PeerView[]
}

/** One finished /v2 request (the registry's RecentRequest, as JSON). */
export interface RequestView {
  readonly atMs: number
  readonly method: string
  readonly kind: 'manifest' | 'blob' | 'other'
  readonly ref: string
  readonly registry: string
  readonly client: 'containerd' | 'peer'
  readonly source: 'local' | 'peer' | 'none'
  readonly peer?: string
  readonly peerAddress?: string
  readonly status: number
  readonly bytes: number
  readonly durationMs: number
  readonly isAborted: boolean
  readonly error?: string
}

/** An image this node holds (ImageSummary from the store, plus peers). */
export interface ImageView {
  readonly name: string
  readonly registry: string
  readonly repository: string
  readonly tag?: string
  readonly digest: string
  readonly sizeBytes: number
  readonly digests: readonly string[]
  /** Live peers that hold the image's root digest. */
  readonly peers: number
}

export interface NodeStatus {
  readonly generatedAtMs: number
  readonly node: {
    readonly peerId?: string
    readonly hostname: string
    readonly version: string
    readonly nodejs: string
    readonly startedAtMs: number
    readonly uptimeSeconds: number
    readonly isReady: boolean
    readonly reason?: string
    readonly registryAddress?: string
    readonly listen: { readonly registry: string, readonly router: string, readonly metrics: string }
    readonly multiaddrs: readonly string[]
    readonly isRouterPskEnabled: boolean
    readonly lastMirrorSuccessMs?: number
  }
  readonly containerd: ContainerdView & { readonly checks: readonly ContainerdCheck[] }
  readonly router?: Omit<RouterView, 'peers'>
  readonly peers: readonly PeerView[]
  readonly images: readonly ImageView[]
  readonly imagesTotal: number
  readonly requests: readonly RequestView[]
  readonly warnings: readonly NodeWarning[]
}

/** What `/debug/web/api/measure` answers. */
export interface MeasuredItem {
  readonly digest: string
  readonly mediaType: string
  readonly sizeBytes: number
  readonly durationMs: number
  /** `local`, a peer id, or `unknown` when the request was not found in the recent list. */
  readonly servedBy: string
}

export interface MeasureResult {
  /** The parsed reference, defaults applied (`docker.io`, `library/`, `latest`). */
  readonly image: string
  /** The routing key looked up: the digest, or `registry/repository:tag`. */
  readonly key: string
  readonly lookup: {
    readonly durationMs: number
    readonly isLocal: boolean
    readonly peers: ReadonlyArray<{ readonly id: string, readonly registryAddress: string, readonly durationMs: number }>
  }
  /** Absent when no node (this one included) holds the image. */
  readonly pull?: {
    readonly durationMs: number
    readonly sizeBytes: number
    readonly items: readonly MeasuredItem[]
  }
  readonly error?: string
}
