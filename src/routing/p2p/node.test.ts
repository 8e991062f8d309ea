import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'

/**
 * Two routers in a child process join, then stop. Once they have stopped, nothing of theirs may
 * hold the event loop: the child lists its active handles 50 ms later and must find only the
 * timer doing the listing (libp2p's address manager leaves a 1 s timer when its transports stop,
 * which P2PNode.stop cancels; redial, check and backoff timers end with stop()).
 */
const child = `
const base = ${JSON.stringify(new URL('../..', import.meta.url).href)}
const { createP2PRouter } = await import(base + 'routing/p2p/index.js')
const { staticBootstrapper } = await import(base + 'routing/bootstrap/static.js')
const { createLogger } = await import(base + 'observability/logger.js')
const log = createLogger({ level: 'silent' })
const start = async (host, peers) => {
  const r = await createP2PRouter({ log }, { listen: { host, port: 0 }, dataDir: '', secretPath: '', registryAddress: host + ':5000', bootstrapper: staticBootstrapper(peers), heartbeatIntervalMs: 100, expiryMs: 2000, pullIntervalMs: 500 })
  await r.start()
  return r
}
const a = await start('127.0.0.61', [])
const b = await start('127.0.0.62', a.multiaddrs())
const deadline = Date.now() + 20000
while (!(a.origins().includes(b.peerId) && b.origins().includes(a.peerId))) {
  if (Date.now() > deadline) throw new Error('the routers did not join')
  await new Promise((resolve) => setTimeout(resolve, 20))
}
await a.stop()
await b.stop()
setTimeout(() => { console.log(JSON.stringify(process.getActiveResourcesInfo())) }, 50)
`

describe('P2PNode.stop', () => {
  it('leaves no timer that keeps the process of a stopped router alive', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', child], { timeout: 60_000 })
    const handles = JSON.parse(stdout.trim().split('\n').at(-1) ?? '[]') as string[]
    assert.deepEqual(handles.filter((h) => h === 'Timeout'), ['Timeout'], `only the listing timer is left: ${JSON.stringify(handles)}`)
  })
})
