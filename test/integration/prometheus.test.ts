// A real Prometheus scrapes a three-node cluster (real containerd per node) every second and
// evaluates deploy/prometheus/spegel-rules.yaml as it is: the dashboard's queries run against
// it, a pull moves the mirror and byte counters, and killing one node's containerd fires
// SpegelContainerdUnreachable for that node only, until containerd is back.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import YAML from 'yaml'
import { containerdSkipReason } from '../helpers/containerd.js'
import { buildImage, type BuiltImage } from '../helpers/image.js'
import { lookupPeers, startCluster, type Cluster, type ClusterNode } from '../helpers/cluster.js'
import { prometheusSkipReason, startPrometheus, type PrometheusAlert, type PrometheusInstance } from '../helpers/prometheus.js'
import { waitFor } from '../helpers/wait.js'

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
const RULES_FILE = path.join(ROOT, 'deploy/prometheus/spegel-rules.yaml')
const DASHBOARD_FILE = path.join(ROOT, 'deploy/grafana/spegel.json')
const JOB = 'spegel'
const MiB = 1024 * 1024
// The alert needs its `for: 1m` plus a scrape and an evaluation; a loaded machine gets ample slack.
const ALERT_DEADLINE_MS = 180_000

const skip = containerdSkipReason() ?? prometheusSkipReason(['prometheus']) ?? false

/** Prometheus' `instance` label of a node: the host:port it scrapes. */
function instanceOf (node: ClusterNode): string {
  return new URL(node.spegel.metricsUrl).host
}

/** The dashboard's PromQL with Grafana's variables replaced as Grafana would for "All" nodes. */
function dashboardQueries (): Array<{ where: string, expr: string }> {
  const dashboard = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as { panels: Array<{ title: string, targets?: Array<{ refId: string, expr: string }>, panels?: unknown[] }> }
  const values: Record<string, string> = { job: JOB, instance: '.+', __rate_interval: '1m', __interval: '5s', __range: '5m' }
  const out: Array<{ where: string, expr: string }> = []
  for (const panel of dashboard.panels) {
    for (const t of panel.targets ?? []) {
      const expr = t.expr.replace(/\$\{?(\w+)\}?/g, (whole, name: string) => values[name] ?? whole)
      out.push({ where: `panel "${panel.title}" ${t.refId}`, expr })
    }
  }
  return out
}

describe('prometheus: alert rules and dashboard against a real cluster', { skip }, () => {
  let workDir: string | undefined
  let cluster: Cluster | undefined
  let prom: PrometheusInstance | undefined
  let app: BuiltImage

  /** Sum of an instant query's samples, 0 when it returns none (a counter not incremented yet). */
  const total = async (expr: string): Promise<number> => {
    const samples = await prom!.query(expr)
    return samples.reduce((sum, s) => sum + s.value, 0)
  }

  before(async () => {
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-promtest-'))
    app = await buildImage(path.join(workDir, 'app'), 'example.test/team/metrics:1.0', [4096, 3 * MiB])
    cluster = await startCluster(3)
    for (const node of cluster.nodes) await node.spegel.waitReady(60_000)
    prom = await startPrometheus({
      jobs: [{ job: JOB, targets: cluster.nodes.map(instanceOf) }],
      ruleFiles: [RULES_FILE],
      // One failed scrape marks every series of the node stale, which resets a pending alert; on a
      // loaded 2-core CI machine a 1 s timeout is too tight, so scrape every 3 s with a 3 s timeout.
      intervalSeconds: 3
    })
    await waitFor(async () => {
      const targets = await prom!.targets()
      return targets.length === 3 && targets.every((t) => t.health === 'up')
    }, { timeoutMs: 30_000, intervalMs: 250, what: 'Prometheus to scrape all three nodes' })
  })

  after(async () => {
    await prom?.stop()
    await cluster?.dispose()
    if (workDir !== undefined) await fs.rm(workDir, { recursive: true, force: true })
  })

  it('loads the rule file unchanged and evaluates every rule without error', async () => {
    const fileAlerts = (YAML.parse(readFileSync(RULES_FILE, 'utf8')) as { groups: Array<{ rules: Array<{ alert: string }> }> })
      .groups.flatMap((g) => g.rules.map((r) => r.alert)).sort()
    const rules = await waitFor(async () => {
      const all = (await prom!.ruleGroups()).flatMap((g) => g.rules)
      return all.length > 0 && all.every((r) => r.health !== 'unknown') ? all : undefined
    }, { timeoutMs: 30_000, intervalMs: 250, what: 'every rule evaluated once' })
    assert.deepEqual(rules.map((r) => r.name).sort(), fileAlerts)
    for (const r of rules) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError ?? ''}`)
  })

  it('accepts every dashboard query and has data for the node panels', async () => {
    for (const { where, expr } of dashboardQueries()) {
      await assert.doesNotReject(prom!.query(expr), `${where}: Prometheus rejects ${expr}`)
    }
    // The gauges every node sets from the start, seen for all three nodes.
    for (const metric of ['spegel_ready', 'spegel_containerd_up', 'spegel_router_peers_connected', 'spegel_build_info', 'nodejs_eventloop_lag_p99_seconds']) {
      const samples = await prom!.query(`${metric}{job="${JOB}"}`)
      assert.equal(new Set(samples.map((s) => s.metric.instance)).size, 3, `${metric} for all three nodes`)
    }
    assert.equal(await total(`sum(spegel_ready{job="${JOB}"})`), 3, 'three ready nodes')
    assert.equal(await total(`min(spegel_router_peers_connected{job="${JOB}"})`), 2, 'every node sees two peers')
  })

  it('counts a pull through the mirror on the pulling and the serving node', async () => {
    const [n1, n2] = cluster!.nodes as [ClusterNode, ClusterNode, ClusterNode]
    const i1 = instanceOf(n1)
    const i2 = instanceOf(n2)
    await n1.containerd.importImage(app.archivePath!)
    await waitFor(async () => (await lookupPeers(n2, app.ref)).includes(n1.peerId), { timeoutMs: 20_000, what: 'node 2 to find the tag on node 1' })

    const hitsQuery = `sum(spegel_mirror_requests_total{instance="${i2}", cache="hit"})`
    const relayedQuery = `sum(spegel_served_bytes_total{instance="${i2}", to="containerd", source="peer"})`
    const servedQuery = `sum(spegel_served_bytes_total{instance="${i1}", to="peer", source="local"})`
    const fromPeerQuery = `sum(spegel_mirror_peer_bytes_total{instance="${i2}", peer="${n1.peerId}"})`
    const before = { hits: await total(hitsQuery), relayed: await total(relayedQuery), served: await total(servedQuery), fromPeer: await total(fromPeerQuery) }

    await n2.containerd.ctr(['images', 'pull', '--hosts-dir', n2.containerd.configPath, app.ref])
    const layerBytes = app.platforms[0]!.layers.reduce((sum, l) => sum + l.size, 0)

    // Prometheus sees it at its next scrape; wait for the counters, then assert how far they moved.
    const after = await waitFor(async () => {
      const now = { hits: await total(hitsQuery), relayed: await total(relayedQuery), served: await total(servedQuery), fromPeer: await total(fromPeerQuery) }
      return now.hits > before.hits && now.relayed - before.relayed >= layerBytes && now.served - before.served >= layerBytes &&
        now.fromPeer - before.fromPeer >= layerBytes
        ? now
        : undefined
    }, { timeoutMs: 30_000, intervalMs: 500, what: 'the pull to show in Prometheus' }).catch(async (err: unknown) => {
      const now = { hits: await total(hitsQuery), relayed: await total(relayedQuery), served: await total(servedQuery), fromPeer: await total(fromPeerQuery) }
      throw new Error(`${(err as Error).message}; before ${JSON.stringify(before)}, now ${JSON.stringify(now)}, layers ${layerBytes} bytes`)
    })
    // Each of the image's blobs was mirrored once: manifest, config and the layers.
    assert.ok(after.hits - before.hits >= 2 + app.platforms[0]!.layers.length, `mirror hits on node 2 rose by ${after.hits - before.hits}`)
  })

  it('fires SpegelContainerdUnreachable for the node whose containerd is down, and clears it when containerd is back', async (t) => {
    const nodes = cluster!.nodes
    const down = nodes[2]!
    const downInstance = instanceOf(down)
    const isUnreachableAlert = (a: PrometheusAlert): boolean => a.labels.alertname === 'SpegelContainerdUnreachable'
    const reconnectsBefore = await total(`sum(spegel_containerd_reconnects_total{instance="${downInstance}"})`)

    await down.containerd.kill()
    const killedAt = performance.now()
    t.after(async () => {
      // Whatever failed above, leave the node's containerd running for the cluster's cleanup.
      if (!down.containerd.isRunning()) await down.containerd.start()
    })

    // A failed scrape marks the target's series stale, which sends a pending alert back to
    // inactive: on a starved machine that is the likely reason for a timeout, so count them.
    let seen = ''
    const scrapeErrors = new Set<string>()
    const firing = await waitFor(async () => {
      const alerts = await prom!.alerts()
      const up = await prom!.query(`spegel_containerd_up{job="${JOB}"}`)
      const targets = await prom!.targets()
      for (const x of targets) if (x.lastError !== '') scrapeErrors.add(`${x.labels.instance ?? ''}: ${x.lastError}`)
      seen = `alerts ${JSON.stringify(alerts.map((a) => [a.labels.alertname, a.labels.instance, a.state, a.activeAt]))}; ` +
        `spegel_containerd_up ${JSON.stringify(up.map((s) => [s.metric.instance, s.value]))}; ` +
        `targets ${JSON.stringify(targets.map((x) => [x.labels.instance, x.health, x.lastError]))}`
      return alerts.filter(isUnreachableAlert).find((a) => a.state === 'firing')
    }, { timeoutMs: ALERT_DEADLINE_MS, intervalMs: 1000, what: 'SpegelContainerdUnreachable to fire' }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; last seen: ${seen}; scrape errors meanwhile: ${JSON.stringify([...scrapeErrors])}`, { cause: err })
    })
    t.diagnostic(`containerd killed -> alert firing: ${((performance.now() - killedAt) / 1000).toFixed(1)} s (for: 1m)`)
    assert.equal(firing.labels.instance, downInstance, 'the alert names the node whose containerd is down')
    assert.equal(firing.labels.job, JOB)
    assert.equal(firing.labels.severity, 'critical')
    assert.match(firing.annotations.description ?? '', /spegel doctor/)
    assert.equal(firing.annotations.runbook_url, 'docs/monitoring.md#spegelcontainerdunreachable')

    const active = await prom!.alerts()
    const others = active.filter((a) => isUnreachableAlert(a) && a.labels.instance !== downInstance)
    assert.deepEqual(others, [], 'no containerd alert for the nodes whose containerd runs')
    const otherFiring = active.filter((a) => a.state === 'firing' && !isUnreachableAlert(a))
    assert.deepEqual(otherFiring.map((a) => `${a.labels.alertname} ${a.labels.instance ?? ''}`), [],
      'nothing else fires (SpegelNodeNotReady leaves a containerd outage to this alert)')
    assert.equal(await total(`sum(spegel_ready{instance="${downInstance}"})`), 0, 'the node reports not ready meanwhile')

    await down.containerd.start()
    const startedAt = performance.now()
    await waitFor(async () => !(await prom!.alerts()).some(isUnreachableAlert),
      { timeoutMs: 90_000, intervalMs: 250, what: 'SpegelContainerdUnreachable to clear after containerd is back' })
    t.diagnostic(`containerd started -> alert cleared: ${((performance.now() - startedAt) / 1000).toFixed(1)} s`)
    assert.equal(await total(`sum(spegel_containerd_up{instance="${downInstance}"})`), 1)
    await waitFor(async () => await total(`sum(spegel_containerd_reconnects_total{instance="${downInstance}"})`) > reconnectsBefore,
      { timeoutMs: 30_000, intervalMs: 500, what: 'the reconnect to be counted' })
    assert.ok(down.spegel.isAlive(), 'the node process never restarted')
  })
})
