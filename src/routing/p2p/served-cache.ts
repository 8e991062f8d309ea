/**
 * Record statements kept to answer pulls without rebuilding them from the index (a scan of the
 * key map and a signature check per record).
 *
 * They earn their memory only while pulls come in bursts: a node joining pulls every record, and
 * every other node pulls the joiner's. In a converged cluster a pull finds nothing newer to send,
 * so a statement not served for `idleMs` is dropped: at 30 nodes × 5,000 keys the cache held one
 * 160 KB statement per origin, about 5 MiB of each idle node's RSS, for nothing. A later pull
 * rebuilds what it needs.
 */
export class ServedRecordCache {
  readonly #maxBytes: number
  readonly #idleMs: number
  /** Insertion order is eviction order (oldest first). */
  readonly #entries = new Map<string, { epoch: number, seq: number, bytes: Uint8Array, usedMs: number }>()
  #bytes = 0

  constructor (maxBytes: number, idleMs: number) {
    this.#maxBytes = maxBytes
    this.#idleMs = idleMs
  }

  /** Bytes of statements held. */
  get bytes (): number {
    return this.#bytes
  }

  get size (): number {
    return this.#entries.size
  }

  /** The statement of `origin`'s record at exactly `epoch`/`seq`, if held; counts as a use. */
  get (origin: string, epoch: number, seq: number, nowMs: number): Uint8Array | undefined {
    const e = this.#entries.get(origin)
    if (e === undefined || e.epoch !== epoch || e.seq !== seq) return undefined
    e.usedMs = nowMs
    return e.bytes
  }

  /** Holds `bytes` as `origin`'s statement at `epoch`/`seq`, in place of any older one. */
  set (origin: string, epoch: number, seq: number, bytes: Uint8Array, nowMs: number): void {
    this.#delete(origin)
    if (bytes.byteLength > this.#maxBytes) return
    while (this.#bytes + bytes.byteLength > this.#maxBytes) {
      const oldest = this.#entries.keys().next().value
      if (oldest === undefined) break
      this.#delete(oldest)
    }
    this.#entries.set(origin, { epoch, seq, bytes, usedMs: nowMs })
    this.#bytes += bytes.byteLength
  }

  /** Drops the statements not served for the idle time; returns how many. */
  expire (nowMs: number): number {
    let dropped = 0
    for (const [origin, e] of this.#entries) {
      if (nowMs - e.usedMs < this.#idleMs) continue
      this.#delete(origin)
      dropped++
    }
    return dropped
  }

  clear (): void {
    this.#entries.clear()
    this.#bytes = 0
  }

  #delete (origin: string): void {
    const e = this.#entries.get(origin)
    if (e === undefined) return
    this.#entries.delete(origin)
    this.#bytes -= e.bytes.byteLength
  }
}
