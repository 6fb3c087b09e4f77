// Deferred family: a durable request (epoch and seq name it for exactly
// once delivery) and the receiver's answer.
import { LANE_TX } from '../records.js'
import type { Family } from './codec.js'
import { readService } from './tx.js'

/**
 * The receiver's answer to a deferred request. 'done': applied, status is
 * the outcome (0 or a wire error code), payload the reply. 'refused':
 * final error without applying (EACCES, EMSGSIZE). 'retry': not applied
 * yet (no server, queue full, still pending); send it again later. 'dup':
 * applied long ago, outcome no longer kept.
 */
export type DackResult = 'done' | 'refused' | 'retry' | 'dup'
const DACK_RESULTS: readonly DackResult[] = ['done', 'refused', 'retry', 'dup']

export interface Dreq { type: 'dreq', epoch: bigint, seq: number, svc: number, created: number, payload: Buffer }
export interface Dack { type: 'dack', epoch: bigint, seq: number, result: DackResult, status: number, payload: Buffer }
export type DeferMessage = Dreq | Dack

export const defer: Family<DeferMessage> = {
  dreq: {
    code: 6,
    lane: LANE_TX,
    encode: (w, m) => w.u64(m.epoch).u64(m.seq).u8(m.svc).u64(m.created).rest(m.payload),
    decode: (r) => ({ type: 'dreq', epoch: r.big64('epoch'), seq: r.u64('seq'), svc: readService(r, 'deferred request for service'), created: r.u64('created'), payload: r.rest() })
  },
  dack: {
    code: 7,
    lane: LANE_TX,
    encode: (w, m) => w.u64(m.epoch).u64(m.seq).u8(DACK_RESULTS.indexOf(m.result)).u8(m.status).rest(m.payload),
    decode: (r) => ({ type: 'dack', epoch: r.big64('epoch'), seq: r.u64('seq'), result: r.pick(DACK_RESULTS, 'deferred ack result'), status: r.u8('status'), payload: r.rest() })
  }
}
