/**
 * One node of the scale test: a P2P router with a static bootstrap list and a fake key set,
 * printing JSON lines on stdout (`started`, then `status` every `statusIntervalMs`). SIGTERM
 * stops it gracefully (goodbye); the orchestrator SIGKILLs it to simulate a crash.
 *
 *   node dist/test/scale/node.js '<json config>'   (see NodeConfig)
 */
import { createLogger } from '../../src/observability/logger.js'
import { staticBootstrapper } from '../../src/routing/bootstrap/static.js'
import { createP2PRouter } from '../../src/routing/p2p/index.js'
import { nodeKeys } from './keys.js'

export interface NodeConfig {
  index: number
  host: string
  port: number
  /** Holds private.key (the orchestrator may pre-create it so peer ids are known up front). */
  dataDir: string
  /** Static bootstrap multiaddrs (with /p2p/<id>). */
  peers: string[]
  /** Keys this node advertises (distinct per node). */
  keys: number
  statusIntervalMs: number
  /** Whose first key to look up on every status tick (probeFound shows the lookup works). */
  probeIndex: number
  heartbeatIntervalMs?: number
  expiryMs?: number
  pullIntervalMs?: number
  logLevel?: string
}

async function main (): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as NodeConfig
  const log = createLogger({ level: (cfg.logLevel ?? 'warn') as 'warn' })
  const router = await createP2PRouter({ log }, {
    listen: { host: cfg.host, port: cfg.port },
    dataDir: cfg.dataDir,
    secretPath: '',
    registryAddress: `${cfg.host}:5000`,
    bootstrapper: staticBootstrapper(cfg.peers),
    ...(cfg.heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs: cfg.heartbeatIntervalMs }),
    ...(cfg.expiryMs === undefined ? {} : { expiryMs: cfg.expiryMs }),
    ...(cfg.pullIntervalMs === undefined ? {} : { pullIntervalMs: cfg.pullIntervalMs })
  })
  const keys = nodeKeys(cfg.index, cfg.keys)
  router.replaceAll(keys)
  await router.start()
  const print = (line: object): void => { process.stdout.write(JSON.stringify(line) + '\n') }
  print({ event: 'started', index: cfg.index, peerId: router.peerId, multiaddrs: router.multiaddrs(), t: Date.now() })

  // A probe key looked up each status tick shows lookups stay local reads.
  const probe = nodeKeys(cfg.probeIndex, 1)[0] ?? ''
  const timer = setInterval(() => {
    const s = router.status()
    const started = process.hrtime.bigint()
    let found = 0
    void (async () => {
      for await (const _ of router.lookup(probe)) found++
      print({
        event: 'status',
        index: cfg.index,
        t: Date.now(),
        ready: s.isReady,
        reason: s.reason,
        peers: s.peers,
        records: s.records,
        keys: s.keys,
        origins: router.origins(),
        // Live records whose registry address this node has not proven yet (lookups skip them).
        unproven: router.peers().filter((p) => p.isAlive && !p.isAddressProven).map((p) => p.id),
        counters: s.counters,
        refused: s.refused,
        lookupNs: Number(process.hrtime.bigint() - started),
        probeFound: found,
        rssBytes: process.memoryUsage.rss(),
        heapUsedBytes: process.memoryUsage().heapUsed,
        cpu: process.cpuUsage()
      })
    })()
  }, cfg.statusIntervalMs)

  const stop = (): void => {
    clearInterval(timer)
    router.stop().then(() => { process.exit(0) }, (err: unknown) => {
      process.stderr.write(`stop failed: ${String(err)}\n`)
      process.exit(1)
    })
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

main().catch((err: unknown) => {
  process.stderr.write(`scale node failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
