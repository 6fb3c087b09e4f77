// Anchor: a raw TCP echo server (one Node process); the client is another
// Node process (bench/run.ts runs it) doing serial request/reply.
const net = require('node:net')
const srv = net.createServer((s) => { s.setNoDelay(true); s.on('data', (d) => s.write(d)) })
srv.listen(0, '127.0.0.1', () => console.log(`port ${srv.address().port}`))
process.on('SIGTERM', () => process.exit(0))
