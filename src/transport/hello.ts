// The handshake payload each side sends inside the Noise handshake: its
// id and its public key as configs write it, so the far side can name a
// key it refuses in the form an operator can grep for. Only the X25519
// half is proven by the handshake; the rest is what the peer announced.
//
// f lists the optional messages this node understands (FEATURES), so a
// newer node uses one only with peers that announced it: a message a peer
// cannot decode closes the link. A hello without f is a node that has none
// (an older version); names the decoder does not know are ignored.
import { ProtocolError } from '../lib/errors.js'
import { encodePublicKey, parsePublicKey } from '../lib/keys.js'
import { XSTREAM } from './messages/xfer.js'

export interface Hello { v: number, id: string, key?: string, f?: string[] }

/**
 * What this version understands beyond v1:
 * - xstream: a transfer offered while its file is still being written (xfer.ts).
 */
export const FEATURES: readonly string[] = [XSTREAM]

const MAX_FEATURES = 32
const MAX_FEATURE_CHARS = 32

export function encodeHello (id: string, key: string | undefined): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, id, key, f: FEATURES }))
}

export function decodeHello (b: Buffer): Hello {
  let h: unknown
  try {
    h = JSON.parse(b.toString('utf8'))
  } catch {
    throw new ProtocolError('handshake payload is not JSON')
  }
  const o = h as Hello
  if (typeof o !== 'object' || o === null || o.v !== 1 || typeof o.id !== 'string' || o.id.length > 64 ||
      (o.key !== undefined && (typeof o.key !== 'string' || o.key.length > 128)) ||
      (o.f !== undefined && (!Array.isArray(o.f) || o.f.length > MAX_FEATURES || !o.f.every(x => typeof x === 'string' && x.length <= MAX_FEATURE_CHARS)))) {
    throw new ProtocolError(`handshake payload is not {v:1,id,key?,f?} (f: at most ${MAX_FEATURES} names of at most ${MAX_FEATURE_CHARS} characters)`)
  }
  return o
}

/** The features both sides have: what this link may use. */
export function sharedFeatures (hello: Hello): ReadonlySet<string> {
  return new Set((hello.f ?? []).filter(x => FEATURES.includes(x)))
}

/**
 * A key as the config writes it (dh || sign, base64url) when the peer's
 * announced key matches the one it proved; else the proven X25519 half.
 */
export function keyText (proven: Uint8Array, announced: string | undefined): string {
  if (announced !== undefined) {
    try {
      if (parsePublicKey(announced).dh.equals(Buffer.from(proven))) return announced
    } catch {}
  }
  return `${encodePublicKey(proven)} (X25519 half)`
}
