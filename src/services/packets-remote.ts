// One peer as the packet service (packets.ts) sees it: its packet session
// state, its windows per channel, its counts, and the sending half: packets
// taken in one burst for one channel leave as one `pkt` message, and a
// window found full is probed until it opens.
//
// States: 'down' (no link) -> 'opening' (link up, its pstate not yet
// heard) -> 'up'. Windows and batches belong to one session: restart()
// and stopSending() end them, so nothing taken in one session is sent in
// the next.
import type { Clock, Timer } from '../lib/clock.js'
import type { Logger } from '../lib/log.js'
import { svcName } from '../lib/svc.js'
import { MAX_BATCH, packetCost, type PktMessage } from '../transport/messages/pkt.js'
import { RecvWindow, SendWindow } from './packets-flow.js'

export const PROBE_MS = 500
/** Packets taken in one burst for one peer and channel travel in one message up to this size. */
const BATCH_BYTES = 60 << 10

export type RemoteState = 'down' | 'opening' | 'up'

export interface RemoteEnv {
  clock: Clock
  log: Logger
  /** Sends to a peer; throws when its link is gone. */
  send: (peer: string, m: PktMessage) => void
  /** r has batches to send once the current burst is over. */
  dirty: (r: Remote) => void
}

interface Counts { pktsOut: number, bytesOut: number, pktsIn: number, bytesIn: number, waited: number, refused: number, dropped: number, lost: number }

interface Batch { chan: number, offset: number, payloads: Buffer[], bytes: number }

export class Remote {
  state: RemoteState = 'down'
  /** Our session: packets to us carry it. */
  mine = 0
  /** Theirs: packets we send carry it; 0 until heard. */
  theirs = 0
  /** Its channels with readers, its window and largest packet (from its pstate). */
  channels = 0n
  window = 0
  maxPacket = 0
  /** Bumped whenever the receive side restarts, so packets of an older session credit nothing. */
  epoch = 0
  hello: Timer | undefined
  /** Warned once that it sends past its window. */
  warned = false
  readonly counts: Counts = { pktsOut: 0, bytesOut: 0, pktsIn: 0, bytesIn: 0, waited: 0, refused: 0, dropped: 0, lost: 0 }
  private readonly out = new Map<number, SendWindow>()
  private readonly in = new Map<number, RecvWindow>()
  private readonly batches = new Map<number, Batch>()
  private readonly probes = new Map<number, Timer>()

  constructor (readonly id: string, private readonly env: RemoteEnv) {}

  hasReader (chan: number): boolean { return ((this.channels >> BigInt(chan)) & 1n) === 1n }

  sendWindow (chan: number): SendWindow {
    let w = this.out.get(chan)
    if (w === undefined) {
      w = new SendWindow(this.window)
      this.out.set(chan, w)
    }
    return w
  }

  recvWindow (chan: number): RecvWindow {
    let w = this.in.get(chan)
    if (w === undefined) {
      w = new RecvWindow()
      this.in.set(chan, w)
    }
    return w
  }

  /** The receive window of chan in the session a held packet came in, if that is still this one. */
  recvWindowOf (chan: number, epoch: number): RecvWindow | undefined {
    return epoch === this.epoch ? this.in.get(chan) : undefined
  }

  setWindow (window: number): void {
    this.window = window
    for (const w of this.out.values()) w.window = window
  }

  /** The window of chan has room; if not, it gets probed until it has. */
  room (chan: number): boolean {
    if (this.sendWindow(chan).room) return true
    this.armProbe(chan)
    return false
  }

  /** Takes one packet (the window had room): counted, batched, sent after the burst. */
  transmit (chan: number, payload: Buffer): void {
    const offset = this.sendWindow(chan).take(packetCost(payload.length))
    this.counts.pktsOut++
    this.counts.bytesOut += payload.length
    let b = this.batches.get(chan)
    if (b !== undefined && (b.payloads.length >= MAX_BATCH || b.bytes + payload.length > BATCH_BYTES)) {
      this.sendBatch(b)
      b = undefined
    }
    if (b === undefined) {
      b = { chan, offset, payloads: [], bytes: 0 }
      this.batches.set(chan, b)
    }
    b.payloads.push(payload)
    b.bytes += payload.length
    this.env.dirty(this)
  }

  flush (): void {
    for (const b of this.batches.values()) this.sendBatch(b)
  }

  private sendBatch (b: Batch): void {
    this.batches.delete(b.chan)
    // A failed send means the link just went: linkDown follows and fails what waits.
    this.trySend({ type: 'pkt', session: this.theirs, chan: b.chan, offset: b.offset, payloads: b.payloads })
  }

  /** A credit for chan; true if it opened room. */
  credited (chan: number, consumed: number): boolean {
    return this.out.get(chan)?.credit(consumed) === true
  }

  /** Tells the peer how far its packets on chan are consumed. */
  credit (chan: number, w: RecvWindow): void {
    if (this.state === 'down') return
    w.credited = w.consumed
    this.trySend({ type: 'pcredit', session: this.mine, chan, consumed: w.consumed })
  }

  private armProbe (chan: number): void {
    if (this.probes.has(chan)) return
    this.probes.set(chan, this.env.clock.setTimeout(() => {
      this.probes.delete(chan)
      const w = this.out.get(chan)
      if (this.state !== 'up' || w === undefined || w.room) return
      // After the batches, so the probe's offset covers everything sent.
      this.flush()
      this.trySend({ type: 'pprobe', session: this.theirs, chan, offset: w.sent })
      this.armProbe(chan)
    }, PROBE_MS))
  }

  /** Ends what was being sent: batches not yet out are lost with the link, probes stop. */
  stopSending (): void {
    this.batches.clear()
    for (const t of this.probes.values()) this.env.clock.clearTimeout(t)
    this.probes.clear()
  }

  /** A new session: windows from zero. */
  restart (): void {
    this.stopSending()
    this.out.clear()
    this.in.clear()
    this.epoch++
  }

  trySend (m: PktMessage): void {
    try {
      this.env.send(this.id, m)
    } catch (err) {
      this.env.log.debug({ peer: this.id, type: m.type, err: (err as Error).message }, 'packet message not sent: link gone')
    }
  }

  status (): Array<[string, string | number]> {
    const c = this.counts
    const chans = this.state !== 'up' ? [] : Array.from({ length: 63 }, (_, i) => i + 1).filter(n => this.hasReader(n)).map(svcName)
    return [
      ['pkt_state', this.state],
      ['pkt_channels', chans.length === 0 ? '-' : chans.join(' ')],
      ['pkt_out', c.pktsOut],
      ['pkt_out_bytes', c.bytesOut],
      ['pkt_in', c.pktsIn],
      ['pkt_in_bytes', c.bytesIn],
      ['pkt_writes_waited', c.waited],
      ['pkt_refused', c.refused],
      ['pkt_dropped', c.dropped],
      ['pkt_lost', c.lost]
    ]
  }
}
