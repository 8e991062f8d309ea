// Test "nodes" as network namespaces: each has its own eth0 and address, they reach each other
// through a bridge that lives in a namespace of its own, and nothing is added to the machine's
// own network namespace (no address, route, link or sysctl). Processes are started inside a
// node with `nsenter --net`, which switches the network namespace only: `ip netns exec` also
// remounts /sys for the namespace, which hides /sys/fs/cgroup, and runc then refuses to create
// containers ("no cgroup mount found in mountinfo").
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { accessSync, constants as fsConstants } from 'node:fs'
import path from 'node:path'
import { run, type RunOptions, type RunResult } from './net.js'

const NETNS_DIR = '/run/netns'
/** A /24 that exists only inside the namespaces created here; nodes get .11, .12, ... */
const DEFAULT_SUBNET = '10.77.0'

export interface NetnsNode {
  /** Namespace name (`ip netns list`). */
  readonly name: string
  /** The node's IPv4 address on its eth0, as Kubernetes' status.hostIP. */
  readonly ip: string
  /** `/run/netns/<name>`: for `nsenter --net=` and `ctr run --with-ns network:`. */
  readonly nsPath: string
  /** `nsenter --net=<nsPath> cmd args...` to completion (resolves on non-zero exits too). */
  exec: (cmd: string, args: readonly string[], opts?: RunOptions) => Promise<RunResult>
  /** argv prefix that runs a command inside this node's network namespace. */
  wrap: (cmd: string, args: readonly string[]) => string[]
  /** One HTTP request from inside the namespace (a short-lived node process); never throws for HTTP errors. */
  http: (url: string, opts?: { method?: string, headers?: Record<string, string>, timeoutMs?: number }) => Promise<NsHttpResponse>
  /**
   * Forwards TCP connections to `listen` on to `target`, inside the namespace: a userspace
   * kube-proxy for a NodePort (or a CNI portmap for a hostPort). Resolves once listening.
   */
  forwardTcp: (listen: { host: string, port: number }, target: { host: string, port: number }) => Promise<TcpForward>
}

export interface TcpForward {
  /** Connections accepted so far (read from the forwarder's own log). */
  connections: () => number
  close: () => Promise<void>
}

export interface NsHttpResponse {
  status: number
  headers: Record<string, string>
  body: Buffer
}

export interface TestNetwork {
  readonly nodes: readonly NetnsNode[]
  /** Kills whatever still runs in the namespaces, then deletes them (veths and bridge go with them). Safe to call twice. */
  dispose: () => Promise<void>
}

/** Why network namespaces cannot be made here, or undefined when they can. */
export function netnsSkipReason (): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux'
  if (process.getuid?.() !== 0) return 'network namespaces need root'
  for (const [bin, pkg] of [['ip', 'iproute2'], ['nsenter', 'util-linux']] as const) {
    if (findInPath(bin) === undefined) return `${bin} not found in PATH (apt-get install -y ${pkg})`
  }
  return undefined
}

/**
 * Creates `count` namespaces `<prefix>-1..count` wired to a bridge in `<prefix>-br`. The prefix
 * must be unique per test run (the default uses the pid), since namespace names are global.
 */
export async function createTestNetwork (count: number, opts: { prefix?: string, subnet?: string } = {}): Promise<TestNetwork> {
  const reason = netnsSkipReason()
  if (reason !== undefined) throw new Error(`cannot create network namespaces: ${reason}`)
  if (!Number.isInteger(count) || count < 1 || count > 200) throw new Error(`node count ${count} out of range 1..200`)
  const prefix = opts.prefix ?? `spgt${process.pid}`
  // Linux interface names stay in the namespaces, but namespace names must fit in a path; keep them short.
  if (!/^[a-z0-9-]{1,24}$/.test(prefix)) throw new Error(`netns prefix ${prefix} invalid: [a-z0-9-]{1,24}`)
  const subnet = opts.subnet ?? DEFAULT_SUBNET
  const bridge = `${prefix}-br`
  const created: string[] = []
  const network = new Network(created)
  trackForExit(network)
  try {
    await ip(['netns', 'add', bridge])
    created.push(bridge)
    await ip(['-n', bridge, 'link', 'add', 'br0', 'type', 'bridge'])
    await ip(['-n', bridge, 'link', 'set', 'br0', 'up'])
    for (let i = 1; i <= count; i++) {
      const name = `${prefix}-${i}`
      const addr = `${subnet}.${10 + i}`
      await ip(['netns', 'add', name])
      created.push(name)
      // Both ends are created straight inside their namespaces, so no interface ever appears
      // in the machine's own namespace, not even for a moment.
      await ip(['-n', name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `veth${i}`, 'netns', bridge])
      await ip(['-n', bridge, 'link', 'set', `veth${i}`, 'master', 'br0', 'up'])
      await ip(['-n', name, 'addr', 'add', `${addr}/24`, 'dev', 'eth0'])
      await ip(['-n', name, 'link', 'set', 'eth0', 'up'])
      await ip(['-n', name, 'link', 'set', 'lo', 'up'])
      network.nodes.push(makeNode(name, addr))
    }
  } catch (err) {
    await network.dispose()
    throw err
  }
  return network
}

class Network implements TestNetwork {
  readonly nodes: NetnsNode[] = []
  readonly names: string[]
  #disposed = false

  constructor (names: string[]) {
    this.names = names
  }

  async dispose (): Promise<void> {
    if (this.#disposed) return
    this.#disposed = true
    untrack(this)
    const problems: string[] = []
    for (const name of [...this.names].reverse()) {
      // Only processes this test started can be in these namespaces (containerd, its shims,
      // containers); whatever survived the orderly shutdown is killed so the namespace dies.
      for (const pid of await pidsIn(name)) {
        try {
          process.kill(pid, 'SIGKILL')
          problems.push(`killed pid ${pid} left in ${name}`)
        } catch {
          // gone in the meantime
        }
      }
      const res = await run('ip', ['netns', 'del', name], { timeoutMs: 10_000 })
      if (res.code !== 0 && !/No such file/.test(res.stderr)) problems.push(`ip netns del ${name}: ${res.stderr.trim()}`)
    }
    if (problems.some((p) => p.startsWith('ip netns del'))) throw new Error(`network cleanup failed: ${problems.join('; ')}`)
  }

  /** Synchronous last resort for process exit: kill and delete without waiting on anything. */
  disposeSync (): void {
    if (this.#disposed) return
    this.#disposed = true
    for (const name of [...this.names].reverse()) {
      try {
        const out = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        for (const pid of out.split('\n').map(Number).filter((n) => n > 0)) {
          try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
        }
        execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' })
      } catch {
        // exiting anyway; nothing more can be done here
      }
    }
  }
}

function makeNode (name: string, ip: string): NetnsNode {
  const nsPath = path.join(NETNS_DIR, name)
  const wrap = (cmd: string, args: readonly string[]): string[] => ['nsenter', `--net=${nsPath}`, '--', cmd, ...args]
  return {
    name,
    ip,
    nsPath,
    wrap,
    exec: async (cmd, args, opts) => {
      const [bin, ...rest] = wrap(cmd, args)
      return await run(bin!, rest, opts)
    },
    http: async (url, opts = {}) => await nsHttp(wrap, url, opts),
    forwardTcp: async (listen, target) => await startForward(wrap, listen, target)
  }
}

// A TCP relay; prints "listening" once bound and one "conn" line per accepted connection.
const FORWARD_SCRIPT = `
import net from 'node:net'
const [lhost, lport, thost, tport] = process.argv.slice(1)
const server = net.createServer((down) => {
  process.stdout.write('conn\\n')
  const up = net.connect(Number(tport), thost)
  const close = () => { down.destroy(); up.destroy() }
  down.on('error', close).on('close', close)
  up.on('error', close).on('close', close)
  down.pipe(up).pipe(down)
})
server.listen(Number(lport), lhost, () => process.stdout.write('listening\\n'))
process.on('SIGTERM', () => { server.close(); process.exit(0) })
`

async function startForward (
  wrap: NetnsNode['wrap'],
  listen: { host: string, port: number },
  target: { host: string, port: number }
): Promise<TcpForward> {
  const [bin, ...args] = wrap(process.execPath, ['--input-type=module', '-e', FORWARD_SCRIPT, listen.host, String(listen.port), target.host, String(target.port)])
  const child = spawn(bin!, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d })
  const exited = once(child, 'exit')
  const listening = new Promise<void>((resolve, reject) => {
    const check = (): void => { if (out.includes('listening')) resolve() }
    child.stdout.on('data', check)
    void exited.then(() => reject(new Error(`forwarder ${listen.host}:${listen.port} -> ${target.host}:${target.port} exited: ${err.trim()}`)))
  })
  const timeout = AbortSignal.timeout(10_000)
  try {
    await Promise.race([listening, once(timeout, 'abort').then(() => { throw new Error(`forwarder ${listen.host}:${listen.port} did not listen within 10 s: ${err.trim()}`) })])
  } catch (e) {
    child.kill('SIGKILL')
    throw e
  }
  // close(), or the namespace's disposal at the latest (it kills everything inside), ends it.
  return {
    connections: () => out.split('\n').filter((l) => l === 'conn').length,
    close: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      await exited
    }
  }
}

// Runs in a child node process inside the namespace; prints one JSON line.
const HTTP_SCRIPT = `
const [url, method, headersJson, timeoutMs] = process.argv.slice(1)
try {
  const res = await fetch(url, { method, headers: JSON.parse(headersJson), redirect: 'manual', signal: AbortSignal.timeout(Number(timeoutMs)) })
  const body = Buffer.from(await res.arrayBuffer())
  process.stdout.write(JSON.stringify({ status: res.status, headers: Object.fromEntries(res.headers), body: body.toString('base64') }))
} catch (err) {
  process.stdout.write(JSON.stringify({ error: String(err?.cause?.message ?? err?.message ?? err) }))
}
`

async function nsHttp (
  wrap: NetnsNode['wrap'],
  url: string,
  opts: { method?: string, headers?: Record<string, string>, timeoutMs?: number }
): Promise<NsHttpResponse> {
  const timeoutMs = opts.timeoutMs ?? 10_000
  const [bin, ...args] = wrap(process.execPath, ['--input-type=module', '-e', HTTP_SCRIPT, url, opts.method ?? 'GET', JSON.stringify(opts.headers ?? {}), String(timeoutMs)])
  const res = await run(bin!, args, { timeoutMs: timeoutMs + 10_000 })
  if (res.code !== 0) throw new Error(`HTTP ${url} from a namespace failed (${res.code ?? res.signal}): ${res.stderr.trim()}`)
  const parsed = JSON.parse(res.stdout) as { status?: number, headers?: Record<string, string>, body?: string, error?: string }
  if (parsed.error !== undefined || parsed.status === undefined) throw new Error(`HTTP ${url}: ${parsed.error ?? 'no status'}`)
  return { status: parsed.status, headers: parsed.headers ?? {}, body: Buffer.from(parsed.body ?? '', 'base64') }
}

async function ip (args: string[]): Promise<void> {
  const res = await run('ip', args, { timeoutMs: 10_000 })
  if (res.code !== 0) throw new Error(`ip ${args.join(' ')} failed (${res.code ?? res.signal}): ${res.stderr.trim()}`)
}

async function pidsIn (name: string): Promise<number[]> {
  const res = await run('ip', ['netns', 'pids', name], { timeoutMs: 10_000 })
  if (res.code !== 0) return []
  return res.stdout.split('\n').map(Number).filter((n) => Number.isInteger(n) && n > 0)
}

function findInPath (bin: string): string | undefined {
  for (const d of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (d === '') continue
    try {
      accessSync(path.join(d, bin), fsConstants.X_OK)
      return path.join(d, bin)
    } catch {
      // not in this PATH entry
    }
  }
  return undefined
}

// Namespaces outlive the process that made them; a test that crashes or is interrupted must
// not leave them (nor what runs inside them) behind.
const live = new Set<Network>()
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

function onExit (): void {
  for (const n of live) n.disposeSync()
  live.clear()
}

function onSignal (signal: NodeJS.Signals): void {
  onExit()
  process.off('exit', onExit)
  for (const s of SIGNALS) process.off(s, onSignal)
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
}

function trackForExit (n: Network): void {
  if (live.size === 0) {
    process.on('exit', onExit)
    for (const s of SIGNALS) process.on(s, onSignal)
  }
  live.add(n)
}

function untrack (n: Network): void {
  live.delete(n)
  if (live.size === 0) {
    process.off('exit', onExit)
    for (const s of SIGNALS) process.off(s, onSignal)
  }
}
