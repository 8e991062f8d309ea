// Rendering deploy/kubernetes with kustomize and reading the result the way the API server and
// the kubelet would: YAML 1.1 (as Kubernetes' YAML decoder), schema validation with
// kubernetes-models plus a check for fields the schemas do not know (the schemas accept any
// extra field, so a misspelled field would otherwise pass and be dropped by the API server),
// and container arguments and environment expanded as the kubelet expands them.
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { parseAllDocuments } from 'yaml'
import { ConfigMap, Namespace, Secret, Service, ServiceAccount } from 'kubernetes-models/v1'
import { DaemonSet } from 'kubernetes-models/apps/v1'
import { Job } from 'kubernetes-models/batch/v1'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { PodMonitor, PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1'

const execFileAsync = promisify(execFile)
const here = path.dirname(fileURLToPath(import.meta.url))

/** The repository root, from test/deploy or dist*\/test/deploy. */
export const REPO_ROOT = findRepoRoot(here)
export const KUBERNETES_DIR = path.join(REPO_ROOT, 'deploy', 'kubernetes')

function findRepoRoot (start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'deploy', 'kubernetes'))) return dir
    if (path.dirname(dir) === dir) throw new Error(`no repository root with deploy/kubernetes above ${start}`)
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering

export interface Kustomize {
  /** Command and leading arguments; the kustomization directory is appended. */
  readonly argv: readonly string[]
  readonly version: string
}

/** Components with `$patch: delete` list items and `[name=...]` replacement paths: kustomize 5. */
const MIN_KUSTOMIZE_MAJOR = 5

/** Runs `cmd args` and picks a version from its output: undefined when it cannot run at all. */
async function versionOf (cmd: string, args: readonly string[], pick: (out: string) => string | undefined): Promise<{ version: string | undefined } | undefined> {
  let stdout: string
  try {
    ({ stdout } = await execFileAsync(cmd, [...args], { timeout: 30_000 }))
  } catch (err) {
    // Not installed (ENOENT), or too old to know these arguments.
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : { version: undefined }
  }
  try {
    return { version: pick(stdout) }
  } catch {
    // Output in an older format than the one asked for: no usable version.
    return { version: undefined }
  }
}

/**
 * Finds a kustomize: a standalone `kustomize`, else the one built into `kubectl`. Returns a
 * reason to skip when neither exists or the one found is older than kustomize 5.
 */
export async function findKustomize (): Promise<Kustomize | { skip: string }> {
  const found: string[] = []
  const standalone = await versionOf('kustomize', ['version'], (out) => /v\d+\.\d+\.\d+/.exec(out)?.[0])
  if (standalone !== undefined) {
    if (standalone.version !== undefined && majorOf(standalone.version) >= MIN_KUSTOMIZE_MAJOR) return { argv: ['kustomize', 'build'], version: standalone.version }
    found.push(`kustomize ${standalone.version ?? '(version unknown)'}`)
  }
  const viaKubectl = await versionOf('kubectl', ['version', '--client', '-o', 'json'], (out) => {
    const parsed: unknown = JSON.parse(out)
    const v = (parsed as { kustomizeVersion?: unknown }).kustomizeVersion
    return typeof v === 'string' ? v : undefined
  })
  if (viaKubectl !== undefined) {
    if (viaKubectl.version !== undefined && majorOf(viaKubectl.version) >= MIN_KUSTOMIZE_MAJOR) return { argv: ['kubectl', 'kustomize'], version: viaKubectl.version }
    found.push(`kubectl with kustomize ${viaKubectl.version ?? '(too old to say which)'}`)
  }
  const what = found.length > 0 ? `only ${found.join(' and ')}` : 'neither kubectl nor kustomize'
  return { skip: `${what} found; rendering deploy/kubernetes needs kustomize >= v${MIN_KUSTOMIZE_MAJOR} (kubectl >= 1.27 embeds it)` }
}

function majorOf (version: string): number {
  return Number(/v?(\d+)/.exec(version)?.[1] ?? 0)
}

/** A Kubernetes object as rendered: only the fields the checks read are typed. */
export interface K8sObject {
  apiVersion: string
  kind: string
  metadata: { name: string, namespace?: string, labels?: Record<string, string> }
  [field: string]: unknown
}

/** Renders a kustomization directory and parses every document. */
export async function render (kustomize: Kustomize, dir: string): Promise<K8sObject[]> {
  const [cmd, ...args] = kustomize.argv
  if (cmd === undefined) throw new Error('empty kustomize command')
  let stdout: string
  try {
    ({ stdout } = await execFileAsync(cmd, [...args, dir], { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 }))
  } catch (err) {
    const e = err as { stderr?: string, message: string }
    throw new Error(`${kustomize.argv.join(' ')} ${dir} failed: ${e.stderr ?? e.message}`, { cause: err })
  }
  return parseManifests(stdout, dir)
}

/** YAML 1.1, as Kubernetes decodes it (0400 is octal, yes/no are booleans). */
export function parseManifests (text: string, source: string): K8sObject[] {
  const objects: K8sObject[] = []
  for (const doc of parseAllDocuments(text, { version: '1.1' })) {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors.map((e) => e.message).join('; ')}`)
    const value: unknown = doc.toJS()
    if (value === null || value === undefined) continue
    objects.push(asObject(value, source))
  }
  return objects
}

function asObject (value: unknown, source: string): K8sObject {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${source}: a document is not a mapping`)
  const o = value as Record<string, unknown>
  const metadata = o.metadata as Record<string, unknown> | undefined
  if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string' || typeof metadata?.name !== 'string') {
    throw new Error(`${source}: a document lacks apiVersion, kind or metadata.name: ${JSON.stringify(value).slice(0, 200)}`)
  }
  return value as K8sObject
}

// ---------------------------------------------------------------------------------------------
// Schema validation

interface Validatable { prototype: { validate: (this: unknown) => void } }
type ModelClass = (new (data: never) => { validate: () => void }) & Validatable

/** Every kind these manifests may contain, by `apiVersion/kind`. Anything else fails. */
const MODELS: Record<string, ModelClass> = {
  'v1/Namespace': Namespace as unknown as ModelClass,
  'v1/ServiceAccount': ServiceAccount as unknown as ModelClass,
  'v1/Service': Service as unknown as ModelClass,
  'v1/Secret': Secret as unknown as ModelClass,
  'v1/ConfigMap': ConfigMap as unknown as ModelClass,
  'apps/v1/DaemonSet': DaemonSet as unknown as ModelClass,
  'batch/v1/Job': Job as unknown as ModelClass,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy as unknown as ModelClass,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor as unknown as ModelClass,
  'monitoring.coreos.com/v1/PodMonitor': PodMonitor as unknown as ModelClass,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule as unknown as ModelClass
}

export const VALIDATED_KINDS: readonly string[] = Object.keys(MODELS)

/**
 * Validates against the kind's schema and returns the fields the schema does not declare
 * (JSON pointers). Throws on a schema violation or a kind without a model.
 */
export function validateObject (obj: K8sObject): string[] {
  const key = `${obj.apiVersion}/${obj.kind}`
  const Model = MODELS[key]
  if (Model === undefined) throw new Error(`${key} ${obj.metadata.name}: no schema to validate this kind against (known: ${VALIDATED_KINDS.join(', ')})`)
  new Model(obj as never).validate()
  // The same validator again, on a proxy that records which fields it reads: the validator
  // reads every declared field of an object it checks, so a field it never read is unknown.
  const tracker = new FieldTracker()
  Model.prototype.validate.call(tracker.wrap(obj, ''))
  return tracker.unknownFields()
}

class FieldTracker {
  readonly #records: Array<{ path: string, target: Record<string, unknown>, read: Set<string>, inspected: boolean }> = []
  readonly #proxies = new WeakMap<object, unknown>()

  wrap (value: unknown, at: string): unknown {
    if (typeof value !== 'object' || value === null) return value
    const known = this.#proxies.get(value)
    if (known !== undefined) return known
    let proxy: unknown
    if (Array.isArray(value)) {
      proxy = new Proxy(value, {
        get: (target, prop, receiver) => {
          const v: unknown = Reflect.get(target, prop, receiver)
          return typeof prop === 'string' && /^\d+$/.test(prop) ? this.wrap(v, `${at}/${prop}`) : v
        }
      })
    } else {
      const record = { path: at, target: value as Record<string, unknown>, read: new Set<string>(), inspected: false }
      this.#records.push(record)
      proxy = new Proxy(value, {
        get: (target, prop, receiver) => {
          const v: unknown = Reflect.get(target, prop, receiver)
          if (typeof prop !== 'string') return v
          record.inspected = true
          record.read.add(prop)
          return this.wrap(v, `${at}/${prop}`)
        },
        has: (target, prop) => {
          if (typeof prop === 'string') {
            record.inspected = true
            record.read.add(prop)
          }
          return Reflect.has(target, prop)
        },
        // Iterating the keys (a map such as labels, or additionalProperties) reads them all.
        ownKeys: (target) => {
          record.inspected = true
          for (const k of Object.keys(target)) record.read.add(k)
          return Reflect.ownKeys(target)
        }
      })
    }
    this.#proxies.set(value, proxy)
    return proxy
  }

  /** Fields of objects the validator looked into but never read. Free-form objects are skipped. */
  unknownFields (): string[] {
    const unknown: string[] = []
    for (const r of this.#records) {
      if (!r.inspected) continue
      for (const k of Object.keys(r.target)) if (!r.read.has(k)) unknown.push(`${r.path}/${k}`)
    }
    return unknown
  }
}

// ---------------------------------------------------------------------------------------------
// Pod specs as the kubelet sees them

export interface EnvVar {
  name: string
  value?: string
  valueFrom?: {
    fieldRef?: { fieldPath: string }
    resourceFieldRef?: unknown
    secretKeyRef?: unknown
    configMapKeyRef?: unknown
  }
}

export interface VolumeMount { name: string, mountPath: string, readOnly?: boolean, subPath?: string }
export interface ContainerPort { name?: string, containerPort: number, hostPort?: number, protocol?: string }
export interface HttpProbe { httpGet?: { path?: string, port: number | string }, periodSeconds?: number, failureThreshold?: number }
export interface SecurityContext {
  runAsUser?: number
  runAsNonRoot?: boolean
  readOnlyRootFilesystem?: boolean
  allowPrivilegeEscalation?: boolean
  privileged?: boolean
  capabilities?: { add?: string[], drop?: string[] }
  seLinuxOptions?: { type?: string }
}

export interface Container {
  name: string
  image?: string
  command?: string[]
  args?: string[]
  env?: EnvVar[]
  envFrom?: unknown[]
  ports?: ContainerPort[]
  volumeMounts?: VolumeMount[]
  readinessProbe?: HttpProbe
  livenessProbe?: HttpProbe
  startupProbe?: HttpProbe
  securityContext?: SecurityContext
  resources?: { requests?: Record<string, string | number>, limits?: Record<string, string | number> }
}

export interface Volume {
  name: string
  hostPath?: { path: string, type?: string }
  secret?: { secretName: string, optional?: boolean, defaultMode?: number, items?: Array<{ key: string, path: string }> }
  [source: string]: unknown
}

export interface PodSpec {
  initContainers?: Container[]
  containers: Container[]
  volumes?: Volume[]
  securityContext?: SecurityContext
  priorityClassName?: string
  tolerations?: Array<{ key?: string, operator?: string, effect?: string }>
  hostNetwork?: boolean
}

/** The pod template of a DaemonSet or Job. */
export function podTemplate (obj: K8sObject): { labels: Record<string, string>, spec: PodSpec } {
  const template = (obj.spec as { template?: { metadata?: { labels?: Record<string, string> }, spec?: PodSpec } } | undefined)?.template
  if (template?.spec === undefined) throw new Error(`${obj.kind} ${obj.metadata.name} has no pod template`)
  return { labels: template.metadata?.labels ?? {}, spec: template.spec }
}

/** Stand-ins for the downward API, as one node would see them. */
export const FIELD_VALUES: Readonly<Record<string, string>> = {
  'status.hostIP': '192.0.2.10',
  'status.podIP': '10.244.1.7',
  'spec.nodeName': 'node-1',
  'metadata.name': 'spegel-x7k2p'
}

/**
 * The kubelet's `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`, an
 * undefined reference stays as written.
 */
export function expand (input: string, vars: ReadonlyMap<string, string>): string {
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
        out += input.slice(i)
        break
      }
      const name = input.slice(i + 2, close)
      out += vars.get(name) ?? input.slice(i, close + 1)
      i = close
    } else {
      out += c
    }
  }
  return out
}

/**
 * A container's environment and arguments after the kubelet's expansion. An env value sees
 * only the variables listed before it; arguments see them all.
 */
export function processOf (owner: K8sObject, container: Container): { env: Record<string, string>, args: string[] } {
  if (container.envFrom !== undefined && container.envFrom.length > 0) throw new Error(`${container.name}: envFrom is not modelled by these checks`)
  const vars = new Map<string, string>()
  for (const e of container.env ?? []) {
    if (e.value !== undefined) {
      vars.set(e.name, expand(e.value, vars))
    } else if (e.valueFrom?.fieldRef !== undefined) {
      const fieldPath = e.valueFrom.fieldRef.fieldPath
      const v = fieldPath === 'metadata.namespace' ? owner.metadata.namespace : FIELD_VALUES[fieldPath]
      if (v === undefined) throw new Error(`${container.name}: env ${e.name} reads ${fieldPath}, which these checks do not model`)
      vars.set(e.name, v)
    } else if (e.valueFrom !== undefined) {
      throw new Error(`${container.name}: env ${e.name} has a valueFrom these checks do not model`)
    } else {
      vars.set(e.name, '')
    }
  }
  const args = (container.args ?? []).map((a) => expand(a, vars))
  return { env: Object.fromEntries(vars), args }
}
