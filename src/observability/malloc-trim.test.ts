import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { describe, it } from 'node:test'
import { loadMallocTrim } from './malloc-trim.js'

const MODULE_URL = new URL('./malloc-trim.js', import.meta.url).href

// A process that leaves holes in glibc's heap: 40,000 ArrayBuffers of 1,000 bytes (their backing
// stores come from malloc), every 20th kept, the rest collected. It prints its [heap] RSS before
// and after one trim.
const HOLES = `
import { readFileSync } from 'node:fs'
const { loadMallocTrim } = await import(${JSON.stringify(MODULE_URL)})
const heapKiB = () => {
  const smaps = readFileSync('/proc/self/smaps', 'utf8')
  const at = smaps.indexOf('[heap]')
  return at < 0 ? 0 : Number(/Rss:\\s+(\\d+) kB/.exec(smaps.slice(at))[1])
}
const trim = loadMallocTrim()
const kept = []
let all = []
for (let i = 0; i < 40000; i++) {
  const b = new ArrayBuffer(1000)
  new Uint8Array(b).fill(1)
  all.push(b)
  if (i % 20 === 0) kept.push(b)
}
all = null
gc(); gc()
const before = heapKiB()
const gaveBack = trim()
const after = heapKiB()
process.stdout.write(JSON.stringify({ before, gaveBack, after, kept: kept.length }))
`

describe('malloc trim addon', () => {
  it('is built and loads (npm run build compiles src/native/malloc-trim.c; it needs gcc and libc6-dev)', () => {
    const trim = loadMallocTrim()
    assert.equal(typeof trim, 'function', 'dist/src/native/malloc-trim.node is missing or does not load: apt-get install gcc libc6-dev, then npm run build')
    assert.equal(typeof trim?.(), 'boolean')
  })

  it('gives the free pages between live chunks of glibc\'s heap back, with the image\'s malloc settings', () => {
    const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', HOLES], {
      env: { ...process.env, MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_TRIM_THRESHOLD_: '131072' },
      encoding: 'utf8'
    })
    const r = JSON.parse(out) as { before: number, gaveBack: boolean, after: number }
    // About 38 MB of 40 MB freed sit between the kept buffers; glibc's own trimming at the top
    // cannot return them.
    assert.ok(r.before > 30_000, `the holes were made: [heap] ${r.before} KiB`)
    assert.equal(r.gaveBack, true)
    assert.ok(r.after < r.before / 2, `[heap] ${r.before} KiB -> ${r.after} KiB`)
  })
})
