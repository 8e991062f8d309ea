/** Reconnect backoff: start fast (containerd usually comes up within a second), cap so a fleet does not hammer. */
export const BACKOFF_INITIAL_MS = 100
export const BACKOFF_MAX_MS = 5000
/** After this long unavailable, one error-level log line for alerting. */
export const STILL_DOWN_ALERT_MS = 60_000
export const VERSION_TIMEOUT_MS = 3000
/** Deadline for calls on the request path: a hung containerd must not hang containerd's pull. */
export const REQUEST_CALL_TIMEOUT_MS = 2000
/** Deadline for calls while listing and walking images. */
export const LIST_CALL_TIMEOUT_MS = 30_000
/**
 * A relist learns every blob's size from one content listing of at most this many entries (twice
 * MAX_RECORD_KEYS, the most a node advertises; the map costs about 10 MiB at the limit while the
 * relist runs). A larger store is walked with one Info call per digest instead.
 */
export const MAX_LISTED_CONTENT = 100_000
/** Blobs up to this size are read with one read instead of a stream (much faster on Node 24). */
export const SMALL_READ_LIMIT_BYTES = 256 * 1024
/** Pending containerd events beyond this trigger a full relist instead of growing the queue. */
export const MAX_PENDING_EVENTS = 1000
/** While connected, how often containerd is asked for its version, and how long it has to answer. */
export const HEALTH_CHECK_INTERVAL_MS = 5000
export const HEALTH_CHECK_TIMEOUT_MS = 3000
/** While the content directory is unreadable, how often to look at it again. */
export const CONTENT_ROOT_RECHECK_MS = 2000
/**
 * A session (connected, subscribed, listing) that ends sooner than this counts as a failed dial:
 * the reconnect backoff keeps growing instead of starting over, so a containerd that accepts
 * the connection and then rejects the subscribe or the listing is not redialled in a tight loop.
 */
export const MIN_HEALTHY_SESSION_MS = 10_000
/** A session that has not settled this long after it was cancelled is reported (a bug, not an outage). */
export const SESSION_SETTLE_WARN_MS = 5000
/**
 * How long the index of a lost session stays advertised (and served from the content directory)
 * before it is withdrawn. A containerd restart takes a few seconds and leaves every blob on
 * disk; withdrawing and re-advertising every key costs the cluster two full-record versions.
 */
export const INDEX_RETAIN_MS = 5000
/**
 * Digests advertised from a content event alone (a pull in progress, before its image record
 * exists) are withdrawn when no image claims them within this long.
 */
export const LOOSE_CONTENT_TTL_MS = 10 * 60_000
/** How often loose digests are checked against that limit. */
export const LOOSE_CONTENT_SWEEP_MS = 30_000
