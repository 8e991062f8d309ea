export { createRegistryHandler, MIRRORED_HEADER, MAX_MANIFEST_BYTES, type MirrorHandler, type RegistryComponents, type RegistryInit } from './handler.js'
export { createMirror, DEFAULT_MANIFEST_DEADLINE_MS, DEFAULT_INFLIGHT_TIMEOUT_MIN_MS, type Mirror, type MirrorComponents, type MirrorInit } from './mirror.js'
export { createPeerAgent, fetchFromPeer, PeerFetchError, PeerRangeNotSatisfiableError, DigestMismatchError, type PeerRequest, type PeerResponse } from './peer-fetch.js'
