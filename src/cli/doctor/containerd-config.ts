import type { ContainerdConfigFinding, ContainerdConfigReport, FindingId } from '../../mirror-config/index.js'
import { worstStatus, type CheckResult, type CheckStatus } from './check.js'

// Doctor's view of containerd's config: four checks built on the pure analysis in
// mirror-config/containerd-config.ts (file, config_path, discard_unpacked_layers, CRI pull path).

export interface ContainerdConfigCheckOptions {
  /** --containerd-registry-config-path: where spegel writes hosts.toml files (one directory or a list). */
  readonly registryConfigPath: string
  /**
   * For a multi-directory config_path on the transfer pull path: the hosts check run on the
   * literal directory the transfer service reads. A pass there means spegel's mirror is in place
   * for the transfer service without a containerd restart.
   */
  readonly transferDirHosts?: CheckResult
}

const TITLE_CONFIG = 'containerd config'
const TITLE_CONFIG_PATH = 'registry config_path'
const TITLE_DISCARD = 'discard_unpacked_layers'
const TITLE_PULL_PATH = 'CRI pull path'

function pick (findings: readonly ContainerdConfigFinding[], ...ids: FindingId[]): ContainerdConfigFinding[] {
  return findings.filter((f) => ids.includes(f.id))
}

function statusOf (f: ContainerdConfigFinding): CheckStatus {
  return f.severity === 'error' ? 'fail' : f.severity === 'warning' ? 'warn' : 'pass'
}

function joined (findings: readonly ContainerdConfigFinding[]): { detail: string, fix?: string } {
  const fixes = findings.map((f) => f.fix).filter((f) => f !== '')
  return { detail: findings.map((f) => f.message).join('; '), ...(fixes.length > 0 ? { fix: fixes.join('\n') } : {}) }
}

/** Four results: the file itself, `config_path`, `discard_unpacked_layers`, the CRI pull path. */
export function containerdConfigChecks (report: ContainerdConfigReport, options: ContainerdConfigCheckOptions): CheckResult[] {
  const { files, analysis } = report
  const where = files.file
  const skipAll = (reason: string): CheckResult[] => [
    { id: 'config-path', title: TITLE_CONFIG_PATH, status: 'skip', detail: reason },
    { id: 'discard-unpacked-layers', title: TITLE_DISCARD, status: 'skip', detail: reason },
    { id: 'pull-path', title: TITLE_PULL_PATH, status: 'skip', detail: reason }
  ]

  if (files.state === 'unreadable' || analysis === undefined) {
    const isImport = files.state === 'import-unreadable'
    return [{
      id: 'containerd-config',
      title: TITLE_CONFIG,
      status: isImport ? 'fail' : 'warn',
      detail: isImport ? `cannot read ${files.error ?? where}: containerd refuses to start without it` : `cannot read ${files.error ?? where}`,
      fix: isImport
        ? `create the imported file or remove it from imports in ${where}`
        : 'run doctor as root, or mount containerd\'s config read-only and pass its path with --containerd-config'
    }, ...skipAll(`${where} could not be read`)]
  }

  const { findings, settings } = analysis
  const fatal = pick(findings, 'config-invalid', 'config-version-unsupported').filter((f) => f.severity === 'error')
  const results: CheckResult[] = []
  if (fatal.length > 0 && settings === undefined) {
    return [{ id: 'containerd-config', title: TITLE_CONFIG, status: 'fail', ...joined(fatal) }, ...skipAll(`${where} cannot be used by containerd`)]
  }
  if (fatal.length > 0) {
    results.push({ id: 'containerd-config', title: TITLE_CONFIG, status: 'fail', ...joined(fatal) })
  } else if (files.state === 'missing') {
    results.push({
      id: 'containerd-config',
      title: TITLE_CONFIG,
      status: 'warn',
      detail: pick(findings, 'config-missing')[0]?.message ?? `${where} does not exist: containerd runs with its built-in defaults`,
      fix: 'if containerd reads its config elsewhere, pass that file with --containerd-config (k3s/RKE2: /var/lib/rancher/k3s/agent/etc/containerd/config.toml); otherwise create it with the settings below'
    })
  } else {
    const imports = files.imports.length > 0 ? `, imports ${files.imports.map((i) => i.path).join(', ')}` : ''
    results.push({ id: 'containerd-config', title: TITLE_CONFIG, status: 'pass', detail: `${where}: config version ${settings?.configVersion ?? 1}${imports}` })
  }
  if (settings === undefined) return [...results, ...skipAll(`${where} cannot be used by containerd`)]

  // config_path
  const pathIssues = pick(findings, 'cri-plugin-fails', 'config-path-unset', 'mirror-path-mismatch')
  if (pathIssues.length > 0) {
    results.push({ id: 'config-path', title: TITLE_CONFIG_PATH, status: worstStatus(pathIssues.map(statusOf)), ...joined(pathIssues) })
  } else {
    const notes = pick(findings, 'config-path-default', 'mirror-path-shadowed').map((f) => f.message)
    const shown = settings.configPathKey === undefined ? `config_path = ${JSON.stringify(settings.configPath)}` : `${settings.configPathKey} = ${JSON.stringify(settings.configPath)}`
    results.push({ id: 'config-path', title: TITLE_CONFIG_PATH, status: 'pass', detail: [shown, ...notes].join('; ') })
  }

  // discard_unpacked_layers
  const discard = pick(findings, 'discard-unpacked-layers')[0]
  if (discard !== undefined) {
    results.push({ id: 'discard-unpacked-layers', title: TITLE_DISCARD, status: 'fail', detail: discard.message, fix: discard.fix })
  } else {
    results.push({
      id: 'discard-unpacked-layers',
      title: TITLE_DISCARD,
      status: 'pass',
      detail: settings.discardUnpackedLayersKey === undefined ? 'not set: containerd keeps layer blobs (default false)' : `${settings.discardUnpackedLayersKey} = false`
    })
  }

  // CRI pull path: where the transfer-service trap shows.
  const pull = pick(findings, 'pull-path')[0]
  const trap = pick(findings, 'transfer-multi-dir-config-path')[0]
  const unknown = pick(findings, 'version-unknown')[0]
  const pullText = pull?.message ?? `CRI pulls use the ${settings.pullPath} path`
  if (trap !== undefined) {
    const literal = options.transferDirHosts
    if (literal !== undefined && literal.status !== 'fail' && literal.status !== 'skip') {
      results.push({
        id: 'pull-path',
        title: TITLE_PULL_PATH,
        status: 'warn',
        detail: `${trap.message}. The literal directory holds spegel's mirror files (${literal.detail}), so the transfer service should find them; this rests on containerd's source (HostDirFromRoot on the joined path), not on a test against containerd 2.x`,
        fix: trap.fix
      })
    } else {
      results.push({
        id: 'pull-path',
        title: TITLE_PULL_PATH,
        status: trap.severity === 'error' || literal !== undefined ? 'fail' : 'warn',
        detail: `${trap.message}${literal === undefined ? '' : `; the literal directory: ${literal.detail}`}`,
        fix: trap.fix
      })
    }
  } else if (unknown !== undefined) {
    results.push({ id: 'pull-path', title: TITLE_PULL_PATH, status: 'warn', detail: `${pullText}; ${unknown.message}`, fix: unknown.fix })
  } else {
    const unused = pick(findings, 'transfer-config-path-unused').map((f) => f.message)
    results.push({ id: 'pull-path', title: TITLE_PULL_PATH, status: 'pass', detail: [pullText, ...unused].join('; ') })
  }
  return results
}
