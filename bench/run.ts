// `make bench`: every part below, in order, each against anchors measured
// in the same run and reported with ratios; then the table of issue 13
// (outbox and transfer parts). Nothing is asserted; the numbers are for the
// reader and the issue notes.
//   BENCH_ONLY=outbox,transfer   run only these parts
//   BENCH_ROUNDS=3               rounds of the outbox and transfer parts
//   BENCH_GIB_MB, BENCH_SMALL    size of the big file (MiB), number of small files
//   BENCH_SSHD                   the sshd to run for the rsync anchor (default:
//                                the system's, else bench/sshd.sh fetches one)
//   PEERFS_NODE_ARGS             more node flags for every daemon, e.g. to profile:
//                                "--cpu-prof --cpu-prof-dir=/tmp/prof" (the daemons
//                                then get SIGTERM at the end, so the profiles are written)
import { statfs } from 'node:fs/promises'
import os from 'node:os'
import { filesBench } from './files.js'
import { latencyBench } from './latency.js'
import { outboxBench } from './outbox.js'
import { packetsBench } from './packets.js'
import { printIssueTable } from './table.js'
import { transferBench } from './transfer.js'
import { GIB_MB, ROUNDS, removeAll, type Samples } from './util.js'

interface Part {
  name: string
  run: (samples: Samples, notes: string[]) => Promise<void>
  /** Copies of the big file it writes (kept until the end), for the disk check. */
  bigCopies?: number
}

const PARTS: Part[] = [
  { name: 'latency', run: async () => await latencyBench() },
  { name: 'outbox', run: async (s) => await outboxBench(s), bigCopies: 3 * ROUNDS },
  {
    name: 'transfer',
    run: async (s, notes) => {
      const { skipped } = await transferBench(s)
      if (skipped !== undefined) notes.push(skipped)
    },
    // Three of the big file per round, and about one more of the 256 MiB file's three (ssh, two inboxes).
    bigCopies: 4 * ROUNDS
  },
  { name: 'files', run: async () => await filesBench() },
  { name: 'packets', run: async () => { await packetsBench() } }
]

async function main (): Promise<void> {
  const only = process.env.BENCH_ONLY?.split(',').map(s => s.trim()).filter(s => s !== '')
  const unknown = only?.filter(n => !PARTS.some(p => p.name === n)) ?? []
  if (unknown.length > 0) throw new Error(`BENCH_ONLY: no part ${unknown.join(', ')} (parts: ${PARTS.map(p => p.name).join(', ')})`)
  const parts = PARTS.filter(p => only === undefined || only.includes(p.name))
  // Everything written stays until the end (see util.ts): refuse to start
  // rather than fill the disk half-way, for us and for whoever shares it.
  const copies = parts.reduce((n, p) => n + (p.bigCopies ?? 0), 0)
  if (copies > 0) {
    const need = (copies + 2) * GIB_MB * 1.1 * (1 << 20)
    const fs = await statfs(os.tmpdir())
    if (fs.bavail * fs.bsize < need) throw new Error(`needs ${(need / 2 ** 30).toFixed(1)} GiB free in ${os.tmpdir()}, has ${(fs.bavail * fs.bsize / 2 ** 30).toFixed(1)} (fewer BENCH_ROUNDS or a smaller BENCH_GIB_MB)`)
  }
  const samples: Samples = new Map()
  const notes: string[] = []
  try {
    for (const p of parts) await p.run(samples, notes)
  } finally {
    await removeAll()
  }
  printIssueTable(samples, notes)
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
