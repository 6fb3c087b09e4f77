// Node identity. A secret key file holds one 32-byte seed; from it we derive
// an X25519 key pair (Noise handshake) and an Ed25519 key pair (signatures on
// managed files). A public key, as printed by keygen and written in peers'
// configs, is both public halves: 64 bytes, base64url.
import { createHash, randomBytes } from 'node:crypto'
import { open, readFile, stat } from 'node:fs/promises'
import nacl from 'tweetnacl'

const SECRET_HEADER = 'peerfs-secret-key-v1'
export const PUBLIC_KEY_BYTES = 64
const PUBLIC_KEY_CHARS = 86

export interface Identity {
  dhSecret: Uint8Array
  dhPublic: Uint8Array
  signSecret: Uint8Array
  signPublic: Uint8Array
  /** dhPublic || signPublic, the node's published key. */
  publicKey: Buffer
}

export function identityFromSeed (seed: Uint8Array): Identity {
  if (seed.length !== 32) throw new Error(`secret key seed must be 32 bytes, got ${seed.length}`)
  const dhSecret = createHash('sha256').update('peerfs/x25519/v1').update(seed).digest()
  const dhPublic = nacl.scalarMult.base(dhSecret)
  const sign = nacl.sign.keyPair.fromSeed(seed)
  return {
    dhSecret,
    dhPublic,
    signSecret: sign.secretKey,
    signPublic: sign.publicKey,
    publicKey: Buffer.concat([dhPublic, sign.publicKey])
  }
}

export function encodePublicKey (key: Uint8Array): string {
  return Buffer.from(key).toString('base64url')
}

export interface PublicKey { dh: Buffer, sign: Buffer, text: string }

/** Parses a public key as printed by keygen; throws with what is wrong. */
export function parsePublicKey (text: string): PublicKey {
  if (!/^[A-Za-z0-9_-]+$/.test(text)) throw new Error('must be base64url text as printed by `peerfs keygen` or `peerfs pubkey`')
  if (text.length !== PUBLIC_KEY_CHARS) throw new Error(`must be ${PUBLIC_KEY_CHARS} characters, got ${text.length}`)
  const raw = Buffer.from(text, 'base64url')
  if (raw.length !== PUBLIC_KEY_BYTES) throw new Error(`must decode to ${PUBLIC_KEY_BYTES} bytes, got ${raw.length}`)
  return { dh: raw.subarray(0, 32), sign: raw.subarray(32), text }
}

export function formatSecretKey (seed: Uint8Array): string {
  return `${SECRET_HEADER} ${Buffer.from(seed).toString('base64url')}\n`
}

export function parseSecretKey (text: string): Uint8Array {
  const parts = text.trim().split(/\s+/)
  if (parts.length !== 2 || parts[0] !== SECRET_HEADER) throw new Error(`not a peerfs secret key file (expected "${SECRET_HEADER} <key>")`)
  const seed = Buffer.from(parts[1], 'base64url')
  if (seed.length !== 32) throw new Error(`secret key must decode to 32 bytes, got ${seed.length}`)
  return seed
}

/** Writes a new secret key file (0600), refusing to overwrite. */
export async function writeNewKeyFile (file: string): Promise<Identity> {
  const seed = randomBytes(32)
  const fh = await open(file, 'wx', 0o600)
  try {
    await fh.writeFile(formatSecretKey(seed))
    await fh.sync()
  } finally {
    await fh.close()
  }
  return identityFromSeed(seed)
}

/** Reads a secret key file; refuses one that group or others can read. */
export async function readKeyFile (file: string): Promise<Identity> {
  const st = await stat(file)
  if ((st.mode & 0o077) !== 0) {
    throw new Error(`is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 on it`)
  }
  return identityFromSeed(parseSecretKey(await readFile(file, 'utf8')))
}
