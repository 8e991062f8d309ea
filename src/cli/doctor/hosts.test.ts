import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseHostsToml } from '../../mirror-config/read-hosts.js'
import type { HostsConfig } from '../../mirror-config/read-hosts.js'
import { hostsConfigCheck } from './hosts.js'

const CERTS = '/etc/containerd/certs.d'

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

describe('hostsConfigCheck with a multi-directory --containerd-registry-config-path', () => {
  it('quotes the list in the fix and can be named for the transfer-service directory', () => {
    const list = '/etc/containerd/certs.d:/etc/docker/certs.d'
    const r = hostsConfigCheck([], {
      configPath: list, mirrorConfigPath: list, id: 'hosts-config-transfer', title: 'transfer-service hosts.toml',
      nodeAddresses: ['10.0.0.7'], registryPort: 5000, suggestedAddress: '10.0.0.7'
    })
    assert.equal(r.id, 'hosts-config-transfer')
    assert.equal(r.status, 'fail')
    assert.match(r.fix ?? '', /--containerd-registry-config-path '\/etc\/containerd\/certs\.d:\/etc\/docker\/certs\.d' --mirror-targets/)
  })
})
