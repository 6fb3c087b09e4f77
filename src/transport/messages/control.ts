// Control family: keepalives and goodbye, answered by the link itself.
// They ride the control lane, ahead of everything else.
import { LANE_CONTROL } from '../records.js'
import type { Family } from './codec.js'

/** Why the sender is about to close the link. */
export type ByeReason = 'shutdown' | 'superseded'
const BYE_REASONS: readonly ByeReason[] = ['shutdown', 'superseded']

export type ControlMessage =
  | { type: 'ping', id: number }
  | { type: 'pong', id: number }
  | { type: 'bye', reason: ByeReason }

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
  }
}
