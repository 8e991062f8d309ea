/**
 * Spegel keeps only the first few bootstrap candidates so every node dials the same small set
 * (pkg/routing/libp2p/bootstrap.go).
 */
export const MAX_BOOTSTRAP_PEERS = 3

/**
 * Per network call. Spegel's whole bootstrap round has 30 s and its HTTP client 10 s; a shorter
 * bound lets the router's backoff retry a dead endpoint several times within one Spegel round.
 */
export const DEFAULT_CALL_TIMEOUT_MS = 5_000

/** Spegel's graceful shutdown bound for the /id server. */
export const SERVE_SHUTDOWN_TIMEOUT_MS = 30_000

/** An /id answer lists a few peers; anything this large is not a bootstrap endpoint. */
export const MAX_ID_RESPONSE_BYTES = 1024 * 1024

export const CA_FILENAME = 'ca.crt'
export const CERT_FILENAME = 'tls.crt'
export const KEY_FILENAME = 'tls.key'
