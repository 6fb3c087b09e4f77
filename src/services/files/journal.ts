// The managed-file journal: one JSON line per change of a name's record
// (its accepted manifest and what data/<name> holds). Appends and folder
// fsyncs queued while one flush runs share the next one (group commit), so
// 10,000 installs cost a few hundred fsyncs, not 20,000. Replay keeps the
// last record of each name; a torn last line (a crash mid-append) is
// skipped. When the file holds more than twice the live records, the next
// flush rewrites it whole from the caller's snapshot instead.
import { open, readFile, type FileHandle } from 'node:fs/promises'
import type { Logger } from '../../lib/log.js'
import { fsErrorOf, fsyncDir, writeDurable } from '../../lib/durable.js'
import { yieldLoop } from '../../lib/wait.js'
import type { Manifest } from './manifest.js'

/** What a managed file on disk looked like when we last wrote or hashed it. */
export interface DiskStamp {
  sha256: string
  size: number
  ino: number
  mtimeMs: number
  ctimeMs: number
}

export interface JournalRecord { m: Manifest, disk: DiskStamp | null }

/** The caller's current records, for a rewrite. */
export interface Snapshot { size: () => number, records: () => Iterable<JournalRecord> }

const WAKE_SLICE = 32

interface Waiter { resolve: () => void, reject: (err: Error) => void }

export class Journal {
  private lines: string[] = []
  private readonly dirs = new Set<string>()
  private waiters: Waiter[] = []
  private flushing: Promise<void> | undefined
  private fh: FileHandle | undefined
  private written: number

  private constructor (
    private readonly file: string,
    replayed: number,
    private readonly snapshot: Snapshot,
    private readonly log: Logger
  ) {
    this.written = replayed
  }

  /** Reads the journal (missing: empty) and opens it for appending. */
  static async open (file: string, snapshot: Snapshot, log: Logger): Promise<{ journal: Journal, records: Map<string, JournalRecord> }> {
    const records = new Map<string, JournalRecord>()
    const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return ''
      throw fsErrorOf(err, `reading ${file}`)
    })
    let lines = 0
    let torn = 0
    for (const line of text.split('\n')) {
      if (line === '') continue
      lines++
      try {
        const r = JSON.parse(line) as JournalRecord
        if (typeof r?.m?.name !== 'string') throw new Error('no name')
        records.set(r.m.name, r)
      } catch {
        torn++
      }
    }
    if (torn > 0) log.warn({ file, lines: torn }, 'skipped unreadable journal lines')
    const journal = new Journal(file, lines, snapshot, log)
    journal.fh = await open(file, 'a', 0o600)
    return { journal, records }
  }

  /** Resolves once the record is on disk. */
  append (r: JournalRecord): Promise<void> {
    this.lines.push(JSON.stringify(r) + '\n')
    return this.join()
  }

  /** Fsyncs a folder (after a rename into it) ahead of the next appended records. */
  syncDir (dir: string): Promise<void> {
    this.dirs.add(dir)
    return this.join()
  }

  private join (): Promise<void> {
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }))
    this.flushing ??= this.flushAll()
    return p
  }

  private async flushAll (): Promise<void> {
    while (this.waiters.length > 0) {
      const lines = this.lines
      const dirs = [...this.dirs]
      const waiters = this.waiters
      this.lines = []
      this.dirs.clear()
      this.waiters = []
      try {
        await Promise.all(dirs.map(fsyncDir))
        await this.write(lines)
        // What each waiter does next runs between these slices, not in one long turn.
        for (let i = 0; i < waiters.length; i += WAKE_SLICE) {
          if (i > 0) await yieldLoop()
          for (const w of waiters.slice(i, i + WAKE_SLICE)) w.resolve()
        }
      } catch (err) {
        const e = fsErrorOf(err, `writing ${this.file}`)
        this.log.error({ err: e.message }, 'managed-file journal write failed')
        for (const w of waiters) w.reject(e)
      }
    }
    this.flushing = undefined
  }

  private async write (lines: string[]): Promise<void> {
    if (lines.length === 0) return
    const fh = this.fh
    if (fh === undefined) throw new Error('journal closed')
    if (this.written + lines.length > 2 * this.snapshot.size() + 1000) {
      // Every record appended so far is already in the snapshot (the table
      // changes first); a change made while it is built is appended after it.
      // Built in slices, so 10,000 records do not hold the event loop.
      const out: string[] = []
      let n = 0
      for (const r of this.snapshot.records()) {
        out.push(JSON.stringify(r) + '\n')
        if (++n % 500 === 0) await yieldLoop()
      }
      await writeDurable(this.file, out.join(''), 0o600)
      await fh.close()
      this.fh = await open(this.file, 'a', 0o600)
      this.written = n
      return
    }
    await fh.appendFile(lines.join(''))
    await fh.sync()
    this.written += lines.length
  }

  async close (): Promise<void> {
    await this.flushing
    const fh = this.fh
    this.fh = undefined
    await fh?.close()
  }
}
