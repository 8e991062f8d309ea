export {
  addMirrorConfiguration, cleanupMirrorConfiguration, templateHosts,
  BACKUP_PARTIAL_DIR, BACKUP_RESTORING_DIR, DIAL_TIMEOUT,
  type MirrorConfigComponents, type MirrorConfigurationInit, type WrittenHostsFile
} from './configure.js'
export { existingHosts, tableHeaderKeys, BACKUP_DIR, HOSTS_FILE } from './existing-hosts.js'
export { marshalGoToml } from './go-toml.js'
export { writeFileAtomic } from './atomic-write.js'
export {
  bracketIPv6Host, parseRegistryUrl, parseRegistryUrls, registryUrlProblems,
  WILDCARD_DIR, WILDCARD_REGISTRIES, WILDCARD_REGISTRY, type RegistryUrl
} from './registry-url.js'
export {
  parseHostsToml, readHostsConfigs, readHostsFile, DEFAULT_HOST_CAPABILITIES,
  type HostEntry, type HostsConfig
} from './read-hosts.js'
export { isMultiDirectory, literalRootTop, mirrorWriteRoots, splitConfigPath, type MirrorWriteRoot } from './config-path.js'
export {
  analyzeContainerdConfig, describeContainerdConfig, parseContainerdVersion,
  CONTAINERD_22_DEFAULT_CONFIG_PATH, DEFAULT_CONTAINERD_CONFIG,
  type AnalyzeContainerdConfigInput, type ConfigFileText, type ContainerdConfigAnalysis, type ContainerdConfigFinding,
  type ContainerdVersion, type CriImageSettings, type FindingId, type FindingSeverity, type PullPath
} from './containerd-config.js'
export {
  analyzeContainerdConfigFile, readContainerdConfigFiles,
  type ContainerdConfigFiles, type ContainerdConfigReport
} from './containerd-config-file.js'
