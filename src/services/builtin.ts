// Built-in services every node answers: 01 echo (reply = request) and
// 02 info (id, version, uptime, services offered). Which numbers are
// built-ins is src/lib/svc.ts's rule (01..08).
import { E, TxError } from '../lib/errors.js'
import { BUILTIN_MAX, SVC_ECHO, SVC_INFO, svcName } from '../lib/svc.js'

// Callers that still import these from here (deferred.ts) get
// lib/svc.ts's; new code imports lib/svc.ts.
export { svcName }
export const MAX_BUILTIN = BUILTIN_MAX

export const VERSION = '0.1.0'

export interface BuiltinContext {
  id: string
  startedAt: number
  now: () => number
  /** Service numbers offered on this node, built-ins included. */
  offered: () => number[]
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
