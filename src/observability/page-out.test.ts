import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, it } from 'node:test'
import { copyNodeBinary } from '../../test/helpers/node-binary.js'
import { executableMappings, pageOutExecutable } from './page-out.js'

const EXE = '/opt/node 24/bin/node'
// The shape of /proc/self/maps: the executable's read-only, executable and writable parts,
// another file, anonymous memory, and a path with a space.
const MAPS = [
  `00400000-0074a000 r--p 00000000 fe:01 1234    ${EXE}`,
  `0074a000-03200000 r-xp 0034a000 fe:01 1234    ${EXE}`,
  `03201000-066dd000 r--p 02e01000 fe:01 1234    ${EXE}`,
  `06b52000-06b7d000 rw-p 06751000 fe:01 1234    ${EXE}`,
  '7f0000000000-7f0000021000 rw-p 00000000 00:00 0 ',
  '7f1000000000-7f1000028000 r--p 00000000 fe:01 99     /usr/lib/x86_64-linux-gnu/libc.so.6',
  '7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]'
].join('\n')

describe('page-out of the executable', () => {
  it('picks the executable\'s read-only mappings from /proc/self/maps', () => {
    assert.deepEqual(executableMappings(MAPS, EXE), [
      { start: 0x400000, end: 0x74a000 },
      { start: 0x74a000, end: 0x3200000 },
      { start: 0x3201000, end: 0x66dd000 }
    ])
    assert.deepEqual(executableMappings(MAPS, '/usr/bin/node'), [], 'another executable\'s path matches nothing')
  })

  it('asks the kernel for each mapping and reports what it did', () => {
    const calls: Array<[number, number]> = []
    const files: Record<string, string> = { '/proc/self/maps': MAPS, '/proc/self/status': 'Name:\tnode\nRssFile:\t   56000 kB\n' }
    const result = pageOutExecutable({
      exePath: EXE,
      readText: (file) => files[file] ?? '',
      native: (start, length) => {
        calls.push([start, length])
        return calls.length === 2 ? 22 : 0 // EINVAL for the second: the others still count
      }
    })
    assert.deepEqual(calls, [[0x400000, 0x34a000], [0x74a000, 0x2ab6000], [0x3201000, 0x34dc000]])
    assert.equal(result?.mappings, 3)
    assert.equal(result?.bytes, 0x34a000 + 0x34dc000)
    assert.equal(result?.errno, 22)
    assert.equal(result?.fileKiBBefore, 56000)
  })

  it('gives back most of a lone process\'s executable pages (the real addon, a private copy of node)', (t) => {
    // A copy of the binary, so no other process maps its pages: the kernel leaves shared ones.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'spg-pageout-'))
    try {
      const exe = copyNodeBinary(dir)
      const moduleUrl = new URL('./page-out.js', import.meta.url).href
      const script = `
        const { loadExecutablePageOut } = await import(${JSON.stringify(moduleUrl)})
        const pageOut = loadExecutablePageOut()
        process.stdout.write(JSON.stringify(pageOut === undefined ? { missing: true } : pageOut()))
      `
      const out = JSON.parse(execFileSync(exe, ['--input-type=module', '-e', script], { encoding: 'utf8' })) as { missing?: boolean, errno: number, bytes: number, fileKiBBefore: number, fileKiBAfter: number }
      assert.notEqual(out.missing, true, 'dist/src/native/malloc-trim.node is missing or does not load: apt-get install gcc libc6-dev, then npm run build')
      if (out.errno === 22) {
        t.skip('this kernel has no MADV_PAGEOUT (Linux < 5.4)')
        return
      }
      assert.equal(out.errno, 0)
      assert.ok(out.bytes > 10 * 1024 * 1024, `asked for the executable's mappings (${out.bytes} bytes)`)
      assert.ok(out.fileKiBAfter < out.fileKiBBefore / 2, `file pages ${out.fileKiBBefore} KiB before, ${out.fileKiBAfter} KiB after`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
