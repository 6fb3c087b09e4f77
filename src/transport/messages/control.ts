// Control family: keepalives, goodbye and bulk credit, answered by the
// link itself. They ride the control lane, ahead of everything else.
import { LANE_CONTROL } from '../records.js'
import type { Family } from './codec.js'

/**
 * Why the sender is about to close the link. 'refused-key' and
 * 'disconnected' refuse the caller (its key is not configured here; ctl
 * disconnect holds it down here): the caller backs off as from a failed
 * dial. The list is the wire encoding (by index): append only.
 */
export type ByeReason = 'shutdown' | 'superseded' | 'refused-key' | 'disconnected'
const BYE_REASONS: readonly ByeReason[] = ['shutdown', 'superseded', 'refused-key', 'disconnected']

export type ControlMessage =
  | { type: 'ping', id: number }
  | { type: 'pong', id: number }
  | { type: 'bye', reason: ByeReason }
  /** Bytes of bulk-lane records the sender of this message has read since its last credit. */
  | { type: 'credit', bytes: number }

export const control: Family<ControlMessage> = {
  ping: {
    code: 1,
    lane: LANE_CONTROL,
    encode: (w, m) => w.u32(m.id),
    decode: (r) => ({ type: 'ping', id: r.u32('id') })
  },
  pong: {
    code: 2,
    lane: LANE_CONTROL,
    encode: (w, m) => w.u32(m.id),
    decode: (r) => ({ type: 'pong', id: r.u32('id') })
  },
  bye: {
    code: 5,
    lane: LANE_CONTROL,
    encode: (w, m) => w.u8(BYE_REASONS.indexOf(m.reason)),
    decode: (r) => ({ type: 'bye', reason: r.pick(BYE_REASONS, 'bye reason') })
  },
  credit: {
    code: 15,
    lane: LANE_CONTROL,
    encode: (w, m) => w.u32(m.bytes),
    decode: (r) => ({ type: 'credit', bytes: r.u32('credit bytes') })
  }
}
