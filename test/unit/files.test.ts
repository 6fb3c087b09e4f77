import { describe, expect, it } from 'vitest'
import { parseConfig } from '../../src/config.js'
import { identityFromSeed } from '../../src/lib/keys.js'
import { ManifestVerifier, fieldsError, fromWire, newer, signManifest, toWire, type Manifest } from '../../src/services/files/manifest.js'
import { IgnoreList, escapeName, managedNameError } from '../../src/services/files/names.js'
import { decodeMessage, encodeMessage } from '../../src/transport/messages/index.js'

const alice = identityFromSeed(new Uint8Array(32).fill(1))
const bob = identityFromSeed(new Uint8Array(32).fill(2))
const key = (id: typeof alice): string => Buffer.from(id.signPublic).toString('base64url')
const sha = 'ab'.repeat(32)
const verifier = new ManifestVerifier()
/** Why a manifest is refused (fields, name, signature), as the intake checks it. */
const badManifest = (m: Manifest): string | undefined => fieldsError(m) ?? managedNameError(m.name) ?? (verifier.verify(m) ? undefined : 'bad signature')

describe('file manifests', () => {
  it('sign and verify; any change breaks the signature', () => {
    const m = signManifest({ name: 'a/b.conf', version: 1000, size: 3, sha256: sha, deleted: false }, alice.signSecret)
    expect(m.signer).toBe(key(alice))
    expect(badManifest(m)).toBeUndefined()
    for (const change of [{ version: 1001 }, { size: 4 }, { name: 'a/c.conf' }, { sha256: 'cd'.repeat(32) }, { deleted: true, sha256: '', size: 0 }, { signer: key(bob) }]) {
      expect(badManifest({ ...m, ...change })).toMatch(/bad signature/)
    }
    // The wire form carries it unchanged, through the codec.
    const back = decodeMessage(encodeMessage({ type: 'fadv', manifests: [toWire(m)] }))
    expect(back.type === 'fadv' && fromWire(back.manifests[0])).toEqual(m)
  })

  it('refuses bad names and malformed fields before any signature is checked', () => {
    const m = signManifest({ name: 'x', version: 1, size: 0, sha256: sha, deleted: false }, bob.signSecret)
    const bad = (over: Partial<Manifest>): string | undefined => badManifest({ ...m, ...over })
    expect(bad({ name: '../etc/passwd' })).toMatch(/"\.\." in path/)
    expect(bad({ name: '.hidden' })).toMatch(/hidden name/)
    expect(bad({ name: 'a/.partial/b' })).toMatch(/hidden name/)
    expect(bad({ name: 'tab\there' })).toMatch(/control character/)
    expect(bad({ name: 'line\nforged\t1\t2' })).toMatch(/control character/)
    expect(bad({ name: '.peerfs-status' })).toMatch(/reserved name/)
    expect(bad({ version: -1 })).toMatch(/bad version/)
    expect(bad({ sha256: 'zz' })).toMatch(/bad sha256/)
    expect(bad({ deleted: true })).toMatch(/bad sha256/)
    expect(bad({ sig: 'short' })).toMatch(/unsigned/)
  })

  it('ignores editor debris by default, per name component', () => {
    const ig = new IgnoreList()
    for (const n of ['notes.txt~', '#notes.txt#', '.notes.txt.swp', 'a/b.swp', 'dir~/inside']) expect(ig.ignored(n)).toBe(true)
    for (const n of ['notes.txt', 'a~b', 'swp', 'a/#b', 'x.swp.txt']) expect(ig.ignored(n)).toBe(false)
    expect(new IgnoreList(['*.tmp', 'cache?']).ignored('x/cache1/y')).toBe(true)
    expect(new IgnoreList([]).ignored('a~')).toBe(false)
  })

  it('escapes names in listings so no name can forge a line or a column', () => {
    expect(escapeName('plain/name.txt')).toBe('plain/name.txt')
    expect(escapeName('a\tb\nc\\d\x01')).toBe('a\\tb\\nc\\\\d\\x01')
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

describe('managed-file settings', () => {
  const parse = (extra: string) => parseConfig('/etc/peerfs/a.toml', `id = "a"\nkey = "a.key"\nstate = "s"\n${extra}`)

  it('default to ignoring editor debris and a 1 GiB limit', () => {
    expect(parse('')).toMatchObject({ filesIgnore: ['*~', '#*#', '*.swp'], filesMaxBytes: 1 << 30 })
    expect(parse('files_ignore = []\nfiles_max_bytes = 1048576\n')).toMatchObject({ filesIgnore: [], filesMaxBytes: 1 << 20 })
  })

  it('refuse a pattern that cannot match a name component', () => {
    expect(() => parse('files_ignore = ["a/b"]\n')).toThrow(/files_ignore: "a\/b": a pattern matches one name component/)
    expect(() => parse('files_ignore = [""]\n')).toThrow(/files_ignore/)
    expect(() => parse('files_max_bytes = 0\n')).toThrow(/files_max_bytes: must be between 1/)
  })
})
