// A real Prometheus server for tests, plus the small PromQL and exposition-format readers the
// alert and dashboard tests need (which metric names an expression selects, which metric
// families a /metrics page declares).
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { freePort, httpRequest } from './net.js'
import { waitFor } from './wait.js'

/** The executable's full path, or undefined when it is not in PATH. */
export function findExecutable (name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue
    const candidate = path.join(dir, name)
    if (existsSync(candidate)) return candidate
  }
  return undefined
}

/** Why the Prometheus tools cannot be used here, or undefined when they can. */
export function prometheusSkipReason (tools: ReadonlyArray<'prometheus' | 'promtool'> = ['prometheus', 'promtool']): string | undefined {
  for (const tool of tools) {
    if (findExecutable(tool) === undefined) return `${tool} not found in PATH (apt-get install -y prometheus; scripts/test-all.sh installs it)`
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// PromQL: metric names an expression selects.

/** A vector selector in an expression: the metric name and its `{...}` matchers ('' when none). */
export interface MetricSelector {
  readonly name: string
  readonly matchers: string
}

// Words that are never metric names: aggregations, functions, operators and modifiers.
const PROMQL_WORDS = new Set([
  'sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile',
  'limitk', 'limit_ratio',
  'and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'atan2',
  'inf', 'nan',
  'abs', 'absent', 'absent_over_time', 'acos', 'acosh', 'asin', 'asinh', 'atan', 'atanh', 'avg_over_time', 'ceil',
  'changes', 'clamp', 'clamp_max', 'clamp_min', 'cos', 'cosh', 'count_over_time', 'day_of_month', 'day_of_week',
  'day_of_year', 'days_in_month', 'deg', 'delta', 'deriv', 'exp', 'floor', 'histogram_count', 'histogram_fraction',
  'histogram_quantile', 'histogram_stddev', 'histogram_stdvar', 'histogram_sum', 'holt_winters', 'hour', 'idelta',
  'increase', 'irate', 'label_join', 'label_replace', 'last_over_time', 'ln', 'log10', 'log2', 'mad_over_time',
  'max_over_time', 'min_over_time', 'minute', 'month', 'pi', 'predict_linear', 'present_over_time',
  'quantile_over_time', 'rad', 'rate', 'resets', 'round', 'scalar', 'sgn', 'sin', 'sinh', 'sort', 'sort_desc',
  'sqrt', 'stddev_over_time', 'stdvar_over_time', 'sum_over_time', 'tan', 'tanh', 'time', 'timestamp', 'vector',
  'year'
])
// Words followed by a parenthesised list of label names, not an expression.
const LABEL_LIST_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right'])

/**
 * Every vector selector in a PromQL expression (Grafana variables such as `$instance` or
 * `$__rate_interval` may appear in it). Enough for the expressions of alert rules and
 * dashboards; not a full parser. Throws on unbalanced brackets or quotes, so a broken
 * expression does not silently yield no names.
 */
export function metricSelectors (expr: string): MetricSelector[] {
  const out: MetricSelector[] = []
  let i = 0
  const skipString = (): void => {
    const quote = expr[i]!
    i++
    while (i < expr.length && expr[i] !== quote) i += expr[i] === '\\' && quote !== '`' ? 2 : 1
    if (i >= expr.length) throw new Error(`unterminated string in ${JSON.stringify(expr)}`)
    i++
  }
  /** From an opening bracket to just after its match; returns the text inside. */
  const skipGroup = (open: string, close: string): string => {
    const start = i
    let depth = 0
    while (i < expr.length) {
      const c = expr[i]!
      if (c === '"' || c === "'" || c === '`') {
        skipString()
        continue
      }
      if (c === open) depth++
      if (c === close) depth--
      i++
      if (depth === 0) return expr.slice(start + 1, i - 1)
    }
    throw new Error(`unbalanced ${open}${close} in ${JSON.stringify(expr)}`)
  }
  const skipSpace = (): void => { while (i < expr.length && /\s/.test(expr[i]!)) i++ }
  let parens = 0
  while (i < expr.length) {
    const c = expr[i]!
    if (c === '(' || c === ')') {
      parens += c === '(' ? 1 : -1
      if (parens < 0) throw new Error(`unbalanced () in ${JSON.stringify(expr)}`)
      i++
    } else if (c === '"' || c === "'" || c === '`') {
      skipString()
    } else if (c === '[') {
      skipGroup('[', ']')
    } else if (c === '{') {
      // A selector without a name ({__name__="x"}): not used in our files; refuse rather than miss it.
      throw new Error(`selector without a metric name in ${JSON.stringify(expr)}`)
    } else if (c === '$') {
      // A Grafana variable: $name or ${name}.
      i++
      if (expr[i] === '{') skipGroup('{', '}')
      else while (i < expr.length && /[A-Za-z0-9_]/.test(expr[i]!)) i++
    } else if (/[0-9.]/.test(c)) {
      // A number (1, 0.99, 1e3) or a duration (5m, 1h30m after offset): digits run into letters.
      while (i < expr.length && /[0-9A-Za-z.]/.test(expr[i]!)) i++
    } else if (/[A-Za-z_:]/.test(c)) {
      const start = i
      while (i < expr.length && /[A-Za-z0-9_:]/.test(expr[i]!)) i++
      const word = expr.slice(start, i)
      skipSpace()
      const lower = word.toLowerCase()
      if (LABEL_LIST_WORDS.has(lower)) {
        if (expr[i] === '(') skipGroup('(', ')')
        continue
      }
      if (PROMQL_WORDS.has(lower) || expr[i] === '(') continue
      const matchers = expr[i] === '{' ? skipGroup('{', '}') : ''
      out.push({ name: word, matchers })
    } else {
      i++
    }
  }
  if (parens !== 0) throw new Error(`unbalanced () in ${JSON.stringify(expr)}`)
  return out
}

/** The distinct metric names an expression selects. */
export function metricNames (expr: string): string[] {
  return [...new Set(metricSelectors(expr).map((s) => s.name))]
}

// ---------------------------------------------------------------------------------------------
// Exposition format.

/** Metric families declared by `# TYPE` lines of a /metrics page: name to type. */
export function metricFamilies (exposition: string): Map<string, string> {
  const families = new Map<string, string>()
  for (const line of exposition.split('\n')) {
    const m = /^# TYPE ([A-Za-z_:][A-Za-z0-9_:]*) (\w+)$/.exec(line.trim())
    if (m !== null) families.set(m[1]!, m[2]!)
  }
  return families
}

/**
 * The family a series name belongs to: itself, or for histograms and summaries the family
 * behind a `_bucket`, `_sum` or `_count` series. Undefined when the page declares none.
 */
export function familyOf (name: string, families: ReadonlyMap<string, string>): string | undefined {
  if (families.has(name)) return name
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue
    const base = name.slice(0, -suffix.length)
    const type = families.get(base)
    if (type === 'histogram' || (type === 'summary' && suffix !== '_bucket')) return base
  }
  return undefined
}

/** Sample values of one metric on a /metrics page, keyed by the label text (`{a="b"}` or ''). */
export function samples (exposition: string, name: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of exposition.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})? (\S+)/.exec(line)
    if (m === null || m[1] !== name) continue
    out.set(m[2] ?? '', Number(m[3]))
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// A Prometheus server.

export interface ScrapeJob {
  readonly job: string
  /** host:port of each target; the path is /metrics. */
  readonly targets: readonly string[]
}

export interface PrometheusInit {
  readonly jobs: readonly ScrapeJob[]
  /** Absolute paths of rule files, loaded as they are. */
  readonly ruleFiles?: readonly string[]
  /** Scrape and rule evaluation interval; default 1s. */
  readonly intervalSeconds?: number
}

/** An alert as /api/v1/alerts reports it. */
export interface PrometheusAlert {
  readonly labels: Record<string, string>
  readonly annotations: Record<string, string>
  readonly state: 'pending' | 'firing'
  readonly activeAt: string
  readonly value: string
}

export interface PromSample {
  readonly metric: Record<string, string>
  readonly value: number
}

export interface PrometheusInstance {
  readonly url: string
  readonly dir: string
  /** Instant query; rejects when Prometheus refuses the expression (bad PromQL). */
  query(expr: string): Promise<PromSample[]>
  alerts(): Promise<PrometheusAlert[]>
  /** Active targets: scrape URL, health ('up', 'down', 'unknown') and last error. */
  targets(): Promise<Array<{ scrapeUrl: string, health: string, lastError: string, labels: Record<string, string> }>>
  /** The rules Prometheus loaded, as /api/v1/rules reports them. */
  ruleGroups(): Promise<Array<{ name: string, rules: Array<{ name: string, type: string, health: string, lastError?: string }> }>>
  logTail(chars?: number): string
  /** SIGTERM, wait, remove the data dir. Safe to call twice. */
  stop(): Promise<void>
}

interface ApiEnvelope<T> { status: string, data: T, error?: string, errorType?: string }

/**
 * Starts `prometheus` on a free loopback port with its TSDB in a temp dir; resolves once
 * /-/ready answers. Its rule evaluation, scraping and alert states are the real ones.
 */
export async function startPrometheus (init: PrometheusInit): Promise<PrometheusInstance> {
  const reason = prometheusSkipReason(['prometheus'])
  if (reason !== undefined) throw new Error(`cannot start prometheus: ${reason}`)
  const dir = await mkdtemp(path.join(os.tmpdir(), 'spg-prometheus-'))
  const interval = `${init.intervalSeconds ?? 1}s`
  // JSON is YAML, so the config needs no YAML writer.
  const config = {
    // Rules are evaluated every second whatever the scrape interval, so a `for:` starts counting at once.
    global: { scrape_interval: interval, evaluation_interval: '1s', scrape_timeout: interval },
    rule_files: init.ruleFiles ?? [],
    scrape_configs: init.jobs.map((j) => ({ job_name: j.job, static_configs: [{ targets: j.targets }] }))
  }
  const configFile = path.join(dir, 'prometheus.yml')
  await writeFile(configFile, JSON.stringify(config, null, 2))
  const port = await freePort('127.0.0.1')
  const url = `http://127.0.0.1:${port}`
  let log = ''
  const child: ChildProcess = spawn('prometheus', [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    // No console templates are needed; the Debian package's defaults point at /etc/prometheus.
    `--web.console.templates=${dir}`,
    `--web.console.libraries=${dir}`
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  const append = (chunk: Buffer): void => {
    log += chunk.toString('utf8')
    if (log.length > 200_000) log = log.slice(-100_000)
  }
  child.stdout?.on('data', append)
  child.stderr?.on('data', append)
  let exited = false
  child.once('exit', () => { exited = true })
  // A test that dies before stop() must not leave Prometheus behind.
  const killOnExit = (): void => { child.kill('SIGKILL') }
  process.once('exit', killOnExit)

  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    if (!exited) {
      const gone = once(child, 'exit')
      child.kill('SIGTERM')
      const escalate = setTimeout(() => child.kill('SIGKILL'), 10_000)
      try {
        await gone
      } finally {
        clearTimeout(escalate)
      }
    }
    process.removeListener('exit', killOnExit)
    await rm(dir, { recursive: true, force: true })
  }

  const api = async <T>(pathAndQuery: string): Promise<T> => {
    const res = await httpRequest(`${url}${pathAndQuery}`, { method: 'GET', timeoutMs: 10_000 })
    const body = JSON.parse(res.body.toString('utf8')) as ApiEnvelope<T>
    if (res.status !== 200 || body.status !== 'success') {
      throw new Error(`prometheus ${pathAndQuery}: ${res.status} ${body.errorType ?? ''} ${body.error ?? ''}`.trim())
    }
    return body.data
  }

  try {
    await waitFor(async () => {
      if (exited) throw new Error(`prometheus exited: ${log.slice(-2000)}`)
      return (await httpRequest(`${url}/-/ready`, { method: 'GET', timeoutMs: 2_000 })).status === 200
    }, { timeoutMs: 30_000, intervalMs: 100, what: 'prometheus /-/ready' })
  } catch (err) {
    await stop()
    throw err
  }

  return {
    url,
    dir,
    async query (expr) {
      const data = await api<{ resultType: string, result: Array<{ metric: Record<string, string>, value: [number, string] }> }>(
        `/api/v1/query?query=${encodeURIComponent(expr)}`)
      if (data.resultType !== 'vector') {
        // Scalars and strings come back as one value.
        const v = data.result as unknown as [number, string]
        return [{ metric: {}, value: Number(v[1]) }]
      }
      return data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }))
    },
    async alerts () {
      return (await api<{ alerts: PrometheusAlert[] }>('/api/v1/alerts')).alerts
    },
    async targets () {
      return (await api<{ activeTargets: Array<{ scrapeUrl: string, health: string, lastError: string, labels: Record<string, string> }> }>('/api/v1/targets')).activeTargets
    },
    async ruleGroups () {
      return (await api<{ groups: Array<{ name: string, rules: Array<{ name: string, type: string, health: string, lastError?: string }> }> }>('/api/v1/rules')).groups
    },
    logTail (chars = 3000) {
      return log.slice(-chars)
    },
    stop
  }
}
