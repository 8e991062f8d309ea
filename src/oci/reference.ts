import { isIPv6 } from 'node:net'
import { parseDigest } from './digest.js'

export interface ImageReference {
  registry: string
  repository: string
  tag?: string
  digest?: string
}

export interface ParseImageReferenceOptions {
  /** A digest known from elsewhere (e.g. an image record's target); must agree with one in the string. */
  digest?: string
  /** Fail when the result has no digest. Default false. */
  requireDigest?: boolean
  /** When false, apply Docker defaults (`docker.io`, `library/`, `latest`). Default true. */
  strict?: boolean
}

// Distribution-spec grammar. Separators are mandatory between alphanumeric runs, so these
// cannot backtrack catastrophically.
const REPOSITORY_PATTERN = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/
const TAG_PATTERN = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/
const HOST_LABELS = /^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*$/
const HOST_AND_PORT = /^(?:\[([^\]]*)\]|([^[\]:]*))(?::([0-9]{1,5}))?$/

/** Clients commonly cap `registry/name` at 255 characters; a repository alone cannot be longer. */
export const MAX_REPOSITORY_LENGTH = 255
const MAX_HOST_LENGTH = 255

export const DEFAULT_REGISTRY = 'docker.io'
export const DEFAULT_TAG = 'latest'

export function isValidRepository (s: string): boolean {
  return s.length > 0 && s.length <= MAX_REPOSITORY_LENGTH && REPOSITORY_PATTERN.test(s)
}

export function isValidTag (s: string): boolean {
  return TAG_PATTERN.test(s)
}

export interface RegistryHost {
  /** Without brackets for IPv6. */
  hostname: string
  port?: number
  isIPv6: boolean
}

/**
 * Parses a registry `host[:port]` (IPv6 in brackets, port 1-65535). Returns undefined when
 * the text is not a registry host, so callers choose their own error.
 */
export function parseRegistryHost (s: string): RegistryHost | undefined {
  if (s.length === 0 || s.length > MAX_HOST_LENGTH) return undefined
  const m = HOST_AND_PORT.exec(s)
  if (m === null) return undefined
  const [, bracketed, plain, portText] = m
  let port: number | undefined
  if (portText !== undefined) {
    port = Number(portText)
    if (port < 1 || port > 65535) return undefined
  }
  if (bracketed !== undefined) {
    // isIPv6 accepts zone ids (`fe80::1%eth0`); they have no meaning to a remote peer and
    // `%` must never reach a key or URL.
    return !bracketed.includes('%') && isIPv6(bracketed) ? { hostname: bracketed, port, isIPv6: true } : undefined
  }
  if (plain === undefined || !HOST_LABELS.test(plain)) return undefined
  return { hostname: plain, port, isIPv6: false }
}

export function isValidRegistryHost (s: string): boolean {
  return parseRegistryHost(s) !== undefined
}

/**
 * Whether the first path component of a reference names a registry (Docker's rule: an IP,
 * `localhost`, a dotted name, or anything with a port). Throws when it looks like a
 * registry but is not a valid host, instead of quietly folding it into the repository.
 */
function firstComponentIsRegistry (component: string): boolean {
  if (isIPv6(component)) {
    throw new Error(`ip6 address ${component} needs to be encapsulated in square brackets`)
  }
  const host = parseRegistryHost(component)
  if (host !== undefined) {
    return host.isIPv6 || host.port !== undefined || host.hostname === 'localhost' || host.hostname.includes('.')
  }
  if (/[.:[\]%]/.test(component)) throw new Error(`registry ${component} is not a valid host[:port]`)
  return false
}

function parse (s: string, options: ParseImageReferenceOptions): ImageReference {
  if (s.includes('://')) throw new Error('invalid reference format')
  const components = s.split('/')
  let registry = ''
  if (components.length > 1 && firstComponentIsRegistry(components[0] ?? '')) {
    registry = components.shift() ?? ''
  }
  let last = components.pop() ?? ''

  let digest: string | undefined
  const at = last.indexOf('@')
  if (at !== -1) {
    digest = parseDigest(last.slice(at + 1)).value
    last = last.slice(0, at)
  }
  let tag: string | undefined
  const colon = last.indexOf(':')
  if (colon !== -1) {
    tag = last.slice(colon + 1)
    last = last.slice(0, colon)
    if (!isValidTag(tag)) throw new Error(`tag ${tag} is invalid`)
  }
  components.push(last)
  let repository = components.join('/')
  if (repository === '') throw new Error('reference needs to contain a repository')
  if (!isValidRepository(repository)) throw new Error(`repository ${repository} is invalid`)

  if (options.digest !== undefined) {
    const extra = parseDigest(options.digest).value
    if (digest !== undefined && digest !== extra) {
      throw new Error(`set digest ${extra} does not match parsed digest ${digest}`)
    }
    digest = extra
  }
  if (options.requireDigest === true && digest === undefined) throw new Error('image needs to contain a digest')

  if (options.strict === false) {
    if (registry === '') registry = DEFAULT_REGISTRY
    if (registry === DEFAULT_REGISTRY && !repository.includes('/')) repository = `library/${repository}`
    // Only when nothing identifies the content: a digest reference with an invented tag
    // would produce a tag key nobody asked for.
    if (tag === undefined && digest === undefined) tag = DEFAULT_TAG
  }

  if (registry === '') throw new Error('reference needs to contain a registry')
  if (tag === undefined && digest === undefined) throw new Error('either tag or digest has to be set')
  const ref: ImageReference = { registry, repository }
  if (tag !== undefined) ref.tag = tag
  if (digest !== undefined) ref.digest = digest
  return ref
}

/**
 * Parses `[registry/]repository[:tag][@digest]` as Spegel's pkg/oci/image.go does. Errors are plain
 * Errors with the message `could not parse image <input>: <reason>`, keeping the underlying error
 * as `cause`.
 */
export function parseImageReference (s: string, options: ParseImageReferenceOptions = {}): ImageReference {
  try {
    return parse(s, options)
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    throw new Error(`could not parse image ${s}: ${reason}`, { cause: err })
  }
}

/** `registry/repository:tag`, the key a tag is advertised and resolved under; undefined without a tag. */
export function tagName (ref: ImageReference): string | undefined {
  return ref.tag === undefined ? undefined : `${ref.registry}/${ref.repository}:${ref.tag}`
}

/** `registry/repository[:tag][@digest]`. */
export function referenceString (ref: ImageReference): string {
  const tag = ref.tag === undefined ? '' : `:${ref.tag}`
  const digest = ref.digest === undefined ? '' : `@${ref.digest}`
  return `${ref.registry}/${ref.repository}${tag}${digest}`
}

/** The routing key: the digest when there is one, else the tag name. */
export function referenceIdentifier (ref: ImageReference): string {
  return ref.digest ?? `${ref.registry}/${ref.repository}:${ref.tag ?? ''}`
}
