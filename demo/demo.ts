// Three nodes on one machine, each a private containerd plus a spegel-ts node on its own
// loopback address. An image is imported on node 1 only; nodes 2 and 3 then pull it with ctr
// through their local mirror while the image's registry is unreachable.
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { containerdSkipReason, startContainerd, type ContainerdInstance } from '../test/helpers/containerd.js'
import { buildImage, type BuiltImage } from '../test/helpers/image.js'
import { run } from '../test/helpers/net.js'
import { startSpegel, MAIN_JS, type LogLine, type SpegelNode } from '../test/helpers/spegel.js'
import { waitFor } from '../test/helpers/wait.js'
import { generatePskFile } from '../src/routing/p2p/index.js'

const REGISTRY = 'example.test'
const IMAGE = `${REGISTRY}/demo/app:1.0`
const LAYER_MIB = (process.env.DEMO_LAYER_MIB ?? '8,32,96').split(',').map(Number)
const HOSTS = ['127.0.0.2', '127.0.0.3', '127.0.0.4']
const BOOTSTRAP_URL = `http://${HOSTS[0]}:5002/id`

interface DemoNode {
  name: string
  host: string
  containerd: ContainerdInstance
  spegel: SpegelNode
  peerId: string
}

const here = path.dirname(fileURLToPath(import.meta.url))
const say = (line = ''): void => { process.stdout.write(line + '\n') }
const mib = (bytes: number): string => `${(bytes / 1048576).toFixed(1)} MiB`

async function startNode (index: number, workDir: string, pskFile: string): Promise<DemoNode> {
  const host = HOSTS[index]!
  const name = `node${index + 1}`
  const containerd = await startContainerd({ name })
  const dataDir = path.join(workDir, name)
  await fs.mkdir(dataDir, { recursive: true })
  const spegel = await startSpegel({
    host,
    registryPort: 5000,
    routerPort: 5001,
    metricsPort: 9090,
    containerdSock: containerd.socketPath,
    contentPath: containerd.contentPath,
    logLevel: 'DEBUG',
    bootstrapArgs: ['--bootstrap-kind', 'http', '--http-bootstrap-addr', `${host}:5002`, '--http-bootstrap-url', BOOTSTRAP_URL],
    extraArgs: ['--data-dir', dataDir, '--router-secret-path', pskFile, '--containerd-config', containerd.configFile, '--containerd-registry-config-path', containerd.configPath]
  })
  const running = await spegel.waitForLog((l) => l.msg === 'running spegel', 'running spegel')
  // Point this containerd at its own node, exactly as the DaemonSet's init container does.
  const configured = await run(process.execPath, [MAIN_JS, 'configuration',
    '--containerd-registry-config-path', containerd.configPath,
    '--mirror-targets', `http://${host}:5000`,
    '--mirrored-registries', `https://${REGISTRY}`], { timeoutMs: 30_000 })
  if (configured.code !== 0) throw new Error(`spegel configuration failed on ${name}: ${configured.stderr}`)
  return { name, host, containerd, spegel, peerId: String(running.peerId) }
}

function servedBy (line: LogLine, nodes: readonly DemoNode[]): string {
  const node = nodes.find((n) => n.peerId === line.peer)
  return node === undefined ? String(line.peerAddress ?? line.peer) : `${node.name} (${node.host})`
}

async function pullOn (node: DemoNode, image: BuiltImage, nodes: readonly DemoNode[]): Promise<void> {
  const before = node.spegel.logs.length
  const started = performance.now()
  await node.containerd.ctr(['images', 'pull', '--hosts-dir', node.containerd.configPath, IMAGE], { timeoutMs: 300_000 })
  const seconds = (performance.now() - started) / 1000
  const total = image.allDigests().length
  say(`  ${node.name}: pulled ${IMAGE} in ${seconds.toFixed(2)} s`)
  const mirrored = node.spegel.logs.slice(before).filter((l) => l.peer !== undefined && l.method === 'GET' && typeof l.status === 'number' && l.status < 300)
  const amd = image.platforms[0]!
  const labels = new Map<string, string>([[image.top.digest, 'manifest'], [amd.config.digest, 'config'], ...amd.layers.map((l, i): [string, string] => [l.digest, `layer ${i + 1}`])])
  for (const line of mirrored) {
    const digest = /(sha256:[0-9a-f]{64})/.exec(String(line.path))?.[1] ?? String(line.path)
    const label = labels.get(digest) ?? (String(line.path).includes('/manifests/') ? 'manifest (tag)' : 'blob')
    say(`    ${label.padEnd(14)} ${digest.slice(0, 19)}…  ${mib(Number(line.bytes ?? 0)).padStart(10)}  from ${servedBy(line, nodes)}`)
  }
  if (mirrored.length === 0) say(`    (no mirrored requests recorded; ${total} blobs expected)`)
}

/** The lines of a node's /metrics that show what the pulls did. */
async function pullMetrics (node: DemoNode): Promise<string[]> {
  const text = await (await fetch(`${node.spegel.metricsUrl}/metrics`)).text()
  return text.split('\n').filter((l) => /^spegel_(mirror_requests_total|served_bytes_total|mirror_peer_bytes_total)\{/.test(l))
}

async function main (): Promise<number> {
  const skip = containerdSkipReason()
  if (skip !== undefined) {
    say(`The demo needs root and containerd: ${skip}.`)
    say('Run it as root with: bash scripts/demo.sh (installs containerd with apt when missing).')
    return 1
  }
  const workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'spegel-demo-'))
  const nodes: DemoNode[] = []
  let stopping = false
  const cleanup = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    say('\nstopping nodes and removing their containerd instances...')
    for (const node of nodes) await node.spegel.stop()
    for (const node of nodes) await node.containerd.dispose()
    await fs.rm(workDir, { recursive: true, force: true })
  }
  try {
    say(`spegel-ts demo: 3 nodes on ${HOSTS.join(', ')}, each with its own containerd (${here})`)
    // Every node shares one pre-shared key, as the Kubernetes install does: only they can join.
    const pskFile = path.join(workDir, 'router.psk')
    await generatePskFile(pskFile)
    for (let i = 0; i < HOSTS.length; i++) {
      nodes.push(await startNode(i, workDir, pskFile))
      say(`  ${nodes[i]!.name}: registry http://${HOSTS[i]}:5000, router ${HOSTS[i]}:5001, metrics http://${HOSTS[i]}:9090/metrics, peer ${nodes[i]!.peerId}`)
    }
    for (const node of nodes) await node.spegel.waitReady(60_000)
    say('all nodes ready (/readyz 200)')

    say(`building ${IMAGE} (${LAYER_MIB.join(' + ')} MiB layers) and importing it into node1 only`)
    const image = await buildImage(path.join(workDir, 'image'), IMAGE, LAYER_MIB.map((m) => m * 1048576))
    await nodes[0]!.containerd.importImage(image.archivePath!)
    const importedAt = performance.now()
    const tagUrl = `${nodes[1]!.spegel.registryUrl}/v2/demo/app/manifests/1.0?ns=${REGISTRY}`
    await waitFor(async () => {
      const res = await fetch(tagUrl, { method: 'HEAD' })
      return res.status === 200
    }, { timeoutMs: 30_000, what: 'node2 to find the image on a peer' })
    say(`  node2 found it on a peer ${((performance.now() - importedAt) / 1000).toFixed(2)} s after the import`)

    say(`pulling with ctr through the local mirror (upstream https://${REGISTRY} is unreachable):`)
    const before = await pullMetrics(nodes[1]!)
    await pullOn(nodes[1]!, image, nodes)
    await pullOn(nodes[2]!, image, nodes)
    say('\nnode2\'s metrics moved with its pull (before -> after):')
    const after = await pullMetrics(nodes[1]!)
    for (const line of after) {
      const name = line.slice(0, line.lastIndexOf(' '))
      const was = before.find((b) => b.startsWith(`${name} `))?.slice(name.length + 1) ?? '0'
      say(`  ${name}  ${was} -> ${line.slice(name.length + 1)}`)
    }

    say('\nThe nodes keep running. Open a node\'s live page in a browser (over ssh: ssh -L 9090:127.0.0.2:9090 <this machine>, then http://localhost:9090/debug/web/):')
    for (const host of HOSTS) say(`  http://${host}:9090/debug/web/`)
    say('Or try:')
    say(`  curl -s http://${HOSTS[2]}:5000/readyz; curl -sI 'http://${HOSTS[2]}:5000/v2/demo/app/manifests/1.0?ns=${REGISTRY}'`)
    say(`  curl -s http://${HOSTS[1]}:9090/metrics | grep spegel_`)
    say(`  kill -STOP ${nodes[0]!.containerd.pid ?? '<pid>'}   # freezes node1's containerd: its page turns red within about 15 s, /readyz says why`)
    say(`  kill -CONT ${nodes[0]!.containerd.pid ?? '<pid>'}   # and back to green, with no restart of the node`)
    say('Press Ctrl-C to stop and clean up.')
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve)
      process.once('SIGTERM', resolve)
      if (process.env.DEMO_EXIT === '1') resolve()
    })
    await cleanup()
    return 0
  } catch (err) {
    say(`demo failed: ${(err as Error).message}`)
    for (const node of nodes) {
      const errors = node.spegel.logs.filter((l) => l.level === 'ERROR' || l.level === 'WARN').slice(-5)
      for (const line of errors) say(`  ${node.name}: ${JSON.stringify(line)}`)
    }
    await cleanup()
    return 1
  }
}

process.exitCode = await main()
