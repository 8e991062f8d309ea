import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * The first of `candidates` (paths relative to the module at `moduleUrl`) that exists, as a file
 * path; undefined when none does.
 *
 * Files that ship beside the compiled code (proto/, the page script, the native addon) are found
 * against the loading module's own URL, and that module runs from more than one place: its own
 * file under dist/src/<folder>/, the image's bundle in dist/src/cli/ (scripts/bundle.mjs), or the
 * benchmarks' router bundle in dist/bench/. Each caller lists where its file sits from each.
 */
export function findBuildFile (moduleUrl: string | URL, candidates: readonly string[]): string | undefined {
  for (const candidate of candidates) {
    const file = fileURLToPath(new URL(candidate, moduleUrl))
    if (existsSync(file)) return file
  }
  return undefined
}
