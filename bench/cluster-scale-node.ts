/**
 * One router-only node for bench/cluster-scale.ts: the same P2P router and key set as the scale
 * test's node (test/scale/node.ts), driven by JSON-line commands on stdin, because that node
 * cannot add a key on command and only reports at its status ticks, which is too coarse to time
 * a delta that crosses the cluster in milliseconds.
 *
 *   node dist/bench/cluster-scale-node.js '<json ScaleBenchNodeConfig>'
 *
 * stdin commands (one JSON object a line) and the stdout lines they cause:
 *   {"cmd":"status","id":N}               -> {"event":"status","id":N,...}
 *   {"cmd":"watch","id":N,"keys":[..]}     -> {"event":"watching","id":N}, later {"event":"seen","id":N,"t":ms,"via":..}
 *   {"cmd":"add","id":N,"keys":[..]}       -> {"event":"added","id":N,"t":ms}
 *   {"cmd":"memory","id":N[,"snapshot":path][,"gc":true]} -> {"event":"memory","id":N,"usage":..,"spaces":..}
 * Times are CLOCK_MONOTONIC milliseconds (process.hrtime), which every process on the machine
 * shares, so the orchestrator can subtract one node's time from another's.
 * SIGTERM stops the router gracefully (goodbye) and exits.
 */
import { createInterface } from 'node:readline'
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8'
import { fullCollection, startHeapTrimmer } from '../src/observability/heap-trim.js'
import { createLogger } from '../src/observability/logger.js'
import { staticBootstrapper } from '../src/routing/bootstrap/static.js'
import { createP2PRouter, type P2PRouter } from '../src/routing/p2p/index.js'
import { nodeKeys } from '../test/scale/keys.js'

export interface ScaleBenchNodeConfig {
  index: number
  host: string
  port: number
  /** Holds private.key (pre-created by the orchestrator so peer ids are known up front). */
  dataDir: string
  /** Static bootstrap multiaddrs (with /p2p/<id>). */
  peers: string[]
  /** How many keys this node advertises from the start (nodeKeys(index, keys), as the scale test). */
  keys: number
  logLevel?: string
}

interface Watch {
  id: number
  keys: string[]
}

/**
 * A watched key arrives in a pushed delta (seen through the inbound hook) or in a pull a
 * heartbeat or a gap caused (no hook there, so a poll, only while a watch is open).
 */
const FALLBACK_POLL_MS = 5

function monotonicMs (): number {
  return Number(process.hrtime.bigint()) / 1e6
}

async function visible (router: P2PRouter, key: string): Promise<boolean> {
  for await (const _ of router.lookup(key)) return true
  return false
}

async function main (): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as ScaleBenchNodeConfig
  const log = createLogger({ level: (cfg.logLevel ?? 'warn') as 'warn' })
  const print = (line: object): void => { process.stdout.write(JSON.stringify(line) + '\n') }
  const watches = new Map<number, Watch>()
  let checking = false
  let rerun: 'push' | 'pull' | undefined
  let poller: NodeJS.Timeout | undefined

  const check = (via: 'push' | 'pull'): void => {
    if (watches.size === 0) return
    // lookup() is async: a push applied while a check is half way must get a check of its own.
    if (checking) {
      rerun = rerun === 'push' ? 'push' : via
      return
    }
    checking = true
    void (async () => {
      for (const w of [...watches.values()]) {
        let all = true
        for (const key of w.keys) {
          if (!await visible(router, key)) { all = false; break }
        }
        if (all) {
          watches.delete(w.id)
          print({ event: 'seen', id: w.id, t: monotonicMs(), via })
        }
      }
    })().finally(() => {
      checking = false
      if (watches.size === 0 && poller !== undefined) {
        clearInterval(poller)
        poller = undefined
      }
      const again = rerun
      rerun = undefined
      if (again !== undefined) check(again)
    })
  }

  const router = await createP2PRouter({ log }, {
    listen: { host: cfg.host, port: cfg.port },
    dataDir: cfg.dataDir,
    secretPath: '',
    registryAddress: `${cfg.host}:5000`,
    bootstrapper: staticBootstrapper(cfg.peers),
    hooks: {
      // Called before a pushed frame is applied, and the frame is applied synchronously right
      // after, so a microtask queued here sees the index with the frame in it.
      dropInbound: () => {
        if (watches.size > 0) queueMicrotask(() => { check('push') })
        return false
      }
    }
  })
  router.replaceAll(nodeKeys(cfg.index, cfg.keys))
  await router.start()
  // As `spegel registry` runs it, so an idle reading measures what production holds.
  startHeapTrimmer({ log })
  print({ event: 'started', index: cfg.index, peerId: router.peerId, t: monotonicMs() })

  const lines = createInterface({ input: process.stdin })
  lines.on('line', (line) => {
    let cmd: { cmd?: string, id?: number, keys?: string[] }
    try {
      cmd = JSON.parse(line) as typeof cmd
    } catch {
      process.stderr.write(`bad command: ${line}\n`)
      return
    }
    const id = cmd.id ?? 0
    switch (cmd.cmd) {
      case 'status': {
        const s = router.status()
        print({
          event: 'status',
          id,
          ready: s.isReady,
          peers: s.peers,
          records: s.records,
          origins: router.origins().length,
          keys: s.keys,
          ownKeys: s.ownKeys,
          counters: s.counters,
          rssBytes: process.memoryUsage.rss(),
          heapUsedBytes: process.memoryUsage().heapUsed
        })
        return
      }
      case 'watch': {
        watches.set(id, { id, keys: cmd.keys ?? [] })
        print({ event: 'watching', id })
        // Pulls have no hook: a short poll while a watch is open catches what a pull brings.
        poller ??= setInterval(() => { check('pull') }, FALLBACK_POLL_MS)
        check('pull')
        return
      }
      case 'memory': {
        // Where the RSS goes: V8's spaces (committed is what the process holds), and with
        // `snapshot` a heap snapshot written to that path for a closer look.
        const { snapshot, gc } = cmd as { snapshot?: string, gc?: boolean }
        if (snapshot !== undefined) writeHeapSnapshot(snapshot)
        if (gc === true) fullCollection()
        print({
          event: 'memory',
          id,
          usage: process.memoryUsage(),
          spaces: Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, { used: s.space_used_size, committed: s.space_size }]))
        })
        return
      }
      case 'add': {
        const t = monotonicMs()
        router.advertise(cmd.keys ?? [])
        print({ event: 'added', id, t })
        return
      }
      default:
        process.stderr.write(`unknown command: ${line}\n`)
    }
  })

  const stop = (): void => {
    if (poller !== undefined) clearInterval(poller)
    lines.close()
    router.stop().then(() => { process.exit(0) }, (err: unknown) => {
      process.stderr.write(`stop failed: ${String(err)}\n`)
      process.exit(1)
    })
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

main().catch((err: unknown) => {
  process.stderr.write(`scale bench node failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
