import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { parseHostPort } from './host-port.js'
import { ConfigError } from './errors.js'

describe('parseHostPort', () => {
  const valid: Array<[string, string, number]> = [
    [':5000', '', 5000],
    ['0.0.0.0:5000', '0.0.0.0', 5000],
    ['[::]:5000', '::', 5000],
    ['[fd00::1]:443', 'fd00::1', 443],
    ['[fe80::1%eth0]:5001', 'fe80::1%eth0', 5001],
    ['localhost:9090', 'localhost', 9090],
    ['spegel.kube-system.svc.cluster.local:5002', 'spegel.kube-system.svc.cluster.local', 5002],
    [':0', '', 0],
    [':65535', '', 65535],
    ['127.0.0.1:080', '127.0.0.1', 80]
  ]
  for (const [input, host, port] of valid) {
    it(`parses ${input}`, () => {
      const parsed = parseHostPort(input, '--registry-addr')
      assert.deepEqual(parsed, { host, port })
      assert.ok(Object.isFrozen(parsed))
    })
  }

  const invalid: Array<[string, RegExp]> = [
    ['', /address is empty/],
    ['5000', /missing port/],
    [':', /missing port/],
    ['localhost', /missing port/],
    [':65536', /port 65536 is out of range; use a port between 0 and 65535/],
    [':99999', /out of range/],
    [':-1', /port "-1" is not a number/],
    [':http', /port "http" is not a number/],
    ['::5000', /too many colons; wrap IPv6 addresses in brackets/],
    ['fd00::1:5000', /too many colons/],
    ['[::]', /missing port/],
    ['[::]5000', /unexpected "5000" after '\]'/],
    ['[::1:5000', /missing '\]'/],
    ['[localhost]:5000', /not an IPv6 address/],
    ['999.1.1.1:5000', /invalid host "999.1.1.1"/],
    ['bad host:5000', /invalid host "bad host"/]
  ]
  for (const [input, message] of invalid) {
    it(`rejects ${JSON.stringify(input)} naming the flag`, () => {
      assert.throws(() => parseHostPort(input, '--metrics-addr'), (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.equal(err.flag, '--metrics-addr')
        assert.match(err.message, /^invalid --metrics-addr /)
        assert.match(err.message, message)
        return true
      })
    })
  }

  it('accepts the flag name without dashes', () => {
    assert.throws(() => parseHostPort('x', 'router-addr'), { flag: '--router-addr' })
  })
})
