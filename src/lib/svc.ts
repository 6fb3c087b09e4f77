// Service numbers, one rule: 1..63 (0 is null); 01..08 are built-ins
// answered by every node, 09..63 are served by local processes.
export const SVC_MIN = 1
export const SVC_MAX = 63
export const BUILTIN_MAX = 8
export const SVC_ECHO = 1
export const SVC_INFO = 2

export const isService = (n: number): boolean => Number.isInteger(n) && n >= SVC_MIN && n <= SVC_MAX
export const isBuiltin = (n: number): boolean => isService(n) && n <= BUILTIN_MAX
export const isUserService = (n: number): boolean => isService(n) && n > BUILTIN_MAX

/** Two digits, as in svc/NN. */
export function svcName (svc: number): string {
  return String(svc).padStart(2, '0')
}

const NAME_RE = /^(0[1-9]|[1-5][0-9]|6[0-3])$/

/** The service number of a file name NN, or undefined. */
export function parseSvcName (name: string): number | undefined {
  return NAME_RE.test(name) ? Number(name) : undefined
}

export const ALL_SERVICES: readonly number[] = Array.from({ length: SVC_MAX }, (_, i) => i + SVC_MIN)
export const USER_SERVICES: readonly number[] = ALL_SERVICES.filter(isUserService)
