import { readdir, stat } from 'node:fs/promises'
import path from 'node:path'
import { Gauge, type Registry } from 'prom-client'
import { HOSTS_FILE, analyzeContainerdConfigFile, type ContainerdConfigFinding, type FindingId } from '../mirror-config/index.js'
import type { Logger } from '../observability/logger.js'
import type { NodeWarning } from '../web/status.js'

export interface ContainerdConfigCheckInit {
  /** `--containerd-config`: containerd's main config file as mounted in this node. */
  file: string
  /** `--containerd-registry-config-path`: where `spegel configuration` writes on this node. */
  mirrorConfigPath?: string
}

/**
 * The running node's view of containerd's configuration traps (the same analysis `spegel
 * doctor` prints): a containerd that never reads our hosts.toml silently bypasses the mirror
 * while every probe stays green. The node keeps serving its peers (its own containerd's config
 * does not change what it can serve them), so this never makes /readyz fail; it is shown on
 * the page, logged once per finding, exported as `spegel_containerd_config_problem{id}` and
 * appended to the /readyz body.
 */
export class ContainerdConfigCheck {
  readonly #log: Logger
  readonly #file: string
  readonly #mirrorConfigPath: string | undefined
  readonly #gauge: Gauge<'id' | 'severity'>
  #findings: ContainerdConfigFinding[] = []
  #unreadable: string | undefined
  readonly #logged = new Set<string>()
  #running: Promise<void> | undefined

  constructor (components: { log: Logger, registry: Registry }, init: ContainerdConfigCheckInit) {
    this.#log = components.log.child({ component: 'containerd-config' })
    this.#file = init.file
    this.#mirrorConfigPath = init.mirrorConfigPath
    this.#gauge = new Gauge({
      name: 'spegel_containerd_config_problem',
      help: 'containerd configuration problems found on this node that keep pulls from reaching the mirror (1 per problem; ids are listed in docs/containerd-2.md).',
      labelNames: ['id', 'severity'] as const,
      registers: [components.registry]
    })
  }

  /** Analyses again for containerd `version` (after each connect: a restart may bring a new config or version). */
  refresh (version: string | undefined): Promise<void> {
    const run = this.#analyse(version).catch((err: unknown) => {
      this.#log.warn({ err }, 'could not analyse containerd\'s configuration')
    })
    this.#running = run
    return run
  }

  /** Resolves when the latest analysis is done (tests). */
  async settled (): Promise<void> {
    await this.#running
  }

  findings (): readonly ContainerdConfigFinding[] {
    return this.#findings
  }

  /** Problems for the page: errors and warnings, plus why nothing could be checked. */
  warnings (): NodeWarning[] {
    const out: NodeWarning[] = []
    if (this.#unreadable !== undefined) {
      out.push({
        id: 'containerd-config-unreadable',
        severity: 'info',
        message: `containerd's configuration could not be read (${this.#unreadable}), so this node cannot tell whether containerd's pulls reach the mirror.`,
        fix: `mount containerd's configuration directory (/etc/containerd) read-only and set --containerd-config, or run \`spegel doctor\` on the node`
      })
    }
    for (const f of this.#findings) {
      if (f.severity === 'info') continue
      out.push({ id: `containerd-config:${f.id}`, severity: f.severity, message: f.message, fix: f.fix === '' ? 'see docs/containerd-2.md' : f.fix })
    }
    return out
  }

  /** Lines for the /readyz body: what makes this node's own containerd skip the mirror. */
  readyzNotes (): string[] {
    return this.#findings.filter((f) => f.severity === 'error').map((f) => `warning: ${f.id}: ${firstSentence(f.message)}`)
  }

  async #analyse (version: string | undefined): Promise<void> {
    const report = await analyzeContainerdConfigFile({
      file: this.#file,
      ...(version === undefined ? {} : { version }),
      ...(this.#mirrorConfigPath === undefined ? {} : { mirrorConfigPath: this.#mirrorConfigPath })
    })
    const findings = await Promise.all((report.analysis?.findings ?? []).map(async (f) => await this.#confirmWorkaround(f)))
    this.#unreadable = report.analysis === undefined ? report.files.error ?? report.files.state : undefined
    this.#findings = findings
    this.#gauge.reset()
    const seen = new Set<FindingId>()
    for (const f of findings) {
      if (f.severity === 'info' || seen.has(f.id)) continue
      seen.add(f.id)
      this.#gauge.set({ id: f.id, severity: f.severity }, 1)
      const key = `${f.id}|${f.message}`
      if (this.#logged.has(key)) continue
      this.#logged.add(key)
      const fields = { event: 'containerd_config_problem', reason: f.id, file: this.#file, fix: f.fix, ...f.details }
      if (f.severity === 'error') this.#log.error(fields, f.message)
      else this.#log.warn(fields, f.message)
    }
    if (this.#unreadable !== undefined && !this.#logged.has('unreadable')) {
      this.#logged.add('unreadable')
      this.#log.info({ event: 'containerd_config_unreadable', file: this.#file, reason: this.#unreadable }, 'cannot read containerd\'s configuration; pull-path checks are off')
    }
  }

  /**
   * The analysis lowers the transfer-service trap to a warning when spegel is configured to
   * write the literal multi-directory path the transfer service reads; only files really there
   * make that true (the init container may have failed, or written elsewhere), so look.
   */
  async #confirmWorkaround (finding: ContainerdConfigFinding): Promise<ContainerdConfigFinding> {
    const literal = finding.details?.literalDir
    if (finding.id !== 'transfer-multi-dir-config-path' || finding.severity !== 'warning' || literal === undefined) return finding
    if (await holdsHostsFile(literal)) return finding
    return {
      ...finding,
      severity: 'error',
      message: `${finding.message}; but ${literal} holds no ${HOSTS_FILE} here, so the transfer service still finds none (did \`spegel configuration\` run with the same list, and is that path mounted into this pod?)`
    }
  }
}

/** True when `dir/<any registry>/hosts.toml` exists. */
async function holdsHostsFile (dir: string): Promise<boolean> {
  let entries: string[]
  try {
    entries = await readdir(dir)
  } catch {
    return false
  }
  for (const entry of entries) {
    try {
      if ((await stat(path.join(dir, entry, HOSTS_FILE))).isFile()) return true
    } catch {
      // not a registry directory
    }
  }
  return false
}

function firstSentence (text: string): string {
  const line = text.split('\n')[0] ?? ''
  return line.length > 200 ? `${line.slice(0, 200)}…` : line
}
