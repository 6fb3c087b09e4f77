// The Node flags every daemon runs with, written once: the launcher
// (packaging/peerfs.in), cli.js's #! line, --background and the mount
// helper's child, the demo and the tests all start the daemon with these,
// and a unit test holds the two files that cannot import this to it.
//
// --initial-old-space-size=64: a transfer allocates fast (a cipher output
// and a read buffer per 64 KiB record) while its live heap stays ~8 MB.
// V8 sizes the old generation's limit from the live heap (~20 MB) and
// starts incremental marking whenever that limit leaves less room than a
// young generation could promote, so it ran a mark-compact every ~8 MB
// transferred (50-60 per 512 MiB, 2-12 ms each) to reclaim about 2 MB.
// With a 64 MB floor under the limit there were none across 3 GiB: per
// 512 MiB, daemon CPU 3.5-4.4 s -> 2.6-2.7 s, wall 4.5-5.5 s -> 3.6-3.7 s,
// echo p99 61-78 ms -> 42-46 ms, and peak RSS 5-8 MB lower. It is a floor,
// not a cap: a larger live heap still gets V8's own limit above it.
export const DAEMON_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=64']

/** The daemon's flags this node was not started with (`node dist/src/cli.js` runs without them). */
export function missingNodeFlags (execArgv: readonly string[]): string[] {
  return DAEMON_NODE_FLAGS.filter(f => !execArgv.includes(f))
}
