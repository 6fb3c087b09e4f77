// A control file: each line written is one command, run as it is written,
// so a bad command fails the write(2) that carried it. Reading lists the
// commands.
import { E, FsError } from '../lib/errors.js'
import { S_IFREG, type Attr, type FileNode, type Handle } from './types.js'

const MAX_LINE = 4096

export class CtlFile implements FileNode {
  constructor (
    private readonly commands: readonly string[],
    private readonly run: (cmd: string) => void,
    private readonly mtimeMs: number
  ) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o644, size: 0, mtimeMs: this.mtimeMs }
  }

  truncate (): void {}

  open (): Handle {
    let partial = ''
    const exec = (line: string): void => {
      const cmd = line.trim()
      if (cmd === '') return
      if (!this.commands.includes(cmd)) throw new FsError(E.EINVAL, `unknown command ${JSON.stringify(cmd)}; commands: ${this.commands.join(' ')}`)
      this.run(cmd)
    }
    const help = Buffer.from(`commands: ${this.commands.join(' ')}\n`)
    return {
      direct: true,
      read: (len, pos) => help.subarray(pos, pos + len),
      write: (data) => {
        const lines = (partial + data.toString('utf8')).split('\n')
        partial = lines.pop() ?? ''
        if (partial.length > MAX_LINE) throw new FsError(E.EINVAL, 'command line too long')
        for (const line of lines) exec(line)
        return data.length
      },
      // A command written without a newline (printf reset > ctl) runs at close.
      flush: () => {
        const line = partial
        partial = ''
        exec(line)
      }
    }
  }
}
