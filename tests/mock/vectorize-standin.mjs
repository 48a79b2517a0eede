// A stand-in for a Vectorize index binding (Vectorize has no local
// simulator): a Worker whose entrypoint exposes the binding's documented
// methods — query, upsert, insert, deleteByIds, getByIds, describe — over
// RPC, so the gateway calls it exactly as it calls `env.SEMANTIC_VECTORIZE`
// in production. Bound as a service binding in a test-only wrangler config
// (tests/e2e/semantic.test.mjs). MOCK: in-memory, exact cosine, no
// eventual consistency.
//
// Faithful to https://developers.cloudflare.com/vectorize/reference/client-api/
// and .../vectorize/reference/metadata-filtering/ where the gateway depends on it:
//   - vectors live in namespaces; a query with `namespace` sees only that one;
//   - `filter` applies only to properties that have a metadata index
//     (METADATA_INDEXES, as created by `wrangler vectorize create-metadata-index`);
//     `{prop: value}` is `$eq`; `$ne`, `$in`, `$nin`, `$lt`, `$lte`, `$gt`, `$gte` work too;
//   - topK is at most 20 with returnMetadata "all" (50 otherwise);
//   - returnMetadata: "none" (default) | "indexed" | "all"; returnValues: boolean;
//   - ids are at most 64 bytes, namespaces at most 64 bytes; dimensions fixed at creation;
//   - upsert replaces a vector with the same id, insert keeps the old one;
//   - mutations answer { mutationId }, query answers { count, matches: [{ id, score, … }] }.
import { WorkerEntrypoint } from 'cloudflare:workers';

const vectors = new Map(); // id -> { id, values, namespace, metadata }
const calls = { query: 0, upsert: 0, insert: 0, deleteByIds: 0 };
let mutation = 0;

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

function matches(meta, filter, indexed) {
  for (const [prop, cond] of Object.entries(filter ?? {})) {
    if (!indexed.includes(prop)) throw new Error(`VECTOR_QUERY_ERROR: filter on '${prop}' needs a metadata index`);
    const v = meta?.[prop];
    const ops = cond !== null && typeof cond === 'object' && !Array.isArray(cond) ? cond : { $eq: cond };
    for (const [op, x] of Object.entries(ops)) {
      const ok = { $eq: v === x, $ne: v !== x, $in: x?.includes?.(v), $nin: !x?.includes?.(v), $lt: v < x, $lte: v <= x, $gt: v > x, $gte: v >= x }[op];
      if (ok === undefined) throw new Error(`VECTOR_QUERY_ERROR: unknown operator ${op}`);
      if (!ok) return false;
    }
  }
  return true;
}

export default class VectorizeStandIn extends WorkerEntrypoint {
  get dims() {
    return Number(this.env.DIMENSIONS ?? 384);
  }
  get indexed() {
    return String(this.env.METADATA_INDEXES ?? '').split(',').filter(Boolean);
  }

  check(v) {
    if (typeof v.id !== 'string' || new TextEncoder().encode(v.id).length > 64) throw new Error('VECTOR_INSERT_ERROR: id must be a string of at most 64 bytes');
    if (v.namespace !== undefined && new TextEncoder().encode(v.namespace).length > 64) throw new Error('VECTOR_INSERT_ERROR: namespace of at most 64 bytes');
    const values = Array.from(v.values ?? []);
    if (values.length !== this.dims) throw new Error(`VECTOR_INSERT_ERROR: expected ${this.dims} dimensions, got ${values.length}`);
    if (JSON.stringify(v.metadata ?? {}).length > 10240) throw new Error('VECTOR_INSERT_ERROR: metadata over 10 KiB');
    return { id: v.id, values, namespace: v.namespace, metadata: v.metadata };
  }

  async upsert(list) {
    calls.upsert++;
    for (const v of list) vectors.set(v.id, this.check(v));
    return { mutationId: String(++mutation) };
  }

  async insert(list) {
    calls.insert++;
    for (const v of list) if (!vectors.has(v.id)) vectors.set(v.id, this.check(v));
    return { mutationId: String(++mutation) };
  }

  async query(vector, options = {}) {
    calls.query++;
    const q = Array.from(vector);
    if (q.length !== this.dims) throw new Error(`VECTOR_QUERY_ERROR: expected ${this.dims} dimensions, got ${q.length}`);
    const { topK = 5, namespace, filter, returnMetadata = 'none', returnValues = false } = options;
    const max = returnMetadata === 'all' || returnValues ? 20 : 50;
    if (topK < 1 || topK > max) throw new Error(`VECTOR_QUERY_ERROR: topK must be 1..${max}`);
    const found = [...vectors.values()]
      .filter((v) => namespace === undefined || v.namespace === namespace)
      .filter((v) => matches(v.metadata, filter, this.indexed))
      .map((v) => ({ v, score: cosine(q, v.values) }))
      .sort((a, b) => b.score - a.score)
      .slice(0, topK)
      .map(({ v, score }) => {
        const m = { id: v.id, score };
        if (v.namespace !== undefined) m.namespace = v.namespace;
        if (returnValues) m.values = v.values;
        if (returnMetadata === 'all') m.metadata = v.metadata;
        if (returnMetadata === 'indexed') m.metadata = Object.fromEntries(Object.entries(v.metadata ?? {}).filter(([k]) => this.indexed.includes(k)));
        return m;
      });
    return { count: found.length, matches: found };
  }

  async deleteByIds(ids) {
    calls.deleteByIds++;
    for (const id of ids) vectors.delete(id);
    return { mutationId: String(++mutation) };
  }

  async getByIds(ids) {
    return ids.filter((id) => vectors.has(id)).map((id) => vectors.get(id));
  }

  async describe() {
    return { dimensions: this.dims, vectorCount: vectors.size, calls: { ...calls } };
  }

  // Test inspection (not part of Vectorize's API): GET / → describe().
  async fetch() {
    return Response.json(await this.describe());
  }
}
