// Built-in services every node answers: 01 echo (reply = request) and
// 02 info (id, version, uptime, services offered). 01..08 are reserved.
import { E, TxError } from '../lib/errors.js'

export const SVC_ECHO = 1
export const SVC_INFO = 2
export const MAX_BUILTIN = 8
export const VERSION = '0.1.0'

export interface BuiltinContext {
  id: string
  startedAt: number
  now: () => number
  /** Service numbers offered on this node, built-ins included. */
  offered: () => number[]
}

export function svcName (svc: number): string {
  return String(svc).padStart(2, '0')
}

export function serveBuiltin (ctx: BuiltinContext, svc: number, payload: Buffer): Buffer {
  switch (svc) {
    case SVC_ECHO:
      return payload
    case SVC_INFO:
      return Buffer.from([
        `id: ${ctx.id}`,
        `version: ${VERSION}`,
        `uptime_s: ${Math.floor((ctx.now() - ctx.startedAt) / 1000)}`,
        `services: ${ctx.offered().map(svcName).join(' ')}`
      ].join('\n') + '\n')
    default:
      throw new TxError(E.ECONNREFUSED, `no server for service ${svcName(svc)} on ${ctx.id}`)
  }
}
