import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { containerdVersionCheck, parseContainerdVersion } from './version.js'

describe('containerd version', () => {
  it('parses distribution and tag spellings', () => {
    assert.deepEqual(parseContainerdVersion('1.6.20~ds1'), { major: 1, minor: 6, patch: 20 })
    assert.deepEqual(parseContainerdVersion('v2.1.4'), { major: 2, minor: 1, patch: 4 })
    assert.equal(parseContainerdVersion('devel'), undefined)
  })

  it('passes 2.1 and later, warns before', () => {
    assert.equal(containerdVersionCheck('v2.1.0', 'abc').status, 'pass')
    assert.equal(containerdVersionCheck('3.0.0', '').status, 'pass')
    assert.equal(containerdVersionCheck('2.0.5', '').status, 'warn')
    const old = containerdVersionCheck('1.6.20~ds1', '1.6.20~ds1-1')
    assert.equal(old.status, 'warn')
    assert.match(old.detail, /containerd 1\.6\.20~ds1 \(revision 1\.6\.20~ds1-1\) is older than 2\.1/)
    assert.equal(containerdVersionCheck('devel', '').status, 'warn')
  })
})
