import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { parse } from 'smol-toml'
import { existingHosts, marshalGoToml, tableHeaderKeys } from './index.js'

// Spegel's TestExistingHosts input: header tables, a bare [host], a header declared before its
// host, nested client arrays, a string where others use arrays, override_path.
const TOML_HOSTS = `server = "https://registry-1.docker.io"
[host."https://mirror.registry"]
  capabilities = ["pull"]
  ca = "/etc/certs/mirror.pem"
  skip_verify = false
  [host."https://mirror.registry".header]
    x-custom-2 = ["value1", "value2"]

[host]

[host."https://mirror-bak.registry/us"]
  capabilities = ["pull"]
  skip_verify = true

[host."http://mirror.registry"]
  capabilities = ["pull"]

[host."https://test-3.registry"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://test-2.registry".header]
  x-custom-2 = ["foo"]

[host."https://test-1.registry"]
  capabilities = ["pull", "resolve", "push"]
  ca = ["/etc/certs/test-1-ca.pem", "/etc/certs/special.pem"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["/etc/certs/client.pem", ""]]

[host."https://test-2.registry"]
  client = "/etc/certs/client.pem"

[host."https://non-compliant-mirror.registry/v2/upstream"]
  capabilities = ["pull"]
  override_path = true`

const EXPECTED = `[host.'https://mirror.registry']
ca = '/etc/certs/mirror.pem'
capabilities = ['pull']
skip_verify = false

[host.'https://mirror.registry'.header]
x-custom-2 = ['value1', 'value2']

[host.'https://mirror-bak.registry/us']
capabilities = ['pull']
skip_verify = true

[host.'http://mirror.registry']
capabilities = ['pull']

[host.'https://test-3.registry']
client = ['/etc/certs/client-1.pem', '/etc/certs/client-2.pem']

[host.'https://test-1.registry']
ca = ['/etc/certs/test-1-ca.pem', '/etc/certs/special.pem']
capabilities = ['pull', 'resolve', 'push']
client = [['/etc/certs/client.cert', '/etc/certs/client.key'], ['/etc/certs/client.pem', '']]

[host.'https://test-2.registry']
client = '/etc/certs/client.pem'

[host.'https://test-2.registry'.header]
x-custom-2 = ['foo']

[host.'https://non-compliant-mirror.registry/v2/upstream']
capabilities = ['pull']
override_path = true`

describe('existingHosts (Spegel\'s TestExistingHosts)', () => {
  let configPath: string
  before(async () => { configPath = await fs.mkdtemp(path.join(os.tmpdir(), 'existing-hosts-')) })
  after(async () => { await fs.rm(configPath, { recursive: true, force: true }) })

  const write = async (dir: string, text: string): Promise<void> => {
    await fs.mkdir(path.join(configPath, '_backup', dir), { recursive: true })
    await fs.writeFile(path.join(configPath, '_backup', dir, 'hosts.toml'), text)
  }

  it('is empty when there is no backed-up file', async () => {
    assert.equal(await existingHosts(configPath, 'ghcr.io'), '')
  })

  it('re-serialises every entry byte for byte, in header order', async () => {
    await write('ghcr.io', TOML_HOSTS)
    assert.equal(await existingHosts(configPath, 'ghcr.io'), EXPECTED)
  })

  it('is empty for a file without host entries', async () => {
    await write('only-server.example', 'server = "https://only-server.example"\n')
    assert.equal(await existingHosts(configPath, 'only-server.example'), '')
    await write('empty-host.example', 'server = "https://x"\n[host]\n')
    assert.equal(await existingHosts(configPath, 'empty-host.example'), '')
  })

  it('rejects a file containerd would reject', async () => {
    await write('bad-caps.example', '[host."http://a:1"]\ncapabilities = "pull"\n')
    await assert.rejects(existingHosts(configPath, 'bad-caps.example'), /containerd would reject it: .*capabilities/)
  })
})

describe('tableHeaderKeys', () => {
  it('lists [table] headers in order, decoded, and skips [[arrays]], strings and nested arrays', () => {
    const text = `title = "[not.a.header]"
multi = """
[also.not]
"""
lit = '''
[nor.this]'''
arr = [
  [1, 2],
  ["x]", 'y]'],
]
[a]
  [ a . "b.c" . 'd' ] # comment [x]
[[arr.of.tables]]
[host."http://h\\u0041:1"]
`
    assert.deepEqual(tableHeaderKeys(text), [['a'], ['a', 'b.c', 'd'], ['host', 'http://hA:1']])
  })
})

describe('marshalGoToml', () => {
  const roundTrip = (toml: string): string => marshalGoToml(parse(toml, { integersAsBigInt: true }))

  it('sorts keys, puts values before tables and separates tables as go-toml does', () => {
    assert.equal(roundTrip('z = 1\na = "x"\n[t.b]\nk = true\n[t.a]\n[u]\nv = 1.5\n'), `a = 'x'
z = 1

[t]
[t.a]

[t.b]
k = true

[u]
v = 1.5
`)
  })

  it('quotes strings and keys only when it must', () => {
    assert.equal(roundTrip(`"it's" = "it's"\n"a b" = "tab\\there"\nnl = "a\\nb"\nctl = "\\u0001\\\\"\n`),
      `'a b' = 'tab\there'\nctl = "\\u0001\\\\"\n"it's" = "it's"\nnl = "a\\nb"\n`)
  })

  it('writes integers, floats, tables inside arrays inline, and arrays of tables', () => {
    // go-toml does not remember that a table was inline: a table value becomes a [section].
    assert.equal(roundTrip('i = 42\nf = 3.0\ng = 1e-7\nh = -0.0\nn = nan\nin = inf\nm = [1, { b = 1, a = [1, 2] }]\nt = { b = 1 }\n[[x]]\nk = 1\n[[x]]\nk = 2\n'),
      `f = 3.0
g = 0.0000001
h = -0.0
i = 42
in = inf
m = [1, {a = [1, 2], b = 1}]
n = nan

[t]
b = 1

[[x]]
k = 1

[[x]]
k = 2
`)
  })
})
