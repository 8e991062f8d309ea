/** Stream protocol for pushed deltas, heartbeats and goodbyes (one long-lived stream per direction). */
export const DELTA_PROTOCOL = '/spegel-ts/index/delta/1'

/** Request/response protocol: a version vector in, newer records out. */
export const SYNC_PROTOCOL = '/spegel-ts/index/sync/1'

/** Pull from a random connected peer this often; the safety net when pushes were lost. */
export const DEFAULT_SYNC_INTERVAL_MS = 15_000

/** Every node floods a tiny "still here" this often. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5_000

/**
 * A record not heard of (directly or through others) for this long is dropped. Four missed
 * heartbeats: one lost or delayed beat on a busy node must not drop a live peer, and a dead
 * node is still gone within 30 s.
 */
export const DEFAULT_EXPIRY_MS = 20_000

/**
 * Connections this node tries to keep; several peers, not one hub, which would be the busiest node
 * and the first to lose streams under load.
 */
export const DEFAULT_TARGET_PEERS = 6

/** Bootstrap retry backoff: Spegel's 50 ms doubling to 10 s (pkg/routing/libp2p/libp2p.go), with jitter. */
export const BOOTSTRAP_BACKOFF_INITIAL_MS = 50
export const BOOTSTRAP_BACKOFF_MAX_MS = 10_000

/** One discover() call may not take longer than this (Spegel's bootstrap round bound). */
export const DISCOVER_TIMEOUT_MS = 30_000

/**
 * Re-run discovery this often while connected to fewer peers than the target. Short, because a
 * restarted bootstrap node finds only itself and others do not redial a node that said goodbye;
 * a round is one DNS lookup or one small HTTP GET, and nodes at the target skip it.
 */
export const REDISCOVER_INTERVAL_MS = 5_000

/** Redial backoff for a known peer that went away (or never answered). */
export const REDIAL_BACKOFF_INITIAL_MS = 500
export const REDIAL_BACKOFF_MAX_MS = 30_000

/** How often the connection keeper looks for missing peers. */
export const MAINTAIN_INTERVAL_MS = 2_000

/** Bound on one sync exchange (request, all records, end). A 5 MB index transfers in well under a second. */
export const SYNC_TIMEOUT_MS = 20_000

/** Bound on opening a delta stream or dialling one peer. */
export const DIAL_TIMEOUT_MS = 10_000

/**
 * A delta larger than this is not pushed: its version goes out in a heartbeat and peers pull
 * the record, so a 5,000-key snapshot never floods every link.
 */
export const MAX_DELTA_BYTES = 64 * 1024

/** Largest frame accepted on either protocol (a record of ~500k digests). */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024

/** Outbound frames queued for one peer before the queue is dropped (its pull repairs the loss). */
export const MAX_QUEUED_FRAMES = 4096
export const MAX_QUEUED_BYTES = 8 * 1024 * 1024

/** Goodbye tombstones outlive any record that could resurrect them (records carry their age). */
export const TOMBSTONE_MIN_TTL_MS = 60_000

/** Wait for goodbyes to be written before closing connections on stop. */
export const GOODBYE_FLUSH_TIMEOUT_MS = 2_000

/** Raised from libp2p's defaults (5 inbound/s per IP, 10 pending), which refuse a cluster that starts at once. */
export const INBOUND_CONNECTION_THRESHOLD = 1000
export const MAX_INCOMING_PENDING_CONNECTIONS = 100

/** The pre-shared-key handshake default (1 s) is too short for 30 processes on 2 cores. */
export const PSK_HANDSHAKE_TIMEOUT_MS = 10_000

export const PRIVATE_KEY_FILENAME = 'private.key'
