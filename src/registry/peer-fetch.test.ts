import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { MANIFEST_MEDIA_TYPES, MEDIA_TYPE_OCI_INDEX } from '../oci/index.js'
import type { Peer } from '../routing/index.js'
import {
  PeerFetchError, PeerRangeNotSatisfiableError, createPeerClient, fetchFromPeer, type PeerRequest
} from './peer-fetch.js'

const DIGEST = `sha256:${'a'.repeat(64)}`
const OTHER = `sha256:${'b'.repeat(64)}`
const blob = (extra: Partial<PeerRequest> = {}): PeerRequest => ({
  method: 'GET',
  content: { kind: 'blob', repository: 'library/test', registry: 'docker.io', digest: DIGEST },
  ...extra
})
const tagManifest: PeerRequest = { method: 'GET', content: { kind: 'manifest', repository: 'library/test', registry: 'docker.io', tag: 'latest' } }

describe('fetchFromPeer', () => {
  let server: Server
  let agent: ReturnType<typeof createPeerClient>
  let peer: Peer
  let handle: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => { res.writeHead(500).end() }
  let seen: { url: string, method: string, headers: IncomingHttpHeaders } | undefined

  before(async () => {
    server = createServer((req, res) => {
      seen = { url: req.url ?? '', method: req.method ?? '', headers: req.headers }
      handle(req, res)
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    peer = { id: 'peer-1', registryAddress: `127.0.0.1:${(server.address() as AddressInfo).port}` }
    agent = createPeerClient()
  })
  after(async () => {
    await agent.close()
    server.closeAllConnections()
    server.close()
  })

  const fetch = async (req: PeerRequest, authorization?: string): ReturnType<typeof fetchFromPeer> =>
    await fetchFromPeer(peer, req, { client: agent, signal: AbortSignal.timeout(5000), ...(authorization === undefined ? {} : { authorization }) })

  const rejection = async (req: PeerRequest): Promise<PeerFetchError> => {
    const err = await fetch(req).then(async (r) => { await r.body.dump(); return undefined }, (e: unknown) => e)
    assert.ok(err instanceof PeerFetchError, `expected a PeerFetchError, got ${String(err)}`)
    return err
  }

  it('asks with the loop guard, Spegel’s headers, ns, auth and range', async () => {
    handle = (_req, res) => { res.writeHead(206, { 'Content-Range': 'bytes 1-3/20', 'Content-Length': 3 }).end('abc') }
    const res = await fetch(blob({ range: { start: 1, end: 3 } }), 'Basic Zm9vOmJhcg==')
    assert.equal(await res.body.text(), 'abc')
    assert.ok(seen !== undefined)
    assert.equal(seen.url, `/v2/library/test/blobs/${DIGEST}?ns=docker.io`)
    assert.equal(seen.method, 'GET')
    assert.equal(seen.headers['x-spegel-mirrored'], 'true')
    assert.equal(seen.headers['user-agent'], 'spegel')
    assert.deepEqual(seen.headers.accept?.split(', ').sort(), [...MANIFEST_MEDIA_TYPES].sort())
    assert.equal(seen.headers.authorization, 'Basic Zm9vOmJhcg==')
    assert.equal(seen.headers.range, 'bytes=1-3')
    assert.deepEqual(res.range, { start: 1, end: 3 })
    assert.equal(res.bodyBytes, 3)
    assert.deepEqual(res.descriptor, { digest: DIGEST, sizeBytes: 20, mediaType: 'application/octet-stream' })
  })

  it('defaults a blob’s type and digest like Spegel', async () => {
    handle = (_req, res) => { res.writeHead(200, { 'Content-Length': 4 }).end('abcd') }
    const res = await fetch(blob())
    await res.body.dump()
    assert.equal(res.status, 200)
    assert.deepEqual(res.descriptor, { digest: DIGEST, sizeBytes: 4, mediaType: 'application/octet-stream' })
    assert.equal(seen?.headers.range, undefined)
    assert.equal(seen?.headers.authorization, undefined)
  })

  it('takes a manifest’s digest and type from the headers, and HEAD has no body', async () => {
    handle = (_req, res) => { res.writeHead(200, { 'Content-Type': MEDIA_TYPE_OCI_INDEX, 'Content-Length': 88, 'Docker-Content-Digest': OTHER }).end() }
    const res = await fetch({ ...tagManifest, method: 'HEAD' })
    await res.body.dump()
    assert.equal(seen?.url, '/v2/library/test/manifests/latest?ns=docker.io')
    assert.equal(seen?.method, 'HEAD')
    assert.deepEqual(res.descriptor, { digest: OTHER, sizeBytes: 88, mediaType: MEDIA_TYPE_OCI_INDEX })
  })

  it('refuses a manifest without a valid digest header', async () => {
    handle = (_req, res) => { res.writeHead(200, { 'Content-Type': MEDIA_TYPE_OCI_INDEX, 'Content-Length': 2 }).end('{}') }
    assert.match((await rejection(tagManifest)).message, /invalid Docker-Content-Digest \(missing\)/)
    handle = (_req, res) => { res.writeHead(200, { 'Content-Type': MEDIA_TYPE_OCI_INDEX, 'Content-Length': 2, 'Docker-Content-Digest': 'sha256:nope' }).end('{}') }
    assert.match((await rejection(tagManifest)).message, /invalid Docker-Content-Digest sha256:nope/)
  })

  it('refuses content under another digest than the one asked for', async () => {
    handle = (_req, res) => { res.writeHead(200, { 'Content-Length': 4, 'Docker-Content-Digest': OTHER }).end('abcd') }
    assert.match((await rejection(blob())).message, /sent digest sha256:b+ for sha256:a+/)
  })

  it('refuses a range other than the one asked for, and a range ignored or not asked for', async () => {
    handle = (_req, res) => { res.writeHead(206, { 'Content-Range': 'bytes 0-3/20', 'Content-Length': 4 }).end('abcd') }
    assert.match((await rejection(blob({ range: { start: 1, end: 4 } }))).message, /served range 0-3\/20 for bytes=1-4/)
    assert.match((await rejection(blob())).message, /answered 206 to a request without a range/)
    handle = (_req, res) => { res.writeHead(200, { 'Content-Length': 20 }).end('x'.repeat(20)) }
    assert.match((await rejection(blob({ range: { start: 5 } }))).message, /ignored the range/)
  })

  it('accepts open-ended and suffix ranges resolved against the total', async () => {
    handle = (_req, res) => { res.writeHead(206, { 'Content-Range': 'bytes 15-19/20', 'Content-Length': 5 }).end('abcde') }
    const open = await fetch(blob({ range: { start: 15 } }))
    assert.equal(await open.body.text(), 'abcde')
    const suffix = await fetch(blob({ range: { suffix: 5 } }))
    assert.equal(await suffix.body.text(), 'abcde')
    assert.equal(seen?.headers.range, 'bytes=-5')
  })

  it('turns a 416 with the size into PeerRangeNotSatisfiableError', async () => {
    handle = (_req, res) => { res.writeHead(416, { 'Content-Range': 'bytes */20', 'Content-Length': 0 }).end() }
    const err = await rejection(blob({ range: { start: 30 } }))
    assert.ok(err instanceof PeerRangeNotSatisfiableError)
    assert.equal(err.sizeBytes, 20)
  })

  it('fails on other statuses with the start of a textual body', async () => {
    handle = (_req, res) => {
      const body = '{"errors":[{"code":"BLOB_UNKNOWN","message":"not here"}]}'
      res.writeHead(404, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }).end(body)
    }
    const err = await rejection(blob())
    assert.equal(err.status, 404)
    assert.match(err.message, /but received 404: \{"errors":\[\{"code":"BLOB_UNKNOWN","message":"not here"\}\]\}$/)
  })

  it('fails without a status when the peer cannot be reached', async () => {
    const closed = createServer()
    closed.listen(0, '127.0.0.1')
    await once(closed, 'listening')
    const address = `127.0.0.1:${(closed.address() as AddressInfo).port}`
    closed.close()
    await once(closed, 'close')
    const err = await fetchFromPeer({ id: 'gone', registryAddress: address }, blob(), { client: agent, signal: AbortSignal.timeout(5000) })
      .then(() => undefined, (e: unknown) => e)
    assert.ok(err instanceof PeerFetchError)
    assert.equal(err.status, undefined)
    assert.match(err.message, /ECONNREFUSED/)
  })
})
