import { appendFile, readFile, rm, stat } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { WriterLog } from '../../src/lib/writers.js'
import { tempDir } from '../helpers/net.js'

const dirs: string[] = []
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

async function logFile (): Promise<string> {
  const d = await tempDir()
  dirs.push(d)
  return path.join(d, 'beta')
}

const all = (): boolean => true

describe('the files open for writing, kept for the next start (lib/writers.ts)', () => {
  it('gives the next run the files opened and not closed, of those that still exist, and keeps them until closed', async () => {
    const file = await logFile()
    const a = new WriterLog(file, 100)
    expect(await a.load(all)).toEqual([])
    for (const rel of ['done', 'cut', 'gone', 'd/x "quoted"\nnewline']) a.opened(rel)
    a.closed('done')
    // A process killed without a word: nothing more is written.
    const b = new WriterLog(file, 100)
    expect(await b.load((rel) => rel !== 'gone')).toEqual(['cut', 'd/x "quoted"\nnewline'])
    b.close()
    const c = new WriterLog(file, 100)
    expect(await c.load(all)).toEqual(['cut', 'd/x "quoted"\nnewline'])
    c.closed('cut')
    c.closed('d/x "quoted"\nnewline')
    c.close()
    expect(await new WriterLog(file, 100).load(all)).toEqual([])
  })

  it('skips a torn last line and lines that are not its own', async () => {
    const file = await logFile()
    const a = new WriterLog(file, 100)
    await a.load(all)
    a.opened('whole')
    a.close()
    await appendFile(file, '+"torn\n-\n+42\n*"x"\n+""\n')
    expect(await new WriterLog(file, 100).load(all)).toEqual(['whole'])
  })

  it('stays small: rewritten with what is live once it has 10,000 lines, and tracks at most max files', async () => {
    const file = await logFile()
    const a = new WriterLog(file, 3)
    await a.load(all)
    a.opened('stays')
    for (let i = 0; i < 30_000; i++) {
      a.opened(`f${i}`)
      a.closed(`f${i}`)
    }
    expect((await stat(file)).size).toBeLessThan(200_000)
    for (const rel of ['x', 'y', 'z']) a.opened(rel)
    a.close()
    expect((await readFile(file, 'utf8')).includes('"z"')).toBe(false)
    expect(await new WriterLog(file, 3).load(all)).toEqual(['stays', 'x', 'y'])
  })
})
