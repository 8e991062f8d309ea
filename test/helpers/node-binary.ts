import { closeSync, copyFileSync, fsyncSync, openSync } from 'node:fs'
import path from 'node:path'

/**
 * A copy of the running node binary at `dir`/node, written through to disk, for a process that
 * must be the only user of its binary (as a DaemonSet's pod is on its host): the kernel pages out
 * no page another process maps (src/observability/page-out.ts), and none still dirty from the
 * copy until it is written back.
 */
export function copyNodeBinary (dir: string): string {
  const file = path.join(dir, 'node')
  copyFileSync(process.execPath, file)
  const fd = openSync(file, 'r+')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  return file
}
