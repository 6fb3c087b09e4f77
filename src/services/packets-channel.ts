// One packet channel's local side (packets.ts): the handles open on it,
// the packets waiting for its readers, each reader's up/down records, and
// the writes waiting for a window. Readers share the packets (each goes to
// one of them); every reader gets every up/down record; both carry one
// arrival sequence so each reader sees them in the order they happened.
import type { PeerfsError } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'

export const MAX_EVENTS = 1024

/**
 * What a reader gets: a packet, or a peer's link coming or going. The
 * tree's PacketRecord (fs/backend.ts) is the same shape; services do not
 * import fs, and the daemon's backend checks that the two agree.
 */
export type PacketRecord = { peer: string, payload: Buffer, event?: undefined } | { peer: string, event: 'up' | 'down' }

/** A packet waiting for a reader; epoch and end credit it when it is taken. */
export interface Held { seq: number, peer: string, epoch: number, payload: Buffer, end: number, cost: number }
interface Note { seq: number, peer: string, event: 'up' | 'down' }
export interface Blocked { to: string, payload: Buffer, resolve: () => void, reject: (err: PeerfsError) => void }

/** What a session asks of the service. */
export interface SessionHost {
  take: (s: Session) => Held | undefined
  send: (chan: number, to: string, payload: Buffer, nonblock: boolean) => void | Promise<void>
  writable: (chan: number) => boolean
  close: (s: Session) => void
}

export class Channel {
  /** Every open handle, woken when readiness changes; `readers` of them take packets. */
  readonly sessions = new Set<Session>()
  readers = 0
  queue: Held[] = []
  blocked: Blocked[] = []

  /** Tells every reader; a reader that fell MAX_EVENTS behind loses the oldest. */
  note (seq: number, peer: string, event: 'up' | 'down', log: Logger): void {
    for (const s of this.sessions) s.note(seq, peer, event, log)
  }

  /** Drops the packets of peer still waiting; returns how many. */
  dropFrom (peer: string): number {
    const before = this.queue.length
    this.queue = this.queue.filter(h => h.peer !== peer)
    return before - this.queue.length
  }

  wake (): void {
    for (const s of this.sessions) s.wake()
  }
}

export class Session {
  private readonly notes: Note[] = []
  closed = false

  constructor (private readonly host: SessionHost, readonly chan: number, readonly channel: Channel, readonly reads: boolean, readonly wake: () => void) {}

  note (seq: number, peer: string, event: 'up' | 'down', log: Logger): void {
    if (!this.reads) return
    if (this.notes.length >= MAX_EVENTS) {
      this.notes.shift()
      log.warn({ peer, chan: this.chan }, 'a pkt reader fell behind on up/down records; the oldest was dropped')
    }
    this.notes.push({ seq, peer, event })
    this.wake()
  }

  next (): PacketRecord | undefined {
    if (!this.reads) return undefined
    const note = this.notes[0]
    const held = this.channel.queue[0]
    if (note !== undefined && (held === undefined || note.seq < held.seq)) {
      this.notes.shift()
      return { peer: note.peer, event: note.event }
    }
    const h = this.host.take(this)
    return h === undefined ? undefined : { peer: h.peer, payload: h.payload }
  }

  send (to: string, payload: Buffer, nonblock: boolean): void | Promise<void> { return this.host.send(this.chan, to, payload, nonblock) }
  readable (): boolean { return this.reads && (this.notes.length > 0 || this.channel.queue.length > 0) }
  writable (): boolean { return this.host.writable(this.chan) }
  close (): void { this.host.close(this) }
}
