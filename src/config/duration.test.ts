import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { parseDuration } from './duration.js'
import { ConfigError } from './errors.js'

describe('parseDuration (Go time.ParseDuration → ms)', () => {
  const valid: Array<[string, number]> = [
    ['20ms', 20],
    ['2s', 2000],
    ['1m30s', 90_000],
    ['1.5h', 5_400_000],
    ['300us', 0.3],
    ['300µs', 0.3], // U+00B5
    ['300μs', 0.3], // U+03BC
    ['1500ns', 0.0015],
    ['0', 0],
    ['+5s', 5000],
    ['-1.5s', -1500],
    ['.5s', 500],
    ['5.s', 5000],
    ['1h2m3s4ms', 3_723_004],
    ['0ms', 0]
  ]
  for (const [input, ms] of valid) {
    it(`parses ${input}`, () => {
      assert.ok(Math.abs(parseDuration(input) - ms) < 1e-9, `${input} → ${parseDuration(input)}, want ${ms}`)
    })
  }

  const junk: Array<[string, RegExp]> = [
    ['', /invalid duration ""/],
    ['abc', /invalid duration "abc"/],
    ['20', /missing unit in duration "20"/],
    ['1.5', /missing unit/],
    ['20x', /unknown unit "x" in duration "20x"/],
    ['20MS', /unknown unit "MS"/],
    ['1msx', /unknown unit "msx"/],
    ['.s', /invalid duration/],
    ['1s-2s', /unknown unit "s-"/],
    ['--1s', /invalid duration/],
    [' 1s', /invalid duration/],
    ['9999999999h', /invalid duration/]
  ]
  for (const [input, message] of junk) {
    it(`rejects ${JSON.stringify(input)} with a fix`, () => {
      assert.throws(() => parseDuration(input), (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.equal(err.code, 'CONFIG_INVALID')
        assert.match(err.message, message)
        assert.match(err.message, /use a Go duration such as 20ms/)
        assert.ok(err.fix !== undefined)
        return true
      })
    })
  }
})
