import { ConfigError, ValueError } from './errors.js'

const DURATION_FIX = 'use a Go duration such as 20ms, 2s, 1m30s or 1.5h (units: ns, us, µs, ms, s, m, h)'

const NS_PER_UNIT: ReadonlyMap<string, number> = new Map([
  ['ns', 1],
  ['us', 1e3],
  ['µs', 1e3], // U+00B5 micro sign, accepted by Go
  ['μs', 1e3], // U+03BC Greek small mu, accepted by Go
  ['ms', 1e6],
  ['s', 1e9],
  ['m', 60e9],
  ['h', 3600e9]
])

// Go durations are int64 nanoseconds; anything beyond is an overflow error there too.
const MAX_NS = 2 ** 63 - 1

function isDigit (c: string | undefined): boolean {
  return c !== undefined && c >= '0' && c <= '9'
}

/**
 * Go's time.ParseDuration grammar, returning nanoseconds. Follows Go's rules: optional sign,
 * bare `0` without a unit, decimal fractions per element (`1.5h`, `.5s`), units required
 * otherwise. Throws ValueError with Go's wording.
 */
export function parseDurationNs (input: string): number {
  const invalid = (): ValueError => new ValueError(`invalid duration ${JSON.stringify(input)}`, DURATION_FIX)
  let s = input
  let negative = false
  if (s.startsWith('-') || s.startsWith('+')) {
    negative = s[0] === '-'
    s = s.slice(1)
  }
  if (s === '0') return 0
  if (s === '') throw invalid()

  let total = 0
  while (s !== '') {
    if (!(s[0] === '.' || isDigit(s[0]))) throw invalid()
    let i = 0
    while (isDigit(s[i])) i++
    const intPart = s.slice(0, i)
    s = s.slice(i)
    let fracPart = ''
    if (s.startsWith('.')) {
      s = s.slice(1)
      let j = 0
      while (isDigit(s[j])) j++
      fracPart = s.slice(0, j)
      s = s.slice(j)
    }
    if (intPart === '' && fracPart === '') throw invalid()

    let u = 0
    while (u < s.length && !(s[u] === '.' || isDigit(s[u]))) u++
    if (u === 0) {
      throw new ValueError(`missing unit in duration ${JSON.stringify(input)}`, DURATION_FIX)
    }
    const unit = s.slice(0, u)
    s = s.slice(u)
    const nsPerUnit = NS_PER_UNIT.get(unit)
    if (nsPerUnit === undefined) {
      throw new ValueError(`unknown unit ${JSON.stringify(unit)} in duration ${JSON.stringify(input)}`, DURATION_FIX)
    }
    const value = Number(intPart === '' ? '0' : intPart) * nsPerUnit +
      (fracPart === '' ? 0 : Number(`0.${fracPart}`) * nsPerUnit)
    total += value
    if (total > MAX_NS) throw invalid()
  }
  return negative ? -total : total
}

/**
 * Parses a Go duration (`20ms`, `2s`, `1m30s`, `1.5h`, `300us`) into milliseconds. Sub-millisecond
 * durations give fractions (`300us` → 0.3). Throws ConfigError on anything Go would reject.
 */
export function parseDuration (s: string): number {
  try {
    return parseDurationNs(s) / 1e6
  } catch (err) {
    if (err instanceof ValueError) throw new ConfigError(err.message, { fix: err.fix, cause: err })
    throw err
  }
}
