import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import { mkdir, open, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { run } from './net.js'

export const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar'
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'

/** Smallest layer buildImage can make: one tar header plus the two end-of-archive blocks. */
export const MIN_LAYER_BYTES = 1536
const ARM64_LAYER_BYTES = 4096
const CHUNK_BYTES = 1 << 20

export interface BlobRef {
  digest: string
  size: number
  mediaType: string
}

export interface BuiltPlatform {
  architecture: 'amd64' | 'arm64'
  os: 'linux'
  manifest: BlobRef
  config: BlobRef
  layers: BlobRef[]
}

export interface BuiltImage {
  ref: string
  tag: string
  layoutDir: string
  /** The oci-archive for `ctr images import`; undefined when built with `archive: false`. */
  archivePath: string | undefined
  /** What the ref points at: the index when multiarch, otherwise the amd64 manifest. */
  top: BlobRef
  index?: { digest: string, size: number }
  /** amd64 first (the requested layers), then arm64 when multiarch. */
  platforms: BuiltPlatform[]
  blobPath: (digest: string) => string
  /** Every blob of the image: index (if any), then per platform manifest, config, layers. */
  allDigests: () => string[]
}

export interface BuildImageOptions {
  /** Add an arm64 manifest with one tiny layer and put an OCI index on top. */
  multiarch?: boolean
  /** Same seed + ref + sizes gives the same digests; without one every build is unique. */
  seed?: string
  /** Write outDir/image.tar (default true). Benchmarks with GiB layers may skip it to save disk. */
  archive?: boolean
}

/**
 * Writes an OCI image layout to `outDir/layout` and an oci-archive to `outDir/image.tar`.
 *
 * Each entry of `layerSizesBytes` is the exact size of a layer blob (at least MIN_LAYER_BYTES).
 * A layer is an uncompressed tar (so diff_id == digest) holding one pseudo-random file, followed
 * after the end-of-archive blocks by up to 1023 pseudo-random trailer bytes. tar readers stop at
 * the end-of-archive marker and containerd drains and hashes the rest, so the layer still unpacks;
 * the trailer makes the last bytes of a blob random, which range tests (e.g. `bytes=-100`) need.
 * Layers are streamed to disk while hashing, so 1 GiB layers never sit in memory.
 */
export async function buildImage (
  outDir: string,
  ref: string,
  layerSizesBytes: number[],
  opts: BuildImageOptions = {}
): Promise<BuiltImage> {
  if (layerSizesBytes.length === 0) throw new Error('buildImage needs at least one layer size')
  for (const size of layerSizesBytes) {
    if (!Number.isSafeInteger(size) || size < MIN_LAYER_BYTES) {
      throw new Error(`layer size ${size} invalid: must be an integer >= ${MIN_LAYER_BYTES} bytes`)
    }
  }
  const seed = opts.seed ?? randomBytes(16).toString('hex')
  const layoutDir = path.join(outDir, 'layout')
  const blobsDir = path.join(layoutDir, 'blobs', 'sha256')
  await mkdir(blobsDir, { recursive: true })
  const tag = tagOf(ref)

  const platforms: BuiltPlatform[] = [
    await buildPlatform(blobsDir, 'amd64', layerSizesBytes, seed, ref)
  ]
  let top: BlobRef
  let index: { digest: string, size: number } | undefined
  if (opts.multiarch === true) {
    platforms.push(await buildPlatform(blobsDir, 'arm64', [ARM64_LAYER_BYTES], seed, ref))
    const indexJson = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: platforms.map(p => ({ ...p.manifest, platform: { architecture: p.architecture, os: p.os } }))
    }
    index = await writeJsonBlob(blobsDir, indexJson)
    top = { mediaType: OCI_INDEX, ...index }
  } else {
    top = platforms[0]!.manifest
  }

  await writeFile(path.join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  await writeFile(path.join(layoutDir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{
      ...top,
      // ctr import names the image from io.containerd.image.name; skopeo's oci: transport uses ref.name.
      annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': tag }
    }]
  }))

  let archivePath: string | undefined
  if (opts.archive !== false) {
    archivePath = path.join(outDir, 'image.tar')
    const res = await run('tar', ['-C', layoutDir, '-cf', archivePath, '.'], { timeoutMs: 10 * 60_000 })
    if (res.code !== 0) throw new Error(`tar of ${layoutDir} failed (${res.code ?? res.signal}): ${res.stderr}`)
  }

  const digests = [
    ...(index === undefined ? [] : [index.digest]),
    ...platforms.flatMap(p => [p.manifest.digest, p.config.digest, ...p.layers.map(l => l.digest)])
  ]
  return {
    ref,
    tag,
    layoutDir,
    archivePath,
    top,
    ...(index === undefined ? {} : { index }),
    platforms,
    blobPath: (digest: string) => path.join(blobsDir, hexOf(digest)),
    allDigests: () => [...new Set(digests)]
  }
}

/**
 * Writes `sizeBytes` of pseudo-random bytes (deterministic when `seed` is given) to `filePath`
 * and returns its digest. For tests that need a plain blob rather than a whole image.
 */
export async function writeTestBlob (
  filePath: string,
  sizeBytes: number,
  opts: { seed?: string } = {}
): Promise<{ digest: string, size: number, path: string }> {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new Error(`blob size ${sizeBytes} invalid`)
  await mkdir(path.dirname(filePath), { recursive: true })
  const stream = keystream(opts.seed ?? randomBytes(16).toString('hex'), 'blob')
  const hash = createHash('sha256')
  const fh = await open(filePath, 'w')
  try {
    for (let left = sizeBytes; left > 0;) {
      const n = Math.min(left, CHUNK_BYTES)
      const chunk = stream(n)
      hash.update(chunk)
      await fh.write(chunk)
      left -= n
    }
  } finally {
    await fh.close()
  }
  return { digest: `sha256:${hash.digest('hex')}`, size: sizeBytes, path: filePath }
}

async function buildPlatform (
  blobsDir: string,
  arch: 'amd64' | 'arm64',
  sizes: number[],
  seed: string,
  ref: string
): Promise<BuiltPlatform> {
  const layers: BlobRef[] = []
  for (const [i, size] of sizes.entries()) {
    layers.push({ mediaType: OCI_LAYER_TAR, ...await writeLayer(blobsDir, size, `${seed}/${ref}/${arch}/${i}`, `data-${arch}-${i}.bin`) })
  }
  const configJson = {
    architecture: arch,
    os: 'linux',
    created: '1970-01-01T00:00:00Z',
    config: { Cmd: ['/bin/true'], Labels: { 'spegel.test.ref': ref } },
    rootfs: { type: 'layers', diff_ids: layers.map(l => l.digest) }
  }
  const config: BlobRef = { mediaType: OCI_CONFIG, ...await writeJsonBlob(blobsDir, configJson) }
  const manifestJson = { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }
  const manifest: BlobRef = { mediaType: OCI_MANIFEST, ...await writeJsonBlob(blobsDir, manifestJson) }
  return { architecture: arch, os: 'linux', manifest, config, layers }
}

async function writeJsonBlob (blobsDir: string, value: unknown): Promise<{ digest: string, size: number }> {
  const buf = Buffer.from(JSON.stringify(value))
  const hex = createHash('sha256').update(buf).digest('hex')
  await writeFile(path.join(blobsDir, hex), buf)
  return { digest: `sha256:${hex}`, size: buf.length }
}

async function writeLayer (
  blobsDir: string,
  sizeBytes: number,
  key: string,
  fileName: string
): Promise<{ digest: string, size: number }> {
  // Split the bytes beyond a minimal tar between the file payload (whole 512-byte blocks, so no
  // zero padding) and a random trailer, keeping the trailer non-empty when there is room for it.
  const extra = sizeBytes - MIN_LAYER_BYTES
  const trailerBytes = extra >= 512 ? 512 + (extra % 512) : extra
  const payloadBytes = extra - trailerBytes
  const stream = keystream(key, 'layer')
  const tmp = path.join(blobsDir, `.tmp-${randomBytes(6).toString('hex')}`)
  const hash = createHash('sha256')
  const fh = await open(tmp, 'w')
  try {
    const write = async (b: Buffer): Promise<void> => {
      hash.update(b)
      await fh.write(b)
    }
    await write(tarHeader(fileName, payloadBytes))
    for (let left = payloadBytes; left > 0;) {
      const n = Math.min(left, CHUNK_BYTES)
      await write(stream(n))
      left -= n
    }
    await write(Buffer.alloc(1024))
    if (trailerBytes > 0) await write(stream(trailerBytes))
  } catch (err) {
    await fh.close()
    await rm(tmp, { force: true })
    throw err
  }
  await fh.close()
  const hex = hash.digest('hex')
  await rename(tmp, path.join(blobsDir, hex))
  return { digest: `sha256:${hex}`, size: sizeBytes }
}

/** AES-256-CTR over zeros: fast (GB/s) and reproducible from a string key, unlike randomFill. */
function keystream (key: string, purpose: string): (n: number) => Buffer {
  const k = createHash('sha256').update(`${purpose}\0${key}`).digest()
  const cipher = createCipheriv('aes-256-ctr', k, Buffer.alloc(16))
  const zeros = Buffer.alloc(CHUNK_BYTES)
  return (n: number) => cipher.update(n === CHUNK_BYTES ? zeros : zeros.subarray(0, n))
}

/** 512-byte ustar header for one regular file, mtime 0 so builds are reproducible. */
function tarHeader (name: string, size: number): Buffer {
  const h = Buffer.alloc(512)
  const put = (s: string, off: number, len: number): void => { h.write(s, off, len, 'ascii') }
  put(name, 0, 100)
  put('0000644\0', 100, 8)
  put('0000000\0', 108, 8)
  put('0000000\0', 116, 8)
  put(size.toString(8).padStart(11, '0') + '\0', 124, 12)
  put('00000000000\0', 136, 12)
  put('        ', 148, 8)
  put('0', 156, 1)
  put('ustar\0', 257, 6)
  put('00', 263, 2)
  let sum = 0
  for (const b of h) sum += b
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8)
  return h
}

function tagOf (ref: string): string {
  const name = ref.split('@')[0] ?? ref
  const colon = name.lastIndexOf(':')
  return colon > name.lastIndexOf('/') ? name.slice(colon + 1) : 'latest'
}

function hexOf (digest: string): string {
  const m = /^sha256:([a-f0-9]{64})$/.exec(digest)
  if (m === null) throw new Error(`not a sha256 digest: ${digest}`)
  return m[1]!
}
