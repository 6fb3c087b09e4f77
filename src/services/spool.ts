// The sender's spool of deferred requests to one peer, on disk:
//
//   <dir>/epoch         random id of this spool; a receiver keys what it
//                       applied by (sender, epoch), so a wiped spool that
//                       starts again at seq 1 is not taken for a replay
//   <dir>/acked         highest seq whose outcome is final
//   <dir>/q/<seq>.req   one request: header + payload, durable before the
//                       writer's close returns
//   <dir>/log           outcome lines, appended and fsynced
//
// Invariant: seqs only grow (next = max(acked, highest file) + 1), and a
// request file is removed only after its outcome is in the log and acked.
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from '../log.js'
import { appendDurable, fsErrorOf, writeDurable } from './durable.js'

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
  private chain: Promise<unknown> = Promise.resolve()

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
      const acked = Number((await readFile(path.join(dir, 'acked'), 'utf8').catch(() => '0')).trim()) || 0
      const items: DeferredItem[] = []
      for (const name of (await readdir(path.join(dir, 'q'))).sort()) {
        const m = /^(\d{16})\.req$/.exec(name)
        if (m === null) continue
        const file = path.join(dir, 'q', name)
        try {
          const it = decodeItem(Number(m[1]), await readFile(file))
          if (it.seq > acked) items.push(it)
          else await rm(file)
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
    const run = this.chain.then(async () => {
      const it = { seq: this.next, svc, created, payload }
      await writeDurable(path.join(this.dir, 'q', seqName(it.seq)), encodeItem(it))
      this.next++
      this.queue.push(it)
      return it.seq
    })
    this.chain = run.catch(() => {})
    return await run
  }

  /** Records the final outcome of the head request and drops it. */
  async complete (seq: number, outcome: string, now: number): Promise<void> {
    const it = this.queue[0]
    if (it?.seq !== seq) return
    await appendDurable(path.join(this.dir, 'log'), `${now} #${seq} svc ${String(it.svc).padStart(2, '0')} ${outcome}\n`)
    await writeDurable(path.join(this.dir, 'acked'), String(seq))
    this.queue.shift()
    await rm(path.join(this.dir, 'q', seqName(seq)), { force: true }).catch((err: unknown) => {
      this.log.warn({ seq, err: (err as Error).message }, 'cannot remove a delivered request file')
    })
  }

  async readLog (): Promise<Buffer> {
    return await readFile(path.join(this.dir, 'log')).catch(() => Buffer.alloc(0))
  }
}
