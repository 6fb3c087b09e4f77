// <mnt>/events: each open sees the lines emitted from its open onward. A
// read blocks until there is at least one line, then returns as many whole
// lines as fit. A reader that falls more than MAX_QUEUED lines behind loses
// the oldest and is told so by an `overflow` line.
import { E, FsError } from '../lib/errors.js'
import type { EventBus } from '../lib/events.js'
import { POLLIN, S_IFREG, type Attr, type FileNode, type Handle, type OpenContext, type ReadContext } from './types.js'
import { Waiters } from '../lib/wait.js'

export const MAX_QUEUED = 10_000

export class EventsFile implements FileNode {
  constructor (private readonly bus: EventBus, private readonly mtimeMs: number, private readonly now: () => number) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o444, size: 0, mtimeMs: this.mtimeMs }
  }

  open (ctx: OpenContext): Handle {
    const queue: string[] = []
    let dropped = 0
    const waiters = new Waiters()
    const unsubscribe = this.bus.subscribe((line) => {
      if (queue.length >= MAX_QUEUED) {
        queue.shift()
        dropped++
      }
      queue.push(line)
      waiters.notify()
      ctx.wake()
    })
    const take = (len: number): Buffer => {
      if (dropped > 0) {
        queue.unshift(`${this.now()} - overflow ${dropped} events lost\n`)
        dropped = 0
      }
      const out: string[] = []
      let size = 0
      while (queue.length > 0) {
        const n = Buffer.byteLength(queue[0])
        if (size + n > len) {
          // A line longer than the whole read goes out in pieces.
          if (size === 0) {
            const b = Buffer.from(queue[0])
            queue[0] = b.subarray(len).toString()
            return b.subarray(0, len)
          }
          break
        }
        out.push(queue.shift() as string)
        size += n
      }
      return Buffer.from(out.join(''))
    }
    return {
      direct: true,
      read: async (len: number, _pos: number, rc: ReadContext) => {
        while (queue.length === 0) {
          if (rc.nonblock) throw new FsError(E.EAGAIN, 'no event pending')
          await waiters.wait(rc.signal)
        }
        return take(len)
      },
      poll: () => queue.length > 0 ? POLLIN : 0,
      release: unsubscribe
    }
  }
}
