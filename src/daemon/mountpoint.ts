// The mountpoint as the kernel sees it: whether a FUSE mount sits there,
// and cleaning up the one a crashed daemon left behind.
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import type { Logger } from '../lib/log.js'

const run = promisify(execFile)

export async function isFuseMounted (mnt: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mounts', 'utf8')
  return mounts.split('\n').some(line => {
    const [, where, type] = line.split(' ')
    return where !== undefined && unescapeMount(where) === mnt && type?.startsWith('fuse') === true
  })
}

/** A mount left by a crashed daemon answers ENOTCONN; detach it first. */
export async function cleanStaleMount (mnt: string, log: Logger): Promise<void> {
  if (!await isFuseMounted(mnt)) return
  log.warn({ mountpoint: mnt }, 'stale mount found; unmounting it')
  await run('fusermount', ['-uz', mnt])
}

function unescapeMount (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
}
