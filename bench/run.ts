// `make bench`: every part below, in order, each against anchors measured
// in the same run and reported with ratios; then the table of issue 13
// (outbox and transfer parts). Nothing is asserted; the numbers are for the
// reader and the issue notes.
//   BENCH_ONLY=outbox,transfer   run only these parts
//   BENCH_ROUNDS=3               rounds of the outbox and transfer parts
//   BENCH_GIB_MB, BENCH_SMALL    size of the big file (MiB), number of small files
//   BENCH_SSHD                   the sshd to run for the rsync anchor
import { filesBench } from './files.js'
import { latencyBench } from './latency.js'
import { outboxBench } from './outbox.js'
import { packetsBench } from './packets.js'
import { printIssueTable } from './table.js'
import { transferBench } from './transfer.js'
import { removeSources, type Samples } from './util.js'

interface Part { name: string, run: (samples: Samples, notes: string[]) => Promise<void> }

const PARTS: Part[] = [
  { name: 'latency', run: async () => await latencyBench() },
  { name: 'outbox', run: async (s) => await outboxBench(s) },
  {
    name: 'transfer',
    run: async (s, notes) => {
      const { sshd } = await transferBench(s)
      if (!sshd) notes.push('no sshd, rsync anchor skipped (apt-get install openssh-server, or BENCH_SSHD=<sshd>)')
    }
  },
  { name: 'files', run: async () => await filesBench() },
  { name: 'packets', run: async () => { await packetsBench() } }
]

async function main (): Promise<void> {
  const only = process.env.BENCH_ONLY?.split(',').map(s => s.trim()).filter(s => s !== '')
  const unknown = only?.filter(n => !PARTS.some(p => p.name === n)) ?? []
  if (unknown.length > 0) throw new Error(`BENCH_ONLY: no part ${unknown.join(', ')} (parts: ${PARTS.map(p => p.name).join(', ')})`)
  const samples: Samples = new Map()
  const notes: string[] = []
  try {
    for (const p of PARTS) {
      if (only === undefined || only.includes(p.name)) await p.run(samples, notes)
    }
  } finally {
    await removeSources()
  }
  printIssueTable(samples, notes)
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
