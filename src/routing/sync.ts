import type { Logger } from '../observability/logger.js'
import type { Store, StoreChange } from '../store/types.js'
import type { Router } from './types.js'

export interface SyncComponents {
  store: Store
  router: Router
  log: Logger
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
  const apply = (change: StoreChange): void => {
    switch (change.type) {
      case 'snapshot':
        router.replaceAll(change.keys)
        log.debug({ keys: change.keys.length }, 'advertised store snapshot')
        break
      case 'add':
        router.advertise(change.keys)
        log.debug({ keys: change.keys }, 'advertised keys')
        break
      case 'remove':
        router.withdraw(change.keys)
        log.debug({ keys: change.keys }, 'withdrew keys')
        break
    }
    components.onAdvertised?.(store.keys())
  }
  const unsubscribe = store.subscribe(apply)
  apply({ type: 'snapshot', keys: store.keys() })
  return unsubscribe
}
