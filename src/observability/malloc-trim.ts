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

/**
 * madvise(start, length, MADV_PAGEOUT) from the same addon (src/observability/page-out.ts):
 * returns 0, or the errno.
 */
export type PageOutNative = (start: number, length: number) => number

interface Addon { trim?: unknown, pageOut?: unknown }
let loaded: Addon | undefined | null = null

/** The addon's exports, or undefined where it is not built or does not load. Loaded once. */
function loadAddon (): Addon | undefined {
  if (loaded !== null) return loaded
  loaded = undefined
  const file = findBuildFile(import.meta.url, CANDIDATES)
  if (file === undefined) return loaded
  try {
    loaded = createRequire(import.meta.url)(file) as Addon
  } catch {
    // Not loadable here (another libc or architecture): run without it.
  }
  return loaded
}

/**
 * The trim function, or undefined where the addon was not built (no C compiler at build time) or
 * does not load (a libc other than glibc): the node then runs as before, without it.
 */
export function loadMallocTrim (): MallocTrim | undefined {
  const trim = loadAddon()?.trim
  return typeof trim === 'function' ? trim as MallocTrim : undefined
}

/** madvise(MADV_PAGEOUT) through the addon, or undefined without it (or with an older build). */
export function loadPageOut (): PageOutNative | undefined {
  const pageOut = loadAddon()?.pageOut
  return typeof pageOut === 'function' ? pageOut as PageOutNative : undefined
}
