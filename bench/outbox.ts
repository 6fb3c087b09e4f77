// The outbox as a folder, nothing sent: `cp` of one big file and `cp -r` of
// many small ones into a peer's outbox while that peer is down, against the
// same copies into bench/pass.cjs, a minimal passthrough on the same
// fuse-native (plain, and with direct_io). What is left between them is
// peerfs's own cost per FUSE operation: the tree, the names rule, the
// handle table and the sender's hooks.
//
// Each round copies into a new name and, for peerfs, into the outbox of
// another peer that is down (peers p1..pN, never started), so every copy
// starts from an empty outbox as a user's would and no sender sees the
// files of earlier rounds. The order of the three rotates per round.
import type { ChildProcess } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import { Daemon, ROOT, makeNetwork, sh, teardown, tempDir } from '../test/helpers/net.js'
import { ROUNDS, benchSources, cpuSeconds, must, record, removeAtEnd, spawnReady, stop, timedSh, type Samples } from './util.js'

interface Target { name: string, pid: number, dest: (round: number) => string }

async function minimalPassthrough (work: string, variant: 'plain' | 'direct'): Promise<{ proc: ChildProcess, mnt: string }> {
  const mnt = path.join(work, `mnt-${variant}`)
  const real = path.join(work, `real-${variant}`)
  await mkdir(real)
  const { proc } = await spawnReady(process.execPath, [path.join(ROOT, 'bench/pass.cjs'), mnt, real, variant], /mounted/)
  return { proc, mnt }
}

export async function outboxBench (samples: Samples): Promise<void> {
  const src = await benchSources()
  const work = await tempDir('peerfs-bench-outbox-')
  const peers = Array.from({ length: ROUNDS }, (_, i) => `p${i + 1}`)
  // The peers have no address: alpha never dials them (a dial's handshake
  // would take CPU from the copies).
  const netw = await makeNetwork(['alpha', ...peers], {
    links: peers.map(p => ['alpha', p]), defaultTimings: true, peer: Object.fromEntries(peers.map(p => [`alpha>${p}`, { address: null }])),
    // Its files stay until the run ends (removeAtEnd), not removed by teardown.
    keepDir: true
  })
  const passes: { proc: ChildProcess, mnt: string }[] = []
  try {
    const alpha = new Daemon(netw.node('alpha'))
    await alpha.start()
    const plain = await minimalPassthrough(work, 'plain')
    passes.push(plain)
    const direct = await minimalPassthrough(work, 'direct')
    passes.push(direct)
    const targets: Target[] = [
      { name: 'peerfs', pid: alpha.pid, dest: (r) => alpha.path('peers', peers[r], 'outbox') },
      { name: 'pass', pid: plain.proc.pid ?? 0, dest: (r) => path.join(plain.mnt, `r${r}`) },
      { name: 'direct', pid: direct.proc.pid ?? 0, dest: (r) => path.join(direct.mnt, `r${r}`) }
    ]
    for (let r = 0; r < ROUNDS; r++) {
      const order = targets.map((_, i) => targets[(i + r) % targets.length])
      for (const t of order) {
        if (t.name !== 'peerfs') await must(`mkdir ${t.dest(r)}`)
      }
      // Wall time of the cp, and the CPU time its filesystem's process spent meanwhile.
      const copy = async (what: string, t: Target, cmd: string): Promise<void> => {
        await must('sync')
        const cpu = await cpuSeconds(t.pid)
        record(samples, `outbox.${what}.${t.name}`, await timedSh(cmd))
        record(samples, `outbox.${what}.${t.name}.cpu`, await cpuSeconds(t.pid) - cpu)
      }
      for (const t of order) await copy('big', t, `cp ${src.big} ${t.dest(r)}/`)
      for (const t of order) await copy('tree', t, `cp -r ${src.tree} ${t.dest(r)}/`)
      console.log(`outbox round ${r + 1}: ${order.map(t => `${t.name} ${samples.get(`outbox.big.${t.name}`)?.[r].toFixed(2)} s / ${samples.get(`outbox.tree.${t.name}`)?.[r].toFixed(2)} s`).join(', ')}`)
    }
  } finally {
    for (const p of passes) {
      await stop(p.proc)
      await sh(`fusermount -uz ${p.mnt}`)
    }
    await teardown()
    removeAtEnd(work, netw.dir)
  }
}
