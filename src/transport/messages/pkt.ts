// Packet family (pkt/NN): packets on a channel 1..63 and the end-to-end
// flow control around them.
//
// Each side of a link opens a packet session with `pstate`: its session id
// (fresh at every link up), the channels it has readers on, the window and
// the largest packet it accepts. It sends one when the link comes up
// (asking for the other's) and again whenever its channels change. A `pkt`
// carries one or more packets of one channel, addressed to the receiver's
// session, the first at `offset` in the channel's stream of packet costs
// (each next one at the previous offset plus its cost). `pcredit` returns
// how far the receiver's readers have consumed that stream (cumulative, so
// a later credit covers a lost one); `pprobe` tells a receiver how far the
// sender has sent, so packets lost when a link is replaced free their
// window. pstate, pkt and pprobe share one lane and so stay in order;
// credits ride the control lane, ahead of data.
import { ProtocolError } from '../../lib/errors.js'
import { isService } from '../../lib/svc.js'
import { LANE_CONTROL, LANE_TX } from '../records.js'
import type { Family, Reader } from './codec.js'

/** Largest payload any node accepts (the ceiling of max_packet_bytes). */
export const MAX_PACKET_LIMIT = 1 << 20
/** Most packets in one `pkt` message. */
export const MAX_BATCH = 4096
/** What a packet costs in a window beyond its payload, so empty packets are bounded too. */
export const PACKET_OVERHEAD = 64

export function packetCost (payloadBytes: number): number {
  return payloadBytes + PACKET_OVERHEAD
}

export type PktMessage =
  | { type: 'pstate', session: number, channels: bigint, window: number, maxPacket: number, ask: boolean }
  | { type: 'pkt', session: number, chan: number, offset: number, payloads: Buffer[] }
  | { type: 'pcredit', session: number, chan: number, consumed: number }
  | { type: 'pprobe', session: number, chan: number, offset: number }

function readChannel (r: Reader): number {
  const chan = r.u8('channel')
  if (!isService(chan)) throw new ProtocolError(`packet channel ${chan} outside 1..63`)
  return chan
}

export const pkt: Family<PktMessage> = {
  pstate: {
    code: 40,
    lane: LANE_TX,
    encode: (w, m) => w.u32(m.session).u64(m.channels).u32(m.window).u32(m.maxPacket).u8(m.ask ? 1 : 0),
    decode: (r) => {
      const session = r.u32('session')
      const channels = r.big64('channels')
      if ((channels & 1n) !== 0n) throw new ProtocolError('packet channel 0 announced')
      const window = r.u32('window')
      const maxPacket = r.u32('max packet')
      if (maxPacket > MAX_PACKET_LIMIT) throw new ProtocolError(`max packet ${maxPacket} over ${MAX_PACKET_LIMIT}`)
      const ask = r.u8('ask')
      if (ask > 1) throw new ProtocolError(`ask flag ${ask}`)
      return { type: 'pstate', session, channels, window, maxPacket, ask: ask === 1 }
    }
  },
  pkt: {
    code: 41,
    lane: LANE_TX,
    encode: (w, m) => {
      w.u32(m.session).u8(m.chan).u64(m.offset).u32(m.payloads.length)
      for (const p of m.payloads) w.bytes(p)
      return w
    },
    decode: (r) => {
      const session = r.u32('session')
      const chan = readChannel(r)
      const offset = r.u64('offset')
      const n = r.u32('packet count')
      if (n < 1 || n > MAX_BATCH) throw new ProtocolError(`${n} packets in one message (1..${MAX_BATCH})`)
      const payloads: Buffer[] = []
      for (let i = 0; i < n; i++) payloads.push(r.bytes('packet', MAX_PACKET_LIMIT))
      return { type: 'pkt', session, chan, offset, payloads }
    }
  },
  pcredit: {
    code: 42,
    lane: LANE_CONTROL,
    encode: (w, m) => w.u32(m.session).u8(m.chan).u64(m.consumed),
    decode: (r) => ({ type: 'pcredit', session: r.u32('session'), chan: readChannel(r), consumed: r.u64('consumed') })
  },
  pprobe: {
    code: 43,
    lane: LANE_TX,
    encode: (w, m) => w.u32(m.session).u8(m.chan).u64(m.offset),
    decode: (r) => ({ type: 'pprobe', session: r.u32('session'), chan: readChannel(r), offset: r.u64('offset') })
  }
}
