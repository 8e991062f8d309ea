import type { ContainerdEvent } from './client.js'

export type DecodedEvent =
  | { readonly kind: 'image-upsert', readonly name: string }
  | { readonly kind: 'image-delete', readonly name: string }
  | { readonly kind: 'content-create', readonly digest: string }
  | { readonly kind: 'content-delete', readonly digest: string }

/**
 * containerd's event stream is not scoped by the namespace metadata (checked on 1.6), so
 * the namespace goes into the filter. Filters in the list are ORed, terms within one ANDed.
 */
export function eventFilters (namespace: string): string[] {
  const ns = namespace.replace(/[\\"]/g, '')
  return [
    `namespace==${ns},topic~="^/images/"`,
    `namespace==${ns},topic~="^/content/"`
  ]
}

/**
 * The first length-delimited field (field 1) of a protobuf message: the `name` of image
 * events and the `digest` of content events. Other fields are skipped by wire type.
 */
export function firstStringField (bytes: Uint8Array): string | undefined {
  let offset = 0
  const varint = (): number | undefined => {
    let result = 0
    let shift = 0
    while (offset < bytes.length && shift < 53) {
      const byte = bytes[offset++] ?? 0
      result += (byte & 0x7f) * 2 ** shift
      if ((byte & 0x80) === 0) return result
      shift += 7
    }
    return undefined
  }
  while (offset < bytes.length) {
    const key = varint()
    if (key === undefined) return undefined
    const field = Math.floor(key / 8)
    const wireType = key % 8
    if (wireType === 0) {
      if (varint() === undefined) return undefined
    } else if (wireType === 1) {
      offset += 8
    } else if (wireType === 5) {
      offset += 4
    } else if (wireType === 2) {
      const length = varint()
      if (length === undefined || offset + length > bytes.length) return undefined
      if (field === 1) return Buffer.from(bytes.subarray(offset, offset + length)).toString('utf8')
      offset += length
    } else {
      return undefined
    }
  }
  return undefined
}

/** Undefined for topics we do not act on (snapshots, containers, tasks, ...). */
export function decodeEvent (event: ContainerdEvent): DecodedEvent | undefined {
  const value = firstStringField(event.payload)
  if (value === undefined || value === '') return undefined
  switch (event.topic) {
    case '/images/create':
    case '/images/update':
      return { kind: 'image-upsert', name: value }
    case '/images/delete':
      return { kind: 'image-delete', name: value }
    case '/content/create':
      return { kind: 'content-create', digest: value }
    case '/content/delete':
      return { kind: 'content-delete', digest: value }
    default:
      return undefined
  }
}
