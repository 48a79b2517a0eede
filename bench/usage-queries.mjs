// Latency of the usage API's main queries over a seeded ledger, under
// `wrangler dev` (local D1 = SQLite in workerd), as the dashboard calls them.
//
//   export PATH=$PWD/node_modules/.bin:$PATH
//   sh scripts/build.sh
//   node bench/usage-queries.mjs [--rows 1000000] [--runs 7]
//
// The ledger is seeded with one SQL statement (a recursive CTE) after the
// migrations and before the Worker starts, and its hour aggregates with a
// second (the backfill of migration 0010): `--rows` requests spread evenly over
// the last 30 days, 20 keys, 4 providers / 8 models, 8 features, 5 teams,
// 1,000 users, 2 % upstream errors, 1 % rejections, 10 % cache hits, 4 %
// fallbacks, a third streamed. Each query runs `--runs` times after one
// warm-up; the table shows the median and the slowest wall-clock time of the
// HTTP call (Node fetch on 127.0.0.1) and the median of the gateway's own
// `Server-Timing: gateway;dur=`.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { startStack } from '../tests/e2e/harness.mjs';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const ROWS = arg('rows', 1_000_000);
const RUNS = arg('runs', 7);
const DAY = 86_400_000;
const now = Math.floor(Date.now() / 60_000) * 60_000;
const step = Math.floor((30 * DAY) / ROWS);

const seed = `
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${ROWS - 1})
INSERT INTO requests (request_id, created_at, key_id, endpoint, model_requested, provider, model_used, stream,
  status, outcome, error_code, prompt_tokens, completion_tokens, total_tokens, cached_prompt_tokens, reasoning_tokens,
  usage_source, latency_ms, ttft_ms, metadata, cache_status, cost_micros, saved_micros, pricing, attempt_count, fallback)
SELECT printf('req_seed_%08d', i), ${now} - 1 - i * ${step}, 'key_seed_' || (i % 20), 'chat.completions',
  'm' || (i % 8),
  CASE i % 4 WHEN 0 THEN 'openai' WHEN 1 THEN 'anthropic' WHEN 2 THEN 'gemini' ELSE 'groq' END,
  'model-' || (i % 8), (i % 3 = 0),
  CASE WHEN i % 50 = 0 THEN 502 WHEN i % 100 = 1 THEN 400 ELSE 200 END,
  CASE WHEN i % 50 = 0 THEN 'upstream_error' WHEN i % 100 = 1 THEN 'rejected' ELSE 'ok' END,
  CASE WHEN i % 50 = 0 THEN 'upstream_error' WHEN i % 100 = 1 THEN 'invalid_request' END,
  10 + i % 500, 5 + i % 300, 15 + i % 500 + i % 300, NULL, NULL, 'provider',
  20 + (i * 7919) % 3000, CASE WHEN i % 3 = 0 THEN 10 + (i * 31) % 800 END,
  json_object('feature', 'f' || (i % 8), 'team', 't' || (i % 5), 'user', 'u' || (i % 1000)),
  CASE WHEN i % 10 = 0 THEN 'hit' WHEN i % 10 < 4 THEN 'miss' END,
  CASE WHEN i % 10 = 0 THEN 0 ELSE (i % 1000) * 3 END,
  CASE WHEN i % 10 = 0 THEN (i % 1000) * 3 END,
  'priced', CASE WHEN i % 10 = 0 OR i % 100 = 1 THEN 0 WHEN i % 25 = 0 THEN 2 ELSE 1 END, (i % 25 = 0)
FROM n;
-- The aggregates the Worker adds with each ledger write (as migration 0010 backfills them).
INSERT INTO usage_rollup
SELECT (created_at / 3600000) * 3600000, 3600000, key_id, COALESCE(provider, ''), COALESCE(model_used, ''),
  COALESCE(CAST(json_extract(metadata, '$.team') AS TEXT), ''),
  COALESCE(CAST(json_extract(metadata, '$.feature') AS TEXT), ''),
  outcome, status, COALESCE(cache_status, ''), COUNT(*), SUM(attempt_count > 0), SUM(fallback),
  COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0),
  COALESCE(SUM(cost_micros), 0), COALESCE(SUM(saved_micros), 0), SUM(cost_micros IS NULL),
  SUM(latency_ms), COALESCE(SUM(ttft_ms), 0), COUNT(ttft_ms)
FROM requests GROUP BY 1, 3, 4, 5, 6, 7, 8, 9, 10;
`;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-bench-usage-'));
const seedFile = path.join(dir, 'seed.sql');
fs.writeFileSync(seedFile, seed);
const t0 = performance.now();
const stack = await startStack({ seedSqlFile: seedFile });
console.log(`seeded ${ROWS.toLocaleString('en-US')} rows and started wrangler dev in ${((performance.now() - t0) / 1000).toFixed(0)} s`);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ranges = { '24 h': [now - DAY, now], '30 d': [now - 30 * DAY, now] };
const queries = [
  ['totals + percentiles', '', {}],
  ['series by hour (24 h) / day (30 d)', '/series', {}],
  ['groups by key', '/groups', { by: 'key' }],
  ['groups by model', '/groups', { by: 'model' }],
  ['groups by feature', '/groups', { by: 'feature' }],
  ['groups by user (1,000)', '/groups', { by: 'user' }],
  ['top 10 by cost', '/top', { limit: '10' }],
  ['totals, key filter', '', { key_id: 'key_seed_7' }],
  ['totals, feature filter', '', { feature: 'f3' }],
  ['totals, model filter', '', { model: 'openai/model-4' }],
];

try {
  const check = await stack.admin('GET', `/admin/usage?from=${now - 30 * DAY}&to=${now}`);
  if (check.json?.totals?.requests !== ROWS) throw new Error(`expected ${ROWS} rows, the API counts ${check.text.slice(0, 300)}`);
  const rowsOut = [];
  for (const [name, p, extra] of queries) {
    const cells = [name];
    for (const [label, [from, to]] of Object.entries(ranges)) {
      const bucket = label === '24 h' ? 'hour' : 'day';
      const q = new URLSearchParams({ from: String(from), to: String(to), ...(p === '/series' ? { bucket } : {}), ...extra });
      const wall = [];
      const gw = [];
      for (let i = 0; i <= RUNS; i++) {
        const s = performance.now();
        const r = await stack.admin('GET', `/admin/usage${p}?${q}`);
        const ms = performance.now() - s;
        if (r.status !== 200) throw new Error(`${name}: ${r.status} ${r.text}`);
        if (i === 0) continue; // warm-up
        wall.push(ms);
        gw.push(Number(/gateway;dur=(\d+)/.exec(r.headers.get('server-timing') ?? '')?.[1] ?? NaN));
      }
      cells.push(`${median(wall).toFixed(0)} / ${Math.max(...wall).toFixed(0)} ms (gw ${median(gw)})`);
    }
    rowsOut.push(cells);
  }
  console.log(`\n| query (${ROWS.toLocaleString('en-US')} rows, ${RUNS} runs) | last 24 h: median / max | last 30 d: median / max |`);
  console.log('|---|---|---|');
  for (const r of rowsOut) console.log(`| ${r.join(' | ')} |`);
} finally {
  await stack.stop();
  fs.rmSync(dir, { recursive: true, force: true });
}
