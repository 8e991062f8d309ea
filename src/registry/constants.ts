/** Set by Spegel peers on requests to each other: serve from local content only, never forward. */
export const MIRRORED_HEADER = 'x-spegel-mirrored'
/** Manifests are read whole before the headers go out; containerd refuses bigger ones anyway. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024
