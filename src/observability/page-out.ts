import { readFileSync } from 'node:fs'
import { loadPageOut, type PageOutNative } from './malloc-trim.js'

/**
 * Hands back the pages of the node executable that only start-up used.
 *
 * Why: more than half of an idle node's RSS is not its heap but the Node.js binary's own pages
 * (126 MB of file, mapped): 55.6 MiB of the 103.8 MiB median of 30 full nodes × 5,000 keys.
 * Start-up runs code that never runs again (V8's snapshot, module compilation, the CLI,
 * OpenSSL's and ICU's set-up) and the kernel maps 64 KiB around every page a fault touches, so
 * the process keeps far more of the binary than it uses. The kernel would give those clean pages
 * up under memory pressure; without pressure they stay, in RSS and in the pod's memory. One
 * madvise(MADV_PAGEOUT) over the executable's read-only mappings, once start-up is over, drops
 * them; what the idle node still runs comes back at its next use (a page fault, read from the
 * page cache or the image's file). A lone full node × 5,000 keys, by gdb: file pages 56.7 MiB
 * → 11.3 right after → 19.5 MiB where it stayed; RSS 88 → 50.6 MiB.
 *
 * The kernel leaves pages that other processes map too: nodes sharing one binary on one machine
 * (the benchmarks, tests) keep them; a DaemonSet's pod is the only user of its image's binary
 * on a node. Kernels before 5.4 have no MADV_PAGEOUT (EINVAL): nothing changes there.
 */

/** How long after start the executable's pages are paged out: a synced 30-node cluster took 57 s from the first start. */
export const PAGE_OUT_AFTER_MS = 90_000

export interface Mapping {
  readonly start: number
  readonly end: number
}

/**
 * The read-only mappings of `exePath` in /proc/self/maps text: its code and constant data. The
 * writable ones (data, relocations) are private copies the process may have changed; they are
 * left alone.
 */
export function executableMappings (maps: string, exePath: string): Mapping[] {
  const out: Mapping[] = []
  for (const line of maps.split('\n')) {
    // start-end perms offset dev inode path; the path may hold spaces, so it is the rest.
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s+(.*)$/.exec(line)
    if (m === null || m[4] !== exePath || m[3]![1] === 'w') continue
    out.push({ start: Number.parseInt(m[1]!, 16), end: Number.parseInt(m[2]!, 16) })
  }
  return out
}

export interface PageOutResult {
  /** Mappings asked for. */
  readonly mappings: number
  readonly bytes: number
  /** The first errno, or 0 when every madvise succeeded. */
  readonly errno: number
  /** RssFile of /proc/self/status before and right after, in KiB (what was given back at once). */
  readonly fileKiBBefore: number | undefined
  readonly fileKiBAfter: number | undefined
}

export interface PageOutDeps {
  readonly native: PageOutNative
  readonly readText?: (file: string) => string
  readonly exePath?: string
}

/** Pages out the executable's read-only mappings; undefined where /proc cannot be read. */
export function pageOutExecutable (deps: PageOutDeps): PageOutResult | undefined {
  const readText = deps.readText ?? ((file: string) => readFileSync(file, 'utf8'))
  // Node's execPath is already the resolved /proc/self/exe, the path /proc/self/maps shows.
  const exePath = deps.exePath ?? process.execPath
  let maps: string
  try {
    maps = readText('/proc/self/maps')
  } catch {
    return undefined
  }
  const fileKiBBefore = rssFileKiB(readText)
  let bytes = 0
  let errno = 0
  const mappings = executableMappings(maps, exePath)
  for (const { start, end } of mappings) {
    const rc = deps.native(start, end - start)
    if (rc === 0) bytes += end - start
    else if (errno === 0) errno = rc
  }
  return { mappings: mappings.length, bytes, errno, fileKiBBefore, fileKiBAfter: rssFileKiB(readText) }
}

function rssFileKiB (readText: (file: string) => string): number | undefined {
  try {
    return statusRssFileKiB(readText('/proc/self/status'))
  } catch {
    return undefined
  }
}

/** RssFile of a /proc/<pid>/status text, in KiB; undefined where the kernel does not report it. */
export function statusRssFileKiB (status: string): number | undefined {
  const m = /^RssFile:\s+(\d+) kB$/m.exec(status)
  return m === null ? undefined : Number(m[1])
}

/** The page-out with the real addon, or undefined where the addon is missing. */
export function loadExecutablePageOut (): (() => PageOutResult | undefined) | undefined {
  const native = loadPageOut()
  return native === undefined ? undefined : () => pageOutExecutable({ native })
}
