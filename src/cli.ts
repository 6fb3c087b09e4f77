#!/usr/bin/env node
// peerfs command line: keygen, pubkey, mount, unmount.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Command } from 'commander'
import { ConfigError } from './lib/errors.js'
import { encodePublicKey, readKeyFile, writeNewKeyFile } from './lib/keys.js'
import { Daemon } from './daemon/daemon.js'
import { VERSION } from './services/builtin.js'

const run = promisify(execFile)

function die (msg: string, code = 1): never {
  process.stderr.write(`peerfs: ${msg}\n`)
  process.exit(code)
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
  .action(async (mountpoint: string | undefined, opts: { config: string }) => {
    let daemon: Daemon
    try {
      daemon = await Daemon.load({ configFile: opts.config, mountpoint })
      await daemon.start()
    } catch (err) {
      if (err instanceof ConfigError) die(err.message, 2)
      die((err as Error).message)
    }
    const stop = (sig: string): void => {
      daemon.log.info({ signal: sig }, 'stopping')
      daemon.stop().then(() => process.exit(0), (err: unknown) => {
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

program.parseAsync().catch((err: unknown) => die((err as Error).message))
