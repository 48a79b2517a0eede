// Workers AI through the in-Worker binding (provider kind `workers-ai-binding`)
// with the official `openai` SDK, changing only `model`.
//
// The real `AI` binding cannot run under `wrangler dev`, so the gateway's `AI`
// is a service binding to the MOCK binding Worker (tests/mock/workers-ai-binding/),
// run in the same `wrangler dev` (`-c gateway -c mock`). Its `run()` forwards to
// the node mock provider's `workers-ai` flavor (recorded, fault-injectable), so
// each test sees what reached the "provider": the model in the REST path and
// the run() inputs as the body.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

import { readSse, startStack } from './harness.mjs';

const CF_TOKEN = 'cf-CANARY-token-0123456789';
const LLAMA = '@cf/meta/llama-3.3-70b-instruct-fp8-fast';
const SMALL = '@cf/meta/llama-3.1-8b-instruct';
const OSS = '@cf/openai/gpt-oss-20b';
const BGE = '@cf/baai/bge-small-en-v1.5';
let stack;
let client;
let key;

before(async () => {
  stack = await startStack({
    providers: {
      wai: { kind: 'workers-ai-binding', apiKey: CF_TOKEN },
      openai: { apiKey: 'sk-test-openai-0000000000000000' },
      // Configured, but this deployment has no binding of that name.
      'wai-missing': { kind: 'workers-ai-binding', binding: 'AI_MISSING', wired: false },
    },
    editConfig(gateway) {
      gateway.routes = {
        'wai-first': { strategy: 'fallback', targets: [{ model: `wai/${LLAMA}` }, { model: 'openai/gpt-4o-mini' }] },
        'wai-slow': { strategy: 'fallback', targets: [{ model: `wai/${SMALL}`, ttfb_ms: 600 }, { model: 'openai/gpt-4o-mini' }] },
        'missing-first': { strategy: 'fallback', targets: [{ model: `wai-missing/${LLAMA}` }, { model: 'openai/gpt-4o-mini' }] },
      };
    },
  });
  key = await stack.createKey({ name: 'workers-ai' });
  client = new OpenAI({ apiKey: key.key, baseURL: `${stack.url}/v1`, maxRetries: 0 });
});

after(async () => {
  await stack?.stop();
});

const wai = () => stack.mocks.wai;
const last = () => {
  const r = wai().requests();
  return r[r.length - 1];
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The ledger row (with attempts) of one request, once it is written. */
async function ledgerRow(requestId) {
  const until = Date.now() + 10_000;
  for (;;) {
    const r = await stack.admin('GET', `/admin/requests/${requestId}`);
    if (r.status === 200) return r.json;
    if (Date.now() > until) assert.fail(`no ledger row for ${requestId}`);
    await sleep(100);
  }
}

function assertNoSecrets(text, where) {
  assert.ok(!text.includes('CANARY'), `${where} leaks a secret`);
}

describe('chat through the binding', () => {
  test('completion: run(model, inputs) reached the provider, OpenAI answer, ledger row with usage and cost', async () => {
    wai().reset();
    const { data, response } = await client.chat.completions
      .create({
        model: `wai/${LLAMA}`,
        messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello there' }],
        max_tokens: 50,
        stop: ['NEVER'],
      })
      .withResponse();
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.model, LLAMA);
    assert.equal(data.choices[0].message.content, 'mock(wai) reply to: hello there');
    assert.equal(data.choices[0].finish_reason, 'stop');
    const rec = last();
    assert.equal(decodeURIComponent(rec.path), `/client/v4/accounts/mock-account/ai/run/${LLAMA}`);
    assert.equal(rec.headers.authorization, `Bearer ${CF_TOKEN}`, 'the binding carries the account credential, not the gateway');
    assert.deepEqual(rec.json, {
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello there' }],
      max_tokens: 50,
    });
    assert.equal(data.usage.prompt_tokens, rec.response.usage.prompt_tokens);
    assert.equal(data.usage.completion_tokens, rec.response.usage.completion_tokens);
    assert.equal(response.headers.get('x-tollgate-provider'), 'wai');
    assert.equal(response.headers.get('x-tollgate-model'), LLAMA);
    assertNoSecrets(JSON.stringify(data), 'response');

    const row = await ledgerRow(response.headers.get('x-tollgate-request-id'));
    assert.equal(row.provider, 'wai');
    assert.equal(row.model_used, LLAMA);
    assert.equal(row.outcome, 'ok');
    assert.equal(row.prompt_tokens, rec.response.usage.prompt_tokens);
    assert.equal(row.completion_tokens, rec.response.usage.completion_tokens);
    assert.equal(row.usage_source, 'provider');
    assert.equal(row.pricing, 'priced', 'binding models are priced from the workers-ai table');
    assert.ok(row.cost_micros > 0, JSON.stringify(row));
    assert.deepEqual(
      row.attempts.map((a) => [a.provider, a.status, a.outcome, a.failure]),
      [['wai', 200, 'ok', null]],
    );
  });

  test('stream: deltas join to the text, one role chunk, usage only when asked; ledgered from the final usage frame', async () => {
    for (const includeUsage of [false, true]) {
      wai().reset();
      const { data: stream, response } = await client.chat.completions
        .create({
          model: `wai/${LLAMA}`,
          stream: true,
          ...(includeUsage ? { stream_options: { include_usage: true } } : {}),
          messages: [{ role: 'user', content: 'stream me please' }],
        })
        .withResponse();
      let text = '';
      let roles = 0;
      let usage = null;
      let finish = null;
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta?.role) roles++;
        text += chunk.choices[0]?.delta?.content ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
        if (chunk.usage) usage = chunk.usage;
      }
      assert.equal(text, 'mock(wai) reply to: stream me please');
      assert.equal(roles, 1);
      assert.equal(finish, 'stop');
      assert.equal(usage !== null, includeUsage, `usage present only when asked (${includeUsage})`);
      const rec = last();
      assert.equal(rec.json.stream, true);
      assert.ok(!('stream_options' in rec.json), 'no OpenAI-only fields upstream');
      const row = await ledgerRow(response.headers.get('x-tollgate-request-id'));
      assert.equal(row.stream, 1);
      assert.equal(row.outcome, 'ok');
      assert.equal(row.usage_source, 'provider');
      assert.equal(row.completion_tokens, rec.response.usage.completion_tokens);
    }
  });

  test('stop sequences are applied by the gateway (Workers AI has none), in JSON and streams', async () => {
    const body = { model: `wai/${LLAMA}`, messages: [{ role: 'user', content: 'one two three' }], stop: [' to:'] };
    const r = await client.chat.completions.create(body);
    assert.equal(r.choices[0].message.content, 'mock(wai) reply');
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.ok(!('stop' in last().json), 'stop is not sent upstream');
    const stream = await client.chat.completions.create({ ...body, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    assert.equal(text, 'mock(wai) reply');
  });

  test('max_tokens cut → finish_reason length', async () => {
    const r = await client.chat.completions.create({ model: `wai/${LLAMA}`, max_tokens: 2, messages: [{ role: 'user', content: 'a long answer' }] });
    assert.equal(r.choices[0].message.content, 'mock(wai) reply');
    assert.equal(r.choices[0].finish_reason, 'length');
  });

  test('tool call and tool-result round trip: minted ids come back, names are looked up for the model', async () => {
    wai().reset();
    const tools = [
      { type: 'function', function: { name: 'get_weather', description: 'Weather for a city', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
    ];
    const messages = [{ role: 'user', content: 'weather in Paris' }];
    const first = await client.chat.completions.create({ model: `wai/${LLAMA}`, messages, tools });
    const call = first.choices[0].message.tool_calls?.[0];
    assert.ok(call, JSON.stringify(first));
    assert.equal(first.choices[0].finish_reason, 'tool_calls');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { echo: 'weather in Paris' });
    assert.match(call.id, /^call_[0-9a-f]{32}_0$/);
    assert.deepEqual(last().json.tools, tools, 'tools upstream in the function form');

    const second = await client.chat.completions.create({
      model: `wai/${LLAMA}`,
      tools,
      messages: [...messages, first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: 'sunny, 21C' }],
    });
    assert.equal(second.choices[0].message.content, 'mock(wai) reply to: sunny, 21C');
    const sent = last().json.messages;
    assert.deepEqual(sent[1], {
      role: 'assistant',
      content: '',
      tool_calls: [{ id: call.id, type: 'function', function: { name: 'get_weather', arguments: call.function.arguments } }],
    });
    assert.deepEqual(sent[2], { role: 'tool', content: 'sunny, 21C', tool_call_id: call.id, name: 'get_weather' });

    // Streamed, the same call arrives as OpenAI tool-call deltas.
    const stream = await client.chat.completions.create({ model: `wai/${LLAMA}`, messages, tools, stream: true });
    let args = '';
    let name = null;
    let finish = null;
    for await (const chunk of stream) {
      const d = chunk.choices[0]?.delta?.tool_calls?.[0];
      if (d?.function?.name) name = d.function.name;
      args += d?.function?.arguments ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(name, 'get_weather');
    assert.deepEqual(JSON.parse(args), { echo: 'weather in Paris' });
    assert.equal(finish, 'tool_calls');
  });

  test('JSON mode: json_schema goes up as the bare schema, the object comes back as content', async () => {
    const schema = { type: 'object', properties: { echo: { type: 'string' } }, required: ['echo'] };
    const r = await client.chat.completions.create({
      model: `wai/${LLAMA}`,
      messages: [{ role: 'user', content: 'json please' }],
      response_format: { type: 'json_schema', json_schema: { name: 'echo', schema } },
    });
    assert.deepEqual(JSON.parse(r.choices[0].message.content), { echo: 'json please' });
    assert.deepEqual(last().json.response_format, { type: 'json_schema', json_schema: { ...schema, title: 'echo' } });
  });

  test('a model answering in the OpenAI shape (gpt-oss) reads the same, JSON and stream', async () => {
    const r = await client.chat.completions.create({ model: `wai/${OSS}`, messages: [{ role: 'user', content: 'hi oss' }] });
    assert.equal(r.choices[0].message.content, 'mock(wai) reply to: hi oss');
    assert.equal(r.usage.total_tokens, last().response.usage.total_tokens);
    const stream = await client.chat.completions.create({ model: `wai/${OSS}`, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'hi oss' }] });
    let text = '';
    let usage = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, 'mock(wai) reply to: hi oss');
    assert.deepEqual(
      [usage.prompt_tokens, usage.completion_tokens],
      [last().response.usage.prompt_tokens, last().response.usage.completion_tokens],
      'the final total, not the per-chunk increments summed twice',
    );
  });
});

describe('errors, timeouts and fallback', () => {
  test('binding errors come back in OpenAI shape: unknown model 404, capacity 429, daily quota 429 + Retry-After', async () => {
    const e1 = await client.chat.completions.create({ model: 'wai/@cf/meta/nope', messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    assert.equal(e1.status, 404);
    assert.equal(e1.code, 'upstream_not_found');
    assert.match(e1.message, /5007.*No such model @cf\/meta\/nope/);

    wai().enqueue({ match: { path: LLAMA }, rateLimit: {} });
    const e2 = await client.chat.completions.create({ model: `wai/${LLAMA}`, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    assert.equal(e2.status, 429);
    assert.equal(e2.code, 'upstream_rate_limited');

    wai().enqueue({ match: { path: LLAMA }, rateLimit: { code: 3036 } });
    const e3 = await client.chat.completions.create({ model: `wai/${LLAMA}`, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    assert.equal(e3.status, 429);
    assert.equal(e3.code, 'upstream_quota_exceeded');
    const wait = Number(e3.headers.get('retry-after'));
    assert.ok(wait > 0 && wait <= 86_400, `Retry-After until 00:00 UTC, got ${wait}`);

    wai().enqueue({ match: { path: LLAMA }, status: 500 });
    const e4 = await client.chat.completions.create({ model: `wai/${LLAMA}`, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    assert.equal(e4.status, 502);
    assert.equal(e4.code, 'upstream_error');

    // Inputs the model schema rejects (5006) are the client's to fix: 400 with the reason.
    const e5 = await client.chat.completions.create({ model: `wai/${LLAMA}`, messages: [{ role: 'user', content: 'x' }], frequency_penalty: -1, presence_penalty: 3 }).catch((e) => e);
    assert.equal(e5.status, 400);
    assert.equal(e5.code, 'upstream_invalid_request');
    assert.match(e5.message, /Workers AI error 5006\): .*presence_penalty/);
    for (const e of [e1, e2, e3, e4, e5]) assertNoSecrets(JSON.stringify(e.error ?? {}), 'error');
  });

  test('a failing binding call falls back to the next provider; the ledger has both attempts', async () => {
    wai().reset();
    wai().enqueue({ match: { path: LLAMA }, rateLimit: {} });
    const { data, response } = await client.chat.completions.create({ model: 'wai-first', messages: [{ role: 'user', content: 'fall back' }] }).withResponse();
    assert.equal(data.choices[0].message.content, 'mock(openai) reply to: fall back');
    assert.equal(response.headers.get('x-tollgate-provider'), 'openai');
    assert.equal(response.headers.get('x-tollgate-trace'), `wai/${LLAMA};attempts=1;result=status_429, openai/gpt-4o-mini;attempts=1;result=ok`);
    assert.equal(wai().requests().length, 1);
    const row = await ledgerRow(response.headers.get('x-tollgate-request-id'));
    assert.equal(row.provider, 'openai');
    assert.deepEqual(
      row.attempts.map((a) => [a.provider, a.status, a.outcome, a.failure]),
      [
        ['wai', 429, 'failed', 'status_429'],
        ['openai', 200, 'ok', null],
      ],
    );
    // Streams fall back the same way before their first byte (an error frame first).
    wai().enqueue({ match: { path: LLAMA }, errorFrame: true });
    const s = await client.chat.completions.create({ model: 'wai-first', stream: true, messages: [{ role: 'user', content: 'fall back' }] }).withResponse();
    let text = '';
    for await (const chunk of s.data) text += chunk.choices[0]?.delta?.content ?? '';
    assert.equal(text, 'mock(openai) reply to: fall back');
    assert.match(s.response.headers.get('x-tollgate-trace'), /^wai\/@cf\/meta\/llama-3\.3-70b-instruct-fp8-fast;attempts=1;result=(?!ok)[a-z0-9_]+, openai\/gpt-4o-mini;attempts=1;result=ok$/);
  });

  test('the TTFB timeout applies to the binding call (JSON and stream), then the next link answers', async () => {
    for (const stream of [false, true]) {
      wai().enqueue({ match: { path: SMALL }, delayHeadersMs: 5000 });
      const t0 = Date.now();
      const { data, response } = await client.chat.completions.create({ model: 'wai-slow', stream, messages: [{ role: 'user', content: 'slow' }] }).withResponse();
      let text = '';
      if (stream) for await (const chunk of data) text += chunk.choices[0]?.delta?.content ?? '';
      else text = data.choices[0].message.content;
      const elapsed = Date.now() - t0;
      assert.equal(text, 'mock(openai) reply to: slow');
      assert.ok(elapsed >= 550 && elapsed < 3000, `answered in ${elapsed} ms, expected ~0.6 s (the link's TTFB)`);
      assert.equal(response.headers.get('x-tollgate-trace'), `wai/${SMALL};attempts=1;result=ttfb_timeout, openai/gpt-4o-mini;attempts=1;result=ok`);
    }
  });

  test('a stream cut mid-way ends with upstream_truncated and is ledgered as such', async () => {
    wai().enqueue({ match: { path: LLAMA }, cutAfterChunks: 2 });
    const res = await fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: `wai/${LLAMA}`, stream: true, messages: [{ role: 'user', content: 'cut me short' }] }),
    });
    assert.equal(res.status, 200);
    const { frames } = await readSse(res);
    assert.ok(!frames.includes('data: [DONE]'));
    const lastFrame = JSON.parse(frames[frames.length - 1].slice('data: '.length));
    assert.equal(lastFrame.error.code, 'upstream_truncated');
    const row = await ledgerRow(res.headers.get('x-tollgate-request-id'));
    assert.equal(row.outcome, 'upstream_truncated');
    assert.equal(row.usage_source, 'estimated', 'a cut stream is never ledgered as free');
  });

  test('a provider whose binding this deployment lacks is skipped (fallback) or 503 on its own', async () => {
    const { data, response } = await client.chat.completions.create({ model: 'missing-first', messages: [{ role: 'user', content: 'skip' }] }).withResponse();
    assert.equal(data.choices[0].message.content, 'mock(openai) reply to: skip');
    assert.equal(response.headers.get('x-tollgate-trace'), `wai-missing/${LLAMA};attempts=0;result=no_binding, openai/gpt-4o-mini;attempts=1;result=ok`);
    const e = await client.chat.completions.create({ model: `wai-missing/${LLAMA}`, messages: [{ role: 'user', content: 'x' }] }).catch((err) => err);
    assert.equal(e.status, 503);
    assert.equal(e.code, 'provider_not_configured');
    assert.match(e.message, /AI_MISSING/);
    const cfg = await stack.admin('GET', '/admin/config');
    assert.equal(cfg.json.providers.wai.binding, 'AI');
    assert.equal(cfg.json.providers.wai.binding_state, 'set');
    assert.equal(cfg.json.providers.wai.api_key, 'not_required');
    assert.equal(cfg.json.providers['wai-missing'].binding_state, 'missing');
  });
});

describe('/v1/messages through the binding', () => {
  test('an Anthropic SDK client gets Anthropic messages and events from a Workers AI model', async () => {
    const anthropic = new Anthropic({ apiKey: key.key, baseURL: stack.url, maxRetries: 0 });
    const msg = await anthropic.messages.create({ model: `wai/${LLAMA}`, max_tokens: 64, messages: [{ role: 'user', content: 'hello claude client' }] });
    assert.equal(msg.type, 'message');
    assert.equal(msg.content[0].text, 'mock(wai) reply to: hello claude client');
    assert.equal(msg.stop_reason, 'end_turn');
    assert.equal(msg.usage.output_tokens, last().response.usage.completion_tokens);
    assert.deepEqual(last().json, { messages: [{ role: 'user', content: 'hello claude client' }], max_tokens: 64 });
    const stream = anthropic.messages.stream({ model: `wai/${LLAMA}`, max_tokens: 64, messages: [{ role: 'user', content: 'stream to claude' }] });
    const final = await stream.finalMessage();
    assert.equal(final.content[0].text, 'mock(wai) reply to: stream to claude');
  });
});

describe('embeddings through the binding', () => {
  test('float and base64 vectors from {text: [...]} → {shape, data}', async () => {
    wai().reset();
    const r = await client.embeddings.create({ model: `wai/${BGE}`, input: ['alpha beta', 'gamma'], encoding_format: 'float' });
    assert.equal(r.data.length, 2);
    assert.equal(r.data[0].embedding.length, 384);
    assert.deepEqual(last().json, { text: ['alpha beta', 'gamma'] });
    const b = await client.embeddings.create({ model: `wai/${BGE}`, input: 'alpha beta' });
    assert.equal(b.data[0].embedding.length, 384, 'the SDK decodes the base64 vector');
    for (let i = 0; i < 384; i++) assert.ok(Math.abs(b.data[0].embedding[i] - r.data[0].embedding[i]) < 1e-6);
  });
});
