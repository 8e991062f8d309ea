// deploy/kubernetes without a cluster: every kustomization (the default install, each overlay,
// each component on top of the default, all components together, every uninstall, and the
// multi-directory config path with its uninstall in both component orders) is
// rendered with kustomize, every object is validated against the Kubernetes schemas (unknown
// fields included), every container's arguments and environment go through the project's own
// CLI parser after the kubelet's $(VAR) expansion, and what the pods need to work is checked
// across objects: mounts against flags, ports against Services, mirror targets against the
// NodePort or hostPort, the bootstrap name against the headless Service.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { runCli, type CliHandlers } from '../../src/cli/program.js'
import {
  registrySettings, type CleanupConfig, type CleanupWaitConfig, type ConfigurationConfig,
  type DoctorConfig, type RegistryConfig
} from '../../src/config/index.js'
import { literalRootTop, mirrorWriteRoots } from '../../src/mirror-config/index.js'
import {
  FIELD_VALUES, KUBERNETES_DIR, REPO_ROOT, expand, findKustomize, parseManifests, podTemplate, processOf,
  render, validateObject, type Container, type K8sObject, type Kustomize, type PodSpec, type Volume
} from './manifests.js'

const VERSION = (JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version
const IMAGE = `ghcr.io/spegel-ts/spegel-ts:${VERSION}`
const NODE_IP = FIELD_VALUES['status.hostIP']

type Distro = 'default' | 'k3s' | 'rke2' | 'k0s' | 'microk8s'

/** Where each distribution keeps containerd's files (sources in docs/kubernetes.md). */
const PATHS: Record<Distro, { sock: string, content: string, config: string, certs: string }> = {
  default: {
    sock: '/run/containerd/containerd.sock',
    content: '/var/lib/containerd/io.containerd.content.v1.content',
    config: '/etc/containerd/config.toml',
    certs: '/etc/containerd/certs.d'
  },
  k3s: {
    sock: '/run/k3s/containerd/containerd.sock',
    content: '/var/lib/rancher/k3s/agent/containerd/io.containerd.content.v1.content',
    config: '/var/lib/rancher/k3s/agent/etc/containerd/config.toml',
    certs: '/var/lib/rancher/k3s/agent/etc/containerd/certs.d'
  },
  rke2: {
    sock: '/run/k3s/containerd/containerd.sock',
    content: '/var/lib/rancher/rke2/agent/containerd/io.containerd.content.v1.content',
    config: '/var/lib/rancher/rke2/agent/etc/containerd/config.toml',
    certs: '/var/lib/rancher/rke2/agent/etc/containerd/certs.d'
  },
  k0s: {
    sock: '/run/k0s/containerd.sock',
    content: '/var/lib/k0s/containerd/io.containerd.content.v1.content',
    config: '/etc/k0s/containerd.d/spegel.toml',
    certs: '/etc/containerd/certs.d'
  },
  microk8s: {
    sock: '/var/snap/microk8s/common/run/containerd.sock',
    content: '/var/snap/microk8s/common/var/lib/containerd/io.containerd.content.v1.content',
    config: '/var/snap/microk8s/current/args/containerd.toml',
    certs: '/var/snap/microk8s/current/args/certs.d'
  }
}
const DISTROS = Object.keys(PATHS).filter((d): d is Exclude<Distro, 'default'> => d !== 'default')

/** components/multi-dir-config-path: containerd's config_path as a list (containerd 2.2's default, EKS AL2023). */
const MULTI_DIR = 'multi-dir-config-path'
const MULTI_DIR_CONFIG_PATH = '/etc/containerd/certs.d:/etc/docker/certs.d'
/** Where the literal directory `/etc/containerd/certs.d:/etc/docker/certs.d` lives: a sibling of certs.d. */
const MULTI_DIR_MOUNT = '/etc/containerd'
/**
 * Components for containerd's own default paths only. The overlays' distributions write a
 * single-directory config_path themselves (k3s, RKE2 and MicroK8s in their config templates,
 * k0s in the drop-in docs/kubernetes.md prescribes), so these are not rendered on overlays.
 */
const DEFAULT_LAYOUT_ONLY = new Set([MULTI_DIR])

// ---------------------------------------------------------------------------------------------
// What gets rendered

interface Variant {
  name: string
  distro: Distro
  uninstall: boolean
  /** An existing kustomization directory... */
  dir?: string
  /**
   * ...or one generated in a temporary directory from these: paths relative to
   * deploy/kubernetes, or `variant:<name>` for the directory generated for another variant.
   */
  generated?: { resources: string[], components: string[], namespace?: string, files?: Record<string, string> }
  /** The config path `configuration` writes and `cleanup` restores, when not the distribution's certs.d. */
  configPath?: string
  /** For an uninstall: the variant holding the install it undoes. */
  install?: string
}

function kustomizationDirs (parent: string): string[] {
  if (!fs.existsSync(parent)) return []
  return fs.readdirSync(parent, { withFileTypes: true })
    .filter((e) => e.isDirectory() && fs.existsSync(path.join(parent, e.name, 'kustomization.yaml')))
    .map((e) => e.name)
    .sort()
}

// Every component, including ones other people add (prometheus-rule, grafana-dashboard...).
const COMPONENTS = kustomizationDirs(path.join(KUBERNETES_DIR, 'components'))
const INSTALL_COMPONENTS = COMPONENTS.filter((c) => c !== 'uninstall')

function variants (): Variant[] {
  const list: Variant[] = [{ name: 'default', distro: 'default', uninstall: false, dir: KUBERNETES_DIR }]
  for (const d of DISTROS) list.push({ name: `overlays/${d}`, distro: d, uninstall: false, dir: path.join(KUBERNETES_DIR, 'overlays', d) })
  list.push({ name: 'uninstall', distro: 'default', uninstall: true, dir: path.join(KUBERNETES_DIR, 'uninstall'), install: 'default' })
  for (const d of DISTROS) list.push({ name: `uninstall/${d}`, distro: d, uninstall: true, dir: path.join(KUBERNETES_DIR, 'uninstall', d), install: `overlays/${d}` })
  const configPathWith = (components: readonly string[]): string | undefined => components.includes(`components/${MULTI_DIR}`) ? MULTI_DIR_CONFIG_PATH : undefined
  for (const c of INSTALL_COMPONENTS) {
    const components = [`components/${c}`]
    list.push({ name: `default + components/${c}`, distro: 'default', uninstall: false, generated: { resources: ['.'], components }, configPath: configPathWith(components) })
  }
  const all = INSTALL_COMPONENTS.map((c) => `components/${c}`)
  const allButDefaultLayoutOnly = INSTALL_COMPONENTS.filter((c) => !DEFAULT_LAYOUT_ONLY.has(c)).map((c) => `components/${c}`)
  list.push({ name: 'default + every component', distro: 'default', uninstall: false, generated: { resources: ['.'], components: all }, configPath: configPathWith(all) })
  list.push({ name: 'default + every component, uninstalled', distro: 'default', uninstall: true, generated: { resources: ['.'], components: [...all, 'components/uninstall'] }, configPath: configPathWith(all), install: 'default + every component' })
  // The multi-directory config path: the uninstall after the component, before it (it then
  // patches the cleanup), and as the docs tell users to build it (their install as a resource).
  const multi = `components/${MULTI_DIR}`
  list.push({ name: `default + ${multi}, uninstalled`, distro: 'default', uninstall: true, generated: { resources: ['.'], components: [multi, 'components/uninstall'] }, configPath: MULTI_DIR_CONFIG_PATH, install: `default + ${multi}` })
  list.push({ name: `default + ${multi} after components/uninstall`, distro: 'default', uninstall: true, generated: { resources: ['.'], components: ['components/uninstall', multi] }, configPath: MULTI_DIR_CONFIG_PATH, install: `default + ${multi}` })
  list.push({ name: `uninstall of a kustomization with ${multi}`, distro: 'default', uninstall: true, generated: { resources: [`variant:default + ${multi}`], components: ['components/uninstall'] }, configPath: MULTI_DIR_CONFIG_PATH, install: `default + ${multi}` })
  // The names that embed the namespace follow a `namespace:` of the user's kustomization.
  list.push({ name: 'default in namespace mirror', distro: 'default', uninstall: false, generated: { resources: ['.'], components: [], namespace: 'mirror' } })
  list.push({ name: 'uninstall in namespace mirror', distro: 'default', uninstall: true, generated: { resources: ['uninstall'], components: [], namespace: 'mirror' } })
  list.push({ name: 'overlays/k3s + every component', distro: 'k3s', uninstall: false, generated: { resources: ['overlays/k3s'], components: allButDefaultLayoutOnly } })
  list.push({ name: 'overlays/microk8s + every component, uninstalled', distro: 'microk8s', uninstall: true, generated: { resources: ['overlays/microk8s'], components: [...allButDefaultLayoutOnly, 'components/uninstall'] } })
  return list
}

/** The directory a generated variant is written to. */
function variantDir (tmp: string, name: string): string {
  return path.join(tmp, name.replace(/[^a-z0-9]+/gi, '-'))
}

async function writeKustomization (dir: string, spec: NonNullable<Variant['generated']>, tmp: string): Promise<void> {
  await mkdir(dir, { recursive: true })
  const rel = (p: string): string => path.relative(dir, p.startsWith('variant:') ? variantDir(tmp, p.slice('variant:'.length)) : path.join(KUBERNETES_DIR, p)) || '.'
  const lines = [
    'apiVersion: kustomize.config.k8s.io/v1beta1',
    'kind: Kustomization',
    'resources:',
    ...spec.resources.map((r) => `  - ${rel(r)}`)
  ]
  if (spec.namespace !== undefined) lines.push(`namespace: ${spec.namespace}`)
  if (spec.components.length > 0) lines.push('components:', ...spec.components.map((c) => `  - ${rel(c)}`))
  const files = spec.files ?? {}
  const patches = Object.keys(files)
  if (patches.length > 0) lines.push('patches:', ...patches.map((f) => `  - path: ${f}`))
  await writeFile(path.join(dir, 'kustomization.yaml'), lines.join('\n') + '\n')
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text)
}

// ---------------------------------------------------------------------------------------------
// Reading rendered objects

function ofKind (objects: readonly K8sObject[], kind: string): K8sObject[] {
  return objects.filter((o) => o.kind === kind)
}

function only<T> (items: readonly T[], what: string): T {
  assert.equal(items.length, 1, `expected exactly one ${what}, found ${items.length}`)
  return items[0] as T
}

function selects (selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  if (selector === undefined || Object.keys(selector).length === 0) return false
  return Object.entries(selector).every(([k, v]) => labels[k] === v)
}

interface ServiceSpec {
  type?: string
  clusterIP?: string
  publishNotReadyAddresses?: boolean
  trafficDistribution?: string
  internalTrafficPolicy?: string
  selector?: Record<string, string>
  ports?: Array<{ name?: string, port: number, targetPort?: number | string, nodePort?: number, protocol?: string }>
}

function serviceSpec (svc: K8sObject): ServiceSpec {
  return (svc.spec ?? {}) as ServiceSpec
}

function container (spec: PodSpec, name: string, init = false): Container {
  const list = (init ? spec.initContainers : spec.containers) ?? []
  return only(list.filter((c) => c.name === name), `${init ? 'init ' : ''}container ${name}`)
}

/** A named or numbered port of the container, as a number. */
function portNumber (c: Container, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return c.ports?.some((p) => p.containerPort === port) === true ? port : undefined
  return c.ports?.find((p) => p.name === port)?.containerPort
}

function namedPort (c: Container, name: string): { containerPort: number, hostPort?: number } {
  return only((c.ports ?? []).filter((p) => p.name === name), `port ${name} on ${c.name}`)
}

/** The volume mounted exactly at `mountPath`, with its hostPath equal to the mount path. */
function identityHostMount (spec: PodSpec, c: Container, mountPath: string): { readOnly: boolean, hostPath: NonNullable<Volume['hostPath']> } {
  const mount = only((c.volumeMounts ?? []).filter((m) => m.mountPath === mountPath), `mount at ${mountPath} in ${c.name}`)
  assert.equal(mount.subPath, undefined, `${c.name}: ${mountPath} must not be a subPath mount`)
  const volume = only((spec.volumes ?? []).filter((v) => v.name === mount.name), `volume ${mount.name}`)
  assert.ok(volume.hostPath !== undefined, `${c.name}: ${mountPath} must be a hostPath volume`)
  assert.equal(volume.hostPath.path, mountPath, `${c.name}: volume ${mount.name} must mount host ${volume.hostPath.path} at the same path (mounted at ${mountPath})`)
  return { readOnly: mount.readOnly === true, hostPath: volume.hostPath }
}

/**
 * The hostPath mount through which `target` is reached in the container: the mount at `target`
 * or at its nearest parent directory, with the volume's host path equal to that mount path, so
 * `target` in the container is `target` on the node.
 */
function coveringHostMount (spec: PodSpec, c: Container, target: string): { mountPath: string, readOnly: boolean, hostPath: NonNullable<Volume['hostPath']> } {
  const covering = (c.volumeMounts ?? [])
    .filter((m) => m.mountPath === target || target.startsWith(m.mountPath.endsWith('/') ? m.mountPath : `${m.mountPath}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)
  const mount = covering[0]
  assert.ok(mount !== undefined, `${c.name}: ${target} is not on any mount, so it would land in the container's own filesystem`)
  const { readOnly, hostPath } = identityHostMount(spec, c, mount.mountPath)
  return { mountPath: mount.mountPath, readOnly, hostPath }
}

/**
 * The host directories a config path makes spegel write: the directory itself, or for a list
 * (`a:b`) the first directory and the literal joined path (src/mirror-config/config-path.ts).
 * Each must reach the node through a mount of the wanted kind. The first is mounted itself;
 * the literal one cannot be (its name holds a colon), so a parent directory carries it.
 */
function assertConfigPathMounts (spec: PodSpec, c: Container, configPath: string, want: { readOnly: boolean }): void {
  const [first, ...rest] = mirrorWriteRoots(configPath)
  assert.ok(first !== undefined, `${c.name}: empty config path`)
  const what = want.readOnly ? 'read-only' : 'writable'
  assert.equal(identityHostMount(spec, c, first.dir).readOnly, want.readOnly, `${c.name}: ${first.dir} must be mounted ${what}`)
  for (const root of rest) {
    const m = coveringHostMount(spec, c, root.dir)
    assert.equal(m.readOnly, want.readOnly, `${c.name}: ${root.dir} is reached through ${m.mountPath}, which must be mounted ${what}`)
  }
}

function assertExpanded (owner: string, values: readonly string[]): void {
  for (const v of values) assert.ok(!v.includes('$('), `${owner}: "${v}" names a variable the container does not define`)
}

interface Parsed {
  registry?: RegistryConfig
  doctor?: DoctorConfig
  configuration?: ConfigurationConfig
  cleanup?: CleanupConfig
  cleanupWait?: CleanupWaitConfig
}

/** The project's CLI on a container's arguments and environment: unknown or bad flags fail. */
async function cli (who: string, argv: string[], env: Record<string, string>): Promise<Parsed> {
  const parsed: Parsed = {}
  let stderr = ''
  const handlers: CliHandlers = {
    registry: async (c) => { parsed.registry = c; return 0 },
    doctor: async (c) => { parsed.doctor = c; return 0 },
    configuration: async (c) => { parsed.configuration = c; return 0 },
    cleanup: async (c) => { parsed.cleanup = c; return 0 },
    cleanupWait: async (c) => { parsed.cleanupWait = c; return 0 }
  }
  const code = await runCli(argv, env, handlers, { stdout: () => {}, stderr: (s) => { stderr += s } })
  assert.equal(code, 0, `${who}: spegel ${argv.join(' ')} is rejected by the CLI:\n${stderr}`)
  return parsed
}

/** Container runs the image's entrypoint (the spegel CLI) with this subcommand first. */
async function parseContainer (owner: K8sObject, c: Container, subcommand: string): Promise<{ parsed: Parsed, env: Record<string, string> }> {
  assert.equal(c.image, IMAGE, `${c.name}: image`)
  assert.equal(c.command, undefined, `${c.name}: must run the image's entrypoint (the spegel CLI)`)
  const { env, args } = processOf(owner, c)
  assertExpanded(c.name, [...args, ...Object.values(env)])
  assert.equal(args[0], subcommand, `${c.name}: first argument`)
  return { parsed: await cli(c.name, args, env), env }
}

function assertLockedDown (spec: PodSpec, c: Container): void {
  const sc = c.securityContext ?? {}
  const seLinuxType = sc.seLinuxOptions?.type ?? spec.securityContext?.seLinuxOptions?.type
  assert.equal(seLinuxType, 'spc_t', `${c.name}: seLinuxOptions.type`)
  assert.equal(sc.readOnlyRootFilesystem, true, `${c.name}: readOnlyRootFilesystem`)
  assert.equal(sc.allowPrivilegeEscalation, false, `${c.name}: allowPrivilegeEscalation`)
  assert.notEqual(sc.privileged, true, `${c.name}: privileged`)
  assert.ok(sc.capabilities?.drop?.includes('ALL') === true, `${c.name}: capabilities.drop must include ALL`)
  assert.deepEqual(sc.capabilities?.add ?? [], [], `${c.name}: no capability added`)
}

function assertHttpProbe (c: Container, probe: 'readinessProbe' | 'livenessProbe' | 'startupProbe', wantPath: string, wantPort: number): void {
  const p = c[probe]
  assert.ok(p?.httpGet !== undefined, `${c.name}: ${probe} must be an httpGet probe`)
  assert.equal(p.httpGet.path, wantPath, `${c.name}: ${probe} path`)
  assert.equal(portNumber(c, p.httpGet.port), wantPort, `${c.name}: ${probe} port`)
}

// ---------------------------------------------------------------------------------------------
// Checks shared by every render

function checkObjects (objects: readonly K8sObject[]): string {
  const ns = only(ofKind(objects, 'Namespace'), 'Namespace').metadata.name
  const ids = new Set<string>()
  for (const o of objects) {
    const id = `${o.apiVersion}/${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`
    assert.ok(!ids.has(id), `${id} appears twice`)
    ids.add(id)
    // Without one, kubectl would create it in whatever namespace the caller's context names.
    if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, ns, `${o.kind} ${o.metadata.name}: must be in namespace ${ns}`)
    const unknown = validateObject(o)
    assert.deepEqual(unknown, [], `${o.kind} ${o.metadata.name}: fields the Kubernetes schema does not know`)
  }
  for (const o of [...ofKind(objects, 'DaemonSet'), ...ofKind(objects, 'Job')]) {
    const { spec } = podTemplate(o)
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) assert.equal(c.image, IMAGE, `${o.kind} ${o.metadata.name} ${c.name}: image`)
  }
  return ns
}

function theDaemonSet (objects: readonly K8sObject[]): { ds: K8sObject, labels: Record<string, string>, spec: PodSpec } {
  const ds = only(ofKind(objects, 'DaemonSet'), 'DaemonSet')
  const { labels, spec } = podTemplate(ds)
  const selector = (ds.spec as { selector?: { matchLabels?: Record<string, string> } }).selector?.matchLabels
  assert.ok(selects(selector, labels), 'the DaemonSet selector must select its own pods')
  assert.equal(spec.priorityClassName, 'system-node-critical')
  assert.notEqual(spec.hostNetwork, true, 'no host network')
  for (const t of [{ effect: 'NoSchedule' }, { effect: 'NoExecute' }, { key: 'CriticalAddonsOnly' }]) {
    assert.ok(spec.tolerations?.some((x) => x.operator === 'Exists' && (x.effect === t.effect || t.effect === undefined) && x.key === t.key), `toleration ${JSON.stringify(t)} missing`)
  }
  const strategy = (ds.spec as { updateStrategy?: { type?: string, rollingUpdate?: { maxSurge?: number | string } } }).updateStrategy
  assert.equal(strategy?.type, 'RollingUpdate')
  // A surge pod would share the node's data directory, hence its peer identity.
  assert.equal(strategy?.rollingUpdate?.maxSurge, 0, 'maxSurge must be 0')
  for (const c of [...(spec.initContainers ?? []), ...spec.containers]) assertLockedDown(spec, c)
  return { ds, labels, spec }
}

function servicesSelecting (objects: readonly K8sObject[], labels: Record<string, string>): K8sObject[] {
  return ofKind(objects, 'Service').filter((s) => selects(serviceSpec(s).selector, labels))
}

function checkNetworkPolicies (objects: readonly K8sObject[], labels: Record<string, string>, c: Container, open: readonly string[], peersOnly: readonly string[]): void {
  for (const np of ofKind(objects, 'NetworkPolicy')) {
    interface Peer { podSelector?: { matchLabels?: Record<string, string> }, namespaceSelector?: unknown, ipBlock?: unknown }
    interface Rule { from?: Peer[], ports?: Array<{ port?: number | string }> }
    const spec = np.spec as { podSelector?: { matchLabels?: Record<string, string> }, policyTypes?: string[], ingress?: Rule[] }
    assert.ok(selects(spec.podSelector?.matchLabels, labels), `NetworkPolicy ${np.metadata.name} must select the pods`)
    const rulesFor = (port: number): Rule[] => (spec.ingress ?? []).filter((r) => r.ports?.some((p) => portNumber(c, p.port) === port) === true)
    for (const name of open) {
      const port = namedPort(c, name).containerPort
      assert.ok(rulesFor(port).some((r) => r.from === undefined || r.from.length === 0), `NetworkPolicy ${np.metadata.name}: port ${name} must be open to every source`)
    }
    for (const name of peersOnly) {
      const rules = rulesFor(namedPort(c, name).containerPort)
      assert.ok(rules.length > 0, `NetworkPolicy ${np.metadata.name}: port ${name} must be allowed from peers`)
      for (const r of rules) {
        assert.ok(r.from !== undefined && r.from.length > 0, `NetworkPolicy ${np.metadata.name}: port ${name} must not be open to every source`)
        for (const peer of r.from) {
          assert.ok(peer.namespaceSelector === undefined && peer.ipBlock === undefined && selects(peer.podSelector?.matchLabels, labels), `NetworkPolicy ${np.metadata.name}: port ${name} only from spegel-ts pods`)
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// An install

async function checkInstall (objects: readonly K8sObject[], distro: Distro, configPath = PATHS[distro].certs): Promise<void> {
  const ns = checkObjects(objects)
  const { ds, labels, spec } = theDaemonSet(objects)
  const registry = container(spec, 'registry')
  const init = container(spec, 'configuration', true)

  const { parsed: { registry: rc }, env: registryEnv } = await parseContainer(ds, registry, 'registry')
  assert.ok(rc !== undefined)

  // containerd's socket: its directory, so a restarted containerd's new socket is seen.
  const sockDir = path.posix.dirname(rc.containerdSock)
  const sock = identityHostMount(spec, registry, sockDir)
  assert.equal(sock.hostPath.type, 'Directory', 'the socket directory volume must be a hostPath of type Directory')
  assert.ok(!(registry.volumeMounts ?? []).some((m) => m.mountPath === rc.containerdSock), 'the socket file itself must not be mounted')
  // The content store, read-only, where --containerd-content-path says.
  assert.notEqual(rc.containerdContentPath, '', 'the content path must be set (else bytes come through gRPC)')
  const content = identityHostMount(spec, registry, rc.containerdContentPath)
  assert.equal(content.readOnly, true, 'the content store must be mounted read-only')
  assert.equal(content.hostPath.type, 'Directory')
  // The peer identity survives restarts.
  assert.notEqual(rc.dataDir, '', '--data-dir must be set')
  const data = identityHostMount(spec, registry, rc.dataDir)
  assert.equal(data.readOnly, false, 'the data directory must be writable')
  // The router key comes from a Secret that must exist.
  assert.notEqual(rc.routerSecretPath, '', '--router-secret-path must be set')
  const pskMount = only((registry.volumeMounts ?? []).filter((m) => m.mountPath === path.posix.dirname(rc.routerSecretPath)), 'router secret mount')
  const pskVolume = only((spec.volumes ?? []).filter((v) => v.name === pskMount.name), 'router secret volume')
  assert.ok(pskVolume.secret !== undefined, 'the router key must come from a Secret')
  assert.notEqual(pskVolume.secret.optional, true, 'a missing router key Secret must stop the pod')
  assert.ok(pskVolume.secret.items?.some((i) => i.path === path.posix.basename(rc.routerSecretPath)) === true, 'the Secret must project the key file --router-secret-path names')
  assert.equal(pskMount.readOnly, true)

  // Listening ports, container ports and probes agree.
  const registryPort = namedPort(registry, 'registry')
  assert.equal(registryPort.containerPort, rc.registryAddr.port, 'registry port vs --registry-addr')
  assert.equal(namedPort(registry, 'router').containerPort, rc.routerAddr.port, 'router port vs --router-addr')
  assert.equal(namedPort(registry, 'metrics').containerPort, rc.metricsAddr.port, 'metrics port vs --metrics-addr')
  assertHttpProbe(registry, 'readinessProbe', '/readyz', rc.registryAddr.port)
  assertHttpProbe(registry, 'livenessProbe', '/livez', rc.registryAddr.port)
  // /livez, not /readyz: a startup probe on /readyz restarts a pod whose containerd is away.
  assertHttpProbe(registry, 'startupProbe', '/livez', rc.registryAddr.port)
  assert.ok(registry.resources?.requests?.memory !== undefined && registry.resources.limits?.memory !== undefined, 'registry memory request and limit')

  // `spegel doctor` in the registry container, with no flags, checks this node's containerd.
  const doctor = (await cli('doctor in registry', ['doctor'], registryEnv)).doctor
  assert.ok(doctor !== undefined)
  assert.equal(doctor.containerdSock, rc.containerdSock)
  assert.equal(doctor.containerdContentPath, rc.containerdContentPath)
  assert.equal(doctor.containerdNamespace, rc.containerdNamespace)
  assert.equal(doctor.registryAddr.port, rc.registryAddr.port)
  assert.equal(identityHostMount(spec, registry, path.posix.dirname(doctor.containerdConfig)).readOnly, true, 'containerd config directory read-only')
  assertConfigPathMounts(spec, registry, doctor.containerdRegistryConfigPath, { readOnly: true })
  if ('containerdConfig' in registrySettings) {
    assert.equal((rc as unknown as Record<string, unknown>).containerdConfig, doctor.containerdConfig, 'registry --containerd-config')
  }
  // Once `spegel registry` reads the config path too (to tell a handled multi-directory
  // config_path from an unhandled one), it must be the one configuration writes.
  if ('containerdRegistryConfigPath' in registrySettings) {
    assert.equal((rc as unknown as Record<string, unknown>).containerdRegistryConfigPath, doctor.containerdRegistryConfigPath, 'registry --containerd-registry-config-path')
  }

  // The init container writes hosts.toml into the directories containerd reads.
  const { parsed: { configuration: cc } } = await parseContainer(ds, init, 'configuration')
  assert.ok(cc !== undefined)
  assertConfigPathMounts(spec, init, cc.containerdRegistryConfigPath, { readOnly: false })
  assert.equal(cc.containerdRegistryConfigPath, doctor.containerdRegistryConfigPath, 'doctor checks the directories configuration writes')

  // The mirror targets are this node's IP and a port that reaches a spegel-ts registry.
  const registryServices = servicesSelecting(objects, labels).filter((s) => serviceSpec(s).type === 'NodePort')
  const svc = only(registryServices, 'NodePort Service for the registry')
  const svcPort = only((serviceSpec(svc).ports ?? []).filter((p) => portNumber(registry, p.targetPort) === registryPort.containerPort), 'registry port of the NodePort Service')
  assert.ok(svcPort.nodePort !== undefined, 'the NodePort must be fixed: hosts.toml names it')
  const local = registryPort.hostPort !== undefined ? `http://${NODE_IP}:${registryPort.hostPort}` : `http://${NODE_IP}:${svcPort.nodePort}`
  assert.equal(cc.mirrorTargets[0], local, 'the first mirror target must be this node\'s spegel-ts')
  for (const t of cc.mirrorTargets) {
    assert.ok([registryPort.hostPort, svcPort.nodePort].some((p) => p !== undefined && t === `http://${NODE_IP}:${p}`), `mirror target ${t} reaches no registry port`)
  }
  if (registryPort.hostPort === undefined) {
    assert.equal(serviceSpec(svc).trafficDistribution, 'PreferSameNode', 'without a hostPort, only PreferSameNode sends containerd to its own node')
  } else {
    assert.equal(serviceSpec(svc).trafficDistribution, undefined, 'the hostPort variant is for clusters that reject PreferSameNode')
  }

  // Peers find each other through the headless Service in this namespace.
  assert.equal(rc.bootstrapKind, 'dns')
  const headless = servicesSelecting(objects, labels).filter((s) => serviceSpec(s).clusterIP === 'None')
  const boot = only(headless, 'headless bootstrap Service')
  assert.equal(serviceSpec(boot).publishNotReadyAddresses, true, 'bootstrap must list pods that are not ready yet')
  assert.equal(rc.dnsBootstrapDomain, `${boot.metadata.name}.${ns}.svc.cluster.local`)

  // Every Service port leads to a container port; the metrics one exists.
  for (const s of servicesSelecting(objects, labels)) {
    for (const p of serviceSpec(s).ports ?? []) assert.ok(portNumber(registry, p.targetPort ?? p.port) !== undefined, `Service ${s.metadata.name} port ${p.name ?? p.port} has no container port`)
  }
  const metricsServices = servicesSelecting(objects, labels).filter((s) => (serviceSpec(s).ports ?? []).some((p) => portNumber(registry, p.targetPort) === rc.metricsAddr.port))
  const metricsService = only(metricsServices, 'metrics Service')
  for (const sm of ofKind(objects, 'ServiceMonitor')) {
    const smSpec = sm.spec as { selector?: { matchLabels?: Record<string, string> }, endpoints?: Array<{ port?: string }> }
    assert.ok(selects(smSpec.selector?.matchLabels, metricsService.metadata.labels ?? {}), `ServiceMonitor ${sm.metadata.name} must select the metrics Service`)
    for (const e of smSpec.endpoints ?? []) assert.ok((serviceSpec(metricsService).ports ?? []).some((p) => p.name === e.port), `ServiceMonitor endpoint port ${e.port ?? ''}`)
  }
  checkNetworkPolicies(objects, labels, registry, ['registry', 'metrics'], ['router'])

  const want = { ...PATHS[distro], certs: configPath }
  assert.deepEqual(
    { sock: rc.containerdSock, content: rc.containerdContentPath, config: doctor.containerdConfig, certs: cc.containerdRegistryConfigPath },
    want, `containerd paths for ${distro}`)
}

// ---------------------------------------------------------------------------------------------
// An uninstall

async function checkUninstall (objects: readonly K8sObject[], distro: Distro, install: readonly K8sObject[] | undefined, configPath = PATHS[distro].certs): Promise<void> {
  const ns = checkObjects(objects)
  const { ds, labels, spec } = theDaemonSet(objects)
  assert.deepEqual(spec.initContainers ?? [], [], 'no init container may write the mirror configuration again')
  assert.deepEqual(spec.containers.map((c) => c.name), ['cleanup'])
  assert.ok(!(spec.volumes ?? []).some((v) => v.secret !== undefined && v.name === 'router-psk'), 'cleanup must not need the router key')
  const cleanup = container(spec, 'cleanup')
  const { parsed: { cleanup: config } } = await parseContainer(ds, cleanup, 'cleanup')
  assert.ok(config !== undefined)
  assertConfigPathMounts(spec, cleanup, config.containerdRegistryConfigPath, { readOnly: false })
  assert.equal(config.containerdRegistryConfigPath, configPath, `cleanup restores ${distro}'s mirror configuration`)
  const cleanupPort = namedPort(cleanup, 'cleanup').containerPort
  assert.equal(config.addr.port, cleanupPort)
  assertHttpProbe(cleanup, 'readinessProbe', '/readyz', cleanupPort)

  const headless = servicesSelecting(objects, labels).filter((s) => serviceSpec(s).clusterIP === 'None' && (serviceSpec(s).ports ?? []).some((p) => portNumber(cleanup, p.targetPort) === cleanupPort))
  const svc = only(headless, 'headless cleanup Service')
  assert.equal(serviceSpec(svc).publishNotReadyAddresses, true)
  const svcPort = only((serviceSpec(svc).ports ?? []).filter((p) => portNumber(cleanup, p.targetPort) === cleanupPort), 'cleanup Service port')

  const job = only(ofKind(objects, 'Job'), 'cleanup-wait Job')
  const { spec: jobSpec } = podTemplate(job)
  const wait = only(jobSpec.containers, 'cleanup-wait container')
  const { parsed: { cleanupWait } } = await parseContainer(job, wait, 'cleanup-wait')
  assert.ok(cleanupWait !== undefined)
  assert.equal(cleanupWait.probeEndpoint.host, `${svc.metadata.name}.${ns}.svc.cluster.local`)
  assert.equal(cleanupWait.probeEndpoint.port, svcPort.port)
  checkNetworkPolicies(objects, labels, cleanup, ['cleanup'], [])

  if (install !== undefined) {
    // `kubectl delete -k <uninstall>` must remove everything the install created.
    const id = (o: K8sObject): string => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`
    const have = new Set(objects.map(id))
    for (const o of install) assert.ok(have.has(id(o)), `${id(o)} of the install is missing from its uninstall`)
    // The cleanup undoes what the install's configuration container wrote: same config path,
    // and every host directory it could write is writable, at the same path, in the cleanup.
    const installDs = only(ofKind(install, 'DaemonSet'), 'DaemonSet of the install')
    const { spec: installSpec } = podTemplate(installDs)
    const configuration = container(installSpec, 'configuration', true)
    const installed = processOf(installDs, configuration)
    const written = (await cli('configuration', installed.args, installed.env)).configuration
    assert.equal(config.containerdRegistryConfigPath, written?.containerdRegistryConfigPath, 'cleanup restores the config path the install\'s configuration wrote')
    for (const m of configuration.volumeMounts ?? []) {
      const v = (installSpec.volumes ?? []).find((x) => x.name === m.name)
      if (m.readOnly === true || v?.hostPath === undefined) continue
      const c = coveringHostMount(spec, cleanup, m.mountPath)
      assert.equal(c.mountPath, m.mountPath, `cleanup: ${m.mountPath} must be mounted as in configuration`)
      assert.equal(c.hostPath.path, v.hostPath.path, `cleanup: ${m.mountPath} must be host ${v.hostPath.path}`)
      assert.equal(c.readOnly, false, `cleanup: ${m.mountPath} must be writable, as in configuration`)
    }
  }
}

// ---------------------------------------------------------------------------------------------

describe('manifest checks can fail', () => {
  it('a field the schema does not know is reported', () => {
    const [ds] = parseManifests(`
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: x, namespace: ns1, labels: {a: b}}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: i
          securityContext: {readOnlyRootFileSystem: true}
          resources: {limits: {memory: 1Gi}}
`, 'inline')
    assert.ok(ds !== undefined)
    assert.deepEqual(validateObject(ds), ['/spec/template/spec/containers/0/securityContext/readOnlyRootFileSystem'])
  })

  it('a kind without a schema is refused', () => {
    const [o] = parseManifests('apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n', 'inline')
    assert.ok(o !== undefined)
    assert.throws(() => validateObject(o), /no schema/)
  })

  it('expands $(VAR) as the kubelet does: env sees earlier entries only, args see all', () => {
    const owner = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'ns' } }
    const { env, args } = processOf(owner, {
      name: 'c',
      env: [
        { name: 'LATE_REF', value: 'x$(IP)' },
        { name: 'IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
        { name: 'NS', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } }
      ],
      args: ['--a=$(IP):1', '$$(IP)', '$(NS)', '$(MISSING)']
    })
    assert.equal(env.LATE_REF, 'x$(IP)')
    assert.deepEqual(args, [`--a=${NODE_IP}:1`, '$(IP)', 'ns', '$(MISSING)'])
    assert.equal(expand('$x$', new Map()), '$x$')
  })
})

const kustomize = await findKustomize()
const skip = 'skip' in kustomize ? kustomize.skip : false

describe('deploy/kubernetes', { skip }, () => {
  let tmp = ''
  const rendered = new Map<string, K8sObject[]>()
  before(async () => { tmp = await mkdtemp(path.join(os.tmpdir(), 'spegel-kustomize-')) })
  after(async () => { if (tmp !== '') await rm(tmp, { recursive: true, force: true }) })

  async function writeVariant (v: Variant): Promise<string> {
    if (v.dir !== undefined) return v.dir
    assert.ok(v.generated !== undefined)
    const dir = variantDir(tmp, v.name)
    // A resource that is another generated variant: write that one too.
    for (const r of v.generated.resources) {
      if (!r.startsWith('variant:')) continue
      const base = variants().find((x) => x.name === r.slice('variant:'.length))
      assert.ok(base !== undefined, `no variant named ${r}`)
      await writeVariant(base)
    }
    await writeKustomization(dir, v.generated, tmp)
    return dir
  }

  async function renderVariant (v: Variant): Promise<K8sObject[]> {
    const k = kustomize as Kustomize
    const dir = await writeVariant(v)
    const objects = await render(k, dir)
    rendered.set(v.name, objects)
    return objects
  }

  it('has the components these checks expect', () => {
    for (const c of ['host-port', 'network-policy', 'service-monitor', 'basic-auth', MULTI_DIR, 'uninstall']) assert.ok(COMPONENTS.includes(c), `components/${c}`)
  })

  for (const v of variants()) {
    it(`${v.name}: renders, validates, and its pieces fit together`, async () => {
      const objects = await renderVariant(v)
      if (v.uninstall) {
        // The install it undoes was rendered by an earlier case when there is one.
        const install = v.install === undefined ? undefined : rendered.get(v.install)
        if (v.install !== undefined) assert.ok(install !== undefined, `${v.install} is rendered before ${v.name}`)
        await checkUninstall(objects, v.distro, install, v.configPath)
      } else {
        await checkInstall(objects, v.distro, v.configPath)
      }
    })
  }

  it('components/host-port: containerd asks the hostPort, then the NodePort', async () => {
    const objects = rendered.get('default + components/host-port')
    assert.ok(objects !== undefined, 'rendered by the components/host-port case')
    const ds = only(ofKind(objects, 'DaemonSet'), 'DaemonSet')
    const { args, env } = processOf(ds, container(podTemplate(ds).spec, 'configuration', true))
    const cc = (await cli('configuration', args, env)).configuration
    assert.deepEqual(cc?.mirrorTargets, [`http://${NODE_IP}:30021`, `http://${NODE_IP}:30020`])
  })

  it('the default install reaches the node through the NodePort 30020 with PreferSameNode', () => {
    const objects = rendered.get('default')
    assert.ok(objects !== undefined, 'rendered by the default case')
    const svc = only(ofKind(objects, 'Service').filter((s) => serviceSpec(s).type === 'NodePort'), 'NodePort Service')
    assert.equal(serviceSpec(svc).trafficDistribution, 'PreferSameNode')
    assert.equal(serviceSpec(svc).ports?.[0]?.nodePort, 30020)
  })

  it(`components/${MULTI_DIR}: configuration and cleanup get the list and write /etc/containerd; registry reads it read-only`, async () => {
    const literalTop = literalRootTop(MULTI_DIR_CONFIG_PATH)
    assert.equal(literalTop, '/etc/containerd/certs.d:', 'the literal directory is a sibling of certs.d')
    assert.equal(path.posix.dirname(literalTop), MULTI_DIR_MOUNT)
    for (const name of [`default + components/${MULTI_DIR}`, 'default + every component']) {
      const objects = rendered.get(name)
      assert.ok(objects !== undefined, `rendered by the ${name} case`)
      const ds = only(ofKind(objects, 'DaemonSet'), 'DaemonSet')
      const { spec } = podTemplate(ds)
      const init = container(spec, 'configuration', true)
      const { args, env } = processOf(ds, init)
      assert.equal(env.CONTAINERD_REGISTRY_CONFIG_PATH, MULTI_DIR_CONFIG_PATH, `${name}: configuration's CONTAINERD_REGISTRY_CONFIG_PATH`)
      assert.equal((await cli('configuration', args, env)).configuration?.containerdRegistryConfigPath, MULTI_DIR_CONFIG_PATH)
      const etc = identityHostMount(spec, init, MULTI_DIR_MOUNT)
      assert.equal(etc.readOnly, false, `${name}: configuration must mount ${MULTI_DIR_MOUNT} read-write`)
      assert.equal(coveringHostMount(spec, init, literalTop).mountPath, MULTI_DIR_MOUNT, `${name}: the literal directory reaches the node through ${MULTI_DIR_MOUNT}`)
      const registry = container(spec, 'registry')
      const registryEnv = processOf(ds, registry).env
      assert.equal(registryEnv.CONTAINERD_REGISTRY_CONFIG_PATH, MULTI_DIR_CONFIG_PATH, `${name}: registry's CONTAINERD_REGISTRY_CONFIG_PATH (for spegel doctor)`)
      assert.equal((await cli('doctor in registry', ['doctor'], registryEnv)).doctor?.containerdRegistryConfigPath, MULTI_DIR_CONFIG_PATH)
      // The registry writes only its data directory: everything of containerd stays read-only.
      for (const m of registry.volumeMounts ?? []) {
        if (m.name !== 'spegel-data') assert.equal(m.readOnly, true, `${name}: registry mount ${m.mountPath} must stay read-only`)
      }
    }
    for (const name of [`default + components/${MULTI_DIR}, uninstalled`, `default + components/${MULTI_DIR} after components/uninstall`, `uninstall of a kustomization with components/${MULTI_DIR}`]) {
      const objects = rendered.get(name)
      assert.ok(objects !== undefined, `rendered by the ${name} case`)
      const ds = only(ofKind(objects, 'DaemonSet'), 'DaemonSet')
      const { spec } = podTemplate(ds)
      const cleanup = container(spec, 'cleanup')
      const { args, env } = processOf(ds, cleanup)
      assert.equal((await cli('cleanup', args, env)).cleanup?.containerdRegistryConfigPath, MULTI_DIR_CONFIG_PATH, `${name}: cleanup restores both directories`)
      assert.equal(identityHostMount(spec, cleanup, MULTI_DIR_MOUNT).readOnly, false, `${name}: cleanup must mount ${MULTI_DIR_MOUNT} read-write`)
      assert.equal(coveringHostMount(spec, cleanup, literalTop).mountPath, MULTI_DIR_MOUNT)
    }
    // Opt-in: without the component nothing writes /etc/containerd.
    for (const name of ['default', 'uninstall']) {
      const { spec } = podTemplate(only(ofKind(rendered.get(name) ?? [], 'DaemonSet'), `DaemonSet of ${name}`))
      for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
        assert.ok(!(c.volumeMounts ?? []).some((m) => m.mountPath === MULTI_DIR_MOUNT && m.readOnly !== true), `${name}: ${c.name} must not write ${MULTI_DIR_MOUNT}`)
      }
    }
  })

  // The checks reject a broken install: a socket moved without its mount, and a misspelled flag.
  it('rejects a socket path whose directory is not mounted', async () => {
    const objects = await renderVariant({
      name: 'broken-socket', distro: 'default', uninstall: false,
      generated: { resources: ['.'], components: [], files: { 'patch.yaml': patchRegistry('env:\n            - name: CONTAINERD_SOCK\n              value: /run/other/containerd.sock') } }
    })
    await assert.rejects(checkInstall(objects, 'default'), /mount at \/run\/other/)
  })

  it('rejects a flag the CLI does not know', async () => {
    const objects = await renderVariant({
      name: 'broken-flag', distro: 'default', uninstall: false,
      generated: { resources: ['.'], components: [], files: { 'patch.yaml': patchRegistry('args:\n            - registry\n            - --registry-adr=:5000') } }
    })
    await assert.rejects(checkInstall(objects, 'default'), /rejected by the CLI[\s\S]*registry-adr/)
  })

  // ...and a multi-directory config path whose literal directory would stay inside the
  // container, or whose cleanup would restore only the first directory.
  it('rejects a list config path without a writable mount for its literal directory', async () => {
    const objects = await renderVariant({
      name: 'broken-multi-dir-mount', distro: 'default', uninstall: false,
      generated: { resources: ['.'], components: [`components/${MULTI_DIR}`], files: { 'patch.yaml': patchContainer('initContainers', 'configuration', `volumeMounts:\n            - mountPath: ${MULTI_DIR_MOUNT}\n              $patch: delete`) } }
    })
    await assert.rejects(checkInstall(objects, 'default', MULTI_DIR_CONFIG_PATH), /configuration: \/etc\/containerd\/certs\.d:\/etc\/docker\/certs\.d is not on any mount/)
  })

  it('rejects an uninstall that restores only the first directory of the list', async () => {
    const install = rendered.get(`default + components/${MULTI_DIR}`)
    assert.ok(install !== undefined, 'rendered by its own case')
    const objects = await renderVariant({
      name: 'broken-multi-dir-cleanup', distro: 'default', uninstall: true,
      generated: { resources: ['.'], components: [`components/${MULTI_DIR}`, 'components/uninstall'], files: { 'patch.yaml': patchContainer('containers', 'cleanup', 'env:\n            - name: CONTAINERD_REGISTRY_CONFIG_PATH\n              value: /etc/containerd/certs.d') } }
    })
    await assert.rejects(checkUninstall(objects, 'default', install, MULTI_DIR_CONFIG_PATH), /cleanup restores default's mirror configuration/)
  })
})

function patchContainer (kind: 'initContainers' | 'containers', name: string, fields: string): string {
  return `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: spegel
  namespace: spegel
spec:
  template:
    spec:
      ${kind}:
        - name: ${name}
          ${fields}
`
}

function patchRegistry (fields: string): string {
  return `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: spegel
  namespace: spegel
spec:
  template:
    spec:
      containers:
        - name: registry
          ${fields}
`
}
