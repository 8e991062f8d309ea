import { execFile, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createHash } from 'node:crypto'
import { createServer } from 'node:net'
import { Agent, request } from 'undici'
import type { Dispatcher } from 'undici'

/** Asks the kernel for a currently unused TCP port. Another process may grab it before you bind it. */
export async function freePort (host = '127.0.0.1'): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen(0, host, () => {
      const addr = srv.address()
      if (addr === null || typeof addr === 'string') {
        srv.close()
        reject(new Error(`unexpected server address ${String(addr)}`))
        return
      }
      srv.close(err => { err === undefined ? resolve(addr.port) : reject(err) })
    })
  })
}

export interface HttpRequestOptions {
  method?: Dispatcher.HttpMethod
  headers?: Record<string, string>
  body?: string | Buffer
  timeoutMs?: number
  /** Reuse connections across calls; without it each call uses (and closes) its own connection pool. */
  dispatcher?: Dispatcher
}

export interface HttpResponse {
  status: number
  /** Lower-case header names; repeated headers arrive as arrays. */
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

/** One HTTP request, redirects not followed, whole body buffered (fine for tests, not for GiB blobs). */
export async function httpRequest (url: string | URL, opts: HttpRequestOptions = {}): Promise<HttpResponse> {
  const timeoutMs = opts.timeoutMs ?? 30_000
  // A private pool per call, closed afterwards, so no keep-alive socket outlives the test.
  const own = opts.dispatcher === undefined ? new Agent() : undefined
  try {
    const res = await request(url, {
      method: opts.method ?? 'GET',
      headers: opts.headers,
      body: opts.body,
      dispatcher: opts.dispatcher ?? own,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs
    })
    const body = Buffer.from(await res.body.arrayBuffer())
    return { status: res.statusCode, headers: res.headers, body }
  } finally {
    await own?.close()
  }
}

/** Hex SHA-256 of a buffer or string. */
export function sha256 (data: Buffer | Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex')
}

/** OCI digest form, `sha256:<hex>`. */
export function digestOf (data: Buffer | Uint8Array | string): string {
  return `sha256:${sha256(data)}`
}

export interface RunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  timeoutMs?: number
  signal?: AbortSignal
}

export interface RunResult {
  /** Exit code, or null when the process died from a signal (then `signal` says which). */
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/**
 * Runs a command to completion. A non-zero exit resolves (callers assert on `code`); only a
 * failure to start (e.g. ENOENT) rejects. A timeout kills the child with SIGKILL and resolves
 * with `signal: 'SIGKILL'`.
 */
export async function run (cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return await new Promise<RunResult>((resolve, reject) => {
    execFile(cmd, args, {
      cwd: opts.cwd,
      env: opts.env,
      timeout: opts.timeoutMs ?? 60_000,
      killSignal: 'SIGKILL',
      maxBuffer: 64 * 1024 * 1024,
      encoding: 'utf8',
      signal: opts.signal
    }, (err, stdout, stderr) => {
      if (err === null) {
        resolve({ code: 0, signal: null, stdout, stderr })
        return
      }
      // Exec errors carry a numeric exit code or a signal; a string code (ENOENT, EACCES) means the command never ran.
      const e = err as NodeJS.ErrnoException & { code?: number | string | null, signal?: NodeJS.Signals | null }
      if (typeof e.code === 'string' || e.name === 'AbortError') {
        reject(err)
        return
      }
      resolve({ code: typeof e.code === 'number' ? e.code : null, signal: e.signal ?? null, stdout, stderr })
    })
  })
}

/**
 * SIGTERM, SIGKILL after 5 s, and wait for the exit. A child unref'd so it never holds the
 * process open is held while it is waited for.
 */
export async function stopChild (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.ref()
  child.kill('SIGTERM')
  const escalate = setTimeout(() => child.kill('SIGKILL'), 5000)
  try {
    await exited
  } finally {
    clearTimeout(escalate)
    child.unref()
  }
}
