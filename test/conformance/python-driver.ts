// The conformance driver on a real mount: one Python process makes the
// system calls (os.open, os.read, os.lseek, select, ...) the way a user's
// program would, each in its own thread so a blocked read does not hold up
// the others. Commands and answers are JSON lines on its stdin/stdout;
// bytes and paths travel as base64. The test process never touches the
// mount itself. stop() kills that process (only it) by pid.
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { FsFail, kindOf, type Driver, type OpenMode, type StatResult } from './driver.js'

const SERVER = `
import base64, errno, json, os, select, sys, threading
out = threading.Lock()
def p(a): return base64.b64decode(a['path'])
ACC = {'r': os.O_RDONLY, 'w': os.O_WRONLY, 'rw': os.O_RDWR}
def stat(a):
    st = os.lstat(p(a))
    return {'mode': st.st_mode, 'size': st.st_size}
OPS = {
    'list': lambda a: sorted(base64.b64encode(n).decode() for n in os.listdir(p(a))),
    'stat': stat,
    'readlink': lambda a: base64.b64encode(os.readlink(p(a))).decode(),
    'open': lambda a: os.open(p(a), ACC[a['acc']] | (os.O_NONBLOCK if a['nonblock'] else 0)),
    'read': lambda a: base64.b64encode(os.read(a['fd'], a['len'])).decode(),
    'write': lambda a: os.write(a['fd'], base64.b64decode(a['data'])),
    'lseek': lambda a: os.lseek(a['fd'], a['offset'], os.SEEK_SET),
    'close': lambda a: os.close(a['fd']),
    'readable': lambda a: bool(select.select([a['fd']], [], [], a['timeout'])[0]),
}
def run(a):
    try:
        r = {'id': a['id'], 'ok': OPS[a['op']](a)}
    except OSError as e:
        r = {'id': a['id'], 'errno': errno.errorcode.get(e.errno, str(e.errno)), 'detail': str(e)}
    with out:
        sys.stdout.write(json.dumps(r) + '\\n')
        sys.stdout.flush()
for line in sys.stdin:
    threading.Thread(target=run, args=(json.loads(line),), daemon=True).start()
`

interface Answer { id: number, ok?: unknown, errno?: string, detail?: string }

export class PythonSyscalls {
  private readonly pending = new Map<number, { resolve: (v: unknown) => void, reject: (e: Error) => void }>()
  private nextId = 1
  private buf = ''

  private constructor (private readonly proc: ChildProcess) {
    proc.stdout?.on('data', (d: Buffer) => {
      this.buf += d.toString()
      let i
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const a = JSON.parse(this.buf.slice(0, i)) as Answer
        this.buf = this.buf.slice(i + 1)
        const w = this.pending.get(a.id)
        this.pending.delete(a.id)
        if (a.errno !== undefined) w?.reject(new FsFail(a.errno, a.detail))
        else w?.resolve(a.ok)
      }
    })
    proc.on('exit', () => {
      for (const w of this.pending.values()) w.reject(new Error('the syscall process exited'))
      this.pending.clear()
    })
  }

  static start (): PythonSyscalls {
    return new PythonSyscalls(spawn('python3', ['-c', SERVER], { stdio: ['pipe', 'pipe', 'inherit'] }))
  }

  async call (op: string, args: Record<string, unknown>): Promise<unknown> {
    const id = this.nextId++
    return await new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.proc.stdin?.write(JSON.stringify({ id, op, ...args }) + '\n')
    })
  }

  /** A driver for the tree mounted at root. */
  at (root: string): Driver {
    const p = (rel: string): string => Buffer.from(path.join(root, rel)).toString('base64')
    const str = (b64: unknown): string => Buffer.from(b64 as string, 'base64').toString()
    return {
      list: async (rel) => ((await this.call('list', { path: p(rel) })) as string[]).map(str).sort(),
      stat: async (rel): Promise<StatResult> => {
        const s = await this.call('stat', { path: p(rel) }) as { mode: number, size: number }
        return { kind: kindOf(s.mode), mode: s.mode, size: s.size }
      },
      readlink: async (rel) => str(await this.call('readlink', { path: p(rel) })),
      open: async (rel, mode: OpenMode) => await this.call('open', { path: p(rel), acc: mode.acc, nonblock: mode.nonblock === true }) as number,
      read: async (fd, len) => Buffer.from(await this.call('read', { fd, len }) as string, 'base64'),
      write: async (fd, data) => await this.call('write', { fd, data: data.toString('base64') }) as number,
      lseek: async (fd, offset) => await this.call('lseek', { fd, offset }) as number,
      close: async (fd) => { await this.call('close', { fd }) },
      readable: async (fd, timeoutMs) => await this.call('readable', { fd, timeout: timeoutMs / 1000 }) as boolean
    }
  }

  stop (): void {
    this.proc.kill('SIGKILL')
  }
}
