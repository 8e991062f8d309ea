import { createRequire } from 'node:module'
import type * as NodeHttp from 'node:http'

/**
 * `node:http`, loaded with require. An ESM import of it builds the module namespace from every
 * export, and reading Node 24's lazy `WebSocket`, `CloseEvent` and `MessageEvent` exports loads
 * Node's bundled undici: about 2.8 MiB of heap (17 MiB of RSS at first) in every node, for
 * classes nothing here uses. Import values from here; `import type` from 'node:http' is free.
 */
export const http: typeof NodeHttp = createRequire(import.meta.url)('node:http')
