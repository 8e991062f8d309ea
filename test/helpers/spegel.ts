import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { once } from 'node:events'
import { freePort, httpRequest } from './net.js'
import { waitFor } from './wait.js'

const here = path.dirname(fileURLToPath(import.meta.url))
/** dist/test/helpers -> dist/src/main.js */
export const MAIN_JS = path.resolve(here, '../../src/main.js')
/** The one-file build the image runs (scripts/bundle.mjs, part of `npm run build`). */
export const BUNDLE_JS = path.resolve(here, '../../src/cli/spegel.bundle.js')

/** A wait's error with the node's last /readyz answer, which says why it is (not) ready. */
function withLastAnswer (err: unknown, last: string): Error {
  const message = err instanceof Error ? err.message : String(err)
  return new Error(`${message}; last /readyz answer: ${last === '' ? 'none' : last.slice(0, 2000)}`, { cause: err })
}

export interface LogLine {
  readonly level?: string
  readonly msg?: string
  readonly event?: string
  readonly [key: string]: unknown
}

export interface SpegelNodeInit {
  containerdSock: string
  /** Pass the socket flag (default true); false lets the node discover well-known paths. */
  passSocketFlag?: boolean
  contentPath?: string
  host?: string
  extraArgs?: string[]
  env?: NodeJS.ProcessEnv
  /** Run as this user through setpriv (e.g. `nobody`). */
  runAsUser?: string
  logLevel?: string
  /** Bootstrap flags; default `--bootstrap-kind static` with no peers (a one-node cluster). */
  bootstrapArgs?: string[]
  /** Fixed ports (for restarts on the same address); free ones are picked otherwise. */
  registryPort?: number
  routerPort?: number
  metricsPort?: number
  /**
   * Run the image's bundle (dist/src/cli/spegel.bundle.js and its chunks) instead of the modules,
   * whatever SPEGEL_TEST_BUNDLE says: for code whose loading differs in the bundle.
   */
  bundle?: boolean
  /** The node binary to run; process.execPath by default (benchmarks give each node a copy). */
  nodeBinary?: string
}

export interface SpegelNode {
  readonly host: string
  readonly registryPort: number
  readonly routerPort: number
  readonly registryUrl: string
  readonly metricsUrl: string
  readonly process: ChildProcess
  readonly logs: LogLine[]
  readonly stderrText: () => string
  readyz(): Promise<{ status: number, body: string }>
  waitReady(timeoutMs?: number): Promise<void>
  /** Waits for a 503 whose reason matches `reason` (any 503 when omitted); returns the reason. */
  waitNotReady(reason?: RegExp, timeoutMs?: number): Promise<string>
  waitForLog(predicate: (line: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>
  stop(): Promise<number | null>
  /** True while the same OS process is running (the node must never need a restart). */
  isAlive(): boolean
}

export async function startSpegel (init: SpegelNodeInit): Promise<SpegelNode> {
  const host = init.host ?? '127.0.0.1'
  const registryPort = init.registryPort ?? await freePort(host)
  const metricsPort = init.metricsPort ?? await freePort(host)
  const routerPort = init.routerPort ?? await freePort(host)
  // For profiling a benchmark's nodes: node refuses --cpu-prof in NODE_OPTIONS.
  const profDir = process.env.SPEGEL_TEST_CPU_PROF_DIR
  // And for trying V8 flags that NODE_OPTIONS refuses (--optimize-for-size): space-separated.
  const nodeArgs = (process.env.SPEGEL_TEST_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')
  // Benchmarks measure what the image runs; tests run the modules, so a failure names the file.
  const entry = init.bundle === true || process.env.SPEGEL_TEST_BUNDLE === '1' ? BUNDLE_JS : MAIN_JS
  const args = [
    ...(profDir === undefined || profDir === '' ? [] : ['--cpu-prof', `--cpu-prof-dir=${profDir}`]),
    ...nodeArgs,
    entry, 'registry',
    '--registry-addr', `${host}:${registryPort}`,
    '--metrics-addr', `${host}:${metricsPort}`,
    '--router-addr', `${host}:${routerPort}`,
    ...(init.bootstrapArgs ?? ['--bootstrap-kind', 'static']),
    '--log-level', init.logLevel ?? 'DEBUG',
    '--containerd-content-path', init.contentPath ?? '',
    ...(init.passSocketFlag === false ? [] : ['--containerd-sock', init.containerdSock]),
    ...(init.extraArgs ?? [])
  ]
  const nodeBinary = init.nodeBinary ?? process.execPath
  let command = nodeBinary
  let commandArgs = args
  if (init.runAsUser !== undefined) {
    command = 'setpriv'
    commandArgs = ['--reuid', init.runAsUser, '--regid', 'nogroup', '--clear-groups', nodeBinary, ...args]
  }
  const child = spawn(command, commandArgs, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SPEGEL_BASIC_AUTH_DIR: '/nonexistent-basic-auth', ...init.env }
  })
  const killOnExit = (): void => { child.kill('SIGKILL') }
  process.once('exit', killOnExit)
  const logs: LogLine[] = []
  let stderr = ''
  let partial = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk
    partial += chunk
    const lines = partial.split('\n')
    partial = lines.pop() ?? ''
    for (const line of lines) {
      if (line.trim() === '') continue
      try {
        logs.push(JSON.parse(line) as LogLine)
      } catch {
        logs.push({ msg: line })
      }
    }
  })
  child.stdout?.resume()
  let exitCode: number | null | undefined
  child.once('exit', (code) => { exitCode = code; process.removeListener('exit', killOnExit) })

  const registryUrl = `http://${host}:${registryPort}`
  const metricsUrl = `http://${host}:${metricsPort}`
  const readyz = async (): Promise<{ status: number, body: string }> => {
    const res = await httpRequest(`${registryUrl}/readyz`, { method: 'GET' })
    return { status: res.status, body: res.body.toString('utf8') }
  }
  const node: SpegelNode = {
    host,
    registryPort,
    routerPort,
    registryUrl,
    metricsUrl,
    process: child,
    logs,
    stderrText: () => stderr,
    readyz,
    isAlive: () => exitCode === undefined,
    async waitReady (timeoutMs = 20_000) {
      let last = ''
      await waitFor(async () => {
        if (exitCode !== undefined) throw new Error(`spegel exited with ${String(exitCode)}: ${stderr.slice(-2000)}`)
        const r = await readyz()
        last = `${r.status} ${r.body}`
        return r.status === 200
      }, { timeoutMs, what: 'spegel /readyz to answer 200' }).catch((err: unknown) => { throw withLastAnswer(err, last) })
    },
    async waitNotReady (reason, timeoutMs = 20_000) {
      let last = ''
      return await waitFor(async () => {
        if (exitCode !== undefined) throw new Error(`spegel exited with ${String(exitCode)}: ${stderr.slice(-2000)}`)
        const r = await readyz()
        last = `${r.status} ${r.body}`
        return r.status === 503 && (reason === undefined || reason.test(r.body)) ? r.body : undefined
      }, { timeoutMs, what: `spegel /readyz to answer 503 ${reason?.source ?? ''}` }).catch((err: unknown) => { throw withLastAnswer(err, last) })
    },
    async waitForLog (predicate, what, timeoutMs = 20_000) {
      return await waitFor(() => logs.find(predicate), { timeoutMs, what: `log line: ${what}` })
    },
    async stop () {
      if (exitCode !== undefined) return exitCode
      child.kill('SIGTERM')
      const [code] = await once(child, 'exit') as [number | null]
      return code
    }
  }
  // The HTTP server starts before containerd is reached: wait for /livez only.
  try {
    await waitFor(async () => {
    if (exitCode !== undefined) throw new Error(`spegel exited with ${String(exitCode)}: ${stderr.slice(-2000)}`)
    try {
      return (await httpRequest(`${registryUrl}/livez`, { method: 'GET' })).status === 200
    } catch {
      return false
    }
    }, { timeoutMs: 60_000, what: 'spegel /livez' })
  } catch (err) {
    child.kill('SIGKILL')
    throw err
  }
  return node
}
