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
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'

const dist = process.argv[2] ?? 'dist'

/** Bundles `entry` into `outfile`, both under `dist`, as the image's bundle is built. */
async function bundle (entry, outfile) {
  await build({
    entryPoints: [path.join(dist, entry)],
    outfile: path.join(dist, outfile),
    bundle: true,
    minify: true,
    platform: 'node',
    format: 'esm',
    target: 'node22',
    // CommonJS dependencies call require() for Node's built-in modules; an ES module has none.
    banner: { js: "import { createRequire as __spegelRequire } from 'node:module'; const require = __spegelRequire(import.meta.url);" },
    // V8 keeps the bundle's source as a string for the node's lifetime, one byte per character
    // only if every character is Latin-1. esbuild escapes non-ASCII characters in code (charset
    // ascii) but copies license comments as they are, and one "ä" in a dependency's notice made
    // the 2.1 MB source a 4.2 MB two-byte string in every node. The notices go to
    // <outfile>.LEGAL.txt, which ships beside the bundle.
    charset: 'ascii',
    legalComments: 'external',
    logLevel: 'warning'
  })
  // The check that keeps it so: a non-ASCII byte anywhere doubles the source's heap.
  const out = readFileSync(path.join(dist, outfile))
  const at = out.findIndex((b) => b > 0x7f)
  if (at !== -1) {
    const line = out.subarray(0, at).toString('latin1').split('\n').length
    console.error(`bundle.mjs: ${outfile} has a non-ASCII byte at line ${line}; V8 would hold its whole source two bytes per character. Find what esbuild copied verbatim there (a comment?) and keep it out of the bundle.`)
    process.exit(1)
  }
}

await bundle('src/main.js', 'src/cli/spegel.bundle.js')
// The router-only process of the idle and scale benchmarks, in the form the image ships, so
// their memory readings are not inflated by module-by-module loading (bench/router-cluster.ts).
if (existsSync(path.join(dist, 'bench/cluster-scale-node.js'))) await bundle('bench/cluster-scale-node.js', 'bench/cluster-scale-node.bundle.js')
