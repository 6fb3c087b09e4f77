// The sender's book of its saved transfers and what each waits for: to be
// sent (maybe set aside until a backoff ends), its cancel to be answered,
// or, once delivered, its files to leave the outbox ('clear') and then its
// xforget to be answered ('confirm'): never the forget before the files.
// It indexes which record claims each file, so a hook's question costs
// O(1) (a folder's, rarer, a pass over the records). Which cancels and
// forgets were sent on the current link is kept here too, so each goes
// once per link, and again each retryMs until answered.
import type { SentRecord } from './sender-store.js'
import { isUnder } from '../../lib/names.js'
import { label } from './shared.js'

export type Standing = 'send' | 'cancel' | 'clear' | 'confirm'

/** A transfer (or a cancel) waiting before it is tried again. */
interface Aside { tries: number, until: number, reason: string }

export class TransferBook {
  /** By xid, oldest first. */
  private readonly records = new Map<string, SentRecord>()
  private readonly aside = new Map<string, Aside>()
  /** Delivered: false while its files are cleared, then true until xforget is answered. */
  private readonly delivered = new Map<string, boolean>()
  /** When an xcancel or xforget was last sent on this link. */
  private readonly asked = new Map<string, number>()
  /** Each file of a record, until its files are cleared or it is removed: the record it is in. */
  private readonly claims = new Map<string, string>()

  constructor (private readonly retryMs: number, private readonly retryMaxMs: number) {}

  get size (): number { return this.records.size }
  get (xid: string): SentRecord | undefined { return this.records.get(xid) }
  add (rec: SentRecord): void {
    this.records.set(rec.xid, rec)
    for (const it of rec.items) this.claims.set(it.rel, rec.xid)
  }

  private release (rec: SentRecord): void {
    for (const it of rec.items) if (this.claims.get(it.rel) === rec.xid) this.claims.delete(it.rel)
  }

  /** rec's one file is at rel now (rsync's temp file renamed into place): the claim follows it. */
  moveFile (rec: SentRecord, rel: string): void {
    this.release(rec)
    rec.items = [{ ...rec.items[0], rel }]
    this.claims.set(rel, rec.xid)
  }

  remove (xid: string): void {
    const rec = this.records.get(xid)
    if (rec !== undefined) this.release(rec)
    this.records.delete(xid)
    this.aside.delete(xid)
    this.delivered.delete(xid)
    this.asked.delete(xid)
  }

  standing (rec: SentRecord): Standing {
    const d = this.delivered.get(rec.xid)
    return d === undefined ? rec.phase : d ? 'confirm' : 'clear'
  }

  /** Records still to be sent. */
  toSend (): SentRecord[] { return [...this.records.values()].filter(r => this.standing(r) === 'send') }

  /** The first to try now: to be sent, its backoff over. */
  due (now: number): SentRecord[] {
    return this.toSend().filter(r => (this.aside.get(r.xid)?.until ?? 0) <= now)
  }

  /** The file is in a record whose files are not cleared yet: no other takes it. */
  claimed (rel: string): boolean { return this.claims.has(rel) }

  /** The stream still to be sent of the file at rel, if any (O(1): asked at every write). */
  stream (rel: string): SentRecord | undefined {
    const xid = this.claims.get(rel)
    const rec = xid === undefined ? undefined : this.records.get(xid)
    return rec?.kind === 'stream' && this.standing(rec) === 'send' ? rec : undefined
  }

  /** The record holding the file at rel, or those holding files under the folder rel. */
  holding (rel: string): SentRecord[] {
    const xid = this.claims.get(rel)
    if (xid !== undefined) return [this.records.get(xid) as SentRecord]
    return [...this.records.values()].filter(r => r.items.some(it => isUnder(it.rel, rel)))
  }

  /** Files and their bytes in records still to be sent (status). */
  unsent (): { files: number, bytes: number } {
    let files = 0
    let bytes = 0
    for (const r of this.toSend()) {
      files += r.items.length
      for (const it of r.items) bytes += it.size
    }
    return { files, bytes }
  }

  /** Marks it delivered, its files to be cleared; false if it was already. */
  deliver (rec: SentRecord): boolean {
    if (this.delivered.has(rec.xid)) return false
    this.delivered.set(rec.xid, false)
    this.aside.delete(rec.xid)
    return true
  }

  /** Its files are cleared: the forget may go now, and files of the same names are new ones. */
  cleared (rec: SentRecord): void {
    if (this.delivered.has(rec.xid)) this.delivered.set(rec.xid, true)
    this.aside.delete(rec.xid)
    this.release(rec)
  }

  cancelled (rec: SentRecord): void {
    rec.phase = 'cancel'
    this.aside.delete(rec.xid)
  }

  /** Waits before trying rec again, doubling each time; returns the wait in ms. */
  setAside (rec: SentRecord, reason: string, now: number): number {
    const a = this.aside.get(rec.xid) ?? { tries: 0, until: 0, reason }
    a.tries++
    a.reason = reason
    const wait = Math.min(this.retryMaxMs, this.retryMs * 2 ** Math.min(a.tries - 1, 30))
    a.until = now + wait
    this.aside.set(rec.xid, a)
    this.asked.delete(rec.xid)
    return wait
  }

  /** The cancels and forgets to send now: not sent on this link yet, or not answered within retryMs. */
  toTell (now: number): Array<{ rec: SentRecord, type: 'xcancel' | 'xforget' }> {
    const out: Array<{ rec: SentRecord, type: 'xcancel' | 'xforget' }> = []
    for (const rec of this.records.values()) {
      const st = this.standing(rec)
      if (st === 'send' || st === 'clear' || (this.asked.get(rec.xid) ?? -Infinity) + this.retryMs > now || (this.aside.get(rec.xid)?.until ?? 0) > now) continue
      out.push({ rec, type: st === 'confirm' ? 'xforget' : 'xcancel' })
    }
    return out
  }

  told (xid: string, now: number): void { this.asked.set(xid, now) }
  newLink (): void { this.asked.clear() }

  /**
   * When to look again: when the next wait still running ends, or now if
   * the wait of a transfer still to be sent has ended (a pick that ran
   * across its end did not see it due; a timer may fire a little early).
   * A cancel's ended wait is not a reason: toTell paces those, and naming
   * it would spin.
   */
  nextWake (now: number): number | undefined {
    let t = Infinity
    for (const [xid, a] of this.aside) {
      const rec = this.records.get(xid)
      // A clear tried again has its own timer (the sender's).
      if (rec === undefined || this.standing(rec) === 'clear') continue
      if (a.until > now) t = Math.min(t, a.until)
      else if (this.standing(rec) === 'send') t = now
    }
    return Number.isFinite(t) ? t : undefined
  }

  /** Status: the transfer set aside (to be sent, or its delivered files to be cleared) that is tried next, why, and when. */
  waiting (now: number): string {
    const w = [...this.records.values()].filter(r => ['send', 'clear'].includes(this.standing(r))).flatMap(r => {
      const a = this.aside.get(r.xid)
      return a === undefined ? [] : [{ r, a }]
    }).sort((x, y) => x.a.until - y.a.until)
    if (w.length === 0) return '-'
    const { r, a } = w[0]
    return `${describe(r)}: ${a.reason}; retry in ${Math.max(0, Math.ceil((a.until - now) / 1000))} s${w.length > 1 ? ` (and ${w.length - 1} more)` : ''}`
  }
}

export function describe (rec: SentRecord): string {
  if (rec.kind === 'stream') return `${label(rec.name)} (as it is written)`
  return rec.kind === 'file' ? label(rec.name) : `${rec.items.length} files in one tar`
}
