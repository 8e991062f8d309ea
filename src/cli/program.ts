import { Command, CommanderError, Option } from 'commander'
import {
  cleanupSettings, cleanupWaitSettings, configurationSettings, doctorSettings, globalSettings,
  parseCleanupConfig, parseCleanupWaitConfig, parseConfigurationConfig, parseDoctorConfig,
  parseRegistryConfig, parseVersionConfig, registrySettings, settingHelp, versionSettings,
  type CleanupConfig, type CleanupWaitConfig, type ConfigError, type ConfigurationConfig,
  type DoctorConfig, type ParseResult, type RegistryConfig, type Setting
} from '../config/index.js'
import { runVersion } from './version.js'

export interface CliHandlers {
  registry (config: RegistryConfig): Promise<number>
  doctor (config: DoctorConfig): Promise<number>
  configuration (config: ConfigurationConfig): Promise<number>
  cleanup (config: CleanupConfig): Promise<number>
  cleanupWait (config: CleanupWaitConfig): Promise<number>
}

export interface CliIo {
  stdout: (s: string) => void
  stderr: (s: string) => void
}

const processIo: CliIo = {
  stdout: (s) => { process.stdout.write(s) },
  stderr: (s) => { process.stderr.write(s) }
}

/** Argument errors, distinct from runtime failures (1), as go-arg does. */
const EXIT_USAGE = 2
const HELP_WIDTH = 100

type SubcommandName = 'registry' | 'doctor' | 'configuration' | 'cleanup' | 'cleanup-wait' | 'version'

interface Declared {
  setting: Setting<unknown>
  option: Option
}

function toOption (setting: Setting<unknown>): Option {
  const flag = `--${setting.flag}`
  const name = setting.valueName.replace(/\.\.\.$/, '')
  // Optional values give go-arg's forms: a bare bool flag means true, and a list flag may be
  // followed by zero or more values (and repeated; commander appends).
  const flags = setting.kind === 'bool'
    ? `${flag} [${name}]`
    : setting.kind === 'list' ? `${flag} [${name}...]` : `${flag} <${name}>`
  return new Option(flags, settingHelp(setting))
}

function declare (cmd: Command, settings: Iterable<Setting<unknown>>): Declared[] {
  const declared: Declared[] = []
  for (const setting of settings) {
    const option = toOption(setting)
    cmd.addOption(option)
    declared.push({ setting, option })
  }
  return declared
}

/** Commander's values back into the text go-arg would have seen; unset flags stay absent. */
function collect (cmd: Command, declared: readonly Declared[], into: Map<string, string | readonly string[]>): void {
  for (const { setting, option } of declared) {
    const value: unknown = cmd.getOptionValue(option.attributeName())
    if (value === undefined) continue
    if (setting.kind === 'list') {
      // `true` is commander's value for a list flag given without values: an explicit empty list.
      into.set(setting.flag, Array.isArray(value) ? value.map(String) : [])
    } else if (value === true) {
      into.set(setting.flag, 'true')
    } else {
      into.set(setting.flag, String(value))
    }
  }
}

function subcommandSettings (settings: Record<string, Setting<unknown>>): Setting<unknown>[] {
  const global = new Set<Setting<unknown>>(globalSettings)
  return Object.values(settings).filter((setting) => !global.has(setting))
}

/**
 * Parses `argv` (the user's arguments, i.e. process.argv.slice(2)) and `env`, then runs the
 * subcommand. Returns the exit code: 0 success, 1 runtime failure or no subcommand (as Spegel),
 * 2 argument error. Never exits the process; errors thrown by a handler propagate.
 */
export async function runCli (argv: string[], env: NodeJS.ProcessEnv, handlers: CliHandlers, io: CliIo = processIo): Promise<number> {
  const program = new Command('spegel')
  program
    .description('Stateless cluster-local OCI registry mirror for containerd (Spegel-compatible)')
    .exitOverride()
    // Output goes to the injected writers, so commander cannot ask a terminal for its width.
    .configureOutput({
      writeOut: io.stdout,
      writeErr: io.stderr,
      outputError: (s, write) => { write(s) },
      getOutHelpWidth: () => HELP_WIDTH,
      getErrHelpWidth: () => HELP_WIDTH
    })
    .configureHelp({ showGlobalOptions: true })
    .showSuggestionAfterError(true)
  const globalDeclared = declare(program, globalSettings)

  let selected: { name: SubcommandName, cmd: Command, declared: Declared[] } | undefined
  const subcommand = (name: SubcommandName, description: string, settings: Record<string, Setting<unknown>>): void => {
    const cmd = program.command(name).description(description)
      .showHelpAfterError(`(run 'spegel ${name} --help' for usage)`)
    const declared = declare(cmd, subcommandSettings(settings))
    cmd.action(() => { selected = { name, cmd, declared } })
  }
  subcommand('registry', 'run the registry mirror on this node (long-running)', registrySettings)
  subcommand('doctor', 'check containerd and its mirror configuration on this node', doctorSettings)
  subcommand('configuration', 'write containerd mirror configuration (hosts.toml) for this node, then exit', configurationSettings)
  subcommand('cleanup', 'restore the containerd configuration saved by configuration, then serve GET /readyz until stopped', cleanupSettings)
  subcommand('cleanup-wait', 'wait until every cleanup pod behind --probe-endpoint answers GET /readyz', cleanupWaitSettings)
  subcommand('version', 'print version information', versionSettings)
  program.showHelpAfterError("(run 'spegel --help' for usage)")

  try {
    await program.parseAsync(argv, { from: 'user' })
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return 0
    if (err.code === 'commander.help') {
      // Help shown because no subcommand was given (Spegel: `unknown subcommand`, exit 1),
      // or asked for with `spegel help [command]`. Commander's exit code here depends on
      // process.exitCode, so decide from the arguments instead.
      if (program.args.length === 0) {
        io.stderr('error: unknown subcommand\n')
        return 1
      }
      const topic = program.args[1]
      if (topic === undefined || program.commands.some((c) => c.name() === topic)) return 0
      io.stderr(`error: unknown command '${topic}'\n`)
      return EXIT_USAGE
    }
    return EXIT_USAGE
  }
  if (selected === undefined) {
    io.stderr('error: unknown subcommand\n')
    return 1
  }

  const flags = new Map<string, string | readonly string[]>()
  collect(program, globalDeclared, flags)
  collect(selected.cmd, selected.declared, flags)
  const hint = `(run 'spegel ${selected.name} --help' for usage)\n`
  const usageErrors = (errors: readonly ConfigError[]): number => {
    for (const error of errors) io.stderr(`error: ${error.message}\n`)
    io.stderr(hint)
    return EXIT_USAGE
  }
  const run = async <T>(result: ParseResult<T>, handler: (config: T) => Promise<number>): Promise<number> =>
    result.ok ? await handler(result.config) : usageErrors(result.errors)

  switch (selected.name) {
    case 'registry':
      return await run(parseRegistryConfig(flags, env), (c) => handlers.registry(c))
    case 'doctor':
      return await run(parseDoctorConfig(flags, env), (c) => handlers.doctor(c))
    case 'configuration':
      return await run(parseConfigurationConfig(flags, env), (c) => handlers.configuration(c))
    case 'cleanup':
      return await run(parseCleanupConfig(flags, env), (c) => handlers.cleanup(c))
    case 'cleanup-wait':
      return await run(parseCleanupWaitConfig(flags, env), (c) => handlers.cleanupWait(c))
    case 'version':
      return await run(parseVersionConfig(flags, env), (c) => runVersion(c.format, { env }, io))
  }
}
