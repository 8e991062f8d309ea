import fs from 'node:fs/promises'
import path from 'node:path'
import type { DoctorConfig } from '../config/index.js'
import {
  ContainerdClient,
  WELL_KNOWN_SOCKETS,
  analyseAccess,
  chooseSocket,
  contentPathReadable,
  currentIdentity,
  diagnoseSocket,
  fileSelinuxLabel,
  probeSocket,
  selinuxState
} from '../containerd/index.js'
import type { ImageRecord, SocketChoice, SocketDiagnosis } from '../containerd/index.js'
import { analyzeContainerdConfigFile, isMultiDirectory, mirrorWriteRoots } from '../mirror-config/index.js'
import { readHostsConfigs } from '../mirror-config/read-hosts.js'
import type { HostsConfig } from '../mirror-config/read-hosts.js'
import type { CheckResult, CheckStatus } from './doctor/check.js'
import { containerdConfigChecks } from './doctor/containerd-config.js'
import { hostsConfigCheck, nodeAddresses, primaryNodeAddress } from './doctor/hosts.js'
import { routerPskCheck } from './doctor/router-psk.js'
import { containerdVersionCheck } from './doctor/version.js'

export type { CheckResult, CheckStatus } from './doctor/check.js'
export type { DoctorConfig } from '../config/index.js'

export interface DoctorIo {
  stdout: (s: string) => void
}

export interface DoctorReport {
  readonly ok: boolean
  readonly checks: readonly CheckResult[]
}

/** Every RPC doctor makes is small; a daemon that takes longer than this is itself a finding. */
const RPC_TIMEOUT_MS = 5000
const PROBE_TIMEOUT_MS = 2000

const SOCK_FLAG = '--containerd-sock (env CONTAINERD_SOCK)'

interface SocketFacts {
  readonly choice: SocketChoice
  /** stat() outcome: 'socket', 'other' (exists, not a socket) or the errno. */
  readonly kind: 'socket' | 'other' | string
  /** Raw dial result: undefined when connected, else the errno; not set when the path is no socket. */
  readonly probe?: string | undefined
  readonly probed: boolean
  readonly diagnosis?: SocketDiagnosis
}

async function gatherSocket (config: DoctorConfig): Promise<SocketFacts> {
  const choice = await chooseSocket(config.containerdSock, config.containerdSockExplicit)
  let kind: string
  try {
    kind = (await fs.stat(choice.socketPath)).isSocket() ? 'socket' : 'other'
  } catch (err) {
    kind = (err as NodeJS.ErrnoException).code ?? 'EUNKNOWN'
  }
  if (kind === 'ENOENT' || kind === 'other' || kind === 'ENOTDIR') return { choice, kind, probed: false }
  const probe = await probeSocket(choice.socketPath, PROBE_TIMEOUT_MS)
  const diagnosis = probe === undefined ? undefined : await diagnoseSocket(choice.socketPath, probe)
  return { choice, kind, probe, probed: true, ...(diagnosis === undefined ? {} : { diagnosis }) }
}

function otherSockets (facts: SocketFacts): string[] {
  return facts.choice.candidatesFound.filter((p) => p !== facts.choice.socketPath)
}

function socketCheck (facts: SocketFacts): CheckResult {
  const id = 'socket'
  const title = 'containerd socket'
  const p = facts.choice.socketPath
  const others = otherSockets(facts)
  const pointAt = others.length > 0
    ? `set ${SOCK_FLAG} to the socket found on this node: ${others.join(' or ')}`
    : `start containerd, or set ${SOCK_FLAG} to its socket (${WELL_KNOWN_SOCKETS.map((c) => `${c.distribution}: ${c.path}`).join(', ')}); in a pod, mount the socket's directory, not the socket file`
  if (facts.kind === 'socket') {
    const how = facts.choice.source === 'well-known'
      ? ` (found the ${facts.choice.distribution ?? 'well-known'} socket; the default path does not exist)`
      : facts.choice.source === 'flag' ? ' (from --containerd-sock)' : ''
    return { id, title, status: 'pass', detail: `${p} is a socket${how}` }
  }
  if (facts.kind === 'ENOENT' || facts.kind === 'ENOTDIR') {
    return { id, title, status: 'fail', detail: `${p} does not exist`, fix: pointAt }
  }
  if (facts.kind === 'other') {
    return { id, title, status: 'fail', detail: `${p} exists but is not a unix socket`, fix: pointAt }
  }
  // EACCES from stat: a parent directory is not searchable. Whether the socket exists is
  // unknowable from here; the permissions check names the directory and carries the failure.
  return { id, title, status: 'skip', detail: `cannot stat ${p}: ${facts.kind} (see socket permissions)` }
}

async function permissionsCheck (facts: SocketFacts): Promise<CheckResult> {
  const id = 'socket-permissions'
  const title = 'socket permissions'
  const p = facts.choice.socketPath
  if (facts.kind === 'ENOENT' || facts.kind === 'ENOTDIR' || facts.kind === 'other') {
    return { id, title, status: 'skip', detail: `${p} ${facts.kind === 'other' ? 'is not a socket' : 'does not exist'}` }
  }
  const who = currentIdentity()
  const access = await analyseAccess(p, who)
  const bits = access.mode === undefined ? '' : ` (socket mode ${access.mode}, owner ${access.ownerUid ?? '?'}:${access.ownerGid ?? '?'})`
  // No mode means a parent directory, not the socket, stops us: group membership would not help.
  const fix = access.mode === undefined
    ? `run spegel as root (uid 0), or make every directory above ${p} searchable (x) by uid ${who.uid}`
    : `run spegel as root (uid 0) or as a member of group ${access.ownerGid ?? '?'} owning the socket; containerd creates it as root:root 0660`
  const diag = facts.diagnosis
  if (diag?.problem === 'permission-denied') {
    return { id, title, status: 'fail', detail: diag.message, fix }
  }
  if (facts.probe === undefined && facts.probed) {
    return { id, title, status: 'pass', detail: `uid ${who.uid} can connect${bits}` }
  }
  if (diag?.problem === 'selinux-denied') {
    return { id, title, status: 'pass', detail: `unix permissions let uid ${who.uid} connect${bits}; SELinux denies it (see the SELinux check)` }
  }
  // The dial failed for another reason (refused, timeout): judge from the mode bits alone.
  if (access.canConnect) return { id, title, status: 'pass', detail: `uid ${who.uid} may connect${bits}` }
  return {
    id,
    title,
    status: 'fail',
    detail: `permission denied on ${p}: ${access.explanation ?? 'unknown reason'}`,
    fix
  }
}

function selinuxType (label: string | undefined): string | undefined {
  return label?.split(':')[2]
}

/** Process domains that may talk to containerd's socket under the usual container-selinux policy. */
const PRIVILEGED_DOMAINS = new Set(['spc_t', 'unconfined_t', 'container_runtime_t', 'kernel_t', 'initrc_t', 'unconfined_service_t'])

async function selinuxCheck (facts: SocketFacts): Promise<CheckResult> {
  const id = 'selinux'
  const title = 'SELinux'
  const state = await selinuxState()
  if (state.mode === 'disabled') return { id, title, status: 'pass', detail: 'SELinux is disabled' }
  const socketLabel = facts.kind === 'socket' ? await fileSelinuxLabel(facts.choice.socketPath) : undefined
  const labels = `process label ${state.processLabel ?? 'unknown'}, socket label ${socketLabel ?? 'unknown'}`
  const fix = 'run the pod with securityContext.seLinuxOptions.type: spc_t (the Helm chart sets it), or allow the process domain to connect to container_runtime_var_run_t sockets'
  if (state.mode === 'permissive') {
    return { id, title, status: 'pass', detail: `SELinux is permissive (denials are logged, not enforced); ${labels}` }
  }
  if (facts.diagnosis?.problem === 'selinux-denied') {
    return { id, title, status: 'fail', detail: facts.diagnosis.message, fix: facts.diagnosis.fix }
  }
  if (facts.probed && facts.probe === undefined) {
    return { id, title, status: 'pass', detail: `SELinux is enforcing and allows the connection; ${labels}` }
  }
  const domain = selinuxType(state.processLabel)
  if (domain !== undefined && !PRIVILEGED_DOMAINS.has(domain)) {
    return { id, title, status: 'warn', detail: `SELinux is enforcing and this process runs as ${domain}, which the container policy usually denies access to containerd's socket; ${labels}`, fix }
  }
  return { id, title, status: 'pass', detail: `SELinux is enforcing; ${labels}` }
}

interface ContainerdFacts {
  readonly reachable: CheckResult
  readonly client?: ContainerdClient
  readonly version?: { version: string, revision: string }
  /** Why later containerd checks cannot run. */
  readonly unreachableReason?: string
}

async function gatherContainerd (config: DoctorConfig, facts: SocketFacts): Promise<ContainerdFacts> {
  const id = 'containerd'
  const title = 'containerd reachable'
  const p = facts.choice.socketPath
  if (!facts.probed) {
    const reason = facts.kind === 'other' ? `${p} is not a socket` : `${p} does not exist`
    return { reachable: { id, title, status: 'skip', detail: reason }, unreachableReason: reason }
  }
  const diag = facts.diagnosis
  if (diag !== undefined) {
    if (diag.problem === 'permission-denied' || diag.problem === 'selinux-denied') {
      const reason = `cannot connect to ${p}: ${diag.problem === 'selinux-denied' ? 'SELinux denies it' : 'permission denied'}`
      return { reachable: { id, title, status: 'skip', detail: `${reason} (see ${diag.problem === 'selinux-denied' ? 'SELinux' : 'socket permissions'})` }, unreachableReason: reason }
    }
    return {
      reachable: { id, title, status: 'fail', detail: `${diag.message}${diag.errno === undefined ? '' : ` [${diag.errno}]`}`, fix: diag.fix },
      unreachableReason: `containerd is not reachable (${diag.errno ?? diag.problem})`
    }
  }
  const client = new ContainerdClient({ socketPath: p, namespace: config.containerdNamespace })
  try {
    const version = await client.getVersion({ timeoutMs: RPC_TIMEOUT_MS })
    return { reachable: { id, title, status: 'pass', detail: `containerd answers on ${p}` }, client, version }
  } catch (err) {
    client.close()
    const notServing = await diagnoseSocket(p, undefined, (err as Error).message)
    return {
      reachable: { id, title, status: 'fail', detail: notServing.message, fix: notServing.fix },
      unreachableReason: 'containerd\'s API did not answer'
    }
  }
}

async function imagesCheck (config: DoctorConfig, ctrd: ContainerdFacts): Promise<{ result: CheckResult, images: ImageRecord[] }> {
  const id = 'images'
  const title = 'images in namespace'
  const ns = config.containerdNamespace
  if (ctrd.client === undefined) return { result: { id, title, status: 'skip', detail: ctrd.unreachableReason ?? 'containerd is not reachable' }, images: [] }
  let images: ImageRecord[]
  try {
    images = await ctrd.client.listImages([], { timeoutMs: RPC_TIMEOUT_MS })
  } catch (err) {
    return {
      result: { id, title, status: 'fail', detail: `listing images in namespace ${ns} failed: ${(err as Error).message}`, fix: 'check containerd\'s log (journalctl -u containerd)' },
      images: []
    }
  }
  // CRI keeps an extra `sha256:<config>` record per image; only named images can be asked for by a pull.
  const named = images.filter((i) => i.name.includes('/'))
  if (named.length === 0) {
    return {
      result: {
        id,
        title,
        status: 'warn',
        detail: `namespace ${ns} holds no named images${images.length > 0 ? ` (${images.length} id-only records)` : ''}: this node has nothing to share yet`,
        fix: 'kubelet (CRI) keeps images in namespace k8s.io; pass --containerd-namespace (env CONTAINERD_NAMESPACE) if this node uses another; on a fresh node this clears after the first pull'
      },
      images
    }
  }
  const sample = named.slice(0, 2).map((i) => i.name).join(', ')
  return { result: { id, title, status: 'pass', detail: `${named.length} image${named.length > 1 ? 's' : ''} in namespace ${ns} (${sample}${named.length > 2 ? ', ...' : ''})` }, images }
}

function blobPath (contentPath: string, digest: string): string | undefined {
  const [algorithm, hex] = digest.split(':')
  if (algorithm === undefined || hex === undefined || !/^[a-z0-9]+$/.test(algorithm) || !/^[a-f0-9]+$/.test(hex)) return undefined
  return path.join(contentPath, 'blobs', algorithm, hex)
}

/** containerd creates `blobs/` with the first blob: a readable store without it is just empty. */
async function isEmptyStore (contentPath: string): Promise<boolean> {
  try {
    await fs.access(contentPath, fs.constants.R_OK | fs.constants.X_OK)
  } catch {
    // Absent or unreadable is not "empty"; the caller reports contentPathReadable's reason.
    return false
  }
  try {
    await fs.stat(path.join(contentPath, 'blobs'))
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT'
  }
}

async function contentCheck (config: DoctorConfig, ctrd: ContainerdFacts, images: readonly ImageRecord[]): Promise<CheckResult> {
  const id = 'content-path'
  const title = 'content directory'
  const isExplicit = config.containerdContentPath !== ''
  let contentPath = config.containerdContentPath
  let discovered: string | undefined
  if (ctrd.client !== undefined) {
    try {
      discovered = (await ctrd.client.pluginExports('io.containerd.content.v1', 'content', { timeoutMs: RPC_TIMEOUT_MS }))?.root
    } catch {
      // Introspection failing only costs the cross-check below; the explicit path is still tested.
      discovered = undefined
    }
  }
  if (!isExplicit) {
    if (ctrd.client === undefined) {
      return { id, title, status: 'skip', detail: `--containerd-content-path is empty and the path cannot be discovered: ${ctrd.unreachableReason ?? 'containerd is not reachable'}` }
    }
    if (discovered === undefined || discovered === '') {
      return {
        id,
        title,
        status: 'warn',
        detail: 'containerd does not export its content store root: blobs are read through the socket (about 10x slower than from disk)',
        fix: 'pass --containerd-content-path (env CONTAINERD_CONTENT_PATH) with <containerd root>/io.containerd.content.v1.content, mounted read-only'
      }
    }
    contentPath = discovered
  }
  const source = isExplicit ? '' : ' (discovered from containerd)'
  const readable = await contentPathReadable(contentPath)
  if (!readable.readable && await isEmptyStore(contentPath)) {
    return { id, title, status: 'pass', detail: `${contentPath}${source} is readable and holds no blobs yet` }
  }
  if (!readable.readable) {
    const fix = `run spegel as root and mount ${discovered ?? contentPath} read-only at the same path, or pass --containerd-content-path (env CONTAINERD_CONTENT_PATH) with where it is mounted`
    // An explicit path that cannot be read serves nothing; a discovered one falls back to the socket.
    const elsewhere = discovered !== undefined && discovered !== contentPath ? ` (containerd's content store is ${discovered})` : ''
    return isExplicit
      ? { id, title, status: 'fail', detail: `${contentPath} is not readable: ${readable.reason ?? 'unknown'}${elsewhere}`, fix }
      : { id, title, status: 'warn', detail: `${contentPath}${source} is not readable (${readable.reason ?? 'unknown'}): blobs are read through the socket, about 10x slower`, fix }
  }
  // A readable directory may still be some other containerd's store; an image's target blob must be in it.
  const named = images.filter((i) => i.name.includes('/'))
  const probe = [...named, ...images].find((i) => blobPath(contentPath, i.target.digest) !== undefined)
  if (probe !== undefined) {
    const file = blobPath(contentPath, probe.target.digest) ?? ''
    try {
      await fs.access(file, fs.constants.R_OK)
    } catch (err) {
      return {
        id,
        title,
        status: 'fail',
        detail: `${contentPath}${source} is readable but lacks ${probe.target.digest} (target of ${probe.name}): ${(err as NodeJS.ErrnoException).code ?? 'error'}; it is not this containerd's content store${discovered !== undefined && discovered !== contentPath ? ` (containerd's is ${discovered})` : ''}`,
        fix: `point --containerd-content-path (env CONTAINERD_CONTENT_PATH) at ${discovered ?? '<containerd root>/io.containerd.content.v1.content'} as mounted here, or leave it empty to discover it`
      }
    }
    return { id, title, status: 'pass', detail: `${contentPath}${source} is readable and holds ${probe.name}'s ${probe.target.digest.slice(0, 19)}...` }
  }
  return { id, title, status: 'pass', detail: `${contentPath}${source} is readable` }
}

interface HostsCheckTarget {
  /** Directory to read `<registry>/hosts.toml` files from. */
  readonly dir: string
  readonly id?: string
  readonly title?: string
}

async function hostsCheck (config: DoctorConfig, target: HostsCheckTarget): Promise<CheckResult> {
  const { dir } = target
  let configs: HostsConfig[] = []
  let readError: string | undefined
  try {
    const st = await fs.stat(dir)
    if (!st.isDirectory()) readError = 'not a directory'
    else configs = await readHostsConfigs(dir)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'ENOENT') readError = code ?? (err as Error).message
  }
  return hostsConfigCheck(configs, {
    configPath: dir,
    mirrorConfigPath: config.containerdRegistryConfigPath,
    ...(target.id === undefined ? {} : { id: target.id }),
    ...(target.title === undefined ? {} : { title: target.title }),
    nodeAddresses: nodeAddresses(),
    registryPort: config.registryAddr.port,
    suggestedAddress: config.registryAddr.host !== '' && config.registryAddr.host !== '0.0.0.0' && config.registryAddr.host !== '::'
      ? config.registryAddr.host
      : primaryNodeAddress(),
    ...(readError === undefined ? {} : { readError })
  })
}

/**
 * Runs every check in dependency order: socket → permissions/SELinux → reachable → version,
 * images, content; the config-file, hosts.toml and router key checks need no containerd.
 */
export async function runChecks (config: DoctorConfig): Promise<CheckResult[]> {
  const socket = await gatherSocket(config)
  const results: CheckResult[] = [socketCheck(socket), await permissionsCheck(socket), await selinuxCheck(socket)]
  const ctrd = await gatherContainerd(config, socket)
  try {
    results.push(ctrd.reachable)
    results.push(ctrd.version === undefined
      ? { id: 'containerd-version', title: 'containerd version', status: 'skip', detail: ctrd.unreachableReason ?? 'containerd is not reachable' }
      : containerdVersionCheck(ctrd.version.version, ctrd.version.revision))
    const { result: imagesResult, images } = await imagesCheck(config, ctrd)
    results.push(imagesResult)
    results.push(await contentCheck(config, ctrd, images))
  } finally {
    ctrd.client?.close()
  }
  const report = await analyzeContainerdConfigFile({
    file: config.containerdConfig,
    mirrorConfigPath: config.containerdRegistryConfigPath,
    ...(ctrd.version === undefined ? {} : { version: ctrd.version.version })
  })
  // The transfer service reads a multi-directory config_path as one literal directory: look
  // there too, since spegel configuration writes it (a pass there is the no-restart workaround).
  const settings = report.analysis?.settings
  const transferDirHosts = settings !== undefined && settings.pullPath === 'transfer' && isMultiDirectory(settings.configPath)
    ? await hostsCheck(config, { dir: settings.configPath, id: 'hosts-config-transfer', title: 'transfer-service hosts.toml' })
    : undefined
  results.push(...containerdConfigChecks(report, {
    registryConfigPath: config.containerdRegistryConfigPath,
    ...(transferDirHosts === undefined ? {} : { transferDirHosts })
  }))
  // The local pull path reads spegel's first directory before any later one.
  const localDir = mirrorWriteRoots(config.containerdRegistryConfigPath)[0]?.dir ?? config.containerdRegistryConfigPath
  results.push(await hostsCheck(config, { dir: localDir }))
  results.push(await routerPskCheck(config.routerSecretPath))
  return results
}

const LABEL: Readonly<Record<CheckStatus, string>> = { pass: '[PASS]', warn: '[WARN]', fail: '[FAIL]', skip: '[SKIP]' }

/** One line per check, an indented `fix:` under failures and warnings, then a summary line. */
export function formatText (checks: readonly CheckResult[]): string {
  const width = Math.max(...checks.map((c) => c.title.length))
  const indent = ' '.repeat(LABEL.pass.length + 1)
  const lines: string[] = []
  for (const c of checks) {
    lines.push(`${LABEL[c.status]} ${c.title.padEnd(width)}  ${c.detail}`)
    if (c.fix !== undefined && (c.status === 'fail' || c.status === 'warn')) {
      const [first, ...rest] = c.fix.split('\n')
      lines.push(`${indent}fix: ${first ?? ''}`)
      for (const line of rest) lines.push(`${indent}     ${line}`)
    }
  }
  const count = (s: CheckStatus): number => checks.filter((c) => c.status === s).length
  const failed = count('fail')
  lines.push('')
  const warnings = count('warn')
  lines.push(`${checks.length} checks: ${count('pass')} passed, ${warnings} warning${warnings === 1 ? '' : 's'}, ${failed} failed, ${count('skip')} skipped: ${failed === 0 ? 'this node is ready for spegel' : 'fix the failures above'}`)
  return lines.join('\n') + '\n'
}

export function toReport (checks: readonly CheckResult[]): DoctorReport {
  return { ok: checks.every((c) => c.status !== 'fail'), checks }
}

/** Prints the checklist (text or JSON, per `config.output`); 0 when nothing failed, else 1. */
export async function runDoctor (config: DoctorConfig, io: DoctorIo = { stdout: (s) => { process.stdout.write(s) } }): Promise<number> {
  const checks = await runChecks(config)
  const report = toReport(checks)
  io.stdout(config.output === 'json' ? JSON.stringify(report, null, 2) + '\n' : formatText(checks))
  return report.ok ? 0 : 1
}
