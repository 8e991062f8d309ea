import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { parseHostsToml } from '../mirror-config/read-hosts.js'
import type { HostsConfig } from '../mirror-config/read-hosts.js'
import {
  containerdConfigChecks,
  containerdVersionCheck,
  hostsConfigCheck,
  parseContainerdVersion,
  readContainerdConfig
} from './doctor-checks.js'
import type { CheckResult, ContainerdConfigCheckOptions } from './doctor-checks.js'

const CERTS = '/etc/containerd/certs.d'

function byId (results: readonly CheckResult[], id: string): CheckResult {
  const r = results.find((c) => c.id === id)
  assert.ok(r !== undefined, `no check ${id} in ${results.map((c) => c.id).join(', ')}`)
  return r
}

describe('containerd config checks', () => {
  let dir: string
  let n = 0
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'doctor-config-'))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  async function check (toml: string | undefined, options: Partial<ContainerdConfigCheckOptions> = {}): Promise<CheckResult[]> {
    const file = path.join(dir, `config-${n++}.toml`)
    if (toml !== undefined) await writeFile(file, toml)
    const facts = await readContainerdConfig(file)
    return containerdConfigChecks(facts, { registryConfigPath: CERTS, ...options })
  }

  it('passes a version 2 config with config_path set and layers kept', async () => {
    const r = await check(`version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  discard_unpacked_layers = false
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`)
    assert.deepEqual(r.map((c) => [c.id, c.status]), [['containerd-config', 'pass'], ['config-path', 'pass'], ['discard-unpacked-layers', 'pass']])
    assert.match(byId(r, 'containerd-config').detail, /config version 2/)
    assert.match(byId(r, 'config-path').detail, /plugins\."io\.containerd\.grpc\.v1\.cri"\.registry\.config_path = "\/etc\/containerd\/certs\.d"/)
    assert.match(byId(r, 'discard-unpacked-layers').detail, /containerd\.discard_unpacked_layers = false/)
  })

  it('reads the version 3 layout (containerd 2.x), single-quoted keys included', async () => {
    const r = await check(`version = 3
[plugins.'io.containerd.cri.v1.images']
  discard_unpacked_layers = true
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = '/etc/containerd/certs.d'
`, { containerdVersion: { major: 2, minor: 1 } })
    assert.equal(byId(r, 'config-path').status, 'pass')
    assert.match(byId(r, 'config-path').detail, /plugins\."io\.containerd\.cri\.v1\.images"\.registry\.config_path/)
    const discard = byId(r, 'discard-unpacked-layers')
    assert.equal(discard.status, 'fail')
    assert.match(discard.detail, /plugins\."io\.containerd\.cri\.v1\.images"\.discard_unpacked_layers = true/)
    assert.match(discard.fix ?? '', /\[plugins\."io\.containerd\.cri\.v1\.images"\]\n {2}discard_unpacked_layers = false/)
  })

  it('ignores the version 2 table in a version 3 config', async () => {
    const r = await check(`version = 3
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`, { containerdVersion: { major: 2, minor: 1 } })
    const cp = byId(r, 'config-path')
    assert.equal(cp.status, 'fail')
    assert.match(cp.fix ?? '', /\[plugins\."io\.containerd\.cri\.v1\.images"\.registry\]\n {2}config_path = "\/etc\/containerd\/certs\.d"/)
  })

  it('finds the containerd 2.x table in a version 2 config (AKS, ACK)', async () => {
    const r = await check(`version = 2
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"
`)
    assert.equal(byId(r, 'config-path').status, 'pass')
  })

  it('reads a version 1 config (no version key)', async () => {
    const r = await check(`[plugins.cri.registry]
  config_path = "/etc/containerd/certs.d"
[plugins.cri.containerd]
  discard_unpacked_layers = true
`)
    assert.match(byId(r, 'containerd-config').detail, /config version 1/)
    assert.equal(byId(r, 'config-path').status, 'pass')
    assert.equal(byId(r, 'discard-unpacked-layers').status, 'fail')
    assert.match(byId(r, 'discard-unpacked-layers').detail, /plugins\.cri\.containerd\.discard_unpacked_layers = true/)
  })

  it('fails discard_unpacked_layers = true in version 2 with the exact key and TOML', async () => {
    const r = await check(`version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  discard_unpacked_layers = true
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`)
    const discard = byId(r, 'discard-unpacked-layers')
    assert.equal(discard.status, 'fail')
    assert.match(discard.fix ?? '', /plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\.discard_unpacked_layers = false/)
    assert.match(discard.fix ?? '', /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\]\n {2}discard_unpacked_layers = false/)
  })

  it('warns on a missing file and fails config_path with TOML for the running version', async () => {
    const v2 = await check(undefined, { containerdVersion: { major: 2, minor: 1 } })
    assert.equal(byId(v2, 'containerd-config').status, 'warn')
    assert.match(byId(v2, 'containerd-config').detail, /does not exist/)
    assert.equal(byId(v2, 'config-path').status, 'fail')
    assert.match(byId(v2, 'config-path').fix ?? '', /\[plugins\."io\.containerd\.cri\.v1\.images"\.registry\]\n {2}config_path = "\/etc\/containerd\/certs\.d"/)
    assert.doesNotMatch(byId(v2, 'config-path').fix ?? '', /grpc\.v1\.cri/)
    assert.equal(byId(v2, 'discard-unpacked-layers').status, 'pass')

    const v1 = await check(undefined, { containerdVersion: { major: 1, minor: 6 } })
    assert.match(byId(v1, 'config-path').fix ?? '', /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.registry\]/)
    assert.doesNotMatch(byId(v1, 'config-path').fix ?? '', /cri\.v1\.images/)

    // containerd unreachable: both layouts, labelled.
    const unknown = await check(undefined)
    assert.match(byId(unknown, 'config-path').fix ?? '', /# config version 2[^\n]*\n\[plugins\."io\.containerd\.grpc\.v1\.cri"\.registry\][\s\S]*# config version 3[^\n]*\n\[plugins\."io\.containerd\.cri\.v1\.images"\.registry\]/)
  })

  it('fails inline registry.mirrors next to config_path (CRI refuses to load)', async () => {
    const r = await check(`version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://mirror.example"]
[plugins."io.containerd.grpc.v1.cri".registry.configs."foo.example".tls]
  insecure_skip_verify = true
`)
    const cp = byId(r, 'config-path')
    assert.equal(cp.status, 'fail')
    assert.match(cp.detail, /`mirrors` cannot be set when `config_path` is provided/)
    assert.match(cp.detail, /registry\.mirrors\."docker\.io"/)
    assert.match(cp.detail, /registry\.configs\."foo\.example"\.tls/)
    assert.match(cp.fix ?? '', /\/etc\/containerd\/certs\.d\/<registry>\/hosts\.toml/)
  })

  it('warns when config_path is not --containerd-registry-config-path', async () => {
    const r = await check(`version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/other.d"
`)
    const cp = byId(r, 'config-path')
    assert.equal(cp.status, 'warn')
    assert.match(cp.detail, /reads mirror files from \/etc\/containerd\/other\.d but spegel writes them to \/etc\/containerd\/certs\.d/)
    assert.match(cp.fix ?? '', /--containerd-registry-config-path \/etc\/containerd\/other\.d/)
  })

  it('accepts a colon list containing the path on 1.x, warns about it on 2.x', async () => {
    const toml = `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
`
    assert.equal(byId(await check(toml, { containerdVersion: { major: 1, minor: 7 } }), 'config-path').status, 'pass')
    const v2 = byId(await check(toml, { containerdVersion: { major: 2, minor: 2 } }), 'config-path')
    assert.equal(v2.status, 'warn')
    assert.match(v2.detail, /several directories/)
  })

  it('fails an unparsable config and skips what depends on it', async () => {
    const r = await check('version = 2\n[plugins."io.containerd.grpc.v1.cri"\n')
    assert.equal(byId(r, 'containerd-config').status, 'fail')
    assert.equal(byId(r, 'config-path').status, 'skip')
    assert.equal(byId(r, 'discard-unpacked-layers').status, 'skip')
  })

  it('merges imports: an imported plugin table replaces the main file\'s whole table', async () => {
    const confd = path.join(dir, 'conf.d')
    await mkdir(confd, { recursive: true })
    await writeFile(path.join(confd, '10-registry.toml'), `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`)
    await writeFile(path.join(confd, 'ignored.txt'), 'not toml [')
    const r = await check(`version = 2
imports = ["conf.d/*.toml"]
[plugins."io.containerd.grpc.v1.cri".containerd]
  discard_unpacked_layers = true
`)
    assert.match(byId(r, 'containerd-config').detail, /imports .*conf\.d\/10-registry\.toml/)
    assert.equal(byId(r, 'config-path').status, 'pass')
    // containerd's mergeConfig replaces plugin sections: the main file's discard setting is gone.
    assert.equal(byId(r, 'discard-unpacked-layers').status, 'pass')
    assert.match(byId(r, 'discard-unpacked-layers').detail, /not set/)
  })

  it('fails when an import names a file that does not exist', async () => {
    const r = await check('version = 2\nimports = ["/nonexistent/doctor-import.toml"]\n')
    assert.equal(byId(r, 'containerd-config').status, 'fail')
    assert.match(byId(r, 'containerd-config').detail, /doctor-import\.toml: ENOENT/)
  })
})

describe('hostsConfigCheck', () => {
  const base = { configPath: CERTS, nodeAddresses: ['127.0.0.1', '::1', '10.0.0.7'], registryPort: 5000, suggestedAddress: '10.0.0.7' }
  const hosts = (registry: string, text: string): HostsConfig => parseHostsToml(text, registry, `${CERTS}/${registry}/hosts.toml`)

  it('passes when a file points at this node with pull, naming registries and ports', () => {
    const r = hostsConfigCheck([
      hosts('docker.io', "server = 'https://registry-1.docker.io'\n[host.'http://10.0.0.7:30020']\ncapabilities = ['pull', 'resolve']\n[host.'http://10.0.0.7:30021']\ncapabilities = ['pull', 'resolve']\n"),
      hosts('_default', "[host.'http://[::1]:5000']\ncapabilities = ['pull']\n")
    ], base)
    assert.equal(r.status, 'pass')
    assert.match(r.detail, /docker\.io/)
    assert.match(r.detail, /_default \(every registry\)/)
    assert.match(r.detail, /ports 5000, 30020, 30021/)
    assert.equal(r.fix, undefined)
  })

  it('counts localhost as this node', () => {
    const r = hostsConfigCheck([hosts('docker.io', '[host."http://localhost:5000"]\n')], base)
    assert.equal(r.status, 'pass')
  })

  it('warns when the only port is neither --registry-addr\'s nor the Helm NodePort', () => {
    const r = hostsConfigCheck([hosts('docker.io', "[host.'http://127.0.0.1:6000']\ncapabilities = ['pull', 'resolve']\n")], base)
    assert.equal(r.status, 'warn')
    assert.match(r.detail, /port 6000 is neither --registry-addr's port 5000 nor the Helm NodePort 30020/)
  })

  it('fails when no entry points at this node, with the configuration command as fix', () => {
    const r = hostsConfigCheck([hosts('docker.io', "[host.'http://10.9.9.9:30020']\ncapabilities = ['pull', 'resolve']\n")], base)
    assert.equal(r.status, 'fail')
    assert.match(r.detail, /10\.9\.9\.9:30020, not at this node's addresses \(127\.0\.0\.1, ::1, 10\.0\.0\.7\)/)
    assert.match(r.fix ?? '', /spegel configuration --containerd-registry-config-path \/etc\/containerd\/certs\.d --mirror-targets http:\/\/10\.0\.0\.7:5000/)
  })

  it('brackets an IPv6 suggestion in the fix', () => {
    const r = hostsConfigCheck([], { ...base, suggestedAddress: 'fd00::7' })
    assert.match(r.fix ?? '', /--mirror-targets http:\/\/\[fd00::7\]:5000/)
  })

  it('does not count an entry without the pull capability', () => {
    const r = hostsConfigCheck([hosts('docker.io', "[host.'http://127.0.0.1:5000']\ncapabilities = ['resolve']\n")], base)
    assert.equal(r.status, 'fail')
    assert.match(r.detail, /without pull: docker\.io → http:\/\/127\.0\.0\.1:5000 \(capabilities resolve\)/)
  })

  it('fails on no files, on an unreadable directory, and on a file containerd cannot decode', () => {
    assert.equal(hostsConfigCheck([], base).status, 'fail')
    const unreadable = hostsConfigCheck([], { ...base, readError: 'EACCES' })
    assert.equal(unreadable.status, 'fail')
    assert.match(unreadable.detail, /cannot list \/etc\/containerd\/certs\.d: EACCES/)
    const broken = hostsConfigCheck([
      hosts('docker.io', "[host.'http://127.0.0.1:5000']\ncapabilities = ['pull']\n"),
      hosts('ghcr.io', '[host."http://127.0.0.1:5000"\n')
    ], base)
    assert.equal(broken.status, 'fail')
    assert.match(broken.detail, /ghcr\.io\/hosts\.toml: invalid TOML/)
    assert.match(broken.fix ?? '', /fix or remove \/etc\/containerd\/certs\.d\/ghcr\.io\/hosts\.toml/)
  })
})

describe('containerd version', () => {
  it('parses distribution and tag spellings', () => {
    assert.deepEqual(parseContainerdVersion('1.6.20~ds1'), { major: 1, minor: 6 })
    assert.deepEqual(parseContainerdVersion('v2.1.4'), { major: 2, minor: 1 })
    assert.equal(parseContainerdVersion('devel'), undefined)
  })

  it('passes 2.1 and later, warns before', () => {
    assert.equal(containerdVersionCheck('v2.1.0', 'abc').status, 'pass')
    assert.equal(containerdVersionCheck('3.0.0', '').status, 'pass')
    assert.equal(containerdVersionCheck('2.0.5', '').status, 'warn')
    const old = containerdVersionCheck('1.6.20~ds1', '1.6.20~ds1-1')
    assert.equal(old.status, 'warn')
    assert.match(old.detail, /containerd 1\.6\.20~ds1 \(revision 1\.6\.20~ds1-1\) is older than 2\.1/)
  })
})
