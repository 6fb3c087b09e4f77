// The Noise Protocol Framework (revision 34), for the patterns and primitives
// peerfs uses or is tested against: NN, KK, IK, XX over X25519 (tweetnacl),
// ChaCha20-Poly1305 and SHA-256 or BLAKE2b (node:crypto). peerfs links use
// Noise_XX_25519_ChaChaPoly_SHA256; the other names exist so the published
// vectors check every code path. Invariants: a CipherState never reuses a
// nonce; a failed decrypt leaves the state unusable for the caller (the
// link drops); DH outputs of all zeros (low-order points) are refused.
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto'
import nacl from 'tweetnacl'

export const DHLEN = 32
export const TAGLEN = 16
export const MAX_MESSAGE = 65535

type Token = 'e' | 's' | 'ee' | 'es' | 'se' | 'ss'
interface Pattern { pre: [Token[], Token[]], messages: Token[][] }

const PATTERNS: Record<string, Pattern> = {
  NN: { pre: [[], []], messages: [['e'], ['e', 'ee']] },
  KK: { pre: [['s'], ['s']], messages: [['e', 'es', 'ss'], ['e', 'ee', 'se']] },
  IK: { pre: [[], ['s']], messages: [['e', 'es', 's', 'ss'], ['e', 'ee', 'se']] },
  XX: { pre: [[], []], messages: [['e'], ['e', 'ee', 's', 'es'], ['s', 'se']] }
}

const HASHES: Record<string, { alg: string, len: number }> = {
  SHA256: { alg: 'sha256', len: 32 },
  BLAKE2b: { alg: 'blake2b512', len: 64 }
}

export class NoiseError extends Error {}

export interface KeyPair { secret: Uint8Array, public: Uint8Array }

export function keyPairFromSecret (secret: Uint8Array): KeyPair {
  return { secret, public: nacl.scalarMult.base(secret) }
}

function dh (kp: KeyPair, pub: Uint8Array): Buffer {
  const out = Buffer.from(nacl.scalarMult(kp.secret, pub))
  if (out.every(b => b === 0)) throw new NoiseError('DH produced all zeros (low-order public key)')
  return out
}

function nonce (n: bigint): Buffer {
  const b = Buffer.alloc(12)
  b.writeBigUInt64LE(n, 4)
  return b
}

export function aeadEncrypt (k: Buffer, n: bigint, ad: Uint8Array, pt: Uint8Array): Buffer {
  return Buffer.concat(aeadEncryptParts(k, n, ad, [pt]))
}

/** AEAD of the parts' concatenation, as pieces to be written in order (the tag last). */
function aeadEncryptParts (k: Buffer, n: bigint, ad: Uint8Array, parts: Uint8Array[]): Buffer[] {
  const c = createCipheriv('chacha20-poly1305', k, nonce(n), { authTagLength: TAGLEN })
  let len = 0
  for (const p of parts) len += p.length
  c.setAAD(ad, { plaintextLength: len })
  const out = parts.map(p => c.update(p))
  const fin = c.final()
  if (fin.length > 0) out.push(fin)
  out.push(c.getAuthTag())
  return out
}

export function aeadDecrypt (k: Buffer, n: bigint, ad: Uint8Array, ct: Uint8Array): Buffer {
  if (ct.length < TAGLEN) throw new NoiseError('ciphertext shorter than its tag')
  const d = createDecipheriv('chacha20-poly1305', k, nonce(n), { authTagLength: TAGLEN })
  d.setAAD(ad, { plaintextLength: ct.length - TAGLEN })
  d.setAuthTag(ct.subarray(ct.length - TAGLEN))
  const body = d.update(ct.subarray(0, ct.length - TAGLEN))
  let fin: Buffer
  try {
    fin = d.final()
  } catch {
    throw new NoiseError('bad authentication tag')
  }
  // A stream cipher leaves nothing for final(): no copy of the body.
  return fin.length === 0 ? body : Buffer.concat([body, fin])
}

const MAX_NONCE = 0xffffffffffffffffn

export class CipherState {
  private k: Buffer | undefined
  private n = 0n

  initializeKey (k: Buffer | undefined): void {
    this.k = k
    this.n = 0n
  }

  hasKey (): boolean { return this.k !== undefined }

  encryptWithAd (ad: Uint8Array, pt: Uint8Array): Buffer {
    if (this.k === undefined) return Buffer.from(pt)
    if (this.n >= MAX_NONCE) throw new NoiseError('nonce exhausted')
    const ct = aeadEncrypt(this.k, this.n, ad, pt)
    this.n++
    return ct
  }

  /**
   * As encryptWithAd over the parts' concatenation, but the ciphertext
   * stays in pieces (write them in order): bulk data is not copied again.
   */
  encryptParts (ad: Uint8Array, parts: Uint8Array[]): Buffer[] {
    if (this.k === undefined) return parts.map(p => Buffer.from(p))
    if (this.n >= MAX_NONCE) throw new NoiseError('nonce exhausted')
    const ct = aeadEncryptParts(this.k, this.n, ad, parts)
    this.n++
    return ct
  }

  /** The nonce only advances on success, as Noise requires. */
  decryptWithAd (ad: Uint8Array, ct: Uint8Array): Buffer {
    if (this.k === undefined) return Buffer.from(ct)
    if (this.n >= MAX_NONCE) throw new NoiseError('nonce exhausted')
    const pt = aeadDecrypt(this.k, this.n, ad, ct)
    this.n++
    return pt
  }
}

class SymmetricState {
  readonly cs = new CipherState()
  ck: Buffer
  h: Buffer

  constructor (private readonly hash: { alg: string, len: number }, protocolName: string) {
    const name = Buffer.from(protocolName, 'ascii')
    this.h = name.length <= hash.len ? Buffer.concat([name, Buffer.alloc(hash.len - name.length)]) : this.digest(name)
    this.ck = this.h
  }

  private digest (...parts: Uint8Array[]): Buffer {
    const h = createHash(this.hash.alg)
    for (const p of parts) h.update(p)
    return h.digest()
  }

  private hmac (key: Uint8Array, ...parts: Uint8Array[]): Buffer {
    const m = createHmac(this.hash.alg, key)
    for (const p of parts) m.update(p)
    return m.digest()
  }

  hkdf (ikm: Uint8Array, outputs: 2 | 3): Buffer[] {
    const temp = this.hmac(this.ck, ikm)
    const o1 = this.hmac(temp, Buffer.from([1]))
    const o2 = this.hmac(temp, o1, Buffer.from([2]))
    if (outputs === 2) return [o1, o2]
    return [o1, o2, this.hmac(temp, o2, Buffer.from([3]))]
  }

  mixKey (ikm: Uint8Array): void {
    const [ck, k] = this.hkdf(ikm, 2)
    this.ck = ck
    this.cs.initializeKey(k.subarray(0, 32))
  }

  mixHash (data: Uint8Array): void {
    this.h = this.digest(this.h, data)
  }

  encryptAndHash (pt: Uint8Array): Buffer {
    const ct = this.cs.encryptWithAd(this.h, pt)
    this.mixHash(ct)
    return ct
  }

  decryptAndHash (ct: Uint8Array): Buffer {
    const pt = this.cs.decryptWithAd(this.h, ct)
    this.mixHash(ct)
    return pt
  }

  split (): [CipherState, CipherState] {
    const [k1, k2] = this.hkdf(Buffer.alloc(0), 2)
    const c1 = new CipherState()
    const c2 = new CipherState()
    c1.initializeKey(k1.subarray(0, 32))
    c2.initializeKey(k2.subarray(0, 32))
    return [c1, c2]
  }
}

export interface HandshakeOptions {
  protocolName: string
  initiator: boolean
  prologue?: Uint8Array
  s?: KeyPair
  /** Fixed ephemeral key, for test vectors only. */
  e?: KeyPair
  rs?: Uint8Array
}

export interface TransportKeys { send: CipherState, recv: CipherState, handshakeHash: Buffer }

export class HandshakeState {
  private readonly ss: SymmetricState
  private readonly pattern: Pattern
  private readonly initiator: boolean
  private readonly s?: KeyPair
  private e?: KeyPair
  private rs?: Uint8Array
  private re?: Uint8Array
  private step = 0

  constructor (opts: HandshakeOptions) {
    const m = /^Noise_([A-Z]+)_25519_ChaChaPoly_(SHA256|BLAKE2b)$/.exec(opts.protocolName)
    if (m === null || PATTERNS[m[1]] === undefined) throw new NoiseError(`unsupported protocol ${opts.protocolName}`)
    this.pattern = PATTERNS[m[1]]
    this.ss = new SymmetricState(HASHES[m[2]], opts.protocolName)
    this.initiator = opts.initiator
    this.s = opts.s
    this.e = opts.e
    this.rs = opts.rs
    this.ss.mixHash(opts.prologue ?? Buffer.alloc(0))
    const [ipre, rpre] = this.pattern.pre
    for (const t of ipre) this.ss.mixHash(this.preKey(t, this.initiator))
    for (const t of rpre) this.ss.mixHash(this.preKey(t, !this.initiator))
  }

  private preKey (t: Token, local: boolean): Uint8Array {
    const k = t === 's' ? (local ? this.s?.public : this.rs) : undefined
    if (k === undefined) throw new NoiseError(`pattern needs a pre-message ${local ? 'local' : 'remote'} static key`)
    return k
  }

  /** True when the next message is ours to write. */
  get myTurn (): boolean { return (this.step % 2 === 0) === this.initiator }
  get done (): boolean { return this.step >= this.pattern.messages.length }
  get remoteStatic (): Uint8Array | undefined { return this.rs }
  get handshakeHash (): Buffer { return this.ss.h }

  private mixDh (t: Token): void {
    // es: initiator's ephemeral with responder's static; se the reverse.
    const need = <T>(v: T | undefined, what: string): T => {
      if (v === undefined) throw new NoiseError(`missing ${what} for ${t}`)
      return v
    }
    const [mine, theirs] = t === 'ee'
      ? [need(this.e, 'e'), need(this.re, 're')]
      : t === 'ss'
        ? [need(this.s, 's'), need(this.rs, 'rs')]
        : (t === 'es') === this.initiator
            ? [need(this.e, 'e'), need(this.rs, 'rs')]
            : [need(this.s, 's'), need(this.re, 're')]
    this.ss.mixKey(dh(mine, theirs))
  }

  writeMessage (payload: Uint8Array = Buffer.alloc(0)): Buffer {
    if (this.done || !this.myTurn) throw new NoiseError('not our turn to write')
    const out: Buffer[] = []
    for (const t of this.pattern.messages[this.step]) {
      if (t === 'e') {
        this.e ??= keyPairFromSecret(randomBytes(32))
        out.push(Buffer.from(this.e.public))
        this.ss.mixHash(this.e.public)
      } else if (t === 's') {
        if (this.s === undefined) throw new NoiseError('missing local static key')
        out.push(this.ss.encryptAndHash(this.s.public))
      } else {
        this.mixDh(t)
      }
    }
    out.push(this.ss.encryptAndHash(payload))
    this.step++
    const msg = Buffer.concat(out)
    if (msg.length > MAX_MESSAGE) throw new NoiseError('handshake message too long')
    return msg
  }

  readMessage (msg: Uint8Array): Buffer {
    if (this.done || this.myTurn) throw new NoiseError('not our turn to read')
    let off = 0
    const take = (n: number, what: string): Uint8Array => {
      if (msg.length - off < n) throw new NoiseError(`handshake message too short for ${what}`)
      const part = msg.subarray(off, off + n)
      off += n
      return part
    }
    for (const t of this.pattern.messages[this.step]) {
      if (t === 'e') {
        this.re = Buffer.from(take(DHLEN, 'e'))
        this.ss.mixHash(this.re)
      } else if (t === 's') {
        const len = this.ss.cs.hasKey() ? DHLEN + TAGLEN : DHLEN
        this.rs = this.ss.decryptAndHash(take(len, 's'))
      } else {
        this.mixDh(t)
      }
    }
    const payload = this.ss.decryptAndHash(msg.subarray(off))
    this.step++
    return payload
  }

  split (): TransportKeys {
    if (!this.done) throw new NoiseError('handshake not finished')
    const [c1, c2] = this.ss.split()
    return this.initiator
      ? { send: c1, recv: c2, handshakeHash: this.ss.h }
      : { send: c2, recv: c1, handshakeHash: this.ss.h }
  }
}
