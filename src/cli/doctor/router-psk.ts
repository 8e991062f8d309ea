import { ConfigError } from '../../config/index.js'
import { readPskFile } from '../../routing/p2p/psk.js'
import type { CheckResult } from './check.js'

const ID = 'router-psk'
const TITLE = 'router pre-shared key'

/** How to make a key, the same advice the node logs and its web page shows. */
export const ROUTER_PSK_FIX = 'give every node the same key file: printf \'/key/swarm/psk/1.0.0/\\n/base16/\\n%s\\n\' "$(openssl rand -hex 32)" > router.psk, ' +
  'then --router-secret-path router.psk (env ROUTER_SECRET_PATH) on registry and doctor; the Kubernetes install reads it from the Secret spegel-router-psk (docs/kubernetes.md)'

/**
 * Without a pre-shared key, any process that can reach the router port joins the cluster's
 * index and can send pulls elsewhere: a warning. A key that is set but cannot be used stops
 * the registry from starting: a failure, with the reason the registry would give.
 */
export async function routerPskCheck (secretPath: string): Promise<CheckResult> {
  if (secretPath === '') {
    return {
      id: ID,
      title: TITLE,
      status: 'warn',
      detail: 'no --router-secret-path: any process that can reach the router port (5001) can join this cluster\'s index and advertise content for any image',
      fix: ROUTER_PSK_FIX
    }
  }
  try {
    await readPskFile(secretPath)
  } catch (err) {
    // The registry refuses to start with this file; say why, as it would.
    const fix = err instanceof ConfigError && err.fix !== undefined ? err.fix : undefined
    const message = (err as Error).message
    const detail = fix !== undefined && message.endsWith(`; ${fix}`) ? message.slice(0, -(fix.length + 2)) : message
    return { id: ID, title: TITLE, status: 'fail', detail, fix: `${fix === undefined ? '' : `${fix}; `}${ROUTER_PSK_FIX}` }
  }
  return { id: ID, title: TITLE, status: 'pass', detail: `${secretPath} holds a valid libp2p PSK v1 key; only nodes with the same file can connect` }
}
