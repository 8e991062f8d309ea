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
/** Blobs up to this size are read with one read instead of a stream (much faster on Node 24). */
export const SMALL_READ_LIMIT_BYTES = 256 * 1024
/** Pending containerd events beyond this trigger a full relist instead of growing the queue. */
export const MAX_PENDING_EVENTS = 1000
/** While connected, how often containerd is asked for its version, and how long it has to answer. */
export const HEALTH_CHECK_INTERVAL_MS = 5000
export const HEALTH_CHECK_TIMEOUT_MS = 3000
/** While the content directory is unreadable, how often to look at it again. */
export const CONTENT_ROOT_RECHECK_MS = 2000
