export type { Router, RouterReadiness, Peer, LookupOptions } from './types.js'
export { pinTag, splitPinnedKey } from './tag-key.js'
export { canonicalIp, isUsablePeerIp, parseRegistryAddress, type RegistryAddress } from './registry-address.js'
