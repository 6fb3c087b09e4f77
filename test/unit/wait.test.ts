// settlesWithin: the one bound on a wait in time (a daemon's stop).
import { describe, expect, it } from 'vitest'
import { settlesWithin } from '../../src/lib/wait.js'
import { FakeClock } from '../helpers/clock.js'

describe('settlesWithin', () => {
  it('is true for a promise that settles first, either way, and leaves no timer', async () => {
    const clock = new FakeClock()
    expect(await settlesWithin(Promise.resolve(1), 1000, clock)).toBe(true)
    const failing = Promise.reject(new Error('no'))
    expect(await settlesWithin(failing, 1000, clock)).toBe(true)
    await expect(failing).rejects.toThrow('no')
    expect(clock.pending).toBe(0)
  })

  it('is false once the time passes first, and the promise goes on', async () => {
    const clock = new FakeClock()
    let finish = (): void => {}
    const slow = new Promise<void>(resolve => { finish = resolve })
    const within = settlesWithin(slow, 1000, clock)
    clock.advance(999)
    await Promise.resolve()
    let answered = false
    void within.then(() => { answered = true })
    await Promise.resolve()
    expect(answered).toBe(false)
    clock.advance(1)
    expect(await within).toBe(false)
    finish()
    await slow
  })
})
