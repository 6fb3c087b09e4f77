// What the outbox sender and the inbox receiver share: their settings (all
// policy, from the config), the link they send on, progress for status,
// hashing a file's prefix, and the error that refuses a transfer for good.
import type { Hash } from 'node:crypto'
import type { FileHandle } from 'node:fs/promises'
import type { PeerLink } from '../outbound.js'

export interface TransferSettings {
  batchFiles: number
  batchMs: number
  packetBytes: number
  windowBytes: number
  largeFileBytes: number
  bundleMaxBytes: number
  ackEveryBytes: number
  /**
   * Receiver: a partial is made durable and recorded every this many bytes,
   * or this often on a slow link: what a crash may make the sender send again.
   */
  checkpointBytes: number
  checkpointMs: number
  /** First wait before offering again a transfer the receiver could not take; doubles up to retryMaxMs. */
  retryMs: number
  retryMaxMs: number
  /** Silence from the receiver this long during a transfer sets it aside. */
  timeoutMs: number
  /** Sender: saved transfers at once (current, set aside, cancelling, confirming). */
  maxTransfers: number
  /** Sender: outbox files held in memory as waiting; past it they wait on disk for a later scan. */
  maxQueued: number
  /**
   * Sender: folders that delivery emptied are removed once nothing in the
   * outbox changed for this long; a writer that comes back to a folder
   * sooner (rsync -a sets the folders' times last) still finds it.
   */
  pruneMs: number
  /** Receiver: transfers one peer may have in progress here, open or resumable on disk. */
  maxPartials: number
  /** Receiver: partial transfers and delivery records untouched this long are removed. */
  maxAgeMs: number
}

/** One peer's live link, whichever connection carries it. */
export type XferLink = PeerLink

export type StatusPairs = Array<[string, string | number]>

/** Bytes done of a total (undefined: a stream, its file still being written), and the rate since this attempt began. */
export class Progress {
  done: number
  private readonly from: number
  constructor (public total: number | undefined, offset: number, private readonly startedAt: number) {
    this.done = offset
    this.from = offset
  }

  text (): string {
    if (this.total === undefined) return `${this.done} bytes, the file still being written`
    const pct = this.total === 0 ? 100 : Math.floor(this.done * 100 / this.total)
    return `${this.done}/${this.total} bytes (${pct}%)`
  }

  bytesPerS (now: number): number {
    const s = (now - this.startedAt) / 1000
    return s <= 0 ? 0 : Math.round((this.done - this.from) / s)
  }
}

/** A name shown in status: one line, whatever bytes it holds. */
export function label (name: string): string {
  return /[\x00-\x1f\x7f]/.test(name) ? JSON.stringify(name) : name
}

/** The transfer can never be taken as it is (a bad name, a link in a tar); the sender stops offering it. */
export class Refusal extends Error {}

/** A peer's name as a message quotes it: escaped, and cut to 200 characters. */
export const quoted = (name: string): string => JSON.stringify(name.slice(0, 200))

/** Feeds bytes [from, to) of a file to a hash: the prefix a resumed transfer already holds. */
export async function hashRange (fh: FileHandle, hash: Hash, from: number, to: number): Promise<void> {
  const buf = Buffer.allocUnsafe(1 << 20)
  for (let pos = from; pos < to;) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, to - pos), pos)
    if (bytesRead === 0) throw new Error('file shorter than its acknowledged offset')
    hash.update(buf.subarray(0, bytesRead))
    pos += bytesRead
  }
}
