// Transaction family: a request to service NN and its reply, matched by
// the sender's transaction number. Status 0 is a reply; anything else is a
// wire error code (lib/errors.ts maps them to errnos).
import { ProtocolError } from '../../lib/errors.js'
import { isService } from '../../lib/svc.js'
import { LANE_TX } from '../records.js'
import type { Family, Reader } from './codec.js'

export type TxMessage =
  | { type: 'req', tx: number, svc: number, payload: Buffer }
  | { type: 'rep', tx: number, status: number, payload: Buffer }

/** A service number from a peer: 1..63. */
export function readService (r: Reader, what: string): number {
  const svc = r.u8(what)
  if (!isService(svc)) throw new ProtocolError(`${what} ${svc} outside 1..63`)
  return svc
}

export const tx: Family<TxMessage> = {
  req: {
    code: 3,
    lane: LANE_TX,
    encode: (w, m) => w.u32(m.tx).u8(m.svc).rest(m.payload),
    decode: (r) => ({ type: 'req', tx: r.u32('tx'), svc: readService(r, 'request for service'), payload: r.rest() })
  },
  rep: {
    code: 4,
    lane: LANE_TX,
    encode: (w, m) => w.u32(m.tx).u8(m.status).rest(m.payload),
    decode: (r) => ({ type: 'rep', tx: r.u32('tx'), status: r.u8('status'), payload: r.rest() })
  }
}
