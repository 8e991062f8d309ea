// Turns a rendered DaemonSet into what a kubelet would run on one node: per container the
// process arguments (Kubernetes `$(VAR)` expansion), the environment (fieldRef,
// resourceFieldRef, secretKeyRef, configMapKeyRef, envFrom), the mounts (the pod's volumes
// joined with volumeMounts, hostPaths mapped through a caller's table that must reject paths it
// does not know), and the security context, then into `ctr run` flags, with the semantics the
// kubelet and the CRI give them (expansion rules, hostPath type checks, capability sets).
import { execFile } from 'node:child_process'
import { chmod, mkdir, stat, writeFile, open } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { parseAllDocuments } from 'yaml'
import { DaemonSet, type IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet'
import type { IContainer } from 'kubernetes-models/v1/Container'
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec'
import type { IProbe } from 'kubernetes-models/v1/Probe'
import type { ISecurityContext } from 'kubernetes-models/v1/SecurityContext'
import type { IPodSecurityContext } from 'kubernetes-models/v1/PodSecurityContext'

const execFileP = promisify(execFile)

export type Quantity = string | number

/** Everything about the node and the cluster that the manifest refers to but does not contain. */
export interface PodContext {
  nodeName: string
  /** status.hostIP */
  nodeIP: string
  /** status.podIP; defaults to nodeIP for hostNetwork pods (and is required otherwise). */
  podIP?: string
  podName: string
  podUID?: string
  /** Used by resourceFieldRef when the container sets no limit, as the kubelet does. */
  nodeAllocatable: { cpu: Quantity, memory: Quantity, 'ephemeral-storage'?: Quantity }
  /**
   * Maps a hostPath volume's path to a path on this machine. Must throw for a path it does not
   * know: silently mounting the wrong thing would make the test prove nothing.
   */
  mapHostPath: (hostPath: string, volumeName: string) => string
  /** Secrets by name (key → content), added to those the rendered manifests contain. */
  secrets?: Record<string, Record<string, string | Buffer>>
  configMaps?: Record<string, Record<string, string>>
  /** Where secret, configMap and emptyDir volumes are written; one directory per pod. */
  scratchDir: string
}

export interface ContainerMount {
  volume: string
  kind: 'hostPath' | 'secret' | 'configMap' | 'emptyDir'
  /** For hostPath: the path in the manifest, before mapping. */
  hostPath?: string
  source: string
  destination: string
  readOnly: boolean
}

export interface ContainerSpec {
  name: string
  isInit: boolean
  image: string
  /** After `$(VAR)` expansion; undefined when the manifest leaves it to the image. */
  command: string[] | undefined
  args: string[] | undefined
  /** In definition order (envFrom first), values expanded. */
  env: Array<{ name: string, value: string }>
  mounts: ContainerMount[]
  /** Pod and container security contexts merged as the kubelet does. */
  securityContext: EffectiveSecurityContext
  resources: { limits: Record<string, Quantity>, requests: Record<string, Quantity> }
  hostNetwork: boolean
  ports: Array<{ name?: string, containerPort: number, hostPort?: number, protocol: string }>
  readinessProbe?: IProbe
  livenessProbe?: IProbe
  startupProbe?: IProbe
  terminationGracePeriodSeconds: number
}

export interface EffectiveSecurityContext extends ISecurityContext {
  fsGroup?: number
  supplementalGroups?: number[]
  sysctls?: Array<{ name: string, value: string }>
}

/** `kubectl kustomize <dir>`: the manifests exactly as `kubectl apply -k` would send them. */
export async function renderKustomize (dir: string): Promise<string> {
  try {
    const { stdout } = await execFileP('kubectl', ['kustomize', dir], { maxBuffer: 64 * 1024 * 1024, timeout: 60_000 })
    return stdout
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? ''
    throw new Error(`kubectl kustomize ${dir} failed: ${stderr.trim() || String(err)}`, { cause: err })
  }
}

/**
 * Every document of a multi-document YAML stream, as plain objects; YAML errors throw. Read as
 * YAML 1.1, as Kubernetes reads manifests: `defaultMode: 0400` is octal (256), not 400.
 */
export function parseManifests (text: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = []
  for (const doc of parseAllDocuments(text, { version: '1.1' })) {
    if (doc.errors.length > 0) throw new Error(`invalid YAML: ${doc.errors.map((e) => e.message).join('; ')}`)
    const value: unknown = doc.toJS()
    if (value === null || value === undefined) continue
    if (typeof value !== 'object' || Array.isArray(value)) throw new Error('a manifest document is not a mapping')
    out.push(value as Record<string, unknown>)
  }
  return out
}

/** The one DaemonSet (or the one named `name`), validated against the Kubernetes schema. */
export function findDaemonSet (objects: ReadonlyArray<Record<string, unknown>>, name?: string): IDaemonSet {
  const all = objects.filter((o) => o.kind === 'DaemonSet' && (name === undefined || (o.metadata as { name?: string } | undefined)?.name === name))
  if (all.length !== 1) {
    throw new Error(`expected exactly one DaemonSet${name === undefined ? '' : ` named ${name}`} in the manifests, found ${all.length}`)
  }
  const ds = new DaemonSet(all[0] as unknown as IDaemonSet)
  ds.validate()
  return ds.toJSON() as IDaemonSet
}

/** Data of the Secrets and ConfigMaps the manifests carry (e.g. from a kustomize generator). */
export function manifestData (objects: ReadonlyArray<Record<string, unknown>>): {
  secrets: Record<string, Record<string, Buffer>>
  configMaps: Record<string, Record<string, string>>
} {
  const secrets: Record<string, Record<string, Buffer>> = {}
  const configMaps: Record<string, Record<string, string>> = {}
  for (const o of objects) {
    const name = (o.metadata as { name?: string } | undefined)?.name
    if (name === undefined) continue
    if (o.kind === 'Secret') {
      const data: Record<string, Buffer> = {}
      for (const [k, v] of Object.entries((o.data ?? {}) as Record<string, string>)) data[k] = Buffer.from(v, 'base64')
      for (const [k, v] of Object.entries((o.stringData ?? {}) as Record<string, string>)) data[k] = Buffer.from(v)
      secrets[name] = data
    } else if (o.kind === 'ConfigMap') {
      configMaps[name] = { ...((o.data ?? {}) as Record<string, string>) }
    }
  }
  return { secrets, configMaps }
}

/**
 * Kubernetes' `$(VAR)` expansion (command, args and env values): `$(NAME)` becomes the value
 * when NAME is defined and stays as written otherwise, `$$` becomes `$`, any other `$` stays.
 */
export function expandVars (input: string, vars: ReadonlyMap<string, string>): string {
  let out = ''
  for (let i = 0; i < input.length; i++) {
    const c = input[i]
    if (c !== '$' || i + 1 >= input.length) {
      out += c
      continue
    }
    const next = input[i + 1]
    if (next === '$') {
      out += '$'
      i++
    } else if (next === '(') {
      const close = input.indexOf(')', i + 2)
      if (close === -1) {
        // An unterminated reference is copied as written.
        out += input.slice(i)
        break
      }
      const name = input.slice(i + 2, close)
      const value = vars.get(name)
      out += value ?? input.slice(i, close + 1)
      i = close
    } else {
      out += '$' + next
      i++
    }
  }
  return out
}

const BINARY_SUFFIX: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 }
const DECIMAL_SUFFIX: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 }

/** A Kubernetes quantity (`128Mi`, `500m`, `1.5`, `1e3`) as a number of base units. */
export function parseQuantity (q: Quantity): number {
  if (typeof q === 'number') return q
  const m = /^([+-]?(?:\d+\.?\d*|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei)|([eE][+-]?\d+)|(n|u|m|k|M|G|T|P|E)?)$/.exec(q.trim())
  if (m === null) throw new Error(`invalid quantity ${JSON.stringify(q)}`)
  const n = Number(m[1])
  if (m[2] !== undefined) return n * BINARY_SUFFIX[m[2]]!
  if (m[3] !== undefined) return n * 10 ** Number(m[3].slice(1))
  return n * DECIMAL_SUFFIX[m[4] ?? '']!
}

/** The init containers (in order) and then the containers of the DaemonSet's pod on one node. */
export async function podContainers (ds: IDaemonSet, objects: ReadonlyArray<Record<string, unknown>>, ctx: PodContext): Promise<ContainerSpec[]> {
  const podSpec = ds.spec?.template.spec
  if (podSpec === undefined) throw new Error('the DaemonSet has no pod template spec')
  const namespace = ds.metadata?.namespace ?? 'default'
  const labels = ds.spec?.template.metadata?.labels ?? {}
  const annotations = ds.spec?.template.metadata?.annotations ?? {}
  const fromManifests = manifestData(objects)
  const secrets: Record<string, Record<string, string | Buffer>> = { ...fromManifests.secrets, ...ctx.secrets }
  const configMaps: Record<string, Record<string, string>> = { ...fromManifests.configMaps, ...ctx.configMaps }
  const hostNetwork = podSpec.hostNetwork === true
  const podIP = ctx.podIP ?? (hostNetwork ? ctx.nodeIP : undefined)
  if (podIP === undefined) throw new Error('the pod does not use hostNetwork: PodContext.podIP is required')

  const fieldValue = (fieldPath: string): string => {
    const labelOrAnnotation = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath)
    if (labelOrAnnotation !== null) {
      const map = labelOrAnnotation[1] === 'labels' ? labels : annotations
      return map[labelOrAnnotation[2]!] ?? ''
    }
    switch (fieldPath) {
      case 'metadata.name': return ctx.podName
      case 'metadata.namespace': return namespace
      case 'metadata.uid': return ctx.podUID ?? '00000000-0000-0000-0000-000000000000'
      case 'spec.nodeName': return ctx.nodeName
      case 'spec.serviceAccountName': return podSpec.serviceAccountName ?? 'default'
      case 'status.hostIP': case 'status.hostIPs': return ctx.nodeIP
      case 'status.podIP': case 'status.podIPs': return podIP
      default: throw new Error(`fieldRef ${fieldPath} is not supported by this test helper`)
    }
  }

  const volumeDirs = new Map<string, string>()
  const volumeSource = async (name: string): Promise<{ kind: ContainerMount['kind'], source: string, hostPath?: string, forceReadOnly: boolean }> => {
    const volume = podSpec.volumes?.find((v) => v.name === name)
    if (volume === undefined) throw new Error(`volumeMount ${name} names no volume of the pod`)
    if (volume.hostPath !== undefined) {
      const source = ctx.mapHostPath(volume.hostPath.path, name)
      await checkHostPath(source, volume.hostPath.type ?? '', `hostPath ${volume.hostPath.path} (volume ${name}, mapped to ${source})`)
      return { kind: 'hostPath', source, hostPath: volume.hostPath.path, forceReadOnly: false }
    }
    let dir = volumeDirs.get(name)
    const fresh = dir === undefined
    dir ??= path.join(ctx.scratchDir, 'volumes', name)
    volumeDirs.set(name, dir)
    if (volume.secret !== undefined) {
      const secretName = volume.secret.secretName ?? ''
      const data = secrets[secretName]
      if (data === undefined && volume.secret.optional !== true) throw new Error(`volume ${name}: Secret ${secretName} is neither in the manifests nor given to the test`)
      if (fresh) await writeKeyFiles(dir, data ?? {}, volume.secret.items, volume.secret.defaultMode ?? 0o644, `Secret ${secretName}`)
      return { kind: 'secret', source: dir, forceReadOnly: true }
    }
    if (volume.configMap !== undefined) {
      const cmName = volume.configMap.name ?? ''
      const data = configMaps[cmName]
      if (data === undefined && volume.configMap.optional !== true) throw new Error(`volume ${name}: ConfigMap ${cmName} is neither in the manifests nor given to the test`)
      if (fresh) await writeKeyFiles(dir, data ?? {}, volume.configMap.items, volume.configMap.defaultMode ?? 0o644, `ConfigMap ${cmName}`)
      return { kind: 'configMap', source: dir, forceReadOnly: true }
    }
    if (volume.emptyDir !== undefined) {
      // Shared by the pod's containers, like the kubelet's emptyDir.
      if (fresh) await mkdir(dir, { recursive: true, mode: 0o777 })
      return { kind: 'emptyDir', source: dir, forceReadOnly: false }
    }
    const kinds = Object.keys(volume).filter((k) => k !== 'name')
    throw new Error(`volume ${name}: source ${kinds.join(', ')} is not supported by this test helper`)
  }

  const specs: ContainerSpec[] = []
  const all: Array<[IContainer, boolean]> = [
    ...(podSpec.initContainers ?? []).map((c): [IContainer, boolean] => [c, true]),
    ...podSpec.containers.map((c): [IContainer, boolean] => [c, false])
  ]
  for (const [c, isInit] of all) {
    if (isInit && (c as { restartPolicy?: string }).restartPolicy === 'Always') {
      throw new Error(`init container ${c.name} is a sidecar (restartPolicy: Always), which this test helper does not run`)
    }
    const vars = new Map<string, string>()
    const env: Array<{ name: string, value: string }> = []
    const setVar = (name: string, value: string): void => {
      const i = env.findIndex((e) => e.name === name)
      if (i >= 0) env.splice(i, 1)
      env.push({ name, value })
      vars.set(name, value)
    }
    for (const from of c.envFrom ?? []) {
      const prefix = from.prefix ?? ''
      if (from.configMapRef !== undefined) {
        const data = configMaps[from.configMapRef.name ?? '']
        if (data === undefined && from.configMapRef.optional !== true) throw new Error(`${c.name}: envFrom ConfigMap ${from.configMapRef.name} unknown`)
        for (const [k, v] of Object.entries(data ?? {})) setVar(prefix + k, v)
      } else if (from.secretRef !== undefined) {
        const data = secrets[from.secretRef.name ?? '']
        if (data === undefined && from.secretRef.optional !== true) throw new Error(`${c.name}: envFrom Secret ${from.secretRef.name} unknown`)
        for (const [k, v] of Object.entries(data ?? {})) setVar(prefix + k, v.toString())
      }
    }
    for (const e of c.env ?? []) {
      if (e.value !== undefined || e.valueFrom === undefined) {
        setVar(e.name, expandVars(e.value ?? '', vars))
        continue
      }
      const vf = e.valueFrom
      if (vf.fieldRef !== undefined) {
        setVar(e.name, fieldValue(vf.fieldRef.fieldPath))
      } else if (vf.resourceFieldRef !== undefined) {
        const target = vf.resourceFieldRef.containerName === undefined || vf.resourceFieldRef.containerName === ''
          ? c
          : all.find(([x]) => x.name === vf.resourceFieldRef!.containerName)?.[0]
        if (target === undefined) throw new Error(`${c.name}: resourceFieldRef names unknown container ${vf.resourceFieldRef.containerName}`)
        setVar(e.name, resourceValue(target, vf.resourceFieldRef.resource, vf.resourceFieldRef.divisor, ctx.nodeAllocatable))
      } else if (vf.secretKeyRef !== undefined) {
        const value = secrets[vf.secretKeyRef.name ?? '']?.[vf.secretKeyRef.key]
        if (value === undefined) {
          if (vf.secretKeyRef.optional === true) continue
          throw new Error(`${c.name}: env ${e.name}: key ${vf.secretKeyRef.key} of Secret ${vf.secretKeyRef.name} is neither in the manifests nor given to the test`)
        }
        setVar(e.name, value.toString())
      } else if (vf.configMapKeyRef !== undefined) {
        const value = configMaps[vf.configMapKeyRef.name ?? '']?.[vf.configMapKeyRef.key]
        if (value === undefined) {
          if (vf.configMapKeyRef.optional === true) continue
          throw new Error(`${c.name}: env ${e.name}: key ${vf.configMapKeyRef.key} of ConfigMap ${vf.configMapKeyRef.name} unknown`)
        }
        setVar(e.name, value)
      } else {
        throw new Error(`${c.name}: env ${e.name}: valueFrom ${Object.keys(vf).join(', ')} is not supported by this test helper`)
      }
    }

    const mounts: ContainerMount[] = []
    for (const vm of c.volumeMounts ?? []) {
      const src = await volumeSource(vm.name)
      let source = src.source
      const subPath = vm.subPathExpr !== undefined ? expandVars(vm.subPathExpr, vars) : vm.subPath
      if (subPath !== undefined && subPath !== '') {
        if (path.isAbsolute(subPath) || subPath.split('/').includes('..')) throw new Error(`${c.name}: subPath ${subPath} must be relative without ..`)
        source = path.join(source, subPath)
        // The kubelet creates a missing subPath as a directory.
        if (!await exists(source)) await mkdir(source, { recursive: true })
      }
      mounts.push({
        volume: vm.name,
        kind: src.kind,
        ...(src.hostPath === undefined ? {} : { hostPath: src.hostPath }),
        source,
        destination: vm.mountPath,
        readOnly: src.forceReadOnly || vm.readOnly === true
      })
    }

    specs.push({
      name: c.name,
      isInit,
      image: c.image ?? '',
      command: c.command?.map((a) => expandVars(a, vars)),
      args: c.args?.map((a) => expandVars(a, vars)),
      env,
      mounts,
      securityContext: mergeSecurityContext(podSpec.securityContext, c.securityContext),
      resources: {
        limits: { ...(c.resources?.limits ?? {}) },
        requests: { ...(c.resources?.requests ?? {}) }
      },
      hostNetwork,
      ports: (c.ports ?? []).map((p) => ({
        ...(p.name === undefined ? {} : { name: p.name }),
        containerPort: p.containerPort,
        ...(p.hostPort === undefined ? {} : { hostPort: p.hostPort }),
        protocol: p.protocol ?? 'TCP'
      })),
      ...(c.readinessProbe === undefined ? {} : { readinessProbe: c.readinessProbe }),
      ...(c.livenessProbe === undefined ? {} : { livenessProbe: c.livenessProbe }),
      ...(c.startupProbe === undefined ? {} : { startupProbe: c.startupProbe }),
      terminationGracePeriodSeconds: podSpec.terminationGracePeriodSeconds ?? 30
    })
  }
  return specs
}

/** The argv a container runtime starts: command or the image's Entrypoint, then args or (only without a command) the image's Cmd. */
export function processArgv (spec: ContainerSpec, image: { Entrypoint?: string[] | null, Cmd?: string[] | null }): string[] {
  const argv = spec.command !== undefined
    ? [...spec.command, ...(spec.args ?? [])]
    : [...(image.Entrypoint ?? []), ...(spec.args ?? image.Cmd ?? [])]
  if (argv.length === 0) throw new Error(`${spec.name}: neither the manifest nor the image names a command`)
  return argv
}

/** The URL a kubelet's httpGet probe asks (host defaults to the pod IP, a named port is looked up). */
export function probeUrl (spec: ContainerSpec, probe: IProbe | undefined, podIP: string): string {
  const get = probe?.httpGet
  if (get === undefined) throw new Error(`${spec.name}: the probe is not an httpGet probe`)
  let port: number | undefined
  if (typeof get.port === 'number') port = get.port
  else if (/^\d+$/.test(get.port)) port = Number(get.port)
  else port = spec.ports.find((p) => p.name === get.port)?.containerPort
  if (port === undefined) throw new Error(`${spec.name}: probe port ${String(get.port)} names no container port`)
  const scheme = (get.scheme ?? 'HTTP').toLowerCase()
  const host = get.host ?? podIP
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}${get.path ?? '/'}`
}

export interface NodePortForward {
  service: string
  nodePort: number
  /** The pod's port the Service targets (named targetPorts resolved through the container's ports). */
  podPort: number
}

/**
 * The NodePorts of the manifests' Services that select this DaemonSet's pods, for a test that
 * plays kube-proxy on each node. Every node forwards to its own pod: right for
 * `trafficDistribution: PreferSameNode` and `externalTrafficPolicy: Local` (a node always has
 * its DaemonSet pod); with neither, kube-proxy could pick any pod, and the local one is one of them.
 */
export function nodePortForwards (objects: ReadonlyArray<Record<string, unknown>>, ds: IDaemonSet, specs: readonly ContainerSpec[]): NodePortForward[] {
  const podLabels = ds.spec?.template.metadata?.labels ?? {}
  const out: NodePortForward[] = []
  for (const o of objects) {
    if (o.kind !== 'Service') continue
    const spec = o.spec as { type?: string, selector?: Record<string, string>, ports?: Array<{ nodePort?: number, port: number, targetPort?: number | string }> } | undefined
    if (spec?.type !== 'NodePort' && spec?.type !== 'LoadBalancer') continue
    const selector = spec.selector ?? {}
    if (Object.keys(selector).length === 0 || !Object.entries(selector).every(([k, v]) => podLabels[k] === v)) continue
    for (const p of spec.ports ?? []) {
      if (p.nodePort === undefined) throw new Error(`Service ${(o.metadata as { name?: string }).name}: port ${p.port} has no fixed nodePort, so no node address is known in advance`)
      const target = p.targetPort ?? p.port
      let podPort: number | undefined
      if (typeof target === 'number' || /^\d+$/.test(target)) podPort = Number(target)
      else podPort = specs.flatMap((c) => c.ports).find((cp) => cp.name === target)?.containerPort
      if (podPort === undefined) throw new Error(`Service ${(o.metadata as { name?: string }).name}: targetPort ${String(target)} names no container port`)
      out.push({ service: String((o.metadata as { name?: string }).name), nodePort: p.nodePort, podPort })
    }
  }
  return out
}

/** The capabilities containerd gives a container by default (CRI and ctr alike). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE'
]

/** Bit numbers of the capabilities (linux/capability.h), to read /proc/<pid>/status. */
export const CAPABILITY_BITS: Readonly<Record<string, number>> = {
  CAP_CHOWN: 0, CAP_DAC_OVERRIDE: 1, CAP_DAC_READ_SEARCH: 2, CAP_FOWNER: 3, CAP_FSETID: 4, CAP_KILL: 5, CAP_SETGID: 6,
  CAP_SETUID: 7, CAP_SETPCAP: 8, CAP_LINUX_IMMUTABLE: 9, CAP_NET_BIND_SERVICE: 10, CAP_NET_BROADCAST: 11,
  CAP_NET_ADMIN: 12, CAP_NET_RAW: 13, CAP_IPC_LOCK: 14, CAP_IPC_OWNER: 15, CAP_SYS_MODULE: 16, CAP_SYS_RAWIO: 17,
  CAP_SYS_CHROOT: 18, CAP_SYS_PTRACE: 19, CAP_SYS_PACCT: 20, CAP_SYS_ADMIN: 21, CAP_SYS_BOOT: 22, CAP_SYS_NICE: 23,
  CAP_SYS_RESOURCE: 24, CAP_SYS_TIME: 25, CAP_SYS_TTY_CONFIG: 26, CAP_MKNOD: 27, CAP_LEASE: 28, CAP_AUDIT_WRITE: 29,
  CAP_AUDIT_CONTROL: 30, CAP_SETFCAP: 31, CAP_MAC_OVERRIDE: 32, CAP_MAC_ADMIN: 33, CAP_SYSLOG: 34, CAP_WAKE_ALARM: 35,
  CAP_BLOCK_SUSPEND: 36, CAP_AUDIT_READ: 37, CAP_PERFMON: 38, CAP_BPF: 39, CAP_CHECKPOINT_RESTORE: 40
}

/**
 * The effective capability set the CRI gives a container: drop ALL empties the default set,
 * other drops remove from it, adds come after drops (add ALL gives every capability).
 * undefined for privileged containers (they get everything).
 */
export function effectiveCapabilities (sc: EffectiveSecurityContext): string[] | undefined {
  if (sc.privileged === true) return undefined
  const norm = (c: string): string => (c.toUpperCase().startsWith('CAP_') ? c.toUpperCase() : `CAP_${c.toUpperCase()}`)
  const add = (sc.capabilities?.add ?? []).map(norm)
  const drop = (sc.capabilities?.drop ?? []).map(norm)
  for (const c of [...add, ...drop]) {
    if (c !== 'CAP_ALL' && CAPABILITY_BITS[c] === undefined) throw new Error(`unknown capability ${c}`)
  }
  if (add.includes('CAP_ALL')) return Object.keys(CAPABILITY_BITS)
  const set = new Set(drop.includes('CAP_ALL') ? [] : DEFAULT_CAPABILITIES.filter((c) => !drop.includes(c)))
  for (const c of add) set.add(c)
  return [...set].sort((a, b) => CAPABILITY_BITS[a]! - CAPABILITY_BITS[b]!)
}

export interface CtrRunPlan {
  /** Flags for `ctr run`, before the image and container id. */
  flags: string[]
  /** What the manifest asks for that `ctr run` cannot express here, one line each. */
  notApplied: string[]
  /** The capability set the container must end up with (undefined: privileged). */
  capabilities: string[] | undefined
  /** hostPorts that differ from their containerPort: the caller forwards them on the node, as the CNI's portmap would. */
  portForwards: Array<{ hostPort: number, containerPort: number }>
}

export interface CtrRunInit {
  /** The test node's network namespace, joined by hostNetwork pods (`--with-ns network:`). */
  networkNamespacePath: string
  /** Files the kubelet itself mounts into every pod (/etc/hosts, /etc/resolv.conf). */
  kubeletMounts?: Array<{ source: string, destination: string }>
  /** The image's user ("0:0", "65534"...), for runAsNonRoot. */
  imageUser?: string
}

/** `ctr run` flags for one container: mounts, env, network, security context, resources. */
export function ctrRunPlan (spec: ContainerSpec, init: CtrRunInit): CtrRunPlan {
  const flags: string[] = []
  const notApplied: string[] = []
  const sc = spec.securityContext

  // Not --net-host: that also binds the machine's /etc/hosts and resolv.conf over the ones the
  // kubelet would mount, and the machine's are not the test node's.
  flags.push('--with-ns', `network:${init.networkNamespacePath}`)
  const portForwards: CtrRunPlan['portForwards'] = []
  if (!spec.hostNetwork) {
    notApplied.push('pod network: no CNI here, so the container shares the node\'s network namespace and the pod IP is the node IP')
    for (const p of spec.ports) {
      if (p.hostPort !== undefined && p.hostPort !== p.containerPort) portForwards.push({ hostPort: p.hostPort, containerPort: p.containerPort })
    }
  }

  for (const m of [...(init.kubeletMounts ?? []).map((k) => ({ ...k, readOnly: false })), ...spec.mounts]) {
    for (const p of [m.source, m.destination]) {
      // ctr splits --mount on ',' and its options on ':'.
      if (/[,:=]/.test(p)) throw new Error(`${spec.name}: mount path ${p} contains , : or =, which ctr --mount cannot carry`)
    }
    flags.push('--mount', `type=bind,src=${m.source},dst=${m.destination},options=rbind:${m.readOnly ? 'ro' : 'rw'}`)
  }
  for (const e of spec.env) {
    if (e.value.includes('\n')) throw new Error(`${spec.name}: env ${e.name} has a newline, which ctr --env cannot carry`)
    flags.push('--env', `${e.name}=${e.value}`)
  }

  if (sc.privileged === true) flags.push('--privileged')
  const caps = effectiveCapabilities(sc)
  if (caps !== undefined) {
    for (const c of DEFAULT_CAPABILITIES.filter((d) => !caps.includes(d))) flags.push('--cap-drop', c)
    for (const c of caps.filter((x) => !DEFAULT_CAPABILITIES.includes(x))) flags.push('--cap-add', c)
  }
  if (sc.readOnlyRootFilesystem === true) flags.push('--read-only')
  // ctr sets no_new_privs unless told otherwise; Kubernetes sets it only for allowPrivilegeEscalation: false.
  if (sc.allowPrivilegeEscalation !== false) flags.push('--allow-new-privs')
  const seccomp = sc.seccompProfile?.type
  if (seccomp === 'RuntimeDefault') flags.push('--seccomp')
  else if (seccomp === 'Localhost') notApplied.push(`seccompProfile Localhost ${sc.seccompProfile?.localhostProfile ?? ''}: no such profile here`)

  // ctr run has no --user; the image's user is what runs, so a different one cannot be applied.
  const [imageUid = 0, imageGid = 0] = (init.imageUser ?? '0:0').split(':').map((x) => (/^\d+$/.test(x) ? Number(x) : 0))
  const uid = sc.runAsUser ?? imageUid
  if (sc.runAsNonRoot === true && uid === 0) throw new Error(`${spec.name}: runAsNonRoot with uid 0: the kubelet would refuse to start this container`)
  if (sc.runAsUser !== undefined && sc.runAsUser !== imageUid) notApplied.push(`runAsUser ${sc.runAsUser}: ctr run has no --user; ran as the image user ${init.imageUser ?? '0'}`)
  if (sc.runAsGroup !== undefined && sc.runAsGroup !== imageGid) notApplied.push(`runAsGroup ${sc.runAsGroup}: ctr run has no --user; ran as the image group ${imageGid}`)
  if (sc.fsGroup !== undefined) notApplied.push(`fsGroup ${sc.fsGroup}: volumes are not chowned`)
  if ((sc.supplementalGroups ?? []).length > 0) notApplied.push(`supplementalGroups ${(sc.supplementalGroups ?? []).join(',')}`)
  if (sc.seLinuxOptions !== undefined) notApplied.push(`seLinuxOptions ${JSON.stringify(sc.seLinuxOptions)}: no SELinux on this machine`)
  if (sc.appArmorProfile !== undefined) notApplied.push(`appArmorProfile ${JSON.stringify(sc.appArmorProfile)}`)
  if ((sc.sysctls ?? []).length > 0) notApplied.push(`sysctls ${JSON.stringify(sc.sysctls)}`)
  if (sc.procMount !== undefined && sc.procMount !== 'Default') notApplied.push(`procMount ${sc.procMount}`)

  const memLimit = spec.resources.limits.memory
  if (memLimit !== undefined) flags.push('--memory-limit', String(Math.ceil(parseQuantity(memLimit))))
  const cpuLimit = spec.resources.limits.cpu
  if (cpuLimit !== undefined) flags.push('--cpus', String(parseQuantity(cpuLimit)))
  const cpuRequest = spec.resources.requests.cpu ?? cpuLimit
  // The kubelet's shares: milliCPU * 1024 / 1000, at least 2.
  if (cpuRequest !== undefined) flags.push('--cpu-shares', String(Math.max(2, Math.floor(parseQuantity(cpuRequest) * 1024))))
  for (const r of Object.keys(spec.resources.limits).filter((k) => k !== 'memory' && k !== 'cpu')) notApplied.push(`limits.${r}`)
  return { flags, notApplied, capabilities: caps, portForwards }
}

function mergeSecurityContext (pod: IPodSecurityContext | undefined, c: ISecurityContext | undefined): EffectiveSecurityContext {
  const out: EffectiveSecurityContext = { ...(c ?? {}) }
  for (const key of ['runAsUser', 'runAsGroup', 'runAsNonRoot', 'seLinuxOptions', 'seccompProfile', 'appArmorProfile'] as const) {
    if (out[key] === undefined && pod?.[key] !== undefined) (out as Record<string, unknown>)[key] = pod[key]
  }
  if (pod?.fsGroup !== undefined) out.fsGroup = pod.fsGroup
  if (pod?.supplementalGroups !== undefined) out.supplementalGroups = pod.supplementalGroups
  if (pod?.sysctls !== undefined) out.sysctls = pod.sysctls
  return out
}

/** resourceFieldRef: ceil(value / divisor); an unset limit is the node's allocatable. */
function resourceValue (c: IContainer, resource: string, divisor: Quantity | undefined, allocatable: PodContext['nodeAllocatable']): string {
  const [kind, name] = resource.split('.') as [string, string | undefined]
  if ((kind !== 'limits' && kind !== 'requests') || name === undefined) throw new Error(`resourceFieldRef ${resource} is not supported`)
  const own = c.resources?.[kind]?.[name]
  let q: Quantity | undefined = own
  if (q === undefined && kind === 'limits') q = allocatable[name as keyof PodContext['nodeAllocatable']]
  if (q === undefined && kind === 'requests') q = c.resources?.limits?.[name] ?? 0
  if (q === undefined) throw new Error(`resourceFieldRef ${resource}: no value and no node allocatable for it`)
  const d = parseQuantity(divisor ?? 1)
  if (d <= 0) throw new Error(`resourceFieldRef ${resource}: divisor must be positive`)
  return String(Math.ceil(parseQuantity(q) / d - 1e-9))
}

async function writeKeyFiles (
  dir: string,
  data: Record<string, string | Buffer>,
  items: Array<{ key: string, path: string, mode?: number }> | undefined,
  defaultMode: number,
  what: string
): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o755 })
  const entries = items === undefined
    ? Object.keys(data).map((key) => ({ key, path: key, mode: undefined as number | undefined }))
    : items.map((i) => ({ key: i.key, path: i.path, mode: i.mode }))
  for (const e of entries) {
    const value = data[e.key]
    if (value === undefined) throw new Error(`${what} has no key ${e.key}`)
    if (path.isAbsolute(e.path) || e.path.split('/').includes('..')) throw new Error(`${what}: item path ${e.path} must be relative without ..`)
    const file = path.join(dir, e.path)
    await mkdir(path.dirname(file), { recursive: true })
    await writeFile(file, value)
    await chmod(file, e.mode ?? defaultMode)
  }
}

/** The kubelet's hostPath type checks (DirectoryOrCreate and FileOrCreate create). */
async function checkHostPath (p: string, type: string, what: string): Promise<void> {
  const st = await stat(p).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined
    throw err
  })
  switch (type) {
    case '':
      return
    case 'DirectoryOrCreate':
      if (st === undefined) await mkdir(p, { recursive: true, mode: 0o755 })
      else if (!st.isDirectory()) throw new Error(`${what}: type DirectoryOrCreate but it is not a directory`)
      return
    case 'FileOrCreate':
      if (st === undefined) await (await open(p, 'a', 0o644)).close()
      else if (!st.isFile()) throw new Error(`${what}: type FileOrCreate but it is not a file`)
      return
    case 'Directory': case 'File': case 'Socket': case 'CharDevice': case 'BlockDevice': {
      if (st === undefined) throw new Error(`${what}: type ${type} but it does not exist`)
      const ok = { Directory: st.isDirectory(), File: st.isFile(), Socket: st.isSocket(), CharDevice: st.isCharacterDevice(), BlockDevice: st.isBlockDevice() }[type]
      if (!ok) throw new Error(`${what}: type ${type} but it is something else`)
      return
    }
    default:
      throw new Error(`${what}: unknown hostPath type ${type}`)
  }
}

async function exists (p: string): Promise<boolean> {
  return await stat(p).then(() => true, () => false)
}

export type { IDaemonSet, IPodSpec }
