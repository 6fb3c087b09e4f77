// The bookkeeping of end-to-end flow control for one (peer, channel)
// direction of pkt/NN, without I/O so it can be checked alone.
//
// Both ends count packet costs (payload + PACKET_OVERHEAD) as one stream:
// a packet sits at an offset in it. The sender takes a packet while what
// it sent and has no credit for is under the window, so at most a window
// plus one packet is ever outstanding. The receiver credits how far its
// readers consumed the stream; a packet it had to drop, and a gap left by
// packets lost with a replaced link, count as consumed, so the window
// never leaks. Offsets only grow within a session; a new session starts
// both ends at zero.

export class SendWindow {
  /** Offset of the next packet: everything sent this session. */
  sent = 0
  /** How far the receiver has consumed: its latest credit. */
  acked = 0

  constructor (public window: number) {}

  get used (): number { return this.sent - this.acked }
  /** Another packet may be taken now. */
  get room (): boolean { return this.used < this.window }

  /** Takes a packet of this cost; returns its offset. */
  take (cost: number): number {
    const offset = this.sent
    this.sent += cost
    return offset
  }

  /** A credit from the receiver; false when it moves nothing (old, repeated or impossible). */
  credit (consumed: number): boolean {
    if (consumed <= this.acked || consumed > this.sent) return false
    this.acked = consumed
    return true
  }
}

export class RecvWindow {
  /** Offset the next packet should have. */
  expected = 0
  /** How far readers consumed (or drops settled) the stream. */
  consumed = 0
  /** What the sender was last told. */
  credited = 0
  /** Packets of this session waiting for a reader, and their cost. */
  queued = 0
  queuedCost = 0

  /**
   * A packet arrived at offset. Returns the cost of the gap before it
   * (packets lost on a replaced link), or undefined for one already had.
   */
  arrive (offset: number, cost: number): number | undefined {
    if (offset < this.expected) return undefined
    const gap = offset - this.expected
    this.expected = offset + cost
    return gap
  }

  /** The packet that just arrived waits for a reader. */
  hold (cost: number): void {
    this.queued++
    this.queuedCost += cost
  }

  /** The packet that just arrived was dropped: it counts as consumed once nothing before it waits. */
  settle (): void {
    if (this.queued === 0) this.consumed = this.expected
  }

  /** A reader took the held packet that ends at `end`. */
  take (end: number, cost: number): void {
    this.queued--
    this.queuedCost -= cost
    // With nothing left waiting, drops and gaps after it are consumed too.
    this.consumed = this.queued === 0 ? this.expected : end
  }

  /** The sender has sent up to offset; returns the cost lost in between. */
  probe (offset: number): number {
    const gap = Math.max(0, offset - this.expected)
    this.expected += gap
    this.settle()
    return gap
  }

  /** Credit is worth sending: at least `step` consumed since the last. */
  due (step: number): boolean {
    return this.consumed - this.credited >= step
  }
}
