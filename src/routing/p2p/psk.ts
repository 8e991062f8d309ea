import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { ConfigError } from '../../config/index.js'

const HEADER = '/key/swarm/psk/1.0.0/'
const ENCODING = '/base16/'

/**
 * Reads a libp2p private-network key file (PSK v1: `/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex
 * digits, one per line) and returns its bytes as @libp2p/pnet expects them. Checked here because
 * pnet's own errors do not name the file or the flag.
 */
export async function readPskFile (file: string): Promise<Uint8Array> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw pskError(file, `cannot be read: ${(err as Error).message}`, err)
  }
  const lines = text.split(/\r\n|\r|\n/)
  if (lines[0] !== HEADER) throw pskError(file, `does not start with ${HEADER}`)
  if (lines[1] !== ENCODING) throw pskError(file, `has encoding ${JSON.stringify(lines[1] ?? '')}, only ${ENCODING} is supported`)
  const hex = (lines[2] ?? '').trim()
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw pskError(file, 'does not hold a 64-digit hex key on its third line')
  if (lines.slice(3).some((l) => l.trim() !== '')) throw pskError(file, 'has unexpected content after the key')
  return new TextEncoder().encode(`${HEADER}\n${ENCODING}\n${hex.toLowerCase()}`)
}

/** Writes a new random PSK v1 file (mode 0600), for tests, the demo and operators. */
export async function generatePskFile (file: string): Promise<void> {
  const body = `${HEADER}\n${ENCODING}\n${randomBytes(32).toString('hex')}\n`
  await writeFile(file, body, { mode: 0o600, flag: 'wx' })
}

function pskError (file: string, what: string, cause?: unknown): ConfigError {
  const fix = 'point --router-secret-path at a libp2p PSK v1 file (the same file on every node), or unset it'
  return new ConfigError(`router secret file ${file} ${what}; ${fix}`, { flag: '--router-secret-path', fix, cause })
}
