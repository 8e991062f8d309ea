import fs from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { execFile } from 'node:child_process'

export const DEFAULT_CONTAINERD_SOCK = '/run/containerd/containerd.sock'

/** Where distributions put containerd's socket, in the order we try them. */
export const WELL_KNOWN_SOCKETS: ReadonlyArray<{ path: string, distribution: string }> = [
  { path: DEFAULT_CONTAINERD_SOCK, distribution: 'containerd' },
  { path: '/run/k3s/containerd/containerd.sock', distribution: 'k3s/RKE2' },
  { path: '/run/k0s/containerd.sock', distribution: 'k0s' },
  { path: '/var/snap/microk8s/common/run/containerd.sock', distribution: 'MicroK8s' }
]

export type SocketProblem =
  | 'socket-missing'
  | 'not-a-socket'
  | 'permission-denied'
  | 'selinux-denied'
  | 'connection-refused'
  | 'not-serving'
  | 'unknown'

export interface SocketDiagnosis {
  readonly problem: SocketProblem
  /** errno name when the OS gave one (ENOENT, ECONNREFUSED, EACCES, ...). */
  readonly errno?: string
  readonly socketPath: string
  /** One line, operator-facing: what is wrong. */
  readonly message: string
  /** One or two sentences: how to fix it. */
  readonly fix: string
  readonly details: Readonly<Record<string, unknown>>
}

export interface SocketChoice {
  readonly socketPath: string
  readonly source: 'flag' | 'default' | 'well-known'
  readonly distribution?: string
  /** Well-known sockets that exist on this node. */
  readonly candidatesFound: readonly string[]
}

async function isSocket (p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isSocket()
  } catch {
    return false
  }
}

export async function findWellKnownSockets (): Promise<string[]> {
  const found: string[] = []
  for (const candidate of WELL_KNOWN_SOCKETS) {
    if (await isSocket(candidate.path)) found.push(candidate.path)
  }
  return found
}

/**
 * Picks the socket: an explicit --containerd-sock/CONTAINERD_SOCK always wins; otherwise the
 * default path if it exists, else the first well-known path that exists, else the default.
 */
export async function chooseSocket (configured: string, isExplicit: boolean): Promise<SocketChoice> {
  const candidatesFound = await findWellKnownSockets()
  if (isExplicit) return { socketPath: configured, source: 'flag', candidatesFound }
  if (await isSocket(configured)) return { socketPath: configured, source: 'default', candidatesFound }
  const first = WELL_KNOWN_SOCKETS.find((c) => candidatesFound.includes(c.path))
  if (first !== undefined) return { socketPath: first.path, source: 'well-known', distribution: first.distribution, candidatesFound }
  return { socketPath: configured, source: 'default', candidatesFound }
}

/** Opens and closes a raw connection: the OS then tells exactly why a dial fails. */
export function probeSocket (socketPath: string, timeoutMs = 2000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ path: socketPath })
    const timer = setTimeout(() => { socket.destroy(); resolve('ETIMEDOUT') }, timeoutMs)
    socket.once('connect', () => { clearTimeout(timer); socket.destroy(); resolve(undefined) })
    socket.once('error', (err: NodeJS.ErrnoException) => { clearTimeout(timer); socket.destroy(); resolve(err.code ?? 'EUNKNOWN') })
  })
}

export interface ProcessIdentity {
  readonly uid: number
  readonly gid: number
  readonly groups: readonly number[]
}

export function currentIdentity (): ProcessIdentity {
  return {
    uid: process.getuid?.() ?? -1,
    gid: process.getgid?.() ?? -1,
    groups: process.getgroups?.() ?? []
  }
}

export interface SelinuxState {
  readonly mode: 'enforcing' | 'permissive' | 'disabled'
  readonly processLabel?: string
}

export async function selinuxState (): Promise<SelinuxState> {
  let mode: SelinuxState['mode'] = 'disabled'
  try {
    const enforce = (await fs.readFile('/sys/fs/selinux/enforce', 'utf8')).trim()
    mode = enforce === '1' ? 'enforcing' : 'permissive'
  } catch {
    return { mode }
  }
  let processLabel: string | undefined
  try {
    processLabel = (await fs.readFile('/proc/self/attr/current', 'utf8')).replace(/\0/g, '').trim()
  } catch {
    processLabel = undefined
  }
  return processLabel === undefined ? { mode } : { mode, processLabel }
}

/** The SELinux label of a file, via coreutils' stat (Node has no getxattr); undefined when unknown. */
export function fileSelinuxLabel (filePath: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile('stat', ['-c', '%C', filePath], { timeout: 2000 }, (err, stdout) => {
      const label = stdout.trim()
      resolve(err !== null || label === '' || label === '?' ? undefined : label)
    })
  })
}

function modeString (mode: number): string {
  return '0' + (mode & 0o7777).toString(8)
}

export interface AccessAnalysis {
  readonly canConnect: boolean
  /** Why not, naming the directory or file and the bits. */
  readonly explanation?: string
  readonly mode?: string
  readonly ownerUid?: number
  readonly ownerGid?: number
}

function allowed (st: { mode: number, uid: number, gid: number }, who: ProcessIdentity, bits: { owner: number, group: number, other: number }): boolean {
  if (who.uid === 0) return true
  if (st.uid === who.uid) return (st.mode & bits.owner) === bits.owner
  if (st.gid === who.gid || who.groups.includes(st.gid)) return (st.mode & bits.group) === bits.group
  return (st.mode & bits.other) === bits.other
}

/** Classic Unix permission check: search (x) on each parent directory, read+write on the socket. */
export async function analyseAccess (socketPath: string, who: ProcessIdentity = currentIdentity()): Promise<AccessAnalysis> {
  const dirs: string[] = []
  for (let d = path.dirname(socketPath); ; d = path.dirname(d)) {
    dirs.unshift(d)
    if (d === path.dirname(d)) break
  }
  for (const dir of dirs) {
    let st
    try {
      st = await fs.stat(dir)
    } catch {
      continue
    }
    if (!allowed(st, who, { owner: 0o100, group: 0o010, other: 0o001 })) {
      return { canConnect: false, explanation: `directory ${dir} (mode ${modeString(st.mode)}, owner ${st.uid}:${st.gid}) cannot be searched by uid ${who.uid}` }
    }
  }
  let st
  try {
    st = await fs.stat(socketPath)
  } catch {
    return { canConnect: false, explanation: `${socketPath} does not exist` }
  }
  const base = { mode: modeString(st.mode), ownerUid: st.uid, ownerGid: st.gid }
  if (!allowed(st, who, { owner: 0o600, group: 0o060, other: 0o006 })) {
    return {
      ...base,
      canConnect: false,
      explanation: `socket mode ${modeString(st.mode)} owner ${st.uid}:${st.gid} gives uid ${who.uid} (gid ${who.gid}, groups ${who.groups.join(',') || 'none'}) no read+write access`
    }
  }
  return { ...base, canConnect: true }
}

function describeCandidates (socketPath: string, found: readonly string[]): string {
  const others = found.filter((p) => p !== socketPath)
  return others.length > 0
    ? `containerd sockets found on this node: ${others.join(', ')}; set --containerd-sock (env CONTAINERD_SOCK) to one of them`
    : `no containerd socket found in the well-known places (${WELL_KNOWN_SOCKETS.map((c) => c.path).join(', ')}); check that containerd runs on this node and mount the socket's directory (not the socket file) into the pod`
}

/**
 * Turns a failed dial into a precise reason and fix. `errno` comes from probeSocket;
 * undefined errno with `notServing` means the socket accepted but containerd's API did not answer.
 */
export async function diagnoseSocket (socketPath: string, errno: string | undefined, notServing?: string): Promise<SocketDiagnosis> {
  const found = await findWellKnownSockets()
  if (errno === undefined) {
    return {
      problem: 'not-serving',
      socketPath,
      message: `containerd at ${socketPath} accepted the connection but its API did not answer: ${notServing ?? 'unknown error'}`,
      fix: 'check that this is containerd\'s gRPC socket (not the ttrpc or CRI-only socket) and that containerd is healthy (journalctl -u containerd)',
      details: {}
    }
  }
  if (errno === 'ENOENT') {
    return {
      problem: 'socket-missing',
      errno,
      socketPath,
      message: `containerd socket ${socketPath} does not exist`,
      fix: `${describeCandidates(socketPath, found)}; if containerd is still starting, this node waits and connects when it appears`,
      details: { candidatesFound: found }
    }
  }
  if (errno === 'ENOTSOCK' || errno === 'ENOTDIR') {
    return {
      problem: 'not-a-socket',
      errno,
      socketPath,
      message: `${socketPath} is not a unix socket`,
      fix: describeCandidates(socketPath, found),
      details: { candidatesFound: found }
    }
  }
  if (errno === 'ECONNREFUSED') {
    let isSock = false
    try {
      isSock = (await fs.stat(socketPath)).isSocket()
    } catch {
      isSock = false
    }
    return {
      problem: isSock ? 'connection-refused' : 'not-a-socket',
      errno,
      socketPath,
      message: isSock
        ? `containerd socket ${socketPath} refuses connections (containerd is not running, or restarted and left a stale socket)`
        : `${socketPath} is not a unix socket`,
      fix: isSock
        ? 'start containerd (systemctl status containerd); if it runs, mount the socket\'s directory instead of the socket file so a restarted containerd\'s new socket is seen'
        : describeCandidates(socketPath, found),
      details: { candidatesFound: found }
    }
  }
  if (errno === 'EACCES' || errno === 'EPERM') {
    const who = currentIdentity()
    const access = await analyseAccess(socketPath, who)
    const selinux = await selinuxState()
    const label = await fileSelinuxLabel(socketPath)
    const details = { uid: who.uid, gid: who.gid, groups: who.groups, ...access, selinux: selinux.mode, processLabel: selinux.processLabel, socketLabel: label }
    if (access.canConnect && selinux.mode === 'enforcing') {
      return {
        problem: 'selinux-denied',
        errno,
        socketPath,
        message: `SELinux (enforcing) denies connecting to ${socketPath} (socket label ${label ?? 'unknown'}, process label ${selinux.processLabel ?? 'unknown'})`,
        fix: 'run the pod with securityContext.seLinuxOptions.type: spc_t (the Helm chart value), or label the socket for container access',
        details
      }
    }
    return {
      problem: 'permission-denied',
      errno,
      socketPath,
      message: `permission denied on ${socketPath}: ${access.explanation ?? `mode ${access.mode ?? '?'}`}`,
      fix: `run spegel as root (uid 0) or as a member of group ${access.ownerGid ?? '?'} owning the socket; containerd creates it as root:root 0660`,
      details
    }
  }
  return {
    problem: 'unknown',
    errno,
    socketPath,
    message: `cannot connect to containerd at ${socketPath}: ${errno}`,
    fix: describeCandidates(socketPath, found),
    details: { candidatesFound: found }
  }
}

/** Whether this process can list and read the content store's blob files directly. */
export async function contentPathReadable (contentPath: string): Promise<{ readable: boolean, reason?: string }> {
  if (contentPath === '') return { readable: false, reason: 'no content path configured' }
  const blobs = path.join(contentPath, 'blobs')
  try {
    await fs.access(blobs, fs.constants.R_OK | fs.constants.X_OK)
    return { readable: true }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EUNKNOWN'
    return { readable: false, reason: `${blobs}: ${code}` }
  }
}
