// svc/NN: the server side of local service NN. Reading returns one whole
// request, `<peer-id> <byte-length>\n<payload>` (over several reads if it
// does not fit); the next write is the reply.
//
// When is a reply complete? The kernel cuts one write(2) into requests of
// at most MAX_WRITE bytes, the first one shorter when the caller's buffer
// does not start on a page. So a piece shorter than MAX_WRITE - PAGE ends
// the reply at once; a longer one may be continued, and the reply ends at
// the next read, at close, or when no piece follows within QUIET_MS.
import type { ServiceHost } from './backend.js'
import { MAX_WRITE, POLLIN, POLLOUT, S_IFREG, type Attr, type FileNode, type Handle, type OpenContext, type ReadContext } from './types.js'

const PAGE = 4096
const QUIET_MS = 20

export class ServerFile implements FileNode {
  constructor (private readonly host: ServiceHost, private readonly svc: number, private readonly mtimeMs: number) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o666, size: 0, mtimeMs: this.mtimeMs }
  }

  truncate (): void {}

  open (ctx: OpenContext): Handle {
    const s = this.host.serve(this.svc, ctx.wake)
    let quiet: NodeJS.Timeout | undefined
    const settle = (): void => {
      clearTimeout(quiet)
      quiet = undefined
    }
    return {
      direct: true,
      read: async (len: number, _pos: number, rc: ReadContext) => {
        settle()
        return await s.read(len, rc.nonblock, rc.signal)
      },
      write: (data: Buffer) => {
        settle()
        const final = data.length < MAX_WRITE - PAGE
        const n = s.write(data, final)
        if (!final) quiet = setTimeout(() => s.flush(), QUIET_MS)
        return n
      },
      flush: () => {
        settle()
        s.flush()
      },
      poll: () => (s.readable() ? POLLIN : 0) | (s.writable() ? POLLOUT : 0),
      release: () => {
        settle()
        s.close()
      }
    }
  }
}
