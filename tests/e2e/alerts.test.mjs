// Budget threshold alerts: a threshold fires once per window, is recorded,
// and reaches the operator's webhook (a local receiver here).

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { startStack } from './harness.mjs';

let stack;
let receiver;
const received = [];

before(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      received.push({ headers: req.headers, json: JSON.parse(body) });
      res.writeHead(204).end();
    });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${receiver.address().port}/hook`;
  stack = await startStack({
    providers: { openai: { apiKey: 'sk-test-alerts-000000000000' } },
    editConfig(g) {
      g.alerts = { webhook_urls: [url], thresholds: [50] };
    },
  });
});

after(async () => {
  await stack?.stop();
  await new Promise((r) => receiver.close(r));
});

test('crossing 50 % of a daily token budget sends exactly one webhook, then the budget refuses', async () => {
  const prompt = Array.from({ length: 300 }, (_, i) => `word${i}`).join(' ');
  const body = JSON.stringify({ model: 'openai/gpt-4o-mini', max_tokens: 5, messages: [{ role: 'user', content: prompt }] });
  // The gateway's worst case: request bytes + 1,024 prompt tokens, plus max_tokens.
  const worst = Buffer.byteLength(body) + 1024 + 5;
  const key = await stack.createKey({ name: 'alerts', limits: { tokens_per_day: 2 * worst } });
  const statuses = [];
  for (let i = 0; i < 40; i++) {
    const r = await fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body,
    });
    await r.text();
    statuses.push(r.status);
    if (r.status !== 200) break;
    // Settles run after the response; let each land before the next admit.
    await new Promise((res) => setTimeout(res, 150));
  }
  assert.ok(statuses.filter((s) => s === 200).length >= 5, statuses.join(','));
  assert.equal(statuses.at(-1), 402, statuses.join(','));
  for (let i = 0; i < 50 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(received.length, 1, JSON.stringify(received));
  const a = received[0].json;
  assert.equal(a.type, 'budget_threshold');
  assert.equal(a.key_id, key.id);
  assert.equal(a.limit, 'tokens_per_day');
  assert.equal(a.threshold_pct, 50);
  assert.equal(a.limit_value, 2 * worst);
  assert.ok(a.spent * 2 >= a.limit_value, `spent ${a.spent} of ${a.limit_value}`);
  assert.match(received[0].headers['content-type'], /application\/json/);
  // More traffic in the same window never re-sends it.
  await fetch(`${stack.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
    body,
  }).then((r) => r.text());
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(received.length, 1);
});
