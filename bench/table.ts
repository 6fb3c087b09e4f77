// The table of issue 13, from the samples of the outbox and transfer parts:
// medians over rounds, each peerfs figure beside its anchor from the same
// run, the median of the per-round ratios, and the goal. Rows whose part
// did not run are left out.
import { PACED_MB, PACED_RATE } from './transfer.js'
import { ROUNDS, GIB_MB, SMALL, median, type Samples } from './util.js'

interface Row {
  what: string
  peerfs: string
  anchor?: string
  anchorName?: string
  unit: string
  /** Goal on the ratio (ratio rows) or on the value itself. */
  goal: number
  /** 'ratio': peerfs/anchor <= goal; 'max': value <= goal; 'below': value < goal. */
  kind: 'ratio' | 'max' | 'below'
}

const ROWS: Row[] = [
  { what: `${GIB_MB} MiB file, cp to complete in the inbox`, peerfs: 'peerfs.big', anchor: 'rsync.big', anchorName: 'rsync -a over ssh', unit: 's', goal: 0.6, kind: 'ratio' },
  { what: '  the same, cp to a local folder', peerfs: 'peerfs.big', anchor: 'local.big', anchorName: 'cp to a local folder', unit: 's', goal: NaN, kind: 'ratio' },
  { what: '  of which the cp into the outbox', peerfs: 'peerfs.big.cp', unit: 's', goal: NaN, kind: 'max' },
  { what: '  CPU of the sending daemon meanwhile', peerfs: 'cpu.big.sender', unit: 's', goal: NaN, kind: 'max' },
  { what: '  CPU of the receiving daemon meanwhile', peerfs: 'cpu.big.receiver', unit: 's', goal: NaN, kind: 'max' },
  { what: `${PACED_MB} MiB written over ${PACED_MB / PACED_RATE} s, close to complete in the inbox`, peerfs: 'peerfs.paced', anchor: 'rsync.paced', anchorName: 'rsync -a over ssh after it', unit: 's', goal: NaN, kind: 'ratio' },
  { what: `  the same by rsync -a --bwlimit, its end to complete`, peerfs: 'peerfs.rsync', anchor: 'rsync.paced', anchorName: 'rsync -a over ssh after it', unit: 's', goal: NaN, kind: 'ratio' },
  { what: `${SMALL} x 4 KiB, cp -r to complete in the inbox`, peerfs: 'peerfs.tree', anchor: 'rsync.tree', anchorName: 'rsync -a over ssh', unit: 's', goal: 1.5, kind: 'ratio' },
  { what: '  the same, cp -r to a local folder', peerfs: 'peerfs.tree', anchor: 'local.tree', anchorName: 'cp -r to a local folder', unit: 's', goal: NaN, kind: 'ratio' },
  { what: '  of which the cp -r into the outbox', peerfs: 'peerfs.tree.cp', unit: 's', goal: NaN, kind: 'max' },
  { what: '  CPU of the sending daemon meanwhile', peerfs: 'cpu.tree.sender', unit: 's', goal: NaN, kind: 'max' },
  { what: '  CPU of the receiving daemon meanwhile', peerfs: 'cpu.tree.receiver', unit: 's', goal: NaN, kind: 'max' },
  { what: `cp ${GIB_MB} MiB into the outbox, peer down`, peerfs: 'outbox.big.peerfs', anchor: 'outbox.big.pass', anchorName: 'minimal passthrough', unit: 's', goal: 1.2, kind: 'ratio' },
  { what: '  the same, anchor with direct_io', peerfs: 'outbox.big.peerfs', anchor: 'outbox.big.direct', anchorName: 'minimal, direct_io', unit: 's', goal: NaN, kind: 'ratio' },
  { what: '  CPU of the filesystem process meanwhile', peerfs: 'outbox.big.peerfs.cpu', anchor: 'outbox.big.pass.cpu', anchorName: 'minimal passthrough', unit: 's', goal: NaN, kind: 'ratio' },
  { what: `cp -r ${SMALL} x 4 KiB into the outbox, peer down`, peerfs: 'outbox.tree.peerfs', anchor: 'outbox.tree.pass', anchorName: 'minimal passthrough', unit: 's', goal: 1.2, kind: 'ratio' },
  { what: '  the same, anchor with direct_io', peerfs: 'outbox.tree.peerfs', anchor: 'outbox.tree.direct', anchorName: 'minimal, direct_io', unit: 's', goal: NaN, kind: 'ratio' },
  { what: '  CPU of the filesystem process meanwhile', peerfs: 'outbox.tree.peerfs.cpu', anchor: 'outbox.tree.pass.cpu', anchorName: 'minimal passthrough', unit: 's', goal: NaN, kind: 'ratio' },
  { what: `echo p99 during the ${GIB_MB} MiB transfer`, peerfs: 'echo.p99', unit: 'ms', goal: 10, kind: 'max' },
  { what: 'peak RSS, sender', peerfs: 'rss.sender', unit: 'MB', goal: 150, kind: 'below' },
  { what: 'peak RSS, receiver', peerfs: 'rss.receiver', unit: 'MB', goal: 150, kind: 'below' }
]

const num = (v: number, unit: string): string => `${v.toFixed(unit === 'MB' ? 0 : 2)} ${unit}`

export function printIssueTable (samples: Samples, notes: string[]): void {
  const rows = ROWS.filter(r => (samples.get(r.peerfs)?.length ?? 0) > 0)
  if (rows.length === 0) return
  console.log(`\nIssue 13, the outbox at wire speed: medians of ${ROUNDS} round(s); ratio = median of the per-round ratios`)
  console.log(`${''.padEnd(48)}${'peerfs'.padStart(10)}  ${'anchor'.padEnd(30)}${'ratio'.padStart(7)}   goal`)
  for (const r of rows) {
    const p = samples.get(r.peerfs) ?? []
    const a = r.anchor === undefined ? undefined : samples.get(r.anchor)
    let anchor = ''
    let ratio = ''
    let verdict: boolean | undefined
    if (r.kind === 'ratio') {
      if (a === undefined || a.length === 0) {
        anchor = `${r.anchorName ?? ''}: skipped`
      } else {
        const ratios = p.slice(0, a.length).map((v, i) => v / a[i])
        const q = median(ratios)
        anchor = `${r.anchorName ?? ''} ${num(median(a), r.unit)}`
        ratio = `${q.toFixed(2)}x`
        if (!Number.isNaN(r.goal)) verdict = q <= r.goal
      }
    } else {
      const v = r.kind === 'below' ? Math.max(...p) : median(p)
      if (!Number.isNaN(r.goal)) verdict = r.kind === 'below' ? v < r.goal : v <= r.goal
    }
    const goal = Number.isNaN(r.goal) ? '' : r.kind === 'ratio' ? `<= ${r.goal}x` : r.kind === 'max' ? `<= ${r.goal} ${r.unit}` : `< ${r.goal} ${r.unit} (max of rounds)`
    const mark = verdict === undefined ? '' : verdict ? '  met' : '  NOT met'
    const shown = r.kind === 'below' ? Math.max(...p) : median(p)
    console.log(`${r.what.padEnd(48)}${num(shown, r.unit).padStart(10)}  ${anchor.padEnd(30)}${ratio.padStart(7)}   ${goal}${mark}`)
  }
  const each = (k: string): string => (samples.get(k) ?? []).map(v => v.toFixed(2)).join(' ')
  console.log('per round:')
  for (const k of [...samples.keys()].sort()) console.log(`  ${k.padEnd(22)} ${each(k)}`)
  for (const n of notes) console.log(`note: ${n}`)
}
