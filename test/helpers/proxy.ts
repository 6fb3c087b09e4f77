// A TCP proxy on a free loopback port that can corrupt traffic: flip one
// byte at a given offset of the client-to-server stream, once, or cut
// connections. It tracks its
// sockets and closes them all in close().
import net from 'node:net'

export interface FaultOptions {
  /** Flip (xor 0xff) the byte at this offset of a connection's upstream, once. */
  flipAt?: number
}

export class FaultProxy {
  connections = 0
  flipped = 0
  private readonly sockets = new Set<net.Socket>()
  private server: net.Server | undefined
  port = 0

  constructor (private readonly target: { host: string, port: number }, private readonly opts: FaultOptions = {}) {}

  async start (): Promise<void> {
    const server = net.createServer((client) => this.onClient(client))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    this.port = (server.address() as net.AddressInfo).port
    this.server = server
  }

  private onClient (client: net.Socket): void {
    this.connections++
    const upstream = net.connect(this.target)
    this.sockets.add(client)
    this.sockets.add(upstream)
    let offset = 0
    client.on('data', (chunk: Buffer) => {
      const at = this.opts.flipAt
      if (this.flipped === 0 && at !== undefined && offset <= at && at < offset + chunk.length) {
        chunk = Buffer.from(chunk)
        chunk[at - offset] ^= 0xff
        this.flipped++
      }
      offset += chunk.length
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => client.write(chunk))
    const end = (): void => {
      client.destroy()
      upstream.destroy()
      this.sockets.delete(client)
      this.sockets.delete(upstream)
    }
    client.on('close', end)
    upstream.on('close', end)
    client.on('error', end)
    upstream.on('error', end)
  }

  /** Cuts every open connection. */
  cut (): void {
    for (const s of this.sockets) s.destroy()
    this.sockets.clear()
  }

  async close (): Promise<void> {
    this.cut()
    const server = this.server
    this.server = undefined
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}
