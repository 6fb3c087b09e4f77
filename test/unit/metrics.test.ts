// The metrics renderer: valid Prometheus text (a strict parser, and promtool
// where it is installed), one family per metric, every peer named, figures
// that match peers/<id>/status.
import { execFileSync, spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { renderMetrics, type MetricsSnapshot } from '../../src/daemon/metrics.js'
import { parsePrometheusText } from '../helpers/prom.js'

const snapshot: MetricsSnapshot = {
  node: { id: 'alpha', version: '0.1.0', uptime_s: 12, fields: [['services_offered', 2], ['note', 'text is skipped']] },
  peers: [
    {
      id: 'beta',
      state: 'up',
      fields: [
        ['state', 'up'], ['address', '127.0.0.1:7702'], ['since', '2025-01-01T00:00:00.000Z'], ['retries_left', 10], ['rtt_ms', 1.5],
        ['inflight', 0], ['deferred', 2], ['outbox_files', 1], ['outbox_bytes', 100], ['transfer', 'big "file"\nname'],
        ['transfer_progress', '50/100 bytes (50%)'], ['transfer_bytes_per_s', 1000], ['tx_bytes', 5], ['rx_bytes', 6],
        ['last_error', 'socket: "x"'], ['pkt_dropped', 3]
      ]
    },
    { id: 'gamma', state: 'dead', fields: [['state', 'dead'], ['rtt_ms', '-'], ['transfer_progress', '-'], ['tx_bytes', 0]] },
    { id: 'odd"id\\x', state: 'handshaking', fields: [] }
  ]
}

const promtool = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' }).stdout.trim()

describe('metrics', () => {
  const text = renderMetrics(snapshot)
  const fams = parsePrometheusText(text)
  const value = (name: string, labels: Record<string, string>): number | undefined =>
    fams.get(name)?.samples.find(s => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value

  it('parses as Prometheus text, each family with HELP and TYPE', () => {
    for (const f of fams.values()) {
      expect(f.help, f.name).toBeTruthy()
      expect(['gauge', 'counter'], f.name).toContain(f.type)
      if (f.type === 'counter') expect(f.name).toMatch(/_total$/)
    }
  })

  it.skipIf(promtool === '')('passes promtool check metrics', () => {
    execFileSync(promtool, ['check', 'metrics'], { input: text })
  })

  it('names every peer, with its state as a state set', () => {
    for (const p of snapshot.peers) {
      expect(value('peerfs_peer_up', { peer: p.id })).toBe(p.state === 'up' ? 1 : 0)
      expect(value('peerfs_peer_state', { peer: p.id, state: p.state })).toBe(1)
    }
    expect(value('peerfs_peer_state', { peer: 'beta', state: 'dead' })).toBe(0)
  })

  it('carries the status figures, in base units', () => {
    const beta = { node: 'alpha', peer: 'beta' }
    expect(value('peerfs_peer_rtt_seconds', beta)).toBe(0.0015)
    expect(value('peerfs_peer_sent_bytes_total', beta)).toBe(5)
    expect(value('peerfs_peer_received_bytes_total', beta)).toBe(6)
    expect(value('peerfs_peer_deferred_requests', beta)).toBe(2)
    expect(value('peerfs_peer_outbox_bytes', beta)).toBe(100)
    expect(value('peerfs_peer_transfer_acked_bytes', beta)).toBe(50)
    expect(value('peerfs_peer_transfer_size_bytes', beta)).toBe(100)
    expect(value('peerfs_peer_state_since_timestamp_seconds', beta)).toBe(Date.parse('2025-01-01T00:00:00Z') / 1000)
    // A numeric field the renderer does not know still shows, as a gauge.
    expect(value('peerfs_peer_pkt_dropped', beta)).toBe(3)
    expect(value('peerfs_uptime_seconds', { node: 'alpha' })).toBe(12)
    expect(value('peerfs_info', { node: 'alpha', version: '0.1.0' })).toBe(1)
    expect(value('peerfs_services_offered', { node: 'alpha' })).toBe(2)
  })

  it('leaves out what is not a number rather than writing NaN', () => {
    expect(value('peerfs_peer_rtt_seconds', { peer: 'gamma' })).toBeUndefined()
    expect(value('peerfs_peer_transfer_acked_bytes', { peer: 'gamma' })).toBeUndefined()
    expect(text).not.toMatch(/NaN|undefined/)
    expect(fams.has('peerfs_note')).toBe(false)
  })

  it('escapes label values', () => {
    expect(value('peerfs_peer_up', { peer: 'odd"id\\x' })).toBe(0)
    expect(text).toContain('peer="odd\\"id\\\\x"')
  })

  it('the strict parser rejects what Prometheus rejects', () => {
    const bad = [
      'x 1', // no final newline
      'x{a="1} 1\n',
      'x{a="\\q"} 1\n',
      'x one\n',
      '# TYPE x gauge\nx 1\n# TYPE x gauge\n',
      'x 1\ny 1\nx{a="b"} 2\n',
      'x 1\nx 2\n',
      '1x 1\n'
    ]
    for (const t of bad) expect(() => parsePrometheusText(t), JSON.stringify(t)).toThrow()
    expect(parsePrometheusText('# HELP x a \\\\ b\n# TYPE x counter\nx{a="b\\"c"} 1.5e3 1700000000000\n').get('x')?.samples[0].value).toBe(1500)
  })
})
