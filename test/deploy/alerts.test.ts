// The alert rules and the Grafana dashboard: promtool checks and unit-tests the rules, the
// kustomize components carry exactly the same rules and dashboard, and every metric an alert
// or a panel names exists on a real node's /metrics page (so renaming a metric breaks this).
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import YAML from 'yaml'
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1'
import { ConfigMap } from 'kubernetes-models/v1'
import { containerdSkipReason, startContainerd, type ContainerdInstance } from '../helpers/containerd.js'
import { httpRequest, run } from '../helpers/net.js'
import { familyOf, findExecutable, metricFamilies, metricNames, metricSelectors, prometheusSkipReason, samples } from '../helpers/prometheus.js'
import { startSpegel, type SpegelNode } from '../helpers/spegel.js'
import { waitFor } from '../helpers/wait.js'

/** The checkout's root: the first folder above this file that holds package.json. */
function repoRoot (): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir)
    if (up === dir) throw new Error('package.json not found above the test file')
    dir = up
  }
  return dir
}

const ROOT = repoRoot()
const RULES_DIR = path.join(ROOT, 'deploy/prometheus')
const RULES_FILE = path.join(RULES_DIR, 'spegel-rules.yaml')
const DASHBOARD_FILE = path.join(ROOT, 'deploy/grafana/spegel.json')
const COMPONENTS = path.join(ROOT, 'deploy/kubernetes/components')
const RULE_COMPONENT_FILE = path.join(COMPONENTS, 'prometheus-rule/prometheus-rule.yaml')
const DASHBOARD_COMPONENT_FILE = path.join(COMPONENTS, 'grafana-dashboard/spegel.json')
const DOCS_FILE = path.join(ROOT, 'docs/monitoring.md')
const FIXTURES = path.join(ROOT, 'test/fixtures/kustomize')
const SEVERITIES = new Set(['critical', 'warning', 'info'])

const promtoolSkip = prometheusSkipReason(['promtool'])
const kubectlSkip = findExecutable('kubectl') === undefined ? 'kubectl (with kustomize) not found in PATH' : false

interface AlertRule {
  alert: string
  expr: string
  for?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}
interface RuleGroup { name: string, rules: AlertRule[] }

function readRuleGroups (): RuleGroup[] {
  const doc = YAML.parse(readFileSync(RULES_FILE, 'utf8')) as { groups: RuleGroup[] }
  return doc.groups
}

function allAlerts (): AlertRule[] {
  return readRuleGroups().flatMap((g) => g.rules)
}

function ruleTestFiles (): string[] {
  return readdirSync(RULES_DIR).filter((f) => f.endsWith('_test.yaml')).map((f) => path.join(RULES_DIR, f))
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes. */
function headingAnchors (markdown: string): Set<string> {
  const anchors = new Set<string>()
  for (const line of markdown.split('\n')) {
    const m = /^#{1,6}\s+(.*)$/.exec(line)
    if (m === null) continue
    anchors.add(m[1]!.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-'))
  }
  return anchors
}

async function kustomize (dir: string): Promise<Array<Record<string, any>>> {
  const res = await run('kubectl', ['kustomize', dir], { timeoutMs: 60_000 })
  assert.equal(res.code, 0, `kubectl kustomize ${dir} failed:\n${res.stderr}`)
  return YAML.parseAllDocuments(res.stdout).map((d) => d.toJSON() as Record<string, any>).filter((o) => o !== null)
}

// ---------------------------------------------------------------------------------------------
// The dashboard's shape.

interface Target { refId?: string, expr?: string, datasource?: { type?: string, uid?: string } }
interface Panel {
  id?: number
  type?: string
  title?: string
  gridPos?: { x: number, y: number, w: number, h: number }
  datasource?: { type?: string, uid?: string }
  targets?: Target[]
  panels?: Panel[]
}
interface TemplateVar { name: string, type: string, query?: unknown, definition?: string, multi?: boolean, includeAll?: boolean }
interface Dashboard {
  title?: string
  uid?: string
  schemaVersion?: number
  panels?: Panel[]
  templating?: { list?: TemplateVar[] }
}

function readDashboard (): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard
}

/** Panels including those nested in collapsed rows. */
function flatPanels (d: Dashboard): Panel[] {
  return (d.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])])
}

/** Every PromQL expression of the dashboard: panel targets and query variables. */
function dashboardExpressions (d: Dashboard): Array<{ where: string, expr: string }> {
  const out: Array<{ where: string, expr: string }> = []
  for (const p of flatPanels(d)) {
    for (const t of p.targets ?? []) out.push({ where: `panel "${p.title ?? ''}" (${t.refId ?? '?'})`, expr: t.expr ?? '' })
  }
  for (const v of d.templating?.list ?? []) {
    if (v.type !== 'query') continue
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string } | undefined)?.query ?? ''
    // label_values(selector, label): the selector is PromQL.
    const m = /^label_values\((.*),\s*\w+\)$/.exec(q)
    out.push({ where: `variable $${v.name}`, expr: m?.[1] ?? q })
  }
  return out
}

const GRAFANA_BUILTINS = new Set(['__rate_interval', '__interval', '__range', '__interval_ms', '__range_s', '__range_ms', '__all'])
const PANEL_TYPES = new Set(['row', 'stat', 'timeseries', 'state-timeline', 'table', 'bargauge', 'gauge', 'text', 'heatmap', 'status-history'])

describe('alert rules (promtool)', { skip: promtoolSkip ?? false }, () => {
  it('pass promtool check rules', async () => {
    const res = await run('promtool', ['check', 'rules', RULES_FILE])
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`)
    assert.match(res.stdout, /SUCCESS: \d+ rules found/)
  })

  it('pass their promtool unit tests', async () => {
    const files = ruleTestFiles()
    assert.ok(files.length > 0, 'deploy/prometheus has *_test.yaml files')
    const res = await run('promtool', ['test', 'rules', ...files], { cwd: RULES_DIR })
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`)
  })

  it('the PrometheusRule component passes promtool check rules too', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'spg-alerts-'))
    t.after(async () => await rm(dir, { recursive: true, force: true }))
    const rule = YAML.parse(readFileSync(RULE_COMPONENT_FILE, 'utf8')) as { spec: { groups: RuleGroup[] } }
    const file = path.join(dir, 'from-component.yaml')
    await writeFile(file, YAML.stringify({ groups: rule.spec.groups }))
    const res = await run('promtool', ['check', 'rules', file])
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`)
  })
})

describe('alert rules (content)', () => {
  it('give every alert a severity, a summary, a description and a runbook section that exists', () => {
    const anchors = headingAnchors(readFileSync(DOCS_FILE, 'utf8'))
    const alerts = allAlerts()
    assert.ok(alerts.length >= 5, `at least five alerts (found ${alerts.length})`)
    for (const a of alerts) {
      assert.ok(SEVERITIES.has(a.labels?.severity ?? ''), `${a.alert}: severity is one of ${[...SEVERITIES].join(', ')}`)
      assert.ok((a.annotations?.summary ?? '').length > 10, `${a.alert}: summary`)
      assert.ok((a.annotations?.description ?? '').length > 40, `${a.alert}: description`)
      const m = /^docs\/monitoring\.md#([a-z0-9-]+)$/.exec(a.annotations?.runbook_url ?? '')
      assert.ok(m !== null, `${a.alert}: runbook_url points at docs/monitoring.md#<anchor> (got ${a.annotations?.runbook_url})`)
      assert.ok(anchors.has(m[1]!), `${a.alert}: docs/monitoring.md has a section #${m[1]}`)
    }
  })

  it('keep the ones operators asked for', () => {
    const byName = new Map(allAlerts().map((a) => [a.alert, a]))
    const containerd = byName.get('SpegelContainerdUnreachable')
    assert.equal(containerd?.expr.trim(), 'spegel_containerd_up == 0')
    assert.equal(containerd?.for, '1m')
    assert.match(containerd?.annotations?.description ?? '', /spegel doctor/)
    assert.match(containerd?.annotations?.description ?? '', /spc_t/)
    assert.match(containerd?.annotations?.description ?? '', /directory/)
    for (const name of ['SpegelNodeNotReady', 'SpegelNoPeers', 'SpegelMirrorMissRatioHigh', 'SpegelTargetDown']) {
      assert.ok(byName.has(name), `${name} exists`)
    }
    // containerd configured so that its pulls skip the mirror (docs/containerd-2.md).
    const misconfigured = byName.get('SpegelContainerdMisconfigured')
    assert.equal(misconfigured?.expr.trim(), 'spegel_containerd_config_problem{severity="error"} == 1')
    assert.equal(misconfigured?.labels?.severity, 'warning')
    assert.ok(misconfigured?.for !== undefined, 'SpegelContainerdMisconfigured waits before firing')
    const description = misconfigured?.annotations?.description ?? ''
    assert.match(description, /spegel doctor/)
    assert.match(description, /deploy\/kubernetes\/components\/multi-dir-config-path/)
    assert.ok(existsSync(path.join(ROOT, 'deploy/kubernetes/components/multi-dir-config-path/kustomization.yaml')), 'the component the description names exists')
    assert.match(description, /docs\/containerd-2\.md/)
    assert.match(misconfigured?.annotations?.summary ?? '', /\{\{ \$labels\.id \}\}/, 'the summary names the finding')
  })

  it('are unit-tested: each alert has a case where it fires and one where it stays quiet', () => {
    const fires = new Set<string>()
    const quiet = new Set<string>()
    for (const file of ruleTestFiles()) {
      const doc = YAML.parse(readFileSync(file, 'utf8')) as { tests: Array<{ alert_rule_test?: Array<{ alertname: string, exp_alerts?: unknown[] }> }> }
      for (const test of doc.tests) {
        for (const c of test.alert_rule_test ?? []) ((c.exp_alerts ?? []).length > 0 ? fires : quiet).add(c.alertname)
      }
    }
    for (const a of allAlerts()) {
      assert.ok(fires.has(a.alert), `${a.alert} has a promtool case where it fires`)
      assert.ok(quiet.has(a.alert), `${a.alert} has a promtool case where it stays quiet`)
    }
  })

  it('the PrometheusRule component carries exactly the groups of deploy/prometheus', () => {
    const obj = YAML.parse(readFileSync(RULE_COMPONENT_FILE, 'utf8')) as Record<string, unknown>
    const rule = new PrometheusRule(obj as never)
    rule.validate()
    assert.equal(rule.apiVersion, 'monitoring.coreos.com/v1')
    assert.equal(rule.kind, 'PrometheusRule')
    assert.deepEqual(rule.spec.groups, readRuleGroups(),
      'spec.groups of deploy/kubernetes/components/prometheus-rule/prometheus-rule.yaml must equal the groups of deploy/prometheus/spegel-rules.yaml: copy them over')
  })
})

describe('dashboard (structure)', () => {
  const d = readDashboard()

  it('is a Grafana dashboard with a datasource, a job and a node variable', () => {
    assert.equal(typeof d.title, 'string')
    assert.ok(typeof d.uid === 'string' && d.uid.length > 0 && d.uid.length <= 40, 'uid of 1 to 40 characters')
    assert.ok(typeof d.schemaVersion === 'number' && d.schemaVersion >= 36, 'schemaVersion of Grafana 9 or later')
    const vars = new Map((d.templating?.list ?? []).map((v) => [v.name, v]))
    const ds = vars.get('datasource')
    assert.equal(ds?.type, 'datasource')
    assert.equal(ds?.query, 'prometheus')
    assert.equal(vars.get('job')?.type, 'query')
    const instance = vars.get('instance')
    assert.equal(instance?.type, 'query')
    assert.ok(instance?.multi === true && instance.includeAll === true, '$instance takes several nodes and All')
  })

  it('has unique ids and a grid without overlaps', () => {
    const panels = flatPanels(d)
    const ids = panels.map((p) => p.id)
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique')
    const boxes: Array<{ title: string, x: number, y: number, w: number, h: number }> = []
    for (const p of panels) {
      assert.ok(PANEL_TYPES.has(p.type ?? ''), `panel "${p.title}": known type (${p.type})`)
      const g = p.gridPos
      assert.ok(g !== undefined, `panel "${p.title}": gridPos`)
      for (const k of ['x', 'y', 'w', 'h'] as const) assert.ok(Number.isInteger(g[k]) && g[k] >= 0, `panel "${p.title}": gridPos.${k}`)
      assert.ok(g.w >= 1 && g.x + g.w <= 24, `panel "${p.title}": inside the 24 columns`)
      for (const b of boxes) {
        const overlaps = g.x < b.x + b.w && b.x < g.x + g.w && g.y < b.y + b.h && b.y < g.y + g.h
        assert.ok(!overlaps, `panels "${p.title}" and "${b.title}" overlap`)
      }
      boxes.push({ title: p.title ?? '', ...g })
    }
  })

  it('queries the selected data source, filtered by job and node, with known variables only', () => {
    const vars = new Set((d.templating?.list ?? []).map((v) => v.name))
    for (const p of flatPanels(d)) {
      if (p.type === 'row' || p.type === 'text') continue
      assert.equal(p.datasource?.uid, '${datasource}', `panel "${p.title}": datasource is $datasource`)
      const targets = p.targets ?? []
      assert.ok(targets.length > 0, `panel "${p.title}": has queries`)
      assert.equal(new Set(targets.map((t) => t.refId)).size, targets.length, `panel "${p.title}": refIds are unique`)
      for (const t of targets) {
        assert.equal(t.datasource?.uid, '${datasource}', `panel "${p.title}" ${t.refId}: datasource is $datasource`)
        const expr = t.expr ?? ''
        assert.ok(expr.trim() !== '', `panel "${p.title}" ${t.refId}: expr`)
        for (const s of metricSelectors(expr)) {
          assert.match(s.matchers, /job=~"\$job"/, `panel "${p.title}": ${s.name} is filtered by $job`)
          assert.match(s.matchers, /instance=~"\$instance"/, `panel "${p.title}": ${s.name} is filtered by $instance`)
        }
        for (const m of expr.matchAll(/\$\{?(\w+)/g)) {
          assert.ok(vars.has(m[1]!) || GRAFANA_BUILTINS.has(m[1]!), `panel "${p.title}": $${m[1]} is defined`)
        }
      }
    }
  })

  it('covers readiness, containerd, peers, index, mirror, bytes, latency, event loop, memory and last heard', () => {
    const used = new Set(dashboardExpressions(d).flatMap((e) => metricNames(e.expr)))
    for (const name of [
      'spegel_ready', 'spegel_containerd_state', 'spegel_router_peers_connected', 'spegel_router_index_records',
      'spegel_router_index_keys', 'spegel_mirror_requests_total', 'spegel_served_bytes_total',
      'http_request_duration_seconds_bucket', 'nodejs_eventloop_lag_p99_seconds', 'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes', 'spegel_router_peer_last_heard_seconds',
      // Spegel's own panels.
      'spegel_advertised_image_digests', 'spegel_advertised_content_digests'
    ]) assert.ok(used.has(name), `a panel shows ${name}`)
  })

  it('the dashboard component carries the same JSON, byte for byte', () => {
    assert.equal(readFileSync(DASHBOARD_COMPONENT_FILE, 'utf8'), readFileSync(DASHBOARD_FILE, 'utf8'),
      'deploy/kubernetes/components/grafana-dashboard/spegel.json must be a copy of deploy/grafana/spegel.json')
  })
})

describe('PromQL metric-name reader', () => {
  it('finds names and matchers, and skips functions, label lists, strings and variables', () => {
    assert.deepEqual(metricSelectors('sum by (le, job) (rate(http_request_duration_seconds_bucket{job=~"$job", handler="/v2/*"}[$__rate_interval]))'),
      [{ name: 'http_request_duration_seconds_bucket', matchers: 'job=~"$job", handler="/v2/*"' }])
    assert.deepEqual(metricNames('a == 0 and on (job, namespace) (count by (job) (b) > 1) unless ignoring(x) group_left(y) c offset 5m'), ['a', 'b', 'c'])
    assert.deepEqual(metricNames('label_replace(up{a="}"}, "dst", "$1", "src", "(.*)") * 1e3 + time() - 0.99'), ['up'])
    assert.deepEqual(metricNames('sum(x) without (registry) / on() group_right vector(1)'), ['x'])
    assert.throws(() => metricSelectors('rate(x[5m]'), /unbalanced/)
  })
})

describe('metric names against a real node', () => {
  let workDir: string
  let node: SpegelNode | undefined
  let families: Map<string, string>

  before(async () => {
    // No containerd needed: the node serves /metrics (unready) while it looks for the socket.
    workDir = await mkdtemp(path.join(os.tmpdir(), 'spg-alerts-node-'))
    node = await startSpegel({ containerdSock: path.join(workDir, 'no-containerd.sock'), logLevel: 'INFO' })
    const res = await httpRequest(`${node.metricsUrl}/metrics`, { method: 'GET' })
    assert.equal(res.status, 200)
    families = metricFamilies(res.body.toString('utf8'))
    assert.ok(families.size > 10, 'the node declares its metric families')
  })
  after(async () => {
    await node?.stop()
    await rm(workDir, { recursive: true, force: true })
  })

  it('every metric an alert uses is exposed by the node', () => {
    const missing: string[] = []
    for (const a of allAlerts()) {
      // `up` comes from Prometheus itself.
      for (const name of metricNames(a.expr)) if (name !== 'up' && familyOf(name, families) === undefined) missing.push(`${a.alert}: ${name}`)
    }
    assert.deepEqual(missing, [], 'metrics named by alert rules but absent from /metrics')
  })

  // The check above reads the `# TYPE` lines, which prom-client prints for every registered
  // metric even before it has a series: spegel_containerd_config_problem has series only on a
  // node whose containerd is misconfigured, and this node has not even reached containerd.
  it('declares spegel_containerd_config_problem even while it has no series', () => {
    assert.equal(families.get('spegel_containerd_config_problem'), 'gauge')
  })

  it('every metric a dashboard panel or variable uses is exposed by the node', () => {
    const missing: string[] = []
    for (const { where, expr } of dashboardExpressions(readDashboard())) {
      for (const name of metricNames(expr)) if (familyOf(name, families) === undefined) missing.push(`${where}: ${name}`)
    }
    assert.deepEqual(missing, [], 'metrics named by the dashboard but absent from /metrics')
  })
})

describe('kustomize components', { skip: kubectlSkip }, () => {
  const dashboardText = readFileSync(DASHBOARD_FILE, 'utf8')

  const assertMonitoringObjects = (objects: Array<Record<string, any>>, namespace: string): void => {
    const rules = objects.filter((o) => o.kind === 'PrometheusRule')
    assert.equal(rules.length, 1, 'one PrometheusRule')
    new PrometheusRule(rules[0] as never).validate()
    assert.equal(rules[0]!.metadata.namespace, namespace)
    assert.deepEqual(rules[0]!.spec.groups, readRuleGroups())

    const dashboards = objects.filter((o) => o.kind === 'ConfigMap' && o.metadata?.labels?.grafana_dashboard === '1')
    assert.equal(dashboards.length, 1, 'one ConfigMap labelled grafana_dashboard: "1"')
    const cm = new ConfigMap(dashboards[0] as never)
    cm.validate()
    assert.equal(cm.metadata?.namespace, namespace)
    assert.equal(cm.data?.['spegel.json'], dashboardText, 'the ConfigMap holds deploy/grafana/spegel.json unchanged')
  }

  it('render on their own, in the including kustomization\'s namespace', async () => {
    assertMonitoringObjects(await kustomize(path.join(FIXTURES, 'monitoring-only')), 'spegel-monitoring-test')
  })

  it('render next to the base', async (t) => {
    if (!existsSync(path.join(ROOT, 'deploy/kubernetes/base/kustomization.yaml'))) {
      t.skip('deploy/kubernetes/base does not exist yet')
      return
    }
    const objects = await kustomize(path.join(FIXTURES, 'monitoring-with-base'))
    assertMonitoringObjects(objects, 'spegel')
    assert.ok(objects.some((o) => o.kind === 'DaemonSet'), 'the base\'s DaemonSet is still there')
  })
})

// The name check above cannot tell whether an alert's label matchers fit what the node
// exports. SpegelContainerdMisconfigured selects on a label, so its expression is evaluated by
// promtool on the series a real node exports once it has read a containerd configuration with
// an error-level finding (config_path unset, which containerd 1.6 then reads no hosts.toml for).
const configProblemSkip = promtoolSkip ?? containerdSkipReason() ?? false

describe('SpegelContainerdMisconfigured against a real node\'s series', { skip: configProblemSkip }, () => {
  let workDir = ''
  let containerd: ContainerdInstance | undefined
  let node: SpegelNode | undefined

  before(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'spg-alerts-config-'))
    containerd = await startContainerd({ name: 'alerts-config' })
  })
  after(async () => {
    await node?.stop()
    await containerd?.dispose()
    if (workDir !== '') await rm(workDir, { recursive: true, force: true })
  })

  it('the expression selects the node\'s error findings and nothing else', async () => {
    assert.ok(containerd !== undefined)
    // The node analyses this file, not the one containerd runs with: containerd only supplies its version.
    const configFile = path.join(workDir, 'config.toml')
    await writeFile(configFile, 'version = 2\n')
    node = await startSpegel({ containerdSock: containerd.socketPath, contentPath: containerd.contentPath, logLevel: 'INFO', extraArgs: ['--containerd-config', configFile] })
    const metricsUrl = node.metricsUrl
    const series = await waitFor(async () => {
      const res = await httpRequest(`${metricsUrl}/metrics`, { method: 'GET' })
      const found = samples(res.body.toString('utf8'), 'spegel_containerd_config_problem')
      return found.size > 0 ? found : undefined
    }, { timeoutMs: 30_000, what: 'spegel_containerd_config_problem series on /metrics after the node reached containerd' })
    const labelled = [...series.entries()].map(([labels, value]) => ({ labels: labels.replace(/^\{/, '{job="spegel",instance="node-1",'), value }))
    const errors = labelled.filter((s) => /severity="error"/.test(s.labels))
    assert.ok(errors.some((s) => /id="config-path-unset"/.test(s.labels)), `an error finding for a config without config_path (got ${[...series.keys()].join(', ')})`)

    const rule = allAlerts().find((a) => a.alert === 'SpegelContainerdMisconfigured')
    assert.ok(rule !== undefined)
    const testFile = path.join(workDir, 'real-series_test.yaml')
    await writeFile(testFile, YAML.stringify({
      rule_files: [RULES_FILE],
      evaluation_interval: '1m',
      tests: [{
        interval: '1m',
        input_series: labelled.map((s) => ({ series: `spegel_containerd_config_problem${s.labels}`, values: `${s.value}x15` })),
        promql_expr_test: [{
          expr: rule.expr,
          eval_time: '10m',
          exp_samples: errors.map((s) => ({ labels: `spegel_containerd_config_problem${s.labels}`, value: s.value }))
        }]
      }]
    }))
    const res = await run('promtool', ['test', 'rules', testFile], { cwd: workDir })
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`)
  })
})
