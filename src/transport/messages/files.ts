// Managed-files family: signed manifests (JSON, checked by the layer
// above), a request for one version's content, and the content with its
// manifest on the bulk lane.
import { ProtocolError } from '../../lib/errors.js'
import { LANE_BULK, LANE_TX } from '../records.js'
import { MAX_STR, type Family } from './codec.js'

/** Largest advert (its manifests' JSON) a peer may send. */
export const MAX_ADVERT_BYTES = MAX_STR * 256

export type FilesMessage =
  | { type: 'fadvert', manifests: unknown[] }
  | { type: 'fget', name: string, sha256: string }
  | { type: 'fput', manifest: unknown, data: Buffer }

export const files: Family<FilesMessage> = {
  fadvert: {
    code: 15,
    lane: LANE_TX,
    encode: (w, m) => w.json(m.manifests),
    decode: (r) => {
      const manifests = r.json('file advert', MAX_ADVERT_BYTES)
      if (!Array.isArray(manifests)) throw new ProtocolError('file advert is not a list')
      return { type: 'fadvert', manifests }
    }
  },
  fget: {
    code: 16,
    lane: LANE_TX,
    encode: (w, m) => w.str(m.name).str(m.sha256),
    decode: (r) => ({ type: 'fget', name: r.str('name'), sha256: r.str('sha256') })
  },
  fput: {
    code: 17,
    lane: LANE_BULK,
    encode: (w, m) => w.json(m.manifest).rest(m.data),
    decode: (r) => ({ type: 'fput', manifest: r.json('file manifest', MAX_ADVERT_BYTES), data: r.rest() })
  }
}
