#!/usr/bin/env -S node --initial-old-space-size=64
// peerfs command line: keygen, pubkey, mount, unmount, status; and the
// mount-helper form mount(8) and mount.fuse3 use, `peerfs <config> <mnt>
// [-o opts]` (also as mount.fuse.peerfs), which starts the daemon in the
// background and returns once the tree is mounted.
import { execFile } from 'node:child_process'
import { closeSync, writeSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Command, Option } from 'commander'
import { mountInBackground, READY_FD_ENV } from './cli/background.js'
import { missingNodeFlags } from './cli/node-flags.js'
import { findMountpoint, statusJson, statusText } from './cli/status.js'
import { MountOptionError, parseMountOptions } from './daemon/mount-options.js'
import { MountpointError } from './daemon/mountpoint.js'
import { ConfigError } from './lib/errors.js'
import { encodePublicKey, readKeyFile, writeNewKeyFile } from './lib/keys.js'
import { configureLogs, LOG_FORMATS, type LogFormat } from './lib/log.js'
import { Daemon } from './daemon/daemon.js'
import { VERSION } from './services/builtin.js'

const run = promisify(execFile)
const CLI = fileURLToPath(import.meta.url)
const COMMANDS = new Set(['keygen', 'pubkey', 'mount', 'unmount', 'status', 'help'])

function die (msg: string, code = 1): never {
  process.stderr.write(`peerfs: ${msg}\n`)
  process.exit(code)
}

/** Exit code and message for an error at start: 2 for what the user must fix in what they gave. */
function fail (err: unknown): never {
  if (err instanceof ConfigError || err instanceof MountOptionError) die(err.message, 2)
  if (err instanceof MountpointError) die(err.message, 32) // mount(8)'s "mount failure"
  die((err as Error).message)
}

interface MountFlags {
  config: string
  options: string[]
  mkdir?: boolean
  background?: boolean
  logFormat?: LogFormat
  verbose?: boolean
}

const collect = (v: string, prev: string[]): string[] => [...prev, v]

async function mountForeground (mountpoint: string | undefined, opts: MountFlags): Promise<void> {
  configureLogs({ format: opts.logFormat, verbose: opts.verbose })
  let daemon: Daemon
  try {
    const mount = parseMountOptions(opts.options)
    daemon = await Daemon.load({ configFile: opts.config, mountpoint, mkdir: opts.mkdir, mount })
    await daemon.start()
  } catch (err) {
    fail(err)
  }
  const missing = missingNodeFlags(process.execArgv)
  if (missing.length > 0) daemon.log.warn({ missing }, 'node was started without the daemon\'s flags (run peerfs, or dist/src/cli.js itself): bulk transfers cost more CPU in garbage collection')
  const stop = (sig: string): void => {
    daemon.log.info({ signal: sig }, 'stopping')
    daemon.stop().then((finished) => {
      // A stop past its deadline may wait on a thread stuck in the kernel (a
      // hung state disk), and process.exit joins those threads: only a
      // signal ends the process then.
      if (!finished) process.kill(process.pid, 'SIGKILL')
      process.exit(0)
    }, (err: unknown) => {
      daemon.log.error({ err }, 'stop failed')
      process.exit(1)
    })
  }
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGHUP', () => {
    daemon.reload().catch((err: unknown) => daemon.log.error({ err: (err as Error).message }, 'reload failed; keeping the running config'))
  })
  process.on('SIGUSR1', () => daemon.reportStatus())
  daemon.onUnmounted = () => stop('unmount')
  process.stdout.write(`mounted ${daemon.mountpoint}\n`)
  const readyFd = Number(process.env[READY_FD_ENV])
  if (Number.isInteger(readyFd) && readyFd > 2) {
    delete process.env[READY_FD_ENV]
    writeSync(readyFd, `mounted ${daemon.mountpoint}\n`)
    closeSync(readyFd)
  }
}

async function mountBackground (mountpoint: string | undefined, opts: MountFlags): Promise<void> {
  try {
    parseMountOptions(opts.options)
    const args = [...opts.options.flatMap(o => ['-o', o]), '--log-format', opts.logFormat ?? 'json', ...opts.mkdir === true ? ['--mkdir'] : [], ...opts.verbose === true ? ['-v'] : []]
    const r = await mountInBackground({ cli: CLI, config: opts.config, mountpoint, args })
    if (r.code !== 0) die(r.message, r.code)
  } catch (err) {
    fail(err)
  }
}

/**
 * mount(8) runs `mount.fuse.peerfs <config> <mnt> [-sfnv] [-o opts]`, and
 * mount.fuse3 runs `peerfs <config> <mnt> -o opts`. Returns the parsed
 * call, or undefined if argv is an ordinary command.
 */
export function helperCall (argv0: string, args: string[]): { config: string, mountpoint: string, options: string[], fake: boolean, verbose: boolean } | undefined {
  const asHelper = path.basename(argv0).startsWith('mount.')
  if (!asHelper && (args.length < 2 || COMMANDS.has(args[0]) || args[0].startsWith('-'))) return undefined
  const pos: string[] = []
  const options: string[] = []
  let fake = false
  let verbose = false
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    if (a === '-o') options.push(args[++i] ?? '')
    else if (a.startsWith('-o')) options.push(a.slice(2))
    else if (a === '-t') i++ // the type, fuse.peerfs
    else if (/^-[sfnvNi]+$/.test(a)) {
      if (a.includes('f')) fake = true
      if (a.includes('v')) verbose = true
    } else if (a.startsWith('-')) die(`${a}: not a mount helper option (use: <config> <mountpoint> [-o options])`, 2)
    else pos.push(a)
  }
  if (pos.length !== 2) die(`mount helper: expected <config> <mountpoint>, got ${pos.length} arguments`, 2)
  return { config: pos[0], mountpoint: pos[1], options, fake, verbose }
}

const program = new Command()
program.name('peerfs').description('A FUSE filesystem in which the peers of a network appear as files.').version(VERSION)

program.command('keygen')
  .description('write a new secret key file (mode 0600) and print its public key on the last line')
  .argument('<keyfile>', 'file to create; an existing file is never overwritten')
  .action(async (file: string) => {
    try {
      const id = await writeNewKeyFile(file)
      process.stdout.write(`secret key written to ${file}\n${encodePublicKey(id.publicKey)}\n`)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      die(e.code === 'EEXIST' ? `${file}: already exists; refusing to overwrite a key` : `${file}: ${e.message}`)
    }
  })

program.command('pubkey')
  .description('print the public key of a secret key file')
  .argument('<keyfile>')
  .action(async (file: string) => {
    try {
      process.stdout.write(`${encodePublicKey((await readKeyFile(file)).publicKey)}\n`)
    } catch (err) {
      die(`${file}: ${(err as Error).message}`)
    }
  })

program.command('mount')
  .description('mount the tree and run the daemon in the foreground; SIGINT/SIGTERM unmount and exit')
  .argument('[mountpoint]', 'where to mount (default: mountpoint in the config)')
  .requiredOption('-c, --config <file>', 'TOML config file')
  .option('-o, --options <opts>', 'mount options, comma-separated: allow_other, ro, default_permissions, and FUSE options (repeatable)', collect, [])
  .option('--mkdir', 'create the mountpoint if it is missing (default: refuse)')
  .option('--background', 'run as a background daemon; return once mounted (logs in <state>/peerfs.log)')
  .addOption(new Option('--log-format <format>', 'log format (default: text at a terminal, json otherwise)').choices(LOG_FORMATS as string[]))
  .option('-v, --verbose', 'log at debug level (wins over log_level in the config)')
  .action(async (mountpoint: string | undefined, opts: MountFlags) => {
    await (opts.background === true ? mountBackground(mountpoint, opts) : mountForeground(mountpoint, opts))
  })

program.command('unmount')
  .description('unmount a peerfs mount (the daemon then exits)')
  .argument('<mountpoint>')
  .option('-z, --lazy', 'detach even if busy')
  .action(async (mountpoint: string, opts: { lazy?: boolean }) => {
    try {
      await run('fusermount', [opts.lazy === true ? '-uz' : '-u', mountpoint])
    } catch (err) {
      die(`${mountpoint}: ${((err as { stderr?: string }).stderr ?? (err as Error).message).trim()}`)
    }
  })

program.command('status')
  .description('print the node and each peer of a mounted tree')
  .argument('[mountpoint]', 'default: the config\'s mountpoint (-c), or the only peerfs mount')
  .option('-c, --config <file>', 'TOML config file naming the mountpoint')
  .option('--json', 'one JSON object: { mountpoint, node, peers: [{ id, state, ... }] }')
  .action(async (mountpoint: string | undefined, opts: { config?: string, json?: boolean }) => {
    try {
      const mnt = await findMountpoint(mountpoint, opts.config)
      process.stdout.write(opts.json === true ? JSON.stringify(await statusJson(mnt), null, 2) + '\n' : await statusText(mnt))
    } catch (err) {
      fail(err)
    }
  })

const helper = helperCall(process.argv[1] ?? '', process.argv.slice(2))
if (helper !== undefined) {
  // mount -f (fake) does everything but mount.
  if (!helper.fake) {
    void mountBackground(helper.mountpoint, { config: helper.config, options: helper.options, verbose: helper.verbose })
  }
} else {
  program.parseAsync().catch((err: unknown) => die((err as Error).message))
}
