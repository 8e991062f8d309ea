export { createRegistryHandler, MIRRORED_HEADER, MAX_MANIFEST_BYTES, type MirrorHandler, type RegistryComponents, type RegistryInit } from './handler.js'
