import { ConfigError, ValueError } from './errors.js'
import { parseCsv } from './values.js'

/** Where a resolved value came from; precedence is flag > env > default. */
export type ValueSource = 'flag' | 'env' | 'default'

interface SettingBase {
  /** Flag name without dashes (`registry-addr`). */
  readonly flag: string
  /** Spegel's environment variable, if the setting has one. */
  readonly env?: string
  /** Placeholder in help (`ADDR`). */
  readonly valueName: string
  readonly help: string
}

/**
 * `scalar`: `--flag value` or `--flag=value`. `bool`: `--flag` (means true), `--flag=true`,
 * `--flag=false`; the parser receives the text (`true` for the bare flag).
 */
export interface ScalarSetting<T> extends SettingBase {
  readonly kind: 'scalar' | 'bool'
  readonly default: string
  parse (raw: string): T
}

/** `--flag a b c`, repeatable; env is CSV. */
export interface ListSetting<T> extends SettingBase {
  readonly kind: 'list'
  readonly default: readonly string[]
  parse (raw: readonly string[]): T
}

export type Setting<T> = ScalarSetting<T> | ListSetting<T>

/** Raw values from the command line, keyed by flag name without dashes; absent = not given. */
export type FlagValues = ReadonlyMap<string, string | readonly string[]>
export type Env = Readonly<Record<string, string | undefined>>

export interface Resolved<T> {
  value: T
  source: ValueSource
}

function describe (setting: Setting<unknown>, source: ValueSource): { subject: string, env?: string } {
  const flag = `--${setting.flag}`
  if (source === 'env' && setting.env !== undefined) return { subject: `env ${setting.env} (${flag})`, env: setting.env }
  if (source === 'default') return { subject: `default of ${flag}` }
  return { subject: flag }
}

function rawText (raw: string | readonly string[]): string {
  return typeof raw === 'string' ? JSON.stringify(raw) : JSON.stringify(raw.join(' '))
}

/**
 * Applies flag > env > default and the setting's parser. Parse failures become a ConfigError
 * naming the flag, the env var when the value came from there, and the fix.
 */
export function resolveSetting<T> (setting: Setting<T>, flags: FlagValues, env: Env): Resolved<T> {
  const fromFlag = flags.get(setting.flag)
  const fromEnv = setting.env === undefined ? undefined : env[setting.env]
  let source: ValueSource
  let raw: string | readonly string[]
  if (fromFlag !== undefined) {
    source = 'flag'
    raw = fromFlag
  } else if (fromEnv !== undefined) {
    source = 'env'
    raw = fromEnv
  } else {
    source = 'default'
    raw = setting.default
  }
  const { subject, env: envName } = describe(setting, source)
  const flag = `--${setting.flag}`
  try {
    // Values arrive with the shape of their kind; a mismatch is a caller bug, not user input.
    if (setting.kind === 'list') {
      const items = typeof raw === 'string' ? parseCsv(raw) : raw
      return { value: setting.parse(items), source }
    }
    if (typeof raw !== 'string') {
      throw new TypeError(`${flag} takes one value, got a list`)
    }
    return { value: setting.parse(raw), source }
  } catch (err) {
    if (err instanceof ConfigError) throw err
    if (err instanceof ValueError) {
      throw new ConfigError(`invalid ${subject} ${rawText(raw)}: ${err.reason}; ${err.fix}`, {
        flag, ...(envName === undefined ? {} : { env: envName }), fix: err.fix, cause: err
      })
    }
    throw err
  }
}

/** Help line: the description plus where else the value can come from. */
export function settingHelp (setting: Setting<unknown>): string {
  const extras: string[] = []
  if (setting.env !== undefined) extras.push(`env ${setting.env}`)
  const def = setting.kind === 'list' ? setting.default.join(' ') : setting.default
  extras.push(def === '' ? 'default empty' : `default ${def}`)
  return `${setting.help} (${extras.join(', ')})`
}
