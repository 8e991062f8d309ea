import { TomlDate } from 'smol-toml'

/**
 * A TOML encoder that writes what go-toml v2's `toml.Marshal` writes for a `map[string]any`,
 * which is what Spegel uses to re-serialise existing hosts.toml entries (existingHosts in
 * pkg/oci/containerd/mirror.go, for --prepend-existing), so that a
 * prepended file is byte-for-byte the file Spegel writes. Input is smol-toml's output parsed with
 * `integersAsBigInt: true`, so integers (bigint) and floats (number) stay apart as in Go.
 *
 * go-toml's rules reproduced: keys sorted (byte order) with plain values first and tables after;
 * strings as 'literal' unless they hold a quote or control character; arrays inline with `, `;
 * a blank line before the first sub-table only when the table has values, and between
 * sub-tables; every intermediate table header printed; arrays of tables as [[x]] blocks.
 */
export function marshalGoToml (root: Readonly<Record<string, unknown>>): string {
  return encodeTable([], root, false)
}

export function isTomlTable (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
}

const UTF8 = new TextEncoder()

function compareKeys (a: string, b: string): number {
  // Go compares strings by UTF-8 bytes; UTF-16 order differs above the BMP.
  return Buffer.compare(UTF8.encode(a), UTF8.encode(b))
}

function isArrayTable (value: unknown): value is Array<Record<string, unknown>> {
  return Array.isArray(value) && value.length > 0 && value.every(isTomlTable)
}

function encodeTable (parentKey: readonly string[], table: Readonly<Record<string, unknown>>, skipHeader: boolean): string {
  let out = ''
  if (!skipHeader && parentKey.length > 0) out += `[${parentKey.map(encodeKey).join('.')}]\n`
  const kvs: string[] = []
  const tables: string[] = []
  for (const [key, value] of Object.entries(table)) {
    if (isTomlTable(value) || isArrayTable(value)) tables.push(key)
    else kvs.push(key)
  }
  kvs.sort(compareKeys)
  tables.sort(compareKeys)
  for (const key of kvs) out += `${encodeKey(key)} = ${encodeValue(table[key])}\n`
  let first = true
  for (const key of tables) {
    if (!first || kvs.length > 0) out += '\n'
    first = false
    const value = table[key]
    const path = [...parentKey, key]
    out += isArrayTable(value) ? encodeArrayTable(path, value) : encodeTable(path, value as Record<string, unknown>, false)
  }
  return out
}

function encodeArrayTable (key: readonly string[], items: ReadonlyArray<Record<string, unknown>>): string {
  const header = `[[${key.map(encodeKey).join('.')}]]\n`
  return items.map((item) => header + encodeTable(key, item, true)).join('\n')
}

/** A value on the right of `key = `; tables in here are inline, as go-toml does inside a key-value. */
function encodeValue (value: unknown): string {
  if (typeof value === 'string') return encodeString(value)
  if (typeof value === 'bigint') return value.toString()
  if (typeof value === 'number') return encodeFloat(value)
  if (typeof value === 'boolean') return value ? 'true' : 'false'
  // go-toml prints its own date types; hosts.toml has no dates, so TOML's own form is close enough.
  if (value instanceof TomlDate) return value.toISOString()
  if (value instanceof Date) return value.toISOString()
  if (Array.isArray(value)) return `[${value.map(encodeValue).join(', ')}]`
  if (isTomlTable(value)) {
    const keys = Object.keys(value).sort(compareKeys)
    return `{${keys.map((k) => `${encodeKey(k)} = ${encodeValue(value[k])}`).join(', ')}}`
  }
  throw new TypeError(`cannot encode ${typeof value} as TOML`)
}

function needsQuoting (s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    // A quote, CR, LF, and the control characters TOML forbids in literal strings (tab is allowed).
    if (c === 0x27 || c === 0x0d || c === 0x0a || (c < 0x20 && c !== 0x09) || c === 0x7f) return true
  }
  return false
}

function encodeString (s: string): string {
  return needsQuoting(s) ? encodeQuotedString(s) : `'${s}'`
}

function encodeQuotedString (s: string): string {
  let out = '"'
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0
    switch (ch) {
      case '\\': out += '\\\\'; break
      case '"': out += '\\"'; break
      case '\b': out += '\\b'; break
      case '\f': out += '\\f'; break
      case '\n': out += '\\n'; break
      case '\r': out += '\\r'; break
      case '\t': out += '\\t'; break
      default:
        out += (c < 0x20 || c === 0x7f) ? `\\u00${c.toString(16).toUpperCase().padStart(2, '0')}` : ch
    }
  }
  return out + '"'
}

function encodeKey (key: string): string {
  if (key === '') return "''"
  const isBare = /^[A-Za-z0-9_-]+$/.test(key)
  if (isBare) return key
  if (key.includes("'") || needsQuoting(key)) return encodeQuotedString(key)
  return `'${key}'`
}

/** Go's strconv 'f' format: shortest round-trip digits, never an exponent; whole numbers get `.0`. */
function encodeFloat (f: number): string {
  if (Number.isNaN(f)) return 'nan'
  if (f === Infinity) return 'inf'
  if (f === -Infinity) return '-inf'
  if (Number.isInteger(f)) return `${Object.is(f, -0) ? '-' : ''}${BigInt(f).toString()}.0`
  return plainDecimal(String(f))
}

/** Rewrites JavaScript's exponent form (`1.5e-7`) as a plain decimal (`0.00000015`). */
function plainDecimal (s: string): string {
  const m = /^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(s)
  if (m === null) return s
  const [, sign = '', lead = '', frac = '', expText = '0'] = m
  const digits = lead + frac
  const point = 1 + Number(expText)
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`
  if (point >= digits.length) return `${sign}${digits}${'0'.repeat(point - digits.length)}`
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`
}
