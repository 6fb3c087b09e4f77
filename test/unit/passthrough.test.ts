// The outbox folder's hooks, over a real folder without FUSE: what the
// sender is told of a file as it is written, so it can send a file that
// is written in order before it is closed (and only then).
import { constants as fsc, existsSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { PassFile, PassRoot, type PassHandle } from '../../src/fs/passthrough.js'
import { isReserved } from '../../src/lib/names.js'
import { tempDir } from '../helpers/net.js'

const dirs: string[] = []
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

async function folder (maxFileBytes?: number): Promise<{ top: ReturnType<PassRoot['top']>, told: string[] }> {
  const dir = await tempDir()
  dirs.push(dir)
  const told: string[] = []
  const root = new PassRoot(dir, {
    writing: (rel, d) => told.push(`writing ${rel} ${d}`),
    grew: (rel, end) => told.push(`grew ${rel} ${end ?? 'no'}`),
    ready: (rel) => told.push(`ready ${rel}`),
    gone: (rel) => told.push(`gone ${rel}`),
    renamed: (from, to) => told.push(`renamed ${from} ${to}`),
    failed: (rel, why) => told.push(`failed ${rel} ${why}`),
    maxFileBytes
  }, false)
  return { top: root.top(), told }
}

const write = (h: PassHandle, text: string, pos: number): number => h.write(Buffer.from(text), pos)

describe('the outbox folder tells its owner', () => {
  it('how much of a file it created is written in order, until a write lands elsewhere', async () => {
    const { top, told } = await folder()
    const h = top.create('f', 0o644)
    write(h, 'abc', 0)
    write(h, 'de', 3)
    // A truncate to the size written so far changes nothing.
    h.truncate(5)
    write(h, 'X', 0)
    write(h, 'fg', 5)
    h.release()
    expect(told).toEqual(['writing f 1', 'grew f 3', 'grew f 5', 'grew f no', 'writing f -1', 'ready f'])
  })

  it('of a writer before the open(2) that creates the file, and of its end when that open fails', async () => {
    const dir = await tempDir()
    dirs.push(dir)
    const seen: string[] = []
    // What a kill -9 at that instant leaves on disk: the file must not exist yet when its writer is told.
    const root = new PassRoot(dir, { writing: (rel, d) => seen.push(`writing ${rel} ${d} ${existsSync(path.join(dir, rel)) ? 'exists' : 'not yet'}`) }, false)
    root.top().create('new', 0o644).release()
    // An open(2) that fails (a folder of that name): the writer it began ends.
    await mkdir(path.join(dir, 'sub'))
    expect(() => root.top().create('sub', 0o644)).toThrow(/EISDIR/)
    expect(seen).toEqual(['writing new 1 not yet', 'writing new -1 exists', 'writing sub 1 exists', 'writing sub -1 exists'])
  })

  it('that a truncate ends the order, and a truncate refused for its size changes nothing', async () => {
    const { top, told } = await folder(4)
    const h = top.create('u', 0o644)
    write(h, 'abc', 0)
    expect(() => h.truncate(9)).toThrow(/over the 4-byte limit/)
    h.release()
    expect(told).toEqual(['writing u 1', 'grew u 3', 'writing u -1', 'ready u'])
  })

  it('that a truncate or a write refused for its size ends the order', async () => {
    const { top, told } = await folder()
    const h = top.create('t', 0o644)
    write(h, 'abc', 0)
    h.truncate(1)
    h.release()
    expect(told.filter(t => t.startsWith('grew'))).toEqual(['grew t 3', 'grew t no'])
  })

  it('of a write that failed, once, and not of the file as ready at its close: it is not what its writer meant; renamed while open, it failed under its new name too', async () => {
    const { top, told } = await folder(4)
    const h = top.create('f', 0o644)
    write(h, 'abc', 0)
    expect(() => write(h, 'de', 3)).toThrow(/over the 4-byte limit/)
    write(h, 'd', 3)
    await top.rename('f', top, 'g')
    h.release()
    const why = 'f: over the 4-byte limit'
    expect(told).toEqual(['writing f 1', 'grew f 3', 'grew f no', `failed f ${why}`, 'renamed f g', 'gone f', 'writing f -1', 'writing g 1', 'ready g', `failed g ${why}`, 'writing g -1'])
  })

  it('nothing of the order of a file opened again, or of a hidden one (rsync\'s temp file)', async () => {
    const { top, told } = await folder()
    top.create('g', 0o644).release()
    const again = (top.lookup('g') as PassFile).open({ flags: fsc.O_WRONLY, wake: () => {} })
    write(again, 'abc', 0)
    again.release()
    const hidden = top.create('.g.tmp', 0o644)
    write(hidden, 'abc', 0)
    hidden.release()
    expect(told.filter(t => t.startsWith('grew'))).toEqual([])
  })

  it('that a file renamed while open, or in a folder renamed, is written under its new name: ready only at its close, there', async () => {
    const { top, told } = await folder()
    const h = top.create('a.log', 0o644)
    write(h, 'abc', 0)
    await top.rename('a.log', top, 'b.log')
    write(h, 'def', 3)
    expect(told).toEqual(['writing a.log 1', 'grew a.log 3', 'renamed a.log b.log', 'gone a.log', 'writing a.log -1', 'writing b.log 1', 'ready b.log'])
    told.length = 0
    h.release()
    // No stream of it any more: it goes as the file its writer closed.
    expect(told).toEqual(['writing b.log -1', 'ready b.log'])

    await top.mkdir('d', 0o755)
    const d = top.lookup('d') as unknown as ReturnType<PassRoot['top']>
    const inner = d.create('x', 0o644)
    const other = top.create('y', 0o644)
    told.length = 0
    await top.rename('d', top, 'e')
    write(inner, 'x', 0)
    inner.release()
    other.release()
    expect(told).toEqual(['renamed d e', 'gone d', 'writing d/x -1', 'writing e/x 1', 'ready e', 'writing e/x -1', 'ready e/x', 'writing y -1'])
  })

  it('the order of rsync\'s temp file as it is written, and its rename into place, never ready under its temp name', async () => {
    const { top, told } = await folder()
    const h = top.create('.big.bin.Zx81Qa', 0o644)
    write(h, 'abc', 0)
    write(h, 'de', 3)
    h.release()
    await top.rename('.big.bin.Zx81Qa', top, 'big.bin')
    expect(told).toEqual(['writing .big.bin.Zx81Qa 1', 'grew .big.bin.Zx81Qa 3', 'grew .big.bin.Zx81Qa 5', 'writing .big.bin.Zx81Qa -1', 'renamed .big.bin.Zx81Qa big.bin', 'gone .big.bin.Zx81Qa', 'ready big.bin'])
  })
})

describe('a folder that hides its owner\'s files in progress (an inbox)', () => {
  it('neither lists nor finds a reserved name, at the top or below', async () => {
    const dir = await tempDir()
    dirs.push(dir)
    await mkdir(path.join(dir, 'sub'))
    for (const f of ['a', '.peerfs-0123-0', 'sub/b', 'sub/.peerfs-4567-1']) await writeFile(path.join(dir, f), 'x')
    const top = new PassRoot(dir, {}, true, isReserved).top()
    expect(top.list().sort()).toEqual(['a', 'sub'])
    expect(top.lookup('.peerfs-0123-0')).toBeUndefined()
    expect(top.lookupPath(['sub', '.peerfs-4567-1'])).toBeUndefined()
    expect(top.lookupPath(['sub', 'b'])).toBeDefined()
  })
})
