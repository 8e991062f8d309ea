import type { Logger } from '../observability/logger.js'
import type { Store, StoreChange } from '../store/types.js'
import { pinTag } from './tag-key.js'
import type { Router } from './types.js'

export interface SyncComponents {
  store: Store
  router: Router
  log: Logger
  /**
   * The digest each tag key (`registry/repository:tag`) names in the store right now. Tags found
   * here are advertised pinned (`tag@digest`), so peers trust this node's answer for the tag only
   * when it is that digest; without it tags go out bare, and peers do not ask this node for them.
   */
  tagDigests?: () => ReadonlyMap<string, string>
  /** Called after every change with the number of keys now advertised. */
  onAdvertised?: (keys: readonly string[]) => void
}

/**
 * Turns store changes into router advertisements. A snapshot replaces this node's whole
 * record, so a containerd reconnect (or an outage, which snapshots to nothing) can never
 * leave stale keys behind. Returns the function that stops syncing.
 */
export function startSync (components: SyncComponents): () => void {
  const { store, router, log } = components
  /** Tags advertised pinned, and the digest each was pinned to. */
  const pinned = new Map<string, string>()

  const pin = (keys: readonly string[], digests: ReadonlyMap<string, string> | undefined): string[] => keys.map((key) => {
    const digest = digests?.get(key)
    if (digest === undefined) {
      pinned.delete(key)
      return key
    }
    pinned.set(key, digest)
    return pinTag(key, digest)
  })

  /**
   * A tag moved to another digest without leaving the key set (a re-tag onto content already
   * held emits no change of keys): advertise the new pin, which replaces the old one.
   */
  const repin = (digests: ReadonlyMap<string, string> | undefined): void => {
    if (digests === undefined) return
    const moved: string[] = []
    for (const [tag, digest] of pinned) {
      const now = digests.get(tag)
      if (now !== undefined && now !== digest) moved.push(tag)
    }
    if (moved.length === 0) return
    router.advertise(pin(moved, digests))
    log.debug({ keys: moved }, 'tags moved to another digest')
  }

  const apply = (change: StoreChange): void => {
    const digests = components.tagDigests?.()
    switch (change.type) {
      case 'snapshot':
        pinned.clear()
        router.replaceAll(pin(change.keys, digests))
        log.debug({ keys: change.keys.length }, 'advertised store snapshot')
        break
      case 'add':
        router.advertise(pin(change.keys, digests))
        log.debug({ keys: change.keys }, 'advertised keys')
        break
      case 'remove':
        for (const key of change.keys) pinned.delete(key)
        router.withdraw(change.keys)
        log.debug({ keys: change.keys }, 'withdrew keys')
        break
    }
    repin(digests)
    components.onAdvertised?.(store.keys())
  }
  const unsubscribe = store.subscribe(apply)
  apply({ type: 'snapshot', keys: store.keys() })
  return unsubscribe
}
