import assert from 'node:assert/strict'
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
})
