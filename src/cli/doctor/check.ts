export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip'

export interface CheckResult {
  readonly id: string
  readonly title: string
  readonly status: CheckStatus
  /** One line: what was found (for `skip`, why the check did not run). */
  readonly detail: string
  /** What to do about a `fail` or `warn`; may span lines (TOML snippets). */
  readonly fix?: string
}

const STATUS_RANK: Readonly<Record<CheckStatus, number>> = { skip: 0, pass: 1, warn: 2, fail: 3 }

export function worstStatus (statuses: readonly CheckStatus[]): CheckStatus {
  return statuses.reduce<CheckStatus>((worst, s) => (STATUS_RANK[s] > STATUS_RANK[worst] ? s : worst), 'pass')
}
