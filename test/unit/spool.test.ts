import { readdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/lib/log.js'
import { DeferredSpool, decodeItem, encodeItem } from '../../src/services/spool.js'
import { tempDir } from '../helpers/net.js'

describe('deferred spool', () => {
  it('encodes and decodes a request file, refusing damaged ones', () => {
    const it = { seq: 7, svc: 9, created: 1_700_000_000_000, payload: Buffer.from('hello') }
    expect(decodeItem(7, encodeItem(it))).toEqual(it)
    const b = encodeItem(it)
    expect(() => decodeItem(7, b.subarray(0, b.length - 1))).toThrow(/does not match file size/)
    expect(() => decodeItem(7, Buffer.from('nope'))).toThrow(/not a deferred request/)
  })

  it('keeps requests in order across reopen and never reuses a seq', async () => {
    const dir = await tempDir()
    let s = await DeferredSpool.open(dir, silentLogger)
    expect(await s.enqueue(9, Buffer.from('a'), 1)).toBe(1)
    expect(await s.enqueue(9, Buffer.from('b'), 2)).toBe(2)
    await s.complete(1, 'ok', 3)
    await s.complete(2, 'ok', 4)
    const epoch = s.epoch
    s = await DeferredSpool.open(dir, silentLogger)
    expect(s.epoch).toBe(epoch)
    expect(s.pending).toBe(0)
    expect(await s.enqueue(9, Buffer.from('c'), 5)).toBe(3)
    s = await DeferredSpool.open(dir, silentLogger)
    expect(s.head()?.payload.toString()).toBe('c')
    expect((await s.readLog()).toString()).toBe('3 #1 svc 09 ok\n4 #2 svc 09 ok\n')
  })

  it('counts a finished-marker left by a crash towards the next seq', async () => {
    const dir = await tempDir()
    const s = await DeferredSpool.open(dir, silentLogger)
    await s.enqueue(9, Buffer.from('a'), 1)
    // As if the daemon died after finishing #1 but before writing acked.
    await writeFile(path.join(dir, 'q', '0000000000000001.done'), '')
    await writeFile(path.join(dir, 'q', '0000000000000001.req'), '')
    const again = await DeferredSpool.open(dir, silentLogger)
    expect(again.pending).toBe(0)
    expect(await readdir(path.join(dir, 'q'))).toEqual(['0000000000000001.done'])
    expect(await again.enqueue(9, Buffer.from('b'), 2)).toBe(2)
  })

  it('sets a corrupt request file aside and keeps the rest', async () => {
    const dir = await tempDir()
    const s = await DeferredSpool.open(dir, silentLogger)
    await s.enqueue(9, Buffer.from('a'), 1)
    await s.enqueue(9, Buffer.from('b'), 2)
    await writeFile(path.join(dir, 'q', '0000000000000001.req'), 'garbage')
    const again = await DeferredSpool.open(dir, silentLogger)
    expect(again.pending).toBe(1)
    expect(again.head()?.payload.toString()).toBe('b')
    expect(await readdir(path.join(dir, 'q'))).toContain('0000000000000001.req.bad')
  })
})
