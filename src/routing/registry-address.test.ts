import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { canonicalIp, isUsablePeerIp, parseRegistryAddress } from './registry-address.js'
import { pinTag, splitPinnedKey } from './tag-key.js'

describe('parseRegistryAddress', () => {
  it('takes IP:port and [IPv6]:port, in canonical form', () => {
    assert.deepEqual(parseRegistryAddress('10.0.0.5:5000'), { ip: '10.0.0.5', port: 5000, hostPort: '10.0.0.5:5000' })
    assert.deepEqual(parseRegistryAddress('127.0.0.1:1'), { ip: '127.0.0.1', port: 1, hostPort: '127.0.0.1:1' })
    assert.deepEqual(parseRegistryAddress('[FD00:0:0::1]:5000'), { ip: 'fd00::1', port: 5000, hostPort: '[fd00::1]:5000' })
    // A dual-stack socket's form of an IPv4 address is that IPv4 address.
    assert.deepEqual(parseRegistryAddress('[::ffff:10.1.2.3]:80'), { ip: '10.1.2.3', port: 80, hostPort: '10.1.2.3:80' })
  })

  it('refuses hostnames, URLs, userinfo, paths, zones, bad ports and addresses no registry has', () => {
    for (const text of [
      'registry.example:5000', 'localhost:5000', 'http://10.0.0.5:5000', '10.0.0.5:5000/v2', 'user@10.0.0.5:5000',
      '10.0.0.5', '10.0.0.5:', '10.0.0.5:0', '10.0.0.5:65536', '10.0.0.5:5000 ', '010.0.0.5:5000', '127.1:5000',
      '0x7f.0.0.1:5000', 'fd00::1:5000', '[fe80::1%eth0]:5000', '[10.0.0.5]:5000',
      '169.254.169.254:80', '0.0.0.0:5000', '224.0.0.1:5000', '255.255.255.255:5000', '[::]:5000', '[fe80::1]:5000',
      '[ff02::1]:5000', '[::ffff:169.254.169.254]:80', ''
    ]) {
      assert.equal(parseRegistryAddress(text), undefined, text)
    }
  })

  it('canonicalises IPs and tells usable peer IPs apart', () => {
    assert.equal(canonicalIp('::FFFF:7f00:1'), '127.0.0.1')
    assert.equal(canonicalIp('2001:DB8:0:0:0:0:0:1'), '2001:db8::1')
    assert.equal(canonicalIp('example.com'), undefined)
    for (const ip of ['10.0.0.1', '192.168.1.1', '127.0.0.1', '8.8.8.8', 'fd00::1', '2001:db8::1', '::1']) assert.equal(isUsablePeerIp(ip), true, ip)
    for (const ip of ['0.1.2.3', '169.254.1.1', '239.1.1.1', '240.0.0.1', '::', 'fe80::1', 'ff05::2', 'nonsense']) assert.equal(isUsablePeerIp(ip), false, ip)
  })
})

describe('pinned tags', () => {
  const d = `sha256:${'a'.repeat(64)}`
  it('pins a tag to a digest and splits it back; everything else is an opaque key', () => {
    assert.equal(pinTag('example.com/team/app:1.0', d), `example.com/team/app:1.0@${d}`)
    assert.deepEqual(splitPinnedKey(pinTag('example.com:5000/team/app:1.0', d)), { key: 'example.com:5000/team/app:1.0', digest: d })
    for (const key of ['example.com/team/app:1.0', d, `@${d}`, 'a@b', `a@${d}x`, `a@b@${d}`, 'ü@sha256:short']) {
      assert.deepEqual(splitPinnedKey(key), { key }, key)
    }
  })
})
