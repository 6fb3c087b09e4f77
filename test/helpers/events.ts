// Records a mount's events file from the moment it is open until stop():
// tests wait for lines (or for the open itself) instead of sleeping. The
// reader is a Python child of the test process; stop() and stopAll() end
// it by its pid.
import { spawn, type ChildProcess } from 'node:child_process'

// A daemon killed under it ends the read with ECONNABORTED: that is the end too.
const READER = `
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print('open', flush=True)
try:
    while True:
        b = os.read(fd, 65536)
        if not b: break
        sys.stdout.write(b.decode()); sys.stdout.flush()
except OSError:
    pass
`

const recorders = new Set<EventRecorder>()

export class EventRecorder {
  readonly lines: string[] = []
  private buf = ''
  private readonly waiters = new Set<() => void>()

  private constructor (private readonly proc: ChildProcess) {}

  /** Opens the events file; resolves once it is open, so later events are seen. */
  static async open (file: string, timeoutMs = 10_000): Promise<EventRecorder> {
    const proc = spawn('python3', ['-u', '-c', READER, file], { stdio: ['ignore', 'pipe', 'inherit'] })
    const r = new EventRecorder(proc)
    recorders.add(r)
    let opened = false
    proc.stdout?.on('data', (d: Buffer) => {
      r.buf += d.toString()
      const parts = r.buf.split('\n')
      r.buf = parts.pop() ?? ''
      for (const l of parts) {
        if (!opened && l === 'open') opened = true
        else r.lines.push(l)
      }
      for (const w of [...r.waiters]) w()
    })
    await r.until(() => opened, `${file} open`, timeoutMs)
    return r
  }

  /** Resolves with the first recorded line matching re. */
  async waitFor (re: RegExp, timeoutMs = 15_000): Promise<string> {
    await this.until(() => this.lines.some(l => re.test(l)), `an event matching ${re}`, timeoutMs)
    return this.lines.find(l => re.test(l)) as string
  }

  matching (re: RegExp): string[] { return this.lines.filter(l => re.test(l)) }

  stop (): string[] {
    this.proc.kill()
    recorders.delete(this)
    return this.lines
  }

  static stopAll (): void {
    for (const r of recorders) r.stop()
  }

  private async until (check: () => boolean, what: string, timeoutMs: number): Promise<void> {
    if (check()) return
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        if (!check()) return
        clearTimeout(timer)
        this.waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(() => {
        this.waiters.delete(done)
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
      }, timeoutMs)
      this.waiters.add(done)
      this.proc.once('exit', () => {
        if (check()) return
        clearTimeout(timer)
        this.waiters.delete(done)
        reject(new Error(`events reader exited while waiting for ${what}`))
      })
    })
  }
}
