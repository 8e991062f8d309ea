// The debug page in a real browser (Debian's chromium driven by playwright-core) against a
// three-node cluster with real containerd: what an operator sees when peers join, an image
// lands, a pull crosses nodes, and containerd goes away and comes back.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Browser, Page } from 'playwright-core'
import { browserSkipReason, launchBrowser } from '../helpers/browser.js'
import { startCluster, type Cluster } from '../helpers/cluster.js'
import { containerdSkipReason } from '../helpers/containerd.js'
import { buildImage, type BuiltImage } from '../helpers/image.js'
import { startSpegel } from '../helpers/spegel.js'

const skip = containerdSkipReason() ?? browserSkipReason() ?? false
const here = path.dirname(fileURLToPath(import.meta.url))
/** Kept out of git (.gitignore); look at them after a run. */
const SCREENSHOTS = path.resolve(here, '../../../test-output/screenshots')
const UI_TIMEOUT_MS = 30_000
const FIXTURES = path.resolve(here, '../../../test/fixtures/containerd-config')

describe('web page in a browser', { skip }, () => {
  let workDir: string
  let cluster: Cluster
  let browser: Browser
  let app: BuiltImage

  before(async () => {
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-webtest-'))
    await fs.mkdir(SCREENSHOTS, { recursive: true })
    app = await buildImage(path.join(workDir, 'app'), 'example.test/team/web:1.0', [4096, 2 * 1024 * 1024])
    // Node 3, which measures, runs the image's bundle: the measure loads undici from a chunk of
    // its own there, and the split bundle once handed it over without its named exports.
    cluster = await startCluster(3, { nodeOptions: (i) => i === 2 ? { bundle: true } : {} })
    for (const node of cluster.nodes) await node.spegel.waitReady(60_000)
    browser = await launchBrowser()
  })
  after(async () => {
    await browser?.close()
    await cluster?.dispose()
    if (workDir !== undefined) await fs.rm(workDir, { recursive: true, force: true })
  })

  async function open (index: number): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } })
    const errors: string[] = []
    page.on('pageerror', (err) => { errors.push(err.message) })
    page.on('requestfailed', (req) => {
      // Only the node itself may be asked for anything: no CDN, no fonts.
      if (!req.url().startsWith(cluster.nodes[index]!.spegel.metricsUrl)) errors.push(`request outside the node: ${req.url()}`)
    })
    page.on('request', (req) => {
      if (!req.url().startsWith(cluster.nodes[index]!.spegel.metricsUrl)) errors.push(`request outside the node: ${req.url()}`)
    })
    await page.goto(`${cluster.nodes[index]!.spegel.metricsUrl}/debug/web/`)
    ;(page as Page & { errors?: string[] }).errors = errors
    return page
  }

  function pageErrors (page: Page): string[] {
    return (page as Page & { errors?: string[] }).errors ?? []
  }

  async function shot (page: Page, name: string): Promise<void> {
    await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true })
  }

  it('shows this node, its peers and that it is ready', async () => {
    const [n1, n2, n3] = cluster.nodes
    const page = await open(0)
    await page.locator('[data-testid=ready][data-ready=true]').waitFor({ timeout: UI_TIMEOUT_MS })
    assert.equal(await page.locator('[data-testid=ready]').textContent(), 'Ready')
    for (const peer of [n2!, n3!]) {
      await page.locator(`[data-testid=peers] tr[data-peer-id="${peer.peerId}"]`).waitFor({ timeout: UI_TIMEOUT_MS })
      const row = page.locator(`[data-testid=peers] tr[data-peer-id="${peer.peerId}"]`)
      assert.match(await row.innerText(), new RegExp(peer.host.replace(/\./g, '\\.')), 'the peer\'s registry address is listed')
    }
    assert.match(await page.locator('[data-testid=node]').innerText(), new RegExp(n1!.peerId))
    assert.equal(await page.locator('[data-testid=containerd-state]').getAttribute('data-state'), 'connected')
    // No pre-shared key in this cluster: the page says so.
    await page.locator('[data-testid=warnings] [data-warning-id=no-router-psk]').waitFor({ timeout: UI_TIMEOUT_MS })
    await shot(page, '1-node1-peers')
    assert.deepEqual(pageErrors(page), [])
    await page.close()
  })

  it('lists an image as soon as it is imported, with the peers that hold it', async () => {
    const [n1] = cluster.nodes
    const page = await open(0)
    const row = page.locator('[data-testid=images] tr[data-image-name="example.test/team/web:1.0"]')
    assert.equal(await row.count(), 0, 'not there before the import')
    await n1!.containerd.importImage(app.archivePath!)
    await row.waitFor({ timeout: UI_TIMEOUT_MS })
    const text = await row.innerText()
    assert.match(text, /example\.test\/team\/web/)
    assert.match(text, /1\.0/)
    assert.match(text, /2\.0 MB/, 'the size of the content on disk')
    await shot(page, '2-node1-image-imported')
    await page.close()
  })

  it('shows a pull through node 2 as served by node 1, and measures a pull on node 3', async () => {
    const [n1, n2, n3] = cluster.nodes
    const page = await open(1)
    await n2!.containerd.ctr(['images', 'pull', '--hosts-dir', n2!.containerd.configPath, 'example.test/team/web:1.0'])
    const relayed = page.locator('[data-testid=requests] tr[data-source=peer]')
    await relayed.first().waitFor({ timeout: UI_TIMEOUT_MS })
    assert.match(await relayed.first().innerText(), new RegExp(`peer ${n1!.peerId.slice(0, 8)}`))
    // After the pull node 2 holds the image too, and node 1 is counted as a holder.
    const image = page.locator('[data-testid=images] tr[data-image-name="example.test/team/web:1.0"]')
    await image.waitFor({ timeout: UI_TIMEOUT_MS })
    await shot(page, '3-node2-requests-from-peer')
    await page.close()

    const measure = await open(2)
    await measure.locator('#measure-image').fill('example.test/team/web:1.0')
    await measure.locator('#measure-button').click()
    const items = measure.locator('[data-testid=measure-items] tbody tr')
    await items.first().waitFor({ timeout: UI_TIMEOUT_MS })
    assert.equal(await items.count(), 4, 'manifest, config and two layers')
    const peers = measure.locator('[data-testid=measure-peers] tbody tr')
    assert.equal(await peers.count(), 2, 'node 1 and node 2 hold the tag')
    assert.match(await measure.locator('[data-testid=measure-result]').innerText(), /Pull: .*2\.0 MB/)
    assert.equal(n3!.spegel.isAlive(), true)
    await shot(measure, '4-node3-measure')
    await measure.close()
  })

  it('turns containerd red when it stops and green when it returns, without a restart of the node', async () => {
    const [n1] = cluster.nodes
    const page = await open(0)
    await page.locator('[data-testid=containerd-state][data-state=connected]').waitFor({ timeout: UI_TIMEOUT_MS })
    assert.equal(await backgroundHue(page), 'green')

    await n1!.containerd.kill()
    await page.locator('[data-testid=containerd-state][data-state=unavailable]').waitFor({ timeout: UI_TIMEOUT_MS })
    assert.equal(await backgroundHue(page), 'red')
    assert.match(await page.locator('[data-testid=ready]').innerText(), /Not ready: containerd/)
    assert.match(await page.locator('[data-testid=containerd-checks]').innerText(), /Fix:/, 'the failed check names its fix')
    await shot(page, '5-node1-containerd-down')

    await n1!.containerd.start()
    await page.locator('[data-testid=containerd-state][data-state=connected]').waitFor({ timeout: UI_TIMEOUT_MS })
    assert.equal(await backgroundHue(page), 'green')
    await page.locator('[data-testid=ready][data-ready=true]').waitFor({ timeout: UI_TIMEOUT_MS })
    await shot(page, '6-node1-containerd-back')
    assert.equal(n1!.spegel.isAlive(), true, 'the same process, never restarted')
    assert.deepEqual(pageErrors(page), [])
    await page.close()

    async function backgroundHue (p: Page): Promise<string> {
      return hue(await p.locator('[data-testid=containerd-state]').evaluate((e) => (globalThis as unknown as { getComputedStyle: (el: unknown) => { backgroundColor: string } }).getComputedStyle(e).backgroundColor))
    }
  })

  it('warns when containerd\'s configuration keeps pulls away from the mirror', async () => {
    // A second node process next to node 1's containerd, told that containerd runs with
    // containerd 1.6's default config (no config_path): CRI would never read a hosts.toml.
    const n1 = cluster.nodes[0]!
    const node = await startSpegel({
      host: n1.host,
      containerdSock: n1.containerd.socketPath,
      contentPath: n1.containerd.contentPath,
      extraArgs: ['--containerd-config', path.join(FIXTURES, 'containerd-1.6-default.toml')]
    })
    try {
      await node.waitReady(60_000)
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } })
      await page.goto(`${node.metricsUrl}/debug/web/`)
      const warning = page.locator('[data-testid=warnings] [data-warning-id="containerd-config:config-path-unset"]')
      await warning.waitFor({ timeout: UI_TIMEOUT_MS })
      assert.match(await warning.innerText(), /config_path/)
      assert.match(await warning.innerText(), /Fix:/)
      assert.equal(await warning.getAttribute('data-severity'), 'error')
      const background = await warning.evaluate((e) => (globalThis as unknown as { getComputedStyle: (el: unknown) => { backgroundColor: string } }).getComputedStyle(e).backgroundColor)
      assert.equal(hue(background), 'red', 'an error is shown in red, not as a mere warning')
      const readyz = await node.readyz()
      assert.equal(readyz.status, 200, 'the node still serves its peers')
      assert.match(readyz.body, /^ok\nwarning: config-path-unset: /)
      await shot(page, '7-config-trap-warning')
      await page.close()
    } finally {
      await node.stop()
    }
  })
})

/** The hue family of a CSS `rgb(...)` color, as a person would name it (pastels included). */
function hue (color: string): string {
  const m = /rgb\((\d+), (\d+), (\d+)\)/.exec(color)
  assert.ok(m !== null, color)
  const [r, g, b] = [Number(m[1]) / 255, Number(m[2]) / 255, Number(m[3]) / 255]
  const max = Math.max(r, g, b)
  const delta = max - Math.min(r, g, b)
  if (delta < 0.02) return `grey ${color}`
  let h = max === r ? ((g - b) / delta) % 6 : max === g ? (b - r) / delta + 2 : (r - g) / delta + 4
  h = (h * 60 + 360) % 360
  if (h < 20 || h >= 340) return 'red'
  if (h < 70) return 'yellow'
  if (h < 170) return 'green'
  return `other ${color}`
}
