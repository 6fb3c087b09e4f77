// Runs `peerfs mount` as a background daemon and returns once its tree is
// mounted, the way mount(8) expects of a mount helper (sshfs does the
// same): the daemon gets its own session, / as its folder, no stdin, and
// its log in <state>/peerfs.log (kept to one previous generation); it says
// `mounted` on a private pipe (fd 3). If it exits before that, its log
// lines from this start are shown and its exit code is returned.
import { spawn } from 'node:child_process'
import { closeSync, fstatSync, openSync, readSync, renameSync, statSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import { loadConfig } from '../config.js'
import { DAEMON_NODE_FLAGS } from './node-flags.js'

/** The daemon's stdout and stderr at start; a log this large is moved to peerfs.log.1 first. */
const ROTATE_BYTES = 16 << 20
const MOUNT_TIMEOUT_MS = 60_000
export const READY_FD_ENV = 'PEERFS_READY_FD'

export interface BackgroundOptions {
  cli: string
  config: string
  mountpoint: string | undefined
  /** Arguments for `peerfs mount` after the mountpoint and config. */
  args: string[]
}

export async function mountInBackground (o: BackgroundOptions): Promise<{ code: number, message: string }> {
  const config = await loadConfig(o.config)
  const mnt = o.mountpoint === undefined ? config.mountpoint : path.resolve(o.mountpoint)
  if (mnt === undefined) return { code: 2, message: `${config.file}: mountpoint: no mountpoint on the command line or in the config` }
  await mkdir(config.state, { recursive: true, mode: 0o700 })
  const logFile = path.join(config.state, 'peerfs.log')
  try {
    if (statSync(logFile).size > ROTATE_BYTES) renameSync(logFile, `${logFile}.1`)
  } catch {
    // No log yet.
  }
  const fd = openSync(logFile, 'a', 0o600)
  const from = fstatSync(fd).size
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, o.cli, 'mount', mnt, '-c', config.file, ...o.args], {
    cwd: '/',
    detached: true,
    stdio: ['ignore', fd, fd, 'pipe'],
    env: { ...process.env, [READY_FD_ENV]: '3' }
  })
  closeSync(fd)
  const ready = child.stdio[3] as NodeJS.ReadableStream
  const outcome = await new Promise<{ code: number }>((resolve) => {
    let said = ''
    const timer = setTimeout(() => {
      child.kill('SIGTERM')
      resolve({ code: 1 })
    }, MOUNT_TIMEOUT_MS)
    ready.on('data', (d: Buffer) => {
      said += d.toString()
      if (said.includes('mounted ')) {
        clearTimeout(timer)
        resolve({ code: 0 })
      }
    })
    ready.on('error', () => {})
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code: code === 0 || code === null ? 1 : code })
    })
  })
  child.unref()
  ;(ready as unknown as { destroy: () => void }).destroy()
  if (outcome.code === 0) return { code: 0, message: '' }
  return { code: outcome.code, message: `${mnt}: the daemon did not mount; its log (${logFile}):\n${readFrom(logFile, from)}` }
}

function readFrom (file: string, offset: number): string {
  const fd = openSync(file, 'r')
  try {
    const size = fstatSync(fd).size
    const start = Math.max(offset, size - 64 * 1024)
    const buf = Buffer.alloc(size - start)
    readSync(fd, buf, 0, buf.length, start)
    return buf.toString()
  } finally {
    closeSync(fd)
  }
}
