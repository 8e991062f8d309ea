import fs from 'node:fs/promises'
import path from 'node:path'

export const BASIC_AUTH_DIR = '/etc/secrets/basic-auth'

export interface BasicAuthCredentials {
  readonly username: string
  readonly password: string
}

async function readOptional (file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return ''
    throw new Error(`could not read basic auth file ${file}: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * Spegel's rules: both files missing or empty means no authentication; contents are used
 * verbatim (no trimming), so a trailing newline is part of the password.
 */
export async function loadBasicAuth (dir: string = BASIC_AUTH_DIR): Promise<BasicAuthCredentials | undefined> {
  const username = await readOptional(path.join(dir, 'username'))
  const password = await readOptional(path.join(dir, 'password'))
  if (username === '' && password === '') return undefined
  return { username, password }
}

/** `Basic base64(user:pass)`, the header value peers and containerd send. */
export function basicAuthHeader (credentials: BasicAuthCredentials): string {
  return 'Basic ' + Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')
}
