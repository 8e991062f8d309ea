import type { LookupOptions, Peer, Router, RouterReadiness } from './types.js'

/**
 * Stands in for a router that is created later (after the registry listens, so its real
 * port is known): not ready and finds nothing until `set`, then delegates.
 */
export class RouterSlot implements Router {
  readonly name = 'slot'
  private target: Router | undefined

  set (router: Router): void {
    this.target = router
  }

  readiness (): RouterReadiness {
    return this.target?.readiness() ?? { isReady: false, reason: 'starting' }
  }

  async * lookup (key: string, options?: LookupOptions): AsyncIterable<Peer> {
    if (this.target === undefined) return
    yield * this.target.lookup(key, options)
  }

  advertise (keys: readonly string[]): void {
    this.target?.advertise(keys)
  }

  withdraw (keys: readonly string[]): void {
    this.target?.withdraw(keys)
  }

  replaceAll (keys: readonly string[]): void {
    this.target?.replaceAll(keys)
  }
}
