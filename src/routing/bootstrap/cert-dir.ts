import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createSecureContext } from 'node:tls'
import { CA_FILENAME, CERT_FILENAME, KEY_FILENAME } from './constants.js'

/** TLS client settings from --http-bootstrap-cert-dir, ready for https.request. */
export interface BootstrapTls {
  /** Replaces the system roots, as Go's RootCAs does. */
  readonly ca?: readonly string[]
  readonly cert?: Buffer
  readonly key?: Buffer
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[\s\S]*?-----END \1-----/g

function readOptional (path: string): Buffer | undefined {
  try {
    return readFileSync(path)
  } catch (err) {
    // Every file is optional, as in Spegel's LoadCerts (pkg/httpx/certificate.go); only a file
    // that exists but cannot be read is an error.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

/**
 * Spegel's httpx.LoadCerts: `ca.crt` (a PEM bundle with at least one valid certificate),
 * `tls.crt` + `tls.key` (both or neither, and a matching pair). Missing files are fine; an empty
 * dir path means no TLS customisation (undefined). Read synchronously: it runs once at startup.
 */
export function loadCertDir (dir: string): BootstrapTls | undefined {
  if (dir === '') return undefined
  const caData = readOptional(join(dir, CA_FILENAME))
  let ca: string[] | undefined
  if (caData !== undefined && caData.length > 0) {
    // Like Go's AppendCertsFromPEM: other block types and unparsable certificates are skipped.
    ca = [...caData.toString('utf8').matchAll(PEM_BLOCK)]
      .filter((m) => m[1] === 'CERTIFICATE' && isCertificate(m[0]))
      .map((m) => m[0])
    if (ca.length === 0) throw new Error('no valid CA certs found')
  }
  const cert = readOptional(join(dir, CERT_FILENAME))
  const key = readOptional(join(dir, KEY_FILENAME))
  const hasCert = cert !== undefined && cert.length > 0
  const hasKey = key !== undefined && key.length > 0
  if (!hasCert && !hasKey) return ca === undefined ? {} : { ca }
  if (!hasCert || !hasKey) throw new Error('both client TLS certificate and client TLS key must be provided')
  // Fails on unparsable PEM and on a key that does not belong to the certificate, as tls.X509KeyPair does.
  createSecureContext({ cert, key })
  return ca === undefined ? { cert, key } : { ca, cert, key }
}

function isCertificate (pem: string): boolean {
  try {
    // eslint-disable-next-line no-new
    new X509Certificate(pem)
    return true
  } catch {
    return false
  }
}
