import { createHash } from 'node:crypto'
import type { Dispatcher } from 'undici'
import {
  MANIFEST_MEDIA_TYPES, childDescriptors, isIndexMediaType, isManifestMediaType, parseImageReference,
  referenceIdentifier, type ChildDescriptor, type ImageReference
} from '../oci/index.js'
import type { RecentRequest } from '../registry/recent-requests.js'
import type { LookupOptions, Peer } from '../routing/index.js'
import type { MeasuredItem, MeasureResult } from './status-types.js'

export type { MeasuredItem, MeasureResult } from './status-types.js'

/** Spegel bounds its measure lookup to three seconds; a lookup here is a local read, so that is generous. */
export const MEASURE_LOOKUP_TIMEOUT_MS = 3000
/** A measure pulls whole images through this node; bounded so a forgotten tab cannot keep one running. */
export const MEASURE_TIMEOUT_MS = 5 * 60_000
const MAX_LOOKUP_PEERS = 100
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024

export interface MeasureComponents {
  /** Peers holding a key, as the mirror would find them. */
  lookup: (key: string, options: LookupOptions) => AsyncIterable<Peer>
  /** True when this node's own store holds the key. */
  isLocal: (key: string) => boolean
  /** `http://host:port` of this node's own registry. */
  registryUrl: () => string | undefined
  /** Sent as `Authorization` to the node's own registry when basic auth is on. */
  authorization?: string
  /** Newest-first recent requests, to tell which peer (or the local disk) served each item. */
  recentRequests?: (limit: number) => RecentRequest[]
}

/** A measure request that cannot run: the message is for the operator, the status for HTTP. */
export class MeasureInputError extends Error {
  readonly status: number
  constructor (message: string, status = 400) {
    super(message)
    this.name = 'MeasureInputError'
    this.status = status
  }
}

/**
 * What the measure view of Spegel's debug page (pkg/web/web.go) does, for one image reference:
 * which peers hold it and how long a pull through this node takes, item by item (manifest, the
 * platform manifest of an index, config, layers). The pull goes through this node's own registry
 * without the mirrored header, exactly as containerd's would, so local content is read from disk
 * and the rest is relayed from peers. Bodies are hashed and discarded, never buffered beyond a
 * manifest.
 */
export async function measureImage (components: MeasureComponents, input: string, options: { signal?: AbortSignal } = {}): Promise<MeasureResult> {
  const text = input.trim()
  if (text === '') throw new MeasureInputError('image name cannot be empty')
  let ref: ImageReference
  try {
    ref = parseImageReference(text, { strict: false })
  } catch (err) {
    throw new MeasureInputError((err as Error).message)
  }
  const key = referenceIdentifier(ref)
  const image = `${ref.registry}/${ref.repository}${ref.tag === undefined ? '' : `:${ref.tag}`}${ref.digest === undefined ? '' : `@${ref.digest}`}`
  const signal = options.signal === undefined ? AbortSignal.timeout(MEASURE_TIMEOUT_MS) : AbortSignal.any([options.signal, AbortSignal.timeout(MEASURE_TIMEOUT_MS)])

  const lookupStarted = performance.now()
  const peers: Array<{ id: string, registryAddress: string, durationMs: number }> = []
  const lookupSignal = AbortSignal.any([signal, AbortSignal.timeout(MEASURE_LOOKUP_TIMEOUT_MS)])
  try {
    for await (const peer of components.lookup(key, { signal: lookupSignal, limit: MAX_LOOKUP_PEERS })) {
      peers.push({ id: peer.id, registryAddress: peer.registryAddress, durationMs: elapsed(lookupStarted) })
    }
  } catch (err) {
    if (signal.aborted) throw err
    // A lookup that timed out still found what it found.
  }
  const isLocal = components.isLocal(key)
  const lookup = { durationMs: elapsed(lookupStarted), isLocal, peers }
  if (peers.length === 0 && !isLocal) return { image, key, lookup }

  const base = components.registryUrl()
  if (base === undefined) return { image, key, lookup, error: 'the registry is not listening yet' }
  // Loaded on the first measurement, not with the page: undici costs every node about 6 MiB of
  // heap for a button most operators never press.
  // Through `default`, CommonJS's module.exports: Node gives it (with the named exports) when the
  // modules run one by one, and the image's split bundle gives only it (esbuild cannot name a
  // CommonJS chunk's exports), so named imports came back undefined there.
  const { Agent, request } = (await import('undici')).default
  const dispatcher = new Agent({ connections: 4, keepAliveTimeout: 5000 })
  const items: MeasuredItem[] = []
  const pullStarted = performance.now()
  try {
    const get = async (kind: 'manifests' | 'blobs', reference: string, accept: string): Promise<{ body: Buffer | undefined, mediaType: string, digest: string, sizeBytes: number, durationMs: number }> => {
      const url = `${base}/v2/${ref.repository}/${kind}/${reference}?ns=${encodeURIComponent(ref.registry)}`
      const started = performance.now()
      const headers: Record<string, string> = { accept }
      if (components.authorization !== undefined) headers.authorization = components.authorization
      const res = await request(url, { method: 'GET', headers, dispatcher, signal })
      if (res.statusCode !== 200) {
        const detail = await readText(res.body)
        throw new Error(`GET ${kind}/${reference}: ${res.statusCode} ${detail}`)
      }
      const mediaType = headerText(res.headers['content-type']) ?? 'application/octet-stream'
      const hash = createHash('sha256')
      const keep: Buffer[] | undefined = kind === 'manifests' ? [] : undefined
      let sizeBytes = 0
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        sizeBytes += chunk.length
        hash.update(chunk)
        if (keep !== undefined) {
          if (sizeBytes > MAX_MANIFEST_BYTES) throw new Error(`manifest ${reference} is larger than ${MAX_MANIFEST_BYTES} bytes`)
          keep.push(chunk)
        }
      }
      const digest = `sha256:${hash.digest('hex')}`
      if (reference.startsWith('sha256:') && digest !== reference) throw new Error(`${kind}/${reference}: received content hashes to ${digest}`)
      return { body: keep === undefined ? undefined : Buffer.concat(keep), mediaType, digest, sizeBytes, durationMs: elapsed(started) }
    }
    const record = (digest: string, mediaType: string, sizeBytes: number, durationMs: number, asked = digest): void => {
      items.push({ digest, mediaType, sizeBytes, durationMs, servedBy: servedBy(components, asked) })
    }

    const manifestAccept = [...MANIFEST_MEDIA_TYPES].join(', ')
    const top = await get('manifests', ref.digest ?? ref.tag ?? 'latest', manifestAccept)
    // Asked by tag, the registry's request list knows it by the tag key.
    record(top.digest, top.mediaType, top.sizeBytes, top.durationMs, ref.digest ?? key)
    let manifest = top
    if (isIndexMediaType(top.mediaType)) {
      const child = pickPlatform(childDescriptors(top.mediaType, top.body ?? Buffer.alloc(0)))
      if (child === undefined) throw new Error(`the index has no manifest for ${platformName()}`)
      manifest = await get('manifests', child.digest, child.mediaType)
      record(manifest.digest, manifest.mediaType, manifest.sizeBytes, manifest.durationMs)
    }
    if (!isManifestMediaType(manifest.mediaType)) throw new Error(`unexpected media type ${manifest.mediaType}`)
    for (const child of childDescriptors(manifest.mediaType, manifest.body ?? Buffer.alloc(0))) {
      const blob = await get('blobs', child.digest, child.mediaType)
      record(blob.digest, child.mediaType, blob.sizeBytes, blob.durationMs)
    }
  } catch (err) {
    const pull = { durationMs: elapsed(pullStarted), sizeBytes: sum(items), items }
    if (options.signal?.aborted === true) throw err
    return { image, key, lookup, pull, error: (err as Error).message }
  } finally {
    await dispatcher.close().catch(() => undefined)
  }
  return { image, key, lookup, pull: { durationMs: elapsed(pullStarted), sizeBytes: sum(items), items } }
}

function servedBy (components: MeasureComponents, ref: string): string {
  // Our own request finished just before this call, so it is among the newest entries.
  const entry = components.recentRequests?.(20).find((r) => r.ref === ref && r.client === 'containerd' && r.method === 'GET')
  if (entry === undefined) return 'unknown'
  return entry.source === 'peer' ? entry.peer ?? 'peer' : entry.source
}

/** containerd's default platform matcher picks the running OS and architecture. */
function platformName (): string {
  return `linux/${goArch(process.arch)}`
}

function goArch (arch: string): string {
  if (arch === 'x64') return 'amd64'
  if (arch === 'ia32') return '386'
  return arch
}

function pickPlatform (children: readonly ChildDescriptor[]): ChildDescriptor | undefined {
  const arch = goArch(process.arch)
  return children.find((c) => c.platform?.os === 'linux' && c.platform.architecture === arch)
}

function sum (items: readonly MeasuredItem[]): number {
  return items.reduce((n, i) => n + i.sizeBytes, 0)
}

function elapsed (started: number): number {
  return Math.round((performance.now() - started) * 1000) / 1000
}

function headerText (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

async function readText (body: Dispatcher.ResponseData['body']): Promise<string> {
  const text = await body.text().catch(() => '')
  return text.length > 200 ? `${text.slice(0, 200)}…` : text
}
