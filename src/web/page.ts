/**
 * The debug page's HTML and CSS. Everything the page needs is served by the node itself (no
 * CDN, no web fonts): clusters are often offline, and a page that fails when a node is in
 * trouble is no help. The script is compiled from src/web/ui/app.ts by tsconfig.web.json.
 */

export const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>spegel-ts</title>
<link rel="stylesheet" href="/debug/web/assets/style.css">
<link rel="icon" href="data:,">
</head>
<body>
<header>
  <div class="title">
    <h1>spegel-ts</h1>
    <span id="node-name" class="muted"></span>
  </div>
  <div class="header-right">
    <span id="ready" class="badge" data-testid="ready">…</span>
    <span id="live" class="muted" data-testid="live">connecting…</span>
  </div>
</header>
<main>
  <section id="warnings" data-testid="warnings" hidden></section>

  <div class="cards">
    <section class="card" aria-labelledby="h-node">
      <h2 id="h-node">This node</h2>
      <dl id="node" data-testid="node"></dl>
    </section>
    <section class="card" aria-labelledby="h-containerd">
      <h2 id="h-containerd">containerd <span id="containerd-state" class="state" data-testid="containerd-state">…</span></h2>
      <dl id="containerd" data-testid="containerd"></dl>
      <ul id="checks" class="checks" data-testid="containerd-checks"></ul>
    </section>
    <section class="card" aria-labelledby="h-router">
      <h2 id="h-router">Cluster index</h2>
      <dl id="router" data-testid="router"></dl>
    </section>
  </div>

  <section aria-labelledby="h-peers">
    <h2 id="h-peers">Peers <span id="peers-count" class="count"></span></h2>
    <table id="peers" data-testid="peers">
      <thead><tr><th>Peer</th><th>Registry</th><th>Addresses</th><th class="num">Keys</th><th>Last heard</th><th>State</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="peers-empty" class="empty" hidden>No peers known yet.</p>
  </section>

  <section aria-labelledby="h-images">
    <h2 id="h-images">Images on this node <span id="images-count" class="count"></span></h2>
    <table id="images" data-testid="images">
      <thead><tr><th>Name</th><th>Tag</th><th>Digest</th><th class="num">Size</th><th class="num">Peers holding</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="images-empty" class="empty" hidden>containerd holds no images in this namespace.</p>
  </section>

  <section aria-labelledby="h-requests">
    <h2 id="h-requests">Recent requests</h2>
    <table id="requests" data-testid="requests">
      <thead><tr><th>Time</th><th>Request</th><th>Client</th><th>Served from</th><th class="num">Bytes</th><th class="num">Duration</th><th>Result</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="requests-empty" class="empty" hidden>No requests yet.</p>
  </section>

  <section aria-labelledby="h-measure">
    <h2 id="h-measure">Measure an image pull</h2>
    <form id="measure-form" data-testid="measure-form">
      <input id="measure-image" name="image" type="text" placeholder="docker.io/library/nginx:1.27" autocomplete="off" spellcheck="false" required>
      <button id="measure-button" type="submit">Measure</button>
    </form>
    <p class="muted small">Looks the image up in the cluster index, then pulls it through this node (the platform of this node), layer by layer, as containerd would; the bytes are discarded.</p>
    <div id="measure-result" data-testid="measure-result"></div>
  </section>
</main>
<script type="module" src="/debug/web/assets/app.js"></script>
</body>
</html>
`

export const STYLE_CSS = `:root {
  --bg: #f6f7f9; --fg: #1c2430; --muted: #5f6b7a; --card: #fff; --line: #dde2e8;
  --ok: #1a7f37; --ok-bg: #dcf5e3; --fail: #c62828; --fail-bg: #fde2e1; --warn: #9a6700; --warn-bg: #fff3cd;
  --accent: #0b5cad;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, Ubuntu, sans-serif; font-size: 14px;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); }
header { display: flex; justify-content: space-between; align-items: center; padding: 12px 24px; background: #12263f; color: #fff; }
header .title { display: flex; align-items: baseline; gap: 12px; }
header h1 { font-size: 20px; margin: 0; }
header .muted { color: #b8c4d4; }
.header-right { display: flex; align-items: center; gap: 16px; }
main { padding: 16px 24px 48px; max-width: 1400px; }
h2 { font-size: 16px; margin: 24px 0 8px; display: flex; align-items: center; gap: 8px; }
.card h2 { margin-top: 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 16px; margin-top: 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 16px; min-width: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
.badge, .state { display: inline-block; border-radius: 999px; padding: 2px 10px; font-weight: 600; font-size: 13px; }
.ok { background: var(--ok-bg); color: var(--ok); }
.fail { background: var(--fail-bg); color: var(--fail); }
.warn { background: var(--warn-bg); color: var(--warn); }
.muted { color: var(--muted); }
.small { font-size: 12px; }
.count { color: var(--muted); font-weight: normal; }
table { width: 100%; border-collapse: collapse; background: var(--card); border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef1f5; font-weight: 600; color: #334; }
tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.empty { color: var(--muted); font-style: italic; }
.checks { list-style: none; padding: 0; margin: 12px 0 0; }
.checks li { padding: 6px 8px; border-radius: 6px; margin-bottom: 4px; }
.checks li .fix, .notice .fix { display: block; color: var(--fg); margin-top: 2px; white-space: pre-line; }
.notice { border-radius: 8px; padding: 10px 14px; margin: 8px 0; border: 1px solid transparent; }
.notice.sev-error { background: var(--fail-bg); border-color: #f3b4b1; }
.notice.sev-warning { background: var(--warn-bg); border-color: #f0d98c; }
.notice.sev-info { background: #e7f0fb; border-color: #b9d3f0; }
.notice strong { display: block; }
form { display: flex; gap: 8px; max-width: 720px; }
input[type=text] { flex: 1; padding: 8px 10px; border: 1px solid var(--line); border-radius: 6px; font-size: 14px; }
button { padding: 8px 16px; border: 0; border-radius: 6px; background: var(--accent); color: #fff; font-weight: 600; cursor: pointer; }
button:disabled { opacity: .6; cursor: progress; }
.error-text { color: var(--fail); }
#measure-result h3 { font-size: 14px; margin: 16px 0 6px; }
`
