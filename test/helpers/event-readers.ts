// Readers of a daemon's events file that say when they are reading, so a
// test starts what it waits for only once the reader is open (an events
// open sees events from its open onward), instead of sleeping first.
// Each reader is a child process of this test, killed by stopReaders().
import { spawn, type ChildProcess } from 'node:child_process'

const readers = new Set<ChildProcess>()

/** Kills every reader still running; call from afterEach. */
export function stopReaders (): void {
  for (const p of readers) p.kill('SIGKILL')
  readers.clear()
}

/** Streams the lines of an events file to onLine until the daemon goes away; resolves once it is open. */
export async function readEvents (file: string, onLine: (line: string) => void): Promise<void> {
  const p = spawn('python3', ['-c', `
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print('open', flush=True)
while True:
    try:
        b = os.read(fd, 65536)
    except OSError:
        break
    if not b: break
    sys.stdout.buffer.write(b)
    sys.stdout.flush()
`, file], { stdio: ['ignore', 'pipe', 'ignore'] })
  readers.add(p)
  p.on('exit', () => readers.delete(p))
  let rest = ''
  let opened = false
  await new Promise<void>((resolve, reject) => {
    p.on('exit', () => { if (!opened) reject(new Error(`cannot read ${file}`)) })
    p.stdout.on('data', (b: Buffer) => {
      const lines = (rest + b.toString()).split('\n')
      rest = lines.pop() ?? ''
      for (const l of lines) {
        if (!opened && l === 'open') {
          opened = true
          resolve()
        } else {
          onLine(l)
        }
      }
    })
  })
}

/** Starts reading now; `line` resolves with the first line matching, `opened` once reading. */
export function watchEvent (file: string, pattern: RegExp, timeoutMs = 20_000): { opened: Promise<void>, line: Promise<string> } {
  let found: (l: string) => void = () => {}
  const line = new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no event matching ${pattern} in ${file} within ${timeoutMs} ms`)), timeoutMs)
    found = (l) => {
      clearTimeout(t)
      resolve(l)
    }
  })
  // A test that fails before it awaits the line must not also report an unhandled rejection.
  line.catch(() => {})
  const opened = readEvents(file, (l) => { if (pattern.test(l)) found(l) })
  return { opened, line }
}
