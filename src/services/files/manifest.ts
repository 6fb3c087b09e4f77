// A managed file's manifest: {name, version, size, sha256, deleted,
// signer} signed with the signer's Ed25519 key. The order between two
// manifests of one name (newer()) is the same on every node: higher
// version, then higher signer key, then higher hash. Signing and
// verifying use node:crypto (a verify costs ~80 us here, tweetnacl's
// ~7.5 ms); a verifier keeps one KeyObject per trusted signer.
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import { SHA_BYTES, SIG_BYTES, SIGNER_BYTES, type WireManifest } from '../../transport/messages/files.js'

export interface Manifest {
  name: string
  version: number
  size: number
  /** Hex; '' for a tombstone. */
  sha256: string
  deleted: boolean
  /** Ed25519 public key, base64url. */
  signer: string
  /** Signature over signedBytes(), base64url. */
  sig: string
}

export type Unsigned = Omit<Manifest, 'sig' | 'signer'>

export function signedBytes (m: Omit<Manifest, 'sig'>): Buffer {
  return Buffer.from(JSON.stringify(['peerfs-file-v1', m.name, m.version, m.size, m.sha256, m.deleted, m.signer]))
}

// DER wrappers that turn a raw 32-byte Ed25519 seed or public key into
// what node:crypto imports (RFC 8410).
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/** Signs manifests with one node's key (the 64-byte tweetnacl secret: seed || public). */
export class ManifestSigner {
  readonly signer: string
  private readonly key: KeyObject

  constructor (signSecret: Uint8Array) {
    this.key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, signSecret.subarray(0, 32)]), format: 'der', type: 'pkcs8' })
    this.signer = Buffer.from(signSecret.subarray(32, 64)).toString('base64url')
  }

  sign (m: Unsigned): Manifest {
    const body = { ...m, signer: this.signer }
    return { ...body, sig: sign(null, signedBytes(body), this.key).toString('base64url') }
  }
}

export function signManifest (m: Unsigned, signSecret: Uint8Array): Manifest {
  return new ManifestSigner(signSecret).sign(m)
}

/** Checks signatures; holds one public KeyObject per signer seen (signers are the trusted few). */
export class ManifestVerifier {
  private readonly keys = new Map<string, KeyObject>()
  private static readonly MAX_KEYS = 1024

  verify (m: Manifest): boolean {
    let key = this.keys.get(m.signer)
    if (key === undefined) {
      const raw = Buffer.from(m.signer, 'base64url')
      if (raw.length !== SIGNER_BYTES) return false
      if (this.keys.size >= ManifestVerifier.MAX_KEYS) this.keys.clear()
      key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' })
      this.keys.set(m.signer, key)
    }
    const sig = Buffer.from(m.sig, 'base64url')
    if (sig.length !== SIG_BYTES) return false
    try {
      return verify(null, signedBytes(m), key, sig)
    } catch {
      return false
    }
  }
}

/** Why a manifest's fields (not its name or signature) are unusable, or undefined. */
export function fieldsError (m: Manifest): string | undefined {
  if (!Number.isSafeInteger(m.version) || m.version < 0) return 'bad version'
  if (!Number.isSafeInteger(m.size) || m.size < 0) return 'bad size'
  if (m.deleted ? m.sha256 !== '' || m.size !== 0 : !/^[0-9a-f]{64}$/.test(m.sha256)) return 'bad sha256'
  if (Buffer.from(m.signer, 'base64url').length !== SIGNER_BYTES || Buffer.from(m.sig, 'base64url').length !== SIG_BYTES) return 'unsigned'
  return undefined
}

/** True if a should replace b: the same order on every node. */
export function newer (a: Manifest, b: Manifest | undefined): boolean {
  if (b === undefined) return true
  if (a.version !== b.version) return a.version > b.version
  if (a.signer !== b.signer) return a.signer > b.signer
  return a.sha256 > b.sha256
}

/** The summary's hash of one manifest: equal for equal manifests, different otherwise. */
export function itemHash (m: Manifest): Buffer {
  return createHash('sha256').update(m.sig).digest().subarray(0, 16)
}

const ZERO_SHA = Buffer.alloc(SHA_BYTES)

export function toWire (m: Manifest): WireManifest {
  return {
    name: m.name,
    version: m.version,
    size: m.size,
    deleted: m.deleted,
    sha256: m.deleted ? ZERO_SHA : Buffer.from(m.sha256, 'hex'),
    signer: Buffer.from(m.signer, 'base64url'),
    sig: Buffer.from(m.sig, 'base64url')
  }
}

export function fromWire (w: WireManifest): Manifest {
  return {
    name: w.name,
    version: w.version,
    size: w.size,
    deleted: w.deleted,
    sha256: w.deleted ? '' : w.sha256.toString('hex'),
    signer: w.signer.toString('base64url'),
    sig: w.sig.toString('base64url')
  }
}
