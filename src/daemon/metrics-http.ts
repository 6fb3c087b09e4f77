// The optional metrics_listen listener: GET /metrics answers what
// <mnt>/metrics shows, for a Prometheus server to scrape. Nothing else is
// served; the body is rendered per request, so it costs nothing idle.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from '../lib/log.js'
import { CONTENT_TYPE } from './metrics.js'

export interface MetricsServer {
  readonly port: number
  close(): Promise<void>
}

export async function serveMetrics (listen: { host: string, port: number }, render: () => string, log: Logger): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0]
    if (url !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(url === '/metrics' ? 405 : 404, { 'content-type': 'text/plain' }).end(url === '/metrics' ? 'GET only\n' : 'see /metrics\n')
      return
    }
    let body: string
    try {
      body = render()
    } catch (err) {
      log.error({ err }, 'metrics rendering failed')
      res.writeHead(500).end()
      return
    }
    res.writeHead(200, { 'content-type': CONTENT_TYPE, 'content-length': Buffer.byteLength(body) }).end(req.method === 'HEAD' ? undefined : body)
  })
  // Scrapers keep connections alive; idle ones must not hold the daemon's exit.
  server.keepAliveTimeout = 5000
  server.maxConnections = 16
  server.requestTimeout = 10_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  server.on('error', (err) => log.error({ err }, 'metrics listener error'))
  const port = (server.address() as AddressInfo).port
  log.info({ address: `${listen.host}:${port}` }, 'serving metrics over HTTP')
  return {
    port,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
