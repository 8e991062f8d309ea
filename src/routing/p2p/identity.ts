import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { chmod, mkdir, readFile, writeFile, rename } from 'node:fs/promises'
import path from 'node:path'
import { generateKeyPair, generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { ConfigError } from '../../config/index.js'
import type { Logger } from '../../observability/logger.js'
import { PRIVATE_KEY_FILENAME } from './constants.js'

const PEM_LABEL = /^-----BEGIN PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PRIVATE KEY-----\s*$/

/**
 * This node's libp2p identity, as Spegel's pkg/routing/libp2p/libp2p.go keeps it: with a data
 * directory, the Ed25519 key in `<dataDir>/private.key` (PEM `PRIVATE KEY`, PKCS#8), created on
 * first start, so a restart keeps the peer id; without one, a fresh key per start. A key file that
 * is not an Ed25519 PKCS#8 PEM stops startup with a ConfigError naming the file.
 */
export async function loadOrCreatePrivateKey (dataDir: string, log: Logger): Promise<PrivateKey> {
  if (dataDir === '') return await generateKeyPair('Ed25519')
  const file = path.join(dataDir, PRIVATE_KEY_FILENAME)
  let pem: string | undefined
  try {
    pem = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw keyError(file, `cannot be read: ${(err as Error).message}`, err)
    }
  }
  if (pem !== undefined) {
    log.info({ path: file }, 'loading the private key from data directory')
    return await generateKeyPairFromSeed('Ed25519', parseEd25519Pem(pem, file))
  }
  log.info({ path: file }, 'creating a new private key')
  await mkdir(dataDir, { recursive: true, mode: 0o755 })
  const { privateKey } = generateKeyPairSync('ed25519')
  const out = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  // Written beside the target and renamed, so a crash never leaves a half-written key behind.
  const tmp = `${file}.${process.pid}.tmp`
  await writeFile(tmp, out, { mode: 0o600 })
  await chmod(tmp, 0o600)
  await rename(tmp, file)
  return await generateKeyPairFromSeed('Ed25519', parseEd25519Pem(out, file))
}

/** The 32-byte Ed25519 seed of a PKCS#8 PEM; throws ConfigError naming `file`. */
export function parseEd25519Pem (pem: string, file: string): Uint8Array {
  // node:crypto also accepts SEC1/PKCS#1 labels; Spegel insists on `PRIVATE KEY`, so do we.
  if (!PEM_LABEL.test(pem.trim() + '\n')) throw keyError(file, 'is not a PEM block of type PRIVATE KEY')
  let key
  try {
    key = createPrivateKey({ key: pem, format: 'pem' })
  } catch (err) {
    throw keyError(file, `is not a valid PKCS#8 private key: ${(err as Error).message}`, err)
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw keyError(file, `holds a ${key.asymmetricKeyType ?? 'unknown'} key, not Ed25519`)
  }
  const jwk = key.export({ format: 'jwk' })
  if (typeof jwk.d !== 'string') throw keyError(file, 'has no private part')
  const seed = Buffer.from(jwk.d, 'base64url')
  if (seed.length !== 32) throw keyError(file, 'has an Ed25519 seed of the wrong length')
  return new Uint8Array(seed)
}

function keyError (file: string, what: string, cause?: unknown): ConfigError {
  const fix = `delete ${file} to create a new identity (the node gets a new peer id), or restore the original key`
  return new ConfigError(`private key file ${file} ${what}; ${fix}`, { flag: '--data-dir', fix, cause })
}
