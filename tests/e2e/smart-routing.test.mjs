// Smart routing end to end (issue 12): the `cost` strategy picks the cheapest
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
