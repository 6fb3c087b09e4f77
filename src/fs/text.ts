// Read-only generated text (status, state, logs): content is taken once at open,
// so one reader sees one consistent snapshot; direct_io because its size is
// not known before it is generated.
import { S_IFREG, type Attr, type FileNode, type Handle } from './types.js'

export class TextFile implements FileNode {
  constructor (private readonly generate: () => string | Buffer | Promise<Buffer>, private readonly mtimeMs: number) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o444, size: 0, mtimeMs: this.mtimeMs }
  }

  async open (): Promise<Handle> {
    const data = Buffer.from(await this.generate())
    return {
      direct: true,
      read: (len, pos) => data.subarray(pos, pos + len)
    }
  }
}

/** Formats key: value lines, Plan 9 style. */
export function keyValueLines (pairs: [string, string | number][]): string {
  return pairs.map(([k, v]) => `${k}: ${String(v).replace(/\n/g, ' ')}\n`).join('')
}
