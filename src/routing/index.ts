export type { Router, RouterReadiness, Peer, LookupOptions } from './types.js'
