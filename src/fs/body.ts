// The request body a handle accumulates from write(2)s, bounded. Going over
// the limit poisons it: the kernel reports the failing piece of a large
// write(2) as a short write, so the error must also stop the send at read
// or close, or a truncated request would go out.
import { E, FsError } from '../lib/errors.js'

export class Body {
  private chunks: Buffer[] = []
  private size = 0
  private overflow = false

  constructor (private readonly limit: () => number) {}

  get length (): number { return this.size }

  append (data: Buffer): number {
    if (this.overflow || this.size + data.length > this.limit()) {
      this.overflow = true
      this.chunks = []
      this.size = 0
      throw this.tooBig()
    }
    this.chunks.push(data)
    this.size += data.length
    return data.length
  }

  /** The whole body, leaving this empty; throws EMSGSIZE (once) if it overflowed. */
  take (): Buffer {
    if (this.overflow) {
      this.overflow = false
      throw this.tooBig()
    }
    const b = Buffer.concat(this.chunks, this.size)
    this.chunks = []
    this.size = 0
    return b
  }

  get failed (): boolean { return this.overflow }

  private tooBig (): FsError {
    return new FsError(E.EMSGSIZE, `request over the limit of ${this.limit()} bytes`)
  }
}
