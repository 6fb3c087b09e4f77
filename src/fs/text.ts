// Read-only generated text (status, state, logs, metrics): content is taken
// once at open, so one reader sees one consistent snapshot; direct_io because
// it may change between a stat and a read. A stat generates it too, so size
// is the current content's and mtime is when the content was last seen to
// change (make, rsync and `ls -lt` see a live file, not the mount time).
import { S_IFREG, type Attr, type FileNode, type Handle } from './types.js'

export class TextFile implements FileNode {
  private last: Buffer | undefined
  private changedMs: number

  constructor (
    private readonly generate: () => string | Buffer | Promise<Buffer>,
    mtimeMs: number,
    private readonly now: () => number = Date.now
  ) {
    this.changedMs = mtimeMs
  }

  async attr (): Promise<Attr> {
    const data = await this.observe()
    return { mode: S_IFREG | 0o444, size: data.length, mtimeMs: this.changedMs }
  }

  async open (): Promise<Handle> {
    const data = await this.observe()
    return {
      direct: true,
      read: (len, pos) => data.subarray(pos, pos + len)
    }
  }

  private async observe (): Promise<Buffer> {
    const data = Buffer.from(await this.generate())
    if (this.last !== undefined && !this.last.equals(data)) this.changedMs = this.now()
    this.last = data
    return data
  }
}

/** Formats key: value lines, Plan 9 style. */
export function keyValueLines (pairs: [string, string | number][]): string {
  return pairs.map(([k, v]) => `${k}: ${String(v).replace(/\n/g, ' ')}\n`).join('')
}
