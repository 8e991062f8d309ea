export type { Store, Descriptor, ByteRange, OpenOptions, StoreCallOptions, StoreReadiness, StoreChange, StoreListener } from './types.js'
export { NotFoundError, StoreUnavailableError, isNotFound } from './errors.js'
