import { pino, type Logger, type LevelWithSilent } from 'pino'

export type { Logger }

/** Spegel's levels (DEBUG, INFO, WARN, ERROR; case-insensitive) mapped to pino's. */
export function parseLogLevel (value: string): LevelWithSilent | undefined {
  const v = value.trim().toLowerCase()
  if (v === 'debug' || v === 'info' || v === 'error' || v === 'silent') return v
  if (v === 'warn' || v === 'warning') return 'warn'
  return undefined
}

export interface LoggerInit {
  level?: LevelWithSilent
  /** Defaults to stderr, like Spegel. */
  destination?: NodeJS.WritableStream
}

/** JSON lines on stderr; one logger per process, children per component. */
export function createLogger (init: LoggerInit = {}): Logger {
  const destination = init.destination ?? pino.destination({ fd: 2, sync: false })
  return pino({
    level: init.level ?? 'info',
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label.toUpperCase() }) },
    redact: { paths: ['authorization', 'headers.authorization', 'password'], censor: '[redacted]' }
  }, destination as pino.DestinationStream)
}
