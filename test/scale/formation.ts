/**
 * How fast an index forms, in one process: N routers on 127.0.3.x start 0 ms apart, each
 * bootstrapping from 3 random earlier ones and advertising one key. Prints when every router
 * held every record, when every router's lookups offered every other router (which needs each
 * registry address proven by a connection), the process CPU time, and how many dials proving
 * addresses cost. Not a test; one JSON line.
 *
 *   npx node dist/test/scale/formation.js [nodes=12]
 */
import { createLogger } from '../../src/observability/logger.js'
import { staticBootstrapper } from '../../src/routing/bootstrap/static.js'
import { createP2PRouter, type P2PRouter } from '../../src/routing/p2p/index.js'

const n = Number(process.argv[2] ?? 12)
const log = createLogger({ level: 'silent' })
const routers: P2PRouter[] = []
for (let i = 0; i < n; i++) {
  const host = `127.0.3.${i + 1}`
  const earlier = routers.map((r) => r.multiaddrs()[0] ?? '').sort(() => Math.random() - 0.5).slice(0, 3)
  const router = await createP2PRouter({ log }, { listen: { host, port: 0 }, dataDir: '', secretPath: '', registryAddress: `${host}:5000`, bootstrapper: staticBootstrapper(earlier) })
  await router.start()
  router.advertise([`key-${i}`])
  routers.push(router)
}
const started = Date.now()
const cpuAtStart = process.cpuUsage()
const holdsAll = (): boolean => routers.every((r) => routers.every((o) => o === r || r.knownVersion(o.peerId) !== undefined))
const offersAll = (): boolean => routers.every((r, i) => routers.every((_, j) => i === j || r.holders(`key-${j}`) === 1))
let recordsMs: number | undefined
while (!offersAll() && Date.now() - started < 120_000) {
  if (recordsMs === undefined && holdsAll()) recordsMs = Date.now() - started
  await new Promise((resolve) => setTimeout(resolve, 50))
}
const cpu = process.cpuUsage(cpuAtStart)
console.log(JSON.stringify({
  nodes: n,
  isComplete: offersAll(),
  allRecordsMs: recordsMs ?? Date.now() - started,
  allOfferedMs: Date.now() - started,
  cpuMs: Math.round((cpu.user + cpu.system) / 1000),
  proofDials: routers.reduce((a, r) => a + r.status().counters.proofDials, 0),
  connections: routers.map((r) => r.status().peers)
}))
await Promise.all(routers.map(async (r) => { await r.stop() }))
