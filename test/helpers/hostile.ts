// A hostile peer in the test process: it speaks the protocol with a
// configured key (or any key), then misbehaves as a test asks. Also the
// daemon's memory as the kernel reports it, and echo latency through a
// mount, measured by a Python client. Sockets made here are destroyed by
// closeAll(), which tests call from afterEach.
import { readFile } from 'node:fs/promises'
import net from 'node:net'
import { systemClock } from '../../src/lib/clock.js'
import { encodePublicKey, parsePublicKey, readKeyFile } from '../../src/lib/keys.js'
import { Link } from '../../src/transport/link.js'
import { keyPairFromSecret } from '../../src/transport/noise.js'
import { py, type NodeSpec } from './net.js'

const sockets = new Set<net.Socket>()

// Attacks come from another loopback address: their thousands of ephemeral
// ports then never collide with a port another test picked on 127.0.0.1
// and has not bound yet.
const FROM = '127.0.0.2'

export function closeAll (): void {
  for (const s of sockets) s.destroy()
  sockets.clear()
}

export function connect (port: number): net.Socket {
  const s = net.connect({ port, host: '127.0.0.1', localAddress: FROM })
  s.on('error', () => {})
  sockets.add(s)
  s.on('close', () => sockets.delete(s))
  return s
}

/** A link from `me` (its key file) to `to`, resolved once it is up. */
export async function linkAs (me: NodeSpec, to: NodeSpec, opts: { downAfterMs?: number } = {}): Promise<{ link: Link, socket: net.Socket }> {
  const id = await readKeyFile(me.keyFile)
  const socket = connect(to.port)
  const link = new Link(socket, {
    role: 'initiator',
    localId: me.id,
    staticKey: keyPairFromSecret(id.dhSecret),
    publicKey: encodePublicKey(id.publicKey),
    expectedKey: parsePublicKey(to.publicKey).dh,
    clock: systemClock,
    keepaliveMs: 1000,
    downAfterMs: opts.downAfterMs ?? 5000,
    handshakeTimeoutMs: 5000
  })
  await new Promise<void>((resolve, reject) => {
    link.once('up', resolve)
    link.once('closed', (err) => reject(err ?? new Error('closed')))
  })
  return { link, socket }
}

/** VmRSS of a process in MB, from /proc (0 once it is gone). */
export async function rssMb (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status)
  return m === null ? 0 : Number(m[1]) / 1024
}

export interface Latency { n: number, p50: number, p99: number, max: number, errors: number }

/**
 * Echo round trips through a mount (open, write, read, close on
 * peers/<id>/svc/01), one after another for durationS; latencies in ms.
 */
export async function echoLatency (file: string, durationS: number): Promise<Latency> {
  const r = await py(`
import json, os, sys, time
f, end = sys.argv[1], time.monotonic() + float(sys.argv[2])
lat, errors = [], 0
while time.monotonic() < end:
    t = time.monotonic()
    try:
        fd = os.open(f, os.O_RDWR)
        os.write(fd, b'ping')
        ok = os.read(fd, 100) == b'ping'
        os.close(fd)
        if ok: lat.append((time.monotonic() - t) * 1000)
        else: errors += 1
    except OSError:
        errors += 1
    time.sleep(0.01)
lat.sort()
q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else -1
print(json.dumps({'n': len(lat), 'p50': q(0.5), 'p99': q(0.99), 'max': q(1.0), 'errors': errors}))
`, [file, String(durationS)], (durationS + 30) * 1000)
  return JSON.parse(r.stdout) as Latency
}
