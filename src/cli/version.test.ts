import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli, type CliHandlers } from './program.js'
import { getVersionInfo, readDistro } from './version.js'

const handlers: CliHandlers = {
  registry: async () => { throw new Error('registry must not run') },
  doctor: async () => { throw new Error('doctor must not run') },
  configuration: async () => { throw new Error('configuration must not run') },
  cleanup: async () => { throw new Error('cleanup must not run') },
  cleanupWait: async () => { throw new Error('cleanup-wait must not run') }
}

async function run (argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number, stdout: string, stderr: string }> {
  let stdout = ''
  let stderr = ''
  const code = await runCli(argv, env, handlers, { stdout: (s) => { stdout += s }, stderr: (s) => { stderr += s } })
  return { code, stdout, stderr }
}

const packageVersion = (JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version

describe('spegel version', () => {
  it('prints text by default, with the package version and the commit from SPEGEL_COMMIT', async () => {
    const r = await run(['version'], { SPEGEL_COMMIT: 'b8c715a' })
    assert.equal(r.code, 0)
    assert.equal(r.stdout, `spegel version ${packageVersion} b8c715a\n`)
    assert.equal(r.stderr, '')
  })

  it('leaves the commit empty when unknown', async () => {
    assert.equal((await run(['version', '--format', 'text'])).stdout, `spegel version ${packageVersion} \n`)
  })

  it('prints the JSON shape without a trailing newline', async () => {
    const r = await run(['--log-level=debug', 'version', '--format=json'], { SPEGEL_COMMIT: 'abc' })
    assert.equal(r.code, 0)
    assert.ok(!r.stdout.endsWith('\n'))
    const parsed: unknown = JSON.parse(r.stdout)
    assert.deepEqual(Object.keys(parsed as object), ['build', 'runtime'])
    const info = parsed as { build: Record<string, unknown>, runtime: Record<string, unknown> }
    assert.deepEqual(Object.keys(info.build), ['nodeVersion', 'version', 'commit'])
    assert.deepEqual(Object.keys(info.runtime), ['distro', 'os', 'arch'])
    assert.equal(info.build.nodeVersion, process.version)
    assert.equal(info.build.version, packageVersion)
    assert.equal(info.build.commit, 'abc')
    assert.equal(info.runtime.os, process.platform)
    assert.equal(typeof info.runtime.distro, 'string')
    assert.notEqual(info.runtime.arch, 'x64', 'arch uses Go names (amd64)')
  })

  it('fails an unknown format with exit 1', async () => {
    const r = await run(['version', '--format', 'yaml'])
    assert.equal(r.code, 1)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /^error: unknown output format yaml/)
  })
})

describe('version info sources', () => {
  let dir = ''
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'spegel-version-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('reads PRETTY_NAME from os-release without quotes', async () => {
    const path = join(dir, 'os-release')
    await writeFile(path, 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\n')
    assert.equal(await readDistro(path), 'Ubuntu 24.04.1 LTS')
    await writeFile(path, 'PRETTY_NAME=Alpine\n')
    assert.equal(await readDistro(path), 'Alpine')
  })

  it('reports unknown without os-release or PRETTY_NAME', async () => {
    assert.equal(await readDistro(join(dir, 'missing')), 'unknown')
    const path = join(dir, 'no-pretty')
    await writeFile(path, 'NAME=x\n')
    assert.equal(await readDistro(path), 'unknown')
  })

  it('falls back to devel without a package.json', async () => {
    const info = await getVersionInfo({ env: {}, packageJsonPath: join(dir, 'nope.json'), osReleasePath: join(dir, 'missing') })
    assert.equal(info.build.version, 'devel')
    assert.equal(info.runtime.distro, 'unknown')
  })
})
