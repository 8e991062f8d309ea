import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../observability/logger.js'
import { backoffDelayMs } from '../resilience/backoff.js'
import { ContainerdClient, grpc } from './client.js'
import { chooseSocket, diagnoseSocket, probeSocket, type SocketDiagnosis } from './diagnose.js'
import {
  BACKOFF_INITIAL_MS, BACKOFF_MAX_MS, HEALTH_CHECK_INTERVAL_MS, HEALTH_CHECK_TIMEOUT_MS, MIN_HEALTHY_SESSION_MS, SESSION_SETTLE_WARN_MS, STILL_DOWN_ALERT_MS,
  VERSION_TIMEOUT_MS
} from './constants.js'

export type ContainerdStateName = 'connecting' | 'connected' | 'unavailable' | 'stopped'

export interface ContainerdState {
  readonly name: ContainerdStateName
  readonly socketPath: string
  /** Short reason for /readyz when not connected. */
  readonly reason?: string
  readonly diagnosis?: SocketDiagnosis
  readonly version?: string
  readonly since: number
}

/**
 * Runs for as long as containerd stays reachable on one client; resolves or rejects when
 * the connection is lost (event stream dropped). The supervisor then reconnects with a new
 * client and calls it again, so nothing needs a process restart. It must settle soon after
 * `signal` aborts: the next session starts only then.
 */
export type SessionRunner = (client: ContainerdClient, signal: AbortSignal) => Promise<void>

/** What the supervisor runs while connected (the Store's index, in production). */
export interface SessionHandler {
  readonly run: SessionRunner
  /** The supervisor was stopped: release whatever outlives a session (timers). */
  readonly stopped?: () => void
}

export interface SupervisorComponents {
  log: Logger
  onStateChange?: (state: ContainerdState) => void
}

export interface SupervisorInit {
  socketPath: string
  /** The socket was set with --containerd-sock/CONTAINERD_SOCK: never search elsewhere. */
  isSocketExplicit: boolean
  namespace: string
  initialBackoffMs?: number
  maxBackoffMs?: number
  /** Sessions shorter than this keep the backoff growing (default MIN_HEALTHY_SESSION_MS). */
  minHealthySessionMs?: number
}

/**
 * Owns the connection to containerd: finds the socket, dials with backoff, diagnoses
 * failures (logged once per change of cause), runs the session while connected and
 * reconnects when containerd restarts.
 */
export class ContainerdSupervisor {
  private readonly log: Logger
  private readonly onStateChange?: (state: ContainerdState) => void
  private readonly init: Required<SupervisorInit>
  private handler: SessionHandler | undefined
  private currentState: ContainerdState
  private currentClient: ContainerdClient | undefined
  private controller: AbortController | undefined
  private loop: Promise<void> | undefined
  private wake: (() => void) | undefined
  private lastProblemKey: string | undefined
  private alertTimer: NodeJS.Timeout | undefined
  private chosenSocketLogged: string | undefined
  /** Why the last short-lived session ended, so a repeating failure is logged once. */
  private lastShortSessionReason: string | undefined
  private reconnectCount = 0

  constructor (components: SupervisorComponents, init: SupervisorInit) {
    this.log = components.log.child({ component: 'containerd' })
    this.onStateChange = components.onStateChange
    this.init = { initialBackoffMs: BACKOFF_INITIAL_MS, maxBackoffMs: BACKOFF_MAX_MS, minHealthySessionMs: MIN_HEALTHY_SESSION_MS, ...init }
    this.currentState = { name: 'connecting', socketPath: init.socketPath, reason: `containerd: connecting to ${init.socketPath}`, since: Date.now() }
  }

  /** Times containerd came back after being unavailable. */
  get reconnects (): number {
    return this.reconnectCount
  }

  /** Sets what runs while connected; one handler, set before start(). */
  onSession (handler: SessionHandler): void {
    if (this.handler !== undefined) throw new Error('containerd session handler already set')
    this.handler = handler
  }

  state (): ContainerdState {
    return this.currentState
  }

  /** The connected client, or undefined while containerd is unreachable. */
  client (): ContainerdClient | undefined {
    return this.currentState.name === 'connected' ? this.currentClient : undefined
  }

  start (): void {
    if (this.loop !== undefined) return
    if (this.handler === undefined) throw new Error('containerd supervisor started without a session handler (onSession)')
    this.controller = new AbortController()
    const signal = this.controller.signal
    this.loop = this.run(signal).catch((err: unknown) => {
      if (!signal.aborted) this.log.error({ err }, 'containerd supervisor stopped unexpectedly')
    })
  }

  async stop (): Promise<void> {
    this.controller?.abort()
    this.wake?.()
    await this.loop
    this.loop = undefined
    this.currentClient?.close()
    this.currentClient = undefined
    if (this.alertTimer !== undefined) clearTimeout(this.alertTimer)
    this.handler?.stopped?.()
    this.setState({ name: 'stopped', socketPath: this.currentState.socketPath, reason: 'containerd: stopped', since: Date.now() })
  }

  private setState (state: ContainerdState): void {
    this.currentState = state
    this.onStateChange?.(state)
  }

  private async run (signal: AbortSignal): Promise<void> {
    let attempt = 0
    while (!signal.aborted) {
      try {
        attempt = await this.attempt(attempt, signal)
      } catch (err) {
        // A bug or an unexpected environment (unreadable protos, say) must not end the loop:
        // the node would stay "connecting" forever. Report it and try again with backoff.
        if (signal.aborted) break
        this.log.error({ err }, 'unexpected error in the containerd connection loop')
        this.setState({ name: 'unavailable', socketPath: this.currentState.socketPath, reason: `containerd: ${errorText(err)}`, since: Date.now() })
        await this.pause(this.delayMs(attempt++), this.currentState.socketPath, signal)
      }
    }
  }

  private delayMs (attempt: number): number {
    // Half jitter spreads a fleet of restarting nodes apart.
    return backoffDelayMs(attempt + 1, { initialMs: this.init.initialBackoffMs, maxMs: this.init.maxBackoffMs, jitter: 0.5 })
  }

  /** One dial (and, when it works, one session); returns the next backoff attempt number. */
  private async attempt (attempt: number, signal: AbortSignal): Promise<number> {
    const choice = await chooseSocket(this.init.socketPath, this.init.isSocketExplicit)
    if (choice.socketPath !== this.chosenSocketLogged) {
      this.chosenSocketLogged = choice.socketPath
      if (choice.source === 'well-known') {
        this.log.info({ event: 'containerd_socket_discovered', path: choice.socketPath, distribution: choice.distribution, candidates: choice.candidatesFound },
          'default containerd socket absent; using a well-known socket')
      }
    }
    const socketPath = choice.socketPath
    const errno = await probeSocket(socketPath)
    if (errno !== undefined) {
      await this.markUnavailable(await diagnoseSocket(socketPath, errno))
      await this.pause(this.delayMs(attempt), socketPath, signal)
      return attempt + 1
    }
    const client = new ContainerdClient({ socketPath, namespace: this.init.namespace })
    let version: string
    try {
      version = (await client.getVersion({ timeoutMs: VERSION_TIMEOUT_MS, signal })).version
    } catch (err) {
      client.close()
      if (signal.aborted) return attempt
      await this.markUnavailable(await diagnoseSocket(socketPath, undefined, errorText(err)))
      await this.pause(this.delayMs(attempt), socketPath, signal)
      return attempt + 1
    }
    const startedMs = Date.now()
    const lost = await this.runConnected(client, socketPath, version, signal)
    if (lost === undefined || signal.aborted) return 0
    const sessionMs = Date.now() - startedMs
    if (sessionMs >= this.init.minHealthySessionMs) {
      // It worked for a while: redial at once (a restarted containerd is usually back already).
      this.lastShortSessionReason = undefined
      this.log.warn({ event: 'containerd_disconnected', path: socketPath, reason: lost, sessionMs }, 'lost connection to containerd; reconnecting')
      return 0
    }
    // Connected, then failed at once (a rejected subscribe, a listing error): that is a failed
    // dial too. Without backoff the loop would redial, fail and log as fast as containerd answers.
    const retryInMs = this.delayMs(attempt)
    const isRepeat = lost === this.lastShortSessionReason
    this.lastShortSessionReason = lost
    this.log[isRepeat ? 'debug' : 'warn']({ event: 'containerd_disconnected', path: socketPath, reason: lost, sessionMs, attempt: attempt + 1, retryInMs },
      'containerd session ended right after connecting; retrying with backoff')
    this.armStillDownAlert(lost, socketPath, this.currentState.since)
    // No early wake on socket directory changes: the socket works, the session does not.
    await this.pause(retryInMs, undefined, signal)
    return attempt + 1
  }

  /** Runs one session; returns why it was lost, or undefined when stop() ended it. */
  private async runConnected (client: ContainerdClient, socketPath: string, version: string, signal: AbortSignal): Promise<string | undefined> {
    const wasDown = this.currentState.name === 'unavailable'
    // Sessions that keep failing at once are one outage: keep its start for /readyz and the alert.
    const downSince = wasDown && this.lastShortSessionReason !== undefined ? this.currentState.since : undefined
    if (wasDown && this.lastShortSessionReason === undefined) this.reconnectCount++
    this.currentClient = client
    this.lastProblemKey = undefined
    if (this.alertTimer !== undefined && this.lastShortSessionReason === undefined) clearTimeout(this.alertTimer)
    this.setState({ name: 'connected', socketPath, version, since: Date.now() })
    this.log[this.lastShortSessionReason === undefined ? 'info' : 'debug']({ event: 'containerd_connected', path: socketPath, version, namespace: this.init.namespace, reconnected: wasDown },
      'connected to containerd')

    const session = new AbortController()
    let lostBecause: string | undefined
    // The state flips as soon as the session is known lost, not when the runner has wound down:
    // requests then stop using this client at once.
    const lose = (because: string): void => {
      if (lostBecause !== undefined) return
      lostBecause = because
      session.abort()
      if (signal.aborted) return
      this.currentClient = undefined
      this.setState({ name: 'unavailable', socketPath, reason: `containerd: connection lost (${because})`, since: downSince ?? Date.now() })
    }
    const onStop = (): void => { session.abort() }
    signal.addEventListener('abort', onStop, { once: true })
    client.watchConnectivity((state) => {
      // After a working connection, these mean the daemon went away; the event stream
      // usually reports it first, this is the safety net for idle periods.
      if (state === grpc.connectivityState.TRANSIENT_FAILURE || state === grpc.connectivityState.SHUTDOWN) lose('connection lost')
    })
    // A frozen containerd (SIGSTOP, hung host) keeps the socket open and the event stream
    // silent: only a periodic call tells. Two missed answers in a row end the session.
    let missed = 0
    const health = setInterval(() => {
      client.getVersion({ timeoutMs: HEALTH_CHECK_TIMEOUT_MS, signal: session.signal }).then(() => { missed = 0 }, () => {
        missed++
        if (missed >= 2 && !session.signal.aborted) lose('containerd stopped answering')
      })
    }, HEALTH_CHECK_INTERVAL_MS)
    health.unref()
    // Every call of the session honours its signal; if one does not, say so instead of hanging quietly.
    let settleWarning: NodeJS.Timeout | undefined
    session.signal.addEventListener('abort', () => {
      settleWarning = setTimeout(() => { this.log.error({ path: socketPath }, 'containerd session still running after it was cancelled') }, SESSION_SETTLE_WARN_MS)
      settleWarning.unref()
    }, { once: true })
    try {
      await this.handler?.run(client, session.signal)
      lose('connection lost')
    } catch (err) {
      lose(errorText(err))
    } finally {
      clearInterval(health)
      if (settleWarning !== undefined) clearTimeout(settleWarning)
      signal.removeEventListener('abort', onStop)
      session.abort()
      this.currentClient = undefined
      client.close()
    }
    return signal.aborted ? undefined : lostBecause
  }

  private async markUnavailable (diagnosis: SocketDiagnosis): Promise<void> {
    const reason = diagnosis.errno !== undefined
      ? `containerd: connect ${diagnosis.errno} ${diagnosis.socketPath}`
      : `containerd: ${diagnosis.message}`
    const key = `${diagnosis.problem}|${diagnosis.errno ?? ''}|${diagnosis.socketPath}`
    const since = this.currentState.name === 'unavailable' || this.currentState.name === 'connecting' ? this.currentState.since : Date.now()
    this.lastShortSessionReason = undefined
    this.setState({ name: 'unavailable', socketPath: diagnosis.socketPath, reason, diagnosis, since })
    if (key === this.lastProblemKey) return
    this.lastProblemKey = key
    this.log.warn({
      event: 'containerd_unavailable',
      reason: diagnosis.problem,
      errno: diagnosis.errno,
      path: diagnosis.socketPath,
      fix: diagnosis.fix,
      ...diagnosis.details
    }, diagnosis.message)
    this.armStillDownAlert(diagnosis.problem, diagnosis.socketPath, since, diagnosis)
  }

  /** One louder line if it does not heal by itself, for alerting on log level. */
  private armStillDownAlert (reason: string, socketPath: string, since: number, diagnosis?: SocketDiagnosis): void {
    if (this.alertTimer !== undefined) clearTimeout(this.alertTimer)
    this.alertTimer = setTimeout(() => {
      const state = this.currentState
      // Healed meanwhile: stopped, or a session that has lasted (a fresh one may still fail at once).
      if (state.name === 'stopped' || (state.name === 'connected' && Date.now() - state.since >= this.init.minHealthySessionMs)) return
      this.log.error({ event: 'containerd_still_unavailable', reason, errno: diagnosis?.errno, path: socketPath, fix: diagnosis?.fix, downForMs: Date.now() - since },
        'containerd still unavailable')
    }, Math.max(0, since + STILL_DOWN_ALERT_MS - Date.now()))
    this.alertTimer.unref()
  }

  /**
   * Waits before the next dial. With a socket path, wakes early when the socket's directory
   * changes: containerd (re)creating its socket is then noticed at once instead of after the backoff.
   */
  private async pause (delayMs: number, socketPath: string | undefined, signal: AbortSignal): Promise<void> {
    const waker = new AbortController()
    this.wake = () => { waker.abort() }
    let watcher: fs.FSWatcher | undefined
    if (socketPath !== undefined) {
      try {
        watcher = fs.watch(path.dirname(socketPath), { persistent: false }, () => { waker.abort() })
        watcher.on('error', () => { /* directory vanished: the timer still wakes us */ })
      } catch {
        watcher = undefined // directory does not exist yet; rely on the timer
      }
    }
    try {
      await sleep(delayMs, undefined, { signal: AbortSignal.any([signal, waker.signal]) })
    } catch {
      // woken early by a directory change or stop(); the loop re-checks the signal
    } finally {
      watcher?.close()
      this.wake = undefined
    }
    // Let a freshly created socket start listening before we dial it.
    if (waker.signal.aborted && !signal.aborted) await sleep(20)
  }
}

function errorText (err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}
