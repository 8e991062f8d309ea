/**
 * Record authentication, in one place: what a node signs, what it checks before it believes,
 * stores or relays anything another node says, and how refusals are counted.
 *
 * - Every statement an origin makes about itself (its record, each delta, its goodbye) is signed
 *   with its libp2p identity (Ed25519; the peer id embeds the public key, so no key exchange).
 *   The signature covers `(domain, kind, origin, epoch, seq, sha256(payload))`.
 * - A record's registry address must be `IP:port` with a usable IP (registry-address.ts) that is
 *   one of the record's own announced addresses; and before lookups offer the record, this node
 *   must have seen the origin at that IP on an authenticated connection (AddressProofs).
 * - What fails is dropped, counted per reason, and logged once per sending peer and reason.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Logger } from '../../observability/logger.js'
import { canonicalIp, isUsablePeerIp, parseRegistryAddress, type RegistryAddress } from '../registry-address.js'
import { SIGNATURE_BYTES, encodeStatement, type Statement, type StatementKind } from './codec.js'

/** Separates these signatures from anything else the same key might ever sign. */
const DOMAIN = Buffer.from('spegel-ts/index/2\n', 'utf8')
/** Public keys kept decoded; a record per node, so this is a cluster's worth with room to spare. */
const MAX_CACHED_KEYS = 4096

/** The closed set of reasons a frame or record is refused (the `reason` label of the metric). */
export const REFUSAL_REASONS = [
  /** Does not decode: truncated, unknown type, bad varint, trailing bytes, keys out of order. */
  'malformed',
  /** Announces a frame longer than the protocol allows. */
  'oversized',
  /** Speaks the index protocol of before signing (an old node or an unsigned forgery). */
  'unsigned',
  /** The signature does not verify with the origin's key, or the origin is not an Ed25519 peer id. */
  'bad-signature',
  /** A direct-only frame (heartbeat) that speaks for a node other than the connection's peer. */
  'wrong-sender',
  /** A registry address that is not a usable `IP:port` among the record's own addresses, or bad addresses. */
  'bad-address',
  /** A registry address this node could not see its origin at (the record is kept, not offered). */
  'unverified-address'
] as const
export type RefusalReason = typeof REFUSAL_REASONS[number]

/** The bytes an origin signs for a statement. */
export function signingInput (kind: StatementKind, origin: string, epoch: number, seq: number, payload: Uint8Array): Buffer {
  const originBytes = Buffer.from(origin, 'utf8')
  const out = Buffer.alloc(DOMAIN.length + 1 + 2 + originBytes.length + 8 + 8 + 32)
  let pos = DOMAIN.copy(out, 0)
  out[pos++] = kind
  pos = out.writeUInt16BE(originBytes.length, pos)
  pos += originBytes.copy(out, pos)
  pos = out.writeBigUInt64BE(BigInt(epoch), pos)
  pos = out.writeBigUInt64BE(BigInt(seq), pos)
  createHash('sha256').update(payload).digest().copy(out, pos)
  return out
}

export interface RecordAuthComponents {
  /** This node's libp2p identity; only Ed25519 can sign statements. */
  privateKey: PrivateKey
}

/** Signs this node's statements and verifies other nodes'. */
export class RecordAuth {
  readonly selfId: string
  readonly #signingKey: KeyObject
  readonly #publicKeys = new Map<string, KeyObject | null>()

  constructor (components: RecordAuthComponents, init: { selfId: string }) {
    const key = components.privateKey
    if (key.type !== 'Ed25519') throw new Error(`statements need an Ed25519 identity, not ${key.type}`)
    this.selfId = init.selfId
    // libp2p's raw Ed25519 private key is the 32-byte seed followed by the public key.
    this.#signingKey = createPrivateKey({
      format: 'jwk',
      key: { kty: 'OKP', crv: 'Ed25519', d: Buffer.from(key.raw.subarray(0, 32)).toString('base64url'), x: Buffer.from(key.publicKey.raw).toString('base64url') }
    })
  }

  /** This node's statement, signed, in wire form. */
  statement (kind: StatementKind, epoch: number, seq: number, payload: Uint8Array): Statement {
    const signature = this.sign(kind, epoch, seq, payload)
    const s = { kind, origin: this.selfId, epoch, seq, payload, signature }
    return { ...s, bytes: encodeStatement(s) }
  }

  sign (kind: StatementKind, epoch: number, seq: number, payload: Uint8Array): Uint8Array {
    return new Uint8Array(sign(null, signingInput(kind, this.selfId, epoch, seq, payload), this.#signingKey))
  }

  /** True when `s` was signed by its origin's key. */
  verify (s: Pick<Statement, 'kind' | 'origin' | 'epoch' | 'seq' | 'payload' | 'signature'>): boolean {
    if (s.signature.byteLength !== SIGNATURE_BYTES) return false
    const key = this.#publicKey(s.origin)
    if (key === null) return false
    return verify(null, signingInput(s.kind, s.origin, s.epoch, s.seq, s.payload), key, s.signature)
  }

  /** The origin's Ed25519 key from its peer id; null when the id is not a canonical Ed25519 peer id. */
  #publicKey (origin: string): KeyObject | null {
    let key = this.#publicKeys.get(origin)
    if (key !== undefined) return key
    key = null
    try {
      const id = peerIdFromString(origin)
      // One key, one spelling: another encoding of the same id would make a second record.
      if (id.type === 'Ed25519' && id.toString() === origin) {
        key = createPublicKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(id.publicKey.raw).toString('base64url') } })
      }
    } catch {
      // Not a peer id at all: the answer is the same as for a peer id of another key type.
    }
    if (this.#publicKeys.size >= MAX_CACHED_KEYS) this.#publicKeys.clear()
    this.#publicKeys.set(origin, key)
    return key
  }
}

/** A record's address claims, checked: the registry address and the IPs the origin announces. */
export interface AddressClaims {
  readonly address: RegistryAddress
  /** Announced addresses whose IP is the registry address's, to prove it by dialling them. */
  readonly registryAddrs: readonly string[]
}

/**
 * Checks what a record says about where its origin is, before the record is stored: the
 * registry address is a usable `IP:port` (never a hostname, a path or a metadata address), every
 * announced address is a plain `/ip4|ip6/<usable IP>/tcp/<port>`, and the registry IP is one of
 * them. Returns the parsed claims, or why they are refused. An honest node never signs a record
 * that fails this (its own router checks it at start), so the whole record is refused.
 */
export function checkAddressClaims (registryAddress: string, addrs: readonly string[]): AddressClaims | string {
  const address = parseRegistryAddress(registryAddress)
  if (address === undefined) return `registry address ${JSON.stringify(registryAddress)} is not a usable IP:port`
  const registryAddrs: string[] = []
  for (const text of addrs) {
    const tcp = tcpAddress(text)
    if (tcp === undefined) return `announced address ${JSON.stringify(text)} is not /ip4|ip6/<usable IP>/tcp/<port>`
    if (tcp.ip === address.ip) registryAddrs.push(text)
  }
  if (registryAddrs.length === 0) return `registry address ${address.hostPort} is not among the node's announced addresses`
  return { address, registryAddrs }
}

/** `/ip4/<ip>/tcp/<port>` or `/ip6/...` and nothing more, with a usable IP; undefined otherwise. */
export function tcpAddress (text: string): { ip: string, port: number } | undefined {
  let components
  try {
    components = multiaddr(text).getComponents()
  } catch {
    return undefined
  }
  const [host, tcp, ...rest] = components
  if (rest.length > 0 || host === undefined || tcp === undefined || tcp.name !== 'tcp') return undefined
  if (host.name !== 'ip4' && host.name !== 'ip6') return undefined
  const ip = canonicalIp(host.value ?? '')
  const port = Number(tcp.value)
  if (ip === undefined || !isUsablePeerIp(ip) || !Number.isInteger(port) || port < 1 || port > 65535) return undefined
  return { ip, port }
}

/** The IP of a connection's remote multiaddr, canonical; undefined when it has none. */
export function remoteIp (addr: { toString(): string }): string | undefined {
  const m = /^\/ip[46]\/([^/]+)/.exec(addr.toString())
  return m === null ? undefined : canonicalIp(m[1] ?? '')
}

const MAX_PROVEN_PEERS = 4096
const MAX_IPS_PER_PEER = 16

/**
 * Where this node has seen each peer: the remote IP of every connection whose peer id the
 * handshake authenticated (inbound or outbound). A record's registry address is offered in
 * lookups only once its IP is here, because a signature proves who wrote a record, not that its
 * writer is at the address it names.
 */
export class AddressProofs {
  readonly #seen = new Map<string, Set<string>>()

  /** Records that `peer` was seen at `ip`; true when this is new. */
  saw (peer: string, ip: string): boolean {
    let ips = this.#seen.get(peer)
    if (ips === undefined) {
      // Oldest first out: peers that come and go must not grow this without bound.
      if (this.#seen.size >= MAX_PROVEN_PEERS) this.#seen.delete(this.#seen.keys().next().value as string)
      ips = new Set()
      this.#seen.set(peer, ips)
    }
    if (ips.has(ip)) return false
    if (ips.size >= MAX_IPS_PER_PEER) ips.delete(ips.values().next().value as string)
    ips.add(ip)
    return true
  }

  has (peer: string, ip: string): boolean {
    return this.#seen.get(peer)?.has(ip) ?? false
  }

  /** Forgets a peer whose record is gone: a later record must be proven again. */
  forget (peer: string): void {
    this.#seen.delete(peer)
  }
}

export interface RefusalsComponents {
  log: Logger
}

const MAX_LOGGED = 1024

/**
 * Counts refused frames per reason, and logs the first refusal of each (peer, reason) at warn
 * with what was wrong; the rest only count, so a peer sending garbage cannot flood the log.
 */
export class Refusals {
  readonly #log: Logger
  readonly #counts = new Map<RefusalReason, number>(REFUSAL_REASONS.map((r) => [r, 0]))
  readonly #logged = new Set<string>()

  constructor (components: RefusalsComponents) {
    this.#log = components.log
  }

  refuse (reason: RefusalReason, peer: string, detail: { origin?: string, what: string, err?: unknown }): void {
    this.#counts.set(reason, (this.#counts.get(reason) ?? 0) + 1)
    const key = `${peer}\n${reason}`
    if (this.#logged.has(key)) return
    if (this.#logged.size >= MAX_LOGGED) return
    this.#logged.add(key)
    this.#log.warn({ event: 'router_frame_refused', peer, reason, ...(detail.origin === undefined ? {} : { origin: detail.origin }), detail: detail.what, ...(detail.err === undefined ? {} : { err: detail.err }) },
      'refused a frame from a peer (logged once per peer and reason)')
  }

  counts (): ReadonlyMap<RefusalReason, number> {
    return new Map(this.#counts)
  }
}

/**
 * The closed set of limits on what peers can make this node hold or do (the `limit` label of
 * spegel_router_limit_reached_total); the numbers and their reasons are in constants.ts.
 */
export const LIMITS = [
  /** A record for a new origin, refused: the index holds MAX_INDEX_RECORDS records. */
  'index-records',
  /** A record refused because the index would hold more than MAX_INDEX_KEYS keys in all. */
  'index-keys',
  /** A record or delta refused because its record would hold more than MAX_RECORD_KEYS keys (also counted for this node's own record). */
  'record-keys',
  /** A pull answer cut at MAX_PULL_REPLY_BYTES: by this node as a server (the requester continues), or a peer's answer that ran past it (dropped). */
  'pull-reply-bytes',
  /** The same for MAX_PULL_REPLY_RECORDS records. */
  'pull-reply-records',
  /** A pull request refused: that peer already has MAX_PULLS_SERVED_PER_PEER pulls being answered. */
  'pulls-served-peer',
  /** A pull request refused: MAX_PULLS_SERVED pulls are being answered. */
  'pulls-served-total',
  /** A pull answer cut because the requester took no frame for PULL_WRITE_STALL_MS. */
  'pull-stalled',
  /** A reason to pull from a peer (a frame, a request) folded into the next pull: one pull per peer per PULL_MIN_INTERVAL_MS. */
  'pull-rate',
  /** Hearsay, seen-delta or goodbye bookkeeping for origins this node holds no record of, dropped at its bound. */
  'unknown-origins'
] as const
export type LimitName = typeof LIMITS[number]

export interface LimitsComponents {
  log: Logger
}

export interface LimitsInit {
  /** A limit already logged is logged again, with the count since, at most this often. */
  logIntervalMs: number
}

/**
 * Counts every time a limit is reached, and logs it at warn the first time, then at most once per
 * interval per limit (with how many times it was reached since): a flood is one line, not one
 * per frame.
 */
export class Limits {
  readonly #log: Logger
  readonly #init: LimitsInit
  readonly #counts = new Map<LimitName, number>(LIMITS.map((l) => [l, 0]))
  readonly #logged = new Map<LimitName, { atMs: number, countAt: number }>()

  constructor (components: LimitsComponents, init: LimitsInit) {
    this.#log = components.log
    this.#init = init
  }

  reached (limit: LimitName, detail: { peer?: string, origin?: string, what: string }): void {
    const count = (this.#counts.get(limit) ?? 0) + 1
    this.#counts.set(limit, count)
    const now = Date.now()
    const last = this.#logged.get(limit)
    if (last !== undefined && now - last.atMs < this.#init.logIntervalMs) return
    this.#logged.set(limit, { atMs: now, countAt: count })
    this.#log.warn({
      event: 'router_limit_reached',
      limit,
      ...(detail.peer === undefined ? {} : { peer: detail.peer }),
      ...(detail.origin === undefined ? {} : { origin: detail.origin }),
      detail: detail.what,
      ...(last === undefined ? {} : { timesSinceLastLog: count - last.countAt })
    }, 'router limit reached')
  }

  counts (): ReadonlyMap<LimitName, number> {
    return new Map(this.#counts)
  }
}
