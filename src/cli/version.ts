import { readFile } from 'node:fs/promises'

export interface VersionInfo {
  build: { nodeVersion: string, version: string, commit: string }
  runtime: { distro: string, os: string, arch: string }
}

export interface VersionInit {
  env: Readonly<Record<string, string | undefined>>
  /** Overridable for tests; defaults to /etc/os-release. */
  osReleasePath?: string | URL
  /** Overridable for tests; defaults to the package.json next to dist/. */
  packageJsonPath?: string | URL
}

export interface VersionIo {
  stdout: (s: string) => void
  stderr: (s: string) => void
}

// Compiled to dist/src/cli/version.js, three levels below the package root.
const PACKAGE_JSON = new URL('../../../package.json', import.meta.url)

async function readPackageVersion (path: string | URL): Promise<string> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    // Spegel prints `devel` when it cannot tell its version; a missing package.json is that case.
    return 'devel'
  }
  const parsed: unknown = JSON.parse(text)
  if (typeof parsed === 'object' && parsed !== null && 'version' in parsed && typeof parsed.version === 'string') {
    return parsed.version
  }
  return 'devel'
}

/** PRETTY_NAME from os-release with quotes stripped, or `unknown`, as Spegel reports it. */
export async function readDistro (path: string | URL = '/etc/os-release'): Promise<string> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    // No os-release (distroless images, macOS): Spegel reports `unknown` too.
    return 'unknown'
  }
  for (const line of text.split('\n')) {
    const match = /^\s*PRETTY_NAME=(.*)$/.exec(line)
    if (match?.[1] !== undefined) return match[1].trim().replace(/^["']|["']$/g, '')
  }
  return 'unknown'
}

// Spegel reports GOARCH; keep those names for the architectures whose Node name differs.
const GO_ARCH: Readonly<Record<string, string>> = { x64: 'amd64', ia32: '386' }

export async function getVersionInfo (init: VersionInit): Promise<VersionInfo> {
  const [version, distro] = await Promise.all([
    readPackageVersion(init.packageJsonPath ?? PACKAGE_JSON),
    readDistro(init.osReleasePath)
  ])
  return {
    build: { nodeVersion: process.version, version, commit: init.env.SPEGEL_COMMIT ?? '' },
    runtime: { distro, os: process.platform, arch: GO_ARCH[process.arch] ?? process.arch }
  }
}

/**
 * `spegel version`: text is `spegel version <version> <commit>` plus a newline; json has no
 * trailing newline, as in Spegel. An unknown format is a runtime error (exit 1), not exit 2.
 */
export async function runVersion (format: string, init: VersionInit, io: VersionIo): Promise<number> {
  if (format !== 'text' && format !== 'json') {
    io.stderr(`error: unknown output format ${format}; set --format to text or json\n`)
    return 1
  }
  const info = await getVersionInfo(init)
  if (format === 'json') io.stdout(JSON.stringify(info))
  else io.stdout(`spegel version ${info.build.version} ${info.build.commit}\n`)
  return 0
}
