import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { decodeEvent, eventFilters, firstStringField } from './events.js'

/** Protobuf wire bytes: field 1 (string) plus extra fields of other wire types before/after. */
function encode (fields: Array<[number, number, Buffer | number]>): Buffer {
  const parts: Buffer[] = []
  const varint = (n: number): Buffer => {
    const out: number[] = []
    while (n >= 0x80) { out.push((n & 0x7f) | 0x80); n = Math.floor(n / 128) }
    out.push(n)
    return Buffer.from(out)
  }
  for (const [field, wireType, value] of fields) {
    parts.push(varint(field * 8 + wireType))
    if (wireType === 0) parts.push(varint(value as number))
    else if (wireType === 2) { parts.push(varint((value as Buffer).length), value as Buffer) } else if (wireType === 5) parts.push(Buffer.alloc(4))
    else if (wireType === 1) parts.push(Buffer.alloc(8))
  }
  return Buffer.concat(parts)
}

describe('containerd event decoding', () => {
  it('reads field 1 whatever comes around it', () => {
    const name = 'docker.io/library/nginx:1.27'
    assert.equal(firstStringField(encode([[1, 2, Buffer.from(name)]])), name)
    // labels map (field 2) before the name, and a varint and fixed fields after.
    assert.equal(firstStringField(encode([[2, 2, Buffer.from('xyz')], [3, 0, 300], [4, 1, 0], [5, 5, 0], [1, 2, Buffer.from(name)]])), name)
    const long = 'r/' + 'a'.repeat(300)
    assert.equal(firstStringField(encode([[1, 2, Buffer.from(long)]])), long)
  })

  it('gives up on truncated or malformed input instead of reading past the end', () => {
    const whole = encode([[1, 2, Buffer.from('docker.io/x/y:1')]])
    assert.equal(firstStringField(whole.subarray(0, whole.length - 3)), undefined)
    assert.equal(firstStringField(Buffer.from([0x0f])), undefined) // wire type 7 does not exist
    assert.equal(firstStringField(Buffer.alloc(0)), undefined)
  })

  it('maps topics to store events and ignores the rest', () => {
    const payload = encode([[1, 2, Buffer.from('example.test/a/b:1')]])
    const event = (topic: string): ReturnType<typeof decodeEvent> => decodeEvent({ namespace: 'k8s.io', topic, typeUrl: '', payload })
    assert.deepEqual(event('/images/create'), { kind: 'image-upsert', name: 'example.test/a/b:1' })
    assert.deepEqual(event('/images/update'), { kind: 'image-upsert', name: 'example.test/a/b:1' })
    assert.deepEqual(event('/images/delete'), { kind: 'image-delete', name: 'example.test/a/b:1' })
    const digest = `sha256:${'a'.repeat(64)}`
    const content = encode([[1, 2, Buffer.from(digest)], [2, 0, 1234]])
    assert.deepEqual(decodeEvent({ namespace: 'k8s.io', topic: '/content/create', typeUrl: '', payload: content }), { kind: 'content-create', digest })
    assert.deepEqual(decodeEvent({ namespace: 'k8s.io', topic: '/content/delete', typeUrl: '', payload: content }), { kind: 'content-delete', digest })
    assert.equal(event('/snapshot/prepare'), undefined)
    assert.equal(event('/containers/create'), undefined)
  })

  it('scopes the subscription to the namespace, since containerd does not', () => {
    assert.deepEqual(eventFilters('k8s.io'), ['namespace==k8s.io,topic~="^/images/"', 'namespace==k8s.io,topic~="^/content/"'])
    assert.ok(!eventFilters('bad"ns').some((f) => f.includes('"ns')))
  })
})
