// Every message the link carries, as the union of its families. A new
// message is declared in its family's module and handled by that family's
// handler; nothing here changes. The table below checks at start-up that
// no two messages share a type byte.
import { ProtocolError } from '../../lib/errors.js'
import type { Lane } from '../records.js'
import { Reader, Writer, type Spec } from './codec.js'
import { control, type ControlMessage } from './control.js'
import { defer, type DeferMessage } from './defer.js'
import { files, type FilesMessage } from './files.js'
import { pkt, type PktMessage } from './pkt.js'
import { tx, type TxMessage } from './tx.js'
import { xfer, type XferMessage } from './xfer.js'

export type { ByeReason, ControlMessage } from './control.js'
export type { DackResult, Dack, Dreq, DeferMessage } from './defer.js'
export type { FilesMessage } from './files.js'
export type { PktMessage } from './pkt.js'
export type { TxMessage } from './tx.js'
export { XID_BYTES, type XferKind, type XferMessage, type XferResult } from './xfer.js'
export type { Handler } from './codec.js'

export type Message = ControlMessage | TxMessage | DeferMessage | XferMessage | FilesMessage | PktMessage

/** The families, by name: what the daemon's router dispatches on. */
export const FAMILIES = { control, tx, defer, xfer, files, pkt } as const
export type FamilyName = keyof typeof FAMILIES

interface Entry { family: FamilyName, spec: Spec<Message> }

const byType = new Map<string, Entry>()
const byCode = new Map<number, Entry>()
for (const [family, specs] of Object.entries(FAMILIES) as Array<[FamilyName, Record<string, Spec<Message>>]>) {
  for (const [type, spec] of Object.entries(specs)) {
    if (byCode.has(spec.code)) throw new Error(`message type byte ${spec.code} declared twice (${type})`)
    const e = { family, spec }
    byType.set(type, e)
    byCode.set(spec.code, e)
  }
}

function entryOf (m: Message): Entry {
  const e = byType.get(m.type)
  if (e === undefined) throw new RangeError(`unknown message ${m.type}`)
  return e
}

export function familyOf (m: Message): FamilyName { return entryOf(m).family }
export function laneOf (m: Message): Lane { return entryOf(m).spec.lane }

export function encodeMessage (m: Message): Buffer {
  const { spec } = entryOf(m)
  return spec.encode(new Writer(spec.code), m).done()
}

/** As encodeMessage, in pieces: bulk data is not copied (Writer.pieces). */
export function encodePieces (m: Message): Buffer[] {
  const { spec } = entryOf(m)
  return spec.encode(new Writer(spec.code), m).pieces()
}

export function decodeMessage (b: Buffer): Message {
  if (b.length < 1) throw new ProtocolError('empty message')
  const e = byCode.get(b[0])
  if (e === undefined) throw new ProtocolError(`unknown message type ${b[0]}`)
  const r = new Reader(b)
  const m = e.spec.decode(r)
  r.end(m.type)
  return m
}
