import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

/**
 * fsync of a directory makes renames in it durable. Some filesystems refuse to fsync a
 * directory (EINVAL); the rename itself is still atomic there, so that is not an error.
 */
export async function syncDir (dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r')
  try {
    await handle.sync()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EBADF') throw err
  } finally {
    await handle.close()
  }
}

/**
 * Writes `file` so that a reader (containerd re-reads hosts.toml on every pull) sees either the
 * old content or the new, never a part: a temp file in the same directory, fsync, rename, fsync
 * of the directory. `mode` is set exactly, whatever the umask. The temp name starts with a dot
 * and ends in random hex, so containerd never takes it for a hosts.toml or a certificate.
 */
export async function writeFileAtomic (file: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const dir = path.dirname(file)
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${randomBytes(6).toString('hex')}`)
  const handle = await fs.open(tmp, 'wx', mode)
  try {
    try {
      await handle.writeFile(data)
      await handle.chmod(mode)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await fs.rename(tmp, file)
  } catch (err) {
    await fs.rm(tmp, { force: true })
    throw err
  }
  await syncDir(dir)
}
