import { parseDigest } from './digest.js'
import { OciError, unsupportedEndpoint } from './errors.js'
import { isValidRegistryHost, isValidRepository, isValidTag, MAX_REPOSITORY_LENGTH } from './reference.js'

export type DistributionKind = 'manifest' | 'blob'

export interface DistributionRequest {
  kind: DistributionKind
  repository: string
  /** From `ns`; empty for a digest request that came without one. */
  registry: string
  tag?: string
  digest?: string
  /** digest, or registry/repository:tag */
  key: string
}

const PREFIX = '/v2/'
// Everything a valid repository, tag or digest can contain. `%`, `\`, `?`, `#`, spaces and
// non-ASCII never appear in a valid request, so refusing them up front means no decoding
// step can ever turn a rejected path into an accepted one.
const PATH_CHARS = /^[A-Za-z0-9._\-/:+=]*$/
// Bounds the work spent on hostile paths: repository, separators, kind and a sha512 digest.
const MAX_PATH_LENGTH = PREFIX.length + MAX_REPOSITORY_LENGTH + '/manifests/'.length + 'sha512:'.length + 128

function notParsed (): OciError {
  return new OciError('NAME_UNKNOWN', 'distribution path could not be parsed')
}

/** Known distribution endpoints this mirror does not serve; `undefined` for anything else. */
function unsupportedKind (segments: readonly string[]): string | undefined {
  const n = segments.length
  if (n === 1 && segments[0] === '_catalog') return 'the catalog API'
  if (n >= 3 && segments[n - 2] === 'tags' && segments[n - 1] === 'list') return 'the tags list API'
  if (n >= 3 && segments[n - 2] === 'referrers') return 'the referrers API'
  // `<name>/blobs/uploads`, `<name>/blobs/uploads/` and `<name>/blobs/uploads/<session>`.
  if (n >= 3 && segments[n - 2] === 'blobs' && segments[n - 1] === 'uploads') return 'blob uploads'
  if (n >= 4 && segments[n - 3] === 'blobs' && segments[n - 2] === 'uploads') return 'blob uploads'
  return undefined
}

/**
 * Parses a `/v2/` request path into what to serve. Unlike Spegel (pkg/oci/distribution.go), every
 * failure is a 4xx OCI error instead of an empty 404, and the path is matched segment by segment
 * from the end (`<name>/<manifests|blobs>/<reference>`), so a name containing `manifests` or
 * `blobs` is not ambiguous.
 *
 * Anything under `/v2/` that is not a manifest, blob or known-unsupported endpoint is
 * NAME_UNKNOWN (404): the distribution spec has no "no such endpoint" code, nothing is
 * stored at that path under any name, and a 404 keeps containerd falling back cheaply.
 *
 * `pathname` is the raw (not decoded) URL path; the API version check on `/v2/` is the
 * caller's. `ns` is the decoded `ns` query parameter (null or empty when absent).
 */
export function parseDistributionPath (pathname: string, ns: string | null): DistributionRequest {
  if (!pathname.startsWith(PREFIX) || pathname === PREFIX) throw notParsed()
  if (pathname.length > MAX_PATH_LENGTH) throw new OciError('NAME_INVALID', 'distribution path is too long')
  if (!PATH_CHARS.test(pathname)) {
    throw new OciError('NAME_INVALID', 'distribution path contains characters that are not allowed (percent-encoding is never accepted)')
  }
  const segments = pathname.slice(PREFIX.length).split('/')
  const unsupported = unsupportedKind(segments)
  if (unsupported !== undefined) throw unsupportedEndpoint(unsupported)
  if (segments.some(s => s === '' || s === '.' || s === '..')) {
    throw new OciError('NAME_INVALID', 'distribution path contains empty or dot segments')
  }
  if (segments.length < 3) throw notParsed()
  const reference = segments.at(-1) ?? ''
  const kindSegment = segments.at(-2)
  if (kindSegment !== 'manifests' && kindSegment !== 'blobs') throw notParsed()
  let repository = segments.slice(0, -2).join('/')
  if (!isValidRepository(repository)) {
    throw new OciError('NAME_INVALID', `repository name ${repository} is invalid`)
  }

  let registry = ''
  if (ns !== null && ns !== '') {
    if (!isValidRegistryHost(ns)) throw new OciError('NAME_INVALID', `ns query parameter ${ns} is not a valid registry host[:port]`)
    registry = ns
  } else {
    // Clients other than containerd (skopeo, crane, curl) send no `ns`; they may name the
    // registry as the first path component instead: /v2/docker.io/library/nginx/manifests/1.27.
    const embedded = registryInPath(repository)
    if (embedded !== undefined) {
      registry = embedded.registry
      repository = embedded.repository
    }
  }

  if (kindSegment === 'manifests' && isValidTag(reference)) {
    if (registry === '') throw new OciError('NAME_INVALID', 'the ns query parameter is required for tag references')
    return { kind: 'manifest', repository, registry, tag: reference, key: `${registry}/${repository}:${reference}` }
  }
  // A tag on /blobs/ lands here too and fails as a digest, like Spegel (`invalid checksum digest format`).
  const digest = parseDigest(reference).value
  return { kind: kindSegment === 'manifests' ? 'manifest' : 'blob', repository, registry, digest, key: digest }
}

/** A first component with a dot (or `localhost`) is a registry host, as in image references. */
function registryInPath (repository: string): { registry: string, repository: string } | undefined {
  const slash = repository.indexOf('/')
  if (slash <= 0) return undefined
  const first = repository.slice(0, slash)
  if (first !== 'localhost' && !first.includes('.')) return undefined
  if (!isValidRegistryHost(first)) return undefined
  return { registry: first, repository: repository.slice(slash + 1) }
}

/**
 * The path (and `ns` query) to ask a peer for the same content. Spegel forwards `ns`
 * unchanged, which peers need to rebuild tag keys.
 */
export function distributionRequestPath (req: Pick<DistributionRequest, 'kind' | 'repository' | 'registry' | 'tag' | 'digest'>): string {
  const reference = req.digest ?? req.tag
  if (reference === undefined) throw new TypeError('a distribution request needs a tag or a digest')
  const path = `${PREFIX}${req.repository}/${req.kind === 'manifest' ? 'manifests' : 'blobs'}/${reference}`
  return req.registry === '' ? path : `${path}?ns=${encodeURIComponent(req.registry)}`
}
