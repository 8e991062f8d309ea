import fs from 'node:fs/promises'
import path from 'node:path'
import { parse } from 'smol-toml'
import {
  describeContainerdConfig, DEFAULT_CONTAINERD_CONFIG,
  type ConfigFileText, type ContainerdConfigAnalysis
} from './containerd-config.js'

// The I/O half of containerd-config.ts: reads containerd's config file and its imports the way
// containerd does, tolerating a missing or unreadable file, and hands the texts to the pure analysis.

export interface ContainerdConfigFiles {
  readonly file: string
  /**
   * `ok`: the main file and every import were read (their TOML may still be invalid: the analysis
   * says so); `missing`: no main file (containerd runs on its defaults); `unreadable`: the main
   * file exists but cannot be read here (permissions, a directory); `import-unreadable`: an import
   * cannot be read, which stops containerd from starting.
   */
  readonly state: 'ok' | 'missing' | 'unreadable' | 'import-unreadable'
  readonly error?: string
  readonly configText?: string
  readonly imports: readonly ConfigFileText[]
}

function errorText (file: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code
  return `${file}: ${code ?? ((err as Error).message ?? String(err)).split('\n')[0] ?? ''}`
}

function segmentRegExp (pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')
  return new RegExp(`^${body}$`)
}

/** Go's filepath.Glob for absolute patterns: `*`, `?` and `[...]` within one path segment; sorted; no match is no error. */
async function glob (pattern: string): Promise<string[]> {
  const segments = pattern.split('/').filter((s) => s !== '')
  let bases = ['/']
  for (const segment of segments) {
    const next: string[] = []
    const isPattern = /[*?[]/.test(segment)
    for (const base of bases) {
      if (!isPattern) {
        next.push(path.join(base, segment))
        continue
      }
      let names: string[]
      try {
        names = await fs.readdir(base)
      } catch {
        // filepath.Glob ignores I/O errors while reading directories: no match.
        continue
      }
      const re = segmentRegExp(segment)
      for (const name of names.sort()) if (re.test(name)) next.push(path.join(base, name))
    }
    bases = next
  }
  const out: string[] = []
  for (const candidate of bases) {
    try {
      await fs.lstat(candidate)
      out.push(candidate)
    } catch {
      // A literal segment that does not exist is no match.
    }
  }
  return out
}

/** containerd's resolveImports: cleaned, relative to the importing file, globbed only when it contains `*`. */
async function resolveImports (parent: string, imports: unknown): Promise<string[]> {
  if (!Array.isArray(imports)) return []
  const out: string[] = []
  for (const entry of imports) {
    if (typeof entry !== 'string') continue
    let p = path.normalize(entry)
    if (!path.isAbsolute(p)) p = path.join(path.dirname(path.resolve(parent)), p)
    if (p.includes('*')) out.push(...await glob(p))
    else out.push(p)
  }
  return out
}

function importsOf (text: string): unknown {
  try {
    return (parse(text) as Record<string, unknown>).imports
  } catch {
    // An unparsable file imports nothing here; the analysis reports it as invalid.
    return undefined
  }
}

/**
 * Reads containerd's config like containerd's LoadConfig: the main file, then its imports
 * breadth-first (each file once), a missing import being fatal, a glob matching nothing not.
 */
export async function readContainerdConfigFiles (file: string = DEFAULT_CONTAINERD_CONFIG): Promise<ContainerdConfigFiles> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return { file, state: 'missing', imports: [] }
    return { file, state: 'unreadable', error: errorText(file, err), imports: [] }
  }
  const imports: ConfigFileText[] = []
  const seen = new Set([path.resolve(file)])
  const pending = await resolveImports(file, importsOf(text))
  while (pending.length > 0) {
    const next = pending.shift()
    if (next === undefined) break
    if (seen.has(next)) continue
    seen.add(next)
    let sub: string
    try {
      sub = await fs.readFile(next, 'utf8')
    } catch (err) {
      return { file, state: 'import-unreadable', error: `import ${errorText(next, err)}`, configText: text, imports }
    }
    imports.push({ path: next, text: sub })
    pending.push(...await resolveImports(next, importsOf(sub)))
  }
  return { file, state: 'ok', configText: text, imports }
}

export interface ContainerdConfigReport {
  readonly files: ContainerdConfigFiles
  /** Undefined when the config could not be read (`unreadable`, `import-unreadable`). */
  readonly analysis?: ContainerdConfigAnalysis
}

/** Reads and analyses in one call; never throws for file problems (they are in `files.state`). */
export async function analyzeContainerdConfigFile (options: { file?: string, version?: string, mirrorConfigPath?: string } = {}): Promise<ContainerdConfigReport> {
  const files = await readContainerdConfigFiles(options.file)
  if (files.state === 'unreadable' || files.state === 'import-unreadable') return { files }
  const analysis = describeContainerdConfig({
    configFile: files.file,
    configText: files.configText,
    imports: files.imports,
    ...(options.version === undefined ? {} : { version: options.version }),
    ...(options.mirrorConfigPath === undefined ? {} : { mirrorConfigPath: options.mirrorConfigPath })
  })
  return { files, analysis }
}
