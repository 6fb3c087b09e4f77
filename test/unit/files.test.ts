import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { parseConfig } from '../../src/config.js'
import { identityFromSeed } from '../../src/lib/keys.js'
import { silentLogger } from '../../src/lib/log.js'
import { yieldLoop } from '../../src/lib/wait.js'
import { ManifestVerifier, fieldsError, fromWire, newer, signManifest, toWire, type Manifest } from '../../src/services/files/manifest.js'
import { IgnoreList, escapeName, managedNameError } from '../../src/services/files/names.js'
import { CHUNK, Fetcher, WINDOW } from '../../src/services/files/fetch.js'
import { ContentServer } from '../../src/services/files/serve.js'
import { decodeMessage, encodeMessage, type FilesMessage } from '../../src/transport/messages/index.js'
import { FakeClock } from '../helpers/clock.js'
import { eventually, tempDir } from '../helpers/net.js'

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

describe('serving managed-file content', () => {
  it('answers on a new link only what was asked on it: a stale "none" would drop us as a source', async () => {
    const file = path.join(await tempDir(), 'held')
    await writeFile(file, 'held content')
    const held = Buffer.alloc(32, 1)
    const sent: FilesMessage[] = []
    let up = true
    let cuts = 1
    const server: ContentServer = new ContentServer({
      contentPath: (sha) => {
        // The link goes and is back while the first range is looked up and read.
        if (cuts-- > 0) {
          up = false
          server.linkDown('b')
          up = true
          server.linkUp('b')
        }
        return sha === held.toString('hex') ? file : undefined
      },
      send: (_peer, m) => {
        if (!up) throw new Error('link down')
        sent.push(m)
      },
      log: silentLogger
    })
    server.linkUp('b')
    server.onGet('b', [{ name: 'gone', sha256: Buffer.alloc(32, 2), offset: 0, len: 4 }, { name: 'held', sha256: held, offset: 0, len: 4 }])
    for (let i = 0; i < 5; i++) await yieldLoop()
    expect(sent).toEqual([])
    server.onGet('b', [{ name: 'held', sha256: held, offset: 5, len: 7 }])
    await eventually(() => sent.length > 0, 'the answer on the new link')
    expect(sent).toMatchObject([{ type: 'fdata', offset: 5, data: Buffer.from('content') }])
  })
})

describe('fetching managed-file content', () => {
  it('a link lost and back while a fetched file is written: it arrives once, and the peer\'s window is whole again', async () => {
    const dir = await tempDir()
    const content = Buffer.alloc(3 * CHUNK, 7)
    const sha = createHash('sha256').update(content).digest('hex')
    const asked: FilesMessage[] = []
    const arrived: string[] = []
    const f = new Fetcher({
      host: { objectPath: (s) => path.join(dir, s), partialPath: (s) => path.join(dir, `${s}.part`), addObject: () => {} },
      send: (_peer, m) => { asked.push(m) },
      upPeers: () => ['a'],
      clock: new FakeClock(),
      log: silentLogger,
      onContent: (s) => { arrived.push(s) }
    })
    const answer = (): void => {
      for (const m of asked.splice(0)) {
        if (m.type === 'fget') for (const r of m.ranges) f.onData('a', r.sha256, r.offset, content.subarray(r.offset, r.offset + r.len))
      }
    }
    f.linkUp('a')
    f.want(sha, content.length, 'big', 'a')
    await eventually(() => asked.length > 0, 'the ask')
    // All of it arrives; the link goes and is back while its writes are on their way to disk.
    answer()
    f.linkDown('a')
    f.linkUp('a')
    await eventually(() => {
      answer()
      return arrived.length > 0 && !f.busy
    }, 'the content, from the new turn')
    expect(arrived).toEqual([sha])
    // What the first turn had asked is off the books: a new want gets the whole window.
    const other = Buffer.alloc(2 * WINDOW, 1)
    f.want(createHash('sha256').update(other).digest('hex'), other.length, 'other', 'a')
    await eventually(() => asked.length > 0, 'the next ask')
    expect(asked.flatMap(m => m.type === 'fget' ? m.ranges : []).reduce((n, r) => n + r.len, 0)).toBe(WINDOW)
  })
})
