import fs from 'node:fs/promises'
import path from 'node:path'
import { parse } from 'smol-toml'
import { isTomlTable, marshalGoToml } from './go-toml.js'
import { parseHostsToml } from './read-hosts.js'

export const BACKUP_DIR = '_backup'
export const HOSTS_FILE = 'hosts.toml'

/**
 * Keys of the `[table]` headers (not `[[array]]` ones) in document order. A parsed TOML object
 * cannot give this order: `[host."b".header]` before `[host."a"]` creates `b` first, but Spegel
 * orders entries by their own `[host."X"]` header. The text must already be valid TOML.
 */
export function tableHeaderKeys (text: string): string[][] {
  const keys: string[][] = []
  let depth = 0
  let atLineStart = true
  let i = 0
  while (i < text.length) {
    const c = text[i]
    if (c === '\n') {
      atLineStart = true
      i++
    } else if (c === ' ' || c === '\t' || c === '\r') {
      i++
    } else if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++
    } else if (c === '"' || c === "'") {
      i = skipString(text, i)
      atLineStart = false
    } else if (c === '[' && depth === 0 && atLineStart) {
      const isArray = text[i + 1] === '['
      const start = i + (isArray ? 2 : 1)
      const end = keyEnd(text, start)
      if (!isArray) keys.push(decodeKey(text.slice(start, end)))
      i = end + (isArray ? 2 : 1)
      atLineStart = false
    } else {
      if (c === '[' || c === '{') depth++
      else if (c === ']' || c === '}') depth--
      atLineStart = false
      i++
    }
  }
  return keys
}

/** Index just past the string that starts at `i` (basic, literal, or either multi-line form). */
function skipString (text: string, i: number): number {
  const quote = text[i] ?? '"'
  const isBasic = quote === '"'
  if (text.startsWith(quote.repeat(3), i)) {
    let j = i + 3
    while (j < text.length) {
      if (isBasic && text[j] === '\\') {
        j += 2
        continue
      }
      if (text.startsWith(quote.repeat(3), j)) {
        j += 3
        // Up to two quotes right before the delimiter belong to the content.
        for (let extra = 0; extra < 2 && text[j] === quote; extra++) j++
        return j
      }
      j++
    }
    return j
  }
  let j = i + 1
  while (j < text.length && text[j] !== quote && text[j] !== '\n') {
    j += isBasic && text[j] === '\\' ? 2 : 1
  }
  return j + 1
}

/** Index of the `]` that closes a header key starting at `start`, skipping quoted parts. */
function keyEnd (text: string, start: number): number {
  let j = start
  while (j < text.length && text[j] !== ']') {
    j = text[j] === '"' || text[j] === "'" ? skipString(text, j) : j + 1
  }
  return j
}

function decodeKey (keyText: string): string[] {
  // The TOML parser already knows how to unquote and unescape key parts.
  let node: unknown = parse(`${keyText} = 0`)
  const parts: string[] = []
  while (isTomlTable(node)) {
    const [name] = Object.keys(node)
    if (name === undefined) break
    parts.push(name)
    node = node[name]
  }
  return parts
}

/**
 * Spegel's `existingHosts`: the `[host."X"]` entries of `<config>/_backup/<dir>/hosts.toml`,
 * re-serialised as go-toml would (sorted keys, single-quoted strings, sub-tables after a blank
 * line), in the order their headers first appear, one blank line apart. Empty when there is
 * no such file or it has no host entries; the old `server` and other top-level keys are dropped.
 * Throws when the file is not TOML, or is TOML containerd would refuse: prepending it would make
 * containerd refuse Spegel's entries too.
 */
export async function existingHosts (configPath: string, dir: string): Promise<string> {
  const file = path.join(configPath, BACKUP_DIR, dir, HOSTS_FILE)
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return ''
    throw err
  }
  let doc: Record<string, unknown>
  try {
    doc = parse(text, { integersAsBigInt: true })
  } catch (err) {
    throw new Error(`cannot prepend existing ${file}: invalid TOML: ${(err as Error).message.split('\n')[0] ?? ''}`, { cause: err })
  }
  const hosts = doc.host
  if (hosts === undefined) return ''
  if (!isTomlTable(hosts)) throw new Error(`cannot prepend existing ${file}: host must be a table of [host."<url>"] entries`)
  if (Object.keys(hosts).length === 0) return ''
  const checked = parseHostsToml(text, dir, file)
  if (checked.error !== undefined) throw new Error(`cannot prepend existing ${file}: containerd would reject it: ${checked.error}`)

  const entries: string[] = []
  for (const key of tableHeaderKeys(text)) {
    const [first, url] = key
    if (key.length !== 2 || first !== 'host' || url === undefined) continue
    const marshalled = marshalGoToml({ host: { [url]: hosts[url] } })
    entries.push(marshalled.startsWith('[host]\n') ? marshalled.slice('[host]\n'.length) : marshalled)
  }
  return entries.join('\n').trim()
}
