import { splitPinnedKey } from './tag-key.js'
import type { LookupOptions, Peer, Router, RouterReadiness } from './types.js'

/**
 * The shared "DHT" of in-process routers: key → peers that advertised it. Several
 * MemoryRouters on one network find each other's keys, which lets unit tests run
 * many nodes without sockets.
 */
export class MemoryRouterNetwork {
  readonly #providers = new Map<string, Map<string, Peer>>()

  /** Records `peer` as holding `key` (replacing an earlier record of the same peer id). */
  add (key: string, peer: Peer): void {
    let peers = this.#providers.get(key)
    if (peers === undefined) {
      peers = new Map()
      this.#providers.set(key, peers)
    }
    peers.set(peer.id, peer)
  }

  delete (key: string, peerId: string): void {
    const peers = this.#providers.get(key)
    if (peers === undefined) return
    peers.delete(peerId)
    if (peers.size === 0) this.#providers.delete(key)
  }

  /** Peers holding `key`, in the order they first advertised it. */
  get (key: string): readonly Peer[] {
    return [...(this.#providers.get(key)?.values() ?? [])]
  }

  /** Every key that has at least one provider. */
  keys (): readonly string[] {
    return [...this.#providers.keys()]
  }
}

export interface MemoryRouterComponents {
  /** Defaults to a private network holding only this router. */
  network?: MemoryRouterNetwork
}

export interface MemoryRouterInit {
  /** This node's id; lookups never return it. */
  id: string
  /** `host:port` peers would use to reach this node's registry. */
  registryAddress: string
}

/** In-process Router for unit tests: lookups read the shared network synchronously. */
export class MemoryRouter implements Router {
  readonly name = 'memory'
  readonly network: MemoryRouterNetwork
  readonly #self: Peer
  readonly #advertised = new Set<string>()
  #readiness: RouterReadiness = { isReady: true }

  constructor (components: MemoryRouterComponents, init: MemoryRouterInit) {
    this.network = components.network ?? new MemoryRouterNetwork()
    this.#self = Object.freeze({ id: init.id, registryAddress: init.registryAddress })
  }

  get self (): Peer {
    return this.#self
  }

  readiness (): RouterReadiness {
    return this.#readiness
  }

  setReadiness (isReady: boolean, reason?: string): void {
    this.#readiness = isReady ? { isReady } : { isReady, reason: reason ?? 'not ready' }
  }

  async * lookup (key: string, options: LookupOptions = {}): AsyncIterable<Peer> {
    options.signal?.throwIfAborted()
    const limit = options.limit ?? Number.POSITIVE_INFINITY
    let yielded = 0
    // Snapshot first: changes to the network during iteration must not reorder results.
    for (const peer of this.network.get(key)) {
      if (yielded >= limit) return
      if (peer.id === this.#self.id) continue
      options.signal?.throwIfAborted()
      yielded++
      yield peer
    }
  }

  /** A pinned tag (`…:tag@<digest>`) is held under the tag, and its lookups carry the digest. */
  advertise (keys: readonly string[]): void {
    for (const advertised of keys) {
      const { key, digest } = splitPinnedKey(advertised)
      this.#advertised.add(key)
      this.network.add(key, digest === undefined ? this.#self : Object.freeze({ ...this.#self, digest }))
    }
  }

  withdraw (keys: readonly string[]): void {
    for (const advertised of keys) {
      const { key } = splitPinnedKey(advertised)
      this.#advertised.delete(key)
      this.network.delete(key, this.#self.id)
    }
  }

  replaceAll (keys: readonly string[]): void {
    this.withdraw([...this.#advertised])
    this.advertise(keys)
  }

  /** Keys this node currently advertises (tags without their pinned digest). */
  advertisedKeys (): readonly string[] {
    return [...this.#advertised]
  }
}

/**
 * A Router for a node that has no peers (yet): always ready, finds nobody, and only
 * remembers what it was told to advertise so that wiring can be checked.
 */
export class LocalOnlyRouter implements Router {
  readonly name = 'local-only'
  readonly #advertised = new Set<string>()

  readiness (): RouterReadiness {
    return { isReady: true }
  }

  async * lookup (_key: string, options: LookupOptions = {}): AsyncIterable<Peer> {
    options.signal?.throwIfAborted()
  }

  advertise (keys: readonly string[]): void {
    for (const key of keys) this.#advertised.add(splitPinnedKey(key).key)
  }

  withdraw (keys: readonly string[]): void {
    for (const key of keys) this.#advertised.delete(splitPinnedKey(key).key)
  }

  replaceAll (keys: readonly string[]): void {
    this.#advertised.clear()
    this.advertise(keys)
  }

  advertisedKeys (): readonly string[] {
    return [...this.#advertised]
  }
}
