// One attempt at one transfer, the sender's side of it: the source open
// from the offset the receiver accepted, the SHA-256 of every byte before
// the next one to send, what is acknowledged, and progress for status.
// Closing is final: a close while the source is being opened closes it as
// soon as it is open. The sender owns the attempt and closes it when it ends.
// A stream's source is still being written: only its first `limit` bytes,
// which the sender raises as the writer writes, are read.
import { createHash } from 'node:crypto'
import { open, type FileHandle } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import type { SentRecord } from './sender-store.js'
import { Progress, hashRange } from './shared.js'

/** The source is read this much at a time and cut into packets: a thread-pool round trip per packet cost more than the packet's sending. */
const READ_BYTES = 1 << 20

export class Attempt {
  readonly xid: Buffer
  readonly hash = createHash('sha256')
  /** The next byte to send. */
  pos = 0
  acked = 0
  /** Bytes of the source there are to send: its size, or what a stream's writer has written so far. */
  limit: number
  progress: Progress
  pumping = false
  private fh: FileHandle | undefined
  private closed = false
  /** What was read from the source at pos and not yet sent. */
  private ahead: Buffer = Buffer.alloc(0)

  constructor (readonly rec: SentRecord, now: number) {
    this.xid = Buffer.from(rec.xid, 'hex')
    this.limit = rec.size
    this.progress = new Progress(this.total, 0, now)
  }

  /** undefined while a stream's size is not known yet. */
  private get total (): number | undefined { return this.rec.kind === 'stream' ? undefined : this.rec.size }

  /** A stream's writer closed it: its size is known now. */
  sized (): void {
    this.limit = this.rec.size
    this.progress.total = this.total
  }

  get size (): number { return this.rec.size }
  get isOpen (): boolean { return this.fh !== undefined && !this.closed }

  /**
   * There is something to send now. A stream is read a whole read at a
   * time, as a file is: sending each write of its writer as it came took
   * eight times the reads and a quarter more CPU. The rest goes at its close.
   */
  get due (): boolean {
    const left = this.limit - this.pos
    return this.ahead.length > 0 || (this.rec.kind === 'stream' ? left >= READ_BYTES : left > 0)
  }

  /** Opens the source and hashes what the receiver holds already; false if closed meanwhile. */
  async start (source: string, offset: number, now: () => number): Promise<boolean> {
    const fh = await open(source, 'r')
    if (this.closed) {
      await fh.close()
      return false
    }
    this.fh = fh
    await hashRange(fh, this.hash, 0, offset)
    this.pos = this.acked = offset
    this.progress = new Progress(this.total, offset, now())
    return !this.closed
  }

  /** The next packet (at pos) of at most n bytes, hashed; empty if the source got shorter. */
  async read (n: number): Promise<Buffer> {
    if (this.ahead.length === 0) {
      const data = Buffer.allocUnsafe(Math.min(Math.max(n, READ_BYTES), this.limit - this.pos))
      const { bytesRead } = await (this.fh as FileHandle).read(data, 0, data.length, this.pos)
      this.ahead = data.subarray(0, bytesRead)
    }
    const chunk = this.ahead.subarray(0, n)
    this.ahead = this.ahead.subarray(chunk.length)
    // Packet by packet, not per read: the sender's turns stay short.
    if (!this.closed) this.hash.update(chunk)
    return chunk
  }

  async stat (): Promise<Stats> { return await (this.fh as FileHandle).stat() }

  ack (offset: number): void {
    if (offset > this.acked) this.acked = this.progress.done = Math.min(offset, this.limit)
  }

  close (): void {
    this.closed = true
    void this.fh?.close().catch(() => {})
  }
}
