// Anchor for the packet benchmark: the FUSE floor. A bare (patched)
// fuse-native filesystem with one direct_io file, /sink, whose write takes
// every byte and whose read returns a fixed 64-byte record: no tree, no
// network. Prints "mounted" when ready; SIGTERM unmounts.
const Fuse = require('fuse-native')
const mnt = process.argv[2]
const stat = (mode) => ({ mode, size: 0, mtime: 0, atime: 0, ctime: 0, uid: 0, gid: 0, nlink: 1 })
const record = Buffer.from('beta 53\n' + 'x'.repeat(53))
let next = 1
const fuse = new Fuse(mnt, {
  getattr: (p, cb) => p === '/' ? cb(0, stat(0o40755)) : p === '/sink' ? cb(0, stat(0o100666)) : cb(Fuse.ENOENT),
  readdir: (p, cb) => cb(0, ['sink']),
  open: (p, flags, cb) => cb(0, next++, Fuse.OPEN_DIRECT_IO),
  truncate: (p, size, cb) => cb(0),
  write: (p, fd, buf, len, pos, cb) => cb(len),
  read: (p, fd, buf, len, pos, cb) => { record.copy(buf); cb(record.length) },
  release: (p, fd, cb) => cb(0)
}, { timeout: false, mkdir: true, options: ['big_writes'] })
fuse.mount((err) => {
  if (err) { console.error(err.message); process.exit(1) }
  console.log('mounted')
})
process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)))
