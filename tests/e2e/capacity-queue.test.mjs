// The saturation queue end to end (issue 12, "Provider capacity").
//
// When every link of a request is at its provider's capacity threshold, the
// request waits in the isolate's queue instead of failing: the room that
// frees goes to the `paid` key's requests first, first come first served
// within a tier; a request still waiting at the queue timeout gets
// `429 capacity_exhausted` with Retry-After, is charged nothing and never
// reaches a provider; a key may have only `queue_max_per_key` requests
// waiting; with `queue_timeout_ms = 0` nothing waits (today's behaviour).
//
// Capacity comes from the mock providers' rate-limit headers (OpenAI's
// `x-ratelimit-*-requests`, merged into normal answers): `limit 1,
// remaining 0, reset 600ms` means "this model takes one request per 600 ms",
// so the queue drains one request at a time, in the order it chose.
// Each test uses its own model names: readings are kept per provider/model.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { startStack } from './harness.mjs';

const QUEUE_TIMEOUT_MS = 6000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Rate-limit headers saying the model has no request left until `reset`. */
const full = (reset) => ({ 'x-ratelimit-limit-requests': '1', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': reset });

function routes(gateway, names) {
  gateway.routes = { ...(gateway.routes ?? {}) };
  for (const n of names) gateway.routes[n] = { strategy: 'fallback', targets: [{ model: `groq/${n}` }, { model: `openai/${n}` }] };
}

describe('saturation queue', () => {
  let stack;
  const client = (key) => new OpenAI({ apiKey: key.key, baseURL: `${stack.url}/v1`, maxRetries: 0 });
  const ask = (c, model, content) =>
    c.chat.completions.create({ model, messages: [{ role: 'user', content }], max_tokens: 5 }).withResponse();
  /** Saturates both links of route `model`: groq for `groqReset`, openai (answering every request the same) for `openaiReset`. */
  async function saturate(c, model, { groqReset = '30s', openaiReset = '600ms' } = {}) {
    stack.mocks.groq.enqueue({ match: { model }, headers: full(groqReset), times: Infinity });
    stack.mocks.openai.enqueue({ match: { model }, headers: full(openaiReset), times: Infinity });
    await ask(c, model, 'warm groq'); // groq is first and free: it answers, and is now full
    const second = await ask(c, model, 'warm openai'); // groq full → openai first; now both are
    assert.match(second.response.headers.get('x-tollgate-route-decision'), new RegExp(`capacity:saturated groq/${model}=100%`));
  }
  const seen = (mock, model) => mock.requests().filter((r) => r.json.model === model).map((r) => r.json.messages[0].content);

  before(async () => {
    stack = await startStack({
      providers: {
        openai: { apiKey: 'sk-test-openai-queue-0000000000000000' },
        groq: { apiKey: 'gsk-test-groq-queue-00000000000000000' },
      },
      editConfig(gateway) {
        gateway.resilience = { ...gateway.resilience, queue_timeout_ms: QUEUE_TIMEOUT_MS, queue_max_per_key: 3 };
        routes(gateway, ['q1', 'q2', 'q3']);
        gateway.pricing = {
          ...(gateway.pricing ?? {}),
          overrides: { ...(gateway.pricing?.overrides ?? {}), 'groq/q2': { input: 1, output: 1 }, 'openai/q2': { input: 1, output: 1 } },
        };
      },
    });
  });

  after(async () => {
    await stack?.stop();
  });

  test('keys have a tier: standard by default, set on create and by PATCH, validated', async () => {
    const plain = await stack.createKey({ name: 'plain' });
    assert.equal(plain.priority, 'standard');
    const paid = await stack.createKey({ name: 'paid', priority: 'paid' });
    assert.equal(paid.priority, 'paid');
    const patched = await stack.admin('PATCH', `/admin/keys/${plain.id}`, { priority: 'batch' });
    assert.equal(patched.status, 200, patched.text);
    assert.equal(patched.json.priority, 'batch');
    const bad = await stack.admin('PATCH', `/admin/keys/${plain.id}`, { priority: 'vip' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'priority');
    assert.equal((await stack.admin('GET', `/admin/keys/${plain.id}`)).json.priority, 'batch', 'a rejected PATCH changes nothing');
    assert.equal((await stack.admin('POST', '/admin/keys', { name: 'x', priority: 'gold' })).status, 400);
  });

  test('both links full: queued requests reach the provider paid first, in arrival order within a tier, and all complete', async () => {
    const standard = client(await stack.createKey({ name: 'std' }));
    const paid = client(await stack.createKey({ name: 'paid-1', priority: 'paid' }));
    await saturate(standard, 'q1');
    // Arrival order: s1 s2 p1 s3 p2 p3 (25 ms apart), all while both links are full.
    const plan = [
      [standard, 's1'],
      [standard, 's2'],
      [paid, 'p1'],
      [standard, 's3'],
      [paid, 'p2'],
      [paid, 'p3'],
    ];
    const started = Date.now();
    const pending = [];
    for (const [c, name] of plan) {
      pending.push(ask(c, 'q1', name).then((r) => ({ name, ...r, at: Date.now() - started })));
      await sleep(25);
    }
    const done = await Promise.all(pending);
    assert.deepEqual(seen(stack.mocks.openai, 'q1'), ['warm openai', 'p1', 'p2', 'p3', 's1', 's2', 's3']);
    assert.deepEqual(seen(stack.mocks.groq, 'q1'), ['warm groq'], 'groq stayed full');
    for (const d of done) {
      assert.match(d.data.choices[0].message.content, /mock\(openai\)/);
      const waited = Number(d.response.headers.get('x-tollgate-queue-ms'));
      assert.ok(waited > 0, `${d.name} waited`);
      const decision = d.response.headers.get('x-tollgate-route-decision');
      assert.match(decision, new RegExp(`queue:admitted waited=${waited}ms priority=${d.name[0] === 'p' ? 'paid' : 'standard'}$`), decision);
    }
    // One request per 600 ms window: the last one waited several windows.
    const last = done.find((d) => d.name === 's3');
    assert.ok(Number(last.response.headers.get('x-tollgate-queue-ms')) >= 5 * 500, 'waited for its turn');
    const id = done.find((d) => d.name === 'p1').response.headers.get('x-tollgate-request-id');
    let row;
    for (let i = 0; i < 50 && !(row?.status === 200); i++) {
      row = await stack.admin('GET', `/admin/requests/${id}`);
      await sleep(100);
    }
    assert.equal(row.json.queue_ms, Number(done.find((d) => d.name === 'p1').response.headers.get('x-tollgate-queue-ms')), 'the ledger records the wait');
  });

  test('still waiting at the queue timeout → 429 capacity_exhausted with Retry-After; no upstream request, nothing charged, reservation released', async () => {
    const key = await stack.createKey({ name: 'deadline', limits: { micro_usd_per_day: 1_000_000 } });
    const c = client(key);
    await saturate(c, 'q2', { groqReset: '30s', openaiReset: '30s' });
    const before = await stack.admin('GET', `/admin/keys/${key.id}/budget`);
    const spentBefore = before.json.state.day.spent_micros;
    stack.mocks.openai.reset();
    stack.mocks.groq.reset();
    const t0 = Date.now();
    const waiting = fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'q2', messages: [{ role: 'user', content: 'never sent' }], max_tokens: 5 }),
    });
    // While it waits, its worst-case reservation is held (admission came first).
    await sleep(1000);
    const mid = await stack.admin('GET', `/admin/keys/${key.id}/budget`);
    assert.equal(mid.json.state.open_reservations.length, 1, JSON.stringify(mid.json.state));
    const r = await waiting;
    const elapsed = Date.now() - t0;
    const body = await r.json();
    assert.equal(r.status, 429);
    assert.equal(body.error.code, 'capacity_exhausted');
    assert.equal(body.error.type, 'rate_limit_error');
    assert.ok(elapsed >= QUEUE_TIMEOUT_MS - 100 && elapsed < QUEUE_TIMEOUT_MS + 3000, `waited ${elapsed} ms`);
    const retryAfter = Number(r.headers.get('retry-after'));
    // The earliest link frees ~30 s after the warm-up, ~24 s from now.
    assert.ok(retryAfter >= 20 && retryAfter <= 30, `Retry-After ${retryAfter}`);
    assert.ok(Number(r.headers.get('x-tollgate-queue-ms')) >= QUEUE_TIMEOUT_MS - 100);
    assert.match(r.headers.get('x-tollgate-route-decision'), /queue:refused waited=\d+ms priority=standard$/);
    assert.deepEqual([...seen(stack.mocks.openai, 'q2'), ...seen(stack.mocks.groq, 'q2')], [], 'no upstream request');
    const [row] = await stack.ledger({ keyId: key.id, count: 3 });
    assert.equal(row.status, 429);
    assert.equal(row.error_code, 'capacity_exhausted');
    assert.equal(row.cost_micros, 0);
    assert.ok(row.queue_ms >= QUEUE_TIMEOUT_MS - 100, `queue_ms ${row.queue_ms}`);
    let state;
    for (let i = 0; i < 50; i++) {
      state = (await stack.admin('GET', `/admin/keys/${key.id}/budget`)).json.state;
      if (state.open_reservations.length === 0) break;
      await sleep(100);
    }
    assert.equal(state.open_reservations.length, 0, 'reservation released');
    assert.equal(state.day.spent_micros, spentBefore, 'nothing charged');
  });

  test('a key over its waiting bound gets 429 at once; the others wait and complete', async () => {
    const key = await stack.createKey({ name: 'greedy' });
    const c = client(key);
    await saturate(c, 'q3', { groqReset: '30s', openaiReset: '400ms' });
    const pending = [];
    for (const n of ['w1', 'w2', 'w3']) {
      pending.push(ask(c, 'q3', n));
      await sleep(25);
    }
    const t0 = Date.now();
    const over = await fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'q3', messages: [{ role: 'user', content: 'w4' }], max_tokens: 5 }),
    });
    const err = (await over.json()).error;
    assert.equal(over.status, 429);
    assert.ok(Date.now() - t0 < 300, `refused at once, not after waiting (${Date.now() - t0} ms)`);
    assert.equal(err.code, 'capacity_exhausted');
    assert.match(err.message, /already has 3 requests waiting/);
    assert.ok(Number(over.headers.get('retry-after')) >= 1);
    assert.equal(over.headers.get('x-tollgate-queue-ms'), '0');
    const done = await Promise.all(pending);
    assert.equal(done.length, 3);
    assert.deepEqual(seen(stack.mocks.openai, 'q3'), ['warm openai', 'w1', 'w2', 'w3']);
  });
});

describe('saturation queue off (queue_timeout_ms = 0)', () => {
  let stack;
  before(async () => {
    stack = await startStack({
      providers: {
        openai: { apiKey: 'sk-test-openai-queue-0000000000000000' },
        groq: { apiKey: 'gsk-test-groq-queue-00000000000000000' },
      },
      editConfig(gateway) {
        gateway.resilience = { ...gateway.resilience, queue_timeout_ms: 0 };
        routes(gateway, ['q4']);
      },
    });
  });
  after(async () => {
    await stack?.stop();
  });

  test('every link full → the request goes at once, in route order, as before the queue', async () => {
    const key = await stack.createKey({ name: 'no-queue', priority: 'paid' });
    const c = new OpenAI({ apiKey: key.key, baseURL: `${stack.url}/v1`, maxRetries: 0 });
    stack.mocks.groq.enqueue({ match: { model: 'q4' }, headers: full('30s'), times: Infinity });
    stack.mocks.openai.enqueue({ match: { model: 'q4' }, headers: full('30s'), times: Infinity });
    const ask = (content) => c.chat.completions.create({ model: 'q4', messages: [{ role: 'user', content }], max_tokens: 5 }).withResponse();
    await ask('warm groq');
    await ask('warm openai');
    const t0 = Date.now();
    const { response } = await ask('now');
    assert.ok(Date.now() - t0 < 1000, 'did not wait');
    assert.equal(response.headers.get('x-tollgate-queue-ms'), null);
    assert.equal(response.headers.get('x-tollgate-route-decision'), null, 'nothing moved: every link is full');
    assert.deepEqual(stack.mocks.groq.requests().map((r) => r.json.messages[0].content), ['warm groq', 'now']);
  });
});
