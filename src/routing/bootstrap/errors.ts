/**
 * A bootstrap attempt failed for a reason worth logging and retrying (unreachable endpoint, bad
 * answer, resolver failure). "Nothing found" is not an error: `discover` returns `[]` then.
 */
export class BootstrapError extends Error {
  readonly code = 'BOOTSTRAP_FAILED'

  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'BootstrapError'
  }
}
