import { once } from 'node:events'
import type { Connection, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import type { Logger } from '../../observability/logger.js'
import {
  FrameType, StatementKind, decodePullRequest, decodePullResponse, decodeRecordPayload, encodeHave, encodePullEnd, encodePullRequest,
  encodeRecordGone, encodeRecordSame, encodeRecordPayload, encodeStatement, lengthPrefix, recordFrameHead, type RecordBody,
  type RecordFrame, type Statement, type VersionEntry
} from './codec.js'
import {
  MAX_CONTROL_FRAME_BYTES, MAX_FRAME_BYTES, MAX_PULLS_SERVED, MAX_PULLS_SERVED_PER_PEER, MAX_PULL_CONTINUATIONS, MAX_PULL_REPLY_BYTES,
  MAX_PULL_REPLY_RECORDS, PULL_MIN_INTERVAL_MS, PULL_PROTOCOL, PULL_TIMEOUT_MS, PULL_WRITE_STALL_MS, RETRY_WANTED_INTERVAL_MS,
  SERVED_RECORD_CACHE_BYTES, SERVED_RECORD_IDLE_MS
} from './constants.js'
import type { ContentIndex, IncomingRecord, IndexRecord } from './content-index.js'
import { isOversized } from './gossip.js'
import type { P2PNode } from './node.js'
import type { OwnRecord } from './own-record.js'
import { checkAddressClaims, type Limits, type RecordAuth, type Refusals } from './record-auth.js'
import { ServedRecordCache } from './served-cache.js'
import type { P2PRouterCounters } from './types.js'
import { jitter } from './util.js'

/** Room for the length prefix in a byte stream's read buffer, above the frame limit. */
const PREFIX_ROOM = 16
/**
 * Records received are applied in batches of about this many payload bytes, so a long answer is
 * never held whole (decoded keys take several times their wire size).
 */
const APPLY_BATCH_BYTES = 8 * 1024 * 1024
/**
 * A pull answer's frames are sent in runs of at least this many bytes (or fewer at its end): far
 * fewer yamux frames, while an answer still holds about a record's worth, not the index.
 */
const ANSWER_SEND_BYTES = 64 * 1024
/** Parts of a pull answer smaller than this are copied together into one send; larger ones go as they are. */
const ANSWER_COPY_BELOW_BYTES = 4 * 1024
/**
 * Records the server rebuilds from the index per scan of its key map: one scan per batch, and
 * about this many keys of encoded statements held at once (a few MB).
 */
const REBUILD_BATCH_KEYS = 100_000

export interface AntiEntropyComponents {
  node: P2PNode
  index: ContentIndex
  auth: RecordAuth
  refusals: Refusals
  limits: Limits
  own: OwnRecord
  log: Logger
  counters: P2PRouterCounters
  broadcast(frame: Uint8Array, except?: string): void
  /** Records a pull changed (verified and stored). */
  onRecords(changed: readonly string[]): void
  /** A goodbye a pull brought (verified). */
  onGoodbye(statement: Statement, from: string): void
  /** A verified statement this node signed itself (an earlier run of it). */
  onOwnStatement(statement: Statement): void
}

export interface AntiEntropyInit {
  /** Pull from a random connected peer this often. */
  pullIntervalMs: number
}

/** What one pull exchange brought. */
interface PullResult {
  /** Records it changed. */
  changed: number
  /** The server cut its answer at its limit: there is more to pull. */
  isCut: boolean
}

/**
 * Anti-entropy: pulls (a version vector out, newer signed records back) repair whatever pushes
 * missed. The client verifies every record before it keeps it (signature, then address claims);
 * the server answers with records as their origins signed them, rebuilt from the index and
 * checked again before they leave, so an honest node never passes on a record that does not verify.
 *
 * What a peer can make it spend is bounded. Serving: MAX_PULLS_SERVED_PER_PEER and
 * MAX_PULLS_SERVED answers at once, each written a run of frames at a time as the requester reads (a
 * requester that stops reading is cut after PULL_WRITE_STALL_MS), and at most
 * MAX_PULL_REPLY_BYTES / MAX_PULL_REPLY_RECORDS per answer. Pulling: one pull per peer per
 * PULL_MIN_INTERVAL_MS, whatever asks for it (triggers in between are folded into one), frames of
 * at most MAX_FRAME_BYTES, answers of at most the same per-answer limits, applied in batches.
 */
export class AntiEntropy {
  readonly #c: AntiEntropyComponents
  readonly #init: AntiEntropyInit
  readonly #pulls = new Map<string, { again: boolean }>()
  /** Earliest start of the next pull from each peer. */
  readonly #nextPullMs = new Map<string, number>()
  /** Pulls folded into one at the end of the peer's interval. */
  readonly #deferred = new Map<string, NodeJS.Timeout>()
  readonly #tasks = new Set<Promise<unknown>>()
  readonly #controller = new AbortController()
  readonly #served = new ServedRecordCache(SERVED_RECORD_CACHE_BYTES, SERVED_RECORD_IDLE_MS)
  /** Pulls being answered, per requesting peer. */
  readonly #serving = new Map<string, number>()
  #servingTotal = 0
  #lastRetryMs = -Infinity
  #timer: NodeJS.Timeout | undefined
  #hasPulled = false

  constructor (components: AntiEntropyComponents, init: AntiEntropyInit) {
    this.#c = components
    this.#init = init
  }

  /** At least one pull completed: this node holds what some peer knew. */
  get hasPulled (): boolean {
    return this.#hasPulled
  }

  get inFlight (): number {
    return this.#pulls.size
  }

  /** Pulls waiting for the end of their peer's interval (PULL_MIN_INTERVAL_MS). */
  get deferred (): number {
    return this.#deferred.size
  }

  /** Pulls this node is answering right now. */
  get serving (): number {
    return this.#servingTotal
  }

  async start (): Promise<void> {
    // libp2p's own per-connection bound, above ours so that ours (counted, logged) normally acts first.
    await this.#c.node.libp2p.handle(PULL_PROTOCOL, (stream, connection) => this.#serve(stream, connection),
      { maxInboundStreams: MAX_PULLS_SERVED_PER_PEER + 2 })
    this.#schedule()
  }

  async stop (): Promise<void> {
    this.#controller.abort(new Error('router stopped'))
    clearTimeout(this.#timer)
    this.#served.clear()
    for (const t of this.#deferred.values()) clearTimeout(t)
    this.#deferred.clear()
    await Promise.allSettled([...this.#tasks])
  }

  /**
   * `from` holds (or heard of) a version this node lacks: pull from it, unless the same version
   * is already wished for and a pull is running (then the sweep retries if that pull did not
   * bring it), so one new record does not cause a pull from every neighbour.
   */
  wantFrom (v: VersionEntry, from: string, nowMs: number): void {
    const { index } = this.#c
    if (!index.isBehind(v.origin, v.epoch, v.seq)) return
    const already = index.isWanted(v.origin, v.epoch, v.seq)
    index.want(v.origin, v.epoch, v.seq, nowMs)
    if (already && this.#pulls.size > 0) return
    this.pull(from)
  }

  /**
   * Versions heard of but still missing after the pulls they caused: ask someone else, at most
   * once per RETRY_WANTED_INTERVAL_MS (hearsay of versions nobody has costs a pull per interval,
   * however much of it arrives).
   */
  retryWanted (nowMs: number): void {
    if (nowMs - this.#lastRetryMs < RETRY_WANTED_INTERVAL_MS) return
    if (this.#c.index.wanted(nowMs).length === 0 || this.#pulls.size > 0) return
    const peer = this.#c.node.randomPeer()
    if (peer === undefined) return
    this.#lastRetryMs = nowMs
    this.pull(peer)
  }

  /**
   * Pulls from `peer` now, or once more right after the pull already running against it, or (within
   * PULL_MIN_INTERVAL_MS of the last one) once at the end of that interval: any number of reasons
   * to pull from one peer cost one pull per interval.
   */
  pull (peer: string): void {
    if (this.#controller.signal.aborted) return
    const running = this.#pulls.get(peer)
    if (running !== undefined) {
      running.again = true
      return
    }
    if (this.#deferred.has(peer)) {
      // A second reason within the interval, while one pull already waits for its end: the flood
      // this limit is for (an honest peer rarely gives two).
      this.#c.limits.reached('pull-rate', { peer, what: `reasons to pull from one peer within ${PULL_MIN_INTERVAL_MS} ms are folded into one pull` })
      return
    }
    const now = Date.now()
    const waitMs = (this.#nextPullMs.get(peer) ?? 0) - now
    if (waitMs > 0) {
      const t = setTimeout(() => {
        this.#deferred.delete(peer)
        this.pull(peer)
      }, waitMs)
      t.unref()
      this.#deferred.set(peer, t)
      return
    }
    this.#startPull(peer, now)
  }

  #startPull (peer: string, nowMs: number): void {
    this.#nextPullMs.set(peer, nowMs + PULL_MIN_INTERVAL_MS)
    const state = { again: false }
    this.#pulls.set(peer, state)
    this.#track((async () => {
      try {
        // A cut answer is continued at once (the server had more than one answer may carry), as
        // long as it brings something and within a bound, so a peer cannot keep this node pulling.
        for (let continuations = 0; ; continuations++) {
          state.again = false
          const result = await this.#pullOnce(peer)
          if (!result.isCut || result.changed === 0 || continuations >= MAX_PULL_CONTINUATIONS || this.#controller.signal.aborted) break
        }
      } finally {
        this.#pulls.delete(peer)
      }
      if (state.again) this.pull(peer)
    })())
  }

  #schedule (): void {
    this.#timer = setTimeout(() => {
      const now = Date.now()
      for (const [peer, atMs] of this.#nextPullMs) if (atMs < now && !this.#deferred.has(peer)) this.#nextPullMs.delete(peer)
      this.#served.expire(now)
      const peer = this.#c.node.randomPeer()
      if (peer !== undefined) this.pull(peer)
      if (!this.#controller.signal.aborted) this.#schedule()
    }, jitter(this.#init.pullIntervalMs))
    this.#timer.unref()
  }

  async #pullOnce (peer: string): Promise<PullResult> {
    const { node, index, own, counters, log, limits } = this.#c
    const conn = node.connection(peer)
    if (conn === undefined) return { changed: 0, isCut: false }
    const signal = AbortSignal.any([this.#controller.signal, AbortSignal.timeout(PULL_TIMEOUT_MS)])
    let stream: Stream | undefined
    /** Verified records not applied yet, with the statements as they arrived (to serve again without rebuilding them). */
    let batch: Array<{ record: IncomingRecord, bytes: Uint8Array }> = []
    let batchBytes = 0
    const changed: string[] = []
    const applyBatch = (): void => {
      if (batch.length === 0) return
      const now = Date.now()
      const applied = index.applyFull(batch.map((b) => b.record), now)
      const bytesOf = new Map(batch.map((b) => [b.record.origin, b.bytes]))
      for (const origin of applied) {
        const rec = index.get(origin)
        const bytes = bytesOf.get(origin)
        // A copy: the frame it views may be a larger buffer.
        if (rec !== undefined && bytes !== undefined) this.#served.set(origin, rec.epoch, rec.seq, bytes.slice(), now)
      }
      changed.push(...applied)
      batch = []
      batchBytes = 0
    }
    try {
      stream = await conn.newStream(PULL_PROTOCOL, { signal })
      const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES, maxBufferSize: MAX_FRAME_BYTES + PREFIX_ROOM })
      const versions: VersionEntry[] = [{ origin: node.peerId, epoch: own.epoch, seq: own.seq }, ...index.versions()]
      await lp.write(encodePullRequest(versions), { signal })
      let bytes = 0
      let records = 0
      let isCut = false
      for (;;) {
        const frame = (await lp.read({ signal })).subarray()
        bytes += frame.byteLength
        const f = decodePullResponse(frame)
        if (f.type === FrameType.PullEnd) {
          isCut = f.isCut
          break
        }
        if (f.type !== FrameType.RecordSame) records++
        // An honest server stops below both (the same limits); this one did not: keep what was
        // verified so far, drop the rest.
        if (bytes > MAX_PULL_REPLY_BYTES || records > MAX_PULL_REPLY_RECORDS) {
          const limit = bytes > MAX_PULL_REPLY_BYTES ? 'pull-reply-bytes' : 'pull-reply-records'
          limits.reached(limit, { peer, what: 'a peer\'s pull answer ran past the limit; the rest was not read' })
          throw new PullLimitError(limit)
        }
        const now = Date.now()
        if (f.type === FrameType.Record) {
          const record = this.#acceptRecord(f, peer, now)
          if (record !== undefined) {
            batch.push({ record, bytes: f.statement.bytes })
            batchBytes += f.statement.bytes.byteLength
            if (batchBytes >= APPLY_BATCH_BYTES) applyBatch()
          }
        } else if (f.type === FrameType.RecordSame) {
          // A hop-local hint: extends the liveness of a record held at that epoch, nothing more.
          if (f.origin !== node.peerId) index.heard(f.origin, f.epoch, now, f.ageMs)
        } else if (this.#c.auth.verify(f.statement)) {
          if (f.statement.origin === node.peerId) this.#c.onOwnStatement(f.statement)
          else this.#c.onGoodbye(f.statement, peer)
        } else {
          this.#c.refusals.refuse('bad-signature', peer, { origin: f.statement.origin, what: 'goodbye in a pull answer is not signed by its origin' })
        }
      }
      applyBatch()
      await stream.close({ signal })
      counters.pullsOk++
      if (!this.#hasPulled) log.info({ peer, records: index.recordCount }, 'index synced')
      this.#hasPulled = true
      if (changed.length > 0) log.debug({ peer, changed: changed.length, isCut }, 'pulled records')
      return { changed: changed.length, isCut }
    } catch (err) {
      // What was verified before the failure is as good as any record: keep it.
      applyBatch()
      counters.pullsFailed++
      if (err instanceof Error && err.name === 'CodecError') this.#c.refusals.refuse('malformed', peer, { what: 'pull answer does not decode', err: err.message })
      else if (isOversized(err)) this.#c.refusals.refuse('oversized', peer, { what: 'pull answer frame longer than the limit', err })
      stream?.abort(err instanceof Error ? err : new Error(String(err)))
      if (!this.#controller.signal.aborted) log.debug({ peer, err }, 'pull failed')
      return { changed: changed.length, isCut: false }
    } finally {
      if (changed.length > 0) {
        this.#c.onRecords(changed)
        // Direct peers hear of the new versions at once (and pull them), hop by hop, instead of at
        // the next heartbeat.
        const versions = changed.flatMap((origin) => {
          const rec = index.get(origin)
          return rec === undefined ? [] : [{ origin, epoch: rec.epoch, seq: rec.seq }]
        })
        if (versions.length > 0) this.#c.broadcast(encodeHave(versions), peer)
      }
    }
  }

  /** A record from a pull answer, verified; undefined (and counted) when it is refused or not news. */
  #acceptRecord (f: RecordFrame, from: string, nowMs: number): IncomingRecord | undefined {
    const { auth, index, refusals } = this.#c
    const s = f.statement
    if (!auth.verify(s)) {
      refusals.refuse('bad-signature', from, { origin: s.origin, what: `record ${s.epoch}/${s.seq} is not signed by its origin` })
      return undefined
    }
    if (s.origin === auth.selfId) {
      this.#c.onOwnStatement(s)
      return undefined
    }
    if (!index.isBehind(s.origin, s.epoch, s.seq)) {
      index.heard(s.origin, s.epoch, nowMs, f.ageMs)
      return undefined
    }
    let body: RecordBody
    try {
      body = decodeRecordPayload(s.payload)
    } catch (err) {
      refusals.refuse('malformed', from, { origin: s.origin, what: 'signed record does not decode', err: (err as Error).message })
      return undefined
    }
    const claims = checkAddressClaims(body.registryAddress, body.addrs)
    if (typeof claims === 'string') {
      refusals.refuse('bad-address', from, { origin: s.origin, what: claims })
      return undefined
    }
    return { origin: s.origin, epoch: s.epoch, seq: s.seq, ageMs: f.ageMs, body, claims, signature: s.signature }
  }

  async #serve (stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString()
    const { limits } = this.#c
    const perPeer = this.#serving.get(from) ?? 0
    if (perPeer >= MAX_PULLS_SERVED_PER_PEER || this.#servingTotal >= MAX_PULLS_SERVED) {
      if (perPeer >= MAX_PULLS_SERVED_PER_PEER) limits.reached('pulls-served-peer', { peer: from, what: `${perPeer} pulls of this peer are being answered; another is refused` })
      else limits.reached('pulls-served-total', { peer: from, what: `${this.#servingTotal} pulls are being answered; another is refused` })
      stream.abort(new Error('too many pulls being answered'))
      return
    }
    this.#serving.set(from, perPeer + 1)
    this.#servingTotal++
    try {
      await this.#answer(stream, from)
    } finally {
      this.#servingTotal--
      const left = (this.#serving.get(from) ?? 1) - 1
      if (left > 0) this.#serving.set(from, left)
      else this.#serving.delete(from)
    }
  }

  /**
   * Answers one pull, writing each frame as it is built and waiting for the requester to take it
   * (so an answer holds about one record, not the index), up to the per-answer limits; an answer
   * cut there says so in its end frame, and the requester pulls again for the rest.
   */
  async #answer (stream: Stream, from: string): Promise<void> {
    const { node, index, own, counters, limits } = this.#c
    const signal = AbortSignal.any([this.#controller.signal, AbortSignal.timeout(PULL_TIMEOUT_MS)])
    let stalled: AbortSignal | undefined
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_CONTROL_FRAME_BYTES, maxBufferSize: MAX_CONTROL_FRAME_BYTES + PREFIX_ROOM })
      // A requester that opens a pull and never sends its request is cut as one that never reads.
      stalled = AbortSignal.timeout(PULL_WRITE_STALL_MS)
      const req = decodePullRequest((await lp.read({ signal: AbortSignal.any([signal, stalled]) })).subarray())
      // Its timer runs on; a failure later is a stall only if a later wait set a fresh one that fired.
      stalled = undefined
      const theirs = new Map<string, VersionEntry>()
      for (const v of req.versions) theirs.set(v.origin, v)
      let bytes = 0
      let records = 0
      let isCut = false
      /**
       * Frames not sent yet. Each stream.send is a yamux frame of its own, with its noise message,
       * its socket writes and a window update from the requester; an idle cluster's answers are
       * one small "same" frame per record (30 records, 60 sends and 60 window updates per pull
       * when each frame and its length prefix were sent apart), so frames go out together, up to
       * ANSWER_SEND_BYTES at a time.
       */
      const pending: Uint8Array[] = []
      let pendingBytes = 0
      /**
       * Sends what is pending: runs of small parts copied into one buffer, a large part (a
       * record's statement) as it is, so answers stalled on the same record still share its bytes.
       * Waits until the requester took enough of it when the muxer is full.
       */
      const send = async (): Promise<void> => {
        if (pending.length === 0) return
        let isWritable = true
        let run = 0
        let runBytes = 0
        const sendRun = (end: number): void => {
          if (end > run) isWritable = stream.send(end - run === 1 ? pending[run]! : Buffer.concat(pending.slice(run, end), runBytes))
          runBytes = 0
        }
        for (let i = 0; i < pending.length; i++) {
          const part = pending[i]!
          if (part.byteLength < ANSWER_COPY_BELOW_BYTES) {
            runBytes += part.byteLength
            continue
          }
          sendRun(i)
          isWritable = stream.send(part)
          run = i + 1
        }
        sendRun(pending.length)
        pending.length = 0
        pendingBytes = 0
        if (isWritable) return
        stalled = AbortSignal.timeout(PULL_WRITE_STALL_MS)
        await once(stream, 'drain', { signal: AbortSignal.any([signal, stalled]) })
      }
      /**
       * Queues one frame (given in parts, so a record's statement is sent from the bytes held, not
       * copied: answers stalled on the same record share it), sending once ANSWER_SEND_BYTES are
       * queued; false when the answer is full.
       */
      const write = async (parts: Uint8Array[], isRecord: boolean): Promise<boolean> => {
        if (isCut) return false
        const frameBytes = parts.reduce((n, p) => n + p.byteLength, 0)
        // Room is kept for the end frame.
        if (bytes + frameBytes + 2 > MAX_PULL_REPLY_BYTES || (isRecord && records >= MAX_PULL_REPLY_RECORDS)) {
          isCut = true
          const limit = records >= MAX_PULL_REPLY_RECORDS ? 'pull-reply-records' : 'pull-reply-bytes'
          limits.reached(limit, { peer: from, what: 'a pull answer was cut at its limit; the requester pulls again for the rest' })
          return false
        }
        bytes += frameBytes
        if (isRecord) records++
        pending.push(lengthPrefix(frameBytes), ...parts)
        pendingBytes += frameBytes
        if (pendingBytes >= ANSWER_SEND_BYTES) await send()
        return true
      }
      let theyAreAhead = false

      const mine = theirs.get(node.peerId)
      if (mine === undefined || isNewer(own.epoch, own.seq, mine)) await write([recordFrameHead(0), own.statement().bytes], true)
      else await write([encodeRecordSame({ origin: node.peerId, epoch: own.epoch, seq: own.seq, ageMs: 0 })], false)

      let needed: IndexRecord[] = []
      let neededKeys = 0
      const flush = async (): Promise<void> => {
        const batch = needed
        needed = []
        neededKeys = 0
        const now = Date.now()
        for (const [rec, statement] of this.#statements(batch, now)) {
          if (!await write([recordFrameHead(now - rec.lastHeardMs), statement], true)) return
        }
      }
      // A snapshot of who is held: the index may change while the answer waits on the requester.
      for (const rec of [...index.records()]) {
        if (isCut) break
        const now = Date.now()
        if (index.get(rec.origin) !== rec || !index.isAlive(rec, now)) continue
        const t = theirs.get(rec.origin)
        if (t === undefined || isNewer(rec.epoch, rec.seq, t)) {
          needed.push(rec)
          neededKeys += rec.keyCount
          if (neededKeys >= REBUILD_BATCH_KEYS) await flush()
        } else if (t.epoch === rec.epoch && t.seq === rec.seq) {
          await write([encodeRecordSame({ origin: rec.origin, epoch: rec.epoch, seq: rec.seq, ageMs: now - rec.lastHeardMs })], false)
        } else {
          theyAreAhead = true
        }
      }
      if (!isCut) await flush()
      for (const t of theirs.values()) {
        if (isCut) break
        if (t.origin === node.peerId || index.get(t.origin) !== undefined) continue
        const goodbye = index.isTombstoned(t.origin, t.epoch) ? index.goodbyeStatement(t.origin) : undefined
        if (goodbye !== undefined) await write([encodeRecordGone(goodbye)], true)
        // They hold a record we lack (or let expire); it is worth pulling back.
        else if (t.origin !== from) theyAreAhead = true
      }
      if (theirs.size > 0 && index.isBehind(from, theirs.get(from)?.epoch ?? 0, theirs.get(from)?.seq ?? 0)) theyAreAhead = true
      const end = encodePullEnd(isCut)
      pending.push(lengthPrefix(end.byteLength), end)
      await send()
      stalled = AbortSignal.timeout(PULL_WRITE_STALL_MS)
      await stream.close({ signal: AbortSignal.any([signal, stalled]) })
      counters.syncsServed++
      // Through the per-peer pull rate like any other reason to pull.
      if (theyAreAhead) this.pull(from)
    } catch (err) {
      if (err instanceof Error && err.name === 'CodecError') this.#c.refusals.refuse('malformed', from, { what: 'pull request does not decode', err: err.message })
      else if (isOversized(err)) this.#c.refusals.refuse('oversized', from, { what: 'pull request longer than the limit', err })
      else if (stalled?.aborted === true && !signal.aborted) limits.reached('pull-stalled', { peer: from, what: `the requester sent no request or took no frame for ${PULL_WRITE_STALL_MS} ms; the pull was cut` })
      stream.abort(err instanceof Error ? err : new Error(String(err)))
      if (!this.#controller.signal.aborted) this.#c.log.debug({ peer: from, err }, 'serving a pull failed')
    }
  }

  /**
   * The signed statements of `recs`, as their origins signed them: from the cache, or rebuilt
   * from the index (one scan of the key map for all of them) and verified before they are served.
   * A record that does not verify means its origin signed a delta that does not lead to the
   * record it signed: it is dropped, and pulled whole again later.
   */
  #statements (recs: readonly IndexRecord[], nowMs: number): Array<[IndexRecord, Uint8Array]> {
    const out: Array<[IndexRecord, Uint8Array]> = []
    const missing: IndexRecord[] = []
    for (const rec of recs) {
      // Gone or replaced while the answer waited on its requester: not served from this batch.
      if (this.#c.index.get(rec.origin) !== rec) continue
      const cached = this.#served.get(rec.origin, rec.epoch, rec.seq, nowMs)
      if (cached !== undefined) out.push([rec, cached])
      else missing.push(rec)
    }
    if (missing.length === 0) return out
    const { index, auth } = this.#c
    const keys = index.keysOf(missing.map((r) => r.origin))
    for (const rec of missing) {
      const body = index.recordBody(rec, keys.get(rec.origin) ?? [])
      const payload = encodeRecordPayload({ ...body, keyCount: body.keys.length })
      const s = { kind: StatementKind.Record, origin: rec.origin, epoch: rec.epoch, seq: rec.seq, payload, signature: rec.signature }
      if (!auth.verify(s)) {
        this.#c.refusals.refuse('bad-signature', rec.origin, { origin: rec.origin, what: `record ${rec.epoch}/${rec.seq} built from its signed deltas does not match the record it signed` })
        index.drop(rec.origin, nowMs)
        continue
      }
      const bytes = encodeStatement(s)
      this.#served.set(rec.origin, rec.epoch, rec.seq, bytes, nowMs)
      out.push([rec, bytes])
    }
    return out
  }

  #track (p: Promise<unknown>): void {
    const tracked = p.catch((err: unknown) => { this.#c.log.error({ err }, 'router task failed') })
      .finally(() => { this.#tasks.delete(tracked) })
    this.#tasks.add(tracked)
  }
}

function isNewer (epoch: number, seq: number, than: VersionEntry): boolean {
  return epoch > than.epoch || (epoch === than.epoch && seq > than.seq)
}

/** A peer's pull answer ran past a limit; the records verified before it are kept. */
class PullLimitError extends Error {
  constructor (limit: string) {
    super(`pull answer past the ${limit} limit`)
    this.name = 'PullLimitError'
  }
}
