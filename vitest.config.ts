import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // End-to-end files each start several daemons; two cores run two files.
    maxWorkers: 2,
    pool: 'forks'
  }
})
