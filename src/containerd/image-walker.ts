import type { Logger } from '../observability/logger.js'
import {
  childDescriptors,
  isFiltered,
  isManifestMediaType,
  MEDIA_TYPE_SNIFF_LIMIT_BYTES,
  parseImageReference,
  tagName,
  toMediaType,
  type ReferenceFilter
} from '../oci/index.js'
import type { IndexedImage } from './image-index.js'

export interface ImageTarget {
  readonly mediaType: string
  readonly digest: string
  readonly sizeBytes: number
}

/** The content store as the walk sees it; `undefined` means the content is not there. */
export interface WalkSource {
  sizeOf (digest: string, signal: AbortSignal): Promise<number | undefined>
  /** Whole content of a small blob (a manifest or index). */
  read (digest: string, sizeBytes: number, signal: AbortSignal): Promise<Uint8Array | undefined>
}

export interface WalkedImage {
  readonly image: IndexedImage
  /** Digest -> media type, as the manifests that point at them say (validated). */
  readonly mediaTypes: ReadonlyMap<string, string>
}

export interface ImageWalkerComponents {
  log: Logger
}

export interface ImageWalkerInit {
  filters: readonly ReferenceFilter[]
}

/**
 * Turns one containerd image record into the keys it makes available: its tag and every digest
 * under it that is really in the content store (a listed image can lack other platforms' layers).
 */
export class ImageWalker {
  readonly #log: Logger
  readonly #filters: readonly ReferenceFilter[]

  constructor (components: ImageWalkerComponents, init: ImageWalkerInit) {
    this.#log = components.log
    this.#filters = init.filters
  }

  /** Undefined for names we skip (no registry, unparsable, filtered): one bad name never stops the node. */
  async index (source: WalkSource, name: string, target: ImageTarget, signal: AbortSignal): Promise<WalkedImage | undefined> {
    if (!name.includes('/')) return undefined
    let reference
    try {
      reference = parseImageReference(name, { digest: target.digest })
    } catch (err) {
      this.#log.warn({ image: name, err: (err as Error).message }, 'skipping image with unparsable name')
      return undefined
    }
    if (isFiltered(this.#filters, reference)) {
      this.#log.debug({ image: name }, 'skipping filtered image')
      return undefined
    }
    const mediaTypes = new Map<string, string>()
    const { digests, sizeBytes } = await this.#walk(source, target, mediaTypes, signal)
    const tag = tagName(reference)
    const base = { registry: reference.registry, repository: reference.repository, sizeBytes, targetDigest: target.digest, digests }
    return { image: tag === undefined ? base : { ...base, tag }, mediaTypes }
  }

  /** Depth first; content missing from the store is skipped with its children. */
  async #walk (source: WalkSource, root: ImageTarget, mediaTypes: Map<string, string>, signal: AbortSignal): Promise<{ digests: string[], sizeBytes: number }> {
    const found: string[] = []
    let total = 0
    // The image record's own type is as untrusted as a manifest's (any client can create one).
    const stack: ImageTarget[] = [{ ...root, mediaType: toMediaType(root.mediaType) }]
    const seen = new Set<string>()
    while (stack.length > 0) {
      signal.throwIfAborted()
      const descriptor = stack.pop()
      if (descriptor === undefined || seen.has(descriptor.digest)) continue
      seen.add(descriptor.digest)
      const sizeBytes = await source.sizeOf(descriptor.digest, signal)
      if (sizeBytes === undefined) continue
      found.push(descriptor.digest)
      total += sizeBytes
      mediaTypes.set(descriptor.digest, descriptor.mediaType)
      if (!isManifestMediaType(descriptor.mediaType) || sizeBytes > MEDIA_TYPE_SNIFF_LIMIT_BYTES) continue
      const bytes = await source.read(descriptor.digest, sizeBytes, signal)
      if (bytes === undefined) continue
      let children
      try {
        children = childDescriptors(descriptor.mediaType, bytes)
      } catch (err) {
        this.#log.warn({ digest: descriptor.digest, err: (err as Error).message }, 'not walking children of an unreadable manifest')
        continue
      }
      // Reverse so the stack pops them in document order (config before layers).
      for (let i = children.length - 1; i >= 0; i--) {
        const child = children[i]
        if (child !== undefined) stack.push({ mediaType: child.mediaType, digest: child.digest, sizeBytes: child.size })
      }
    }
    return { digests: found, sizeBytes: total }
  }
}
