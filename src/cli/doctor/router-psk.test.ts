import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { generatePskFile } from '../../routing/p2p/psk.js'
import { routerPskCheck } from './router-psk.js'

describe('routerPskCheck', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(path.join(os.tmpdir(), 'router-psk-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('warns when the router has no key, with how to make one', async () => {
    const check = await routerPskCheck('')
    assert.equal(check.id, 'router-psk')
    assert.equal(check.status, 'warn')
    assert.match(check.fix ?? '', /openssl rand -hex 32/)
  })

  it('passes a key file the registry accepts', async () => {
    const file = path.join(dir, 'good.psk')
    await generatePskFile(file)
    assert.equal((await routerPskCheck(file)).status, 'pass')
  })

  it('fails a file the registry would refuse, naming the file and the reason once', async () => {
    const cases: Array<[string, string, RegExp]> = [
      ['header.psk', '/key/swarm/psk/2.0.0/\n/base16/\n' + 'a'.repeat(64) + '\n', /does not start with/],
      ['base64.psk', '/key/swarm/psk/1.0.0/\n/base64/\n' + 'a'.repeat(64) + '\n', /encoding/],
      ['short.psk', '/key/swarm/psk/1.0.0/\n/base16/\nabcd\n', /64-digit hex key/]
    ]
    for (const [name, content, why] of cases) {
      const file = path.join(dir, name)
      await writeFile(file, content)
      const check = await routerPskCheck(file)
      assert.equal(check.status, 'fail', name)
      assert.match(check.detail, why)
      assert.ok(check.detail.includes(file))
      assert.ok(!check.detail.includes('; point --router-secret-path'), 'the fix is not repeated in the detail')
      assert.match(check.fix ?? '', /^point --router-secret-path/)
    }
    const missing = await routerPskCheck(path.join(dir, 'missing.psk'))
    assert.equal(missing.status, 'fail')
    assert.match(missing.detail, /cannot be read/)
  })
})
