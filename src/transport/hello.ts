// The handshake payload each side sends inside the Noise handshake: its
// id and its public key as configs write it, so the far side can name a
// key it refuses in the form an operator can grep for. Only the X25519
// half is proven by the handshake; the rest is what the peer announced.
import { ProtocolError } from '../lib/errors.js'
import { encodePublicKey, parsePublicKey } from '../lib/keys.js'

export interface Hello { v: number, id: string, key?: string }

export function encodeHello (id: string, key: string | undefined): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, id, key }))
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
      (o.key !== undefined && (typeof o.key !== 'string' || o.key.length > 128))) {
    throw new ProtocolError('handshake payload is not {v:1,id,key?}')
  }
  return o
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
