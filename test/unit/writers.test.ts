import { appendFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { SLACK_BYTES, WriterLog } from '../../src/lib/writers.js'
import { sh, tempDir } from '../helpers/net.js'

const dirs: string[] = []
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

/** A log file and the folder it names files in, holding these files. */
async function setup (...files: string[]): Promise<{ file: string, folder: string }> {
  const d = await tempDir()
  dirs.push(d)
  const folder = path.join(d, 'folder')
  for (const rel of files) {
    await mkdir(path.dirname(path.join(folder, rel)), { recursive: true })
    await writeFile(path.join(folder, rel), 'half')
  }
  return { file: path.join(d, 'beta'), folder }
}

describe('the files open for writing, kept for the next start (lib/writers.ts)', () => {
  it('holds the files the last run opened and did not close, of those that still exist, until released, across restarts', async () => {
    const odd = 'd/x "quoted"\nnewline'
    const { file, folder } = await setup('done', 'cut', odd)
    const a = new WriterLog(file, folder, 100)
    expect(await a.load()).toEqual([])
    for (const rel of ['done', 'cut', 'gone', odd]) a.opened(rel)
    a.closed('done')
    // A process killed without a word: nothing more is written.
    const b = new WriterLog(file, folder, 100)
    expect(await b.load()).toEqual(['cut', odd])
    expect([b.held('cut'), b.held('done'), b.heldCount]).toEqual([true, false, 2])
    expect(b.heldUnder('d')).toEqual([odd])
    // A writer that opens and closes a held file without the user's say-so leaves it held.
    b.opened('cut')
    b.closed('cut')
    b.close()
    const c = new WriterLog(file, folder, 100)
    expect(await c.load()).toEqual(['cut', odd])
    expect(c.release('cut')).toBe(true)
    expect(c.release('cut')).toBe(false)
    c.release(odd)
    expect(c.heldCount).toBe(0)
    c.close()
    expect(await new WriterLog(file, folder, 100).load()).toEqual([])
  })

  it('skips a torn last line and lines that are not its own', async () => {
    const { file, folder } = await setup('whole')
    const a = new WriterLog(file, folder, 100)
    await a.load()
    a.opened('whole')
    a.close()
    await appendFile(file, '+"torn\n-\n+42\n*"x"\n+""\n')
    expect(await new WriterLog(file, folder, 100).load()).toEqual(['whole'])
  })

  it('writes its lines on a full disk, and starts there: a file held there is still held after a restart', async () => {
    const d = await tempDir()
    dirs.push(d)
    const disk = path.join(d, 'disk')
    await mkdir(disk)
    expect((await sh(`mount -t tmpfs -o size=2m peerfs-test ${disk}`)).code).toBe(0)
    try {
      const folder = path.join(disk, 'folder')
      const file = path.join(disk, 'beta')
      await mkdir(folder)
      const names = Array.from({ length: 300 }, (_, i) => `some/longer/folder/name/file-${i}`)
      for (const n of names) {
        await mkdir(path.dirname(path.join(folder, n)), { recursive: true })
        await writeFile(path.join(folder, n), 'half')
      }
      const a = new WriterLog(file, folder, 1000)
      await a.load()
      // Another program takes every block left.
      await sh(`cat /dev/zero > ${disk}/filler`)
      expect((await sh(`df -B1 --output=avail ${disk} | tail -1`)).stdout.trim()).toBe('0')
      // Written one by one (a cp -r), the last 100 cut short by the full disk.
      for (const [i, n] of names.entries()) {
        a.opened(n)
        if (i < 200) a.closed(n)
        else a.hold(n)
      }
      a.close()
      const b = new WriterLog(file, folder, 1000)
      expect(await b.load()).toEqual(names.slice(200))
      b.release(names[200])
      b.close()
      expect(await new WriterLog(file, folder, 1000).load()).toEqual(names.slice(201))
    } finally {
      await sh(`umount -l ${disk}`)
    }
  })

  it('stays small: rewritten with what is live once it has 10,000 lines more, and tracks at most max files', async () => {
    const { file, folder } = await setup('stays', 'x', 'y', 'z')
    const a = new WriterLog(file, folder, 3)
    await a.load()
    a.opened('stays')
    for (let i = 0; i < 30_000; i++) {
      a.opened(`f${i}`)
      a.closed(`f${i}`)
    }
    // The lines, and the slack kept past them.
    expect((await stat(file)).size).toBeLessThan(200_000 + 2 * SLACK_BYTES)
    for (const rel of ['x', 'y', 'z']) a.opened(rel)
    a.close()
    expect((await readFile(file, 'utf8')).includes('"z"')).toBe(false)
    expect(await new WriterLog(file, folder, 3).load()).toEqual(['stays', 'x', 'y'])
  })
})
