// A control file: each line written is one command, run as it is written,
// so a bad command fails the write(2) that carried it (and the rest of that
// write is dropped). A command without a newline runs at close. Reading
// lists the commands.
//
// A line is held until its newline, up to MAX_LINE bytes. A longer one is
// refused (EINVAL) as soon as it is over the limit and discarded up to its
// newline: the writes still carrying it fail too, and nothing of it is
// kept, so a writer that never sends a newline costs MAX_LINE bytes.
import { E, FsError } from '../lib/errors.js'
import { S_IFREG, type Attr, type FileNode, type Handle } from './types.js'

export const MAX_LINE = 4096
const NL = 0x0a

export class CtlFile implements FileNode {
  readonly stream = true

  constructor (
    private readonly commands: readonly string[],
    private readonly run: (cmd: string) => void,
    private readonly mtimeMs: number
  ) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o644, size: 0, mtimeMs: this.mtimeMs }
  }

  truncate (): void {}

  open (): CtlHandle {
    return new CtlHandle(this.commands, this.run)
  }
}

/** taking: holding a line until its newline; discarding: dropping an over-long one. */
type LineState = 'taking' | 'discarding'

export class CtlHandle implements Handle {
  readonly direct = true
  private state: LineState = 'taking'
  private line: Buffer[] = []
  private lineSize = 0
  private readonly help: Buffer

  constructor (private readonly commands: readonly string[], private readonly run: (cmd: string) => void) {
    this.help = Buffer.from(`commands: ${commands.join(' ')}\n`)
  }

  /** Bytes held for the line not yet ended (at most MAX_LINE). */
  get held (): number { return this.lineSize }

  read (len: number, pos: number): Buffer {
    return this.help.subarray(pos, pos + len)
  }

  write (data: Buffer): number {
    let at = 0
    while (at < data.length) {
      const nl = data.indexOf(NL, at)
      const end = nl < 0 ? data.length : nl
      if (this.state === 'discarding') {
        if (nl < 0) throw new FsError(E.EINVAL, `discarding the rest of a command line over ${MAX_LINE} bytes`)
        this.state = 'taking'
      } else {
        this.append(data.subarray(at, end), nl >= 0)
        if (nl >= 0) this.exec(this.takeLine())
      }
      at = end + 1
    }
    return data.length
  }

  flush (): void {
    if (this.state === 'discarding') {
      this.state = 'taking'
      return
    }
    this.exec(this.takeLine())
  }

  private append (piece: Buffer, ends: boolean): void {
    if (this.lineSize + piece.length > MAX_LINE) {
      this.line = []
      this.lineSize = 0
      if (!ends) this.state = 'discarding'
      throw new FsError(E.EINVAL, `command line over ${MAX_LINE} bytes: refused and discarded`)
    }
    if (piece.length === 0) return
    // A copy, so a held piece does not pin the whole write's buffer.
    this.line.push(Buffer.from(piece))
    this.lineSize += piece.length
  }

  private takeLine (): string {
    const s = Buffer.concat(this.line, this.lineSize).toString('utf8')
    this.line = []
    this.lineSize = 0
    return s
  }

  private exec (line: string): void {
    const cmd = line.trim()
    if (cmd === '') return
    if (!this.commands.includes(cmd)) throw new FsError(E.EINVAL, `unknown command ${JSON.stringify(cmd.slice(0, 100))}; commands: ${this.commands.join(' ')}`)
    this.run(cmd)
  }
}
