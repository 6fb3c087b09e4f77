// The sender's spool of deferred requests to one peer, on disk:
//
//   <dir>/epoch         random id of this spool; a receiver keys what it
//                       applied by (sender, epoch), so a wiped spool that
//                       starts again at seq 1 is not taken for a replay
//   <dir>/acked         highest seq whose outcome is final
//   <dir>/q/<seq>.req   one request: header + payload, durable before the
//                       writer's close returns
//   <dir>/q/<seq>.done  an empty marker: that request is finished
//   <dir>/log           outcome lines, appended and fsynced
//
// Invariant: seqs only grow (next = max(acked, highest .req or .done) + 1),
// so a seq is never reused after a crash. Finishing first turns the request
// into its marker (rename and truncate need no free space), so a full disk
// cannot stall delivery; the marker goes once `acked` covers it.
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm, truncate } from 'node:fs/promises'
import path from 'node:path'
import { SerialLock } from '../lib/lock.js'
import type { Logger } from '../lib/log.js'
import { appendDurable, fsErrorOf, fsyncDir, writeDurable } from '../lib/durable.js'

const MAGIC = Buffer.from('PFD1')
const HEADER = MAGIC.length + 1 + 8 + 4

export interface DeferredItem {
  seq: number
  svc: number
  created: number
  payload: Buffer
}

export function encodeItem (it: DeferredItem): Buffer {
  const b = Buffer.allocUnsafe(HEADER + it.payload.length)
  MAGIC.copy(b, 0)
  b[4] = it.svc
  b.writeBigUInt64BE(BigInt(it.created), 5)
  b.writeUInt32BE(it.payload.length, 13)
  it.payload.copy(b, HEADER)
  return b
}

export function decodeItem (seq: number, b: Buffer): DeferredItem {
  if (b.length < HEADER || !b.subarray(0, 4).equals(MAGIC)) throw new Error('not a deferred request file')
  const len = b.readUInt32BE(13)
  if (b.length !== HEADER + len) throw new Error(`payload length ${len} does not match file size ${b.length}`)
  if (b[4] < 1 || b[4] > 63) throw new Error(`service ${b[4]} outside 1..63`)
  return { seq, svc: b[4], created: Number(b.readBigUInt64BE(5)), payload: b.subarray(HEADER) }
}

const seqName = (seq: number): string => `${String(seq).padStart(16, '0')}.req`

export class DeferredSpool {
  private readonly queue: DeferredItem[] = []
  private next: number
  /** Serializes writes so seq order on disk is enqueue order. */
  private readonly lock = new SerialLock()

  private constructor (readonly dir: string, readonly epoch: bigint, acked: number, items: DeferredItem[], private readonly log: Logger) {
    this.queue = items
    this.next = Math.max(acked, ...items.map(i => i.seq)) + 1
  }

  static async open (dir: string, log: Logger): Promise<DeferredSpool> {
    try {
      await mkdir(path.join(dir, 'q'), { recursive: true, mode: 0o700 })
      let epochText = await readFile(path.join(dir, 'epoch'), 'utf8').catch(() => '')
      if (!/^[0-9a-f]{16}$/.test(epochText.trim())) {
        epochText = randomBytes(8).toString('hex')
        await writeDurable(path.join(dir, 'epoch'), epochText)
      }
      const ackedFile = Number((await readFile(path.join(dir, 'acked'), 'utf8').catch(() => '0')).trim()) || 0
      let acked = ackedFile
      const names = (await readdir(path.join(dir, 'q'))).sort()
      for (const name of names) {
        const m = /^(\d{16})\.done$/.exec(name)
        if (m === null) continue
        if (Number(m[1]) <= ackedFile) await rm(path.join(dir, 'q', name), { force: true })
        else acked = Math.max(acked, Number(m[1]))
      }
      const items: DeferredItem[] = []
      for (const name of names) {
        const m = /^(\d{16})\.req$/.exec(name)
        if (m === null) continue
        const file = path.join(dir, 'q', name)
        if (Number(m[1]) <= acked) {
          await rm(file)
          continue
        }
        try {
          items.push(decodeItem(Number(m[1]), await readFile(file)))
        } catch (err) {
          log.error({ file, err: (err as Error).message }, 'corrupt deferred request set aside')
          await rename(file, `${file}.bad`)
        }
      }
      return new DeferredSpool(dir, BigInt('0x' + epochText.trim()), acked, items, log)
    } catch (err) {
      throw fsErrorOf(err, `opening the deferred spool ${dir}`)
    }
  }

  get pending (): number { return this.queue.length }
  head (): DeferredItem | undefined { return this.queue[0] }

  /** Resolves once the request is on disk, fsynced, under its final name. */
  async enqueue (svc: number, payload: Buffer, created: number): Promise<number> {
    return await this.lock.run(async () => {
      const it = { seq: this.next, svc, created, payload }
      await writeDurable(path.join(this.dir, 'q', seqName(it.seq)), encodeItem(it))
      this.next++
      this.queue.push(it)
      return it.seq
    })
  }

  /** Records the final outcome of the head request and drops it. */
  async complete (seq: number, outcome: string, now: number): Promise<void> {
    const it = this.queue[0]
    if (it?.seq !== seq) return
    const req = path.join(this.dir, 'q', seqName(seq))
    const done = req.replace(/\.req$/, '.done')
    try {
      await rename(req, done)
      await truncate(done, 0)
      await fsyncDir(path.join(this.dir, 'q'))
    } catch (err) {
      throw fsErrorOf(err, `finishing deferred request ${seq}`)
    }
    this.queue.shift()
    const line = `${now} #${seq} svc ${String(it.svc).padStart(2, '0')} ${outcome}\n`
    try {
      await appendDurable(path.join(this.dir, 'log'), line)
      await writeDurable(path.join(this.dir, 'acked'), String(seq))
      await rm(done, { force: true })
    } catch (err) {
      // The request is finished either way; its marker keeps seq from being
      // reused until `acked` can be written.
      this.log.error({ seq, outcome: line.trim(), err: (err as Error).message }, 'cannot record a deferred outcome in the spool log')
    }
  }

  async readLog (): Promise<Buffer> {
    return await readFile(path.join(this.dir, 'log')).catch(() => Buffer.alloc(0))
  }
}
