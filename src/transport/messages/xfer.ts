// Transfer family (outbox -> inbox). An xid names one transfer: a single
// file (kind 'file', name = its relative path) or a tar of many (kind
// 'tar', name = a label for status), or a file still being written (kind
// 'stream', size 0: not known yet; only to a peer whose hello announced
// xstream). A stream's data is its file's prefix as written; its end
// comes once the writer closed it, and the SHA-256 then fixes its size
// and content. The sender may later offer the same xid as a 'file' of
// that size, which resumes it. Offer, accept at the receiver's
// durable offset, data, acks by window, end with the SHA-256, done; cancel
// from the sender. Exactly once: the receiver keeps a record of each
// delivered transfer and answers a second offer (or a late cancel) of it
// with xdelivered; the sender, once its files are gone, sends xforget, and
// xforgot says the record is gone. Data and the end ride the bulk lane:
// the end must come after the last data it sums (on the transaction lane it
// overtook data still queued, failed the hash and resent the whole file);
// acks and offers pass them.
import { LANE_BULK, LANE_TX } from '../records.js'
import type { Family } from './codec.js'

export type XferKind = 'file' | 'tar' | 'stream'
const XFER_KINDS: readonly XferKind[] = ['file', 'tar', 'stream']
/** The hello feature (transport/hello.ts) a peer announces when it takes kind 'stream'. */
export const XSTREAM = 'xstream'
/** ok: delivered now; retry: not now (disk full, over quota, bad hash); refused: never (bad names). */
export type XferResult = 'ok' | 'retry' | 'refused'
const XFER_RESULTS: readonly XferResult[] = ['ok', 'retry', 'refused']
export const XID_BYTES = 16

export type XferMessage =
  | { type: 'xoffer', xid: Buffer, kind: XferKind, size: number, window: number, name: string }
  | { type: 'xaccept', xid: Buffer, offset: number }
  | { type: 'xdata', xid: Buffer, offset: number, data: Buffer }
  | { type: 'xack', xid: Buffer, offset: number }
  | { type: 'xend', xid: Buffer, sha256: Buffer, mode: number, mtimeMs: number }
  | { type: 'xdone', xid: Buffer, result: XferResult, reason: string }
  | { type: 'xcancel', xid: Buffer }
  | { type: 'xdelivered', xid: Buffer }
  | { type: 'xforget', xid: Buffer }
  | { type: 'xforgot', xid: Buffer }

/** What the receiving side handles. */
export type XferToReceiver = Extract<XferMessage, { type: 'xoffer' | 'xdata' | 'xend' | 'xcancel' | 'xforget' }>
/** What the sending side handles: the receiver's answers. */
export type XferToSender = Extract<XferMessage, { type: 'xaccept' | 'xack' | 'xdone' | 'xdelivered' | 'xforgot' }>

export const xfer: Family<XferMessage> = {
  xoffer: {
    code: 8,
    lane: LANE_TX,
    encode: (w, m) => w.fixed(m.xid, XID_BYTES).u8(XFER_KINDS.indexOf(m.kind)).u64(m.size).u64(m.window).str(m.name),
    decode: (r) => ({ type: 'xoffer', xid: r.fixed(XID_BYTES, 'xid'), kind: r.pick(XFER_KINDS, 'transfer kind'), size: r.u64('size'), window: r.u64('window'), name: r.str('name') })
  },
  xaccept: {
    code: 9,
    lane: LANE_TX,
    encode: (w, m) => w.fixed(m.xid, XID_BYTES).u64(m.offset),
    decode: (r) => ({ type: 'xaccept', xid: r.fixed(XID_BYTES, 'xid'), offset: r.u64('offset') })
  },
  xdata: {
    code: 10,
    lane: LANE_BULK,
    encode: (w, m) => w.fixed(m.xid, XID_BYTES).u64(m.offset).rest(m.data),
    decode: (r) => ({ type: 'xdata', xid: r.fixed(XID_BYTES, 'xid'), offset: r.u64('offset'), data: r.rest() })
  },
  xack: {
    code: 11,
    lane: LANE_TX,
    encode: (w, m) => w.fixed(m.xid, XID_BYTES).u64(m.offset),
    decode: (r) => ({ type: 'xack', xid: r.fixed(XID_BYTES, 'xid'), offset: r.u64('offset') })
  },
  xend: {
    code: 12,
    lane: LANE_BULK,
    encode: (w, m) => w.fixed(m.xid, XID_BYTES).fixed(m.sha256, 32).u32(m.mode).u64(m.mtimeMs),
    decode: (r) => ({ type: 'xend', xid: r.fixed(XID_BYTES, 'xid'), sha256: r.fixed(32, 'sha256'), mode: r.u32('mode'), mtimeMs: r.u64('mtime') })
  },
  xdone: {
    code: 13,
    lane: LANE_TX,
    encode: (w, m) => w.fixed(m.xid, XID_BYTES).u8(XFER_RESULTS.indexOf(m.result)).str(m.reason),
    decode: (r) => ({ type: 'xdone', xid: r.fixed(XID_BYTES, 'xid'), result: r.pick(XFER_RESULTS, 'transfer result'), reason: r.str('reason') })
  },
  xcancel: {
    code: 14,
    lane: LANE_TX,
    encode: (w, m) => w.fixed(m.xid, XID_BYTES),
    decode: (r) => ({ type: 'xcancel', xid: r.fixed(XID_BYTES, 'xid') })
  },
  xdelivered: {
    code: 48,
    lane: LANE_TX,
    encode: (w, m) => w.fixed(m.xid, XID_BYTES),
    decode: (r) => ({ type: 'xdelivered', xid: r.fixed(XID_BYTES, 'xid') })
  },
  xforget: {
    code: 49,
    lane: LANE_TX,
    encode: (w, m) => w.fixed(m.xid, XID_BYTES),
    decode: (r) => ({ type: 'xforget', xid: r.fixed(XID_BYTES, 'xid') })
  },
  xforgot: {
    code: 50,
    lane: LANE_TX,
    encode: (w, m) => w.fixed(m.xid, XID_BYTES),
    decode: (r) => ({ type: 'xforgot', xid: r.fixed(XID_BYTES, 'xid') })
  }
}
