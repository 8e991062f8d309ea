// Bundles and minifies the compiled node (dist/src/main.js) into the file the image runs and the
// chunks it imports on demand (see `bundle`).
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
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'

const dist = process.argv[2] ?? 'dist'

/**
 * Bundles `entry` into `outfile`, both under `dist`, as the image's bundle is built. With
 * `split`, code that only some commands or some requests load goes into chunk files beside
 * `outfile` (`<name>.chunk-<hash>.js`), read when first imported: `spegel registry` then never
 * loads doctor, the init containers' commands or undici (0.5 MB, used only by the debug page's
 * measure, src/web/measure.ts), and V8 keeps 0.66 MB less source per node (1.47 MB of the
 * 2.13 MB bundle), while `spegel configuration` and `cleanup` in the init containers read a
 * fraction of it. The chunks sit in the bundle's own directory, so code that resolves paths
 * against its own URL (package.json, proto/, the page script) finds them as before.
 */
async function bundle (entry, outfile, { split = false } = {}) {
  const outDir = path.join(dist, path.dirname(outfile))
  const name = path.basename(outfile, '.js')
  const chunkPrefix = `${name.replace(/\.bundle$/, '')}.chunk-`
  // Chunk names change with their content: last build's would pile up (and ship in the image).
  if (existsSync(outDir)) for (const f of readdirSync(outDir)) if (f.startsWith(chunkPrefix) || f === `${name}.js.LEGAL.txt`) rmSync(path.join(outDir, f))
  const { metafile } = await build({
    entryPoints: { [name]: path.join(dist, entry) },
    outdir: outDir,
    ...(split ? { splitting: true, chunkNames: `${chunkPrefix}[hash]` } : {}),
    metafile: true,
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
    // <outfile>.LEGAL.txt, which ships beside the bundle (the chunks' notices joined into it below).
    charset: 'ascii',
    legalComments: 'external',
    logLevel: 'warning'
  })
  // One notices file, whatever the chunks: esbuild writes one per output file that has any.
  const legal = Object.keys(metafile.outputs).filter((f) => f.endsWith('.LEGAL.txt')).sort()
  const joined = legal.map((f) => readFileSync(f, 'utf8')).join('\n')
  for (const f of legal) rmSync(f)
  if (joined !== '') writeFileSync(path.join(outDir, `${name}.js.LEGAL.txt`), joined)
  // The check that keeps it so: a non-ASCII byte anywhere doubles the source's heap.
  for (const file of Object.keys(metafile.outputs).filter((f) => f.endsWith('.js'))) {
    const out = readFileSync(file)
    const at = out.findIndex((b) => b > 0x7f)
    if (at !== -1) {
      const line = out.subarray(0, at).toString('latin1').split('\n').length
      console.error(`bundle.mjs: ${file} has a non-ASCII byte at line ${line}; V8 would hold its whole source two bytes per character. Find what esbuild copied verbatim there (a comment?) and keep it out of the bundle.`)
      process.exit(1)
    }
  }
}

await bundle('src/main.js', 'src/cli/spegel.bundle.js', { split: true })
// The router-only process of the idle and scale benchmarks, in the form the image ships, so
// their memory readings are not inflated by module-by-module loading (bench/router-cluster.ts).
if (existsSync(path.join(dist, 'bench/cluster-scale-node.js'))) await bundle('bench/cluster-scale-node.js', 'bench/cluster-scale-node.bundle.js')
