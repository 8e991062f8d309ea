#!/usr/bin/env node
import { runCli } from './cli/program.js'
import { runRegistry } from './cli/registry.js'
import { runDoctor } from './cli/doctor.js'
import { runConfiguration } from './cli/configuration.js'
import { runCleanup, runCleanupWait } from './cli/cleanup.js'

/**
 * Composition root and the only place that exits the process. The first SIGINT/SIGTERM
 * starts a graceful shutdown; a second one stops waiting for in-flight requests.
 */
const shutdown = new AbortController()
let signalsReceived = 0
const onSignal = (): void => {
  signalsReceived++
  if (signalsReceived === 1) shutdown.abort()
  else process.exit(1)
}
process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)
// A failed promise somewhere (a broken peer, a dropped containerd call) must not take the
// node down; it is logged to stderr and the process carries on.
process.on('unhandledRejection', (reason) => {
  process.stderr.write(JSON.stringify({ level: 'ERROR', time: new Date().toISOString(), msg: 'unhandled rejection', err: String((reason as Error)?.stack ?? reason) }) + '\n')
})

const code = await runCli(process.argv.slice(2), process.env, {
  registry: (config) => runRegistry(config, { shutdown: shutdown.signal }),
  doctor: (config) => runDoctor(config),
  configuration: (config) => runConfiguration(config),
  cleanup: (config) => runCleanup(config, { shutdown: shutdown.signal }),
  cleanupWait: (config) => runCleanupWait(config, { shutdown: shutdown.signal })
})
process.exitCode = code
process.removeListener('SIGINT', onSignal)
process.removeListener('SIGTERM', onSignal)
// Open handles (a pending gRPC dial, the log destination) must not keep a stopped node alive.
setTimeout(() => { process.exit(code) }, 2000).unref()
