import { parseContainerdVersion } from '../../mirror-config/containerd-config.js'
import type { CheckResult } from './check.js'

export { parseContainerdVersion } from '../../mirror-config/containerd-config.js'

export function containerdVersionCheck (version: string, revision: string): CheckResult {
  const id = 'containerd-version'
  const title = 'containerd version'
  const parsed = parseContainerdVersion(version)
  const shown = `containerd ${version}${revision === '' ? '' : ` (revision ${revision.slice(0, 12)})`}`
  if (parsed === undefined) {
    return { id, title, status: 'warn', detail: `${shown}: version not understood`, fix: 'spegel is tested with containerd 1.6 and 2.x; check that this socket is containerd\'s' }
  }
  if (parsed.major > 2 || (parsed.major === 2 && parsed.minor >= 1)) return { id, title, status: 'pass', detail: shown }
  return {
    id,
    title,
    status: 'warn',
    detail: `${shown} is older than 2.1: no content events (layers are announced only once the whole image is pulled) and hosts.toml dial_timeout is ignored (an unreachable mirror costs the full TCP connect timeout)`,
    fix: 'upgrade containerd to 2.1 or later when the distribution allows it'
  }
}
