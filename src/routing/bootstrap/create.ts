import { ConfigError, type RegistryConfig } from '../../config/index.js'
import type { Logger } from '../../observability/logger.js'
import { dnsBootstrapper } from './dns.js'
import { httpBootstrapper } from './http.js'
import { staticBootstrapper } from './static.js'
import type { Bootstrapper } from './types.js'

/** The slice of the registry configuration the bootstrappers read. */
export type BootstrapConfig = Pick<RegistryConfig,
  'bootstrapKind' | 'dnsBootstrapDomain' | 'httpBootstrapAddr' | 'httpBootstrapUrl' |
  'httpBootstrapCertDir' | 'staticBootstrapPeers' | 'routerAddr'>

export interface BootstrapComponents {
  log?: Logger
}

/**
 * Builds the bootstrapper --bootstrap-kind names. Certificates are loaded here, as Spegel does,
 * so a bad cert dir stops startup. Throws ConfigError naming the flag at fault.
 */
export function createBootstrapper (config: BootstrapConfig, components: BootstrapComponents = {}): Bootstrapper {
  const kind: string = config.bootstrapKind
  switch (kind) {
    case 'static':
      return staticBootstrapper(config.staticBootstrapPeers)
    case 'dns': {
      if (config.dnsBootstrapDomain === '') {
        const fix = 'set --dns-bootstrap-domain (env DNS_BOOTSTRAP_DOMAIN) to a name that resolves to the Spegel pods'
        throw new ConfigError(`--dns-bootstrap-domain is required with --bootstrap-kind dns; ${fix}`, { flag: '--dns-bootstrap-domain', fix })
      }
      // Every node listens on the same router port (Spegel's assumption), so answers can carry it.
      return dnsBootstrapper(config.dnsBootstrapDomain, { port: config.routerAddr.port })
    }
    case 'http': {
      if (config.httpBootstrapUrl === '' && config.httpBootstrapAddr === '') {
        const fix = 'set --http-bootstrap-url (env HTTP_BOOTSTRAP_URL) to the URL that lists peers, and/or --http-bootstrap-addr (env HTTP_BOOTSTRAP_ADDR) to serve this node\'s /id'
        throw new ConfigError(`--bootstrap-kind http needs --http-bootstrap-url or --http-bootstrap-addr; ${fix}`, { flag: '--http-bootstrap-url', fix })
      }
      const init = { addr: config.httpBootstrapAddr, url: config.httpBootstrapUrl, certDir: config.httpBootstrapCertDir }
      return components.log === undefined ? httpBootstrapper(init) : httpBootstrapper(init, { log: components.log })
    }
    default: {
      const fix = 'set --bootstrap-kind (env BOOTSTRAP_KIND) to dns, http or static'
      throw new ConfigError(`unknown bootstrap kind ${kind}; ${fix}`, { flag: '--bootstrap-kind', fix })
    }
  }
}
