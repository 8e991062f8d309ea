// Bundles and minifies the compiled node (dist/src/main.js) into one file, which the image runs.
// An idle node that loads the bundle holds about 11 MiB less than one that loads dist/src and
// node_modules module by module: V8 keeps every module's source text as a string (about 10 MiB
// in a full node, comments and unused exports included) and a record, scope data and
// compiled code for each of the ~700 modules (docs/image.md, Memory).
//
// The bundle sits beside dist/src/cli/version.js, so the paths the code resolves against its own
// URL (package.json three levels up, proto/ found upwards) hold in either form; the page script
// is looked up in both places (src/web/debug.ts). Tests run dist/src/main.js; the image test and
// the benchmarks (unless given --modules) run the bundle.
//
//   node scripts/bundle.mjs [dist]
import { build } from 'esbuild'
import path from 'node:path'

const dist = process.argv[2] ?? 'dist'
await build({
  entryPoints: [path.join(dist, 'src/main.js')],
  outfile: path.join(dist, 'src/cli/spegel.bundle.js'),
  bundle: true,
  minify: true,
  platform: 'node',
  format: 'esm',
  target: 'node22',
  // CommonJS dependencies call require() for Node's built-in modules; an ES module has none.
  banner: { js: "import { createRequire as __spegelRequire } from 'node:module'; const require = __spegelRequire(import.meta.url);" },
  logLevel: 'warning'
})
