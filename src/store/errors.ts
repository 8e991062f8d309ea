/** Content (a tag or digest) is not in the store. Callers branch on this; logs keep `cause`. */
export class NotFoundError extends Error {
  readonly code = 'NOT_FOUND'
  constructor (what: string, options?: ErrorOptions) {
    super(`${what} not found`, options)
    this.name = 'NotFoundError'
  }
}

/** The backing store (containerd) cannot be reached right now; `reason` is operator-facing. */
export class StoreUnavailableError extends Error {
  readonly code = 'STORE_UNAVAILABLE'
  constructor (readonly reason: string, options?: ErrorOptions) {
    super(`store unavailable: ${reason}`, options)
    this.name = 'StoreUnavailableError'
  }
}

export function isNotFound (err: unknown): err is NotFoundError {
  return err instanceof NotFoundError
}
