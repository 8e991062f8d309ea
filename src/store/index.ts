export type { Store, Descriptor, ByteRange, OpenOptions, StoreCallOptions, StoreReadiness, StoreChange, StoreListener, ImageSummary, ImageLister } from './types.js'
export { NotFoundError, StoreUnavailableError, isNotFound } from './errors.js'
export { FileRangeStream, FILE_CHUNK_BYTES, type ByteSink } from './file-range-stream.js'
export { openGrowingFile, IngestStalledError, type GrowingFileOptions } from './growing-file-stream.js'
