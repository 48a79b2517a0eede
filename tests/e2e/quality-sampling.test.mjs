// Quality sampling and the small-model complexity classifier (issue 12),
// end to end: the built Worker under `wrangler dev`, a mock OpenAI provider
// (tests/mock) and the official `openai` SDK as the client.
//
// Quality sampling: a route with `quality_sampling = { fraction, reference }`
// also sends a sampled request, after the user's answer is complete, to the
// reference model (non-streamed, the gateway's own provider key), scores how
// far the two answers agree, and records a `quality_samples` row (D1) plus the
// reference call's own ledger row (key `gateway:quality-sample`), visible at
// GET /admin/usage/quality.
//
// The classifier: a `complexity` route with `classifier = { model,
// deadline_ms }` asks that model for the tier before routing; past its
// deadline the heuristics decide, and the decision header says which did.
//
// On the one mock: `cheap` answers users, `gpt-4o` is the reference, `judge`
// is the classifier, `small` / `frontier` are the complexity tiers.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import OpenAI from 'openai';
import { chromium } from 'playwright-core';

import { ROOT, startStack } from './harness.mjs';

const OPENAI_KEY = 'sk-test-openai-quality-00000000000000';
let stack;
let client;
let keyId;

before(async () => {
  stack = await startStack({
    providers: { openai: { apiKey: OPENAI_KEY } },
    editConfig(gateway) {
      const cheap = [{ model: 'openai/cheap' }];
      gateway.routes = {
        ...(gateway.routes ?? {}),
        sampled: { strategy: 'fallback', targets: cheap, quality_sampling: { fraction: 1, reference: 'openai/gpt-4o', timeout_ms: 4000 } },
        unsampled: { strategy: 'fallback', targets: cheap, quality_sampling: { fraction: 0, reference: 'openai/gpt-4o' } },
        guarded: {
          strategy: 'fallback',
          targets: cheap,
          quality_sampling: { fraction: 1, reference: 'openai/gpt-4o' },
          guardrails: { input: { email: 'redact' } },
        },
        reference_only: { strategy: 'fallback', targets: [{ model: 'openai/gpt-4o' }], quality_sampling: { fraction: 1, reference: 'openai/gpt-4o' } },
        tiered: {
          strategy: 'complexity',
          classifier: { model: 'openai/judge', deadline_ms: 400 },
          targets: [
            { model: 'openai/small', tier: 'simple' },
            { model: 'openai/frontier', tier: 'complex' },
          ],
        },
      };
    },
  });
  const key = await stack.createKey({ name: 'quality' });
  keyId = key.id;
  client = new OpenAI({ apiKey: key.key, baseURL: `${stack.url}/v1`, maxRetries: 0 });
});

after(async () => {
  await stack?.stop();
});

beforeEach(() => stack.mocks.openai.reset());

/** A complete OpenAI chat completion whose answer is `content`. */
function completion(model, content) {
  return {
    id: 'chatcmpl-mock',
    object: 'chat.completion',
    created: 1700000000,
    model,
    choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: 'stop' }],
    usage: { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 },
  };
}

const sent = (model) => stack.mocks.openai.requests().filter((r) => r.json?.model === model);

/** The quality sample of `requestId` from the usage API, waiting for the background write. */
async function sampleOf(requestId, timeoutMs = 10_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await stack.admin('GET', `/admin/usage/quality?key_id=${keyId}&limit=100`);
    assert.equal(r.status, 200, r.text);
    const found = r.json.recent.find((s) => s.request_id === requestId);
    if (found) return { sample: found, view: r.json };
    if (Date.now() > until) return { sample: null, view: r.json };
    await new Promise((res) => setTimeout(res, 150));
  }
}

async function ask(model, content, extra = {}) {
  const t0 = Date.now();
  const { data, response } = await client.chat.completions
    .create({ model, messages: [{ role: 'user', content }], ...extra })
    .withResponse();
  return { data, response, ms: Date.now() - t0, id: response.headers.get('x-tollgate-request-id') };
}

describe('quality sampling', () => {
  test('fraction 1: one reference request after the answer, a D1 row with a high score for agreeing answers', async () => {
    const mock = stack.mocks.openai;
    mock.enqueue({ match: { model: 'cheap' }, body: completion('cheap', 'Paris') });
    // The reference is slow: the user must not wait for it.
    mock.enqueue({ match: { model: 'gpt-4o' }, delayHeadersMs: 1500, body: completion('gpt-4o', 'paris.') });
    const { data, ms, id } = await ask('sampled', 'What is the capital of France? One word.');
    assert.equal(data.choices[0].message.content, 'Paris');
    assert.ok(ms < 1200, `the user waited ${ms} ms for a 1500 ms reference`);
    const { sample } = await sampleOf(id);
    assert.ok(sample, 'a quality sample was recorded');
    assert.equal(sent('gpt-4o').length, 1, 'exactly one reference request');
    assert.equal(sent('cheap').length, 1);
    const ref = sent('gpt-4o')[0];
    assert.equal(ref.json.stream, undefined, 'the reference is asked non-streamed');
    assert.deepEqual(ref.json.messages, [{ role: 'user', content: 'What is the capital of France? One word.' }]);
    assert.equal(ref.headers.authorization, `Bearer ${OPENAI_KEY}`, "the reference provider's own key");
    assert.ok(ref.receivedAt >= sent('cheap')[0].receivedAt);
    assert.equal(sample.agreement, 1);
    assert.equal(sample.method, 'exact');
    assert.equal(sample.model, 'openai/cheap');
    assert.equal(sample.reference, 'openai/gpt-4o');
    assert.equal(sample.route, 'sampled');
    assert.equal(sample.error, null);
    assert.ok(sample.reference_latency_ms >= 1400, String(sample.reference_latency_ms));
    assert.ok(sample.reference_cost_micros > 0, 'the reference call is priced (gpt-4o)');
    // Its own ledger row: a gateway overhead key, not the user's.
    const row = await stack.admin('GET', `/admin/requests/${id}_quality`);
    assert.equal(row.status, 200, row.text);
    const r = row.json.data ?? row.json;
    assert.equal(r.key_id, 'gateway:quality-sample');
    assert.equal(r.cost_micros, sample.reference_cost_micros);
    assert.equal(r.metadata.feature ?? JSON.parse(r.metadata).feature, 'quality_sample');
  });

  test('disagreeing answers score low; prose is compared by token set; streams use the assembled answer', async () => {
    const mock = stack.mocks.openai;
    mock.enqueue({ match: { model: 'cheap' }, body: completion('cheap', 'Lyon') });
    mock.enqueue({ match: { model: 'gpt-4o' }, body: completion('gpt-4o', 'Paris') });
    const low = await ask('sampled', 'Capital of France?');
    // A stream, answered by the mock's normal prose; the reference answers the
    // same words in another order, then entirely different prose.
    mock.enqueue({ match: { model: 'gpt-4o' }, body: completion('gpt-4o', 'reply to: the slow river runs past the old mill mock(openai)') });
    const stream = await client.chat.completions.create({
      model: 'sampled',
      messages: [{ role: 'user', content: 'the slow river runs past the old mill' }],
      stream: true,
    });
    let streamedId;
    let text = '';
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      streamedId ??= chunk.id;
    }
    assert.match(text, /mock\(openai\) reply to:/);
    const lowSample = (await sampleOf(low.id)).sample;
    assert.equal(lowSample.agreement, 0);
    assert.equal(lowSample.method, 'exact');
    const { view } = await sampleOf('none', 3000);
    const streamed = view.recent.find((s) => s.request_id !== low.id && s.method === 'token_set');
    assert.ok(streamed, JSON.stringify(view.recent));
    assert.ok(streamed.agreement > 0.9, String(streamed.agreement));
    assert.equal(sent('gpt-4o').length, 2);
    assert.equal(sent('gpt-4o')[1].json.stream, undefined, 'a streamed request is sampled non-streamed');
    mock.enqueue({ match: { model: 'gpt-4o' }, body: completion('gpt-4o', 'Bananas are yellow fruits rich in potassium and fibre, grown in the tropics.') });
    const prose = await ask('sampled', 'Describe the water wheel of an old mill in a few sentences please.');
    const proseSample = (await sampleOf(prose.id)).sample;
    assert.equal(proseSample.method, 'token_set');
    assert.ok(proseSample.agreement < 0.3, String(proseSample.agreement));
    // The per-model view aggregates them.
    const m = view.models.find((x) => x.model === 'openai/cheap' && x.reference === 'openai/gpt-4o');
    assert.ok(m && m.samples >= 3 && m.scored >= 3, JSON.stringify(view.models));
    assert.ok(view.points.length >= 1);
  });

  test('fraction 0, a guarded route, and the reference answering itself: no sample', async () => {
    const a = await ask('unsampled', 'hello there');
    const b = await ask('guarded', 'hello there');
    const c = await ask('reference_only', 'hello there');
    await new Promise((res) => setTimeout(res, 1500));
    assert.equal(sent('gpt-4o').length, 1, 'only the user request to the reference route itself');
    const { view } = await sampleOf('none', 0);
    for (const x of [a, b, c]) assert.ok(!view.recent.some((s) => s.request_id === x.id), x.id);
  });

  test('a failing reference: a row with the error, the user unaffected', async () => {
    stack.mocks.openai.enqueue({ match: { model: 'gpt-4o' }, status: 500 });
    const { response, data, id } = await ask('sampled', 'Capital of Italy? One word.');
    assert.equal(response.status, 200);
    assert.match(data.choices[0].message.content, /mock\(openai\)/);
    const { sample } = await sampleOf(id);
    assert.equal(sample.agreement, null);
    assert.equal(sample.method, null);
    assert.match(sample.error, /upstream|server/);
    assert.equal(sent('gpt-4o').length, 1, 'no retry of a sample');
  });
});

describe('complexity classifier model', () => {
  test('the model says "complex" → the complex tier, and the header says the model decided', async () => {
    stack.mocks.openai.enqueue({ match: { model: 'judge' }, body: completion('judge', 'complex') });
    const { response, id } = await ask('tiered', "Translate 'good morning' to French.");
    assert.equal(response.headers.get('x-tollgate-model'), 'frontier');
    assert.equal(response.headers.get('x-tollgate-route-decision'), 'complexity:complex(model) openai/frontier');
    const judge = sent('judge');
    assert.equal(judge.length, 1);
    assert.equal(judge[0].json.max_tokens, 3);
    assert.equal(judge[0].json.temperature, 0);
    assert.equal(judge[0].json.messages.at(-1).content, "Translate 'good morning' to French.");
    assert.ok(judge[0].receivedAt <= sent('frontier')[0].receivedAt);
    const rows = await stack.ledger({ keyId: 'gateway:complexity-classifier', ids: [`${id}_classifier`] });
    const row = rows.find((r) => r.request_id === `${id}_classifier`);
    assert.ok(row, JSON.stringify(rows.map((r) => r.request_id)));
  });

  test('a classifier slower than its deadline → the heuristics decide, the request is still quick', async () => {
    stack.mocks.openai.enqueue({ match: { model: 'judge' }, delayHeadersMs: 3000, body: completion('judge', 'complex') });
    const { response, ms } = await ask('tiered', "Translate 'good morning' to French.");
    assert.equal(response.headers.get('x-tollgate-model'), 'small');
    assert.match(response.headers.get('x-tollgate-route-decision'), /^complexity:simple\(score=-?\d+;[^)]*;model timeout\) openai\/small$/);
    assert.ok(ms < 1500, `answered in ${ms} ms with a 400 ms classifier deadline`);
  });

  test('an answer that is not exactly a tier → the heuristics decide', async () => {
    stack.mocks.openai.enqueue({ match: { model: 'judge' }, body: completion('judge', 'This looks complex to me.') });
    const { response } = await ask('tiered', "Translate 'good morning' to French.");
    assert.match(response.headers.get('x-tollgate-route-decision'), /;model unparseable\) openai\/small$/);
  });
});

describe('dashboard panel (headless Chromium)', () => {
  test('the quality panel shows the samples per model and draws agreement over time', async () => {
    const api = await stack.admin('GET', '/admin/usage/quality');
    const cheap = api.json.models.find((m) => m.model === 'openai/cheap');
    assert.ok(cheap && cheap.samples >= 4, JSON.stringify(api.json.models));
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1366, height: 900 },
    });
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      await page.goto(`${stack.url}/dashboard`);
      await page.fill('#token', stack.adminToken);
      await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
      await page.waitForFunction(() => Number(document.body.dataset.loaded ?? 0) >= 1, null, { timeout: 15_000 });
      const rows = await page.locator('#t-quality tbody tr').evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
      const shown = rows.find((r) => r[0] === 'openai/cheap');
      assert.ok(shown, JSON.stringify(rows));
      assert.equal(shown[1], 'openai/gpt-4o');
      assert.equal(Number(shown[2]), cheap.samples);
      assert.equal(shown[3], cheap.mean_agreement.toFixed(3));
      assert.equal(Number(shown[5]), cheap.errors);
      const drawn = await page.locator('#ch-quality').evaluate((el) => {
        const c = el.querySelector('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return { inked: n, legend: el.textContent };
      });
      assert.ok(drawn.inked > 200, JSON.stringify(drawn));
      assert.match(drawn.legend, /openai\/cheap/);
      const artifacts = path.join(ROOT, 'tests', 'artifacts');
      fs.mkdirSync(artifacts, { recursive: true });
      await page.locator('#quality').screenshot({ path: path.join(artifacts, 'dashboard-quality.png') });
    } finally {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    }
  });
});
