import { describe, expect, it } from 'vitest'
import { identityFromSeed } from '../../src/lib/keys.js'
import { badManifest, newer, signManifest, type Manifest } from '../../src/services/files.js'

const alice = identityFromSeed(new Uint8Array(32).fill(1))
const bob = identityFromSeed(new Uint8Array(32).fill(2))
const key = (id: typeof alice): string => Buffer.from(id.signPublic).toString('base64url')
const trustAll = (): boolean => true
const sha = 'ab'.repeat(32)

describe('file manifests', () => {
  it('sign and verify; any change breaks the signature', () => {
    const m = signManifest({ name: 'a/b.conf', version: 1000, size: 3, sha256: sha, deleted: false }, alice.signSecret)
    expect(m.signer).toBe(key(alice))
    expect(badManifest(m, trustAll)).toBeUndefined()
    for (const change of [{ version: 1001 }, { size: 4 }, { name: 'a/c.conf' }, { sha256: 'cd'.repeat(32) }, { deleted: true, sha256: '' }, { signer: key(bob) }]) {
      expect(badManifest({ ...m, ...change }, trustAll)).toMatch(/bad signature/)
    }
  })

  it('refuses untrusted signers, bad names and malformed fields', () => {
    const m = signManifest({ name: 'x', version: 1, size: 0, sha256: sha, deleted: false }, bob.signSecret)
    expect(badManifest(m, (s) => s === key(alice))).toMatch(/untrusted key/)
    const bad = (over: Partial<Manifest>): string | undefined => badManifest({ ...m, ...over }, trustAll)
    expect(bad({ name: '../etc/passwd' })).toMatch(/bad name/)
    expect(bad({ name: '.hidden' })).toMatch(/bad name/)
    expect(bad({ version: -1 })).toMatch(/bad version/)
    expect(bad({ sha256: 'zz' })).toMatch(/bad sha256/)
    expect(bad({ sig: 'short' })).toMatch(/unsigned/)
    expect(badManifest(null, trustAll)).toMatch(/not an object/)
  })

  it('orders versions the same way everywhere: version, then signer, then hash', () => {
    const v = (version: number, who: typeof alice, h = sha): Manifest => signManifest({ name: 'x', version, size: 1, sha256: h, deleted: false }, who.signSecret)
    expect(newer(v(2, alice), v(1, bob))).toBe(true)
    expect(newer(v(1, alice), v(2, bob))).toBe(false)
    const [lo, hi] = key(alice) < key(bob) ? [alice, bob] : [bob, alice]
    expect(newer(v(5, hi), v(5, lo))).toBe(true)
    expect(newer(v(5, lo), v(5, hi))).toBe(false)
    expect(newer(v(5, alice, 'cd'.repeat(32)), v(5, alice, sha))).toBe(true)
    expect(newer(v(5, alice), v(5, alice))).toBe(false)
    expect(newer(v(1, alice), undefined)).toBe(true)
  })
})
