/**
 * Stream protocol for pushed deltas, heartbeats and goodbyes (one long-lived stream per
 * direction). Version 2 carries signed statements; a node of version 1 cannot read them.
 */
export const PUSH_PROTOCOL = '/spegel-ts/index/push/2'

/** Request/response protocol (anti-entropy): a version vector in, newer signed records out. */
export const PULL_PROTOCOL = '/spegel-ts/index/pull/2'

/**
 * The unsigned protocols of before: still answered, only to refuse them loudly (counted as
 * `unsigned`, logged once per peer), so an old node in the cluster is a visible problem and
 * never a silent half-member.
 */
export const UNSIGNED_PROTOCOLS = ['/spegel-ts/index/delta/1', '/spegel-ts/index/sync/1'] as const

/** Pull from a random connected peer this often; the safety net when pushes were lost. */
export const DEFAULT_PULL_INTERVAL_MS = 15_000
/** The former name, still read by bench/cluster-scale.ts (another owner); use DEFAULT_PULL_INTERVAL_MS. */
export const DEFAULT_SYNC_INTERVAL_MS = DEFAULT_PULL_INTERVAL_MS

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

/** Bound on one pull exchange (request, all records, end). A 5 MB index transfers in well under a second. */
export const PULL_TIMEOUT_MS = 20_000

/** Bound on opening a delta stream or dialling one peer. */
export const DIAL_TIMEOUT_MS = 10_000

/**
 * A delta larger than this is not pushed: its version goes out in a heartbeat and peers pull
 * the record, so a 5,000-key snapshot never floods every link.
 */
export const MAX_DELTA_BYTES = 64 * 1024

/**
 * Limits on what peers can make this node hold or do. Design point: a 100-node cluster whose nodes
 * advertise 20,000 keys each. A digest entry is 33 bytes on the wire and a pinned tag about 60 to
 * 120, so such a record is 0.7 to 2 MB and the whole index 70 to 200 MB of records; each cap
 * leaves that several times the room and stops what is far beyond it. Reaching one is counted in
 * spegel_router_limit_reached_total{limit} and logged (record-auth.ts, Limits).
 */

/**
 * Largest pull-answer frame, i.e. one signed record: MAX_RECORD_KEYS entries at an average of
 * 160 bytes (long pinned tags) is 8 MB; a design-point record is a tenth of it. A frame is
 * buffered whole before it is decoded, and only a node's own pulls read such frames (one per peer
 * at a time), so this is also what one pull can make this node buffer at once. It was 16 MiB, but
 * libp2p's byte stream refused anything over 4 MiB anyway (its default read buffer), so records
 * between 4 and 16 MiB never made it: every reader now sets its buffer to the frame limit.
 */
export const MAX_FRAME_BYTES = 8 * 1024 * 1024

/**
 * Largest push frame and pull request. Honest ones are small: deltas over MAX_DELTA_BYTES are
 * never pushed (peers pull the record instead), a heartbeat or a version vector is about 75 bytes
 * per record held, 75 KB at MAX_INDEX_RECORDS. Push streams stay open for the life of a
 * connection, so this bounds what every connected peer can make this node buffer.
 */
export const MAX_CONTROL_FRAME_BYTES = 1024 * 1024

/**
 * Inbound push streams one connection may have open (libp2p resets more): an honest peer keeps
 * one, and opens another when its link is reopened.
 */
export const MAX_PUSH_STREAMS_PER_CONNECTION = 4

/** Other nodes' records held: ten times the design cluster. A record for a new origin beyond it is refused. */
export const MAX_INDEX_RECORDS = 1_000

/**
 * Keys in one record: 2.5 times the design point of 20,000. A record (or a delta leading to one)
 * with more is refused; an honest node beyond it logs that its peers will refuse its record.
 */
export const MAX_RECORD_KEYS = 50_000

/**
 * Keys (entries) summed over every record held: twice the design cluster's 100 x 20,000, about
 * 300 MB of index at worst (distinct keys); in practice nodes share most keys and hold far less.
 * A record that would take the index past it is refused, the records already held stay.
 */
export const MAX_INDEX_KEYS = 4_000_000

/**
 * Bytes and records in one pull answer. A node that needs more (a new node in the design cluster
 * needs 70 to 200 MB) gets the rest by pulling again at once, each answer within PULL_TIMEOUT_MS:
 * the server marks a cut answer, and the client continues. Both sides apply the same numbers (a
 * server never sends more, a client stops reading a peer that does).
 */
export const MAX_PULL_REPLY_BYTES = 32 * 1024 * 1024
export const MAX_PULL_REPLY_RECORDS = 256

/** Continuations of cut answers in a row, before the usual per-peer pull rate applies again. */
export const MAX_PULL_CONTINUATIONS = Math.ceil(MAX_INDEX_RECORDS / MAX_PULL_REPLY_RECORDS) + 1

/**
 * Pulls this node answers at once, per peer and in total. An honest node runs one pull per peer
 * at a time (two while an old connection's pull winds down); a pull answer is written frame by
 * frame as the requester reads, so a served pull holds about one record in memory, and the total
 * bounds that to a few tens of MB. Beyond either, the request is refused (the stream is reset)
 * and the requester pulls again later.
 */
export const MAX_PULLS_SERVED_PER_PEER = 2
export const MAX_PULLS_SERVED = 32

/**
 * A served pull whose requester takes no frame for this long is cut, so a peer that opens pulls
 * and never reads them holds a slot for seconds, not for the whole PULL_TIMEOUT_MS.
 */
export const PULL_WRITE_STALL_MS = 5_000

/**
 * Least time between two pulls from one peer. Whatever makes a pull (a gap, a heartbeat or Have
 * from that peer, a pull request showing it is ahead) within this interval is folded into one
 * pull at its end, so a flood of frames costs one pull per peer per interval. One second adds at
 * most a second to how fast a large change spreads, and none to deltas (they are pushed).
 */
export const PULL_MIN_INTERVAL_MS = 1_000

/** Least time between two pulls made to find versions the peer that announced them did not have. */
export const RETRY_WANTED_INTERVAL_MS = 5_000

/** A limit already logged is logged again (with the count since) at most this often. */
export const LIMIT_LOG_INTERVAL_MS = 10 * 60_000

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

/**
 * Proving a record's registry address takes a connection to its origin at that IP; these bound
 * the dials it costs: a few at a time, retried with backoff up to one dial per 30 s per unproven
 * record, and counted as unverified after a few failed attempts.
 */
export const PROOF_DIAL_CONCURRENCY = 4
export const PROOF_ATTEMPTS = 4
export const PROOF_BACKOFF_INITIAL_MS = 1_000
export const PROOF_BACKOFF_MAX_MS = 30_000

/** Built record statements kept to answer pulls (they are rebuilt from the index otherwise). */
export const SERVED_RECORD_CACHE_BYTES = 8 * 1024 * 1024
/**
 * ... and dropped once not served for this long (served-cache.ts says why). Pulls come in bursts
 * (a join, a restart) lasting seconds; two pull intervals is well past one.
 */
export const SERVED_RECORD_IDLE_MS = 30_000
