import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { analyzeContainerdConfigFile } from '../../mirror-config/index.js'
import type { CheckResult } from './check.js'
import { containerdConfigChecks } from './containerd-config.js'

const CERTS = '/etc/containerd/certs.d'
const LIST = '/etc/containerd/certs.d:/etc/docker/certs.d'

function byId (results: readonly CheckResult[], id: string): CheckResult {
  const r = results.find((c) => c.id === id)
  assert.ok(r !== undefined, `no check ${id} in ${results.map((c) => c.id).join(', ')}`)
  return r
}

interface CheckOptions {
  version?: string
  registryConfigPath?: string
  transferDirHosts?: CheckResult
}

describe('doctor: containerd config checks', () => {
  let dir: string
  let n = 0
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'doctor-config-'))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  async function check (toml: string | undefined, options: CheckOptions = {}): Promise<CheckResult[]> {
    const file = path.join(dir, `config-${n++}.toml`)
    if (toml !== undefined) await writeFile(file, toml)
    const registryConfigPath = options.registryConfigPath ?? CERTS
    const report = await analyzeContainerdConfigFile({ file, mirrorConfigPath: registryConfigPath, ...(options.version === undefined ? {} : { version: options.version }) })
    return containerdConfigChecks(report, { registryConfigPath, ...(options.transferDirHosts === undefined ? {} : { transferDirHosts: options.transferDirHosts }) })
  }

  it('passes a version 2 config with config_path set and layers kept', async () => {
    const r = await check(`version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  discard_unpacked_layers = false
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`, { version: '1.6.20~ds1' })
    assert.deepEqual(r.map((c) => [c.id, c.status]), [['containerd-config', 'pass'], ['config-path', 'pass'], ['discard-unpacked-layers', 'pass'], ['pull-path', 'pass']])
    assert.match(byId(r, 'containerd-config').detail, /config version 2/)
    assert.match(byId(r, 'config-path').detail, /plugins\."io\.containerd\.grpc\.v1\.cri"\.registry\.config_path = "\/etc\/containerd\/certs\.d"/)
    assert.match(byId(r, 'discard-unpacked-layers').detail, /containerd\.discard_unpacked_layers = false/)
    assert.match(byId(r, 'pull-path').detail, /local pull path/)
  })

  it('reads the version 3 layout (containerd 2.x), single-quoted keys included', async () => {
    const r = await check(`version = 3
[plugins.'io.containerd.cri.v1.images']
  discard_unpacked_layers = true
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = '/etc/containerd/certs.d'
`, { version: '2.1.0' })
    assert.equal(byId(r, 'config-path').status, 'pass')
    assert.match(byId(r, 'config-path').detail, /plugins\."io\.containerd\.cri\.v1\.images"\.registry\.config_path/)
    const discard = byId(r, 'discard-unpacked-layers')
    assert.equal(discard.status, 'fail')
    assert.match(discard.detail, /plugins\."io\.containerd\.cri\.v1\.images"\.discard_unpacked_layers = true/)
    assert.match(discard.fix ?? '', /\[plugins\."io\.containerd\.cri\.v1\.images"\]\n {2}discard_unpacked_layers = false/)
    assert.match(byId(r, 'pull-path').detail, /falls back to local pull because of discard_unpacked_layers = true/)
  })

  it('ignores the version 2 table in a version 3 config', async () => {
    const r = await check(`version = 3
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`, { version: '2.1.0' })
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
    // The version was not known: said in the pull-path check.
    assert.equal(byId(r, 'pull-path').status, 'warn')
    assert.match(byId(r, 'pull-path').detail, /version is unknown/)
  })

  it('reads a version 1 config (no version key)', async () => {
    const r = await check(`[plugins.cri.registry]
  config_path = "/etc/containerd/certs.d"
[plugins.cri.containerd]
  discard_unpacked_layers = true
`, { version: '1.6.20' })
    assert.match(byId(r, 'containerd-config').detail, /config version 1/)
    assert.equal(byId(r, 'config-path').status, 'pass')
    assert.equal(byId(r, 'discard-unpacked-layers').status, 'fail')
    assert.match(byId(r, 'discard-unpacked-layers').detail, /plugins\.cri\.containerd\.discard_unpacked_layers = true/)
  })

  it('warns on a missing file, with the defaults of the running version', async () => {
    const v21 = await check(undefined, { version: '2.1.2' })
    assert.equal(byId(v21, 'containerd-config').status, 'warn')
    assert.match(byId(v21, 'containerd-config').detail, /does not exist/)
    assert.equal(byId(v21, 'config-path').status, 'fail')
    assert.match(byId(v21, 'config-path').fix ?? '', /\[plugins\."io\.containerd\.cri\.v1\.images"\.registry\]\n {2}config_path = "\/etc\/containerd\/certs\.d"/)
    assert.doesNotMatch(byId(v21, 'config-path').fix ?? '', /grpc\.v1\.cri/)
    assert.equal(byId(v21, 'discard-unpacked-layers').status, 'pass')

    const v16 = await check(undefined, { version: '1.6.20' })
    assert.match(byId(v16, 'config-path').fix ?? '', /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.registry\]/)
    assert.doesNotMatch(byId(v16, 'config-path').fix ?? '', /cri\.v1\.images/)

    // 2.2 with no file: the two-directory default and the transfer service.
    const v22 = await check(undefined, { version: '2.2.4' })
    assert.equal(byId(v22, 'config-path').status, 'pass')
    assert.match(byId(v22, 'config-path').detail, /built-in default "\/etc\/containerd\/certs\.d:\/etc\/docker\/certs\.d"/)
    assert.equal(byId(v22, 'pull-path').status, 'fail')
  })

  it('fails the transfer-service trap on 2.2 (v3 layout) with both fixes, and warns once spegel\'s files are in the literal directory', async () => {
    const toml = `version = 3
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = '${LIST}'
`
    const r = await check(toml, { version: 'v2.2.1' })
    const pull = byId(r, 'pull-path')
    assert.equal(pull.status, 'fail')
    assert.match(pull.detail, /containerd 2\.2\.1 pulls through the transfer service, which reads config_path "\/etc\/containerd\/certs\.d:\/etc\/docker\/certs\.d" as ONE directory/)
    assert.match(pull.fix ?? '', /without a restart: .*spegel configuration --containerd-registry-config-path '\/etc\/containerd\/certs\.d:\/etc\/docker\/certs\.d'/)
    assert.match(pull.fix ?? '', /with a restart: /)
    // config_path itself is fine (containerd reads spegel's directory on the local path).
    assert.equal(byId(r, 'config-path').status, 'pass')

    const worked: CheckResult = { id: 'hosts-config-transfer', title: 'transfer-service hosts.toml', status: 'pass', detail: 'mirrors _default (every registry) through this node on port 5000' }
    const ok = await check(toml, { version: 'v2.2.1', registryConfigPath: LIST, transferDirHosts: worked })
    assert.equal(byId(ok, 'pull-path').status, 'warn')
    assert.match(byId(ok, 'pull-path').detail, /literal directory holds spegel's mirror files/)
    const missing = await check(toml, { version: 'v2.2.1', registryConfigPath: LIST, transferDirHosts: { ...worked, status: 'fail', detail: 'no files' } })
    assert.equal(byId(missing, 'pull-path').status, 'fail')
  })

  it('a colon list is fine on 1.x and with use_local_image_pull', async () => {
    const v2 = `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "${LIST}"
`
    const r = await check(v2, { version: '1.7.20' })
    assert.equal(byId(r, 'config-path').status, 'pass')
    assert.equal(byId(r, 'pull-path').status, 'pass')
    const local = await check(`version = 3
[plugins.'io.containerd.cri.v1.images']
  use_local_image_pull = true
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = '${LIST}'
`, { version: '2.2.7' })
    assert.equal(byId(local, 'pull-path').status, 'pass')
    assert.match(byId(local, 'pull-path').detail, /use_local_image_pull = true/)
  })

  it('fails inline registry.mirrors next to config_path (CRI refuses to load)', async () => {
    const r = await check(`version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://mirror.example"]
[plugins."io.containerd.grpc.v1.cri".registry.configs."foo.example".tls]
  insecure_skip_verify = true
`, { version: '1.6.20' })
    const cp = byId(r, 'config-path')
    assert.equal(cp.status, 'fail')
    assert.match(cp.detail, /`mirrors` cannot be set when `config_path` is provided/)
    assert.match(cp.detail, /registry\.mirrors \(docker\.io\)/)
    assert.match(cp.detail, /registry\.configs\.<host>\.tls \(foo\.example\)/)
    assert.match(cp.fix ?? '', /\/etc\/containerd\/certs\.d\/<registry>\/hosts\.toml/)
  })

  it('warns when config_path is not --containerd-registry-config-path', async () => {
    const r = await check(`version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/other.d"
`, { version: '1.6.20' })
    const cp = byId(r, 'config-path')
    assert.equal(cp.status, 'warn')
    assert.match(cp.detail, /reads mirror files from "\/etc\/containerd\/other\.d" but spegel writes them to "\/etc\/containerd\/certs\.d"/)
    assert.match(cp.fix ?? '', /--containerd-registry-config-path '\/etc\/containerd\/other\.d'/)
  })

  it('fails an unparsable config and skips what depends on it', async () => {
    const r = await check('version = 2\n[plugins."io.containerd.grpc.v1.cri"\n', { version: '1.6.20' })
    assert.equal(byId(r, 'containerd-config').status, 'fail')
    assert.match(byId(r, 'containerd-config').detail, /refuses to start/)
    assert.equal(byId(r, 'config-path').status, 'skip')
    assert.equal(byId(r, 'discard-unpacked-layers').status, 'skip')
    assert.equal(byId(r, 'pull-path').status, 'skip')
  })

  it('fails a version 4 config on containerd 2.2', async () => {
    const r = await check("version = 4\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/containerd/certs.d'\n", { version: '2.2.0' })
    assert.equal(byId(r, 'containerd-config').status, 'fail')
    assert.match(byId(r, 'containerd-config').detail, /accepts at most 3/)
    assert.equal(byId(r, 'pull-path').status, 'skip')
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
`, { version: '1.7.1' })
    assert.match(byId(r, 'containerd-config').detail, /imports .*conf\.d\/10-registry\.toml/)
    assert.equal(byId(r, 'config-path').status, 'pass')
    // containerd's mergeConfig replaces plugin sections: the main file's discard setting is gone.
    assert.equal(byId(r, 'discard-unpacked-layers').status, 'pass')
    assert.match(byId(r, 'discard-unpacked-layers').detail, /not set/)
  })

  it('fails when an import names a file that does not exist', async () => {
    const r = await check('version = 2\nimports = ["/nonexistent/doctor-import.toml"]\n', { version: '1.6.20' })
    assert.equal(byId(r, 'containerd-config').status, 'fail')
    assert.match(byId(r, 'containerd-config').detail, /doctor-import\.toml: ENOENT/)
    assert.equal(byId(r, 'pull-path').status, 'skip')
  })
})
