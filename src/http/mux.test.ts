import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { Registry } from 'prom-client'
import { OciError, rangeNotSatisfiable } from '../oci/index.js'
import { createMetrics } from '../observability/metrics.js'
import { INTERNAL_ERROR_BODY, writeError } from './errors.js'
import { createMux } from './mux.js'
import { addLogAttrs } from './response.js'
import { LogCapture, eventually, request, startTestServer, type TestServer } from './test-helpers.js'

describe('createMux and writeError', () => {
  const capture = new LogCapture()
  const metrics = createMetrics(new Registry(), { collectDefault: false })
  let srv: TestServer

  before(async () => {
    const mux = createMux({ log: capture.log, metrics }, [
      { pattern: '/quiet', handler: (_req, res) => { res.end('q') }, isQuiet: true },
      {
        pattern: '/prefix/*',
        handler: async (req, res) => {
          const what = req.url?.split('/')[2]
          addLogAttrs(res, { what })
          switch (what) {
            case 'ok':
              res.writeHead(200, { 'Content-Length': 5 })
              res.write('he')
              res.end(Buffer.from('llo'))
              return
            case 'oci':
              throw new OciError('BLOB_UNKNOWN', 'nope')
            case 'range':
              throw rangeNotSatisfiable(2048, 'out of bounds')
            case 'bug':
              throw new Error('secret detail')
            case 'sync-bug':
              return await Promise.reject(new TypeError('boom'))
            case 'midway':
              res.writeHead(200, { 'Content-Length': 10 })
              res.write('abc')
              writeError(res, new Error('disk went away'))
              return
            case 'headers-only':
              res.setHeader('Docker-Content-Digest', 'sha256:leak')
              writeError(res, new OciError('MANIFEST_UNKNOWN', 'gone'), { headers: { Allow: 'GET, HEAD' } })
              return
            default:
              res.end('default')
          }
        }
      }
    ])
    srv = await startTestServer(mux, capture.log)
  })
  after(async () => { await srv.close() })

  it('answers 404 with an empty body for unknown paths, without metrics', async () => {
    const res = await request(srv.port, '/nope')
    assert.equal(res.status, 404)
    assert.equal(res.headers['content-length'], '0')
    assert.equal(res.body.length, 0)
    await capture.find((l) => l.msg === 'page not found' && l.path === '/nope' && l.level === 'DEBUG')
    assert.doesNotMatch(await metrics.registry.metrics(), /handler="\/nope"/)
  })

  it('matches /prefix itself for a /prefix/* pattern but not /prefixed', async () => {
    assert.notEqual((await request(srv.port, '/prefix')).status, 404)
    assert.equal((await request(srv.port, '/prefixed')).status, 404)
  })

  it('logs one debug line per success with bytes, handler and attrs', async () => {
    const res = await request(srv.port, '/prefix/ok', { headers: { 'X-Forwarded-For': '10.1.2.3, 10.0.0.1' } })
    assert.equal(res.body.toString(), 'hello')
    const line = await capture.find((l) => l.what === 'ok')
    assert.equal(line.level, 'DEBUG')
    assert.equal(line.msg, 'request')
    assert.equal(line.handler, '/prefix/*')
    assert.equal(line.status, 200)
    assert.equal(line.bytes, 5)
    assert.equal(line.ip, '10.1.2.3')
    assert.equal(line.method, 'GET')
    assert.equal(line.path, '/prefix/ok')
    assert.equal(capture.lines.filter((l) => l.what === 'ok').length, 1)
  })

  it('renders OciErrors with exact length, 404 logged at debug', async () => {
    const res = await request(srv.port, '/prefix/oci')
    const body = '{"errors":[{"code":"BLOB_UNKNOWN","message":"nope"}]}'
    assert.equal(res.status, 404)
    assert.equal(res.headers['content-type'], 'application/json')
    assert.equal(res.headers['content-length'], String(Buffer.byteLength(body)))
    assert.equal(res.body.toString(), body)
    const line = await capture.find((l) => l.what === 'oci')
    assert.equal(line.level, 'DEBUG')
    assert.deepEqual((line.err as { message: string }).message, 'nope')
  })

  it('sends the same headers and no body for HEAD', async () => {
    const get = await request(srv.port, '/prefix/oci')
    const head = await request(srv.port, '/prefix/oci', { method: 'HEAD' })
    assert.equal(head.status, 404)
    assert.equal(head.body.length, 0)
    assert.equal(head.headers['content-length'], get.headers['content-length'])
    assert.equal(head.headers['content-type'], get.headers['content-type'])
  })

  it('adds Content-Range bytes */size to 416, logged at warn', async () => {
    const res = await request(srv.port, '/prefix/range')
    assert.equal(res.status, 416)
    assert.equal(res.headers['content-range'], 'bytes */2048')
    assert.equal(JSON.parse(res.body.toString()).errors[0].code, 'UNSUPPORTED')
    assert.equal((await capture.find((l) => l.what === 'range')).level, 'WARN')
  })

  it('answers unknown errors 500 with a generic body and logs the detail at error', async () => {
    for (const what of ['bug', 'sync-bug']) {
      const res = await request(srv.port, `/prefix/${what}`)
      assert.equal(res.status, 500)
      assert.equal(res.body.toString(), INTERNAL_ERROR_BODY)
      assert.doesNotMatch(res.body.toString(), /secret|boom/)
      const line = await capture.find((l) => l.what === what)
      assert.equal(line.level, 'ERROR')
    }
  })

  it('destroys the connection when an error comes after body bytes', async () => {
    await assert.rejects(request(srv.port, '/prefix/midway'), { code: 'ECONNRESET' })
    const line = await capture.find((l) => l.what === 'midway')
    assert.equal(line.level, 'ERROR')
    assert.equal(line.aborted, true)
    assert.equal(line.bytes, 3)
  })

  it('drops headers set for success and adds the given ones', async () => {
    const res = await request(srv.port, '/prefix/headers-only')
    assert.equal(res.status, 404)
    assert.equal(res.headers['docker-content-digest'], undefined)
    assert.equal(res.headers.allow, 'GET, HEAD')
  })

  it('measures quiet routes without logging them', async () => {
    await request(srv.port, '/quiet')
    await eventually(async () => {
      assert.match(await metrics.registry.metrics(), /^http_response_size_bytes_count\{handler="\/quiet",method="GET",code="200"\} 1$/m)
    })
    assert.equal(capture.lines.some((l) => l.path === '/quiet'), false)
  })

  it('labels metrics with the route pattern and returns inflight to 0', async () => {
    await request(srv.port, '/prefix/ok')
    await request(srv.port, '/prefix/oci')
    await eventually(async () => {
      const text = await metrics.registry.metrics()
      assert.match(text, /^http_requests_inflight\{handler="\/prefix\/\*"\} 0$/m)
      assert.match(text, /^http_request_duration_seconds_count\{handler="\/prefix\/\*",method="GET",code="404"\} \d+$/m)
      assert.doesNotMatch(text, /handler="\/prefix\/ok"/)
    })
  })

  it('answers malformed requests 400 without calling a handler', async () => {
    const socket = connect(srv.port, '127.0.0.1')
    await once(socket, 'connect')
    socket.end('GARBAGE\r\n\r\n')
    const parts: Buffer[] = []
    for await (const chunk of socket) parts.push(chunk as Buffer)
    assert.match(Buffer.concat(parts).toString('latin1'), /^HTTP\/1\.1 400 /)
  })
})
