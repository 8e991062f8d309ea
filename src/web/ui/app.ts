// The debug page's script: polls the node's status once a second and redraws. Every value
// comes from the network (image names from containerd, peer ids and addresses from other
// nodes), so everything is written with textContent, never parsed as HTML.
import type { ContainerdCheck, MeasureResult, NodeStatus, NodeWarning, PeerView, RequestView } from '../status-types.js'

const POLL_MS = 1000
const API = '/debug/web/api'

function byId<T extends HTMLElement> (id: string): T {
  const element = document.getElementById(id)
  if (element === null) throw new Error(`missing #${id}`)
  return element as T
}

function el<K extends keyof HTMLElementTagNameMap> (tag: K, props: { text?: string, className?: string, title?: string } = {}, children: Array<Node | string> = []): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag)
  if (props.text !== undefined) node.textContent = props.text
  if (props.className !== undefined) node.className = props.className
  if (props.title !== undefined) node.title = props.title
  for (const child of children) node.append(child)
  return node
}

function setList (dl: HTMLElement, rows: Array<[string, string | Node]>): void {
  dl.replaceChildren(...rows.flatMap(([term, value]) => [el('dt', { text: term }), el('dd', {}, [value])]))
}

// ---- formatting, as Spegel's page formats (base 1024, two most significant units) ----

export function formatBytes (n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KB', 'MB', 'GB', 'TB', 'PB', 'EB']
  let value = n / 1024
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(1)} ${units[unit] ?? 'EB'}`
}

export function formatDuration (ms: number): string {
  if (ms < 1) return '<1ms'
  const parts: Array<[number, string]> = [[86_400_000, 'd'], [3_600_000, 'h'], [60_000, 'm'], [1000, 's'], [1, 'ms']]
  const out: string[] = []
  let rest = Math.floor(ms)
  for (const [size, unit] of parts) {
    const count = Math.floor(rest / size)
    rest -= count * size
    if (count > 0) out.push(`${count}${unit}`)
    else if (out.length > 0) break
    if (out.length === 2) break
  }
  return out.join(' ')
}

/** Whole seconds: ages on a page that redraws every second need no milliseconds. */
export function formatAge (ms: number): string {
  if (ms < 1000) return '<1s'
  return formatDuration(Math.floor(ms / 1000) * 1000)
}

function ago (ms: number | undefined, now: number): string {
  if (ms === undefined) return 'never'
  return `${formatAge(Math.max(0, now - ms))} ago`
}

function shortId (id: string): string {
  return id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id
}

function shortDigest (digest: string): string {
  return digest.startsWith('sha256:') ? `sha256:${digest.slice(7, 19)}` : digest
}

function code (text: string, title?: string): HTMLElement {
  return el('code', title === undefined ? { text } : { text, title })
}

// ---- rendering ----

function renderHeader (s: NodeStatus): void {
  byId('node-name').textContent = `${s.node.hostname}${s.node.peerId === undefined ? '' : ` · ${shortId(s.node.peerId)}`}`
  const ready = byId('ready')
  ready.textContent = s.node.isReady ? 'Ready' : `Not ready: ${s.node.reason ?? 'unknown'}`
  ready.className = `badge ${s.node.isReady ? 'ok' : 'fail'}`
  ready.dataset.ready = String(s.node.isReady)
}

function renderWarnings (warnings: readonly NodeWarning[]): void {
  const box = byId('warnings')
  box.hidden = warnings.length === 0
  box.replaceChildren(...warnings.map((w) => {
    const item = el('div', { className: `notice sev-${w.severity}` }, [el('strong', { text: w.message }), el('span', { className: 'fix', text: `Fix: ${w.fix}` })])
    item.dataset.warningId = w.id
    item.dataset.severity = w.severity
    return item
  }))
}

function renderNode (s: NodeStatus): void {
  const n = s.node
  const now = s.generatedAtMs
  setList(byId('node'), [
    ['Peer ID', n.peerId === undefined ? 'starting…' : code(n.peerId)],
    ['Version', `spegel-ts ${n.version} (Node.js ${n.nodejs})`],
    ['Up for', formatAge(Math.max(0, now - n.startedAtMs))],
    ['Ready', n.isReady ? 'yes' : `no: ${n.reason ?? 'unknown'}`],
    ['Registry address', n.registryAddress ?? '…'],
    ['Listening', `registry ${n.listen.registry}, router ${n.listen.router}, metrics ${n.listen.metrics}`],
    ['Router addresses', n.multiaddrs.length === 0 ? '…' : el('span', {}, n.multiaddrs.flatMap((a, i) => i === 0 ? [code(a)] : [el('br'), code(a)]))],
    ['Pre-shared key', n.isRouterPskEnabled ? 'on: only nodes holding the key can join' : 'off: anyone on the node network can join'],
    ['Last mirror success', ago(n.lastMirrorSuccessMs, now)]
  ])
}

const STATE_CLASS: Record<string, string> = { connected: 'ok', connecting: 'warn', unavailable: 'fail', stopped: 'fail' }

function renderContainerd (s: NodeStatus): void {
  const c = s.containerd
  const state = byId('containerd-state')
  state.textContent = c.state
  state.className = `state ${STATE_CLASS[c.state] ?? 'warn'}`
  state.dataset.state = c.state
  const rows: Array<[string, string | Node]> = [
    ['Socket', code(c.socketPath)],
    ['Namespace', c.namespace],
    ['Version', c.version ?? '—'],
    ['Content', c.contentDirectory === undefined ? (c.state === 'connected' ? 'through the socket (gRPC)' : '—') : code(c.contentDirectory)],
    [c.state === 'connected' ? 'Connected' : 'Since', ago(c.sinceMs, s.generatedAtMs)]
  ]
  if (c.state !== 'connected' && c.reason !== undefined) rows.push(['Last error', el('span', { className: 'error-text', text: c.reason })])
  if (c.problem !== undefined && c.state !== 'connected') rows.push(['Fix', c.problem.fix])
  setList(byId('containerd'), rows)
  byId('checks').replaceChildren(...c.checks.map(renderCheck))
}

function renderCheck (check: ContainerdCheck): HTMLElement {
  const cls = check.status === 'ok' ? 'ok' : check.status === 'warn' ? 'warn' : 'fail'
  const mark = check.status === 'ok' ? '✓' : check.status === 'warn' ? '!' : '✗'
  const item = el('li', { className: cls }, [`${mark} ${check.name}: ${check.detail}`])
  if (check.fix !== undefined) item.append(el('span', { className: 'fix small', text: `Fix: ${check.fix}` }))
  return item
}

function renderRouter (s: NodeStatus): void {
  const r = s.router
  if (r === undefined) {
    setList(byId('router'), [['State', 'starting…']])
    return
  }
  const connected = s.peers.filter((p) => p.isConnected).length
  setList(byId('router'), [
    ['State', r.isReady ? 'ready' : `not ready: ${r.reason ?? 'unknown'}`],
    ['Peers connected', String(connected)],
    ['Nodes in the index', String(r.records)],
    ['Keys in the index', String(r.keys)],
    ['Keys this node advertises', String(r.ownKeys)]
  ])
}

function renderPeers (s: NodeStatus): void {
  const rows = s.peers.map((p: PeerView) => {
    const state = p.isConnected ? (p.isAlive ? 'connected' : 'connected, no record yet') : p.isAlive ? 'alive (via others)' : 'gone'
    const tr = el('tr', {}, [
      el('td', {}, [code(shortId(p.id), p.id)]),
      el('td', { text: p.registryAddress === '' ? '—' : p.registryAddress }),
      el('td', {}, p.addrs.flatMap((a, i) => i === 0 ? [code(a)] : [el('br'), code(a)])),
      el('td', { className: 'num', text: String(p.keyCount) }),
      el('td', { text: ago(p.lastHeardMs, s.generatedAtMs) }),
      el('td', {}, [el('span', { className: `state ${p.isAlive ? 'ok' : p.isConnected ? 'warn' : 'fail'}`, text: state })])
    ])
    tr.dataset.peerId = p.id
    return tr
  })
  byId<HTMLTableElement>('peers').tBodies[0]?.replaceChildren(...rows)
  byId('peers-empty').hidden = rows.length > 0
  byId('peers-count').textContent = `(${s.peers.filter((p) => p.isAlive).length} alive)`
}

function renderImages (s: NodeStatus): void {
  const rows = s.images.map((image) => {
    const tr = el('tr', {}, [
      el('td', { text: `${image.registry}/${image.repository}` }),
      el('td', { text: image.tag ?? '—' }),
      el('td', {}, [code(shortDigest(image.digest), image.digest)]),
      el('td', { className: 'num', text: formatBytes(image.sizeBytes) }),
      el('td', { className: 'num', text: String(image.peers) })
    ])
    tr.dataset.imageName = image.name
    return tr
  })
  byId<HTMLTableElement>('images').tBodies[0]?.replaceChildren(...rows)
  byId('images-empty').hidden = rows.length > 0
  byId('images-count').textContent = s.imagesTotal > s.images.length ? `(${s.images.length} of ${s.imagesTotal})` : `(${s.imagesTotal})`
}

function renderRequests (s: NodeStatus): void {
  const rows = s.requests.map((r: RequestView) => {
    const from = r.source === 'local' ? 'local disk' : r.source === 'peer' ? `peer ${shortId(r.peer ?? '')}` : '—'
    const result = r.isAborted ? 'aborted' : r.status < 400 ? 'served' : r.status === 404 ? 'not found' : 'error'
    const cls = r.isAborted ? 'warn' : r.status < 400 ? 'ok' : r.status === 404 ? 'warn' : 'fail'
    const resultCell = el('td', {}, [el('span', { className: `state ${cls}`, text: `${r.status} ${result}` })])
    if (r.error !== undefined) resultCell.title = r.error
    const tr = el('tr', {}, [
      el('td', { text: new Date(r.atMs).toLocaleTimeString() }),
      el('td', {}, [`${r.method} ${r.kind} `, code(r.kind === 'blob' || r.ref.startsWith('sha256:') ? shortDigest(r.ref) : r.ref, r.ref)]),
      el('td', { text: r.client }),
      el('td', r.peerAddress === undefined ? { text: from } : { text: from, title: r.peerAddress }),
      el('td', { className: 'num', text: formatBytes(r.bytes) }),
      el('td', { className: 'num', text: formatDuration(r.durationMs) }),
      resultCell
    ])
    tr.dataset.source = r.source
    return tr
  })
  byId<HTMLTableElement>('requests').tBodies[0]?.replaceChildren(...rows)
  byId('requests-empty').hidden = rows.length > 0
}

function render (s: NodeStatus): void {
  renderHeader(s)
  renderWarnings(s.warnings)
  renderNode(s)
  renderContainerd(s)
  renderRouter(s)
  renderPeers(s)
  renderImages(s)
  renderRequests(s)
}

// ---- polling ----

let lastOkMs = 0

async function poll (): Promise<void> {
  const live = byId('live')
  try {
    const res = await fetch(`${API}/status`, { cache: 'no-store', signal: AbortSignal.timeout(5000) })
    if (!res.ok) throw new Error(`status ${res.status}`)
    render(await res.json() as NodeStatus)
    lastOkMs = Date.now()
    live.textContent = `live · ${new Date(lastOkMs).toLocaleTimeString()}`
    live.dataset.live = 'true'
  } catch (err) {
    // The node may be restarting; keep the last picture and say how old it is.
    live.textContent = lastOkMs === 0 ? `cannot reach the node (${(err as Error).message})` : `node not answering; data from ${ago(lastOkMs, Date.now())}`
    live.dataset.live = 'false'
  } finally {
    setTimeout(() => { void poll() }, POLL_MS)
  }
}

// ---- measure ----

function renderMeasure (result: MeasureResult): HTMLElement {
  const box = el('div')
  box.append(el('p', {}, ['Image ', code(result.image), ', key ', code(result.key)]))
  box.append(el('h3', { text: `Lookup: ${formatDuration(result.lookup.durationMs)}` }))
  if (result.lookup.isLocal) box.append(el('p', { text: 'This node holds it: the pull is served from local disk.' }))
  if (result.lookup.peers.length === 0) {
    box.append(el('p', { className: 'empty', text: result.lookup.isLocal ? 'No other node holds it.' : 'No peers found for image.' }))
  } else {
    const table = el('table', {}, [el('thead', {}, [el('tr', {}, [el('th', { text: 'Peer' }), el('th', { text: 'Registry' }), el('th', { className: 'num', text: 'Found after' })])])])
    table.dataset.testid = 'measure-peers'
    const body = el('tbody', {}, result.lookup.peers.map((p) => el('tr', {}, [
      el('td', {}, [code(shortId(p.id), p.id)]), el('td', { text: p.registryAddress }), el('td', { className: 'num', text: formatDuration(p.durationMs) })
    ])))
    table.append(body)
    box.append(table)
  }
  if (result.pull !== undefined) {
    box.append(el('h3', { text: `Pull: ${formatDuration(result.pull.durationMs)}, ${formatBytes(result.pull.sizeBytes)}` }))
    const table = el('table', {}, [el('thead', {}, [el('tr', {}, ['Digest', 'Type', 'Size', 'Duration', 'Served from'].map((h, i) => el('th', { text: h, ...(i === 2 || i === 3 ? { className: 'num' } : {}) })))])])
    table.dataset.testid = 'measure-items'
    table.append(el('tbody', {}, result.pull.items.map((item) => el('tr', {}, [
      el('td', {}, [code(shortDigest(item.digest), item.digest)]),
      el('td', { text: item.mediaType }),
      el('td', { className: 'num', text: formatBytes(item.sizeBytes) }),
      el('td', { className: 'num', text: formatDuration(item.durationMs) }),
      el('td', { text: item.servedBy === 'local' ? 'local disk' : item.servedBy === 'unknown' ? '—' : `peer ${shortId(item.servedBy)}` })
    ]))))
    box.append(table)
  }
  if (result.error !== undefined) box.append(el('p', { className: 'error-text', text: result.error }))
  return box
}

function setupMeasure (): void {
  const form = byId<HTMLFormElement>('measure-form')
  const input = byId<HTMLInputElement>('measure-image')
  const button = byId<HTMLButtonElement>('measure-button')
  const out = byId('measure-result')
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const image = input.value.trim()
    button.disabled = true
    out.replaceChildren(el('p', { className: 'muted', text: `Measuring ${image}…` }))
    fetch(`${API}/measure?image=${encodeURIComponent(image)}`, { cache: 'no-store' })
      .then(async (res) => {
        const body = await res.json() as MeasureResult | { error: string }
        if ('lookup' in body) out.replaceChildren(renderMeasure(body))
        else out.replaceChildren(el('p', { className: 'error-text', text: body.error }))
      })
      .catch((err: unknown) => { out.replaceChildren(el('p', { className: 'error-text', text: (err as Error).message })) })
      .finally(() => { button.disabled = false })
  })
}

setupMeasure()
void poll()
