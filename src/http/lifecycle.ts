import { once } from 'node:events'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer as createNetServer, type AddressInfo } from 'node:net'

/** A listen address as configured: empty host means every interface; IPv6 may be bracketed. */
export interface ListenAddress {
  readonly host: string
  readonly port: number
}

/** Listens on `address`; rejects with the listen error (EADDRINUSE, EACCES...). */
export async function listen (server: Server, address: ListenAddress): Promise<AddressInfo> {
  const host = address.host === '' ? undefined : address.host.replace(/^\[(.*)\]$/, '$1')
  // The server listens with SO_REUSEPORT (several acceptors, server.ts), which another process of
  // the same user could share without an error: a plain bind first makes a port in use fail.
  if (address.port !== 0) await probeBind(address.port, host)
  server.listen(address.port, host)
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([err]) => { throw err as Error })
  ])
  return server.address() as AddressInfo
}

async function probeBind (port: number, host: string | undefined): Promise<void> {
  const probe = createNetServer()
  probe.listen({ port, ...(host === undefined ? {} : { host }), exclusive: true })
  try {
    await Promise.race([
      once(probe, 'listening'),
      once(probe, 'error').then(([err]) => { throw err as Error })
    ])
  } finally {
    if (probe.listening) await new Promise<void>((resolve) => { probe.close(() => { resolve() }) })
  }
}

/** `host:port` of a listening server (IPv6 bracketed), for log lines and the web page. */
export function addressText (server: Server): string {
  const address = server.address()
  if (address === null || typeof address === 'string') return String(address)
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`
}

export interface CloseOptions {
  /** How long requests in flight may take to finish before their connections are cut. */
  graceMs: number
}

export interface CloseResult {
  /** True when requests were still running at the deadline and their connections were destroyed. */
  readonly isForced: boolean
}

/** Idle keep-alive connections are closed this often while requests finish. */
const IDLE_SWEEP_MS = 100

/**
 * Stops accepting connections, closes idle ones, lets requests in flight finish for up to
 * `graceMs`, then destroys the connections still open. Without the deadline one multi-GiB
 * blob stream to a slow reader holds the process until the orchestrator's SIGKILL, and then
 * nothing else (the router's goodbye) gets to run either.
 */
export async function closeGracefully (server: Server, options: CloseOptions): Promise<CloseResult> {
  // Responses of requests that arrive meanwhile on kept-alive connections close their connection.
  const noKeepAlive = (_req: IncomingMessage, res: ServerResponse): void => { res.shouldKeepAlive = false }
  server.prependListener('request', noKeepAlive)
  const closed = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  server.closeIdleConnections()
  // A connection turns idle when its last response ends; close it then, not at the keep-alive timeout.
  const sweep = setInterval(() => { server.closeIdleConnections() }, IDLE_SWEEP_MS)
  sweep.unref()
  let deadline: NodeJS.Timeout | undefined
  const expired = new Promise<boolean>((resolve) => {
    deadline = setTimeout(() => { resolve(true) }, options.graceMs)
    deadline.unref()
  })
  try {
    const isForced = await Promise.race([closed.then(() => false), expired])
    if (isForced) {
      server.closeAllConnections()
      await closed
    }
    return { isForced }
  } finally {
    clearInterval(sweep)
    clearTimeout(deadline)
    server.removeListener('request', noKeepAlive)
  }
}
