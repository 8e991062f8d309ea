import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import type { ChildProcess } from 'node:child_process'
import { accessSync, closeSync, constants as fsConstants, existsSync, openSync } from 'node:fs'
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { once } from 'node:events'
import { run } from './net.js'
import { waitFor } from './wait.js'

const CONTAINERD_BIN = 'containerd'
const CTR_BIN = 'ctr'
/** sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107
const READY_TIMEOUT_MS = 10_000
const STOP_TIMEOUT_MS = 10_000
const CTR_TIMEOUT_MS = 120_000
const CTR_CONNECT_TIMEOUT = '5s'

export interface ContainerdInit {
  /** Goes into the temp dir name, to tell instances apart in `ps` and /tmp. */
  name?: string
  /** Parent of the temp dir; default os.tmpdir(), or /tmp when that would make socket paths too long. */
  baseDir?: string
  /** CRI `discard_unpacked_layers`: a CRI PullImage then deletes layer blobs after unpacking. */
  discardUnpackedLayers?: boolean
  /** Only version 2 (the format containerd 1.6 reads) exists; accepted so call sites can say so. */
  configVersion?: 2
  /** Default native: unpacking needs no overlay mounts, so the temp dir can always be removed. */
  snapshotter?: 'native' | 'overlayfs'
}

export interface CtrOptions {
  namespace?: string
  timeoutMs?: number
}

export interface ContainerdInstance {
  readonly dir: string
  readonly socketPath: string
  /** `<root>/io.containerd.content.v1.content`; blobs live in `blobs/sha256/<hex>` below it. */
  readonly contentPath: string
  /** The CRI registry config_path (certs.d): `<configPath>/<registry>/hosts.toml`. */
  readonly configPath: string
  readonly configFile: string
  readonly logPath: string
  readonly namespace: 'k8s.io'
  readonly pid: number | undefined
  isRunning: () => boolean
  /** Starts (again) with the same dirs; resolves once `ctr version` answers. */
  start: () => Promise<void>
  /** SIGTERM and wait for the exit. */
  stop: () => Promise<void>
  /** SIGKILL and wait for the exit; the socket file stays behind, stale, as after a crash. */
  kill: () => Promise<void>
  ctr: (args: string[], opts?: CtrOptions) => Promise<{ stdout: string, stderr: string }>
  /**
   * `ctr images import`, then a synchronous garbage collection (unless `gc: false`): ctr writes every
   * blob of the archive and leaves those of other platforms to an asynchronous GC, so without it
   * arm64 blobs are briefly present after an amd64-only import.
   */
  importImage: (tarPath: string, opts?: { allPlatforms?: boolean, namespace?: string, gc?: boolean }) => Promise<void>
  /** `ctr images rm --sync` by default, so garbage collection is done when this resolves. */
  removeImage: (name: string, opts?: { sync?: boolean, namespace?: string }) => Promise<void>
  /** Runs containerd's garbage collection now and waits for it (a lease deleted with --sync). */
  collectGarbage: () => Promise<void>
  /** Last lines of containerd's log, for failure messages. */
  logTail: (lines?: number) => Promise<string>
  /** Stop, then remove the temp dir. Safe to call twice. */
  dispose: () => Promise<void>
}

/** Why containerd tests cannot run here, or undefined when they can. */
export function containerdSkipReason (): string | undefined {
  if (process.platform !== 'linux') return 'containerd tests need Linux'
  if (process.getuid?.() !== 0) return 'containerd tests need root (containerd and its content store are root-only)'
  for (const bin of [CONTAINERD_BIN, CTR_BIN]) {
    if (findInPath(bin) === undefined) return `${bin} not found in PATH (apt-get install -y containerd)`
  }
  return undefined
}

/** containerd and ctr are installed and we are root. */
export function containerdAvailable (): boolean {
  return containerdSkipReason() === undefined
}

export async function startContainerd (init: ContainerdInit = {}): Promise<ContainerdInstance> {
  if (init.configVersion !== undefined && init.configVersion !== 2) {
    throw new Error(`containerd config version ${String(init.configVersion)} unsupported; only 2`)
  }
  const reason = containerdSkipReason()
  if (reason !== undefined) throw new Error(`cannot start containerd: ${reason}`)
  const dir = await makeTempDir(init)
  const instance = new PrivateContainerd(dir, init.snapshotter ?? 'native')
  try {
    await instance.writeConfig(init.discardUnpackedLayers ?? false)
    await instance.start()
  } catch (err) {
    await instance.dispose()
    throw err
  }
  return instance
}

class PrivateContainerd implements ContainerdInstance {
  readonly dir: string
  readonly socketPath: string
  readonly contentPath: string
  readonly configPath: string
  readonly configFile: string
  readonly logPath: string
  readonly namespace = 'k8s.io' as const
  readonly #snapshotter: string
  #child: ChildProcess | undefined
  #disposed = false

  constructor (dir: string, snapshotter: string) {
    this.dir = dir
    this.socketPath = path.join(dir, 'containerd.sock')
    this.contentPath = path.join(dir, 'root', 'io.containerd.content.v1.content')
    this.configPath = path.join(dir, 'certs.d')
    this.configFile = path.join(dir, 'config.toml')
    this.logPath = path.join(dir, 'containerd.log')
    this.#snapshotter = snapshotter
  }

  get pid (): number | undefined {
    return this.isRunning() ? this.#child?.pid : undefined
  }

  isRunning (): boolean {
    const c = this.#child
    return c !== undefined && c.exitCode === null && c.signalCode === null
  }

  async writeConfig (discardUnpackedLayers: boolean): Promise<void> {
    const d = this.dir
    for (const sub of ['root', 'state', 'certs.d', 'opt', 'cni']) await mkdir(path.join(d, sub), { recursive: true })
    // A private instance: everything under the temp dir, no CRI stream server port
    // clash between instances (port "0"), and unused snapshotters off so they do not log errors.
    const toml = `version = 2
root = ${q(path.join(d, 'root'))}
state = ${q(path.join(d, 'state'))}
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = ${q(this.socketPath)}

[ttrpc]
  address = ${q(`${this.socketPath}.ttrpc`)}

[debug]
  address = ${q(path.join(d, 'debug.sock'))}
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = ${q(path.join(d, 'opt'))}

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = ${q(this.#snapshotter)}
    discard_unpacked_layers = ${discardUnpackedLayers ? 'true' : 'false'}
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ${q(this.configPath)}
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = ${q(path.join(d, 'cni'))}
`
    await writeFile(this.configFile, toml)
  }

  async start (): Promise<void> {
    if (this.#disposed) throw new Error(`containerd in ${this.dir} was disposed`)
    if (this.isRunning()) throw new Error(`containerd in ${this.dir} is already running (pid ${this.#child?.pid})`)
    const logFd = openSync(this.logPath, 'a')
    let child: ChildProcess
    try {
      child = spawn(CONTAINERD_BIN, ['--config', this.configFile], {
        detached: false,
        stdio: ['ignore', logFd, logFd]
      })
    } finally {
      closeSync(logFd)
    }
    this.#child = child
    liveChildren.add(child)
    updateExitHooks()
    const exitedEarly = new AbortController()
    child.once('exit', (code, signal) => {
      liveChildren.delete(child)
      updateExitHooks()
      exitedEarly.abort(new Error(`containerd exited (code ${code}, signal ${signal})`))
    })
    // A forgotten dispose() must not keep the test process alive; the exit hook then kills containerd.
    child.unref()
    try {
      await once(child, 'spawn')
    } catch (err) {
      liveChildren.delete(child)
      updateExitHooks()
      throw new Error(`cannot spawn ${CONTAINERD_BIN}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }

    try {
      // After kill() the old socket file is still there and refuses connections until the new
      // daemon replaces it, so "socket exists" is no readiness signal; an answered RPC is.
      await waitFor(async () => {
        // ctr waits 10 s for a socket that does not exist yet, so only ask once it is there.
        if (!existsSync(this.socketPath)) return false
        const res = await run(CTR_BIN, ['-a', this.socketPath, '--connect-timeout', '2s', 'version'], {
          timeoutMs: 5_000,
          signal: exitedEarly.signal
        })
        if (res.code === 0) return true
        throw new Error(res.stderr.trim())
      }, {
        timeoutMs: READY_TIMEOUT_MS,
        intervalMs: 50,
        what: `containerd on ${this.socketPath} to answer ctr version`,
        signal: exitedEarly.signal
      })
    } catch (err) {
      if (this.isRunning()) await this.#signalAndWait('SIGKILL')
      const tail = await this.logTail(30)
      const why = exitedEarly.signal.aborted ? exitedEarly.signal.reason : err
      throw new Error(`containerd did not become ready: ${why instanceof Error ? why.message : String(why)}\n--- ${this.logPath} (tail) ---\n${tail}`, { cause: err })
    }
  }

  async stop (): Promise<void> {
    await this.#signalAndWait('SIGTERM')
  }

  async kill (): Promise<void> {
    await this.#signalAndWait('SIGKILL')
  }

  async #signalAndWait (signal: NodeJS.Signals): Promise<void> {
    const child = this.#child
    if (child === undefined || !this.isRunning()) return
    const exited = once(child, 'exit')
    // The child is unref'd; hold the loop until it is gone so the await below cannot be cut short.
    child.ref()
    // Escalate: a containerd stuck in shutdown must not outlive the test.
    const escalate = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
    try {
      child.kill(signal)
      await exited
    } finally {
      clearTimeout(escalate)
      child.unref()
    }
  }

  async ctr (args: string[], opts: CtrOptions = {}): Promise<{ stdout: string, stderr: string }> {
    // A bounded connect so a stopped daemon fails the call in seconds, not ctr's default 10 s.
    const fullArgs = ['-a', this.socketPath, '--connect-timeout', CTR_CONNECT_TIMEOUT, '-n', opts.namespace ?? this.namespace, ...args]
    const res = await run(CTR_BIN, fullArgs, {
      timeoutMs: opts.timeoutMs ?? CTR_TIMEOUT_MS,
      // ctr unpacks on import/pull with its own snapshotter choice, which must match the daemon's.
      env: { ...process.env, CONTAINERD_SNAPSHOTTER: this.#snapshotter }
    })
    if (res.code !== 0) {
      throw new Error(`ctr ${fullArgs.join(' ')} failed (${res.code ?? res.signal}): ${res.stderr.trim()}`)
    }
    return { stdout: res.stdout, stderr: res.stderr }
  }

  async importImage (tarPath: string, opts: { allPlatforms?: boolean, namespace?: string, gc?: boolean } = {}): Promise<void> {
    const args = ['images', 'import', ...(opts.allPlatforms === true ? ['--all-platforms'] : []), tarPath]
    await this.ctr(args, opts.namespace === undefined ? {} : { namespace: opts.namespace })
    if (opts.gc !== false) await this.collectGarbage()
  }

  async collectGarbage (): Promise<void> {
    // ctr 1.6 has no gc command; deleting any lease with --sync runs a full collection and waits.
    const id = `spegel-test-gc-${randomBytes(6).toString('hex')}`
    await this.ctr(['leases', 'create', '--id', id])
    await this.ctr(['leases', 'delete', '--sync', id])
  }

  async removeImage (name: string, opts: { sync?: boolean, namespace?: string } = {}): Promise<void> {
    const args = ['images', 'rm', ...(opts.sync === false ? [] : ['--sync']), name]
    await this.ctr(args, opts.namespace === undefined ? {} : { namespace: opts.namespace })
  }

  async logTail (lines = 20): Promise<string> {
    let fh
    try {
      fh = await open(this.logPath, 'r')
    } catch (err) {
      return `(no log: ${err instanceof Error ? err.message : String(err)})`
    }
    try {
      const { size } = await fh.stat()
      const len = Math.min(size, 64 * 1024)
      const buf = Buffer.alloc(len)
      await fh.read(buf, 0, len, size - len)
      return buf.toString('utf8').split('\n').slice(-lines - 1).join('\n')
    } finally {
      await fh.close()
    }
  }

  async dispose (): Promise<void> {
    if (this.#disposed) return
    this.#disposed = true
    await this.stop()
    await rm(this.dir, { recursive: true, force: true, maxRetries: 3 })
  }
}

async function makeTempDir (init: ContainerdInit): Promise<string> {
  const label = (init.name ?? '').replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 16)
  const prefix = `spegel-ctrd-${label === '' ? '' : `${label}-`}`
  // Longest socket we create is <dir>/containerd.sock.ttrpc; mkdtemp adds 6 characters.
  const fits = (base: string): boolean =>
    Buffer.byteLength(path.join(base, `${prefix}XXXXXX`, 'containerd.sock.ttrpc')) <= MAX_SOCKET_PATH_BYTES
  let base = init.baseDir ?? os.tmpdir()
  if (!fits(base)) {
    if (init.baseDir !== undefined) {
      throw new Error(`baseDir ${init.baseDir} too long: socket paths must stay within ${MAX_SOCKET_PATH_BYTES} bytes`)
    }
    base = '/tmp'
  }
  await mkdir(base, { recursive: true })
  return await mkdtemp(path.join(base, prefix))
}

function q (s: string): string {
  return JSON.stringify(s)
}

function findInPath (bin: string): string | undefined {
  for (const d of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (d === '') continue
    const p = path.join(d, bin)
    try {
      accessSync(p, fsConstants.X_OK)
      return p
    } catch {
      // not in this PATH entry; keep looking
    }
  }
  return undefined
}

// Every containerd we started and that has not exited. Killed when this process goes away, so a
// crashed or interrupted test run leaves no daemon behind (the temp dirs stay, for their logs).
const liveChildren = new Set<ChildProcess>()
const TERMINATING_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']
let hooksInstalled = false

function killAllSync (): void {
  for (const c of liveChildren) c.kill('SIGKILL')
}

function onSignal (signal: NodeJS.Signals): void {
  killAllSync()
  removeHooks()
  // We took over the default action by listening; restore it unless someone else handles the signal.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
}

function removeHooks (): void {
  if (!hooksInstalled) return
  process.off('exit', killAllSync)
  for (const s of TERMINATING_SIGNALS) process.off(s, onSignal)
  hooksInstalled = false
}

function updateExitHooks (): void {
  if (liveChildren.size > 0 && !hooksInstalled) {
    process.on('exit', killAllSync)
    for (const s of TERMINATING_SIGNALS) process.on(s, onSignal)
    hooksInstalled = true
  } else if (liveChildren.size === 0) {
    removeHooks()
  }
}
