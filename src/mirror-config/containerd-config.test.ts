import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import {
  analyzeContainerdConfig, CONTAINERD_22_DEFAULT_CONFIG_PATH, describeContainerdConfig, parseContainerdVersion,
  type AnalyzeContainerdConfigInput, type ContainerdConfigFinding, type FindingId
} from './containerd-config.js'

/** test/fixtures/containerd-config, found from the compiled file's location (any --outDir). */
function fixtureDir (): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const candidate = path.join(dir, 'test', 'fixtures', 'containerd-config')
    if (existsSync(candidate)) return candidate
    const parent = path.dirname(dir)
    if (parent === dir) throw new Error('test/fixtures/containerd-config not found above the test file')
    dir = parent
  }
}
const FIXTURES = fixtureDir()

function fixture (name: string): string {
  return readFileSync(path.join(FIXTURES, name), 'utf8')
}

function run (name: string | undefined, version: string | undefined, extra: Partial<AnalyzeContainerdConfigInput> = {}): ContainerdConfigFinding[] {
  return analyzeContainerdConfig({
    configFile: '/etc/containerd/config.toml',
    ...(name === undefined ? {} : { configText: fixture(name) }),
    ...(version === undefined ? {} : { version }),
    imports: [],
    ...extra
  })
}

function ids (findings: readonly ContainerdConfigFinding[]): string[] {
  return findings.map((f) => `${f.id}:${f.severity}`)
}

function find (findings: readonly ContainerdConfigFinding[], id: FindingId): ContainerdConfigFinding {
  const f = findings.find((x) => x.id === id)
  assert.ok(f !== undefined, `no finding ${id} in ${ids(findings).join(', ')}`)
  return f
}

function has (findings: readonly ContainerdConfigFinding[], id: FindingId): boolean {
  return findings.some((f) => f.id === id)
}

function pullPath (findings: readonly ContainerdConfigFinding[]): string | undefined {
  return find(findings, 'pull-path').details?.pullPath
}

describe('parseContainerdVersion', () => {
  it('reads distribution, tag and pre-release spellings', () => {
    assert.deepEqual(parseContainerdVersion('1.6.20~ds1'), { major: 1, minor: 6, patch: 20 })
    assert.deepEqual(parseContainerdVersion('v2.2.1'), { major: 2, minor: 2, patch: 1 })
    assert.deepEqual(parseContainerdVersion('2.3.0-rc.1'), { major: 2, minor: 3, patch: 0 })
    assert.deepEqual(parseContainerdVersion('2.4'), { major: 2, minor: 4, patch: 0 })
    assert.equal(parseContainerdVersion('devel'), undefined)
  })
})

describe('analyzeContainerdConfig on real config files', () => {
  it('containerd 1.6 `config default` (version 2): no config_path, local pull, on 1.6', () => {
    const f = run('containerd-1.6-default.toml', '1.6.20~ds1')
    assert.equal(find(f, 'config-path-unset').severity, 'error')
    assert.match(find(f, 'config-path-unset').fix, /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.registry\]\n {2}config_path = "\/etc\/containerd\/certs\.d"/)
    assert.equal(pullPath(f), 'local')
    assert.ok(!has(f, 'transfer-multi-dir-config-path'))
    assert.ok(!has(f, 'discard-unpacked-layers'), 'discard_unpacked_layers = false in the default')
    // The empty registry.mirrors/configs/auths tables of the default are no inline registry settings.
    assert.ok(!has(f, 'cri-plugin-fails'))
  })

  it('the same 1.6 file after an upgrade: 2.1 pulls through the transfer service with no config_path', () => {
    const f = run('containerd-1.6-default.toml', 'v2.1.4')
    assert.equal(pullPath(f), 'transfer')
    assert.equal(find(f, 'config-path-unset').severity, 'error')
    assert.ok(!has(f, 'transfer-multi-dir-config-path'))
  })

  it('the same 1.6 file on 2.2: the empty config_path becomes the two-directory default and the mirror is ignored', () => {
    for (const version of ['2.2.0', '2.2.1', '2.2.7', '2.3.4']) {
      const f = run('containerd-1.6-default.toml', version)
      assert.ok(!has(f, 'config-path-unset'), version)
      assert.equal(pullPath(f), 'transfer', version)
      const trap = find(f, 'transfer-multi-dir-config-path')
      assert.equal(trap.severity, 'error', version)
      assert.equal(trap.details?.configPath, CONTAINERD_22_DEFAULT_CONFIG_PATH)
    }
  })

  it('Debian 12\'s packaged config: no config_path on 1.6; the 2.2 default and the trap on 2.2', () => {
    assert.equal(find(run('debian12-containerd-1.6-packaged.toml', '1.6.20~ds1'), 'config-path-unset').severity, 'error')
    const f = run('debian12-containerd-1.6-packaged.toml', '2.2.7')
    assert.equal(find(f, 'config-path-default').details?.configPath, CONTAINERD_22_DEFAULT_CONFIG_PATH)
    assert.equal(find(f, 'transfer-multi-dir-config-path').severity, 'error')
  })

  it('containerd 2.1 defaults (version 3, config_path = \'\'): no config_path, transfer service', () => {
    const f = run('containerd-2.1-default.toml', '2.1.0')
    assert.equal(find(f, 'config-path-unset').severity, 'error')
    assert.match(find(f, 'config-path-unset').fix, /\[plugins\."io\.containerd\.cri\.v1\.images"\.registry\]\n {2}config_path = "\/etc\/containerd\/certs\.d"/)
    assert.equal(pullPath(f), 'transfer')
    assert.match(find(f, 'pull-path').message, /go through the transfer service/)
  })

  it('containerd 2.2 defaults: 2.2.2+ fills the empty config_path at plugin init; 2.2.0-2.2.1 keep an explicit empty one', () => {
    const late = run('containerd-2.2-default.toml', '2.2.2')
    const trap = find(late, 'transfer-multi-dir-config-path')
    assert.equal(trap.severity, 'error')
    assert.match(trap.message, /reads config_path "\/etc\/containerd\/certs\.d:\/etc\/docker\/certs\.d" \(the built-in default\) as ONE directory/)
    assert.match(trap.fix, /without a restart: also write the mirror files under the literal directory "\/etc\/containerd\/certs\.d:\/etc\/docker\/certs\.d"/)
    assert.match(trap.fix, /top directory is "\/etc\/containerd\/certs\.d:"/)
    assert.match(trap.fix, /with a restart: .*single directory.*use_local_image_pull = true/s)
    assert.match(trap.fix, /\[plugins\."io\.containerd\.cri\.v1\.images"\.registry\]\n {2}config_path = "\/etc\/containerd\/certs\.d"/)
    assert.match(trap.fix, /\[plugins\."io\.containerd\.cri\.v1\.images"\]\n {2}use_local_image_pull = true/)
    // v2.2.0/2.2.1: the default sat in DefaultImageConfig, which a version 3 file's explicit '' overrides.
    assert.equal(find(run('containerd-2.2-default.toml', '2.2.1'), 'config-path-unset').severity, 'error')
  })

  it('EKS AL2023 as shipped (discard_unpacked_layers = true): local pull reads the list, but no layers to share', () => {
    const f = run('eks-al2023-nodeadm.toml', '2.1.5')
    assert.equal(pullPath(f), 'local')
    assert.match(find(f, 'pull-path').message, /falls back to local pull because of discard_unpacked_layers = true/)
    assert.ok(!has(f, 'transfer-multi-dir-config-path'))
    const discard = find(f, 'discard-unpacked-layers')
    assert.equal(discard.severity, 'error')
    assert.match(discard.message, /plugins\."io\.containerd\.cri\.v1\.images"\.discard_unpacked_layers = true/)
    // Turning it off alone walks into the trap: the fix says so.
    assert.match(discard.fix, /CAUTION: .*moves CRI pulls to the transfer service/)
  })

  it('EKS AL2023 with discard_unpacked_layers = false (what Spegel asks for): the trap', () => {
    const f = run('eks-al2023-discard-false.toml', 'v2.1.5')
    assert.equal(pullPath(f), 'transfer')
    const trap = find(f, 'transfer-multi-dir-config-path')
    assert.equal(trap.severity, 'error')
    assert.equal(trap.details?.key, 'plugins."io.containerd.cri.v1.images".registry.config_path')
    assert.ok(!has(f, 'discard-unpacked-layers'))
    // The transfer plugin's own config_path is '' here: nothing to report about it.
    assert.ok(!has(f, 'transfer-config-path-unused'))
  })

  it('the same EKS config when spegel writes the same list: still reported, as a warning', () => {
    const f = run('eks-al2023-discard-false.toml', '2.1.5', { mirrorConfigPath: CONTAINERD_22_DEFAULT_CONFIG_PATH })
    const trap = find(f, 'transfer-multi-dir-config-path')
    assert.equal(trap.severity, 'warning')
    assert.match(trap.message, /spegel configuration also writes the literal directory/)
    assert.ok(!has(f, 'mirror-path-mismatch'))
  })

  it('use_local_image_pull = true: local pull, which searches every directory; no trap', () => {
    const f = run('use-local-image-pull.toml', '2.1.5')
    assert.equal(pullPath(f), 'local')
    assert.equal(find(f, 'pull-path').details?.reason, 'use_local_image_pull = true')
    assert.ok(!f.some((x) => x.severity === 'error'), ids(f).join(', '))
  })

  it('k3s\'s generated version 3 config: single directory, use_local_image_pull, nothing wrong', () => {
    const f = run('k3s-v3.toml', 'v2.1.4-k3s1', { mirrorConfigPath: '/var/lib/rancher/k3s/agent/etc/containerd/certs.d' })
    assert.deepEqual(ids(f), ['pull-path:info'])
    assert.equal(pullPath(f), 'local')
  })

  it('a version 3 file on containerd 1.x: its CRI tables are ignored', () => {
    const f = run('k3s-v3.toml', '1.7.27')
    assert.equal(find(f, 'config-version-unsupported').severity, 'error')
    assert.equal(find(f, 'config-path-unset').severity, 'error')
  })

  it('inline mirrors (version 3): 2.1 and 2.2.2+ use them and ignore hosts.toml; 2.2.0-2.2.1 refuse to load CRI', () => {
    for (const version of ['2.1.3', '2.2.2', '2.3.0']) {
      const f = run('inline-mirrors-v3.toml', version)
      const unset = find(f, 'config-path-unset')
      assert.match(unset.message, /uses the inline mirrors instead/, version)
      assert.match(unset.fix, /move the inline mirrors/, version)
      assert.equal(pullPath(f), 'local', version)
      assert.match(find(f, 'pull-path').message, /inline registry mirrors/)
      assert.ok(!has(f, 'cri-plugin-fails'), version)
    }
    const early = run('inline-mirrors-v3.toml', '2.2.1')
    const fails = find(early, 'cri-plugin-fails')
    assert.equal(fails.severity, 'error')
    assert.match(fails.message, /built-in default/)
    assert.match(fails.message, /`mirrors` cannot be set when `config_path` is provided/)
  })

  it('EKS AL2 (containerd 1.7, version 2): discard_unpacked_layers with the version 2 key; imports not read', () => {
    const f = run('eks-al2-discard-unpacked-layers.toml', '1.7.27', { imports: undefined })
    const discard = find(f, 'discard-unpacked-layers')
    assert.match(discard.message, /plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\.discard_unpacked_layers = true/)
    assert.match(discard.fix, /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\]\n {2}discard_unpacked_layers = false/)
    assert.doesNotMatch(discard.fix, /CAUTION/)
    assert.equal(pullPath(f), 'local')
    assert.ok(!has(f, 'transfer-multi-dir-config-path'))
    assert.match(find(f, 'imports-not-read').message, /\/etc\/containerd\/config\.d\/\*\.toml/)
  })

  it('the EKS AL2 file on containerd 2.1 (version 2 migrated): turning discard off would move it onto the trap', () => {
    const f = run('eks-al2-discard-unpacked-layers.toml', '2.1.5')
    assert.equal(pullPath(f), 'local')
    assert.match(find(f, 'discard-unpacked-layers').fix, /CAUTION/)
  })
})

describe('analyzeContainerdConfig: missing file, versions, imports', () => {
  it('a missing file: the defaults of each version', () => {
    const v22 = run(undefined, '2.2.3')
    assert.match(find(v22, 'config-missing').message, /config_path = "\/etc\/containerd\/certs\.d:\/etc\/docker\/certs\.d"/)
    assert.equal(find(v22, 'transfer-multi-dir-config-path').severity, 'error')
    const v21 = run(undefined, '2.1.5')
    assert.equal(find(v21, 'config-path-unset').severity, 'error')
    assert.equal(pullPath(v21), 'transfer')
    const v16 = run(undefined, '1.6.20')
    assert.equal(find(v16, 'config-path-unset').severity, 'error')
    assert.equal(pullPath(v16), 'local')
    const v20 = run(undefined, '2.0.5')
    assert.equal(pullPath(v20), 'local')
  })

  it('an unknown version is said, and the newest behaviour is assumed for a version 3 file', () => {
    const f = run('eks-al2023-discard-false.toml', undefined)
    assert.match(find(f, 'version-unknown').message, /assuming 2\.2 from config version 3/)
    assert.equal(find(f, 'transfer-multi-dir-config-path').severity, 'error')
  })

  it('version 4 configs: refused before 2.3, read from 2.3 on', () => {
    const toml = "version = 4\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/containerd/certs.d'\n"
    const old = analyzeContainerdConfig({ configText: toml, version: '2.2.7' })
    assert.deepEqual(ids(old), ['config-version-unsupported:error'])
    assert.deepEqual(ids(analyzeContainerdConfig({ configText: toml, version: '2.3.1' })), ['pull-path:info'])
  })

  it('an unparsable file is one error and nothing else', () => {
    const f = analyzeContainerdConfig({ configText: 'version = 3\n[plugins.\n', version: '2.2.7' })
    assert.deepEqual(ids(f), ['config-invalid:error'])
    assert.equal(describeContainerdConfig({ configText: 'x = [', version: '2.2.7' }).settings, undefined)
  })

  it('imports: a later file replaces the whole CRI table (version 2 imports migrated on 2.x)', () => {
    const main = "version = 3\nimports = ['/etc/containerd/conf.d/*.toml']\n[plugins.'io.containerd.cri.v1.images']\n  discard_unpacked_layers = true\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/containerd/certs.d'\n"
    const drop = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"\n'
    const f = analyzeContainerdConfig({ configText: main, version: '2.1.5', imports: [{ path: '/etc/containerd/conf.d/10-registry.toml', text: drop }] })
    // The import's table replaced the main file's: discard is gone, the list came in, transfer path.
    assert.ok(!has(f, 'discard-unpacked-layers'))
    assert.equal(pullPath(f), 'transfer')
    assert.equal(find(f, 'transfer-multi-dir-config-path').details?.key, 'plugins."io.containerd.grpc.v1.cri".registry.config_path')
    assert.ok(!has(f, 'imports-not-read'))
  })

  it('configs.tls next to config_path: fatal on 1.x, accepted on 2.x (local pull fallback)', () => {
    const toml = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n[plugins."io.containerd.grpc.v1.cri".registry.configs."r.example".tls]\n  insecure_skip_verify = true\n'
    assert.match(find(analyzeContainerdConfig({ configText: toml, version: '1.7.2' }), 'cri-plugin-fails').message, /`configs\.tls` cannot be set/)
    const v2 = analyzeContainerdConfig({ configText: toml, version: '2.1.1' })
    assert.ok(!has(v2, 'cri-plugin-fails'))
    assert.match(find(v2, 'pull-path').message, /inline registry configs/)
  })

  it('every automatic fallback reason of containerd 2.1+ takes the local path', () => {
    const cases: Array<[string, string]> = [
      ['disable_snapshot_annotations = false', 'disable_snapshot_annotations = false'],
      ['max_concurrent_downloads = 10', 'max_concurrent_downloads = 10 (not 3)'],
      ['image_pull_with_sync_fs = true', 'image_pull_with_sync_fs = true']
    ]
    for (const [line, reason] of cases) {
      const toml = `version = 3\n[plugins.'io.containerd.cri.v1.images']\n  ${line}\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '${CONTAINERD_22_DEFAULT_CONFIG_PATH}'\n`
      const f = analyzeContainerdConfig({ configText: toml, version: '2.2.7' })
      assert.equal(pullPath(f), 'local', line)
      assert.equal(find(f, 'pull-path').details?.reason, `containerd falls back to local pull because of ${reason}`)
      assert.ok(!has(f, 'transfer-multi-dir-config-path'), line)
    }
  })

  it('the transfer plugin\'s own config_path is reported as unused', () => {
    const toml = "version = 3\n[plugins.'io.containerd.transfer.v1.local']\n  config_path = '/etc/containerd/certs.d'\n"
    const f = analyzeContainerdConfig({ configText: toml, version: '2.2.7' })
    assert.match(find(f, 'transfer-config-path-unused').message, /has no effect on CRI pulls/)
  })

  it('spegel writing elsewhere, or into a later directory of the list', () => {
    const single = "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/containerd/certs.d'\n"
    const mismatch = find(analyzeContainerdConfig({ configText: single, version: '2.2.7', mirrorConfigPath: '/etc/spegel/certs.d' }), 'mirror-path-mismatch')
    assert.match(mismatch.fix, /--containerd-registry-config-path '\/etc\/containerd\/certs\.d'/)
    const list = `version = 3\n[plugins.'io.containerd.cri.v1.images']\n  use_local_image_pull = true\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '${CONTAINERD_22_DEFAULT_CONFIG_PATH}'\n`
    const shadowed = analyzeContainerdConfig({ configText: list, version: '2.2.7', mirrorConfigPath: '/etc/docker/certs.d' })
    assert.equal(find(shadowed, 'mirror-path-shadowed').severity, 'info')
    assert.ok(!has(shadowed, 'mirror-path-mismatch'))
    assert.ok(!has(analyzeContainerdConfig({ configText: list, version: '2.2.7', mirrorConfigPath: '/etc/containerd/certs.d/' }), 'mirror-path-mismatch'))
  })

  it('exposes the effective settings', () => {
    const { settings } = describeContainerdConfig({ configText: fixture('eks-al2023-discard-false.toml'), version: '2.1.5' })
    assert.ok(settings !== undefined)
    assert.equal(settings.pullPath, 'transfer')
    assert.equal(settings.configPath, CONTAINERD_22_DEFAULT_CONFIG_PATH)
    assert.equal(settings.configPathSource, 'file')
    assert.equal(settings.configVersion, 3)
    assert.equal(settings.isDaemonVersionKnown, true)
  })
})
