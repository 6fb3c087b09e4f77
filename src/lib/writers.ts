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
//
// A full disk must not refuse a line: a writer whose cp failed there is
// held by one, and a line not written would let the next start send its
// file cut short. So the file keeps SLACK_BYTES of newlines written past
// its lines (blocks taken while there was room), and each line overwrites
// the next of them in place; the slack is topped up as it is used, and a
// start or a rewrite that finds no room goes on in the file as it is.
import { closeSync, fstatSync, lstatSync, openSync, renameSync, unlinkSync, writeFileSync, writeSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { writeDurable } from './durable.js'
import { isUnder } from './names.js'

const COMPACT_LINES = 10_000

/**
 * Newlines kept written past the lines: about 500 lines a full disk cannot
 * refuse (a file cut short there takes one), in 32 KiB per log on a disk
 * that may be small.
 */
export const SLACK_BYTES = 32 << 10
const NEWLINE = 0x0a

export class WriterLog {
  /** Files open for writing, and those left unclosed: what the file lists. */
  private readonly live = new Set<string>()
  /** Left unclosed by the last run: held until released. */
  private readonly unclosed = new Set<string>()
  private fd: number | undefined
  private lines = 0
  /** Where the next line goes: the end of the lines, the slack past it. */
  private end = 0
  /** The file's size: its lines and the slack written past them. */
  private size = 0

  /** folder: where the files named are (relative paths). */
  constructor (private readonly file: string, private readonly folder: string, private readonly max: number) {}

  /**
   * What the last run left live, of the files the folder still has; they
   * are held until released. Opens the file for the lines to come.
   */
  async load (): Promise<string[]> {
    const bytes = await readFile(this.file).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return Buffer.alloc(0)
      throw err
    })
    const left = new Set<string>()
    for (const line of bytes.toString('utf8').split('\n')) {
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
    try {
      await writeDurable(this.file, this.padded())
      this.reopen()
    } catch (err) {
      // No room for the rewrite: the file as the last run left it says the same.
      if (bytes.length === 0) throw err
      this.reopen(linesEnd(bytes))
      // A torn last line, at the very end: the next line starts a line of its own.
      if (this.end === bytes.length && bytes[this.end - 1] !== NEWLINE) this.end += writeSync(this.fd as number, '\n', this.end)
    }
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
    this.opened(rel)
    if (this.live.has(rel)) this.unclosed.add(rel)
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
      // The rewrite holds the change too; without room for it, the line goes as usual.
      if (++this.lines > this.live.size + COMPACT_LINES && this.compact()) return
      const line = Buffer.from(`${op}${JSON.stringify(rel)}\n`)
      if (this.end + line.length > this.size) this.topUp()
      writeSync(this.fd, line, 0, line.length, this.end)
      this.end += line.length
      if (this.end > this.size) this.size = this.end
      if (this.size - this.end < SLACK_BYTES / 2) this.topUp()
    } catch {}
  }

  /** More slack past the lines, while there is room for it; without, the lines go on past the slack. */
  private topUp (): void {
    try {
      this.size += writeSync(this.fd as number, Buffer.alloc(SLACK_BYTES, NEWLINE), 0, SLACK_BYTES, this.size)
    } catch {}
  }

  /** The live set alone, renamed over the file: synchronous, so no line of ours falls between; false if there is no room. */
  private compact (): boolean {
    const tmp = `${this.file}.tmp`
    try {
      writeFileSync(tmp, this.padded(), { mode: 0o600 })
      renameSync(tmp, this.file)
    } catch {
      // What it took of a full disk goes back to the lines.
      try { unlinkSync(tmp) } catch {}
      return false
    }
    this.reopen()
    return true
  }

  /** The file, opened for lines to go at end (the live set's lines if undefined), its size as it is now. */
  private reopen (end?: number): void {
    this.close()
    this.fd = openSync(this.file, 'r+', 0o600)
    this.size = fstatSync(this.fd).size
    this.end = end ?? Buffer.byteLength(this.text())
    this.lines = this.live.size
  }

  private text (): string {
    let out = ''
    for (const rel of this.live) out += `+${JSON.stringify(rel)}\n`
    return out
  }

  private padded (): Buffer {
    return Buffer.concat([Buffer.from(this.text()), Buffer.alloc(SLACK_BYTES, NEWLINE)])
  }
}

/** Where the lines of b end: past the last line's newline, before the slack. */
function linesEnd (b: Buffer): number {
  let i = b.length
  while (i > 0 && b[i - 1] === NEWLINE) i--
  return i === 0 ? 0 : Math.min(b.length, i + 1)
}

function parse (s: string): string | undefined {
  try {
    const rel: unknown = JSON.parse(s)
    return typeof rel === 'string' && rel !== '' ? rel : undefined
  } catch {
    return undefined
  }
}
