// Smart routing end to end (issue 12).
//
// The `latency` strategy converges on the link answering fastest (live
// per-link statistics) and moves away when that link slows down.
//
// The `complexity` strategy rates the prompt with the local classifier and
// sends it to the targets of that tier (harder tiers as fallbacks).
//
// Provider capacity: a provider whose rate-limit headers say it is at ≥ 90 %
// of its account limit is tried after the other links, until the reset.
//
// The `budget` strategy moves a key to a cheaper tier once it has used half
// of its budget, instead of refusing it.
//
// The `cost` strategy picks the cheapest
// link whose model can serve the request — tools, images, JSON mode, context
// length from data/capabilities.json and operator entries — and never one that
// lacks a needed capability; the others stay as fallbacks in cost order; the
// decision is explained in `x-tollgate-route-decision`.
//
// Two mock providers speaking OpenAI's wire format, `openai` and `groq`. On
// groq, two made-up models with operator capabilities and prices:
//   groq/tiny    $0.05/$0.08 per 1M, 8k context, no tools, no images
//   groq/mid     $0.10/$0.20 per 1M, 128k context, tools, no images
// and the built-in gpt-4o-mini ($0.15/$0.60, tools, images, 128k) and gpt-4o.

import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import OpenAI from 'openai';

import { startStack } from './harness.mjs';

let stack;
let client;

before(async () => {
  stack = await startStack({
    providers: {
      openai: { apiKey: 'sk-test-openai-smart-000000000000000' },
      groq: { apiKey: 'gsk-test-groq-smart-0000000000000000' },
    },
    editConfig(gateway) {
      gateway.capabilities = {
        'groq/tiny': { context_window: 8192, tools: false, vision: false, json_mode: false },
        'groq/mid': { context_window: 128000, tools: true, vision: false, json_mode: true },
      };
      gateway.pricing = {
        ...(gateway.pricing ?? {}),
        overrides: {
          ...(gateway.pricing?.overrides ?? {}),
          'groq/tiny': { input: 0.05, output: 0.08 },
          'groq/mid': { input: 0.1, output: 0.2 },
        },
      };
      gateway.routes = {
        ...(gateway.routes ?? {}),
        tiered: {
          strategy: 'complexity',
          targets: [
            { model: 'openai/small', tier: 'simple' },
            { model: 'openai/mid', tier: 'moderate' },
            { model: 'groq/frontier', tier: 'complex' },
          ],
        },
        cap: { strategy: 'fallback', targets: [{ model: 'openai/cap' }, { model: 'groq/cap' }] },
        thrifty: {
          strategy: 'budget',
          targets: [{ model: 'openai/gpt-4o', until_used: 0.5 }, { model: 'openai/gpt-4o-mini' }],
        },
        fastest: {
          strategy: 'latency',
          explore_rate: 0.05,
          targets: [{ model: 'openai/lat' }, { model: 'groq/lat' }],
        },
        cheapest: {
          strategy: 'cost',
          targets: [{ model: 'openai/gpt-4o' }, { model: 'openai/gpt-4o-mini' }, { model: 'groq/mid' }, { model: 'groq/tiny' }],
        },
      };
    },
  });
  const key = await stack.createKey({ name: 'smart' });
  client = new OpenAI({ apiKey: key.key, baseURL: `${stack.url}/v1`, maxRetries: 0 });
});

after(async () => {
  await stack?.stop();
});

beforeEach(() => {
  for (const m of Object.values(stack.mocks)) m.reset();
});

/** Which provider/model each mock was asked for, in order. */
function upstream() {
  return Object.entries(stack.mocks).flatMap(([name, m]) => m.requests().map((r) => `${name}/${r.json.model}`));
}

const TOOL = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } };
const IMAGE = { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==' } };

describe('cost strategy', () => {
  test('plain text → the cheapest link (groq/tiny); the decision lists every capable link in cost order', async () => {
    const { data, response } = await client.chat.completions
      .create({ model: 'cheapest', messages: [{ role: 'user', content: 'hi' }], max_tokens: 20 })
      .withResponse();
    assert.match(data.choices[0].message.content, /mock\(groq\)/);
    assert.deepEqual(upstream(), ['groq/tiny']);
    const decision = response.headers.get('x-tollgate-route-decision');
    assert.match(decision, /^cost:groq\/tiny=\d+uUSD groq\/mid=\d+uUSD openai\/gpt-4o-mini=\d+uUSD openai\/gpt-4o=\d+uUSD$/, decision);
  });

  test('tools → never groq/tiny (no tools): the cheapest with tools, groq/mid', async () => {
    const { response } = await client.chat.completions
      .create({ model: 'cheapest', messages: [{ role: 'user', content: 'weather in Paris?' }], tools: [TOOL], max_tokens: 20 })
      .withResponse();
    assert.deepEqual(upstream(), ['groq/mid']);
    assert.deepEqual(stack.mocks.groq.requests()[0].json.tools, [TOOL], 'the tools reached the model');
    assert.match(response.headers.get('x-tollgate-route-decision'), / excluded=groq\/tiny\(tools\)$/);
  });

  test('tools and an image → neither groq model (no vision): gpt-4o-mini', async () => {
    const { response } = await client.chat.completions
      .create({
        model: 'cheapest',
        messages: [{ role: 'user', content: [{ type: 'text', text: 'what is this?' }, IMAGE] }],
        tools: [TOOL],
        max_tokens: 20,
      })
      .withResponse();
    assert.deepEqual(upstream(), ['openai/gpt-4o-mini']);
    assert.match(response.headers.get('x-tollgate-route-decision'), /excluded=groq\/mid\(vision\),groq\/tiny\(tools\+vision\)$/);
  });

  test('a prompt beyond groq/tiny’s 8k context → groq/mid', async () => {
    const long = 'lorem ipsum dolor sit amet '.repeat(1500); // ≈ 40 kB ≈ 10k tokens
    await client.chat.completions.create({ model: 'cheapest', messages: [{ role: 'user', content: long }], max_tokens: 20 });
    assert.deepEqual(upstream(), ['groq/mid']);
  });

  test('the cheapest link failing → the next cheapest capable one (cost order is the fallback chain)', async () => {
    stack.mocks.groq.enqueue({ match: { model: 'tiny' }, status: 500 });
    const { response } = await client.chat.completions
      .create({ model: 'cheapest', messages: [{ role: 'user', content: 'hi' }], max_tokens: 20 })
      .withResponse();
    assert.deepEqual(upstream(), ['groq/tiny', 'groq/mid']);
    assert.match(response.headers.get('x-tollgate-trace'), /^groq\/tiny;attempts=1;result=status_500, groq\/mid;attempts=1;result=ok$/);
  });

  test('no capable model → 400 no_capable_model naming what each lacked; nothing upstream', async () => {
    const r = await fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${client.apiKey}` },
      body: JSON.stringify({ model: 'cheapest', messages: [{ role: 'user', content: 'hi' }], max_tokens: 500_000 }),
    });
    const body = await r.json();
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(body.error.code, 'no_capable_model');
    assert.equal(body.error.param, 'model');
    assert.match(body.error.message, /openai\/gpt-4o\(context_length\+max_output_tokens\)/);
    assert.deepEqual(upstream(), []);
  });
});

describe('latency strategy', () => {
  /** Sends `n` requests one after another; returns which provider answered each. */
  async function send(n) {
    const answered = [];
    for (let i = 0; i < n; i++) {
      const { data, response } = await client.chat.completions
        .create({ model: 'fastest', messages: [{ role: 'user', content: `ping ${i}` }], max_tokens: 5 })
        .withResponse();
      answered.push(response.headers.get('x-tollgate-provider') ?? /mock\((\w+)\)/.exec(data.choices[0].message.content)?.[1]);
    }
    return answered;
  }
  const count = (xs, v) => xs.filter((x) => x === v).length;

  test('converges on the fastest link, then moves away when it slows down', async () => {
    // Phase 1: openai answers in 250 ms, groq in ~0.
    stack.mocks.openai.enqueue({ match: { model: 'lat' }, delayHeadersMs: 250, times: -1 });
    const first = await send(20);
    // Each link is measured once (unmeasured links go first), then groq.
    assert.deepEqual(first.slice(0, 2).sort(), ['groq', 'openai'], first.join(','));
    // Exploration sends ~5 % elsewhere: ≥ 11 of 15 fails by chance < 0.1 % of runs.
    assert.ok(count(first.slice(5), 'groq') >= 11, `mostly groq after 5 requests: ${first.join(',')}`);

    // Phase 2: groq slows to 600 ms, openai becomes fast.
    for (const m of Object.values(stack.mocks)) m.reset();
    stack.mocks.groq.enqueue({ match: { model: 'lat' }, delayHeadersMs: 600, times: -1 });
    const second = await send(15);
    const firstOpenai = second.indexOf('openai');
    assert.ok(firstOpenai >= 0 && firstOpenai <= 3, `moved to openai within 4 requests: ${second.join(',')}`);
    assert.ok(count(second.slice(5), 'openai') >= 7, `then stays on openai: ${second.join(',')}`);

    const { response } = await client.chat.completions
      .create({ model: 'fastest', messages: [{ role: 'user', content: 'why' }], max_tokens: 5 })
      .withResponse();
    assert.match(response.headers.get('x-tollgate-route-decision'), /^latency:(fastest|explore) (openai|groq)\/lat=\d+ms (openai|groq)\/lat=\d+ms$/);
  });
});

describe('budget strategy', () => {
  test('below half of the key’s budget → gpt-4o; at 67 % → gpt-4o-mini (not a refusal); back under half → gpt-4o', async () => {
    const key = await stack.createKey({ name: 'thrifty', limits: { micro_usd_lifetime: 1_000_000 } });
    const c = new OpenAI({ apiKey: key.key, baseURL: `${stack.url}/v1`, maxRetries: 0 });
    const ask = (content) =>
      c.chat.completions.create({ model: 'thrifty', messages: [{ role: 'user', content }], max_tokens: 5 }).withResponse();

    // A long prompt: the mock's usage grows with it, so this request spends real money.
    const first = await ask('spend '.repeat(2000));
    assert.equal(first.data.model.startsWith('gpt-4o-mini'), false, first.data.model);
    assert.deepEqual(upstream(), ['openai/gpt-4o']);
    assert.equal(first.response.headers.get('x-tollgate-route-decision'), 'budget:0% used tier=1 openai/gpt-4o');
    const requestId = first.response.headers.get('x-tollgate-request-id');
    let row;
    for (let i = 0; i < 50 && !row; i++) {
      const r = await stack.admin('GET', `/admin/requests/${requestId}`);
      if (r.status === 200) row = r.json;
      else await new Promise((res) => setTimeout(res, 100));
    }
    assert.ok(row?.cost_micros > 1000, `the first request cost something: ${JSON.stringify(row)}`);
    // Wait until the settle has landed in the key's object.
    let state;
    for (let i = 0; i < 50; i++) {
      state = (await stack.admin('GET', `/admin/keys/${key.id}/budget`)).json.state;
      if (state.lifetime.spent_micros === row.cost_micros && state.open_reservations.length === 0) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(state.lifetime.spent_micros, row.cost_micros);

    // Now make that spend 2/3 of the budget.
    const limit = Math.ceil((row.cost_micros * 3) / 2);
    assert.equal((await stack.admin('PATCH', `/admin/keys/${key.id}`, { limits: { micro_usd_lifetime: limit } })).status, 200);
    for (const m of Object.values(stack.mocks)) m.reset();
    const second = await ask('hi');
    assert.deepEqual(upstream(), ['openai/gpt-4o-mini'], 'moved to the cheaper tier');
    assert.equal(second.response.headers.get('x-tollgate-route-decision'), 'budget:67% used tier=2 openai/gpt-4o-mini');

    assert.equal((await stack.admin('PATCH', `/admin/keys/${key.id}`, { limits: { micro_usd_lifetime: row.cost_micros * 10 } })).status, 200);
    for (const m of Object.values(stack.mocks)) m.reset();
    await ask('hi');
    assert.deepEqual(upstream(), ['openai/gpt-4o'], 'back to the first tier under half');
  });
});

describe('provider capacity', () => {
  test('openai reports 95 % of its request limit used → the next requests go to groq first, until the reading’s reset', async () => {
    stack.mocks.openai.enqueue({
      match: { model: 'cap' },
      headers: { 'x-ratelimit-limit-requests': '100', 'x-ratelimit-remaining-requests': '5', 'x-ratelimit-reset-requests': '2s' },
    });
    const ask = () => client.chat.completions.create({ model: 'cap', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 }).withResponse();
    await ask();
    assert.deepEqual(upstream(), ['openai/cap'], 'first request: nothing known yet');
    for (const m of Object.values(stack.mocks)) m.reset();
    const { response } = await ask();
    assert.deepEqual(upstream(), ['groq/cap'], 'openai is near its limit: groq first');
    assert.equal(response.headers.get('x-tollgate-route-decision'), 'capacity:saturated openai/cap=95%');
    // After the reset the reading no longer counts.
    await new Promise((r) => setTimeout(r, 2100));
    for (const m of Object.values(stack.mocks)) m.reset();
    const later = await ask();
    assert.deepEqual(upstream(), ['openai/cap']);
    assert.equal(later.response.headers.get('x-tollgate-route-decision'), null);
  });
});

describe('complexity strategy', () => {
  const ask = (content) =>
    client.chat.completions.create({ model: 'tiered', messages: [{ role: 'user', content }], max_tokens: 5 }).withResponse();

  test('a simple prompt → the simple tier; a hard one → the complex tier, with the classifier’s reasons in the header', async () => {
    const easy = await ask("Classify the sentiment of this review as positive or negative: 'Great phone, love it.'");
    assert.deepEqual(upstream(), ['openai/small']);
    assert.match(easy.response.headers.get('x-tollgate-route-decision'), /^complexity:simple\(score=-?\d+;[a-z_0-9,]*\) openai\/small$/);

    for (const m of Object.values(stack.mocks)) m.reset();
    const hard = await ask(
      'Design a distributed rate limiter for a multi-region API gateway. First, analyze the trade-offs between token bucket and sliding window; ' +
        'then explain step by step how to keep counters consistent across regions, prove the scheme never admits more than the limit, ' +
        'and compare latency and cost against a centralized Redis design.',
    );
    assert.deepEqual(upstream(), ['groq/frontier']);
    const d = hard.response.headers.get('x-tollgate-route-decision');
    assert.match(d, /^complexity:complex\(score=\d+;[a-z_0-9,]+\) groq\/frontier$/, d);
    assert.ok(!d.includes('rate limiter'), 'never the prompt text');
  });

  test('the chosen tier failing → the next harder tier', async () => {
    stack.mocks.openai.enqueue({ match: { model: 'small' }, status: 503 });
    await ask('What is the capital of France?');
    assert.deepEqual(upstream(), ['openai/small', 'openai/mid']);
  });
});
