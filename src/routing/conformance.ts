import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { pinTag } from './tag-key.js'
import type { LookupOptions, Peer, Router } from './types.js'

/** What a Router implementation hands the conformance suite. */
export interface RouterConformanceSetup {
  /** At least two routers that can reach each other; three or more for the limit case. */
  routers: Router[]
  /** How router i appears in the other routers' lookups (`selves[i]`). */
  selves: Peer[]
  /** Resolves once every change made so far has reached every router (a no-op in memory). */
  settle(): Promise<void>
  teardown(): Promise<void>
}

export interface RouterConformanceOptions {
  /** Bound on waiting for a change to show up elsewhere (default 10 s). */
  deadlineMs?: number
}

/**
 * The behaviour every Router must have, as node:test cases: one setup per suite, fresh random
 * keys per case. Changes are awaited by polling with a deadline (no sleeps, no timing asserts),
 * so the same cases run against the in-memory router and against real P2P nodes.
 */
export function routerConformance (name: string, setup: () => Promise<RouterConformanceSetup>, options: RouterConformanceOptions = {}): void {
  const deadlineMs = options.deadlineMs ?? 10_000

  describe(`${name} router conformance`, () => {
    let env: RouterConformanceSetup | undefined
    const get = (): RouterConformanceSetup => {
      assert.ok(env !== undefined, 'setup did not run')
      return env
    }
    const at = (i: number): Router => {
      const r = get().routers[i]
      assert.ok(r !== undefined, `setup returned fewer than ${i + 1} routers`)
      return r
    }
    const self = (i: number): Peer => {
      const p = get().selves[i]
      assert.ok(p !== undefined, `setup returned fewer than ${i + 1} selves`)
      return p
    }

    /** Polls `router`'s lookup of `key` until `done(ids)` holds; returns the last answer. */
    const waitLookup = async (router: Router, key: string, done: (peers: Peer[]) => boolean, what: string): Promise<Peer[]> => {
      const deadline = Date.now() + deadlineMs
      let last: Peer[] = []
      for (;;) {
        last = await collect(router, key)
        if (done(last)) return last
        if (Date.now() > deadline) {
          assert.fail(`timed out after ${deadlineMs} ms waiting for ${what}; last answer: ${JSON.stringify(last)}`)
        }
        await delay(25)
      }
    }
    const ids = (peers: readonly Peer[]): string[] => peers.map((p) => p.id).sort()

    before(async () => {
      env = await setup()
      assert.ok(env.routers.length >= 2, 'the conformance suite needs at least two routers')
      assert.equal(env.selves.length, env.routers.length, 'one self per router')
    })
    after(async () => {
      await env?.teardown()
    })

    it('every router becomes ready', async () => {
      const deadline = Date.now() + deadlineMs
      for (const [i, r] of get().routers.entries()) {
        while (!r.readiness().isReady) {
          if (Date.now() > deadline) assert.fail(`router ${i} not ready: ${r.readiness().reason ?? 'no reason'}`)
          await delay(25)
        }
        assert.equal(r.readiness().reason, undefined)
      }
    })

    it('finds a key advertised by another router, with its registry address', async () => {
      const digest = randomDigest()
      const tag = `example.com/team/app-${randomBytes(4).toString('hex')}:v1.${randomBytes(2).toString('hex')}`
      at(0).advertise([digest, tag])
      for (const key of [digest, tag]) {
        const peers = await waitLookup(at(1), key, (p) => p.length > 0, `router 1 to find router 0's ${key}`)
        assert.deepEqual(peers.map((p) => ({ id: p.id, registryAddress: p.registryAddress })), [self(0)])
        assert.equal(peers[0]?.digest, undefined, 'a key advertised without a pin carries no digest')
      }
    })

    it('finds a pinned tag under the tag, with the digest it names; a new pin replaces the old one', async () => {
      const [d1, d2] = [randomDigest(), randomDigest()]
      const tag = `example.com/team/pinned-${randomBytes(4).toString('hex')}:v1`
      at(0).advertise([pinTag(tag, d1)])
      const peers = await waitLookup(at(1), tag, (p) => p.length > 0, 'router 1 to find the pinned tag')
      assert.deepEqual(peers.map((p) => ({ ...p })), [{ ...self(0), digest: d1 }])
      at(0).advertise([pinTag(tag, d2)])
      await waitLookup(at(1), tag, (p) => p.length === 1 && p[0]?.digest === d2, 'the new pin to replace the old one')
      assert.deepEqual(await collect(at(1), pinTag(tag, d2)), [], 'the pinned form is not a key of its own')
      at(0).withdraw([tag])
      await waitLookup(at(1), tag, (p) => p.length === 0, 'the withdrawn tag to disappear')
    })

    it('treats keys as opaque strings (case, unicode, digest look-alikes)', async () => {
      const upper = `sha256:${randomBytes(32).toString('hex').toUpperCase()}`
      const short = `sha256:${randomBytes(8).toString('hex')}`
      const unicode = `registry.example/équipe/app:${randomBytes(2).toString('hex')}-ü`
      at(0).advertise([upper, short, unicode])
      for (const key of [upper, short, unicode]) {
        await waitLookup(at(1), key, (p) => ids(p).includes(self(0).id), `router 1 to find ${key}`)
      }
      assert.deepEqual(await collect(at(1), upper.toLowerCase()), [])
    })

    it('finds every holder of a key', async () => {
      if (get().routers.length < 3) return
      const key = randomDigest()
      at(0).advertise([key])
      at(1).advertise([key])
      await waitLookup(at(2), key, (p) => p.length === 2, 'router 2 to find both holders')
      assert.deepEqual(ids(await collect(at(2), key)), [self(0).id, self(1).id].sort())
    })

    it('a withdrawn key disappears, and only for the router that withdrew it', async () => {
      const key = randomDigest()
      const kept = randomDigest()
      at(0).advertise([key, kept])
      await waitLookup(at(1), key, (p) => p.length === 1, 'router 1 to find the key')
      at(0).withdraw([key])
      await waitLookup(at(1), key, (p) => p.length === 0, 'the withdrawn key to disappear')
      await get().settle()
      assert.deepEqual(await collect(at(1), key), [])
      assert.deepEqual(ids(await collect(at(1), kept)), [self(0).id])
    })

    it('replaceAll swaps the whole record', async () => {
      const [k1, k2, k3] = [randomDigest(), randomDigest(), randomDigest()]
      at(0).advertise([k1, k2])
      await waitLookup(at(1), k1, (p) => p.length === 1, 'router 1 to find k1')
      at(0).replaceAll([k2, k3])
      await waitLookup(at(1), k3, (p) => p.length === 1, 'router 1 to find k3 after replaceAll')
      await waitLookup(at(1), k1, (p) => p.length === 0, 'k1 to disappear after replaceAll')
      await get().settle()
      assert.deepEqual(ids(await collect(at(1), k2)), [self(0).id])
      assert.deepEqual(await collect(at(1), k1), [])
    })

    it('never yields the router itself', async () => {
      const key = randomDigest()
      at(0).advertise([key])
      at(1).advertise([key])
      await waitLookup(at(0), key, (p) => p.length > 0, 'router 0 to find router 1')
      await get().settle()
      assert.deepEqual(ids(await collect(at(0), key)), [self(1).id])
      assert.deepEqual(ids(await collect(at(1), key)), [self(0).id])
      const own = randomDigest()
      at(0).advertise([own])
      await waitLookup(at(1), own, (p) => p.length > 0, 'router 1 to find router 0')
      assert.deepEqual(await collect(at(0), own), [])
    })

    it('an unknown key yields nothing', async () => {
      await get().settle()
      for (const r of get().routers) {
        assert.deepEqual(await collect(r, randomDigest()), [])
        assert.deepEqual(await collect(r, 'example.com/nobody/has:this'), [])
      }
    })

    it('respects the limit', async () => {
      if (get().routers.length < 3) return
      const key = randomDigest()
      at(0).advertise([key])
      at(1).advertise([key])
      await waitLookup(at(2), key, (p) => p.length === 2, 'router 2 to find both holders')
      assert.equal((await collect(at(2), key, { limit: 1 })).length, 1)
      assert.equal((await collect(at(2), key, { limit: 2 })).length, 2)
      assert.equal((await collect(at(2), key, { limit: 5 })).length, 2)
      assert.equal((await collect(at(2), key, { limit: 0 })).length, 0)
    })

    it('honours an abort signal, before and during the lookup', async () => {
      await assert.rejects(collect(at(1), randomDigest(), { signal: AbortSignal.abort() }), { name: 'AbortError' })
      if (get().routers.length < 3) return
      const key = randomDigest()
      at(0).advertise([key])
      at(1).advertise([key])
      await waitLookup(at(2), key, (p) => p.length === 2, 'router 2 to find both holders')
      const ac = new AbortController()
      const seen: Peer[] = []
      await assert.rejects((async () => {
        for await (const p of at(2).lookup(key, { signal: ac.signal })) {
          seen.push(p)
          ac.abort()
        }
      })(), { name: 'AbortError' })
      assert.equal(seen.length, 1)
    })

    it('accepts empty and repeated changes', async () => {
      const key = randomDigest()
      at(0).advertise([])
      at(0).withdraw([])
      at(0).advertise([key, key])
      at(0).advertise([key])
      at(0).withdraw([randomDigest()])
      await waitLookup(at(1), key, (p) => p.length === 1, 'router 1 to find the key once')
      await get().settle()
      assert.deepEqual(ids(await collect(at(1), key)), [self(0).id])
    })
  })
}

export async function collect (router: Router, key: string, options?: LookupOptions): Promise<Peer[]> {
  const peers: Peer[] = []
  for await (const peer of router.lookup(key, options)) peers.push(peer)
  return peers
}

function randomDigest (): string {
  return `sha256:${randomBytes(32).toString('hex')}`
}
