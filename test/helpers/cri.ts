/**
 * A minimal CRI ImageService client (runtime.v1): what kubelet calls to pull an image, over
 * containerd's own socket (containerd 1.6 serves CRI there when its cri plugin is on, as in
 * test/helpers/containerd.ts). CRI pulls use the cri plugin's registry config_path for
 * hosts.toml, not ctr's --hosts-dir, and always land in the `k8s.io` namespace.
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import type { ContainerdInstance } from './containerd.js'

export const CRI_NAMESPACE = 'k8s.io'

export interface CriImage {
  id: string
  repoTags: string[]
  repoDigests: string[]
  size: number
}

export interface CriClient {
  /** Pulls `image` (e.g. `storm.test/storm/app:1`); resolves with containerd's image ref (the config digest). */
  pullImage: (image: string, opts?: { timeoutMs?: number }) => Promise<string>
  /** undefined when the image is not there. */
  imageStatus: (image: string) => Promise<CriImage | undefined>
  listImages: () => Promise<CriImage[]>
  close: () => void
}

/** test/fixtures/proto from the source tree or from any build dir (<dist>/test/helpers). */
function protoDir (): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  for (const up of ['../fixtures/proto', '../../../test/fixtures/proto']) {
    const candidate = path.resolve(here, up)
    if (existsSync(path.join(candidate, 'cri.proto'))) return candidate
  }
  throw new Error(`test/fixtures/proto/cri.proto not found above ${here}`)
}

interface RawImage { id: string, repo_tags: string[], repo_digests: string[], size: string }
type Unary<Req, Res> = (req: Req, meta: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void
interface ImageServiceClient extends grpc.Client {
  PullImage: Unary<{ image: { image: string } }, { image_ref: string }>
  ImageStatus: Unary<{ image: { image: string }, verbose: boolean }, { image: RawImage | null }>
  ListImages: Unary<Record<string, never>, { images: RawImage[] }>
}

let serviceCtor: (new (target: string, creds: grpc.ChannelCredentials) => ImageServiceClient) | undefined

function loadService (): new (target: string, creds: grpc.ChannelCredentials) => ImageServiceClient {
  if (serviceCtor !== undefined) return serviceCtor
  const definition = protoLoader.loadSync('cri.proto', { keepCase: true, longs: String, enums: String, defaults: true, includeDirs: [protoDir()] })
  const pkg = grpc.loadPackageDefinition(definition) as unknown as { runtime: { v1: { ImageService: new (target: string, creds: grpc.ChannelCredentials) => ImageServiceClient } } }
  serviceCtor = pkg.runtime.v1.ImageService
  return serviceCtor
}

function toImage (raw: RawImage): CriImage {
  return { id: raw.id, repoTags: raw.repo_tags, repoDigests: raw.repo_digests, size: Number(raw.size) }
}

export function criClient (socketPath: string): CriClient {
  const Service = loadService()
  const client = new Service(`unix://${socketPath}`, grpc.credentials.createInsecure())
  const call = async <Req, Res>(method: Unary<Req, Res>, req: Req, timeoutMs: number): Promise<Res> => await new Promise<Res>((resolve, reject) => {
    method.call(client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err !== null) {
        reject(err)
        return
      }
      resolve(res!)
    })
  })
  return {
    async pullImage (image, opts = {}) {
      const res = await call(client.PullImage, { image: { image } }, opts.timeoutMs ?? 300_000)
      return res.image_ref
    },
    async imageStatus (image) {
      const res = await call(client.ImageStatus, { image: { image }, verbose: false }, 10_000)
      // CRI answers a missing image with an empty status, not an error.
      return res.image === null || res.image.id === '' ? undefined : toImage(res.image)
    },
    async listImages () {
      const res = await call(client.ListImages, {}, 10_000)
      return res.images.map(toImage)
    },
    close () {
      client.close()
    }
  }
}

/**
 * Why this containerd cannot serve CRI pulls through hosts.toml in `configPath`, or undefined:
 * its config must have the cri plugin section with registry config_path = the instance's configPath.
 */
export async function criConfigProblem (c: ContainerdInstance): Promise<string | undefined> {
  const toml = await readFile(c.configFile, 'utf8')
  if (!toml.includes('[plugins."io.containerd.grpc.v1.cri"]')) return `${c.configFile} has no [plugins."io.containerd.grpc.v1.cri"] section`
  if (/^\s*disabled_plugins\s*=.*io\.containerd\.grpc\.v1\.cri/m.test(toml)) return `${c.configFile} disables the cri plugin`
  const m = /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.registry\][^[]*config_path\s*=\s*("[^"]*")/.exec(toml)
  if (m === null) return `${c.configFile} sets no cri registry config_path`
  const configPath = JSON.parse(m[1]!) as string
  if (configPath !== c.configPath) return `cri registry config_path is ${configPath}, not the instance's ${c.configPath}`
  return undefined
}
