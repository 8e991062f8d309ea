import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { findBuildFile } from '../build-files.js'
import type { ProtoGrpcType as VersionProto } from './generated/version.js'
import type { ProtoGrpcType as ImagesProto } from './generated/images.js'
import type { ProtoGrpcType as ContentProto } from './generated/content.js'
import type { ProtoGrpcType as EventsProto } from './generated/events.js'
import type { ProtoGrpcType as IntrospectionProto } from './generated/introspection.js'
import type { VersionClient } from './generated/containerd/services/version/v1/Version.js'
import type { ImagesClient } from './generated/containerd/services/images/v1/Images.js'
import type { ContentClient } from './generated/containerd/services/content/v1/Content.js'
import type { EventsClient } from './generated/containerd/services/events/v1/Events.js'
import type { IntrospectionClient } from './generated/containerd/services/introspection/v1/Introspection.js'
import type { Envelope__Output } from './generated/containerd/services/events/v1/Envelope.js'
import type { ReadContentResponse__Output } from './generated/containerd/services/content/v1/ReadContentResponse.js'
import type { ListImagesResponse__Output } from './generated/containerd/services/images/v1/ListImagesResponse.js'
import type { GetImageResponse__Output } from './generated/containerd/services/images/v1/GetImageResponse.js'
import type { InfoResponse__Output } from './generated/containerd/services/content/v1/InfoResponse.js'
import type { ListContentResponse__Output } from './generated/containerd/services/content/v1/ListContentResponse.js'
import type { PluginsResponse__Output } from './generated/containerd/services/introspection/v1/PluginsResponse.js'

/**
 * proto/ sits at the package root; this file is src/containerd/ or <build dir>/src/containerd/
 * (dist/ normally, but any output directory works), so look upwards for it.
 */
function protoDir (): string {
  const found = findBuildFile(import.meta.url, ['../../proto/version.proto', '../../../proto/version.proto'])
  return found === undefined ? fileURLToPath(new URL('../../../proto', import.meta.url)) : path.dirname(found)
}

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true
}

type Protos = VersionProto & ImagesProto & ContentProto & EventsProto & IntrospectionProto
let protosCache: Protos | undefined

function loadProtos (): Protos {
  if (protosCache !== undefined) return protosCache
  const definition = protoLoader.loadSync(
    ['version.proto', 'images.proto', 'content.proto', 'events.proto', 'introspection.proto'],
    { ...LOADER_OPTIONS, includeDirs: [protoDir()] }
  )
  protosCache = grpc.loadPackageDefinition(definition) as unknown as Protos
  return protosCache
}

export interface ImageRecord {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly target: { readonly mediaType: string, readonly digest: string, readonly sizeBytes: number }
}

export interface ContentInfo {
  readonly digest: string
  readonly sizeBytes: number
  readonly labels: Readonly<Record<string, string>>
}

export interface ContainerdEvent {
  readonly namespace: string
  readonly topic: string
  readonly typeUrl: string
  readonly payload: Buffer
}

export interface CallOptions {
  signal?: AbortSignal
  /** Deadline for the call; default 10 s. */
  timeoutMs?: number
}

export interface ContainerdClientInit {
  socketPath: string
  namespace: string
}

/** A gRPC status error from containerd, with the numeric status code kept. */
export function grpcCode (err: unknown): number | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'number') return err.code
  return undefined
}

export function isGrpcNotFound (err: unknown): boolean {
  return grpcCode(err) === grpc.status.NOT_FOUND
}

function toNumber (value: string | number | undefined | null): number {
  const n = Number(value ?? 0)
  return Number.isSafeInteger(n) && n >= 0 ? n : 0
}

/**
 * Typed wrappers over the handful of containerd services we use. One channel per client;
 * the supervisor replaces the whole client on reconnect, so a restarted containerd
 * (new socket inode) is always dialled afresh.
 */
export class ContainerdClient {
  readonly socketPath: string
  readonly namespace: string
  private readonly channel: grpc.Channel
  private readonly version: VersionClient
  private readonly images: ImagesClient
  private readonly content: ContentClient
  private readonly events: EventsClient
  private readonly introspection: IntrospectionClient
  private closed = false

  constructor (init: ContainerdClientInit) {
    this.socketPath = init.socketPath
    this.namespace = init.namespace
    const protos = loadProtos()
    const options: grpc.ChannelOptions = {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // We run our own reconnect loop with a fresh client; keep grpc's own backoff short
      // so an in-flight call notices a restarted daemon quickly.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
      'grpc.enable_retries': 0
    }
    this.channel = new grpc.Channel(`unix://${init.socketPath}`, grpc.credentials.createInsecure(), options)
    const withChannel = { channelOverride: this.channel }
    const creds = grpc.credentials.createInsecure()
    const target = `unix://${init.socketPath}`
    this.version = new protos.containerd.services.version.v1.Version(target, creds, withChannel)
    this.images = new protos.containerd.services.images.v1.Images(target, creds, withChannel)
    this.content = new protos.containerd.services.content.v1.Content(target, creds, withChannel)
    this.events = new protos.containerd.services.events.v1.Events(target, creds, withChannel)
    this.introspection = new protos.containerd.services.introspection.v1.Introspection(target, creds, withChannel)
  }

  private metadata (): grpc.Metadata {
    const md = new grpc.Metadata()
    md.set('containerd-namespace', this.namespace)
    return md
  }

  private unary<Res> (start: (md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<Res>) => grpc.ClientUnaryCall, options: CallOptions = {}): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      options.signal?.throwIfAborted()
      const call = start(this.metadata(), { deadline: Date.now() + (options.timeoutMs ?? 10_000) }, (err, res) => {
        options.signal?.removeEventListener('abort', onAbort)
        if (err !== null) reject(err)
        else if (res === undefined) reject(new Error('empty response from containerd'))
        else resolve(res)
      })
      const onAbort = (): void => { call.cancel() }
      options.signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  async getVersion (options?: CallOptions): Promise<{ version: string, revision: string }> {
    const res = await this.unary<{ version: string, revision: string }>((md, o, cb) => this.version.Version({}, md, o, cb), options)
    return { version: res.version, revision: res.revision }
  }

  async listImages (filters: readonly string[], options?: CallOptions): Promise<ImageRecord[]> {
    const res = await this.unary<ListImagesResponse__Output>((md, o, cb) => this.images.List({ filters: [...filters] }, md, o, cb), options)
    return res.images.map(toImageRecord).filter((i): i is ImageRecord => i !== undefined)
  }

  /** Rejects with a gRPC NOT_FOUND error when there is no image of that name. */
  async getImage (name: string, options?: CallOptions): Promise<ImageRecord> {
    const res = await this.unary<GetImageResponse__Output>((md, o, cb) => this.images.Get({ name }, md, o, cb), options)
    const image = res.image === null ? undefined : toImageRecord(res.image)
    if (image === undefined) throw Object.assign(new Error(`image ${name} not found`), { code: grpc.status.NOT_FOUND })
    return image
  }

  /** Rejects with a gRPC NOT_FOUND error when the content store lacks the digest. */
  async info (digest: string, options?: CallOptions): Promise<ContentInfo> {
    const res = await this.unary<InfoResponse__Output>((md, o, cb) => this.content.Info({ digest }, md, o, cb), options)
    if (res.info === null) throw Object.assign(new Error(`content ${digest} not found`), { code: grpc.status.NOT_FOUND })
    return { digest: res.info.digest, sizeBytes: toNumber(res.info.size), labels: res.info.labels }
  }

  /**
   * The size of every blob the namespace holds, from one streamed List call (containerd sends
   * 100 entries a message). Listing 5,000 blobs this way takes about 0.1 s where 5,000 Info calls
   * take 4.5 s, and leaves glibc's heap about 30 MiB smaller: each unary call's native buffers
   * are freed between longer-lived allocations, and the freed space stays resident.
   * Rejects with a RESOURCE_EXHAUSTED error, after cancelling the call, once the listing passes
   * `maxEntries`, so a huge store costs a bounded map and the caller can ask per digest instead.
   */
  async contentSizes (maxEntries: number, options: CallOptions = {}): Promise<Map<string, number>> {
    const { signal, timeoutMs } = options
    signal?.throwIfAborted()
    const call = cancelOnAbort(this.content.List({ filters: [] }, this.metadata(), { deadline: Date.now() + (timeoutMs ?? 10_000) }), signal)
    const sizes = new Map<string, number>()
    for await (const message of call as AsyncIterable<ListContentResponse__Output>) {
      for (const info of message.info) sizes.set(info.digest, toNumber(info.size))
      if (sizes.size > maxEntries) {
        call.cancel()
        throw Object.assign(new Error(`the content store lists more than ${maxEntries} blobs`), { code: grpc.status.RESOURCE_EXHAUSTED })
      }
    }
    return sizes
  }

  /**
   * Server stream of content bytes; `sizeBytes` 0 means to the end. Unlike the unary calls there
   * is no default deadline (a multi-GiB layer through gRPC takes as long as it takes): give
   * `timeoutMs` for bounded reads. An abort of `signal` cancels the call, so the stream ends
   * with a CANCELLED error instead of waiting on a daemon that stopped answering.
   */
  read (digest: string, offset: number, sizeBytes: number, options: CallOptions = {}): grpc.ClientReadableStream<ReadContentResponse__Output> {
    const { signal, timeoutMs } = options
    signal?.throwIfAborted()
    const callOptions: grpc.CallOptions = timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs }
    return cancelOnAbort(this.content.Read({ digest, offset: String(offset), size: String(sizeBytes) }, this.metadata(), callOptions), signal)
  }

  subscribe (filters: readonly string[]): grpc.ClientReadableStream<Envelope__Output> {
    return this.events.Subscribe({ filters: [...filters] }, this.metadata())
  }

  async pluginExports (type: string, id: string, options?: CallOptions): Promise<Readonly<Record<string, string>> | undefined> {
    const res = await this.unary<PluginsResponse__Output>((md, o, cb) => this.introspection.Plugins({ filters: [`type==${type},id==${id}`] }, md, o, cb), options)
    return res.plugins[0]?.exports
  }

  connectivityState (): grpc.connectivityState {
    return this.channel.getConnectivityState(false)
  }

  /** Calls `onChange` for every connectivity state change until the client is closed. */
  watchConnectivity (onChange: (state: grpc.connectivityState) => void): void {
    const watch = (current: grpc.connectivityState): void => {
      if (this.closed) return
      this.channel.watchConnectivityState(current, Infinity, () => {
        if (this.closed) return
        const next = this.channel.getConnectivityState(false)
        onChange(next)
        watch(next)
      })
    }
    watch(this.channel.getConnectivityState(false))
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    this.channel.close()
  }
}

/** A server stream that an abort of `signal` cancels, for as long as the call lasts. */
function cancelOnAbort<T extends grpc.ClientReadableStream<unknown>> (call: T, signal: AbortSignal | undefined): T {
  if (signal === undefined) return call
  const onAbort = (): void => { call.cancel() }
  signal.addEventListener('abort', onAbort, { once: true })
  // 'status' comes once per call, however it ends (data, error, cancel).
  call.once('status', () => { signal.removeEventListener('abort', onAbort) })
  return call
}

function toImageRecord (image: { name: string, labels: Record<string, string>, target: { media_type: string, digest: string, size: string } | null }): ImageRecord | undefined {
  if (image.target === null || image.name === '') return undefined
  return {
    name: image.name,
    labels: image.labels,
    target: { mediaType: image.target.media_type, digest: image.target.digest, sizeBytes: toNumber(image.target.size) }
  }
}

export { grpc }
