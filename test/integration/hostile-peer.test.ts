/**
 * A hostile peer against honest nodes: it forges other nodes' deltas, records and goodbyes, relays
 * tampered bytes, claims registry addresses that are not its own, sends oversized, truncated and
 * unsigned frames, and opens streams it never reads. Every attempt is refused or bounded, the
 * honest nodes keep sharing their index (and, with real containerd, keep serving pulls), and the
 * refusals are counted by reason. Without the cluster's pre-shared key it cannot connect at all.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLogger } from '../../src/observability/logger.js'
import { staticBootstrapper } from '../../src/routing/bootstrap/static.js'
import { collect } from '../../src/routing/conformance.js'
import {
  FrameType, StatementKind, compactKey, encodeDeltaFrame, encodeDeltaPayload, encodeGoodbyeFrame, encodePullRequest, encodeRecordGone
} from '../../src/routing/p2p/codec.js'
import {
  MAX_CONTROL_FRAME_BYTES, MAX_FRAME_BYTES, MAX_INDEX_RECORDS, MAX_PULLS_SERVED_PER_PEER, MAX_PULL_REPLY_RECORDS, MAX_RECORD_KEYS,
  PULL_MIN_INTERVAL_MS, PULL_PROTOCOL, PUSH_PROTOCOL, RETRY_WANTED_INTERVAL_MS
} from '../../src/routing/p2p/constants.js'
import { createP2PRouter, generatePskFile, type P2PRouter, type P2PRouterInit } from '../../src/routing/p2p/index.js'
import { LIMITS, type LimitName, type RefusalReason } from '../../src/routing/p2p/record-auth.js'
import { pinTag } from '../../src/routing/tag-key.js'
import { containerdAvailable } from '../helpers/containerd.js'
import { lookupPeers, startCluster, type Cluster, type ClusterNode } from '../helpers/cluster.js'
import { HostilePeer, mintIdentities, varint, type MintedIdentity } from '../helpers/hostile-peer.js'
import { buildImage, type BuiltImage } from '../helpers/image.js'
import { freePort, httpRequest } from '../helpers/net.js'
import { waitFor } from '../helpers/wait.js'

const log = createLogger({ level: (process.env.ROUTER_TEST_LOG_LEVEL ?? 'silent') as 'silent' })
/** Heartbeats often, expiry and periodic pulls far off: what happens within a deadline is the attack's doing. */
const LIVENESS = { heartbeatIntervalMs: 500, expiryMs: 120_000, pullIntervalMs: 120_000 }
const DEADLINE_MS = 20_000

const digest = (): string => `sha256:${randomBytes(32).toString('hex')}`
const ids = async (router: P2PRouter, key: string): Promise<string[]> => (await collect(router, key)).map((p) => p.id).sort()
const refused = (router: P2PRouter, reason: RefusalReason): number => router.status().refused[reason]
const limited = (router: P2PRouter, limit: LimitName): number => router.status().limited[limit]
/** JS heap plus buffers outside it: what a flood of frames or stalled streams would grow. */
const memoryBytes = (): number => { const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers }
const mib = (bytes: number): string => (bytes / 1024 / 1024).toFixed(1)
const hostOf = (router: P2PRouter): string => /^\/ip4\/([^/]+)/.exec(router.multiaddrs()[0] ?? '')?.[1] ?? ''
const portOf = (router: P2PRouter): string => /\/tcp\/(\d+)/.exec(router.multiaddrs()[0] ?? '')?.[1] ?? ''

async function startRouter (host: string, peers: string[], init: Partial<P2PRouterInit> = {}): Promise<P2PRouter> {
  const router = await createP2PRouter({ log }, {
    listen: { host, port: 0 }, dataDir: '', secretPath: '', registryAddress: `${host}:5000`, bootstrapper: staticBootstrapper(peers), ...LIVENESS, ...init
  })
  await router.start()
  return router
}

/** Waits until `counter()` exceeds `before`; returns the new value. */
async function waitMore (counter: () => number, before: number, what: string, timeoutMs = DEADLINE_MS): Promise<number> {
  return await waitFor(() => { const n = counter(); return n > before ? n : undefined }, { timeoutMs, what })
}

describe('a hostile peer against in-process routers (no pre-shared key)', () => {
  let a: P2PRouter, b: P2PRouter, c: P2PRouter
  let h: HostilePeer
  const hHost = '127.0.1.9'
  let dropFromB = false
  let ghostIdentities: MintedIdentity[] = []
  const legitKey = digest()
  const legitRecord = (): Parameters<HostilePeer['recordFrame']>[3] => ({ registryAddress: `${hHost}:5000`, addrs: h.addrs(), keys: [legitKey] })

  before(async () => {
    a = await startRouter('127.0.1.1', [])
    b = await startRouter('127.0.1.2', a.multiaddrs())
    // While dropFromB is set, c takes b's deltas only from the hostile peer, and no news of b's
    // version (heartbeats, Have) that would make it pull: a tampered relay reaches it first.
    c = await startRouter('127.0.1.3', [...a.multiaddrs(), ...b.multiaddrs()], {
      hooks: {
        dropInbound: (m, from) => dropFromB && (m.type === FrameType.Heartbeat || m.type === FrameType.Have ||
          (m.type === FrameType.Delta && m.statement.origin === b.peerId && from !== h.peerId))
      }
    })
    h = await HostilePeer.start({ host: hHost })
    h.seq = 1
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, legitRecord())]
    // It joins as a node does: connects, then announces its version (the nodes pull its record).
    for (const r of [a, c]) {
      await h.dial(r.multiaddrs()[0]!)
      await h.heartbeat(r.peerId)
    }
    // Its own record at its own address is a member's like any other: proven by a connection and offered.
    await waitFor(async () => (await Promise.all([a, b, c].map(async (r) => (await ids(r, legitKey)).includes(h.peerId)))).every(Boolean),
      { timeoutMs: DEADLINE_MS, what: 'every honest node to offer the hostile peer\'s own key' })
  })
  after(async () => {
    await Promise.allSettled([a, b, c].map(async (r) => { await r?.stop() }))
    await h?.stop()
  })

  it('refuses a delta forged for another node', async () => {
    const key = digest()
    const { epoch, seq } = b.version()
    const payload = encodeDeltaPayload({ removes: [], adds: [compactKey(key)], tagDigests: undefined, recordSignature: new Uint8Array(64) })
    const before = refused(a, 'bad-signature')
    await h.push(a.peerId, [encodeDeltaFrame(h.sign(StatementKind.Delta, b.peerId, epoch, seq + 1, payload).bytes)])
    await waitMore(() => refused(a, 'bad-signature'), before, 'a to refuse the forged delta')
    assert.deepEqual(await ids(a, key), [])
    assert.deepEqual(a.knownVersion(b.peerId), { epoch, seq })
  })

  it('refuses tampered relayed bytes, and takes the untouched bytes from the same relay', async () => {
    // A pull c already owes (folded into the next one of its peer's interval) could bring b's change.
    await waitFor(() => c.status().pullsInFlight === 0 && c.status().pullsDeferred === 0, { timeoutMs: DEADLINE_MS, what: 'c to finish the pulls it owes' })
    dropFromB = true
    try {
      const key = digest()
      const seen = h.deltasOf(b.peerId).length
      b.advertise([key])
      await waitFor(() => h.deltasOf(b.peerId).length > seen, { timeoutMs: DEADLINE_MS, what: 'the hostile peer to receive b\'s delta through a' })
      const genuine = h.deltasOf(b.peerId).at(-1)!
      const tampered = Buffer.from(genuine)
      const at = tampered.indexOf(Buffer.from(key.slice(7), 'hex'))
      assert.ok(at > 0, 'the key is in the frame')
      tampered[at] = (tampered[at] ?? 0) ^ 0xff
      const before = refused(c, 'bad-signature')
      await h.push(c.peerId, [tampered])
      await waitMore(() => refused(c, 'bad-signature'), before, 'c to refuse the tampered relay')
      assert.deepEqual(await ids(c, key), [])
      await h.push(c.peerId, [genuine])
      await waitFor(async () => (await ids(c, key)).includes(b.peerId), { timeoutMs: DEADLINE_MS, what: 'c to apply the genuine bytes' })
    } finally {
      dropFromB = false
    }
  })

  it('refuses a goodbye forged for a live node', async () => {
    const key = digest()
    b.advertise([key])
    await waitFor(async () => (await ids(a, key)).includes(b.peerId), { timeoutMs: DEADLINE_MS, what: 'a to find b\'s key' })
    const before = refused(a, 'bad-signature') + refused(c, 'bad-signature')
    const goodbye = encodeGoodbyeFrame(h.sign(StatementKind.Goodbye, b.peerId, b.version().epoch, b.version().seq, new Uint8Array(0)).bytes)
    await h.push(a.peerId, [goodbye])
    await h.push(c.peerId, [goodbye])
    await waitFor(() => refused(a, 'bad-signature') + refused(c, 'bad-signature') >= before + 2, { timeoutMs: DEADLINE_MS, what: 'a and c to refuse the forged goodbye' })
    assert.ok(a.origins().includes(b.peerId) && c.origins().includes(b.peerId))
    assert.deepEqual(await ids(a, key), [b.peerId])
    assert.equal(a.status().counters.goodbyes, 0)
  })

  it('refuses a record forged for another node in a pull answer, and a heartbeat speaking for another node', async () => {
    const key = digest()
    const { epoch, seq } = b.version()
    h.pullAnswer = () => [h.recordFrame(b.peerId, epoch, seq + 5, { registryAddress: `${hHost}:5000`, addrs: h.addrs(), keys: [key] })]
    const before = refused(a, 'bad-signature')
    // Hearsay of a newer version of b makes a pull from the hostile peer, whose answer is checked.
    await h.heartbeat(a.peerId, [{ origin: b.peerId, epoch, seq: seq + 5, ageMs: 0 }])
    await waitMore(() => refused(a, 'bad-signature'), before, 'a to refuse the forged record')
    assert.deepEqual(await ids(a, key), [])
    assert.equal(a.knownVersion(b.peerId)?.seq, b.version().seq)
    assert.deepEqual((await collect(a, legitKey)).find((p) => p.id === b.peerId), undefined)

    const wrong = refused(a, 'wrong-sender')
    await h.heartbeat(a.peerId, [], b.peerId)
    await waitMore(() => refused(a, 'wrong-sender'), wrong, 'a to refuse a heartbeat for b from the hostile peer')
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, legitRecord())]
  })

  it('does not move its epoch for hearsay about itself', async () => {
    const epoch = a.version().epoch
    const pulls = h.pullsAnswered
    await h.heartbeat(a.peerId, [{ origin: a.peerId, epoch: 2 ** 53 - 2, seq: 1, ageMs: 0 }])
    // The hearsay only makes a pull; nothing in it is signed by a, so nothing moves.
    await waitMore(() => h.pullsAnswered, pulls, 'a to pull from the hostile peer')
    assert.equal(a.version().epoch, epoch)
    const key = digest()
    a.advertise([key])
    await waitFor(async () => (await ids(b, key)).includes(a.peerId), { timeoutMs: DEADLINE_MS, what: 'a\'s changes to keep flowing' })
  })

  it('refuses its own records that point the registry anywhere but itself', async () => {
    const cases: Array<{ what: string, registryAddress: string, addrs: () => string[] }> = [
      { what: 'a hostname', registryAddress: 'evil.example:5000', addrs: () => h.addrs() },
      { what: 'the metadata service', registryAddress: '169.254.169.254:80', addrs: () => ['/ip4/169.254.169.254/tcp/80'] },
      { what: 'a URL with a path', registryAddress: `http://${hHost}:5000/v2/`, addrs: () => h.addrs() },
      { what: 'a path', registryAddress: `${hHost}:5000/v2`, addrs: () => h.addrs() },
      { what: 'an IP it does not announce', registryAddress: `${hostOf(b)}:5000`, addrs: () => h.addrs() }
    ]
    for (const c of cases) {
      const key = digest()
      h.seq++
      h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, { registryAddress: c.registryAddress, addrs: c.addrs(), keys: [key] })]
      const before = refused(a, 'bad-address')
      await h.heartbeat(a.peerId)
      await waitMore(() => refused(a, 'bad-address'), before, `a to refuse ${c.what}`)
      assert.deepEqual(await ids(a, key), [], c.what)
    }
    assert.ok((await ids(a, legitKey)).includes(h.peerId), 'the last good record stays')

    // Another node's IP, announced as its own: kept (it is signed), never offered, since the
    // hostile peer cannot be reached as itself there.
    const key = digest()
    h.seq++
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, { registryAddress: `${hostOf(b)}:5000`, addrs: [`/ip4/${hostOf(b)}/tcp/${portOf(b)}`], keys: [key] })]
    const before = refused(a, 'unverified-address')
    await h.heartbeat(a.peerId)
    await waitFor(() => a.knownVersion(h.peerId)?.seq === h.seq, { timeoutMs: DEADLINE_MS, what: 'a to store the record' })
    assert.deepEqual(await ids(a, key), [])
    assert.equal(a.peers().find((p) => p.id === h.peerId)?.isAddressProven, false)
    await waitMore(() => refused(a, 'unverified-address'), before, 'a to give up proving the address', 40_000)
    assert.deepEqual(await ids(a, key), [])

    // Back at its own address, it is offered again.
    h.seq++
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, legitRecord())]
    await h.heartbeat(a.peerId)
    await waitFor(async () => (await ids(a, legitKey)).includes(h.peerId), { timeoutMs: DEADLINE_MS, what: 'a to offer the hostile peer at its own address again' })
  })

  it('refuses oversized, truncated and unsigned frames', async () => {
    const oversized = refused(a, 'oversized')
    await h.pushRaw(a.peerId, Uint8Array.from([...varint(MAX_FRAME_BYTES + 1), 1, 2, 3]))
    await waitMore(() => refused(a, 'oversized'), oversized, 'a to refuse an oversized frame')

    const malformed = refused(a, 'malformed')
    const genuine = h.deltasOf(b.peerId).at(-1)!
    await h.push(a.peerId, [genuine.subarray(0, Math.floor(genuine.length / 2)), Uint8Array.of(99, 1, 2)])
    await waitFor(() => refused(a, 'malformed') >= malformed + 2, { timeoutMs: DEADLINE_MS, what: 'a to refuse a truncated frame and an unknown one' })

    const unsigned = refused(a, 'unsigned')
    await h.pushRaw(a.peerId, Uint8Array.of(3, 3, 1, 111), '/spegel-ts/index/delta/1').catch(() => undefined)
    await waitMore(() => refused(a, 'unsigned'), unsigned, 'a to refuse the unsigned protocol')

    // A push frame just over its limit, sent whole: refused at the length prefix, nothing buffered.
    const pushOversized = refused(a, 'oversized')
    await h.push(a.peerId, [new Uint8Array(MAX_CONTROL_FRAME_BYTES + 1)]).catch(() => undefined)
    await waitMore(() => refused(a, 'oversized'), pushOversized, 'a to refuse a push frame over its limit')

    // A pull request over its limit, and pull answers that are oversized or truncated.
    const requestOversized = refused(a, 'oversized')
    await h.pushRaw(a.peerId, Uint8Array.from(varint(MAX_CONTROL_FRAME_BYTES + 1)), PULL_PROTOCOL)
    await waitMore(() => refused(a, 'oversized'), requestOversized, 'a to refuse a pull request over its limit')
    const answerOversized = refused(a, 'oversized')
    h.pullAnswerRaw = () => Uint8Array.from(varint(MAX_FRAME_BYTES + 1))
    h.seq++
    await h.heartbeat(a.peerId)
    await waitMore(() => refused(a, 'oversized'), answerOversized, 'a to refuse a pull answer frame over its limit')
    h.pullAnswerRaw = undefined
    const answerTruncated = refused(a, 'malformed')
    const record = h.recordFrame(h.peerId, h.epoch, h.seq, legitRecord())
    h.pullAnswer = () => [record.subarray(0, record.byteLength - 10)]
    await h.heartbeat(a.peerId)
    await waitMore(() => refused(a, 'malformed'), answerTruncated, 'a to refuse a truncated pull answer frame')
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, legitRecord())]
    await h.heartbeat(a.peerId)
    await waitFor(() => a.knownVersion(h.peerId)?.seq === h.seq, { timeoutMs: DEADLINE_MS, what: 'a to take the hostile peer\'s good record again' })
  })

  it('does not relay a flood of deltas for unknown origins, bounds what it keeps of them, and pulls once per interval', async (t) => {
    // Identities are free: each of these signs its own delta, genuinely.
    const ghosts = await mintIdentities(MAX_INDEX_RECORDS + 50)
    const payload = encodeDeltaPayload({ removes: [], adds: [compactKey(digest())], tagDigests: undefined, recordSignature: new Uint8Array(64) })
    const flood = ghosts.map((g) => encodeDeltaFrame(g.sign(StatementKind.Delta, 1, 5, payload).bytes))
    // The last frame is a forgery: once a refuses it, a has looked at every frame before it.
    const { epoch, seq } = b.version()
    const marker = encodeDeltaFrame(h.sign(StatementKind.Delta, b.peerId, epoch, seq + 1, payload).bytes)
    const gaps = { b: b.status().counters.gaps, c: c.status().counters.gaps }
    const pulls = h.pullsAnswered
    const badSignature = refused(a, 'bad-signature')
    const memoryBefore = memoryBytes()
    const startedMs = Date.now()
    await h.push(a.peerId, [...flood, marker])
    await waitMore(() => refused(a, 'bad-signature'), badSignature, 'a to go through the whole flood', 60_000)
    const elapsedMs = Date.now() - startedMs
    t.diagnostic(`${flood.length} deltas of unknown origins: ${elapsedMs} ms, heap+buffers ${mib(memoryBefore)} -> ${mib(memoryBytes())} MiB, pulls from the sender ${h.pullsAnswered - pulls}, limits ${JSON.stringify(a.status().limited)}`)

    assert.ok(limited(a, 'unknown-origins') > 0, 'what a keeps of unknown origins stops at its bound')
    assert.equal(a.status().records, 3, 'no record came of it')
    // One pull per interval from the sender, however many frames asked for one (plus the
    // retries of versions still wanted, one per retry interval).
    const bound = 1 + Math.ceil(elapsedMs / PULL_MIN_INTERVAL_MS) + Math.ceil(elapsedMs / RETRY_WANTED_INTERVAL_MS)
    assert.ok(h.pullsAnswered - pulls <= bound, `${h.pullsAnswered - pulls} pulls for ${flood.length} frames (bound ${bound})`)
    // Nothing was relayed: a change of a's, queued after anything a could have passed on, reaches
    // b and c, and neither saw a single gap meanwhile.
    const key = digest()
    a.advertise([key])
    await waitFor(async () => (await ids(b, key)).includes(a.peerId) && (await ids(c, key)).includes(a.peerId), { timeoutMs: DEADLINE_MS, what: 'a\'s change to reach b and c' })
    assert.deepEqual({ b: b.status().counters.gaps, c: c.status().counters.gaps }, gaps)
    assert.equal(limited(b, 'unknown-origins') + limited(c, 'unknown-origins'), 0)
    ghostIdentities = ghosts
  })

  it('refuses a record with too many keys and a pull answer with too many records', async (t) => {
    h.seq++
    const keys = Array.from({ length: MAX_RECORD_KEYS + 1 }, digest)
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, { registryAddress: `${hHost}:5000`, addrs: h.addrs(), keys })]
    const recordKeys = limited(a, 'record-keys')
    await h.heartbeat(a.peerId)
    await waitMore(() => limited(a, 'record-keys'), recordKeys, 'a to refuse a record over the key limit')
    assert.notEqual(a.knownVersion(h.peerId)?.seq, h.seq)
    assert.ok((await ids(a, legitKey)).includes(h.peerId), 'the last good record stays')
    assert.deepEqual(await ids(a, keys[0]!), [])

    // Goodbyes of made-up origins, more than an answer may carry: the first ones are looked at,
    // the rest is not read.
    const ghosts = ghostIdentities.slice(0, MAX_PULL_REPLY_RECORDS + 20)
    h.seq++
    h.pullAnswer = () => ghosts.map((g) => encodeRecordGone(g.sign(StatementKind.Goodbye, 1, 0, new Uint8Array(0)).bytes))
    const replyRecords = limited(a, 'pull-reply-records')
    await h.heartbeat(a.peerId)
    await waitMore(() => limited(a, 'pull-reply-records'), replyRecords, 'a to stop reading an answer with too many records')
    assert.equal(a.status().counters.goodbyes, 0, 'goodbyes of origins a never held are not news')
    t.diagnostic(`limits on a: ${JSON.stringify(a.status().limited)}`)

    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, legitRecord())]
    await h.heartbeat(a.peerId)
    await waitFor(() => a.knownVersion(h.peerId)?.seq === h.seq, { timeoutMs: DEADLINE_MS, what: 'a to take the hostile peer\'s good record again' })
  })

  it('answers a pull that brings nothing new in one muxer message, not two per record', async (t) => {
    // The requester holds what a holds: every answer frame is a "same" (idle anti-entropy).
    const versions = [{ origin: a.peerId, ...a.version() }]
    for (const origin of a.origins()) {
      const v = a.knownVersion(origin)
      if (v !== undefined) versions.push({ origin, ...v })
    }
    const { frames, framesWithEnd, messages } = await h.pullCounted(a.peerId, versions)
    t.diagnostic(`${framesWithEnd} frames (${versions.length} versions asked) in ${messages} muxer message(s)`)
    assert.ok(frames.length >= 3, `${frames.length} frames`)
    assert.ok(frames.every((f) => f.type === FrameType.RecordSame), 'nothing new, so only "same" frames')
    // Each frame and its length prefix used to be a send of its own: two messages a frame, each
    // with a noise message and a window update back.
    assert.ok(messages < framesWithEnd, `${messages} muxer messages for ${framesWithEnd} frames`)
  })

  it('answers pulls frame by frame: pulls never read hold little, are cut, and do not stall other peers\' pulls', async (t) => {
    // Something worth answering, larger than the window a muxer grants a stream before its reader
    // takes anything: b and c advertise 40,000 keys each (records of about 1.3 MB).
    b.advertise(Array.from({ length: 40_000 }, digest))
    c.advertise(Array.from({ length: 40_000 }, digest))
    await waitFor(() => a.knownVersion(b.peerId)?.seq === b.version().seq && a.knownVersion(c.peerId)?.seq === c.version().seq,
      { timeoutMs: DEADLINE_MS, what: 'a to pull b\'s and c\'s large records' })
    const others = await Promise.all([1, 2, 3].map(async (i) => await HostilePeer.start({ host: `127.0.1.${20 + i}` })))
    t.after(async () => { await Promise.allSettled(others.map(async (o) => { await o.stop() })) })
    const attackers = [h, ...others]
    for (const o of others) await o.dial(a.multiaddrs()[0]!)

    const before = { peer: limited(a, 'pulls-served-peer'), stalled: limited(a, 'pull-stalled'), served: a.status().counters.syncsServed }
    const memoryBefore = memoryBytes()
    // Each asks for everything (an empty version vector) and never takes a byte of the answer.
    const attempts = attackers.length * (MAX_PULLS_SERVED_PER_PEER + 2)
    for (const x of attackers) {
      for (let i = 0; i < MAX_PULLS_SERVED_PER_PEER + 2; i++) {
        // a may have reset the stream (refused) before the attacker pauses it.
        await x.openIdle(a.peerId, PULL_PROTOCOL, encodePullRequest([])).catch(() => undefined)
      }
    }
    await waitFor(() => a.status().pullsServing >= attackers.length * MAX_PULLS_SERVED_PER_PEER && limited(a, 'pulls-served-peer') > before.peer,
      { timeoutMs: DEADLINE_MS, what: 'a to answer two pulls per attacker and refuse the rest' })
    const memoryStalled = memoryBytes()

    // Meanwhile another peer pulls from a and gets everything, and changes still flow.
    const honest = await HostilePeer.start({ host: '127.0.1.30' })
    t.after(async () => { await honest.stop() })
    await honest.dial(a.multiaddrs()[0]!)
    const answer = await honest.pull(a.peerId)
    const bRecord = answer.find((f) => f.type === FrameType.Record && f.statement.origin === b.peerId)
    assert.ok(bRecord !== undefined, 'the other peer got b\'s record from a')
    assert.ok(a.status().pullsServing >= attackers.length * MAX_PULLS_SERVED_PER_PEER, 'while the stalled answers were still held')
    const key = digest()
    c.advertise([key])
    await waitFor(async () => (await ids(a, key)).includes(c.peerId), { timeoutMs: DEADLINE_MS, what: 'c\'s change to reach a' })

    // The stalled answers are cut, and their slots come back.
    await waitFor(() => a.status().pullsServing === 0 && limited(a, 'pull-stalled') >= before.stalled + attackers.length * MAX_PULLS_SERVED_PER_PEER,
      { timeoutMs: DEADLINE_MS, what: 'a to cut the answers nobody reads' })
    t.diagnostic(`${attempts} never-read pulls opened by ${attackers.length} peers against a holding ${a.status().keys} keys: ` +
      `${a.status().limited['pulls-served-peer'] - before.peer} refused, heap+buffers ${mib(memoryBefore)} -> ${mib(memoryStalled)} MiB while stalled (both ends in this process)`)
    assert.ok(memoryStalled - memoryBefore < 64 * 1024 * 1024, `stalled answers hold ${mib(memoryStalled - memoryBefore)} MiB`)
  })

  it('keeps working while streams are opened and never read', async () => {
    for (let i = 0; i < 16; i++) {
      // Beyond a few per connection, libp2p resets them (an honest peer needs one or two).
      await h.openIdle(a.peerId, PULL_PROTOCOL, Uint8Array.of(FrameType.PullRequest, 0)).catch(() => undefined)
      await h.openIdle(a.peerId, PUSH_PROTOCOL).catch(() => undefined)
    }
    const keys = [digest(), pinTag('example.com/team/app:1', digest())]
    b.advertise(keys)
    await waitFor(async () => (await ids(a, keys[0]!)).includes(b.peerId) && (await ids(c, 'example.com/team/app:1')).includes(b.peerId),
      { timeoutMs: DEADLINE_MS, what: 'b\'s change to reach a and c' })
    assert.deepEqual(await collect(c, 'example.com/team/app:1'), [{ id: b.peerId, registryAddress: `${hostOf(b)}:5000`, digest: keys[1]!.split('@')[1] }])
    // Nothing the hostile peer did changed what honest nodes say about each other.
    for (const r of [a, c]) assert.deepEqual((await collect(r, keys[0]!)), [{ id: b.peerId, registryAddress: `${hostOf(b)}:5000` }])
    for (const reason of ['bad-signature', 'wrong-sender', 'bad-address', 'unverified-address', 'oversized', 'malformed', 'unsigned'] as const) {
      assert.ok(refused(a, reason) + refused(c, reason) >= 1, reason)
    }
    assert.equal(refused(b, 'bad-signature'), 0, 'b never heard of the forgeries: nothing forged was relayed')
  })
})

describe('a hostile peer against routers with a pre-shared key', () => {
  it('cannot connect without the key; with it, its forgeries are refused like any member\'s', async (t) => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'spegel-hostile-'))
    t.after(async () => { await fs.rm(dir, { recursive: true, force: true }) })
    const psk = path.join(dir, 'cluster.key')
    await generatePskFile(psk)
    const a = await startRouter('127.0.2.1', [], { secretPath: psk })
    const b = await startRouter('127.0.2.2', a.multiaddrs(), { secretPath: psk })
    const outsider = await HostilePeer.start({ host: '127.0.2.8' })
    const insider = await HostilePeer.start({ host: '127.0.2.9', secretPath: psk })
    t.after(async () => { await Promise.allSettled([a.stop(), b.stop(), outsider.stop(), insider.stop()]) })
    await waitFor(() => a.origins().includes(b.peerId) && b.origins().includes(a.peerId), { timeoutMs: DEADLINE_MS, what: 'a and b to know each other' })

    await assert.rejects(outsider.dial(a.multiaddrs()[0]!))
    assert.equal(outsider.node.peers().length, 0)
    assert.ok(!a.peers().some((p) => p.id === outsider.peerId))

    await insider.dial(a.multiaddrs()[0]!)
    const before = refused(a, 'bad-signature')
    await insider.push(a.peerId, [encodeGoodbyeFrame(insider.sign(StatementKind.Goodbye, b.peerId, b.version().epoch, 0, new Uint8Array(0)).bytes)])
    await waitMore(() => refused(a, 'bad-signature'), before, 'a to refuse the insider\'s forged goodbye')
    assert.ok(a.origins().includes(b.peerId))

    // A member flooding deltas of made-up origins: a keeps them to itself.
    const ghosts = await mintIdentities(200)
    const payload = encodeDeltaPayload({ removes: [], adds: [compactKey(digest())], tagDigests: undefined, recordSignature: new Uint8Array(64) })
    const gaps = b.status().counters.gaps
    const marker = refused(a, 'bad-signature')
    await insider.push(a.peerId, [
      ...ghosts.map((g) => encodeDeltaFrame(g.sign(StatementKind.Delta, 1, 3, payload).bytes)),
      encodeGoodbyeFrame(insider.sign(StatementKind.Goodbye, b.peerId, b.version().epoch, 1, new Uint8Array(0)).bytes)
    ])
    await waitMore(() => refused(a, 'bad-signature'), marker, 'a to go through the flood')
    const key = digest()
    a.advertise([key])
    await waitFor(async () => (await ids(b, key)).includes(a.peerId), { timeoutMs: DEADLINE_MS, what: 'a\'s change to reach b after the flood' })
    assert.equal(b.status().counters.gaps, gaps, 'nothing of the flood was relayed to b')
    assert.equal(a.status().records, 1)
  })
})

const skip = containerdAvailable() ? false : 'needs root and containerd (scripts/test-all.sh installs it)'

describe('a hostile peer inside a cluster of real nodes (pre-shared key, real containerd)', { skip }, () => {
  let dir: string
  let cluster: Cluster
  let image: BuiltImage
  let h: HostilePeer
  let liar: Server
  const liarRequests: string[] = []

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'spg-hostile-'))
    const psk = path.join(dir, 'swarm.key')
    await generatePskFile(psk)
    image = await buildImage(path.join(dir, 'img'), 'example.test/hostile/app:1.0', [4096, 64 * 1024])
    cluster = await startCluster(2, { nodeOptions: () => ({ extraArgs: ['--router-secret-path', psk] }) })
    for (const node of cluster.nodes) await node.spegel.waitReady(60_000)
    const n1 = cluster.nodes[0]!
    // The hostile peer lives beside the cluster, with the key, and runs a registry that lies.
    const hHost = n1.host.replace(/\.\d+$/, '.200')
    h = await HostilePeer.start({ host: hHost, secretPath: psk })
    const forged = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }))
    const forgedDigest = `sha256:${createHash('sha256').update(forged).digest('hex')}`
    const port = await freePort(hHost)
    liar = createServer((req, res) => {
      liarRequests.push(`${req.method ?? ''} ${req.url ?? ''}`)
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', 'content-length': forged.length, 'docker-content-digest': forgedDigest })
      res.end(req.method === 'HEAD' ? undefined : forged)
    })
    liar.listen(port, hHost)
    await once(liar, 'listening')
    await n1.containerd.importImage(image.archivePath!)
    await waitFor(async () => (await lookupPeers(cluster.nodes[1]!, image.top.digest)).includes(n1.peerId), { timeoutMs: DEADLINE_MS, what: 'node 2 to see node 1\'s image' })

    // It claims the tag at the digest node 1 names, and serves something else under it.
    h.seq = 1
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, {
      registryAddress: `${hHost}:${port}`,
      addrs: h.addrs(),
      keys: ['example.test/hostile/app:1.0', 'example.test/hostile/app:2.0', image.top.digest],
      pins: new Map([['example.test/hostile/app:1.0', image.top.digest], ['example.test/hostile/app:2.0', image.top.digest]])
    })]
    // It joins as a node does: connects, then announces its version (the nodes pull its record).
    for (const node of cluster.nodes) {
      await h.dial(`/ip4/${node.host}/tcp/${node.spegel.routerPort}/p2p/${node.peerId}`)
      await h.heartbeat(node.peerId)
    }
    await waitFor(async () => (await Promise.all(cluster.nodes.map(async (n) => (await lookupPeers(n, 'example.test/hostile/app:1.0')).includes(h.peerId)))).every(Boolean),
      { timeoutMs: DEADLINE_MS, what: 'both nodes to offer the hostile peer for the tag' })
  })
  after(async () => {
    await h?.stop()
    liar?.close()
    await cluster?.dispose()
    if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true })
  })

  it('refuses forged records, goodbyes and addresses, and the honest nodes keep serving real pulls', async () => {
    const [n1, n2] = cluster.nodes as [ClusterNode, ClusterNode]
    // What node 1 says about itself, learnt the way any member can.
    const own = (await h.pull(n1.peerId)).find((f) => f.type === FrameType.Record && f.statement.origin === n1.peerId)
    assert.ok(own !== undefined && own.type === FrameType.Record)
    const { epoch, seq } = own.statement
    const bad = randomBytes(32).toString('hex')
    const hostileAnswer = h.pullAnswer
    h.pullAnswer = () => [
      ...hostileAnswer(''),
      // Node 1's record, forged: its registry at the hostile peer, the tag at another digest.
      h.recordFrame(n1.peerId, epoch, seq + 10, { registryAddress: `${h.node.announcedAddrs()[0]?.split('/')[2] ?? ''}:5000`, addrs: h.addrs(), keys: ['example.test/hostile/app:1.0'], pins: new Map([['example.test/hostile/app:1.0', `sha256:${bad}`]]) })
    ]
    await h.heartbeat(n2.peerId, [{ origin: n1.peerId, epoch, seq: seq + 10, ageMs: 0 }])
    await h.push(n2.peerId, [encodeGoodbyeFrame(h.sign(StatementKind.Goodbye, n1.peerId, epoch, seq, new Uint8Array(0)).bytes)])
    await waitFor(async () => (await refusedOn(n2.spegel.metricsUrl, 'bad-signature')) >= 2, { timeoutMs: DEADLINE_MS, what: 'node 2 to count the forged record and goodbye' })

    // A tag only the lying registry claims: its answer is not the digest it signed, so node 2
    // refuses it and answers 404 (containerd would go upstream) instead of serving another image.
    const only = await httpRequest(`${n2.spegel.registryUrl}/v2/hostile/app/manifests/2.0?ns=example.test`, { method: 'HEAD' })
    assert.equal(only.status, 404)
    assert.ok(liarRequests.some((r) => r.includes('/manifests/2.0')), 'the lying registry was asked')
    await n2.spegel.waitForLog((l) => l.msg === 'peer answered a tag with another digest than its record names' && l.peer === h.peerId, 'the lie refused')
    // Where node 1 holds the tag too, every answer is node 1's, whichever holder is asked first.
    for (let i = 0; i < 5; i++) {
      const res = await httpRequest(`${n2.spegel.registryUrl}/v2/hostile/app/manifests/1.0?ns=example.test`, { method: 'HEAD' })
      assert.equal(res.status, 200)
      assert.equal(res.headers['docker-content-digest'], image.top.digest)
    }

    // Pulls through node 2 still work and bring the real image; the lying registry never wins.
    await n2.containerd.ctr(['images', 'pull', '--hosts-dir', n2.containerd.configPath, 'example.test/hostile/app:1.0'])
    const { stdout } = await n2.containerd.ctr(['images', 'ls', '-q'])
    assert.ok(stdout.includes('example.test/hostile/app:1.0'))
    const content = new Set((await n2.containerd.ctr(['content', 'ls', '-q'])).stdout.split('\n').map((l) => l.trim()))
    for (const d of image.allDigests()) assert.ok(content.has(d), `node 2 has ${d}`)
    assert.ok((await lookupPeers(n2, image.top.digest)).includes(n1.peerId), 'node 1 is still offered')

    // A record pointing at the metadata service is refused outright.
    h.seq++
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, { registryAddress: '169.254.169.254:80', addrs: ['/ip4/169.254.169.254/tcp/80'], keys: [digest()] })]
    await h.heartbeat(n1.peerId)
    await waitFor(async () => (await refusedOn(n1.spegel.metricsUrl, 'bad-address')) >= 1, { timeoutMs: DEADLINE_MS, what: 'node 1 to count the bad address' })
    const metrics = (await httpRequest(`${n2.spegel.metricsUrl}/metrics`, { method: 'GET' })).body.toString()
    for (const reason of ['malformed', 'oversized', 'unsigned', 'bad-signature', 'wrong-sender', 'bad-address', 'unverified-address']) {
      assert.match(metrics, new RegExp(`^spegel_router_frames_refused_total\\{reason="${reason}"\\} \\d+$`, 'm'), `the ${reason} series exists`)
    }
  })

  it('answers pulls that are never read with bounded memory, cuts them, keeps serving others, and counts it', async (t) => {
    const [n1, n2] = cluster.nodes as [ClusterNode, ClusterNode]
    // A record of its own large enough that an answer outgrows what a stream takes unread.
    const keys = Array.from({ length: 45_000 }, digest)
    h.seq++
    h.pullAnswer = () => [h.recordFrame(h.peerId, h.epoch, h.seq, { registryAddress: `${h.addrs()[0]?.split('/')[2] ?? ''}:5000`, addrs: h.addrs(), keys })]
    await h.heartbeat(n1.peerId)
    await waitFor(async () => (await lookupPeers(n1, keys[0]!)).includes(h.peerId), { timeoutMs: DEADLINE_MS, what: 'node 1 to hold the hostile peer\'s large record' })
    const rssBefore = await rssOn(n1.spegel.metricsUrl)
    const before = { peer: await limitedOn(n1.spegel.metricsUrl, 'pulls-served-peer'), stalled: await limitedOn(n1.spegel.metricsUrl, 'pull-stalled') }
    for (let i = 0; i < MAX_PULLS_SERVED_PER_PEER + 2; i++) await h.openIdle(n1.peerId, PULL_PROTOCOL, encodePullRequest([])).catch(() => undefined)
    await waitFor(async () => (await limitedOn(n1.spegel.metricsUrl, 'pulls-served-peer')) > before.peer, { timeoutMs: DEADLINE_MS, what: 'node 1 to refuse pulls past the per-peer limit' })
    const rssStalled = await rssOn(n1.spegel.metricsUrl)

    // Node 1 still answers another member's pull (here: node 2's view of node 1 is current, and
    // another member pulls everything), and real pulls through node 2 still work.
    const member = await HostilePeer.start({ host: h.addrs()[0]!.split('/')[2]!.replace(/\.\d+$/, '.201'), secretPath: path.join(dir, 'swarm.key') })
    t.after(async () => { await member.stop() })
    await member.dial(`/ip4/${n1.host}/tcp/${n1.spegel.routerPort}/p2p/${n1.peerId}`)
    const answer = await member.pull(n1.peerId)
    assert.ok(answer.some((f) => f.type === FrameType.Record && f.statement.origin === n1.peerId), 'node 1 answered another member')
    const res = await httpRequest(`${n2.spegel.registryUrl}/v2/hostile/app/manifests/1.0?ns=example.test`, { method: 'HEAD' })
    assert.equal(res.status, 200)

    await waitFor(async () => (await limitedOn(n1.spegel.metricsUrl, 'pull-stalled')) >= before.stalled + MAX_PULLS_SERVED_PER_PEER,
      { timeoutMs: DEADLINE_MS, what: 'node 1 to cut the answers nobody reads' })
    t.diagnostic(`node 1 RSS ${mib(rssBefore)} MiB before, ${mib(rssStalled)} MiB with ${MAX_PULLS_SERVED_PER_PEER} stalled answers of ${keys.length + 10} keys held`)
    assert.ok(rssStalled - rssBefore < 64 * 1024 * 1024, `stalled answers grew node 1 by ${mib(rssStalled - rssBefore)} MiB`)
    const metrics = (await httpRequest(`${n1.spegel.metricsUrl}/metrics`, { method: 'GET' })).body.toString()
    for (const limit of LIMITS) {
      assert.match(metrics, new RegExp(`^spegel_router_limit_reached_total\\{limit="${limit}"\\} \\d+$`, 'm'), `the ${limit} series exists`)
    }
  })
})

async function limitedOn (metricsUrl: string, limit: string): Promise<number> {
  const text = (await httpRequest(`${metricsUrl}/metrics`, { method: 'GET' })).body.toString()
  return Number(new RegExp(`^spegel_router_limit_reached_total\\{limit="${limit}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0)
}

async function rssOn (metricsUrl: string): Promise<number> {
  const text = (await httpRequest(`${metricsUrl}/metrics`, { method: 'GET' })).body.toString()
  return Number(/^process_resident_memory_bytes (\S+)$/m.exec(text)?.[1] ?? Number.NaN)
}

async function refusedOn (metricsUrl: string, reason: string): Promise<number> {
  const text = (await httpRequest(`${metricsUrl}/metrics`, { method: 'GET' })).body.toString()
  return Number(new RegExp(`^spegel_router_frames_refused_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0)
}
