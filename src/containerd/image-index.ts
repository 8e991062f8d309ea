/**
 * The keys this node advertises, derived from containerd's images: pure bookkeeping, no I/O.
 *
 * A key is a tag (`registry/repository:tag`) or a digest. It is advertised while at least one
 * indexed image holds it, or, for a digest, while it is "loose": announced by a content event
 * (a pull in progress, containerd 2.1+) and not yet claimed by an image. Every mutation returns
 * the keys that appeared and disappeared, so the caller emits exact deltas. A tag re-pointed to
 * another digest is in both lists: the key stays, but what it is advertised as (`tag@digest`)
 * changes, and the caller emits removals before additions.
 */

export interface IndexedImage {
  readonly registry: string
  readonly repository: string
  /** Bytes of `digests`, for the web page. */
  readonly sizeBytes: number
  readonly targetDigest: string
  /** Tag key (`registry/repo:tag`) when the image name has a tag. */
  readonly tag?: string
  /** Digests present in the content store, root first. */
  readonly digests: readonly string[]
}

export interface KeyDelta {
  readonly added: readonly string[]
  readonly removed: readonly string[]
}

export interface AdvertisedCounts {
  tags: number
  images: number
  contents: number
}

const NO_CHANGE: KeyDelta = Object.freeze({ added: [], removed: [] })

function imageKeys (image: IndexedImage | undefined): readonly string[] {
  if (image === undefined) return []
  return image.tag === undefined ? image.digests : [image.tag, ...image.digests]
}

export class ImageIndex {
  /** Image name (containerd's) -> what it holds. */
  #images = new Map<string, IndexedImage>()
  /** Key -> how many images hold it. */
  #holders = new Map<string, number>()
  /** Loose digest -> when its content event arrived (ms). Never also in #holders. */
  #loose = new Map<string, number>()
  /** Media types learned while walking; kept only for digests an image holds. */
  #mediaTypes = new Map<string, string>()

  /** Number of keys advertised. */
  get size (): number {
    return this.#holders.size + this.#loose.size
  }

  keys (): string[] {
    return [...this.#holders.keys(), ...this.#loose.keys()]
  }

  has (key: string): boolean {
    return this.#holders.has(key) || this.#loose.has(key)
  }

  /** The media type a manifest gave this digest, for digests an image holds. */
  mediaType (digest: string): string | undefined {
    return this.#mediaTypes.get(digest)
  }

  /** The digest an image name points at (tags are resolved without asking containerd). */
  target (name: string): string | undefined {
    return this.#images.get(name)?.targetDigest
  }

  images (): ReadonlyMap<string, IndexedImage> {
    return this.#images
  }

  /** Replaces everything with a fresh listing; loose digests are dropped (the listing is the truth). */
  replace (images: ReadonlyMap<string, IndexedImage>, mediaTypes: ReadonlyMap<string, string>): void {
    this.#images = new Map(images)
    this.#holders = new Map()
    this.#loose = new Map()
    this.#mediaTypes = new Map()
    for (const image of this.#images.values()) this.#count(image, +1)
    for (const digest of this.#holders.keys()) {
      const type = mediaTypes.get(digest)
      if (type !== undefined) this.#mediaTypes.set(digest, type)
    }
  }

  /** Forgets everything; true when keys were advertised. */
  clear (): boolean {
    const hadKeys = this.size > 0
    this.#images = new Map()
    this.#holders = new Map()
    this.#loose = new Map()
    this.#mediaTypes = new Map()
    return hadKeys
  }

  /** Sets (or, with undefined, removes) one image, e.g. after an image event. */
  upsert (name: string, image: IndexedImage | undefined, mediaTypes: ReadonlyMap<string, string> = new Map()): KeyDelta {
    const previous = this.#images.get(name)
    if (previous === undefined && image === undefined) return NO_CHANGE
    const touched = new Set([...imageKeys(previous), ...imageKeys(image)])
    const before = this.#presence(touched)
    if (previous !== undefined) this.#count(previous, -1)
    if (image === undefined) {
      this.#images.delete(name)
    } else {
      this.#images.set(name, image)
      this.#count(image, +1)
      for (const digest of image.digests) {
        // An image now holds it: it leaves with the image, not by expiry.
        this.#loose.delete(digest)
        const type = mediaTypes.get(digest)
        if (type !== undefined) this.#mediaTypes.set(digest, type)
      }
    }
    const delta = this.#delta(before)
    const tag = previous?.tag
    if (tag === undefined || image?.tag !== tag || image.targetDigest === previous?.targetDigest || !this.has(tag)) return delta
    // The tag stayed but names another digest: its key is unchanged, the advertised tag@digest is
    // not. Withdrawn and added again, so every consumer re-pins it (remove is applied first).
    return { added: [...delta.added, tag], removed: [...delta.removed, tag] }
  }

  remove (name: string): KeyDelta {
    return this.upsert(name, undefined)
  }

  /** A digest that landed in the content store before any image holds it. */
  addLoose (digest: string, nowMs: number): KeyDelta {
    if (this.has(digest)) return NO_CHANGE
    this.#loose.set(digest, nowMs)
    return { added: [digest], removed: [] }
  }

  /** Content deleted from the store: no image serves it any more. */
  removeContent (digest: string): KeyDelta {
    if (!this.has(digest)) return NO_CHANGE
    this.#loose.delete(digest)
    if (this.#holders.delete(digest)) {
      for (const [name, image] of this.#images) {
        if (image.digests.includes(digest)) {
          // The size goes stale until the next listing; it is for display only.
          this.#images.set(name, { ...image, digests: image.digests.filter((d) => d !== digest) })
        }
      }
    }
    this.#mediaTypes.delete(digest)
    return { added: [], removed: [digest] }
  }

  /** Withdraws loose digests announced before `cutoffMs` that no image has claimed. */
  expireLoose (cutoffMs: number): KeyDelta {
    const removed: string[] = []
    for (const [digest, sinceMs] of this.#loose) {
      if (sinceMs < cutoffMs) {
        this.#loose.delete(digest)
        removed.push(digest)
      }
    }
    return removed.length === 0 ? NO_CHANGE : { added: [], removed }
  }

  /** Per registry: tags, image roots and content digests advertised (Spegel's gauges). */
  advertisedCounts (): Map<string, AdvertisedCounts> {
    const perRegistry = new Map<string, { tags: Set<string>, images: Set<string>, contents: Set<string> }>()
    for (const image of this.#images.values()) {
      let entry = perRegistry.get(image.registry)
      if (entry === undefined) {
        entry = { tags: new Set(), images: new Set(), contents: new Set() }
        perRegistry.set(image.registry, entry)
      }
      if (image.tag !== undefined) entry.tags.add(image.tag)
      entry.images.add(image.targetDigest)
      for (const digest of image.digests) entry.contents.add(digest)
    }
    const counts = new Map<string, AdvertisedCounts>()
    for (const [registry, e] of perRegistry) counts.set(registry, { tags: e.tags.size, images: e.images.size, contents: e.contents.size })
    return counts
  }

  /** Registries of the images held now. */
  registries (): Set<string> {
    const out = new Set<string>()
    for (const image of this.#images.values()) out.add(image.registry)
    return out
  }

  #count (image: IndexedImage, delta: 1 | -1): void {
    for (const key of imageKeys(image)) {
      const after = (this.#holders.get(key) ?? 0) + delta
      if (after <= 0) this.#holders.delete(key)
      else this.#holders.set(key, after)
    }
  }

  #presence (keys: ReadonlySet<string>): Map<string, boolean> {
    const out = new Map<string, boolean>()
    for (const key of keys) out.set(key, this.has(key))
    return out
  }

  /** Keys whose presence changed since `before`; media types of keys that left are dropped. */
  #delta (before: ReadonlyMap<string, boolean>): KeyDelta {
    const added: string[] = []
    const removed: string[] = []
    for (const [key, was] of before) {
      const is = this.has(key)
      if (was && !is) {
        removed.push(key)
        this.#mediaTypes.delete(key)
      } else if (!was && is) {
        added.push(key)
      }
    }
    return added.length === 0 && removed.length === 0 ? NO_CHANGE : { added, removed }
  }
}
