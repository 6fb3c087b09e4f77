// The files of a writable folder (an outbox, files/) open for writing,
// kept on disk so that a restart knows which files the last run left
// unclosed. A file is sent or published when it is closed after writing
// (DESIGN); a file whose writer never closed it (the daemon was killed, or
// stopped under it) is not that file: sending it as it was left would
// deliver a truncated copy under the full name. Such a file waits until it
// is written and closed again, touched, renamed or removed (the outbox's
// queue.ts, services/files/index.ts).
//
// One line per change, `+"rel"` when a file gets its first writer and
// `-"rel"` when it is closed for good or released, each in one write(2).
// Lines are not fsynced: they must outlive the process, not the machine,
// and a power cut loses the file's own unsynced bytes as well. A torn last
// line is skipped.
//
// Its owner asks it whether a file is held (unclosed) and releases one
// when the user's say-so comes: the log is the one record of both.
//
// Bounded: what is live (files being written, and files left unclosed) is
// at most `max`; the file is rewritten with only the live set once it has
// COMPACT_LINES lines more, so it holds at most that many beyond the live set.
import { closeSync, lstatSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { writeDurable } from './durable.js'
import { isUnder } from './names.js'

const COMPACT_LINES = 10_000

export class WriterLog {
  /** Files open for writing, and those left unclosed: what the file lists. */
  private readonly live = new Set<string>()
  /** Left unclosed by the last run: held until released. */
  private readonly unclosed = new Set<string>()
  private fd: number | undefined
  private lines = 0

  /** folder: where the files named are (relative paths). */
  constructor (private readonly file: string, private readonly folder: string, private readonly max: number) {}

  /**
   * What the last run left live, of the files the folder still has; they
   * are held until released. Opens the file for appending.
   */
  async load (): Promise<string[]> {
    const text = await readFile(this.file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return ''
      throw err
    })
    const left = new Set<string>()
    for (const line of text.split('\n')) {
      const rel = parse(line.slice(1))
      if (rel === undefined) continue
      if (line[0] === '+') left.add(rel)
      else if (line[0] === '-') left.delete(rel)
    }
    const exists = (rel: string): boolean => lstatSync(path.join(this.folder, rel), { throwIfNoEntry: false })?.isFile() === true
    const unclosed = [...left].filter(rel => !this.live.has(rel) && exists(rel)).slice(0, Math.max(0, this.max - this.live.size))
    for (const rel of unclosed) {
      this.live.add(rel)
      this.unclosed.add(rel)
    }
    await writeDurable(this.file, this.text())
    this.lines = this.live.size
    this.fd = openSync(this.file, 'a', 0o600)
    return unclosed
  }

  /** rel has its first writer. */
  opened (rel: string): void {
    if (this.live.has(rel) || this.live.size >= this.max) return
    this.live.add(rel)
    this.append('+', rel)
  }

  /**
   * A write to rel failed: held as one left unclosed is, also across a
   * restart, until released (at the bound, like an open past it, not held).
   */
  hold (rel: string): void {
    if (!this.live.has(rel)) {
      if (this.live.size >= this.max) return
      this.live.add(rel)
      this.append('+', rel)
    }
    this.unclosed.add(rel)
  }

  /** rel's last writer closed it; one left unclosed stays held (the ready() that follows a write releases it). */
  closed (rel: string): void {
    if (this.unclosed.has(rel) || !this.live.delete(rel)) return
    this.append('-', rel)
  }

  held (rel: string): boolean { return this.unclosed.has(rel) }
  get heldCount (): number { return this.unclosed.size }

  /** Held files at rel or under the folder rel. */
  heldUnder (rel: string): string[] {
    if (this.unclosed.size === 0) return []
    return [...this.unclosed].filter(k => isUnder(k, rel))
  }

  /** rel may go as it is now (written again, touched, renamed, removed); true if it was held. */
  release (rel: string): boolean {
    if (!this.unclosed.delete(rel)) return false
    this.live.delete(rel)
    this.append('-', rel)
    return true
  }

  close (): void {
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
  }

  /**
   * Never throws: it runs inside the writer's open and close. A line not
   * written (a full disk) leaves that file unprotected, sent as it was left
   * after a crash, as before this log.
   */
  private append (op: '+' | '-', rel: string): void {
    if (this.fd === undefined) return
    try {
      if (++this.lines > this.live.size + COMPACT_LINES) this.compact()
      else writeSync(this.fd, `${op}${JSON.stringify(rel)}\n`)
    } catch {}
  }

  /** The live set alone, renamed over the file: synchronous, so no line of ours falls between. */
  private compact (): void {
    const tmp = `${this.file}.tmp`
    writeFileSync(tmp, this.text(), { mode: 0o600 })
    renameSync(tmp, this.file)
    this.close()
    this.fd = openSync(this.file, 'a', 0o600)
    this.lines = this.live.size
  }

  private text (): string {
    let out = ''
    for (const rel of this.live) out += `+${JSON.stringify(rel)}\n`
    return out
  }
}

function parse (s: string): string | undefined {
  try {
    const rel: unknown = JSON.parse(s)
    return typeof rel === 'string' && rel !== '' ? rel : undefined
  } catch {
    return undefined
  }
}
