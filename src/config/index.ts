export { ConfigError, type ConfigErrorInit } from './errors.js'
export { parseDuration } from './duration.js'
export { parseHostPort, type HostPort } from './host-port.js'
export type { LogLevel } from './values.js'
export type { Env, FlagValues, Setting, ScalarSetting, ListSetting, ValueSource } from './setting.js'
export { settingHelp } from './setting.js'
export type { BootstrapKind, OutputFormat } from './settings.js'
export {
  parseRegistryConfig, parseDoctorConfig, parseVersionConfig,
  parseConfigurationConfig, parseCleanupConfig, parseCleanupWaitConfig,
  registrySettings, doctorSettings, versionSettings, globalSettings,
  configurationSettings, cleanupSettings, cleanupWaitSettings,
  type RegistryConfig, type DoctorConfig, type VersionConfig, type ParseResult,
  type ConfigurationConfig, type CleanupConfig, type CleanupWaitConfig
} from './commands.js'
