import { isDigest } from '../oci/index.js'

/**
 * A tag advertised together with the digest it names on this node: `registry/repository:tag@<digest>`,
 * the OCI form of a reference carrying both. Peers trust a tag answer only when it is that digest.
 */
export function pinTag (tag: string, digest: string): string {
  return `${tag}@${digest}`
}

/**
 * Splits an advertised key into the key a lookup uses and, for a pinned tag, its digest. Anything
 * that is not `<non-empty, no @>@<digest>` is an opaque key and comes back whole.
 */
export function splitPinnedKey (key: string): { key: string, digest?: string } {
  const at = key.lastIndexOf('@')
  if (at <= 0) return { key }
  const name = key.slice(0, at)
  const digest = key.slice(at + 1)
  if (name.includes('@') || !isDigest(digest)) return { key }
  return { key: name, digest }
}
