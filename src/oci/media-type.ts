import { isDigest } from './digest.js'
import { OciError } from './errors.js'

export const MEDIA_TYPE_OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
export const MEDIA_TYPE_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const MEDIA_TYPE_DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'
export const MEDIA_TYPE_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'
export const MEDIA_TYPE_OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
export const MEDIA_TYPE_OCI_EMPTY = 'application/vnd.oci.empty.v1+json'
export const MEDIA_TYPE_OCTET_STREAM = 'application/octet-stream'

/** Content larger than this is never sniffed (the OCI manifest size cap). */
export const MEDIA_TYPE_SNIFF_LIMIT_BYTES = 4 * 1024 * 1024

/** Served from `/manifests/` and refused from `/blobs/`. Docker schema 1 is not supported. */
export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_MANIFEST,
  MEDIA_TYPE_DOCKER_MANIFEST_LIST,
  MEDIA_TYPE_DOCKER_MANIFEST
])

export function isManifestMediaType (mediaType: string): boolean {
  return MANIFEST_MEDIA_TYPES.has(mediaType)
}

export function isIndexMediaType (mediaType: string): boolean {
  return mediaType === MEDIA_TYPE_OCI_INDEX || mediaType === MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

// RFC 6838 type/subtype. A `mediaType` field is written into Content-Type, so anything else
// (CR/LF, parameters, spaces) must never get through.
const MEDIA_TYPE_SYNTAX = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/

/** True when `value` is a bare RFC 6838 `type/subtype`, safe to send as Content-Type. */
export function isValidMediaType (value: string): boolean {
  return MEDIA_TYPE_SYNTAX.test(value)
}

/**
 * `value` when it is a valid media type, else application/octet-stream. Media types come from
 * manifests and containerd's image records, which anyone who can push or import wrote; a
 * control character or a character above U+00FF makes Node's writeHead throw, so an invalid one
 * would make the blob unservable on every node that walked it.
 */
export function toMediaType (value: string): string {
  return MEDIA_TYPE_SYNTAX.test(value) ? value : MEDIA_TYPE_OCTET_STREAM
}

type JsonObject = Record<string, unknown>

function isObject (v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** Loosely a descriptor: the fields that are present have descriptor types (what Go's json decoding demands). */
function looksLikeDescriptor (v: unknown): boolean {
  if (!isObject(v)) return false
  return (v.mediaType === undefined || typeof v.mediaType === 'string') &&
    (v.digest === undefined || typeof v.digest === 'string') &&
    (v.size === undefined || typeof v.size === 'number')
}

function looksLikeDescriptorArray (v: unknown): boolean {
  return Array.isArray(v) && v.every(looksLikeDescriptor)
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** The top-level JSON object in `bytes`, or undefined when the bytes are not one. */
function parseJsonObject (bytes: Uint8Array): JsonObject | undefined {
  let text: string
  try {
    text = utf8.decode(bytes)
  } catch {
    // Not UTF-8, so not JSON: the caller's answer for that is "not an object".
    return undefined
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    // Not JSON at all (the common case for layers that start with `{` by chance).
    return undefined
  }
  return isObject(value) ? value : undefined
}

function firstNonWhitespace (bytes: Uint8Array): number | undefined {
  for (const b of bytes) {
    if (b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) return b
  }
  return undefined
}

/**
 * Infers the media type of content (containerd does not store it), as Spegel's
 * FingerprintMediaType does, with one deliberate difference: content that cannot be
 * classified is `application/octet-stream` instead of an error. Spegel treats such content
 * as missing, so small unknown JSON blobs (artifact configs, for example) could never be
 * served from a peer; as blobs they are addressed by digest and need no type.
 *
 * Exactly `{}` is the OCI empty descriptor type. An object with `schemaVersion` 2 and a
 * `mediaType` uses that type; otherwise the keys decide: `manifests` → index, `config` and
 * `layers` → manifest, `architecture`, `os` and `rootfs` → image config.
 */
export function fingerprintMediaType (bytes: Uint8Array): string {
  if (bytes.length === 2 && bytes[0] === 0x7b && bytes[1] === 0x7d) return MEDIA_TYPE_OCI_EMPTY
  // Cheap exit for layers (gzip, zstd, tar) before decoding up to 4 MiB.
  if (bytes.length > MEDIA_TYPE_SNIFF_LIMIT_BYTES || firstNonWhitespace(bytes) !== 0x7b) return MEDIA_TYPE_OCTET_STREAM
  const json = parseJsonObject(bytes)
  if (json === undefined) return MEDIA_TYPE_OCTET_STREAM

  const { schemaVersion, mediaType } = json
  if (schemaVersion === 2 && typeof mediaType === 'string' && isValidMediaType(mediaType)) return mediaType
  if (looksLikeDescriptorArray(json.manifests)) return MEDIA_TYPE_OCI_INDEX
  if (looksLikeDescriptor(json.config) && looksLikeDescriptorArray(json.layers)) return MEDIA_TYPE_OCI_MANIFEST
  if (typeof json.architecture === 'string' && typeof json.os === 'string' && json.rootfs !== undefined) return MEDIA_TYPE_OCI_CONFIG
  return MEDIA_TYPE_OCTET_STREAM
}

export interface Platform {
  os?: string
  architecture?: string
  variant?: string
}

export interface ChildDescriptor {
  digest: string
  mediaType: string
  size: number
  platform?: Platform
}

function toPlatform (v: unknown): Platform | undefined {
  if (!isObject(v)) return undefined
  const platform: Platform = {}
  if (typeof v.os === 'string') platform.os = v.os
  if (typeof v.architecture === 'string') platform.architecture = v.architecture
  if (typeof v.variant === 'string') platform.variant = v.variant
  return platform
}

/**
 * A descriptor with a valid digest, a media type and a size, or undefined. A media type that
 * is not RFC 6838 syntax becomes application/octet-stream: the content is still walked and
 * served (addressed by digest, it needs no type), but never with a header Node refuses.
 */
function toChild (v: unknown): ChildDescriptor | undefined {
  if (!isObject(v)) return undefined
  const { digest, mediaType, size } = v
  if (typeof digest !== 'string' || !isDigest(digest)) return undefined
  if (typeof mediaType !== 'string' || mediaType === '') return undefined
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return undefined
  const child: ChildDescriptor = { digest, mediaType: toMediaType(mediaType), size }
  const platform = toPlatform(v.platform)
  if (platform !== undefined) child.platform = platform
  return child
}

function toChildren (list: unknown): ChildDescriptor[] {
  if (!Array.isArray(list)) return []
  return list.map(toChild).filter((d): d is ChildDescriptor => d !== undefined)
}

/**
 * The content an index or manifest points at: an index's `manifests`, or a manifest's
 * config followed by its layers. Other media types have no children. Entries that are not
 * valid descriptors (bad digest, missing media type or size) are skipped. Throws
 * MANIFEST_INVALID when a manifest media type's bytes are not a JSON object, because a
 * walker that silently found no children would advertise an image as complete.
 */
export function childDescriptors (mediaType: string, bytes: Uint8Array): ChildDescriptor[] {
  if (!isManifestMediaType(mediaType)) return []
  const json = parseJsonObject(bytes)
  if (json === undefined) throw new OciError('MANIFEST_INVALID', `content of type ${mediaType} is not a JSON object`)
  if (isIndexMediaType(mediaType)) return toChildren(json.manifests)
  const config = toChild(json.config)
  return [...(config === undefined ? [] : [config]), ...toChildren(json.layers)]
}
