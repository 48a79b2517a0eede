// The admin usage API (issue 8) end to end: after a scripted mix of traffic
// (usage-traffic.mjs) the totals, series, groups, percentiles and top-N
// match the traffic exactly; filters narrow them; every response carries
// Server-Timing and a request id; and the retention job run by the cron
// trigger (`wrangler dev --test-scheduled`, GET /__scheduled) deletes old
// ledger rows and compacts old hour aggregates into days without changing
// any total. Three days of older usage are seeded into D1 before the Worker
// starts (a ledger row and two hour aggregates, as the Worker writes them).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { startStack } from './harness.mjs';
import { STACK_OPTIONS, nearestRank, runTraffic, sum } from './usage-traffic.mjs';

let stack;
let traffic;
const DAY = 86_400_000;

const OLD_DAY = Math.floor(Date.now() / DAY) * DAY - 3 * DAY;
const ROLLUP_COLS = 'bucket, span, key_id, provider, model, team, feature, outcome, status, cache_status, requests, upstream, fallbacks, prompt_tokens, completion_tokens, total_tokens, cost_micros, saved_micros, unpriced, latency_ms_sum, ttft_ms_sum, ttft_count';
const SEED = `
INSERT INTO requests (request_id, created_at, key_id, endpoint, status, outcome, usage_source, latency_ms, attempt_count)
  VALUES ('req_old_1', ${OLD_DAY + 3_600_000 + 5}, 'key_old', 'chat.completions', 200, 'ok', 'provider', 40, 1);
INSERT INTO attempts (request_id, attempt, provider, model, started_at, latency_ms, outcome)
  VALUES ('req_old_1', 1, 'openai', 'gpt-4o-mini', ${OLD_DAY + 3_600_000 + 5}, 30, 'ok');
INSERT INTO usage_rollup (${ROLLUP_COLS}) VALUES
  (${OLD_DAY + 3_600_000}, 3600000, 'key_old', 'openai', 'gpt-4o-mini', 'core', 'search', 'ok', 200, '', 3, 3, 1, 30, 30, 60, 100, 0, 0, 120, 0, 0),
  (${OLD_DAY + 7_200_000}, 3600000, 'key_old', 'openai', 'gpt-4o-mini', 'core', 'search', 'ok', 200, '', 4, 4, 0, 40, 40, 80, 200, 0, 0, 160, 0, 0);
`;

before(async () => {
  const seedDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-usage-seed-'));
  fs.writeFileSync(path.join(seedDir, 'seed.sql'), SEED);
  stack = await startStack({
    ...STACK_OPTIONS,
    seedSqlFile: path.join(seedDir, 'seed.sql'),
    devArgs: ['--test-scheduled'],
    logLevel: 'log',
    editConfig(g) {
      STACK_OPTIONS.editConfig(g);
      // Every row older than the cron run is rolled up (aggregates only).
      g.retention = { max_age_days: 0 };
      g.alerts = { ops: { weekly_summary: false } };
    },
  });
  traffic = await runTraffic(stack);
});

after(async () => {
  await stack?.stop();
});

async function usage(path, params = {}) {
  const q = new URLSearchParams({ from: String(Date.now() - DAY), to: String(Date.now() + 60_000), ...params });
  const r = await stack.admin('GET', `/admin/usage${path}?${q}`);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

function checkTotals(t, rows, e) {
  assert.equal(t.requests, e.requests);
  assert.equal(t.ok, e.ok);
  assert.equal(t.errors, e.errors);
  assert.equal(t.upstream_error, e.upstream_error);
  assert.equal(t.rejected, e.rejected);
  assert.equal(t.cache_hits, e.cache_hits);
  assert.equal(t.semantic_hits, 0);
  assert.equal(t.fallbacks, e.fallbacks);
  assert.equal(t.upstream, e.upstream);
  assert.equal(t.error_rate, e.errors / e.requests);
  assert.equal(t.cache_hit_rate, e.cache_hits / e.requests);
  assert.equal(t.fallback_rate, e.fallbacks / e.upstream);
  // Sums against the ledger rows.
  assert.equal(t.total_tokens, sum(rows, (r) => r.total_tokens));
  assert.equal(t.prompt_tokens, sum(rows, (r) => r.prompt_tokens));
  assert.equal(t.cost_micros, sum(rows, (r) => r.cost_micros));
  assert.ok(t.cost_micros > 0, 'priced traffic costs something');
  assert.equal(t.saved_micros, sum(rows, (r) => r.saved_micros));
  assert.ok(t.saved_micros > 0, 'the cache hit saved something');
  assert.equal(t.unpriced, rows.filter((r) => r.cost_micros === null).length);
  assert.equal(t.latency_ms_sum, sum(rows, (r) => r.latency_ms));
}

test('totals, percentiles and Server-Timing match the traffic', async () => {
  const { rows, expected } = traffic;
  const u = await usage('');
  assert.equal(u.object, 'usage.totals');
  checkTotals(u.totals, rows, expected);
  const lat = rows.map((r) => r.latency_ms);
  assert.deepEqual(u.latency_ms, { p50: nearestRank(lat, 50), p95: nearestRank(lat, 95), p99: nearestRank(lat, 99) });
  const ttft = rows.filter((r) => r.ttft_ms !== null).map((r) => r.ttft_ms);
  assert.equal(ttft.length, 1, 'one stream');
  assert.deepEqual(u.ttft_ms, { p50: ttft[0], p95: ttft[0], p99: ttft[0] });
  const r = await stack.admin('GET', '/admin/usage');
  assert.match(r.headers.get('server-timing') ?? '', /^gateway;dur=\d+$/);
  // By default (`logging.requests = "errors"`) a structured JSON log line for
  // each failed request, under its request id, and none for the successes
  // (their ledger rows are the record); bodies are not logged unless the
  // operator turns it on.
  const refused = await fetch(`${stack.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: 'Bearer tg-not-a-real-key-000000000000000000000000', 'content-type': 'application/json' },
    body: '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
  });
  assert.equal(refused.status, 401);
  const refusedId = refused.headers.get('x-tollgate-request-id');
  assert.ok(await stack.waitForLog(new RegExp(`"event":"request".*"request_id":"${refusedId}".*"status":401`)), 'JSON log line for the failure');
  for (const row of rows.filter((x) => x.status === 200)) {
    assert.doesNotMatch(stack.logs(), new RegExp(`"event":"request".*"request_id":"${row.request_id}"`), 'no log line for a success');
  }
  assert.doesNotMatch(stack.logs(), /request_body|find thing number/);
  assert.match(r.headers.get('x-tollgate-request-id') ?? '', /^req_[0-9a-f]{32}$/);
});

test('groups by key, team, feature, model and provider', async () => {
  const { rows, expected, keys } = traffic;
  const byKey = await usage('/groups', { by: 'key' });
  assert.deepEqual(Object.fromEntries(byKey.groups.map((g) => [g.key, g.requests])), expected.byKey);
  assert.equal(byKey.groups.find((g) => g.key === keys.alpha.id).name, 'alpha');
  for (const g of byKey.groups) {
    const mine = rows.filter((r) => r.key_id === g.key);
    assert.equal(g.cost_micros, sum(mine, (r) => r.cost_micros), g.key);
    assert.equal(g.total_tokens, sum(mine, (r) => r.total_tokens), g.key);
  }
  // Most expensive first.
  const costs = byKey.groups.map((g) => g.cost_micros);
  assert.deepEqual(costs, [...costs].sort((a, b) => b - a));
  const team = await usage('/groups', { by: 'team' });
  assert.deepEqual(Object.fromEntries(team.groups.map((g) => [g.key, g.requests])), expected.byTeam);
  const feature = await usage('/groups', { by: 'feature' });
  assert.deepEqual(Object.fromEntries(feature.groups.map((g) => [g.key, g.requests])), expected.byFeature);
  const model = await usage('/groups', { by: 'model' });
  const want = {};
  for (const r of rows) {
    const k = r.provider && r.model_used ? `${r.provider}/${r.model_used}` : '';
    want[k] = (want[k] ?? 0) + 1;
  }
  assert.deepEqual(Object.fromEntries(model.groups.map((g) => [g.key, g.requests])), want);
  const groq = model.groups.find((g) => g.key.startsWith('groq/'));
  assert.equal(groq.requests, 2);
  const provider = await usage('/groups', { by: 'provider' });
  const prov = Object.fromEntries(provider.groups.map((g) => [g.key, g.requests]));
  assert.equal(prov.groq, 2);
  assert.equal(prov.demo, 1);
  assert.equal((await usage('/groups', { by: 'user', limit: '2' })).groups.length, 2);
});

test('filters by key, model and feature; the series and top-N add up', async () => {
  const { rows, keys } = traffic;
  const a = await usage('', { key_id: keys.alpha.id });
  assert.equal(a.totals.requests, 5);
  assert.equal(a.totals.cost_micros, sum(rows.filter((r) => r.key_id === keys.alpha.id), (r) => r.cost_micros));
  assert.equal((await usage('', { feature: 'search' })).totals.requests, 5);
  const gpt4o = rows.find((r) => r.model_requested === 'openai/gpt-4o');
  const m = await usage('', { model: `openai/${gpt4o.model_used}` });
  assert.equal(m.totals.requests, 1);
  assert.equal(m.totals.cost_micros, gpt4o.cost_micros);
  assert.equal((await usage('', { key_id: keys.alpha.id, feature: 'summarize' })).totals.requests, 0);
  // An empty range.
  const none = await usage('', { from: '1000', to: '2000' });
  assert.equal(none.totals.requests, 0);
  assert.equal(none.totals.error_rate, null);
  assert.deepEqual(none.latency_ms, { p50: null, p95: null, p99: null });

  const s = await usage('/series', { bucket: 'hour' });
  assert.equal(s.bucket_ms, 3_600_000);
  assert.equal(sum(s.points, (p) => p.requests), 11);
  assert.equal(sum(s.points, (p) => p.cost_micros), sum(rows, (r) => r.cost_micros));
  for (const p of s.points) assert.equal(p.t % 3_600_000, 0);
  const d = await usage('/series', { bucket: 'day' });
  assert.equal(sum(d.points, (p) => p.errors), 2);

  const top = await usage('/top', { limit: '3' });
  const want = rows.filter((r) => r.cost_micros !== null).sort((x, y) => y.cost_micros - x.cost_micros).slice(0, 3);
  assert.deepEqual(top.data.map((r) => r.cost_micros), want.map((r) => r.cost_micros));
  for (const r of top.data) {
    assert.ok(!('messages' in r) && !('body' in r) && !('prompt' in r), 'metadata only');
    assert.equal(typeof r.request_id, 'string');
  }
});

test('bad parameters are 400s with the OpenAI error body; auth fails closed', async () => {
  for (const q of ['by=prompt', 'bucket=minute', 'from=5&to=4', 'limit=0', 'x=1']) {
    const r = await stack.admin('GET', `/admin/usage/groups?${q}`);
    assert.equal(r.status, 400, q);
    assert.equal(r.json.error.type, 'invalid_request_error', q);
  }
  const anon = await fetch(`${stack.url}/admin/usage`);
  assert.equal(anon.status, 401);
  assert.match(anon.headers.get('server-timing') ?? '', /gateway;dur=/);
  const virtual = await fetch(`${stack.url}/admin/usage`, { headers: { authorization: `Bearer ${traffic.keys.alpha.key}` } });
  assert.equal(virtual.status, 401);
  // SQL in a filter is a value, never SQL.
  const inj = await usage('', { key_id: "x' OR '1'='1" });
  assert.equal(inj.totals.requests, 0);
});

test('retention: the cron deletes old ledger rows and compacts old hour aggregates; totals do not change', async () => {
  const week = { from: String(OLD_DAY - DAY), to: String(Date.now() + 60_000) };
  const before = await usage('', week);
  assert.equal(before.totals.requests, 11 + 7, 'the seeded hours count');
  assert.equal(before.totals.cost_micros, sum(traffic.rows, (r) => r.cost_micros) + 300);
  const hoursBefore = await usage('/series', { ...week, bucket: 'hour' });
  assert.deepEqual(hoursBefore.points.filter((p) => p.t < OLD_DAY + DAY).map((p) => [p.t, p.requests]), [[OLD_DAY + 3_600_000, 3], [OLD_DAY + 7_200_000, 4]]);
  const beforeGroups = await usage('/groups', { ...week, by: 'feature' });
  const r = await fetch(`${stack.url}/__scheduled?cron=*/5+*+*+*+*`);
  assert.equal(r.status, 200, await r.text());
  // 11 rows of today's traffic and the seeded one; the two seeded hours.
  assert.ok(await stack.waitForLog(/"event":"cron".*"hour_aggregates_compacted":2.*"ledger_rows_deleted":12/, 10_000), stack.logs().slice(-3000));
  assert.equal((await stack.ledger({ count: 0 })).length, 0, 'ledger rows deleted');
  assert.equal((await stack.admin('GET', '/admin/requests/req_old_1')).status, 404);
  const after = await usage('', week);
  for (const k of ['requests', 'ok', 'errors', 'cost_micros', 'saved_micros', 'total_tokens', 'cache_hits', 'fallbacks', 'upstream', 'unpriced', 'latency_ms_sum', 'ttft_count']) {
    assert.equal(after.totals[k], before.totals[k], k);
  }
  // Percentiles need single rows: none are left.
  assert.equal(after.latency_ms.p50, null);
  // The old day is one day row now (hour series show it at the day's start).
  const hoursAfter = await usage('/series', { ...week, bucket: 'hour' });
  assert.deepEqual(hoursAfter.points.filter((p) => p.t < OLD_DAY + DAY).map((p) => [p.t, p.requests, p.cost_micros]), [[OLD_DAY, 7, 300]]);
  const afterGroups = await usage('/groups', { ...week, by: 'feature' });
  assert.deepEqual(
    Object.fromEntries(afterGroups.groups.map((g) => [g.key, [g.requests, g.cost_micros]])),
    Object.fromEntries(beforeGroups.groups.map((g) => [g.key, [g.requests, g.cost_micros]])),
  );
  assert.equal((await usage('', { key_id: traffic.keys.alpha.id })).totals.requests, 5);
  // A second run finds nothing to do and counts nothing twice.
  await fetch(`${stack.url}/__scheduled?cron=*/5+*+*+*+*`).then((x) => x.text());
  assert.ok(await stack.waitForLog(/"hour_aggregates_compacted":0.*"ledger_rows_deleted":0/, 10_000));
  assert.equal((await usage('', week)).totals.requests, 18);
});
