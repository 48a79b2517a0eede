// Operational alerts from the cron trigger (issue 8): the built Worker under
// `wrangler dev --test-scheduled`, cron runs fired with GET /__scheduled, and
// a local webhook receiver. Crossing each configured threshold — daily spend,
// error rate, p99 latency, fallback rate — sends exactly one webhook per
// window; traffic under the thresholds sends none; the weekly summary goes
// out once on its day. Every alert is recorded in D1 before it is sent, so
// further runs in the same window send nothing.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { startStack } from './harness.mjs';

const ROUTE = 'ops-fb';
const DAYS = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'];
let stack;
let receiver;
let key;
const received = [];

before(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      received.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${receiver.address().port}/ops`;
  stack = await startStack({
    providers: {
      openai: { apiKey: 'sk-test-openai-ops-0000000000000000' },
      groq: { apiKey: 'gsk-test-groq-ops-00000000000000000' },
    },
    devArgs: ['--test-scheduled'],
    logLevel: 'log',
    editConfig(g) {
      g.routes = { [ROUTE]: { strategy: 'fallback', targets: [{ model: 'openai/gpt-4o-mini' }, { model: 'groq/llama-3.1-8b-instant' }] } };
      g.alerts = {
        webhook_urls: [url],
        ops: {
          daily_spend_usd: 0.000001,
          error_rate_pct: 5,
          p99_latency_ms: 300,
          fallback_rate_pct: 20,
          window_minutes: 60,
          min_requests: 5,
          weekly_summary: true,
          weekly_summary_day: DAYS[new Date().getUTCDay()],
        },
      };
    },
  });
  key = await stack.createKey({ name: 'ops-key' });
});

after(async () => {
  await stack?.stop();
  await new Promise((r) => receiver.close(r));
});

async function chat(model, extra = {}) {
  const r = await fetch(`${stack.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'how are things' }], ...extra }),
  });
  await r.text();
  return r.status;
}

let runs = 0;
/** Fires one cron run and waits until its summary line is logged. */
async function cron() {
  runs += 1;
  const r = await fetch(`${stack.url}/__scheduled?cron=*/5+*+*+*+*`);
  assert.equal(r.status, 200);
  await r.text();
  const logged = () => (stack.logs().match(/"event":"cron"/g) ?? []).length;
  assert.ok(await stack.waitForLog({ test: () => logged() >= runs }, 10_000), stack.logs().slice(-2000));
  // Webhook POSTs happen before the summary line; let the receiver catch up.
  await new Promise((r) => setTimeout(r, 300));
}

const ops = () => received.filter((a) => a.type === 'ops_alert');

test('traffic under every threshold sends no alert; the weekly summary goes out once', async () => {
  // The demo model is unpriced (spend 0), fast, never falls back, never fails.
  for (let i = 0; i < 5; i++) assert.equal(await chat('demo'), 200);
  await stack.ledger({ count: 5 });
  await cron();
  assert.deepEqual(ops(), []);
  const weekly = received.filter((a) => a.type === 'weekly_summary');
  assert.equal(weekly.length, 1, JSON.stringify(received));
  const w = weekly[0];
  assert.equal(w.requests, 5);
  assert.equal(w.errors.total, 0);
  assert.equal(w.unpriced_requests, 5);
  assert.equal(w.top_keys[0].name, `ops-key (${key.id})`);
  assert.equal(w.top_keys[0].requests, 5);
  assert.equal(w.top_models[0].name, 'demo/echo');
  assert.equal(w.to_ms - w.from_ms, 7 * 86_400_000 + 1);
  assert.ok('saved_usd' in w.cache && 'hit_rate' in w.cache);
  await cron();
  assert.equal(received.length, 1, 'the weekly summary is sent once');
});

test('crossing each threshold sends exactly one webhook per window', async () => {
  // 3 priced answers, one of them slow (p99 > 300 ms) …
  stack.mocks.openai.enqueue({ match: { model: 'gpt-4o-mini' }, delayHeadersMs: 450 });
  for (let i = 0; i < 3; i++) assert.equal(await chat('openai/gpt-4o-mini'), 200);
  // … 3 fallbacks (openai 503 → groq): 3 of 12 upstream requests = 25 % > 20 % …
  stack.mocks.openai.enqueue({ match: { model: 'gpt-4o-mini' }, status: 503, times: 3 });
  for (let i = 0; i < 3; i++) assert.equal(await chat(ROUTE), 200);
  // … and one upstream error: 1 of 12 = 8.3 % > 5 %.
  stack.mocks.openai.enqueue({ match: { model: 'gpt-4o-mini' }, status: 500 });
  assert.ok((await chat('openai/gpt-4o-mini')) >= 500);
  await stack.ledger({ count: 12 });
  const before = received.length;
  await cron();
  const fired = received.slice(before);
  assert.deepEqual(fired.map((a) => a.condition).sort(), ['daily_spend', 'error_rate', 'fallback_rate', 'p99_latency'], JSON.stringify(fired));
  const by = Object.fromEntries(fired.map((a) => [a.condition, a]));
  assert.equal(by.error_rate.requests, 12);
  assert.ok(Math.abs(by.error_rate.value - 100 / 12) < 1e-9, String(by.error_rate.value));
  assert.equal(by.error_rate.threshold, 5);
  assert.equal(by.fallback_rate.value, 25);
  assert.ok(by.p99_latency.value >= 450, String(by.p99_latency.value));
  assert.equal(by.p99_latency.threshold, 300);
  assert.ok(by.daily_spend.value > 0.000001);
  assert.equal(by.daily_spend.window_start_ms % 86_400_000, 0);
  assert.equal(by.error_rate.window_start_ms % 3_600_000, 0);
  for (const a of fired) assert.equal(a.type, 'ops_alert');
  // More runs and more failures in the same window send nothing more.
  stack.mocks.openai.enqueue({ match: { model: 'gpt-4o-mini' }, status: 500 });
  await chat('openai/gpt-4o-mini');
  await cron();
  await cron();
  assert.equal(received.length, before + 4, JSON.stringify(received.slice(before + 4)));
});
