import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, it } from 'node:test'
import { Registry } from 'prom-client'
import { LogCapture } from '../http/test-helpers.js'
import { ContainerdConfigCheck } from './containerd-config-check.js'

// dist/src/cli -> test/fixtures at the package root
const fixture = (name: string): string => fileURLToPath(new URL(`../../../test/fixtures/containerd-config/${name}`, import.meta.url))

describe('the running node checks containerd\'s configuration', () => {
  it('reports the transfer-service trap on the page, in /readyz, in a metric and once in the log', async () => {
    const capture = new LogCapture()
    const registry = new Registry()
    const check = new ContainerdConfigCheck({ log: capture.log, registry }, { file: fixture('eks-al2023-discard-false.toml') })
    await check.refresh('v2.1.5')
    await check.refresh('v2.1.5')
    const warnings = check.warnings()
    assert.deepEqual(warnings.map((w) => [w.id, w.severity]), [['containerd-config:transfer-multi-dir-config-path', 'error']])
    assert.match(warnings[0]?.fix ?? '', /\S/)
    const [note, ...more] = check.readyzNotes()
    assert.match(note ?? '', /^warning: transfer-multi-dir-config-path: /)
    assert.deepEqual(more, [])
    assert.match(await registry.metrics(), /^spegel_containerd_config_problem\{id="transfer-multi-dir-config-path",severity="error"\} 1$/m)
    const logged = capture.lines.filter((l) => l.event === 'containerd_config_problem')
    assert.equal(logged.length, 1, 'logged once, not on every reconnect')
    assert.equal(logged[0]?.reason, 'transfer-multi-dir-config-path')
  })

  it('clears a problem that a containerd upgrade or reconfiguration removed', async () => {
    const registry = new Registry()
    const check = new ContainerdConfigCheck({ log: new LogCapture().log, registry }, { file: fixture('containerd-1.6-default.toml') })
    await check.refresh('1.6.20~ds1')
    assert.deepEqual(check.warnings().map((w) => w.id), ['containerd-config:config-path-unset'])
    const use = new ContainerdConfigCheck({ log: new LogCapture().log, registry: new Registry() }, { file: fixture('use-local-image-pull.toml') })
    await use.refresh('v2.2.2')
    assert.deepEqual(use.warnings(), [])
    assert.deepEqual(use.readyzNotes(), [])
  })

  it('says it cannot check when the file cannot be read, without guessing', async () => {
    const check = new ContainerdConfigCheck({ log: new LogCapture().log, registry: new Registry() }, { file: fixture('') })
    await check.refresh('v2.2.2')
    assert.deepEqual(check.warnings().map((w) => [w.id, w.severity]), [['containerd-config-unreadable', 'info']])
    assert.deepEqual(check.readyzNotes(), [])
  })

  it('believes the no-restart workaround only when the literal directory really holds hosts.toml', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'spg-cfgcheck-'))
    try {
      const list = `${dir}/certs.d:${dir}/docker-certs.d`
      const file = path.join(dir, 'config.toml')
      await writeFile(file, `version = 3\n[plugins."io.containerd.cri.v1.images".registry]\n  config_path = '${list}'\n`)
      const check = new ContainerdConfigCheck({ log: new LogCapture().log, registry: new Registry() }, { file, mirrorConfigPath: list })
      await check.refresh('v2.2.2')
      const [missing] = check.warnings()
      assert.equal(missing?.id, 'containerd-config:transfer-multi-dir-config-path')
      assert.equal(missing?.severity, 'error', 'configured for the workaround, but nothing was written')
      assert.match(missing?.message ?? '', /holds no hosts\.toml/)

      await mkdir(path.join(list, '_default'), { recursive: true })
      await writeFile(path.join(list, '_default', 'hosts.toml'), 'server = "https://registry-1.docker.io"\n')
      await check.refresh('v2.2.2')
      assert.deepEqual(check.warnings().map((w) => [w.id, w.severity]), [['containerd-config:transfer-multi-dir-config-path', 'warning']])
      assert.deepEqual(check.readyzNotes(), [], 'a warning does not go into /readyz')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
