import { createRequire } from 'node:module'
import { findBuildFile } from '../build-files.js'

/**
 * glibc's malloc_trim(0), from the Node-API addon src/native/malloc-trim.c (built by
 * scripts/build-native.mjs into dist/src/native/): gives glibc's free pages between live chunks
 * back to the kernel. Returns true when it gave some back.
 */
export type MallocTrim = () => boolean

/**
 * Where the addon sits relative to the code that loads it: dist/src/observability/ (the modules),
 * dist/src/cli/ (the image's bundle) and dist/bench/ (the benchmarks' router bundle) all reach
 * dist/src/native/ through one of these.
 */
const CANDIDATES = ['../native/malloc-trim.node', '../src/native/malloc-trim.node']

let loaded: MallocTrim | undefined | null = null

/**
 * The trim function, or undefined where the addon was not built (no C compiler at build time) or
 * does not load (a libc other than glibc): the node then runs as before, without it. Loaded once.
 */
export function loadMallocTrim (): MallocTrim | undefined {
  if (loaded !== null) return loaded
  loaded = undefined
  const file = findBuildFile(import.meta.url, CANDIDATES)
  if (file === undefined) return loaded
  try {
    const addon = createRequire(import.meta.url)(file) as { trim?: unknown }
    if (typeof addon.trim === 'function') loaded = addon.trim as MallocTrim
  } catch {
    // Not loadable here (another libc or architecture): run without it.
  }
  return loaded
}
