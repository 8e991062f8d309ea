import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Hedger } from '../resilience/index.js'
import type { Peer } from '../routing/index.js'
import { PeerPool, RaceError, hedgedRace, type RaceInit } from './peer-race.js'

const peer = (id: string): Peer => ({ id, registryAddress: `${id}.invalid:5000` })

/** Ties broken in insertion order, so tests know which peer is asked first. */
function orderedPool (...ids: string[]): PeerPool {
  let n = 0
  const pool = new PeerPool({ random: () => n++ })
  for (const id of ids) pool.add(peer(id))
  return pool
}

/** An attempt that never settles on its own; it rejects with the abort reason. */
function hang (signal: AbortSignal): Promise<never> {
  return new Promise((_resolve, reject) => {
    signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
  })
}

function race<T> (init: Partial<RaceInit<T>> & Pick<RaceInit<T>, 'pool' | 'attempt'>): ReturnType<typeof hedgedRace<T>> {
  return hedgedRace<T>({
    hedger: new Hedger({ initialMs: 60_000 }),
    key: 'sha256:abc',
    maxAttempts: 3,
    idleTimeoutMs: 60_000,
    inflightTimeoutMinMs: 60_000,
    signal: AbortSignal.timeout(10_000),
    ...init
  })
}

async function raceError (promise: Promise<unknown>): Promise<RaceError> {
  const err = await promise.then(() => undefined, (e: unknown) => e)
  assert.ok(err instanceof RaceError, `expected a RaceError, got ${String(err)}`)
  return err
}

describe('PeerPool', () => {
  it('keeps one entry per peer id', () => {
    const pool = new PeerPool()
    pool.add(peer('a'))
    pool.add(peer('a'))
    pool.add({ id: 'a', registryAddress: 'new:1' })
    assert.equal(pool.size, 1)
    assert.equal(pool.acquire()?.registryAddress, 'new:1')
  })

  it('acquire marks a peer busy until released', () => {
    const pool = orderedPool('a')
    assert.ok(pool.hasAvailable())
    assert.equal(pool.acquire()?.id, 'a')
    assert.equal(pool.hasAvailable(), false)
    assert.equal(pool.acquire(), undefined)
    pool.release(peer('a'))
    assert.ok(pool.hasAvailable())
  })

  it('removes acquired and absent peers without complaint', () => {
    const pool = orderedPool('a', 'b')
    pool.acquire()
    pool.remove(peer('a'))
    pool.remove(peer('a'))
    pool.remove(peer('zzz'))
    assert.equal(pool.size, 1)
    assert.equal(pool.acquire()?.id, 'b')
  })

  it('is exhausted only when closed and empty', () => {
    const pool = new PeerPool()
    assert.equal(pool.isExhausted, false)
    pool.close()
    assert.ok(pool.isExhausted)
    pool.add(peer('a'))
    assert.equal(pool.isExhausted, false)
    pool.remove(peer('a'))
    assert.ok(pool.isExhausted)
  })

  it('spreads use evenly: the least used peer goes first', () => {
    const pool = orderedPool('a', 'b', 'c')
    const uses = new Map<string, number>()
    for (let i = 0; i < 6; i++) {
      const p = pool.acquire()
      assert.ok(p !== undefined)
      uses.set(p.id, (uses.get(p.id) ?? 0) + 1)
      pool.release(p)
    }
    assert.deepEqual(Object.fromEntries(uses), { a: 2, b: 2, c: 2 })
  })

  it('prefers the best score among equally used peers, then the tiebreak', () => {
    let n = 0
    const scores: Record<string, number> = { a: 5, b: 0, c: 0 }
    const pool = new PeerPool({ score: (p) => scores[p.id] ?? 0, random: () => n++ })
    for (const id of ['a', 'b', 'c']) pool.add(peer(id))
    assert.equal(pool.acquire()?.id, 'b')
    assert.equal(pool.acquire()?.id, 'c')
    assert.equal(pool.acquire()?.id, 'a')
  })

  it('tells listeners about every change and stops after unsubscribe', () => {
    const pool = new PeerPool()
    let calls = 0
    const off = pool.onChange(() => { calls++ })
    pool.add(peer('a'))
    const p = pool.acquire()
    assert.ok(p !== undefined)
    pool.release(p)
    pool.remove(p)
    pool.close()
    assert.equal(calls, 4)
    off()
    pool.add(peer('b'))
    assert.equal(calls, 4)
  })
})

describe('hedgedRace', () => {
  it('fails with no-peer and 0 attempts when nobody holds the key', async () => {
    const pool = new PeerPool()
    pool.close()
    const err = await raceError(race({ pool, attempt: async () => 'never' }))
    assert.equal(err.reason, 'no-peer')
    assert.equal(err.attempts, 0)
    assert.equal(err.message, 'could not find peer for sha256:abc')
  })

  it('tries the next peer at once after a failure and reports every attempt', async () => {
    const pool = orderedPool('a', 'b', 'c')
    pool.close()
    const asked: string[] = []
    const err = await raceError(race({ pool, attempt: async (p) => { asked.push(p.id); throw new Error(`${p.id} failed`) } }))
    assert.equal(err.reason, 'exhausted')
    assert.equal(err.attempts, 3)
    assert.equal(err.message, 'all request retries exhausted for sha256:abc')
    assert.deepEqual(asked, ['a', 'b', 'c'])
    assert.equal(pool.size, 0, 'failed peers are removed')
  })

  it('asks at most maxAttempts peers', async () => {
    const pool = orderedPool('a', 'b', 'c', 'd', 'e')
    pool.close()
    const err = await raceError(race({ pool, maxAttempts: 2, attempt: async () => { throw new Error('no') } }))
    assert.equal(err.attempts, 2)
    assert.equal(err.reason, 'exhausted')
  })

  it('stops after the hedge budget even when peers are left', async () => {
    const pool = orderedPool('a', 'b', 'c', 'd', 'e', 'f')
    pool.close()
    const err = await raceError(race({ pool, maxAttempts: 10, hedger: new Hedger({ percentiles: [50, 90], initialMs: 60_000 }), attempt: async () => { throw new Error('no') } }))
    assert.equal(err.attempts, 3, 'one attempt plus one per hedge percentile')
  })

  it('returns the first success and aborts the attempts still in flight', async () => {
    const pool = orderedPool('slow', 'fast')
    pool.close()
    let slowSignal: AbortSignal | undefined
    const result = await race({
      pool,
      hedger: new Hedger({ initialMs: 1 }),
      attempt: async (p, signal) => {
        if (p.id === 'slow') {
          slowSignal = signal
          return await hang(signal)
        }
        return 'from fast'
      }
    })
    assert.equal(result.value, 'from fast')
    assert.equal(result.peer.id, 'fast')
    assert.equal(result.attempts, 2)
    assert.ok(slowSignal?.aborted, 'the loser was aborted')
  })

  it('never sends two requests at once to one peer, however many hedges fire', async () => {
    const pool = orderedPool('only')
    pool.close()
    let concurrent = 0
    let maxConcurrent = 0
    const err = await raceError(race({
      pool,
      hedger: new Hedger({ initialMs: 1 }),
      inflightTimeoutMinMs: 50,
      attempt: async (_p, signal) => {
        maxConcurrent = Math.max(maxConcurrent, ++concurrent)
        try {
          return await hang(signal)
        } finally {
          concurrent--
        }
      }
    }))
    assert.equal(err.reason, 'inflight-timeout')
    assert.equal(err.attempts, 1)
    assert.equal(err.message, 'waited too long for inflight dials to complete for sha256:abc')
    assert.equal(maxConcurrent, 1)
  })

  it('gives up on hung peers after the in-flight bound', async () => {
    const pool = orderedPool('a', 'b')
    pool.close()
    const reported: string[] = []
    const err = await raceError(race({
      pool,
      hedger: new Hedger({ initialMs: 1 }),
      inflightTimeoutMinMs: 50,
      attempt: async (_p, signal) => await hang(signal),
      onFailure: (p, e) => { reported.push(`${p.id}: ${(e as Error).message}`) }
    }))
    assert.equal(err.reason, 'inflight-timeout')
    assert.equal(err.attempts, 2)
    assert.deepEqual(reported.sort(), [`a: ${err.message}`, `b: ${err.message}`], 'hung peers are reported as failed')
  })

  it('waits for peers the lookup has not delivered yet', async () => {
    const pool = new PeerPool()
    setTimeout(() => { pool.add(peer('late')); pool.close() }, 20)
    const result = await race({ pool, attempt: async (p) => p.id })
    assert.equal(result.value, 'late')
  })

  it('fails with idle when no peer turns up in time', async () => {
    const pool = new PeerPool()
    const err = await raceError(race({ pool, idleTimeoutMs: 20, attempt: async () => 'never' }))
    assert.equal(err.reason, 'idle')
    assert.equal(err.message, 'waited too long for new peer with no inflight fetches for sha256:abc')
  })

  it('reports a lookup that failed before finding anybody', async () => {
    const pool = new PeerPool()
    pool.close(new Error('index unavailable'))
    const err = await raceError(race({ pool, attempt: async () => 'never' }))
    assert.equal(err.reason, 'lookup')
    assert.match(err.message, /index unavailable/)
  })

  it('rethrows terminal errors without asking further peers', async () => {
    const pool = orderedPool('a', 'b')
    pool.close()
    const terminal = new Error('range not satisfiable')
    const asked: string[] = []
    await assert.rejects(race({
      pool,
      isTerminal: (e) => e === terminal,
      attempt: async (p) => { asked.push(p.id); throw terminal }
    }), (e) => e === terminal)
    assert.deepEqual(asked, ['a'])
  })

  it('hands late winners to discard', async () => {
    const pool = orderedPool('late', 'first')
    pool.close()
    let releaseLate = (): void => {}
    const lateGate = new Promise<void>((resolve) => { releaseLate = resolve })
    const discarded = new Promise<string>((resolve) => {
      void race({
        pool,
        hedger: new Hedger({ initialMs: 1 }),
        // The late attempt ignores its signal, like a response whose headers were already on the way.
        attempt: async (p) => {
          if (p.id === 'late') {
            await lateGate
            return 'late value'
          }
          return 'first value'
        },
        discard: resolve
      }).then((result) => {
        assert.equal(result.value, 'first value')
        releaseLate()
      })
    })
    assert.equal(await discarded, 'late value')
  })

  it('ends with aborted when the caller gives up', async () => {
    const pool = orderedPool('a')
    pool.close()
    const controller = new AbortController()
    const promise = race({ pool, signal: controller.signal, attempt: async (_p, signal) => await hang(signal) })
    setTimeout(() => { controller.abort(new Error('client went away')) }, 5)
    const err = await raceError(promise)
    assert.equal(err.reason, 'aborted')
    assert.equal(err.attempts, 1)
  })
})
