export interface ConfigErrorInit extends ErrorOptions {
  /** The flag at fault, with its dashes (`--registry-addr`). */
  flag?: string
  /** The environment variable the bad value came from, when it did. */
  env?: string
  /** What the operator should do; already part of `message`, kept apart for structured logs. */
  fix?: string
}

/**
 * An invalid setting. The message is meant for operators as is: it names the flag (and the
 * environment variable when the value came from there) and says how to fix it.
 */
export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID'
  readonly flag?: string
  readonly env?: string
  readonly fix?: string

  constructor (message: string, init: ConfigErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause })
    this.name = 'ConfigError'
    if (init.flag !== undefined) this.flag = init.flag
    if (init.env !== undefined) this.env = init.env
    if (init.fix !== undefined) this.fix = init.fix
  }
}

/**
 * Thrown by value parsers that do not know which flag they are parsing; the setting resolver
 * turns it into a ConfigError that names the flag and the source of the value.
 */
export class ValueError extends Error {
  constructor (readonly reason: string, readonly fix: string) {
    super(`${reason}; ${fix}`)
    this.name = 'ValueError'
  }
}
