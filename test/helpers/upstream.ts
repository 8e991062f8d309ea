/**
 * A counting, rate-limited upstream registry for pull-storm tests and benchmarks: Debian's
 * `docker-registry` (distribution 2.8) behind a private nginx with one `server` (port) per node,
 * so that the bytes each node pulled from upstream can be told apart, and a fault can be
 * injected for one node only.
 *
 * Why nginx and not a Node proxy: `limit_rate` limits each connection the way a real upstream
 * (or its CDN) does, costs almost no CPU on a 2-core machine, and its access log gives the
 * bytes actually sent even for a body the client cut short ($body_bytes_sent). The access log
 * is only written when a request ends, so `liveBytes` reads the kernel's per-socket counters
 * (`ss -ti`, bytes_acked) to see a download while it runs.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { BuiltImage } from './image.js'
import { freePort, httpRequest, run, stopChild } from './net.js'
import { waitFor } from './wait.js'

/** Per-node fault: `blob-503` answers 503 to every blob request; `blob-reset` closes the connection without an answer (nginx 444). */
export type UpstreamFault = 'none' | 'blob-503' | 'blob-reset'

export interface UpstreamInit {
  /** One nginx server (port) per node. */
  nodes: number
  /** Per connection, bytes/s (nginx limit_rate); default 50 MB/s as in the issue. 0 = unlimited. */
  rateBytesPerSecond?: number
  /** Address nginx and the registry listen on; default 127.0.0.1. */
  host?: string
  /** Faults from the start, by node index. */
  faults?: ReadonlyMap<number, UpstreamFault>
  /** Parent of the temp dir (default os.tmpdir()). */
  baseDir?: string
}

export interface AccessLogEntry {
  readonly node: number
  readonly port: number
  readonly method: string
  readonly uri: string
  readonly status: number
  readonly bodyBytes: number
  readonly requestSeconds: number
  /** `sha256:…` when the uri is a blob request, else undefined. */
  readonly blobDigest: string | undefined
}

export interface UpstreamStats {
  readonly entries: readonly AccessLogEntry[]
  /** Blob body bytes (GET answered 200/206; a body cut short counts what was sent), per node index. */
  readonly blobBytesByNode: readonly number[]
  readonly blobBytes: number
  readonly blobBytesByDigest: ReadonlyMap<string, number>
  /** Blob GETs per node. */
  readonly blobGetsByNode: readonly number[]
  /** All requests per node (HEAD/GET of manifests and blobs, /v2/ pings). */
  readonly requestsByNode: readonly number[]
  /** Blob bytes / image blob bytes: how many copies of the image upstream sent. */
  copies: (imageBlobBytes: number) => number
}

export interface Upstream {
  /** The registry itself, not counted (for pushes and checks). */
  readonly registryUrl: string
  readonly rateBytesPerSecond: number
  readonly nodeCount: number
  /** `http://host:port` of node `i`'s nginx server. */
  nodeUrl: (i: number) => string
  nodePort: (i: number) => number
  /** Pushes an image built by buildImage (its OCI layout) as `<repo>:<tag>`, digests preserved. */
  push: (image: BuiltImage, repo: string) => Promise<void>
  /** Rewrites the config and reloads nginx (SIGHUP); resolves once the old workers exited (requests in flight finish under the old rules). */
  setFault: (node: number, fault: UpstreamFault) => Promise<void>
  /** Forgets everything logged so far (between runs). */
  resetCounters: () => Promise<void>
  /** Parses the access log, after waiting (bounded) for it to stop growing. */
  stats: (opts?: { settleMs?: number }) => Promise<UpstreamStats>
  /**
   * Bytes the kernel saw acknowledged on each node's server port, per node, on the connections
   * open now (minus what `since` saw on the same connection): counts downloads in progress,
   * which the access log cannot. Includes headers and manifests.
   */
  liveBytes: (since?: LiveSnapshot) => Promise<{ byNode: number[], snapshot: LiveSnapshot }>
  readonly nginxPid: number | undefined
  readonly registryPid: number | undefined
  /** Kills nginx and the registry and deletes the temp dir (what a signal handler can do). */
  disposeSync: () => void
  dispose: () => Promise<void>
}

/** bytes_acked per open connection (`local peer` -> bytes), for liveBytes deltas. */
export type LiveSnapshot = ReadonlyMap<string, number>

const DEFAULT_RATE = 50_000_000
const READY_TIMEOUT_MS = 15_000
const BLOB_URI = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/

/** Why an upstream cannot be started here (missing tools), or undefined. */
export async function upstreamSkipReason (): Promise<string | undefined> {
  for (const [bin, args, pkg] of [['docker-registry', ['--version'], 'docker-registry'], ['nginx', ['-v'], 'nginx-light'], ['skopeo', ['--version'], 'skopeo'], ['ss', ['-V'], 'iproute2']] as const) {
    const res = await run(bin, args, { timeoutMs: 10_000 }).catch(() => undefined)
    if (res?.code !== 0) return `${bin} not found (apt-get install -y ${pkg})`
  }
  return undefined
}

export async function startUpstream (init: UpstreamInit): Promise<Upstream> {
  if (!Number.isSafeInteger(init.nodes) || init.nodes < 1) throw new Error(`upstream needs at least one node, got ${init.nodes}`)
  const host = init.host ?? '127.0.0.1'
  const rate = init.rateBytesPerSecond ?? DEFAULT_RATE
  const dir = await mkdtemp(path.join(init.baseDir ?? os.tmpdir(), 'spg-upstream-'))
  const faults = new Map<number, UpstreamFault>(init.faults ?? [])
  let registry: ChildProcess | undefined
  let nginx: ChildProcess | undefined
  const killAll = (): void => {
    for (const c of [nginx, registry]) {
      if (c === undefined || c.exitCode !== null || c.signalCode !== null) continue
      // nginx workers outlive a SIGKILLed master: kill them too (master first, or it respawns them).
      const workers = c.pid === undefined ? [] : childPidsSync(c.pid)
      c.kill('SIGKILL')
      for (const w of workers) {
        try { process.kill(w, 'SIGKILL') } catch { /* already gone */ }
      }
    }
  }
  process.once('exit', killAll)
  try {
    const registryPort = await freePort(host)
    const registryUrl = `http://${host}:${registryPort}`
    await mkdir(path.join(dir, 'registry-data'), { recursive: true })
    await writeFile(path.join(dir, 'registry.yml'), [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${path.join(dir, 'registry-data')}`,
      'http:',
      `  addr: ${host}:${registryPort}`,
      ''
    ].join('\n'))
    registry = await startDaemon('docker-registry', ['serve', path.join(dir, 'registry.yml')], path.join(dir, 'registry.log'))
    await waitUp(`${registryUrl}/v2/`, registry, path.join(dir, 'registry.log'))

    const ports: number[] = []
    for (let i = 0; i < init.nodes; i++) ports.push(await freePort(host))
    const confFile = path.join(dir, 'nginx.conf')
    const accessLog = path.join(dir, 'access.log')
    const errorLog = path.join(dir, 'error.log')
    await mkdir(path.join(dir, 'tmp'), { recursive: true })
    const writeConf = async (): Promise<void> => {
      await writeFile(confFile, nginxConf({ dir, host, ports, registryPort, rate, faults, accessLog, errorLog }))
    }
    await writeConf()
    nginx = await startDaemon('nginx', ['-c', confFile, '-e', errorLog], errorLog)
    for (const port of ports) await waitUp(`http://${host}:${port}/v2/`, nginx, errorLog)
    // The readiness probes above are no node's pulls.
    let skipBytes = (await readFile(accessLog)).length

    const nginxChild = nginx
    const registryChild = registry
    const parse = (text: string): AccessLogEntry[] => {
      const out: AccessLogEntry[] = []
      for (const line of text.split('\n')) {
        // log_format storm: $server_port $request_method $uri $status $body_bytes_sent $request_time
        const f = line.split(' ')
        if (f.length < 6) continue
        const port = Number(f[0])
        const node = ports.indexOf(port)
        if (node < 0) continue
        const uri = f[2]!
        out.push({
          node,
          port,
          method: f[1]!,
          uri,
          status: Number(f[3]),
          bodyBytes: Number(f[4]),
          requestSeconds: Number(f[5]),
          blobDigest: BLOB_URI.exec(uri)?.[1]
        })
      }
      return out
    }
    const readLog = async (): Promise<string> => (await readFile(accessLog)).subarray(skipBytes).toString('utf8')

    const upstream: Upstream = {
      registryUrl,
      rateBytesPerSecond: rate,
      nodeCount: init.nodes,
      nodeUrl: (i) => `http://${host}:${portOf(ports, i)}`,
      nodePort: (i) => portOf(ports, i),
      get nginxPid () { return nginxChild.pid },
      get registryPid () { return registryChild.pid },
      async push (image, repo) {
        const src = `oci:${image.layoutDir}:${image.tag}`
        const dest = `docker://${host}:${registryPort}/${repo}:${image.tag}`
        const res = await run('skopeo', ['copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false', src, dest], { timeoutMs: 10 * 60_000 })
        if (res.code !== 0) throw new Error(`skopeo copy ${src} ${dest} failed (${res.code ?? res.signal}): ${res.stderr.trim()}`)
        // The registry must answer the very manifest digest buildImage wrote, or nodes would verify against another image.
        const head = await httpRequest(`${registryUrl}/v2/${repo}/manifests/${image.tag}`, {
          method: 'HEAD',
          headers: { Accept: `${image.top.mediaType}` }
        })
        const got = head.headers['docker-content-digest']
        if (head.status !== 200 || got !== image.top.digest) {
          throw new Error(`after the push, ${repo}:${image.tag} answers ${head.status} with digest ${String(got)}, expected ${image.top.digest}`)
        }
      },
      async setFault (node, fault) {
        portOf(ports, node)
        faults.set(node, fault)
        await writeConf()
        const before = await nginxWorkers(nginxChild.pid)
        nginxChild.kill('SIGHUP')
        // Old workers keep accepting for a moment after the new ones start: only once they are
        // gone (they drain requests in flight first) does every new connection get the new rules.
        await waitFor(async () => {
          const now = await nginxWorkers(nginxChild.pid)
          return now.length > 0 && now.every((w) => !before.includes(w))
        }, { timeoutMs: 30_000, what: 'nginx to reload with the new fault (old workers to exit)' })
      },
      async resetCounters () {
        skipBytes = (await readFile(accessLog)).length
      },
      async stats (opts = {}) {
        // A request is logged when it ends; wait (bounded) for the log to stop growing.
        const settleMs = opts.settleMs ?? 300
        let last = -1
        let text = ''
        const deadline = Date.now() + 10_000
        for (;;) {
          text = await readLog()
          if (text.length === last || Date.now() > deadline) break
          last = text.length
          await new Promise((resolve) => setTimeout(resolve, settleMs))
        }
        return summarize(parse(text), init.nodes)
      },
      async liveBytes (since) {
        const res = await run('ss', ['-tinH', 'state', 'established'], { timeoutMs: 10_000 })
        if (res.code !== 0) throw new Error(`ss failed (${res.code ?? res.signal}): ${res.stderr}`)
        const byNode = ports.map(() => 0)
        const snapshot = new Map<string, number>()
        // Each socket is one line with the addresses, then an indented line with its counters.
        const lines = res.stdout.split('\n')
        for (let i = 0; i < lines.length; i++) {
          // With a state filter, ss prints: Recv-Q Send-Q Local Peer.
          const cols = lines[i]!.trim().split(/\s+/)
          if (cols.length < 4) continue
          const local = cols[2]!
          const node = ports.findIndex((p) => local === `${host}:${p}`)
          if (node < 0) continue
          const acked = /bytes_acked:(\d+)/.exec(lines[i + 1] ?? '')
          if (acked === null) continue
          const key = `${local} ${cols[3]!}`
          snapshot.set(key, Number(acked[1]))
          byNode[node] = byNode[node]! + Number(acked[1]) - (since?.get(key) ?? 0)
        }
        return { byNode, snapshot }
      },
      disposeSync () {
        killAll()
        process.removeListener('exit', killAll)
        rmSync(dir, { recursive: true, force: true })
      },
      async dispose () {
        await stopChild(nginxChild)
        await stopChild(registryChild)
        process.removeListener('exit', killAll)
        await rm(dir, { recursive: true, force: true })
      }
    }
    return upstream
  } catch (err) {
    killAll()
    process.removeListener('exit', killAll)
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}

/** Sum of an image's blob sizes (config and layers of each platform, the index and manifests are fetched as manifests). */
export function imageBlobBytes (image: BuiltImage): number {
  return image.platforms.reduce((sum, p) => sum + p.config.size + p.layers.reduce((s, l) => s + l.size, 0), 0)
}

function portOf (ports: readonly number[], i: number): number {
  const p = ports[i]
  if (p === undefined) throw new Error(`no upstream server for node ${i} (${ports.length} nodes)`)
  return p
}

function summarize (entries: AccessLogEntry[], nodes: number): UpstreamStats {
  const blobBytesByNode = new Array<number>(nodes).fill(0)
  const blobGetsByNode = new Array<number>(nodes).fill(0)
  const requestsByNode = new Array<number>(nodes).fill(0)
  const blobBytesByDigest = new Map<string, number>()
  for (const e of entries) {
    requestsByNode[e.node]!++
    // Error pages (a 503 fault) are no blob bytes.
    if (e.blobDigest === undefined || e.method !== 'GET' || (e.status !== 200 && e.status !== 206)) continue
    blobGetsByNode[e.node]!++
    blobBytesByNode[e.node]! += e.bodyBytes
    blobBytesByDigest.set(e.blobDigest, (blobBytesByDigest.get(e.blobDigest) ?? 0) + e.bodyBytes)
  }
  const blobBytes = blobBytesByNode.reduce((a, b) => a + b, 0)
  return {
    entries,
    blobBytesByNode,
    blobBytes,
    blobBytesByDigest,
    blobGetsByNode,
    requestsByNode,
    copies: (imageBytes) => blobBytes / imageBytes
  }
}

function nginxConf (c: {
  dir: string
  host: string
  ports: readonly number[]
  registryPort: number
  rate: number
  faults: ReadonlyMap<number, UpstreamFault>
  accessLog: string
  errorLog: string
}): string {
  const servers = c.ports.map((port, i) => {
    const fault = c.faults.get(i) ?? 'none'
    const blobFault = fault === 'blob-503' ? '      return 503;\n' : fault === 'blob-reset' ? '      return 444;\n' : ''
    return `  server {
    listen ${c.host}:${port};
    location / { proxy_pass http://registry; }
    location ~ ^/v2/.+/blobs/ {
${blobFault}      proxy_pass http://registry;
    }
  }`
  }).join('\n')
  // `user root` to enter the 0700 temp dir, `daemon off` so the master is our child.
  // nginx 1.22 ignores limit_rate on unbuffered proxying (proxy_buffering off sent 16 MiB in
  // 0.1 s at 8 MB/s), so: buffering on, but no temp file and small buffers, which is what
  // unbuffered would give: nginx reads from the registry only as fast as the node drains
  // (a node that stops reading stops the registry), and limit_rate shapes the whole path.
  return `user root;
daemon off;
worker_processes 2;
pid ${path.join(c.dir, 'nginx.pid')};
error_log ${c.errorLog} warn;
events { worker_connections 4096; }
http {
  log_format storm '$server_port $request_method $uri $status $body_bytes_sent $request_time';
  access_log ${c.accessLog} storm;
  client_body_temp_path ${c.dir}/tmp; proxy_temp_path ${c.dir}/tmp; fastcgi_temp_path ${c.dir}/tmp; uwsgi_temp_path ${c.dir}/tmp; scgi_temp_path ${c.dir}/tmp;
  client_max_body_size 0;
  keepalive_requests 100000;
  upstream registry { server ${c.host}:${c.registryPort}; }
  proxy_http_version 1.1;
  proxy_buffering on;
  proxy_max_temp_file_size 0;
  proxy_buffer_size 16k;
  proxy_buffers 4 64k;
  proxy_request_buffering off;
  proxy_set_header Host $http_host;
  proxy_read_timeout 300s;
  limit_rate ${c.rate};
${servers}
}
`
}

async function startDaemon (bin: string, args: string[], logPath: string): Promise<ChildProcess> {
  const fd = openSync(logPath, 'a')
  let child: ChildProcess
  try {
    child = spawn(bin, args, { stdio: ['ignore', fd, fd] })
  } finally {
    closeSync(fd)
  }
  child.unref()
  await once(child, 'spawn')
  return child
}

async function waitUp (url: string, child: ChildProcess, logPath: string): Promise<void> {
  try {
    await waitFor(async () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited (code ${String(child.exitCode)}, signal ${String(child.signalCode)})`)
      return (await httpRequest(url, { method: 'GET', timeoutMs: 2000 })).status === 200
    }, { timeoutMs: READY_TIMEOUT_MS, intervalMs: 100, what: `${url} to answer 200` })
  } catch (err) {
    const tail = await readFile(logPath, 'utf8').catch(() => '')
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n--- ${logPath} ---\n${tail.slice(-2000)}`, { cause: err })
  }
}

async function nginxWorkers (master: number | undefined): Promise<number[]> {
  if (master === undefined) return []
  const res = await run('ps', ['-o', 'pid=', '--ppid', String(master)], { timeoutMs: 5_000 })
  return res.stdout.split('\n').map((s) => Number(s.trim())).filter((n) => n > 0)
}

function childPidsSync (parent: number): number[] {
  const out: number[] = []
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8')
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === parent) out.push(Number(e))
    } catch {
      // Gone between readdir and read.
    }
  }
  return out
}

