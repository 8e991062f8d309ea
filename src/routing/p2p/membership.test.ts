import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createLogger } from '../../observability/logger.js'
import type { IndexRecord } from './content-index.js'
import { HEARSAY_MARGIN_MS, HINT_COOLDOWN_MS, Suspicion } from './membership.js'

const log = createLogger({ level: 'silent' })
const PEER = 'peer-b'
/** Long enough for every 0 ms timer the suspicion set to have fired: a check that should not start had its chance. */
const SETTLE_MS = 20
const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** The few things Suspicion reads of the node and the index, driven by the test; checks answer when told. */
function setup () {
  const records = new Map<string, { epoch: number, seq: number, isAlive: boolean }>([[PEER, { epoch: 1, seq: 5, isAlive: true }]])
  const connected = new Set<string>()
  const checks: Array<{ peer: string, done: (isUp: boolean) => void }> = []
  let announced = 0
  const suspicion = new Suspicion({
    node: { isConnected: (peer) => connected.has(peer) },
    index: {
      get: (origin) => {
        const r = records.get(origin)
        return r === undefined ? undefined : { origin, epoch: r.epoch, seq: r.seq, isAlive: r.isAlive } as unknown as IndexRecord
      },
      isAlive: (rec) => records.get(rec.origin)?.isAlive === true
    },
    log,
    check: (peer, done) => { checks.push({ peer, done }) },
    announce: () => { announced++ }
  })
  /**
   * Waits for the next check the suspicion starts. Its first one runs from a 0 ms timer, which
   * Node fires after at least 1 ms: counting event-loop turns instead of time made this flaky on
   * a fast machine (200 idle turns can pass within that millisecond).
   */
  const nextCheck = async (count: number): Promise<{ peer: string, done: (isUp: boolean) => void }> => {
    const deadline = Date.now() + 5_000
    while (checks.length < count && Date.now() < deadline) await sleep(1)
    const c = checks[count - 1]
    assert.ok(c !== undefined, `check #${count} was started`)
    return c
  }
  return { suspicion, records, connected, checks, nextCheck, announced: () => announced }
}

describe('Suspicion', () => {
  it('leaves a peer whose connection was cut out of lookups once a prompt dial fails, and announces it', async (t) => {
    const s = setup()
    t.after(() => { s.suspicion.stop() })
    const now = Date.now()
    s.suspicion.lost(PEER, false, now)
    assert.equal(s.suspicion.isOut(PEER, now), false, 'offered while the prompt dial runs')
    const check = await s.nextCheck(1)
    assert.equal(check.peer, PEER)
    check.done(false)
    assert.equal(s.suspicion.isOut(PEER, Date.now()), true)
    assert.equal(s.suspicion.isReported(PEER, Date.now()), true, 'heartbeats report it')
    assert.equal(s.suspicion.count, 1)
    assert.equal(s.announced(), 1)
    // Checks go on with backoff; the moment it connects, it is back.
    s.connected.add(PEER)
    s.suspicion.connected(PEER)
    assert.equal(s.suspicion.isOut(PEER, Date.now()), false)
    assert.equal(s.suspicion.size, 0)
  })

  it('keeps a peer that answers the prompt dial, and ignores orderly closes', async (t) => {
    const s = setup()
    t.after(() => { s.suspicion.stop() })
    s.suspicion.lost(PEER, true, Date.now())
    await sleep(SETTLE_MS)
    assert.equal(s.checks.length, 0, 'an orderly close (probe, pruning, shutdown) is no reason to check')
    s.suspicion.lost(PEER, false, Date.now())
    ;(await s.nextCheck(1)).done(true)
    assert.equal(s.suspicion.isOut(PEER, Date.now()), false)
    assert.equal(s.suspicion.count, 0)
    assert.equal(s.announced(), 0)
  })

  it('does not let hearsay from before the loss bring a peer back; news from after it makes a check', async (t) => {
    const s = setup()
    t.after(() => { s.suspicion.stop() })
    const lostAt = Date.now()
    s.suspicion.lost(PEER, false, lostAt)
    ;(await s.nextCheck(1)).done(false)
    // A neighbour relays "heard of it 300 ms ago" shortly after: that news predates the loss.
    s.suspicion.heardOf(PEER, lostAt - 300, lostAt + 100)
    s.suspicion.heardOf(PEER, lostAt + HEARSAY_MARGIN_MS - 1, lostAt + 100)
    await sleep(SETTLE_MS)
    assert.equal(s.checks.length, 1, 'stale hearsay starts no check')
    assert.equal(s.suspicion.isOut(PEER, Date.now()), true, 'and does not resurrect it')
    // News from well after the loss: check now (the backoff is skipped), still out until it answers.
    s.suspicion.heardOf(PEER, lostAt + HEARSAY_MARGIN_MS + 500, Date.now())
    const check = await s.nextCheck(2)
    assert.equal(s.suspicion.isOut(PEER, Date.now()), true)
    check.done(true)
    assert.equal(s.suspicion.isOut(PEER, Date.now()), false)
  })

  it('offers a suspected peer again when a newer signed version of its record arrives', async (t) => {
    const s = setup()
    t.after(() => { s.suspicion.stop() })
    s.suspicion.lost(PEER, false, Date.now())
    ;(await s.nextCheck(1)).done(false)
    assert.equal(s.suspicion.isOut(PEER, Date.now()), true)
    s.records.get(PEER)!.seq = 6
    assert.equal(s.suspicion.isOut(PEER, Date.now()), false, 'a delta it signed after the loss')
    // It is checked again; if that fails it is out again, at the new version.
    ;(await s.nextCheck(2)).done(false)
    assert.equal(s.suspicion.isOut(PEER, Date.now()), true)
  })

  it('checks a peer a neighbour reports lost, never one it is connected to, and not again soon after reaching it', async (t) => {
    const s = setup()
    t.after(() => { s.suspicion.stop() })
    const now = Date.now()
    s.connected.add(PEER)
    s.suspicion.hinted(PEER, 1, now)
    s.suspicion.hinted(PEER, 2, now)
    await sleep(SETTLE_MS)
    assert.equal(s.checks.length, 0, 'connected: no check, and never out')
    s.connected.delete(PEER)
    s.suspicion.hinted(PEER, 2, now)
    await sleep(SETTLE_MS)
    assert.equal(s.checks.length, 0, 'a report about another epoch is ignored')
    s.suspicion.hinted(PEER, 1, now)
    ;(await s.nextCheck(1)).done(true)
    s.suspicion.hinted(PEER, 1, now + 1000)
    await sleep(SETTLE_MS)
    assert.equal(s.checks.length, 1, 'reached lately: the report is not acted on')
    s.suspicion.hinted(PEER, 1, Date.now() + HINT_COOLDOWN_MS + 1)
    ;(await s.nextCheck(2)).done(false)
    assert.equal(s.suspicion.isOut(PEER, Date.now()), true)
    assert.equal(s.suspicion.isReported(PEER, Date.now()), false, 'a suspicion from a report is not reported on (one hop only)')
    assert.equal(s.announced(), 0)
  })

  it('checks a peer cut again soon after it answered only after a growing delay (no cut-and-check loop)', async (t) => {
    const s = setup()
    t.after(() => { s.suspicion.stop() })
    s.suspicion.lost(PEER, false, Date.now())
    ;(await s.nextCheck(1)).done(true)
    s.suspicion.lost(PEER, false, Date.now())
    await sleep(SETTLE_MS)
    assert.equal(s.checks.length, 1, 'the second check waits')
    assert.equal(s.suspicion.isOut(PEER, Date.now()), false, 'and the peer stays offered meanwhile')
    s.connected.add(PEER)
    s.suspicion.connected(PEER)
    assert.equal(s.suspicion.size, 1, 'only the time it was reached is kept')
  })

  it('drops its state with the record (bounded by the records held)', async (t) => {
    const s = setup()
    t.after(() => { s.suspicion.stop() })
    s.records.set('peer-c', { epoch: 1, seq: 1, isAlive: true })
    s.suspicion.lost(PEER, false, Date.now())
    s.suspicion.lost('peer-c', false, Date.now())
    ;(await s.nextCheck(1)).done(false)
    ;(await s.nextCheck(2)).done(false)
    assert.equal(s.suspicion.count, 2)
    s.records.get(PEER)!.isAlive = false
    s.suspicion.sweep(Date.now())
    s.suspicion.forget(['peer-c'])
    assert.equal(s.suspicion.size, 0)
    s.suspicion.lost('unknown', false, Date.now())
    assert.equal(s.suspicion.size, 0, 'no entry for a peer without a record')
  })
})
