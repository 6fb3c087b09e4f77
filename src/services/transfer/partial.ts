// The receiver's partial file of one transfer. Bytes arrive in order and
// are hashed at once, but written in batches (one writev per batch, not a
// thread-pool round trip per packet) and made durable more rarely still:
//
//   received >= written >= durable
//   received  hashed; the last batch may be only in memory
//   written   handed to the kernel; what acknowledgements report (flow
//             control: the sender keeps every byte until the transfer is
//             placed, so an acknowledgement promises nothing durable)
//   durable   fdatasynced: what a record may name and a resume starts from
//
// The file is opened at the first data (a transfer with none opens nothing
// until it ends), or at a resume, truncated to what was durable.
import { createHash, type Hash } from 'node:crypto'
import { constants as fsc } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { hashRange } from './shared.js'

export class Partial {
  readonly hash: Hash
  received: number
  written: number
  durable: number
  private fh: FileHandle | undefined
  private batch: Buffer[] = []
  private batchBytes = 0

  private constructor (readonly file: string, fh: FileHandle | undefined, hash: Hash, offset: number) {
    this.fh = fh
    this.hash = hash
    this.received = this.written = this.durable = offset
  }

  static fresh (file: string): Partial { return new Partial(file, undefined, createHash('sha256'), 0) }

  /** Reopens what a record says is durable, hashing it again; throws if it is not there. */
  static async resume (file: string, offset: number): Promise<Partial> {
    const fh = await open(file, fsc.O_RDWR)
    try {
      await fh.truncate(offset)
      const hash = createHash('sha256')
      await hashRange(fh, hash, 0, offset)
      return new Partial(file, fh, hash, offset)
    } catch (err) {
      await fh.close().catch(() => {})
      throw err
    }
  }

  /** Takes the next bytes; writes the batch once it holds at least batchBytes. */
  async append (data: Buffer, batchBytes: number): Promise<void> {
    this.hash.update(data)
    this.batch.push(data)
    this.batchBytes += data.length
    this.received += data.length
    if (this.batchBytes >= batchBytes) await this.write()
  }

  /** Hands every received byte to the kernel. */
  async write (): Promise<void> {
    const fh = this.fh ??= await open(this.file, fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC, 0o600)
    if (this.batchBytes === 0) return
    const batch = this.batch
    const bytes = this.batchBytes
    this.batch = []
    this.batchBytes = 0
    const { bytesWritten } = await fh.writev(batch, this.written)
    if (bytesWritten !== bytes) throw new Error(`short write to ${this.file}: ${bytesWritten} of ${bytes} bytes`)
    this.written += bytes
  }

  /** Makes what is written durable; returns the offset that now is. */
  async sync (): Promise<number> {
    const upto = this.written
    if (this.fh === undefined || upto === this.durable) return this.durable
    await this.fh.datasync()
    if (upto > this.durable) this.durable = upto
    return upto
  }

  /** Everything received written and fsynced (metadata too), the file created even if empty. */
  async finish (): Promise<void> {
    await this.write()
    await this.fh?.sync()
    this.durable = this.written
  }

  async close (): Promise<void> {
    const fh = this.fh
    this.fh = undefined
    this.batch = []
    this.batchBytes = 0
    await fh?.close().catch(() => {})
  }
}
