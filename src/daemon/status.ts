// What <mnt>/status and peers/<id>/status say, and the SIGUSR1 report:
// rendered from the peer table and the per-peer services, never stored.
import type { Config } from '../config.js'
import type { Peer } from '../transport/peer.js'
import { svcName } from '../lib/svc.js'
import type { PeerServices } from './peer-services.js'
import type { Packets } from '../services/packets.js'

export type StatusPairs = Array<[string, string | number]>

export interface NodeFacts {
  config: Config
  version: string
  uptimeS: number
  services: number[]
}

function address (p: Peer): string {
  const a = p.cfg.address
  return a === undefined ? '-' : `${a.host}:${a.port}`
}

/** peers/<id>/status, in order. */
export function peerStatus (p: Peer, services: PeerServices, packets: Packets): StatusPairs {
  const a = p.cfg.address
  return [
    ['state', p.state],
    ['address', a === undefined ? '(accepts calls only)' : `${a.host}:${a.port}`],
    ['since', new Date(p.since).toISOString()],
    ['retries_left', p.retriesLeft],
    ['rtt_ms', p.link?.rttMs ?? '-'],
    ['inflight', p.inflight],
    ['deferred', services.deferred.get(p.id)?.pending ?? 0],
    ...outboxStatus(p.id, services),
    ...packets.status(p.id),
    ['tx_bytes', p.txBytes],
    ['rx_bytes', p.rxBytes],
    ['last_error', p.lastError === '' ? '-' : p.lastError]
  ]
}

/** The outbox sender's fields, then what the peer is sending us. */
function outboxStatus (id: string, services: PeerServices): StatusPairs {
  return [
    ...services.outboxes.get(id)?.status() ?? [['outbox_files', 0], ['outbox_bytes', 0], ['outbox_unclosed', 0], ['outbox_refused', 0], ['outbox_refused_last', '-']],
    ...services.inbox?.status(id) ?? []
  ]
}

/** <mnt>/status: this node, then one line per peer. */
export function summary (node: NodeFacts, peers: Peer[]): string {
  const up = peers.filter(p => p.state === 'up').length
  const l = node.config.listen
  const head = [
    `node: ${node.config.id}`,
    `version: ${node.version}`,
    `listen: ${l === undefined ? '-' : `${l.host}:${l.port}`}`,
    `uptime_s: ${node.uptimeS}`,
    `services: ${node.services.map(svcName).join(' ')}`,
    `peers: ${peers.length} (${up} up)`,
    ''
  ]
  const rows = peers.map(p => [
    p.id.padEnd(16),
    p.state.padEnd(10),
    address(p).padEnd(22),
    `since ${new Date(p.since).toISOString()}`,
    `rtt_ms ${p.link?.rttMs ?? '-'}`,
    p.cfg.alias === undefined ? '' : `alias ${p.cfg.alias}`
  ].join(' ').trimEnd())
  return [...head, ...rows].join('\n') + '\n'
}
