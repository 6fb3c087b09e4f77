// svc/NN: the server side of local service NN. Reading returns one whole
// request, `<peer-id> <byte-length>\n<payload>` (over several reads if it
// does not fit); the next write(2) is the reply.
//
// When is a reply complete? The kernel cuts one write(2) into requests of
// at most MAX_WRITE bytes, the first one shorter when the caller's buffer
// does not start on a page. So a piece shorter than MAX_WRITE - PAGE ends
// the reply at once. A longer one may be continued; the reply then ends at
// what a server does once write(2) has returned: its next read, poll
// (select, poll, epoll) or close. (A timer here cut replies under load.)
import type { ServiceHost } from './backend.js'
import { MAX_WRITE, POLLIN, POLLOUT, S_IFREG, type Attr, type FileNode, type Handle, type OpenContext, type ReadContext } from './types.js'

const PAGE = 4096

export class ServerFile implements FileNode {
  constructor (private readonly host: ServiceHost, private readonly svc: number, private readonly mtimeMs: number) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o666, size: 0, mtimeMs: this.mtimeMs }
  }

  truncate (): void {}

  open (ctx: OpenContext): Handle {
    const s = this.host.serve(this.svc, ctx.wake)
    return {
      direct: true,
      read: async (len: number, _pos: number, rc: ReadContext) => await s.read(len, rc.nonblock, rc.signal),
      write: (data: Buffer) => s.write(data, data.length < MAX_WRITE - PAGE),
      flush: () => s.flush(),
      poll: () => {
        s.flush()
        return (s.readable() ? POLLIN : 0) | (s.writable() ? POLLOUT : 0)
      },
      release: () => s.close()
    }
  }
}
