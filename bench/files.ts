// Convergence of managed files: a 1 MB file published at one end of a line
// of six nodes, until the far end has it (its `file` event), against the
// floor: hops x one-hop time (measured in the same run, on two nodes) +
// one gossip interval.
import { Daemon, eventually, makeNetwork, readText, sh, startNetwork, teardown, waitEvent, type Network } from '../test/helpers/net.js'

const GOSSIP_MS = 2000

async function trustAll (netw: Network): Promise<void> {
  const keys = [...netw.nodes.values()].map(n => `"${n.publicKey}"`).join(', ')
  for (const n of netw.nodes.values()) await sh(`sed -i '0,/^\\[\\[peer\\]\\]/s//files_trust = [${keys}]\\n[[peer]]/' ${n.config}`)
}

/** Seconds from writing a 1 MB file on the first node to the last node's event. */
async function converge (ids: string[]): Promise<number> {
  const links = ids.slice(1).map((id, i) => [ids[i], id] as [string, string])
  const netw = await makeNetwork(ids, { links, defaultTimings: true, extra: Object.fromEntries(ids.map(id => [id, `gossip_ms = ${GOSSIP_MS}\n`])) })
  await trustAll(netw)
  try {
    const ds = await startNetwork(netw)
    const first = ds.get(ids[0]) as Daemon
    const last = ds.get(ids[ids.length - 1]) as Daemon
    for (const id of ids) {
      const d = ds.get(id) as Daemon
      const want = id === ids[0] || id === ids[ids.length - 1] ? 1 : 2
      await eventually(async () => (await readText(d.path('status'))).includes(`(${want} up)`), `${id} up`, 30_000)
    }
    await sh(`head -c 1000000 /dev/urandom > ${netw.dir}/one-mb`)
    const seen = waitEvent(last.path('events'), ' file one-mb$', 120_000)
    await new Promise(resolve => setTimeout(resolve, 300))
    const t0 = Date.now()
    await sh(`cp ${netw.dir}/one-mb ${first.path('files/one-mb')}`)
    const line = await seen
    return (Number(line.split(' ')[0]) - t0) / 1000
  } finally {
    await teardown()
  }
}

export async function filesBench (): Promise<void> {
  const hop = await converge(['n1', 'n2'])
  const line = await converge(['n1', 'n2', 'n3', 'n4', 'n5', 'n6'])
  const floor = 5 * hop + GOSSIP_MS / 1000
  console.log('\nManaged files, 1 MB published at one end of a line of 6 nodes (gossip every 2 s):')
  console.log(`  one hop (2 nodes):         ${(hop * 1000).toFixed(0)} ms`)
  console.log(`  5 hops (6 nodes):          ${(line * 1000).toFixed(0)} ms`)
  console.log(`  floor, 5 x one hop + gossip interval: ${(floor * 1000).toFixed(0)} ms; measured / floor = ${(line / floor).toFixed(2)}`)
}
