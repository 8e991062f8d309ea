import { OciError } from './errors.js'

export type DigestAlgorithm = 'sha256' | 'sha384' | 'sha512'

export interface ParsedDigest {
  algorithm: DigestAlgorithm
  /** Lower-case hex encoding. */
  hex: string
  /** The whole digest, `<algorithm>:<hex>`. */
  value: string
}

const HEX_LENGTH: Readonly<Record<DigestAlgorithm, number>> = { sha256: 64, sha384: 96, sha512: 128 }

// go-digest's general digest grammar; decides between "unsupported" and "bad format" for unknown algorithms.
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/
const LOWER_HEX = /^[a-f0-9]+$/

// Messages are go-digest's, so logs and error bodies read the same as Spegel's.
const FORMAT = 'invalid checksum digest format'
const LENGTH = 'invalid checksum digest length'
const UNSUPPORTED = 'unsupported digest algorithm'

function isAlgorithm (s: string): s is DigestAlgorithm {
  return Object.hasOwn(HEX_LENGTH, s)
}

function invalid (message: string): OciError {
  return new OciError('DIGEST_INVALID', message)
}

/** Parses `<algorithm>:<hex>` exactly as go-digest's `Parse` does; throws OciError DIGEST_INVALID. */
export function parseDigest (s: string): ParsedDigest {
  const i = s.indexOf(':')
  if (i <= 0 || i + 1 === s.length) throw invalid(FORMAT)
  const algorithm = s.slice(0, i)
  const hex = s.slice(i + 1)
  if (!isAlgorithm(algorithm)) {
    throw invalid(DIGEST_GRAMMAR.test(s) ? UNSUPPORTED : FORMAT)
  }
  if (hex.length !== HEX_LENGTH[algorithm]) throw invalid(LENGTH)
  if (!LOWER_HEX.test(hex)) throw invalid(FORMAT)
  return { algorithm, hex, value: s }
}

export function isDigest (s: string): boolean {
  try {
    parseDigest(s)
    return true
  } catch {
    // parseDigest only throws for invalid input, which is exactly the `false` answer.
    return false
  }
}
