#!/usr/bin/env node

/**
 * Composition root and the only place that exits the process. The first SIGINT/SIGTERM
 * starts a graceful shutdown; a second one stops waiting for in-flight requests.
 *
 * The handlers go in before anything else is loaded: in a container this process is PID 1,
 * and the kernel drops a signal PID 1 has no handler for, so a pod deleted while the CLI was
 * still loading would otherwise wait out its whole grace period.
 */
/** How long the process may take to end by itself once the command has returned. */
const EXIT_GRACE_MS = 2000
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

// libuv runs every file open, stat and read on a pool of 4 threads by default. A node serving
// hundreds of downloads at once queues each small stat behind their 256 KiB reads; 16 threads
// keep the disk busy and the queue short, at ~64 KiB of stack each while idle. Read by libuv on
// its first pooled job, which has not happened yet here; an operator's own value wins.
process.env.UV_THREADPOOL_SIZE ??= '16'

const { runCli } = await import('./cli/program.js')
// Each command loads only its own modules: the init and cleanup containers (configuration,
// cleanup, cleanup-wait) then start in a fraction of the time and memory the registry needs
// for libp2p and gRPC.
const code = await runCli(process.argv.slice(2), process.env, {
  registry: async (config) => await (await import('./cli/registry.js')).runRegistry(config, { shutdown: shutdown.signal }),
  doctor: async (config) => await (await import('./cli/doctor.js')).runDoctor(config),
  configuration: async (config) => await (await import('./cli/configuration.js')).runConfiguration(config),
  cleanup: async (config) => await (await import('./cli/cleanup.js')).runCleanup(config, { shutdown: shutdown.signal }),
  cleanupWait: async (config) => await (await import('./cli/cleanup.js')).runCleanupWait(config, { shutdown: shutdown.signal })
})
process.exitCode = code
process.removeListener('SIGINT', onSignal)
process.removeListener('SIGTERM', onSignal)
// A clean shutdown closes everything, and the process ends by itself. Whatever is still open
// two seconds later is a leak: name it (so tests and operators see it) and exit anyway, because
// a stopped node kept alive waits out the pod's whole grace period before its SIGKILL.
setTimeout(() => {
  // Resources that keep the event loop alive (this unref'd timer is not among them); stdio shows as PipeWrap or TTYWrap.
  const handles = process.getActiveResourcesInfo()
  process.stderr.write(JSON.stringify({ level: 'WARN', time: new Date().toISOString(), event: 'exit_forced', handles, msg: 'handles still open after shutdown; exiting anyway' }) + '\n')
  process.exit(code)
}, EXIT_GRACE_MS).unref()
