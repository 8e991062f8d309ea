/**
 * A network link in front of one loopback address, for benchmarks: everything the process bound to
 * `address` sends over `lo` leaves at `mbit` Mbit/s at most (an HTB class on lo's root qdisc, a u32
 * filter on the source address; other traffic passes unshaped).
 *
 * Why: on one machine a relay and the holder behind it share the CPU, so a relay that hashes what
 * it relays is measured against a holder that answers at memory speed. Between two machines the
 * holder's bytes arrive no faster than their network link; putting that link in front of the holder
 * compares the relay, one hop and nginx's relay behind the same link.
 *
 * Needs root and a kernel with HTB and u32 (CONFIG_NET_SCH_HTB, CONFIG_NET_CLS_U32). It replaces
 * lo's root qdisc, so it refuses when lo already has one that is not ours (the default is none:
 * `noqueue`), and removes it at the end, on failure and on a signal (bench/cluster-common.ts
 * onCleanup). A qdisc left behind by a killed run carries our handle and is replaced.
 */
import { execFileSync } from 'node:child_process'
import { run } from '../test/helpers/net.js'
import { onCleanup } from './cluster-common.js'

const DEV = 'lo'
/** Our qdisc's handle, so a leftover of a killed run is recognised. */
const HANDLE = '5e91'
const TC = 'tc'

export interface LinkLimit {
  /** Removes the qdisc (lo is back to unshaped). */
  remove: () => Promise<void>
  /** What it does, for the benchmark's log. */
  text: string
}

async function tc (args: readonly string[]): Promise<string> {
  let r
  try {
    r = await run(TC, args, { timeoutMs: 10_000 })
  } catch (err) {
    throw new Error(`${TC} ${args.join(' ')}: ${(err as Error).message} (apt-get install -y iproute2)`)
  }
  if (r.code !== 0) throw new Error(`${TC} ${args.join(' ')} failed (exit ${String(r.code)}): ${r.stderr.trim()}`)
  return r.stdout
}

/** Shapes what `address` (an IPv4 loopback address) sends to `mbit` Mbit/s. */
export async function limitSender (address: string, mbit: number): Promise<LinkLimit> {
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address)) throw new Error(`link limit: ${address} is not an IPv4 loopback address`)
  if (!Number.isInteger(mbit) || mbit <= 0) throw new Error(`link limit: rate must be a positive number of Mbit/s, got ${mbit}`)
  const current = await tc(['qdisc', 'show', 'dev', DEV])
  const root = current.split('\n').find((l) => / root /.test(l)) ?? ''
  if (root !== '' && !/^qdisc noqueue /.test(root) && !root.startsWith(`qdisc htb ${HANDLE}: `)) {
    throw new Error(`link limit: ${DEV} already has a root qdisc that is not this benchmark's (${root.trim()}); remove it or run without the link limit`)
  }
  if (root.startsWith(`qdisc htb ${HANDLE}: `)) await tc(['qdisc', 'del', 'dev', DEV, 'root'])
  // Unclassified traffic (default 0) bypasses the classes: only the filter's matches are shaped.
  await tc(['qdisc', 'add', 'dev', DEV, 'root', 'handle', `${HANDLE}:`, 'htb', 'default', '0'])
  const removeNow = (): void => {
    try { execFileSync(TC, ['qdisc', 'del', 'dev', DEV, 'root'], { stdio: 'ignore', timeout: 10_000 }) } catch { /* already gone */ }
  }
  const remove = onCleanup(`tc qdisc on ${DEV}`, async () => { await tc(['qdisc', 'del', 'dev', DEV, 'root']).catch(() => undefined) }, removeNow)
  try {
    // A burst of 1 ms at the rate (at least one 64 KiB loopback packet): a link with a short
    // queue; HTB's default burst (rate / HZ) is too small at these rates on a 64 KiB MTU.
    const burstBytes = Math.max(256 * 1024, Math.round(mbit * 1e6 / 8 / 1000))
    await tc(['class', 'add', 'dev', DEV, 'parent', `${HANDLE}:`, 'classid', `${HANDLE}:10`, 'htb',
      'rate', `${mbit}mbit`, 'ceil', `${mbit}mbit`, 'burst', String(burstBytes), 'cburst', String(burstBytes)])
    await tc(['filter', 'add', 'dev', DEV, 'parent', `${HANDLE}:`, 'protocol', 'ip', 'prio', '1', 'u32',
      'match', 'ip', 'src', `${address}/32`, 'flowid', `${HANDLE}:10`])
  } catch (err) {
    await remove()
    throw err
  }
  return { remove, text: `what ${address} sends is limited to ${mbit} Mbit/s (${(mbit / 8).toFixed(0)} MB/s; HTB on ${DEV})` }
}
