// A scripted mix of traffic for the usage API and dashboard suites: three
// keys, several models, an exact-cache miss and hit, an upstream error, two
// fallbacks, a rejected request, a stream and an unpriced (demo) model.
// `expected` holds what the script itself guarantees; sums that depend on
// the mock's token counts and the price table are checked against the
// ledger rows (GET /admin/requests) — a separate read path.

export const ROUTE = 'usage-fb';

/** Providers and config for a stack that can run `runTraffic`. */
export const STACK_OPTIONS = {
  providers: {
    openai: { apiKey: 'sk-test-openai-usage-000000000000000' },
    groq: { apiKey: 'gsk-test-groq-usage-0000000000000000' },
  },
  editConfig(g) {
    g.routes = { [ROUTE]: { strategy: 'fallback', targets: [{ model: 'openai/gpt-4o-mini' }, { model: 'groq/llama-3.1-8b-instant' }] } };
  },
};

async function chat(stack, key, body, headers = {}) {
  const r = await fetch(`${stack.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, headers: r.headers, text };
}

const meta = (m) => ({ 'x-tollgate-metadata': JSON.stringify(m) });
const msg = (s) => [{ role: 'user', content: s }];

export async function runTraffic(stack) {
  const [alpha, beta, gamma] = [
    await stack.createKey({ name: 'alpha' }),
    await stack.createKey({ name: 'beta' }),
    await stack.createKey({ name: 'gamma' }),
  ];
  const statuses = [];
  const note = (what, r, want) => {
    statuses.push([what, r.status]);
    if (typeof want === 'function' ? !want(r.status) : r.status !== want) throw new Error(`${what}: expected ${want}, got ${r.status} ${r.text}`);
  };
  // alpha: three priced requests for feature "search", one stream for "chat", one demo (unpriced).
  for (let i = 0; i < 3; i++) {
    note('alpha search', await chat(stack, alpha.key, { model: 'openai/gpt-4o-mini', messages: msg(`find thing number ${i} please`) }, meta({ feature: 'search', team: 'core', user: 'u1' })), 200);
  }
  note('alpha stream', await chat(stack, alpha.key, { model: 'openai/gpt-4o', stream: true, messages: msg('tell me a short story about gateways') }, meta({ feature: 'chat', team: 'core', user: 'u2' })), 200);
  note('alpha demo', await chat(stack, alpha.key, { model: 'demo', messages: msg('hello demo') }), 200);
  // beta: a cache miss then (once the entry is written) a hit; then an upstream 500.
  const cached = { model: 'openai/gpt-4o-mini', temperature: 0, messages: msg('what is the capital of France') };
  note('beta miss', await chat(stack, beta.key, cached, { 'x-tollgate-cache': 'exact', ...meta({ feature: 'search', team: 'growth' }) }), 200);
  let hit;
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 200));
    // A repeat that still misses would be a second priced request: only ask again once the entry exists.
    const rows = await stack.ledger({ count: 1, keyId: beta.id });
    if (rows.length >= 1) break;
  }
  await new Promise((r) => setTimeout(r, 500));
  hit = await chat(stack, beta.key, cached, { 'x-tollgate-cache': 'exact', ...meta({ feature: 'search', team: 'growth' }) });
  note('beta hit', hit, 200);
  if (hit.headers.get('x-tollgate-cache') !== 'HIT') throw new Error(`expected a cache HIT, got ${hit.headers.get('x-tollgate-cache')}`);
  stack.mocks.openai.enqueue({ match: { model: 'gpt-4o-mini' }, status: 500 });
  note('beta 500', await chat(stack, beta.key, { model: 'openai/gpt-4o-mini', messages: msg('this one fails') }, meta({ feature: 'summarize', team: 'growth' })), (s) => s >= 500);
  // gamma: two fallbacks (openai 503 → groq), one rejected request.
  stack.mocks.openai.enqueue({ match: { model: 'gpt-4o-mini' }, status: 503, times: 2 });
  for (let i = 0; i < 2; i++) {
    note('gamma fallback', await chat(stack, gamma.key, { model: ROUTE, messages: msg(`fall back please ${i}`) }, meta({ feature: 'summarize', team: 'core', user: 'u3' })), 200);
  }
  note('gamma rejected', await chat(stack, gamma.key, { model: 'openai/gpt-4o-mini' }), 400);
  const ids = new Set([alpha.id, beta.id, gamma.id]);
  let rows = [];
  for (let i = 0; i < 50 && rows.length < 11; i++) {
    rows = (await stack.ledger({ count: 11 })).filter((r) => ids.has(r.key_id));
    if (rows.length < 11) await new Promise((r) => setTimeout(r, 100));
  }
  if (rows.length !== 11) throw new Error(`expected 11 ledger rows, got ${rows.length}`);
  return {
    keys: { alpha, beta, gamma },
    rows,
    expected: {
      requests: 11,
      ok: 9,
      errors: 2,
      upstream_error: 1,
      rejected: 1,
      cache_hits: 1,
      fallbacks: 2,
      // Requests with at least one upstream attempt: all but the hit and the rejection.
      upstream: 9,
      byKey: { [alpha.id]: 5, [beta.id]: 3, [gamma.id]: 3 },
      byFeature: { search: 5, chat: 1, summarize: 3, '': 2 },
      byTeam: { core: 6, growth: 3, '': 2 },
    },
  };
}

/** Nearest-rank percentile, as the API defines it. */
export function nearestRank(values, p) {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return null;
  const rank = Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length)));
  return s[rank - 1];
}

export const sum = (rows, f) => rows.reduce((a, r) => a + (f(r) ?? 0), 0);
