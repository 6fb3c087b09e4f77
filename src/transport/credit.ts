// Bulk credit: how a link bounds the bulk-lane bytes it has handed to the
// socket that the peer has not read yet. Kernel socket buffers on loopback
// grow to megabytes, and everything in them is ahead of a transaction
// written after it: at wire speed each megabyte is about ten milliseconds.
//
// Both halves live here, one per direction of a link: the sender counts
// the records it writes (in flight) and what the peer credits back; the
// receiver counts the bulk records it reads and credits them once they add
// up to CREDIT_EVERY. Invariants: in flight never goes below zero (a credit
// for more is the peer's protocol error); a sender stops only with more in
// flight than CREDIT_EVERY, so the peer always owes it a credit.
import { ProtocolError } from '../lib/errors.js'

/** A receiver credits what it read once it adds up to this many bytes (records with their length prefix). */
export const CREDIT_EVERY = 256 << 10

/**
 * Default bound: 10-20 ms of bulk at 100-200 MB/s where loopback's buffers
 * held up to the whole 8 MiB transfer window. Smaller bounds cut a
 * transaction's wait further but cost throughput when the two ends are
 * not scheduled promptly (a loaded machine): the wire idles while a
 * credit is on its way.
 */
export const DEFAULT_MAX_BULK_IN_FLIGHT_BYTES = 2 << 20

export class BulkCredit {
  /** Bulk record bytes written that the peer has not credited yet. */
  inFlight = 0
  /** Since when bulk has waited for the peer's credit. */
  waitingSince: number | undefined
  /** Bulk record bytes read from the peer that we have not credited yet. */
  private unread = 0

  constructor (readonly max: number) {
    if (max <= CREDIT_EVERY) throw new RangeError(`bulk in flight bound ${max} must be more than ${CREDIT_EVERY}`)
  }

  /** Whether another bulk record may go out now; else notes since when it waits. */
  mayWrite (now: number): boolean {
    if (this.inFlight < this.max) return true
    this.waitingSince ??= now
    return false
  }

  wrote (recordBytes: number): void { this.inFlight += recordBytes }

  /** The peer read bytes of ours. */
  credited (bytes: number): void {
    if (bytes > this.inFlight) throw new ProtocolError(`credit for ${bytes} bulk bytes, ${this.inFlight} in flight`)
    this.inFlight -= bytes
    this.waitingSince = undefined
  }

  read (recordBytes: number): void { this.unread += recordBytes }

  /** The credit to send the peer now, if what we read adds up to one. */
  take (): number | undefined {
    if (this.unread < CREDIT_EVERY) return undefined
    const bytes = this.unread
    this.unread = 0
    return bytes
  }
}
