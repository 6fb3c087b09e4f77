// Anchor for the transaction benchmark: the floor of this stack. A bare
// (patched) fuse-native filesystem with one direct_io file, /echo, whose
// read returns what was last written, with no tree, no network. Prints
// "mounted" when ready; SIGTERM unmounts.
const Fuse = require('fuse-native')
const mnt = process.argv[2]
const bufs = new Map()
const stat = (mode) => ({ mode, size: 0, mtime: 0, atime: 0, ctime: 0, uid: 0, gid: 0, nlink: 1 })
let next = 1
const fuse = new Fuse(mnt, {
  getattr: (p, cb) => p === '/' ? cb(0, stat(0o40755)) : p === '/echo' ? cb(0, stat(0o100666)) : cb(Fuse.ENOENT),
  readdir: (p, cb) => cb(0, ['echo']),
  open: (p, flags, cb) => { const fd = next++; bufs.set(fd, { data: Buffer.alloc(0), pos: 0 }); cb(0, fd, Fuse.OPEN_DIRECT_IO) },
  truncate: (p, size, cb) => cb(0),
  write: (p, fd, buf, len, pos, cb) => { const b = bufs.get(fd); b.data = Buffer.concat([b.data, buf.subarray(0, len)]); cb(len) },
  // Like a peerfs request file: its own read cursor, whatever the offset.
  read: (p, fd, buf, len, pos, cb) => { const b = bufs.get(fd); const n = Math.min(len, b.data.length - b.pos); b.data.copy(buf, 0, b.pos, b.pos + n); b.pos += n; cb(n) },
  release: (p, fd, cb) => { bufs.delete(fd); cb(0) }
}, { timeout: false, mkdir: true, options: ['big_writes'] })
fuse.mount((err) => {
  if (err) { console.error(err.message); process.exit(1) }
  console.log('mounted')
})
process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)))
