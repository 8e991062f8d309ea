/**
 * Reference servers for the serving benchmarks, each a private nginx process of this benchmark
 * (its own config, temp dir and port; `daemon off`, so the master is our child and is reaped):
 *
 * - a file server on a directory (containerd's `blobs/sha256`), `sendfile on`: what serving the
 *   very same file costs at best;
 * - a reverse proxy to a spegel-ts node's registry, with keep-alive upstream connections and
 *   1 MiB proxy buffers, sending `X-Spegel-Mirrored: true` as a relaying spegel-ts node does:
 *   what relaying another node's answers costs at best.
 *
 * Both register their own cleanup (bench/cluster-common.ts), so they are stopped on failure and on
 * SIGINT/SIGTERM too; the master and its workers are counted together by CpuWatch.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { rmSync } from 'node:fs'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { freePort, httpRequest } from '../test/helpers/net.js'
import { waitFor } from '../test/helpers/wait.js'
import { childPids, killQuietly, onCleanup, stopChild, type CpuWatch } from './cluster-common.js'

export interface Nginx {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly port: number
  /** The master; its workers are its children. */
  readonly pid: number
  readonly child: ChildProcess
  /** The master and its workers, for cpuSnapshot. */
  readonly watch: CpuWatch
  /** Stops it (SIGTERM: fast shutdown, workers included) and removes its dir. */
  stop(): Promise<void>
}

/** Two workers: one per core of the machine the figures were first taken on, as the issue measured. */
const WORKERS = 2

// `user root`: containerd's content store sits below 0700 temp dirs that nginx's default worker
// user cannot enter. No access log: spegel-ts logs requests at debug level only.
function mainConf (dir: string, http: string): string {
  return `user root;
daemon off;
worker_processes ${WORKERS};
pid ${path.join(dir, 'nginx.pid')};
error_log ${path.join(dir, 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp; uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
${http}
}
`
}

/** nginx serving the files of `root` as `/<name>` with sendfile. */
export async function startNginxFileServer (dir: string, root: string, label = 'nginx file server'): Promise<Nginx> {
  const port = await freePort('127.0.0.1')
  return await startNginx(dir, port, label, `  sendfile on; tcp_nopush on;
  server { listen 127.0.0.1:${port}; root ${root}; }`)
}

/**
 * nginx relaying every request to `upstream` (`host:port` of a spegel-ts registry): HTTP/1.1 with
 * a pool of idle keep-alive connections to it, responses through 1 MiB buffers and never spooled
 * to a temp file (a relaying spegel-ts node streams and keeps nothing on disk either), and
 * `X-Spegel-Mirrored: true` so the upstream answers from its own content, as it does for a peer.
 */
export async function startNginxProxy (dir: string, upstream: string, label = 'nginx relay'): Promise<Nginx> {
  const port = await freePort('127.0.0.1')
  return await startNginx(dir, port, label, `  upstream spegel {
    server ${upstream};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://spegel;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Spegel-Mirrored true;
      proxy_buffering on;
      proxy_buffer_size 1m;
      proxy_buffers 4 1m;
      proxy_busy_buffers_size 2m;
      proxy_max_temp_file_size 0;
    }
  }`)
}

async function startNginx (dir: string, port: number, label: string, http: string): Promise<Nginx> {
  await mkdir(path.join(dir, 'tmp'), { recursive: true })
  const errorLog = path.join(dir, 'error.log')
  const confFile = path.join(dir, 'nginx.conf')
  await writeFile(confFile, mainConf(dir, http))
  const child = spawn('nginx', ['-c', confFile, '-e', errorLog], { stdio: ['ignore', 'ignore', 'inherit'] })
  if (child.pid === undefined) throw new Error(`cannot spawn nginx for ${label}`)
  const pid = child.pid
  // Master first: it respawns any worker that dies while it lives.
  const killSync = (): void => {
    const workers = childPids(pid)
    killQuietly(pid, 'SIGKILL')
    for (const w of workers) killQuietly(w, 'SIGKILL')
  }
  const stop = onCleanup(`${label} (nginx ${pid})`, async () => {
    await stopChild(child)
    await rm(dir, { recursive: true, force: true })
  }, () => {
    killSync()
    rmSync(dir, { recursive: true, force: true })
  })
  const exited = once(child, 'exit').then(async ([code, signal]) => {
    const tail = await readFile(errorLog, 'utf8').catch(() => '')
    throw new Error(`${label}: nginx exited (code ${String(code)}, signal ${String(signal)}): ${tail.slice(-1000)}`)
  })
  try {
    await Promise.race([exited, waitFor(async () => {
      try {
        return (await httpRequest(`http://127.0.0.1:${port}/`, { method: 'HEAD', timeoutMs: 2000 })).status > 0
      } catch {
        return false
      }
    }, { timeoutMs: 10_000, what: `${label} on port ${port}` })])
  } catch (err) {
    await stop()
    throw err
  } finally {
    exited.catch(() => { /* only the start race needed it; stop() waits for the exit itself */ })
  }
  return { url: `http://127.0.0.1:${port}`, port, pid, child, watch: { name: label, pids: [pid] }, stop }
}
