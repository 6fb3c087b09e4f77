// <mnt>/events: each open sees the lines emitted from its open onward. A
// read blocks until there is at least one line, then returns as many whole
// lines as fit (a line longer than the read goes out in byte pieces, never
// split inside a character by a decode). A reader that falls more than
// MAX_QUEUED lines behind loses the oldest and is told so by an `overflow`
// line.
//
// Followers: `tail -f` and `less +F` do not block in read; they fstat the
// file, seek to its size, and read again when the size grows (FUSE is a
// "remote" file system to tail, so it polls every second). So the file
// reports a size that grows by every byte emitted, and an mtime that is the
// last event's. Offsets are otherwise ignored (direct_io): a reader at its
// own position (cat, Python, reading from 0 on) is a stream and waits; a
// reader anywhere else is following by size and gets what is queued or EOF,
// never a wait. The size starts at FOLLOW_BASE so a follower's seek to the
// end never lands on a stream reader's position 0.
import { E, FsError } from '../lib/errors.js'
import type { EventBus } from '../lib/events.js'
import { POLLIN, S_IFREG, type Attr, type FileNode, type Handle, type OpenContext, type ReadContext } from './types.js'
import { Waiters } from '../lib/wait.js'

export const MAX_QUEUED = 10_000
/** Above tail's 8 KiB read-back block, so its first reads are never at 0. */
export const FOLLOW_BASE = 64 * 1024

export class EventsFile implements FileNode {
  private emitted = 0
  private lastMs: number

  constructor (private readonly bus: EventBus, mtimeMs: number, private readonly now: () => number) {
    this.lastMs = mtimeMs
    // Lives as long as the tree: counts what every open would have seen.
    bus.subscribe((line) => {
      this.emitted += Buffer.byteLength(line)
      this.lastMs = now()
    })
  }

  attr (): Attr {
    return { mode: S_IFREG | 0o444, size: FOLLOW_BASE + this.emitted, mtimeMs: this.lastMs }
  }

  open (ctx: OpenContext): Handle {
    return new EventsHandle(this.bus, ctx.wake, this.now)
  }
}

/** One open of events: its own queue of lines, from its open on. */
export class EventsHandle implements Handle {
  readonly direct = true
  private readonly queue: Buffer[] = []
  private dropped = 0
  /** Bytes this handle has returned: where a stream reader's next read is. */
  private cursor = 0
  private readonly waiters = new Waiters()
  private readonly unsubscribe: () => void

  constructor (bus: EventBus, private readonly wake: () => void, private readonly now: () => number) {
    this.unsubscribe = bus.subscribe((line) => {
      if (this.queue.length >= MAX_QUEUED) {
        this.queue.shift()
        this.dropped++
      }
      this.queue.push(Buffer.from(line))
      this.waiters.notify()
      this.wake()
    })
  }

  async read (len: number, pos: number, rc: ReadContext): Promise<Buffer> {
    while (this.queue.length === 0 && this.dropped === 0) {
      if (rc.nonblock) throw new FsError(E.EAGAIN, 'no event pending')
      if (pos !== this.cursor) return Buffer.alloc(0)
      await this.waiters.wait(rc.signal)
    }
    const out = this.take(len)
    this.cursor += out.length
    return out
  }

  poll (): number {
    return this.queue.length > 0 || this.dropped > 0 ? POLLIN : 0
  }

  release (): void {
    this.unsubscribe()
  }

  private take (len: number): Buffer {
    if (this.dropped > 0) {
      this.queue.unshift(Buffer.from(`${this.now()} - overflow ${this.dropped} events lost\n`))
      this.dropped = 0
    }
    const out: Buffer[] = []
    let size = 0
    while (this.queue.length > 0) {
      const line = this.queue[0]
      if (size + line.length > len) {
        if (size === 0) {
          // A line longer than the whole read goes out in pieces, by bytes.
          this.queue[0] = line.subarray(len)
          return line.subarray(0, len)
        }
        break
      }
      out.push(line)
      this.queue.shift()
      size += line.length
    }
    return Buffer.concat(out, size)
  }
}
