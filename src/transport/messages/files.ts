// Managed-files family. Anti-entropy by summary: fsum carries fingerprints
// of ranges of (name, version) items, fids the items of a small range, and
// fwant asks for the manifests of named items; fadv carries signed
// manifests (acknowledged one by one with fack, so a sender keeps a window
// of them in flight). Content is pulled by hash in chunks: fget asks for
// ranges, fdata answers one range on the bulk lane, fnone says "I do not
// hold that content". Every count is checked against its limit before
// anything is allocated; the layer above checks names and signatures.
import { ProtocolError } from '../../lib/errors.js'
import { LANE_BULK, LANE_TX } from '../records.js'
import type { Family, Reader, Writer } from './codec.js'

export const FP_BYTES = 16
export const ID_HASH_BYTES = 8
export const SHA_BYTES = 32
export const SIGNER_BYTES = 32
export const SIG_BYTES = 64
/** Most fingerprints in one fsum, items in one fids, names in one fwant. */
export const MAX_SUM_NODES = 1024
export const MAX_IDS = 4096
export const MAX_WANT = 1024
/** Most manifests in one advert. */
export const MAX_ADVERT = 256
/** Most ranges in one fget, and the largest range. */
export const MAX_GET = 128
export const MAX_CHUNK = 1 << 20

/** A manifest as it travels; the service converts it to its own type. */
export interface WireManifest {
  name: string
  version: number
  size: number
  deleted: boolean
  sha256: Buffer
  signer: Buffer
  sig: Buffer
}

/** A range of the summary tree: its level, prefix, item count and fingerprint. */
export interface SumNode { level: number, prefix: number, count: number, fp: Buffer }
/** One item of a range: its name, version and a short hash of its manifest. */
export interface SumId { name: string, version: number, hash: Buffer }
export interface GetRange { name: string, sha256: Buffer, offset: number, len: number }

export type FilesMessage =
  | { type: 'fsum', nodes: SumNode[] }
  | { type: 'fids', level: number, prefix: number, items: SumId[] }
  | { type: 'fwant', names: string[] }
  | { type: 'fadv', manifests: WireManifest[] }
  | { type: 'fack' }
  | { type: 'fget', ranges: GetRange[] }
  | { type: 'fdata', sha256: Buffer, offset: number, data: Buffer }
  | { type: 'fnone', sha256: Buffer }

function count (r: Reader, what: string, max: number): number {
  const n = r.u32(`${what} count`)
  if (n > max) throw new ProtocolError(`${what} count ${n} over ${max}`)
  return n
}

function list<T> (w: Writer, xs: T[], max: number, each: (x: T) => void): Writer {
  if (xs.length > max) throw new RangeError(`${xs.length} entries over ${max}`)
  w.u32(xs.length)
  for (const x of xs) each(x)
  return w
}

function times<T> (n: number, fn: () => T): T[] {
  const out: T[] = []
  for (let i = 0; i < n; i++) out.push(fn())
  return out
}

function encodeManifest (w: Writer, m: WireManifest): void {
  w.str(m.name).u64(m.version).u64(m.size).u8(m.deleted ? 1 : 0)
    .fixed(m.sha256, SHA_BYTES).fixed(m.signer, SIGNER_BYTES).fixed(m.sig, SIG_BYTES)
}

function decodeManifest (r: Reader): WireManifest {
  const name = r.str('name')
  const version = r.u64('version')
  const size = r.u64('size')
  const flag = r.u8('deleted flag')
  if (flag > 1) throw new ProtocolError(`bad deleted flag ${flag}`)
  return { name, version, size, deleted: flag === 1, sha256: r.fixed(SHA_BYTES, 'sha256'), signer: r.fixed(SIGNER_BYTES, 'signer'), sig: r.fixed(SIG_BYTES, 'signature') }
}

export const files: Family<FilesMessage> = {
  fsum: {
    code: 30,
    lane: LANE_TX,
    encode: (w, m) => list(w, m.nodes, MAX_SUM_NODES, n => w.u8(n.level).u32(n.prefix).u32(n.count).fixed(n.fp, FP_BYTES)),
    decode: (r) => ({
      type: 'fsum',
      nodes: times(count(r, 'summary node', MAX_SUM_NODES), () => ({ level: r.u8('level'), prefix: r.u32('prefix'), count: r.u32('count'), fp: r.fixed(FP_BYTES, 'fingerprint') }))
    })
  },
  fids: {
    code: 31,
    lane: LANE_BULK,
    encode: (w, m) => list(w.u8(m.level).u32(m.prefix), m.items, MAX_IDS, i => w.str(i.name).u64(i.version).fixed(i.hash, ID_HASH_BYTES)),
    decode: (r) => ({
      type: 'fids',
      level: r.u8('level'),
      prefix: r.u32('prefix'),
      items: times(count(r, 'summary item', MAX_IDS), () => ({ name: r.str('name'), version: r.u64('version'), hash: r.fixed(ID_HASH_BYTES, 'item hash') }))
    })
  },
  fwant: {
    code: 32,
    lane: LANE_TX,
    encode: (w, m) => list(w, m.names, MAX_WANT, n => w.str(n)),
    decode: (r) => ({ type: 'fwant', names: times(count(r, 'wanted name', MAX_WANT), () => r.str('name')) })
  },
  fadv: {
    code: 33,
    lane: LANE_BULK,
    encode: (w, m) => list(w, m.manifests, MAX_ADVERT, x => encodeManifest(w, x)),
    decode: (r) => ({ type: 'fadv', manifests: times(count(r, 'manifest', MAX_ADVERT), () => decodeManifest(r)) })
  },
  fack: {
    code: 34,
    lane: LANE_TX,
    encode: (w) => w,
    decode: () => ({ type: 'fack' })
  },
  fget: {
    code: 35,
    lane: LANE_TX,
    encode: (w, m) => list(w, m.ranges, MAX_GET, g => w.str(g.name).fixed(g.sha256, SHA_BYTES).u64(g.offset).u32(g.len)),
    decode: (r) => ({
      type: 'fget',
      ranges: times(count(r, 'range', MAX_GET), () => {
        const g = { name: r.str('name'), sha256: r.fixed(SHA_BYTES, 'sha256'), offset: r.u64('offset'), len: r.u32('length') }
        if (g.len > MAX_CHUNK) throw new ProtocolError(`range of ${g.len} bytes over ${MAX_CHUNK}`)
        return g
      })
    })
  },
  fdata: {
    code: 36,
    lane: LANE_BULK,
    encode: (w, m) => w.fixed(m.sha256, SHA_BYTES).u64(m.offset).rest(m.data),
    decode: (r) => {
      const sha256 = r.fixed(SHA_BYTES, 'sha256')
      const offset = r.u64('offset')
      const data = r.rest()
      if (data.length > MAX_CHUNK) throw new ProtocolError(`chunk of ${data.length} bytes over ${MAX_CHUNK}`)
      return { type: 'fdata', sha256, offset, data }
    }
  },
  fnone: {
    code: 37,
    lane: LANE_TX,
    encode: (w, m) => w.fixed(m.sha256, SHA_BYTES),
    decode: (r) => ({ type: 'fnone', sha256: r.fixed(SHA_BYTES, 'sha256') })
  }
}
