import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, it } from 'node:test'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createLogger } from '../../observability/logger.js'
import { loadOrCreatePrivateKey, parseEd25519Pem } from './identity.js'
import { generatePskFile, readPskFile } from './psk.js'

const log = createLogger({ level: 'silent' })

async function tempDir (t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'spegel-identity-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

describe('router identity', () => {
  it('creates private.key (PKCS#8 PEM, 0600) once and loads the same identity after', async (t) => {
    const dataDir = path.join(await tempDir(t), 'nested', 'data')
    const first = await loadOrCreatePrivateKey(dataDir, log)
    const file = path.join(dataDir, 'private.key')
    assert.equal((await stat(file)).mode & 0o777, 0o600)
    assert.match(await readFile(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n[\s\S]+-----END PRIVATE KEY-----\n$/)
    const second = await loadOrCreatePrivateKey(dataDir, log)
    assert.equal(peerIdFromPrivateKey(second).toString(), peerIdFromPrivateKey(first).toString())
    const msg = new TextEncoder().encode('hello')
    assert.equal(await first.publicKey.verify(msg, await second.sign(msg)), true)
  })

  it('reads a key written by another PKCS#8 writer (as Spegel writes it)', async (t) => {
    const dir = await tempDir(t)
    const { privateKey, publicKey } = generateKeyPairSync('ed25519')
    await writeFile(path.join(dir, 'private.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }))
    const key = await loadOrCreatePrivateKey(dir, log)
    const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32)
    assert.deepEqual(Buffer.from(key.publicKey.raw), raw)
  })

  it('a fresh identity every start without a data directory', async () => {
    const a = await loadOrCreatePrivateKey('', log)
    const b = await loadOrCreatePrivateKey('', log)
    assert.notEqual(peerIdFromPrivateKey(a).toString(), peerIdFromPrivateKey(b).toString())
  })

  it('refuses other PEM types, other algorithms and garbage, naming the file', () => {
    const file = '/data/private.key'
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const cases = [
      ec.privateKey.export({ type: 'sec1', format: 'pem' }).toString(),
      ec.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n',
      'not a key'
    ]
    for (const pem of cases) {
      assert.throws(() => parseEd25519Pem(pem, file), (err: Error) => err.name === 'ConfigError' && err.message.includes(file))
    }
  })
})

describe('router pre-shared key file', () => {
  it('generates a PSK v1 file that reads back', async (t) => {
    const file = path.join(await tempDir(t), 'psk')
    await generatePskFile(file)
    assert.equal((await stat(file)).mode & 0o777, 0o600)
    const text = await readFile(file, 'utf8')
    assert.match(text, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
    assert.equal(new TextDecoder().decode(await readPskFile(file)), text.trimEnd())
    await assert.rejects(generatePskFile(file), { code: 'EEXIST' })
  })

  it('rejects missing and malformed files, naming the file and the flag', async (t) => {
    const dir = await tempDir(t)
    const bad = {
      header: `/key/swarm/psk/2.0.0/\n/base16/\n${'a'.repeat(64)}\n`,
      encoding: `/key/swarm/psk/1.0.0/\n/base64/\n${'a'.repeat(64)}\n`,
      short: '/key/swarm/psk/1.0.0/\n/base16/\nabcd\n',
      trailing: `/key/swarm/psk/1.0.0/\n/base16/\n${'a'.repeat(64)}\nmore\n`
    }
    for (const [name, body] of Object.entries(bad)) {
      const file = path.join(dir, name)
      await writeFile(file, body)
      await assert.rejects(readPskFile(file), (err: Error) => err.name === 'ConfigError' && err.message.includes(file) && err.message.includes('--router-secret-path'))
    }
    await assert.rejects(readPskFile(path.join(dir, 'missing')), /cannot be read/)
  })
})
