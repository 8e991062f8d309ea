import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type os from 'node:os'
import { advertisedRegistryAddress, primaryAddress } from './advertise-address.js'

const iface = (address: string, family: 'IPv4' | 'IPv6', internal: boolean): os.NetworkInterfaceInfo =>
  ({ address, family, internal, netmask: '', mac: '', cidr: null, ...(family === 'IPv6' ? { scopeid: 0 } : {}) }) as os.NetworkInterfaceInfo

describe('advertised registry address', () => {
  const interfaces = { lo: [iface('127.0.0.1', 'IPv4', true)], eth0: [iface('fe80::1', 'IPv6', false), iface('10.1.2.3', 'IPv4', false)] }

  it('uses the registry host, then the router host, then the primary address', () => {
    assert.equal(advertisedRegistryAddress({ host: '127.0.0.3', port: 5000 }, { host: '', port: 5001 }, 5000, interfaces), '127.0.0.3:5000')
    assert.equal(advertisedRegistryAddress({ host: '', port: 5000 }, { host: '127.0.0.4', port: 5001 }, 5000, interfaces), '127.0.0.4:5000')
    assert.equal(advertisedRegistryAddress({ host: '0.0.0.0', port: 0 }, { host: '::', port: 5001 }, 40123, interfaces), '10.1.2.3:40123')
  })

  it('brackets IPv6 hosts and falls back to loopback on a machine with no network', () => {
    assert.equal(advertisedRegistryAddress({ host: 'fd00::5', port: 5000 }, { host: '', port: 5001 }, 5000, interfaces), '[fd00::5]:5000')
    assert.equal(primaryAddress({ lo: [iface('127.0.0.1', 'IPv4', true)] }), '127.0.0.1')
    assert.equal(primaryAddress({ eth0: [iface('fd00::7', 'IPv6', false)] }), 'fd00::7')
  })
})
