import type { LookupOptions, Peer, Router, RouterReadiness } from './types.js'

/**
 * Keys a node advertises besides the content its store holds, for pull storms
 * (docs/pull-storms.md). They ride in the same signed record as every other key, so a peer can
 * only speak for itself. None of them can be mistaken for a store key: tag keys always have a
 * `/` (`registry/repository:tag`) and digests start with their algorithm.
 *
 * - `arriving:<digest>`: this node's containerd is downloading the blob right now; the node
 *   serves the part written so far and follows the file as it grows.
 * - `want:<digest>`: a mirror request for the blob is waiting here because no node has it.
 * - `fetching:<digest>`: this node was picked to let its containerd fetch the blob upstream.
 */
export const ARRIVING_PREFIX = 'arriving:'
export const WANT_PREFIX = 'want:'
export const FETCHING_PREFIX = 'fetching:'

export function arrivingKey (digest: string): string { return ARRIVING_PREFIX + digest }
export function wantKey (digest: string): string { return WANT_PREFIX + digest }
export function fetchingKey (digest: string): string { return FETCHING_PREFIX + digest }

/** Bound on extra keys, far above what a node pulling a few images at once needs. */
export const MAX_OVERLAY_KEYS = 4096

/**
 * The router as the store sync sees it, plus keys of this node's own that a store snapshot
 * must not wipe: `replaceAll` keeps them. The extra keys are counted, so two requests waiting
 * for the same blob share one `want:` key and the last one out withdraws it.
 */
export class KeyOverlay implements Router {
  readonly name: string
  readonly #inner: Router
  readonly #counts = new Map<string, number>()

  constructor (inner: Router) {
    this.#inner = inner
    this.name = inner.name
  }

  readiness (): RouterReadiness { return this.#inner.readiness() }
  lookup (key: string, options?: LookupOptions): AsyncIterable<Peer> { return this.#inner.lookup(key, options) }
  advertise (keys: readonly string[]): void { this.#inner.advertise(keys) }
  withdraw (keys: readonly string[]): void { this.#inner.withdraw(keys) }

  replaceAll (keys: readonly string[]): void {
    this.#inner.replaceAll(this.#counts.size === 0 ? keys : [...keys, ...this.#counts.keys()])
  }

  /** Advertises `key` unless it already is; false when the bound is reached (nothing changed). */
  add (key: string): boolean {
    const count = this.#counts.get(key)
    if (count !== undefined) {
      this.#counts.set(key, count + 1)
      return true
    }
    if (this.#counts.size >= MAX_OVERLAY_KEYS) return false
    this.#counts.set(key, 1)
    this.#inner.advertise([key])
    return true
  }

  /** Undoes one `add`; withdraws the key when nobody needs it any more. */
  remove (key: string): void {
    const count = this.#counts.get(key)
    if (count === undefined) return
    if (count > 1) {
      this.#counts.set(key, count - 1)
      return
    }
    this.#counts.delete(key)
    this.#inner.withdraw([key])
  }

  has (key: string): boolean { return this.#counts.has(key) }
  get size (): number { return this.#counts.size }
}

/** Whether any peer (never this node) advertises `key`: a local read for the P2P router. */
export async function isAdvertised (router: Router, key: string, signal?: AbortSignal): Promise<boolean> {
  for await (const peer of router.lookup(key, { limit: 1, ...(signal === undefined ? {} : { signal }) })) {
    if (peer !== undefined) return true
  }
  return false
}

/** Every peer advertising `key`, at most `limit`. */
export async function advertisers (router: Router, key: string, limit: number, signal?: AbortSignal): Promise<Peer[]> {
  const out: Peer[] = []
  for await (const peer of router.lookup(key, { limit, ...(signal === undefined ? {} : { signal }) })) out.push(peer)
  return out
}
