// Budgets, rate limits and cost end to end (issue 7; anchors B1–B6): the built
// Worker under `wrangler dev` with its real `KeyBudget` Durable Object and
// local D1, in front of the mock OpenAI provider (faults chosen per request).
//
// What is shown, each on its own key (one Durable Object per key):
//  - B1: a lifetime budget with room for 3 worst cases → of 50 concurrent slow
//    requests at most 3 are admitted, the rest 429/402; committed ≤ budget.
//  - B2: upstream 500, connection reset and client abort before the first
//    byte leave no reservation open and charge what the ledger says (0);
//    1,000 failures in a row do not lock the key out.
//  - B6: RPM 10 → the 11th is 429 `rate_limit_exceeded` with Retry-After and
//    passes after the window (checked at the end of the file, so the minute
//    runs while the other sections do); RPM and TPM are independent.
//  - B3: streamed and non-streamed requests with the same usage cost the
//    same; a stream without usage is charged its reservation, flagged.
//  - B5: 500, 500 (link retries: 1) then 200 from link 2 → one request row,
//    three attempt rows, spend = what the answering attempt cost.
//  - cache hits count toward RPM, not spend; 402 on a daily budget with its
//    reset; `limits: null` lifts it; `model_unpriced`; keys without limits.
//  - project (team) budgets: a parent object over several keys; refusals
//    name the project and release the key's own reservation.
//  (A Durable Object reset between reserve and settle: budgets-reset.test.mjs.)
//
// Worst cases are computed here the way `proxy.rs` bounds them (prompt ≤ body
// bytes + 1024 tokens, output = max_tokens, every prompt token at the highest
// prompt rate) from data/prices.json, so every request sets `max_tokens`.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { ROOT, readSse, startStack } from './harness.mjs';

const UPSTREAM_KEY = 'sk-test-openai-budgets-000000000000';
const CHAT = '/v1/chat/completions';
const MODEL = 'openai/gpt-4o-mini';
const HELLO = [{ role: 'user', content: 'one two three four five six seven' }];
const PROMPT_TEMPLATE_ALLOWANCE_TOKENS = 1024; // src/pricing.rs
/** Route for B5: link 1 retried once, then link 2 (same price family, another model id). */
const FALLBACK_ROUTE = 'budget-fallback';
const LINK2_MODEL = 'gpt-4o-mini-2024-07-18';

// gpt-4o-mini's price, micro-USD per 1M tokens, from the table the gateway embeds.
const PRICE = (() => {
  const table = JSON.parse(fs.readFileSync(path.join(ROOT, 'data', 'prices.json'), 'utf8'));
  const p = table.providers.openai.models['gpt-4o-mini'];
  const micros = (usd) => Math.round(usd * 1e6);
  const input = micros(p.input);
  const cachedInput = micros(p.cached_input ?? p.input);
  return {
    input,
    output: micros(p.output),
    cachedInput,
    // The highest rate a prompt token can be billed at (cache writes default to input).
    maxPrompt: Math.max(input, cachedInput, micros(p.cache_write ?? p.input), micros(p.cache_write_1h ?? p.input)),
  };
})();

/** proxy.rs `worst_case` for one chat body sent as `text`: micro-USD and tokens. */
function worstCase(text, maxTokens) {
  const prompt = Buffer.byteLength(text) + PROMPT_TEMPLATE_ALLOWANCE_TOKENS;
  return {
    micros: Math.ceil((prompt * PRICE.maxPrompt + maxTokens * PRICE.output) / 1e6),
    tokens: prompt + maxTokens,
  };
}

/** pricing.rs `cost_micros` for a ledger row's usage. */
function costOfRow(row) {
  const cached = Math.min(row.cached_prompt_tokens ?? 0, row.prompt_tokens);
  const output = Math.max(row.completion_tokens, row.total_tokens - row.prompt_tokens);
  return Math.ceil(((row.prompt_tokens - cached) * PRICE.input + cached * PRICE.cachedInput + output * PRICE.output) / 1e6);
}

/** budget.rs `fmt_usd`: `$0.03`, `$0.001234`. */
function fmtUsd(micros) {
  const frac = String(micros % 1_000_000).padStart(6, '0');
  const trimmed = frac.replace(/0+$/, '');
  return `$${Math.floor(micros / 1_000_000)}.${trimmed.length < 2 ? frac.slice(0, 2) : trimmed}`;
}

let stack;
let mock;

before(async () => {
  stack = await startStack({
    providers: { openai: { apiKey: UPSTREAM_KEY } },
    editConfig(gateway) {
      gateway.routes = {
        ...(gateway.routes ?? {}),
        [FALLBACK_ROUTE]: {
          strategy: 'fallback',
          targets: [{ model: MODEL, retries: 1 }, { model: `openai/${LINK2_MODEL}` }],
        },
      };
      // Keep the breaker off (the harness default) and the B5 backoff short.
      gateway.resilience = { ...(gateway.resilience ?? {}), circuit_failures: 0, backoff_base_ms: 50, backoff_max_ms: 100 };
    },
  });
  mock = stack.mocks.openai;
});

after(async () => {
  await stack?.stop();
});

// ------------------------------------------------------------------ helpers

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function clientFor(apiKey) {
  return new OpenAI({ apiKey, baseURL: `${stack.url}/v1`, maxRetries: 0, timeout: 15_000 });
}

/** A chat body as the exact JSON text sent (so its byte length, hence its worst case, is known). */
function chatText({ model = MODEL, messages = HELLO, maxTokens = 50, ...rest } = {}) {
  return JSON.stringify({ model, messages, max_tokens: maxTokens, ...rest });
}

/** Raw POST to the gateway. */
async function call(apiKey, text, { path: p = CHAT, headers = {}, signal } = {}) {
  const r = await fetch(stack.url + p, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}`, ...headers },
    body: text,
    signal,
  });
  const body = await r.text();
  let json = null;
  try {
    json = JSON.parse(body);
  } catch {}
  return { status: r.status, headers: r.headers, text: body, json, requestId: r.headers.get('x-tollgate-request-id') };
}

/** Asserts OpenAI's error body, exactly {"error":{"message","type","param","code"}}. */
function assertError(res, status, { code, type, param } = {}, context = '') {
  const where = `${context}: ${res.status} ${res.text}`;
  assert.equal(res.status, status, where);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, where);
  assert.deepEqual(Object.keys(res.json ?? {}), ['error'], where);
  const e = res.json.error;
  assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'param', 'type'], where);
  assert.ok(typeof e.message === 'string' && e.message.length > 0, where);
  if (code !== undefined) assert.equal(e.code, code, where);
  if (type !== undefined) assert.equal(e.type, type, where);
  if (param !== undefined) assert.equal(e.param, param, where);
  return e;
}

async function newKey(name, limits) {
  const key = await stack.createKey(limits === undefined ? { name } : { name, limits });
  return key;
}

/** `GET /admin/keys/{id}/budget`. */
async function budget(keyId) {
  const r = await stack.admin('GET', `/admin/keys/${keyId}/budget`);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

/** The live state; polls until `pred(state)` holds or the time is up (then returns the last one). */
async function stateWhen(keyId, pred = () => true, timeoutMs = 5000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const b = await budget(keyId);
    assert.ok(b.state, `budget state for ${keyId}: ${JSON.stringify(b)}`);
    if (pred(b.state) || Date.now() > until) return b.state;
    await sleep(100);
  }
}

const noneOpen = (s) => s.open_reservations.length === 0 && s.lifetime.reserved_micros === 0;

/** Ledger row (with attempts) of one request, waiting for the post-response write (which follows the settle). */
async function ledgerRow(requestId, timeoutMs = 10_000) {
  assert.match(requestId ?? '', /^req_[0-9a-f]{32}$/, 'request id header');
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await stack.admin('GET', `/admin/requests/${requestId}`);
    if (r.status === 200) return r.json;
    assert.equal(r.status, 404, r.text);
    if (Date.now() > until) assert.fail(`no ledger row for ${requestId}`);
    await sleep(100);
  }
}

/** All ledger rows of a key, waiting until there are `count`. */
function keyRows(keyId, count) {
  return stack.ledger({ keyId, count });
}

const sum = (xs) => xs.reduce((a, b) => a + b, 0);

// ------------------------------------------------ B6 (first half): RPM 10

// Started first so that its minute passes while the other sections run; the
// last test of the file waits out the rest of Retry-After and tries again.
const rpm = { key: null, retryAtMs: null };

describe('RPM (B6)', () => {
  test('RPM 10 (and no TPM): 10 requests pass however many tokens they reserve, the 11th → 429 rate_limit_exceeded with Retry-After', async () => {
    rpm.key = await newKey('budget-rpm', { rpm: 10 });
    // 200k output tokens each: a key with only an RPM limit counts requests, not tokens.
    const text = chatText({ maxTokens: 200_000 });
    for (let i = 1; i <= 10; i++) {
      const res = await call(rpm.key.key, text);
      assert.equal(res.status, 200, `request ${i}: ${res.text}`);
    }
    const res = await call(rpm.key.key, text);
    const e = assertError(res, 429, { code: 'rate_limit_exceeded', type: 'rate_limit_error', param: null }, '11th request');
    assert.match(e.message, /10 requests per minute/, 'the message names the limit');
    const ra = Number(res.headers.get('retry-after'));
    assert.ok(Number.isInteger(ra) && ra >= 1 && ra <= 61, `retry-after in 1..61 s: ${res.headers.get('retry-after')}`);
    assert.match(e.message, new RegExp(`Retry in ${ra} s`), 'the message says when');
    rpm.retryAtMs = Date.now() + ra * 1000;

    // Rejected requests consume nothing: the window still holds 10.
    const again = await call(rpm.key.key, text);
    assertError(again, 429, { code: 'rate_limit_exceeded' }, '12th request');
    const s = await stateWhen(rpm.key.id, noneOpen);
    assert.equal(s.requests_last_minute, 10, JSON.stringify(s));
    assert.equal(s.rpm, 10);
    assert.deepEqual(s.open_reservations, []);
  });

  test('TPM alone rejects on tokens (429 naming tokens per minute) under a generous RPM, and the rejection consumes no RPM', async () => {
    const text = chatText({ maxTokens: 100 });
    const w = worstCase(text, 100);
    // Room for one worst case; after it settles its real tokens (> 5) stay in the minute.
    const key = await newKey('budget-tpm', { rpm: 1000, tpm: w.tokens + 5 });
    const first = await call(key.key, text);
    assert.equal(first.status, 200, first.text);
    const row = await ledgerRow(first.requestId);
    assert.ok(row.total_tokens > 5, `real tokens: ${row.total_tokens}`);

    const second = await call(key.key, text);
    const e = assertError(second, 429, { code: 'rate_limit_exceeded', type: 'rate_limit_error' }, 'second request');
    assert.match(e.message, new RegExp(`limit of ${w.tokens + 5} tokens per minute`), e.message);
    assert.match(e.message, new RegExp(`could use up to ${w.tokens}\\b`), `the worst case is exact: ${e.message}`);
    const ra = Number(second.headers.get('retry-after'));
    assert.ok(ra >= 1 && ra <= 61, `retry-after: ${second.headers.get('retry-after')}`);

    const s = await stateWhen(key.id, noneOpen);
    assert.equal(s.requests_last_minute, 1, `only the admitted request counts for RPM: ${JSON.stringify(s)}`);
    assert.equal(s.tokens_last_minute, row.total_tokens, 'after the settle TPM holds the real tokens, not the reservation');
  });
});

// ------------------------------------------------------- B1: concurrency

describe('B1: 50 concurrent requests against room for 3 worst cases', () => {
  test(
    'at most 3 admitted, the rest 429 held/402, committed ≤ budget, no reservation left, ≤ 3 upstream requests',
    async () => {
      const key = await newKey('budget-b1', { micro_usd_lifetime: 1_000_000 });
      // Some real spend first (the "$0.90 already spent").
      const warm = await call(key.key, chatText());
      assert.equal(warm.status, 200, warm.text);
      const warmRow = await ledgerRow(warm.requestId);
      const spent = (await stateWhen(key.id, noneOpen)).lifetime.spent_micros;
      assert.equal(spent, warmRow.cost_micros, 'spend so far = the ledger');
      assert.ok(spent > 0);

      const text = chatText({ maxTokens: 50_000 });
      const w = worstCase(text, 50_000); // ≈ $0.03
      const limit = spent + Math.floor(3.5 * w.micros);
      const patched = await stack.admin('PATCH', `/admin/keys/${key.id}`, { limits: { micro_usd_lifetime: limit } });
      assert.equal(patched.status, 200, patched.text);

      mock.reset();
      // Slow upstream: every admitted request holds its reservation ~3 s.
      mock.enqueue({ delayHeadersMs: 3000, times: -1 });
      try {
        let done = 0;
        const pending = Array.from({ length: 50 }, () =>
          call(key.key, text).then((r) => {
            done++;
            return r;
          }),
        );
        // While the admitted ones are still upstream: their reservations are the exact worst case.
        const until = Date.now() + 2500;
        while (done < 47 && Date.now() < until) await sleep(20);
        if (done >= 47) {
          const mid = await budget(key.id);
          assert.ok(mid.state.open_reservations.length <= 3, `open: ${mid.state.open_reservations.length}`);
          for (const r of mid.state.open_reservations) assert.equal(r.micros, w.micros, 'reservation = worst case');
          assert.ok(mid.state.lifetime.spent_micros + mid.state.lifetime.reserved_micros <= limit, JSON.stringify(mid.state.lifetime));
        }
        const results = await Promise.all(pending);

        const ok = results.filter((r) => r.status === 200);
        const rejected = results.filter((r) => r.status !== 200);
        assert.ok(ok.length <= 3, `admitted ${ok.length} (statuses ${results.map((r) => r.status).join(',')})`);
        assert.equal(ok.length, 3, 'with the upstream this slow, exactly the 3 that fit are admitted');
        for (const r of rejected) {
          if (r.status === 429) {
            const e = assertError(r, 429, { code: 'budget_held_by_requests_in_flight', type: 'rate_limit_error' }, 'held');
            assert.match(e.message, /lifetime spend budget/, e.message);
            const ra = Number(r.headers.get('retry-after'));
            assert.ok(ra >= 1 && ra <= 60, `retry-after ${r.headers.get('retry-after')}`);
          } else {
            assertError(r, 402, { code: 'budget_exceeded', type: 'insufficient_quota' }, 'exhausted');
          }
        }
        assert.ok(mock.requests().length <= 3, `upstream saw ${mock.requests().length} requests`);

        // After they finish: committed ≤ limit, nothing reserved, spend = the ledger.
        const rows = await Promise.all(ok.map((r) => ledgerRow(r.requestId)));
        const s = await stateWhen(key.id, noneOpen);
        assert.deepEqual(s.open_reservations, [], 'no reservation left open');
        assert.equal(s.lifetime.reserved_micros, 0);
        assert.ok(s.lifetime.spent_micros <= limit, `committed ${s.lifetime.spent_micros} ≤ ${limit}`);
        assert.equal(s.lifetime.spent_micros, spent + sum(rows.map((r) => r.cost_micros)), 'committed = Σ ledger cost_micros');
        const all = await keyRows(key.id, 51);
        assert.equal(all.length, 51, 'one ledger row per request');
        assert.equal(sum(all.map((r) => r.cost_micros ?? 0)), s.lifetime.spent_micros, 'rejected rows cost nothing');
      } finally {
        mock.reset();
      }
    },
  );
});

// ------------------------------------------------------------ B2: leaks

describe('B2: failures release their reservation; spend = the ledger', () => {
  let key;
  let w;
  const text = chatText({ maxTokens: 1000 });

  before(async () => {
    w = worstCase(text, 1000);
    // Room for 20 worst cases: 20 leaked reservations would lock the key out.
    key = await newKey('budget-b2', { micro_usd_lifetime: 20 * w.micros });
  });

  async function assertReleased(context) {
    const s = await stateWhen(key.id, noneOpen);
    assert.deepEqual(s.open_reservations, [], `${context}: no reservation open`);
    assert.equal(s.lifetime.reserved_micros, 0, context);
    const rows = await keyRows(key.id, 1);
    assert.equal(s.lifetime.spent_micros, sum(rows.map((r) => r.cost_micros ?? 0)), `${context}: spend = Σ ledger cost_micros`);
    return s;
  }

  test('upstream 500 → 502, reservation released, cost 0', async () => {
    mock.reset();
    mock.enqueue({ status: 500 });
    const res = await call(key.key, text);
    assert.equal(res.status, 502, res.text);
    const row = await ledgerRow(res.requestId);
    assert.equal(row.cost_micros, 0);
    const s = await assertReleased('after a 500');
    assert.equal(s.lifetime.spent_micros, 0);
  });

  test('connection reset before the first byte → 502, reservation released, cost 0', async () => {
    mock.reset();
    mock.enqueue({ resetAfterBytes: 0 });
    const res = await call(key.key, text);
    assert.equal(res.status, 502, res.text);
    const row = await ledgerRow(res.requestId);
    assert.equal(row.cost_micros, 0);
    assert.equal(mock.requests()[0]?.response.outcome, 'reset');
    const s = await assertReleased('after a reset');
    assert.equal(s.lifetime.spent_micros, 0);
  });

  test(
    'client abort before the first byte → reservation released soon after, one ledger row, spend = its cost',
    async () => {
      mock.reset();
      mock.enqueue({ delayHeadersMs: 1500 });
      const before = await keyRows(key.id, 2);
      const controller = new AbortController();
      const t = setTimeout(() => controller.abort(), 300);
      await assert.rejects(call(key.key, text, { signal: controller.signal }), /abort/i);
      clearTimeout(t);
      // Nothing holds the budget once the upstream call is over (1.5 s), let
      // alone until the reservation's TTL (the deadline + 60 s).
      const s = await stateWhen(key.id, noneOpen, 6000);
      assert.deepEqual(s.open_reservations, [], 'the aborted request left no open reservation');
      const rows = await keyRows(key.id, before.length + 1);
      assert.equal(rows.length, before.length + 1, 'the aborted request has its ledger row (I1)');
      assert.equal(s.lifetime.spent_micros, sum(rows.map((r) => r.cost_micros ?? 0)), 'spend = Σ ledger cost_micros');
    },
  );

  test('1,000 upstream 500s in a row do not lock the key out: the next good request is admitted', async () => {
    mock.reset();
    const spentBefore = (await stateWhen(key.id, noneOpen)).lifetime.spent_micros;
    mock.enqueue({ status: 500, times: 1000 });
    const statuses = [];
    // 1,000 leaked reservations would hit both the budget (room for 20) and
    // the per-key cap on requests in flight (1,000).
    // Eight at a time (the budget has room for 20 in flight) keeps this quick.
    for (let i = 0; i < 1000; i += 8) {
      const batch = await Promise.all(Array.from({ length: 8 }, () => call(key.key, text)));
      statuses.push(...batch.map((r) => r.status));
    }
    assert.deepEqual([...new Set(statuses)], [502], `every failure is an upstream error, never 402/429: ${statuses.join(',')}`);
    assert.equal(mock.requests().length, 1000);
    const good = await call(key.key, text);
    assert.equal(good.status, 200, good.text);
    const row = await ledgerRow(good.requestId);
    assert.ok(row.cost_micros > 0);
    await sleep(300); // the last failures' ledger writes
    const s = await stateWhen(key.id, noneOpen);
    assert.deepEqual(s.open_reservations, [], 'no reservation open');
    assert.equal(s.lifetime.reserved_micros, 0);
    assert.equal(s.expired_unsettled, 0, 'every failure was settled, none left to expire');
    assert.equal(s.lifetime.spent_micros, spentBefore + row.cost_micros, 'the failures charged nothing');
    // The newest 1,000 ledger rows: 999 failures at cost 0 and the success.
    const rows = await keyRows(key.id, 1000);
    assert.equal(sum(rows.map((r) => r.cost_micros ?? 0)), row.cost_micros);
    mock.reset();
  });
});

// ------------------------------------------------- B3: streamed usage

describe('B3: streamed and non-streamed cost the same; a stream without usage is charged its reservation', () => {
  test('same usage → same cost_micros, and the budget grows by it each time', async () => {
    const key = await newKey('budget-b3', { micro_usd_lifetime: 1_000_000 });
    const s0 = (await stateWhen(key.id, noneOpen)).lifetime.spent_micros;
    assert.equal(s0, 0);

    const plain = await call(key.key, chatText());
    assert.equal(plain.status, 200, plain.text);
    const plainRow = await ledgerRow(plain.requestId);
    const s1 = (await stateWhen(key.id, noneOpen)).lifetime.spent_micros;

    const res = await fetch(stack.url + CHAT, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key.key}` },
      body: chatText({ stream: true }),
    });
    assert.equal(res.status, 200);
    const { frames } = await readSse(res);
    assert.equal(frames.at(-1), 'data: [DONE]');
    const streamRow = await ledgerRow(res.headers.get('x-tollgate-request-id'));
    const s2 = (await stateWhen(key.id, noneOpen)).lifetime.spent_micros;

    assert.equal(streamRow.stream, 1, 'a streamed row');
    assert.equal(streamRow.usage_source, plainRow.usage_source);
    assert.notEqual(streamRow.usage_source, 'estimated', 'the stream reported usage (the gateway asks for it)');
    assert.deepEqual(
      [streamRow.prompt_tokens, streamRow.completion_tokens, streamRow.total_tokens],
      [plainRow.prompt_tokens, plainRow.completion_tokens, plainRow.total_tokens],
      'same usage',
    );
    assert.ok(plainRow.cost_micros > 0);
    assert.equal(plainRow.cost_micros, costOfRow(plainRow), 'cost = usage × price');
    assert.equal(streamRow.cost_micros, plainRow.cost_micros, 'stream and non-stream cost the same');
    assert.equal(s1 - s0, plainRow.cost_micros, 'spend grew by the non-streamed cost');
    assert.equal(s2 - s1, streamRow.cost_micros, 'spend grew by the streamed cost');
  });

  test('a stream whose usage never arrives is charged its reservation, and the row says `estimated`', async () => {
    const key = await newKey('budget-b3-nousage', { micro_usd_lifetime: 1_000_000 });
    const text = chatText({ stream: true });
    const w = worstCase(text, 50);
    mock.reset();
    mock.enqueue({ omitUsage: true });
    const res = await fetch(stack.url + CHAT, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key.key}` },
      body: text,
    });
    assert.equal(res.status, 200);
    await readSse(res);
    assert.equal(mock.requests()[0].json.stream_options?.include_usage, true, 'usage was requested upstream');
    assert.equal(mock.requests()[0].response.usage, null, 'and never sent');
    const row = await ledgerRow(res.headers.get('x-tollgate-request-id'));
    assert.equal(row.usage_source, 'estimated');
    // The reservation's tokens: the prompt at its upper bound, max_tokens out.
    assert.deepEqual(
      [row.prompt_tokens, row.completion_tokens, row.total_tokens],
      [w.tokens - 50, 50, w.tokens],
      `reserved tokens charged: ${JSON.stringify(row)}`,
    );
    assert.equal(row.cost_micros, costOfRow(row), 'priced like any row');
    assert.equal(row.cost_micros, w.micros, 'charged exactly the reservation');
    const s = await stateWhen(key.id, noneOpen);
    assert.equal(s.lifetime.spent_micros, row.cost_micros, 'the budget is charged what the row says');
    mock.reset();
  });
});

// --------------------------------------------- B5: retries and fallbacks

describe('B5: 500, 500 (retry), then a 200 from link 2', () => {
  test('one request row, three attempt rows, spend = the answering attempt', async () => {
    const key = await newKey('budget-b5', { micro_usd_lifetime: 1_000_000 });
    mock.reset();
    mock.enqueue({ match: { model: 'gpt-4o-mini' }, status: 500, times: 2 });
    const res = await call(key.key, chatText({ model: FALLBACK_ROUTE }));
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(
      mock.requests().map((r) => [r.json.model, r.response.status]),
      [
        ['gpt-4o-mini', 500],
        ['gpt-4o-mini', 500],
        [LINK2_MODEL, 200],
      ],
    );
    const row = await ledgerRow(res.requestId);
    assert.deepEqual(
      row.attempts.map((a) => [a.attempt, a.model, a.status, a.outcome]),
      [
        [1, 'gpt-4o-mini', 500, 'failed'],
        [2, 'gpt-4o-mini', 500, 'failed'],
        [3, LINK2_MODEL, 200, 'ok'],
      ],
    );
    await sleep(300);
    const rows = await keyRows(key.id, 1);
    assert.equal(rows.length, 1, 'one request row');
    assert.equal(row.model_used, LINK2_MODEL);
    assert.ok(row.cost_micros > 0);
    assert.equal(row.cost_micros, costOfRow(row), "the answering attempt's usage × price");
    const s = await stateWhen(key.id, noneOpen);
    assert.equal(s.lifetime.spent_micros, row.cost_micros, 'spend = what was billed (the failed attempts cost nothing)');
    assert.equal(s.requests_last_minute, 1, 'one logical request for RPM');
    mock.reset();
  });
});

// ----------------------------------------------------------- cache hits

describe('exact-cache hits', () => {
  test('a HIT counts toward RPM but not toward spend', async () => {
    const key = await newKey('budget-cache', { rpm: 100, micro_usd_lifetime: 1_000_000 });
    const text = chatText({ temperature: 0, messages: [{ role: 'user', content: `cache me ${Date.now()}` }] });
    const headers = { 'x-tollgate-cache': 'exact' };
    const first = await call(key.key, text, { headers });
    assert.equal(first.status, 200, first.text);
    assert.equal(first.headers.get('x-tollgate-cache'), 'MISS');
    const firstRow = await ledgerRow(first.requestId);
    assert.ok(firstRow.cost_micros > 0);

    const until = Date.now() + 5000;
    for (;;) {
      const before = await stateWhen(key.id, noneOpen);
      const res = await call(key.key, text, { headers });
      assert.equal(res.status, 200, res.text);
      const row = await ledgerRow(res.requestId);
      const after = await stateWhen(key.id, noneOpen);
      if (res.headers.get('x-tollgate-cache') === 'HIT') {
        assert.equal(row.cache_status, 'hit');
        assert.equal(row.cost_micros, 0);
        assert.equal(row.saved_micros, firstRow.cost_micros);
        assert.equal(after.lifetime.spent_micros, before.lifetime.spent_micros, 'spend unchanged after a HIT');
        assert.equal(after.requests_last_minute, before.requests_last_minute + 1, 'the HIT counts for RPM');
        break;
      }
      assert.equal(res.headers.get('x-tollgate-cache'), 'MISS');
      if (Date.now() > until) assert.fail('no cache HIT within 5 s');
      await sleep(100);
    }
  });
});

// ------------------------------------------------------ 402 daily budget

describe('daily USD budget', () => {
  test('402 budget_exceeded once used up, naming the daily limit and its reset; PATCH limits: null lifts it', async () => {
    const text = chatText();
    const w = worstCase(text, 50);
    const offset = 60; // UTC+01:00
    // Room for exactly one worst case: once anything is committed, the next cannot fit.
    const key = await newKey('budget-daily', { micro_usd_per_day: w.micros, time_zone_offset_minutes: offset });
    const first = await call(key.key, text);
    assert.equal(first.status, 200, first.text);
    const row = await ledgerRow(first.requestId); // written after the settle
    assert.ok(row.cost_micros > 0);

    const nextMidnight = () => {
      const local = Date.now() + offset * 60_000;
      const day = Math.floor(local / 86_400_000) + 1;
      const d = new Date(day * 86_400_000);
      return { label: `${d.toISOString().slice(0, 10)} 00:00 UTC+01:00`, atMs: day * 86_400_000 - offset * 60_000 };
    };
    const expected = nextMidnight();
    const res = await call(key.key, text);
    const e = assertError(res, 402, { code: 'budget_exceeded', type: 'insufficient_quota', param: null }, 'over the daily budget');
    assert.match(e.message, /daily spend budget/, e.message);
    assert.ok(e.message.includes(`of ${fmtUsd(w.micros)} is used up`), e.message);
    assert.ok(e.message.includes(`${fmtUsd(row.cost_micros)} spent`), e.message);
    const label = nextMidnight().label;
    assert.ok(e.message.includes(`It resets at ${expected.label}.`) || e.message.includes(`It resets at ${label}.`), e.message);
    const ra = Number(res.headers.get('retry-after'));
    const want = (expected.atMs - Date.now()) / 1000;
    assert.ok(Math.abs(ra - want) < 10, `retry-after ${ra} ≈ seconds to the reset ${want}`);

    // The SDK sees the same, and does not retry a 402.
    const err = await clientFor(key.key)
      .chat.completions.create({ model: MODEL, messages: HELLO, max_tokens: 50 })
      .then(() => assert.fail('expected a 402'), (x) => x);
    assert.ok(err instanceof OpenAI.APIError, String(err));
    assert.equal(err.status, 402);
    assert.equal(err.code, 'budget_exceeded');
    assert.equal(err.type, 'insufficient_quota');

    const s = await stateWhen(key.id, noneOpen);
    assert.equal(s.day.spent_micros, row.cost_micros);
    assert.equal(s.day.limit_micros, w.micros);
    assert.equal(s.day.resets_at_ms, expected.atMs);

    const patched = await stack.admin('PATCH', `/admin/keys/${key.id}`, { limits: null });
    assert.equal(patched.status, 200, patched.text);
    const lifted = await call(key.key, text);
    assert.equal(lifted.status, 200, lifted.text);
    const b = await budget(key.id);
    assert.equal(b.limits, null);
    assert.equal(b.state, undefined, 'no budget state for a key without limits');
  });
});

// ---------------------------------------------------- model_unpriced

describe('unpriced models', () => {
  test('a key with a USD budget → 400 model_unpriced, nothing upstream; an RPM-only key may use demo', async () => {
    const usd = await newKey('budget-unpriced', { micro_usd_per_month: 1_000_000 });
    const demo = await call(usd.key, chatText({ model: 'demo' }));
    const e = assertError(demo, 400, { code: 'model_unpriced', type: 'invalid_request_error', param: 'model' }, 'demo');
    assert.match(e.message, /demo\/echo/, e.message);

    mock.reset();
    const other = await call(usd.key, chatText({ model: 'openai/unpriced-budget-test-model' }));
    assertError(other, 400, { code: 'model_unpriced', param: 'model' }, 'unpriced openai model');
    assert.equal(mock.requests().length, 0, 'zero upstream requests');
    const s = await stateWhen(usd.id, noneOpen);
    assert.equal(s.requests_last_minute, 0, 'never admitted');
    assert.equal(s.month.spent_micros, 0);

    const rpmOnly = await newKey('budget-unpriced-rpm', { rpm: 5 });
    const ok = await call(rpmOnly.key, chatText({ model: 'demo' }));
    assert.equal(ok.status, 200, ok.text);
    assert.match(ok.json.choices[0].message.content, /demo/i);
    const s2 = await stateWhen(rpmOnly.id, noneOpen);
    assert.equal(s2.requests_last_minute, 1);
  });
});

// ------------------------------------------------------ no limits at all

// ------------------------------------------ team/project parent budgets

describe('project (team) budgets: a parent over several keys', () => {
  test('admin API: create (409 on a reused id), list, get, PATCH; keys must name an existing project', async () => {
    const created = await stack.admin('POST', '/admin/projects', { id: 'proj-admin', name: 'Admin team' });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(
      { ...created.json, created_at: 0 },
      { id: 'proj-admin', object: 'project', name: 'Admin team', limits: null, created_at: 0 },
    );
    const again = await stack.admin('POST', '/admin/projects', { id: 'proj-admin' });
    assertError(again, 409, { code: 'already_exists', type: 'invalid_request_error' }, 'duplicate project');
    const bad = await stack.admin('POST', '/admin/projects', { id: 'Not Valid' });
    assertError(bad, 400, { param: 'project_id' }, 'bad project id');

    const missing = await stack.admin('POST', '/admin/keys', { name: 'orphan', project_id: 'no-such-project' });
    const e = assertError(missing, 400, { param: 'project_id' }, 'unknown project');
    assert.match(e.message, /no project 'no-such-project'/);

    const key = await stack.createKey({ name: 'in-project', project_id: 'proj-admin' });
    assert.equal(key.project_id, 'proj-admin');
    const moved = await stack.admin('PATCH', `/admin/keys/${key.id}`, { project_id: null });
    assert.equal(moved.status, 200, moved.text);
    assert.equal(moved.json.project_id, null);

    const patched = await stack.admin('PATCH', '/admin/projects/proj-admin', { limits: { rpm: 7 } });
    assert.equal(patched.status, 200, patched.text);
    assert.equal(patched.json.limits.rpm, 7);
    const listed = await stack.admin('GET', '/admin/projects');
    assert.ok(listed.json.data.some((p) => p.id === 'proj-admin' && p.limits.rpm === 7));
    const b = await stack.admin('GET', '/admin/projects/proj-admin/budget');
    assert.equal(b.status, 200, b.text);
    assert.equal(b.json.state.rpm, 7);
    assert.equal((await stack.admin('GET', '/admin/projects/nope')).status, 404);
  });

  test(
    'two keys share the project budget: 12 concurrent requests over both keys, room for 3 → exactly 3 admitted; refusals name the project and use none of the key RPM',
    async () => {
      const text = chatText({ maxTokens: 50_000 });
      const w = worstCase(text, 50_000);
      const limit = Math.floor(3.5 * w.micros);
      const p = await stack.admin('POST', '/admin/projects', { id: 'team-search', name: 'Search', limits: { micro_usd_lifetime: limit } });
      assert.equal(p.status, 201, p.text);
      // Key A has no limits of its own; key B has a generous RPM of its own.
      const a = await stack.createKey({ name: 'search-a', project_id: 'team-search' });
      const b = await stack.createKey({ name: 'search-b', project_id: 'team-search', limits: { rpm: 100 } });

      mock.reset();
      mock.enqueue({ delayHeadersMs: 2000, times: -1 });
      try {
        const results = await Promise.all(
          Array.from({ length: 12 }, (_, i) => call(i % 2 ? b.key : a.key, text).then((r) => ({ ...r, via: i % 2 ? 'b' : 'a' }))),
        );
        const ok = results.filter((r) => r.status === 200);
        assert.equal(ok.length, 3, `admitted: ${results.map((r) => `${r.via}:${r.status}`).join(',')}`);
        assert.ok(mock.requests().length <= 3, `upstream saw ${mock.requests().length}`);
        for (const r of results.filter((x) => x.status !== 200)) {
          const e = assertError(r, r.status, {}, 'refused by the project');
          assert.ok([402, 429].includes(r.status), `${r.status}`);
          assert.match(e.message, /^Project 'team-search' \(this key's team budget\): /, e.message);
          assert.match(e.message, /lifetime spend budget/, e.message);
        }

        const rows = await Promise.all(ok.map((r) => ledgerRow(r.requestId)));
        for (const row of rows) assert.equal(row.project_id, 'team-search', 'ledger rows carry the project');
        const pb = await stack.admin('GET', '/admin/projects/team-search/budget');
        assert.equal(pb.status, 200, pb.text);
        let ps = pb.json.state;
        const until = Date.now() + 5000;
        while (!noneOpen(ps) && Date.now() < until) {
          await sleep(100);
          ps = (await stack.admin('GET', '/admin/projects/team-search/budget')).json.state;
        }
        assert.deepEqual(ps.open_reservations, [], 'no project reservation left open');
        assert.ok(ps.lifetime.spent_micros <= limit, `committed ${ps.lifetime.spent_micros} ≤ ${limit}`);
        assert.equal(ps.lifetime.spent_micros, sum(rows.map((r) => r.cost_micros)), 'project spend = Σ both keys\' ledger cost');

        // Key B's own object: only B's admitted requests count for its RPM;
        // the ones the project refused were released.
        const admittedViaB = ok.filter((r) => r.via === 'b').length;
        const kb = await stateWhen(b.id, noneOpen);
        assert.equal(kb.requests_last_minute, admittedViaB, `key B RPM holds only its admitted requests: ${JSON.stringify(kb)}`);
        assert.equal(kb.lifetime.spent_micros, sum(rows.filter((r) => r.key_id === b.id).map((r) => r.cost_micros)));
        // Key A has no limits of its own: no object state to show.
        assert.equal((await budget(a.id)).limits, null);
      } finally {
        mock.reset();
      }
    },
  );

  test('a project RPM limit applies across its keys (429 with Retry-After), and lifting it admits again', async () => {
    const p = await stack.admin('POST', '/admin/projects', { id: 'team-rpm', limits: { rpm: 2 } });
    assert.equal(p.status, 201, p.text);
    const a = await stack.createKey({ name: 'rpm-a', project_id: 'team-rpm' });
    const b = await stack.createKey({ name: 'rpm-b', project_id: 'team-rpm' });
    assert.equal((await call(a.key, chatText())).status, 200);
    assert.equal((await call(b.key, chatText())).status, 200);
    const third = await call(a.key, chatText());
    const e = assertError(third, 429, { code: 'rate_limit_exceeded' }, 'third request in the project');
    assert.match(e.message, /^Project 'team-rpm' \(this key's team budget\): Its limit of 2 requests per minute is reached/);
    assert.ok(Number(third.headers.get('retry-after')) >= 1);
    const lifted = await stack.admin('PATCH', '/admin/projects/team-rpm', { limits: null });
    assert.equal(lifted.status, 200, lifted.text);
    assert.equal((await call(a.key, chatText())).status, 200, 'no limits → no project object consulted');
  });
});

describe('a key without limits', () => {
  test('behaves as before (200, priced ledger row) and has no budget state', async () => {
    const key = await newKey('budget-none');
    const completion = await clientFor(key.key).chat.completions.create({ model: MODEL, messages: HELLO, max_tokens: 50 });
    assert.match(completion.choices[0].message.content, /mock\(openai\) reply to/);
    const rows = await keyRows(key.id, 1);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].cost_micros, costOfRow(rows[0]));
    const b = await budget(key.id);
    assert.deepEqual(b, { key_id: key.id, project_id: null, limits: null });
  });
});

// ------------------------------------------ B6 (second half): the window

describe('RPM (B6), after the window', () => {
  test('the request rejected by RPM 10 passes once Retry-After has elapsed', async (t) => {
    assert.ok(rpm.retryAtMs, 'the first RPM test ran');
    const wait = rpm.retryAtMs + 1000 - Date.now();
    if (wait > 61_000) {
      t.skip(`would wait ${wait} ms`);
      return;
    }
    if (wait > 0) await sleep(wait);
    const res = await call(rpm.key.key, chatText({ maxTokens: 200_000 }));
    assert.equal(res.status, 200, res.text);
  });
});
