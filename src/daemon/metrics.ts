// The node's figures in Prometheus text format (exposition format 0.0.4),
// for <mnt>/metrics and the optional metrics_listen HTTP listener. A pure
// function of a plain snapshot: the peer fields are exactly what
// peers/<id>/status shows, so the two never disagree. Known fields get a
// proper name, type, unit and help; any other numeric field becomes a
// gauge named after it, so a field added to status shows up here too.
// Invariants: one HELP and TYPE per family, its samples together; label
// values escaped; no NaN or empty sample lines.

export type Field = [string, string | number]

export interface MetricsSnapshot {
  node: { id: string, version: string, uptime_s: number, fields?: Field[] }
  peers: Array<{ id: string, state: string, fields: Field[] }>
}

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
export const PEER_STATES = ['connecting', 'up', 'down', 'dead'] as const

interface Known {
  name: string
  type: 'gauge' | 'counter'
  help: string
  /** The sample value from the status field; undefined: no sample. */
  value?: (v: string | number) => number | undefined
}

const num = (v: string | number): number | undefined => typeof v === 'number' && Number.isFinite(v) ? v : undefined
const ms = (v: string | number): number | undefined => { const n = num(v); return n === undefined ? undefined : n / 1000 }
const isoSeconds = (v: string | number): number | undefined => { const t = Date.parse(String(v)); return Number.isNaN(t) ? undefined : t / 1000 }
/** transfer_progress is `<acked>/<size> bytes (<p>%)`. */
const progress = (i: 1 | 2) => (v: string | number): number | undefined => {
  const m = /^(\d+)\/(\d+) bytes/.exec(String(v))
  return m === null ? undefined : Number(m[i])
}

/** Fields of peers/<id>/status, by name. Fields not here and not numeric are not metrics. */
const PEER_FIELDS: Record<string, Known[]> = {
  since: [{ name: 'peerfs_peer_state_since_timestamp_seconds', type: 'gauge', help: 'When the peer entered its current state (Unix time).', value: isoSeconds }],
  retries_left: [{ name: 'peerfs_peer_retries_left', type: 'gauge', help: 'Failed dials left before the peer is dead.' }],
  rtt_ms: [{ name: 'peerfs_peer_rtt_seconds', type: 'gauge', help: 'Round-trip time of the last keepalive.', value: ms }],
  inflight: [{ name: 'peerfs_peer_inflight_requests', type: 'gauge', help: 'Transactions sent to the peer and not answered yet.' }],
  deferred: [{ name: 'peerfs_peer_deferred_requests', type: 'gauge', help: 'Deferred requests queued for the peer and not yet delivered.' }],
  outbox_files: [{ name: 'peerfs_peer_outbox_files', type: 'gauge', help: 'Files in the outbox waiting to be sent.' }],
  outbox_bytes: [{ name: 'peerfs_peer_outbox_bytes', type: 'gauge', help: 'Bytes in the outbox waiting to be sent.' }],
  outbox_unclosed: [{ name: 'peerfs_peer_outbox_unclosed_files', type: 'gauge', help: 'Outbox files left open for writing when the daemon last stopped, or a write to which failed, not sent until written again, touched or removed.' }],
  outbox_refused: [{ name: 'peerfs_peer_outbox_refused_files', type: 'gauge', help: 'Outbox files the peer refused, kept until they change.' }],
  transfer_progress: [
    { name: 'peerfs_peer_transfer_acked_bytes', type: 'gauge', help: 'Bytes of the current transfer acknowledged by the peer.', value: progress(1) },
    { name: 'peerfs_peer_transfer_size_bytes', type: 'gauge', help: 'Size of the current transfer.', value: progress(2) }
  ],
  transfer_bytes_per_s: [{ name: 'peerfs_peer_transfer_rate_bytes_per_second', type: 'gauge', help: 'Rate of the current transfer.' }],
  incoming_progress: [
    { name: 'peerfs_peer_incoming_received_bytes', type: 'gauge', help: 'Bytes of the transfer from the peer received so far.', value: progress(1) },
    { name: 'peerfs_peer_incoming_size_bytes', type: 'gauge', help: 'Size of the transfer from the peer.', value: progress(2) }
  ],
  incoming_bytes_per_s: [{ name: 'peerfs_peer_incoming_rate_bytes_per_second', type: 'gauge', help: 'Rate of the transfer from the peer.' }],
  tx_bytes: [{ name: 'peerfs_peer_sent_bytes_total', type: 'counter', help: 'Bytes sent to the peer on its links.' }],
  rx_bytes: [{ name: 'peerfs_peer_received_bytes_total', type: 'counter', help: 'Bytes received from the peer on its links.' }]
}
/** String fields shown in status and deliberately not exported (free text, or in another metric). */
const PEER_TEXT = new Set(['state', 'address', 'transfer', 'transfer_waiting', 'outbox_refused_last', 'incoming', 'last_error'])
const KNOWN_NAMES = new Set(Object.values(PEER_FIELDS).flat().map(k => k.name).concat('peerfs_peer_up', 'peerfs_peer_state'))

export function escapeLabel (v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

/** A status field name as a metric name part: [a-z0-9_], not starting with a digit. */
export function metricPart (name: string): string {
  const s = name.toLowerCase().replace(/[^a-z0-9_]/g, '_')
  return /^[0-9]/.test(s) ? `_${s}` : s
}

function labels (l: Record<string, string>): string {
  return '{' + Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',') + '}'
}

class Families {
  private readonly order: string[] = []
  private readonly fams = new Map<string, { type: string, help: string, lines: string[] }>()

  add (name: string, type: string, help: string, l: Record<string, string>, value: number): void {
    let f = this.fams.get(name)
    if (f === undefined) {
      f = { type, help, lines: [] }
      this.fams.set(name, f)
      this.order.push(name)
    }
    f.lines.push(`${name}${labels(l)} ${value}`)
  }

  has (name: string): boolean { return this.fams.has(name) }

  text (): string {
    return this.order.map((name) => {
      const f = this.fams.get(name) as { type: string, help: string, lines: string[] }
      return `# HELP ${name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${name} ${f.type}\n${f.lines.join('\n')}\n`
    }).join('')
  }
}

export function renderMetrics (s: MetricsSnapshot): string {
  const out = new Families()
  const node = { node: s.node.id }
  out.add('peerfs_info', 'gauge', 'This node: always 1; its labels are the node id and version.', { ...node, version: s.node.version }, 1)
  out.add('peerfs_uptime_seconds', 'gauge', 'Seconds since the daemon started.', node, s.node.uptime_s)
  out.add('peerfs_peers', 'gauge', 'Configured peers.', node, s.peers.length)
  for (const [k, v] of s.node.fields ?? []) {
    const name = `peerfs_${metricPart(k)}`
    if (typeof v !== 'number' || !Number.isFinite(v) || out.has(name)) continue
    out.add(name, 'gauge', `Node status field ${k}.`, node, v)
  }
  // Families collects each metric's samples together, whatever the loop order.
  for (const p of s.peers) {
    const l = { ...node, peer: p.id }
    out.add('peerfs_peer_up', 'gauge', 'Whether the link to the peer is up (1) or not (0).', l, p.state === 'up' ? 1 : 0)
    const states = PEER_STATES.includes(p.state as typeof PEER_STATES[number]) ? PEER_STATES : [...PEER_STATES, p.state]
    for (const st of states) out.add('peerfs_peer_state', 'gauge', 'The peer\'s link state: 1 for the current one.', { ...l, state: st }, st === p.state ? 1 : 0)
    for (const [f, raw] of p.fields) {
      const known = PEER_FIELDS[f]
      if (known !== undefined) {
        for (const k of known) {
          const v = (k.value ?? num)(raw)
          if (v !== undefined) out.add(k.name, k.type, k.help, l, v)
        }
      } else if (!PEER_TEXT.has(f) && typeof raw === 'number' && Number.isFinite(raw)) {
        const name = `peerfs_peer_${metricPart(f)}`
        if (!KNOWN_NAMES.has(name)) out.add(name, 'gauge', `Peer status field ${f}.`, l, raw)
      }
    }
  }
  return out.text()
}
