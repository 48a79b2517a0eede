// Anthropic's Messages API into the gateway (issue 10), end to end: the
// official `@anthropic-ai/sdk` client pointed at the built Worker under
// `wrangler dev`, in front of mock providers speaking OpenAI's, Gemini's and
// Anthropic's own wire formats. The same SDK calls run against the three
// providers, changing only `model`: text, streaming (the SDK's stream helper
// must assemble the message a non-streamed call returns), tool use with
// streamed arguments, a tool-result round trip. Each test also checks what
// reached the provider. Then: auth (x-api-key and Bearer), errors in
// Anthropic's shape, the ledger row, and the fallback commit point (a
// fallback before the first byte is one clean stream; a cut after it ends
// with an `error` event and no second `message_start`).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';

import { readSse, startStack } from './harness.mjs';

const KEYS = {
  openai: 'sk-openai-canary-MSGS-5f1c2a9e7b3d4c60',
  gemini: 'canary-GEMINI-MSGS-2b8e4f6a1c9d3e57',
  anthropic: 'sk-ant-canary-MSGS-9d3a7c1e5b2f4a68',
};

const PROVIDERS = [
  { provider: 'openai', model: 'openai/gpt-4o-mini', upstreamModel: 'gpt-4o-mini', keyHeader: 'authorization', keyValue: `Bearer ${KEYS.openai}` },
  { provider: 'gemini', model: 'gemini/gemini-2.5-flash', upstreamModel: 'gemini-2.5-flash', keyHeader: 'x-goog-api-key', keyValue: KEYS.gemini },
  { provider: 'anthropic', model: 'anthropic/claude-sonnet-4-5', upstreamModel: 'claude-sonnet-4-5', keyHeader: 'x-api-key', keyValue: KEYS.anthropic },
];

const WEATHER = {
  name: 'get_weather',
  description: 'Current weather for a city',
  input_schema: { type: 'object', properties: { echo: { type: 'string' } }, required: ['echo'] },
};

let stack;
let key;
let client;

before(async () => {
  stack = await startStack({
    providers: {
      openai: { apiKey: KEYS.openai },
      gemini: { apiKey: KEYS.gemini },
      anthropic: { apiKey: KEYS.anthropic },
    },
    editConfig(gateway) {
      gateway.routes = {
        // Link 1 fails before its first byte, link 2 (the Anthropic pass-through) answers.
        'msg-fallback': { strategy: 'fallback', targets: [{ model: 'openai/msg-fallback' }, { model: 'anthropic/claude-fallback' }] },
        // Link 1 is cut after its first bytes: no fallback may follow.
        'msg-cut': { strategy: 'fallback', targets: [{ model: 'openai/msg-cut' }, { model: 'gemini/gemini-2.5-flash' }] },
      };
    },
  });
  key = await stack.createKey({ name: 'messages-tests' });
  client = new Anthropic({ apiKey: key.key, baseURL: stack.url, maxRetries: 0, timeout: 15_000 });
});

after(async () => {
  await stack?.stop();
});

function resetAll() {
  for (const m of Object.values(stack.mocks)) m.reset();
}

/** The only upstream request since the last reset, checking no other mock was called and no foreign key leaked. */
function onlyRequest(p) {
  for (const [name, m] of Object.entries(stack.mocks)) {
    if (name !== p.provider) assert.equal(m.requests().length, 0, `${p.provider} request must not reach ${name}`);
  }
  const reqs = stack.mocks[p.provider].requests();
  assert.equal(reqs.length, 1, `${p.provider}: exactly one upstream request`);
  const rec = reqs[0];
  assert.equal(rec.headers[p.keyHeader], p.keyValue, `${p.provider}: its own key in ${p.keyHeader}`);
  assert.ok(!rec.body.includes(key.key) && !JSON.stringify(rec.headers).includes(key.key), 'the virtual key never reaches a provider');
  return rec;
}

/** The parts of a message a streamed and a non-streamed call must agree on (tool ids aside). */
function comparable(m, { toolIds = false } = {}) {
  return {
    type: m.type,
    role: m.role,
    model: m.model,
    stop_reason: m.stop_reason,
    stop_sequence: m.stop_sequence,
    content: m.content.map((b) => (b.type === 'tool_use' && !toolIds ? { ...b, id: 'toolu' } : b)),
    usage: { input_tokens: m.usage.input_tokens, output_tokens: m.usage.output_tokens },
  };
}

/** Runs an SDK stream, returning its raw events and the helper's final message. */
async function streamed(params) {
  const stream = client.messages.stream(params);
  const events = [];
  stream.on('streamEvent', (e) => events.push(e));
  const message = await stream.finalMessage();
  return { events, message };
}

function assertStreamShape(events, ctx) {
  const types = events.map((e) => e.type);
  assert.equal(types[0], 'message_start', `${ctx}: starts with message_start`);
  assert.equal(types.filter((t) => t === 'message_start').length, 1, `${ctx}: one message_start`);
  assert.equal(types.at(-1), 'message_stop', `${ctx}: ends with message_stop`);
  assert.equal(types.at(-2), 'message_delta', `${ctx}: message_delta before message_stop`);
  const starts = events.filter((e) => e.type === 'content_block_start').map((e) => e.index);
  const stops = events.filter((e) => e.type === 'content_block_stop').map((e) => e.index);
  assert.deepEqual(stops, starts, `${ctx}: every block started is stopped, in order`);
  assert.deepEqual(starts, starts.map((_, i) => i), `${ctx}: block indexes count from 0`);
}

for (const p of PROVIDERS) {
  describe(`/v1/messages → ${p.provider}`, () => {
    const question = `Hello from the messages suite to ${p.provider}`;
    const reply = `mock(${p.provider}) reply to: ${question}`;

    test('text: a non-streamed message, and what reached the provider', async () => {
      resetAll();
      const params = { model: p.model, max_tokens: 256, system: 'Be brief.', messages: [{ role: 'user', content: question }], temperature: 0.5 };
      const { data: msg, response } = await client.messages.create(params).withResponse();
      assert.equal(response.headers.get('x-tollgate-provider'), p.provider);
      assert.equal(msg.type, 'message');
      assert.equal(msg.role, 'assistant');
      assert.match(msg.id, /^msg_/);
      assert.deepEqual(msg.content, [{ type: 'text', text: reply }]);
      assert.equal(msg.stop_reason, 'end_turn');
      assert.ok(msg.usage.input_tokens > 0 && msg.usage.output_tokens > 0, JSON.stringify(msg.usage));
      const rec = onlyRequest(p);
      if (p.provider === 'openai') {
        assert.equal(rec.path, '/v1/chat/completions');
        assert.deepEqual(rec.json.messages, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: question }]);
        assert.equal(rec.json.max_tokens, 256);
        assert.equal(rec.json.temperature, 0.5);
        assert.equal(msg.usage.output_tokens, rec.response.usage.completion_tokens);
      } else if (p.provider === 'gemini') {
        assert.equal(rec.path, '/v1beta/models/gemini-2.5-flash:generateContent');
        assert.deepEqual(rec.json.systemInstruction, { parts: [{ text: 'Be brief.' }] });
        assert.deepEqual(rec.json.contents, [{ role: 'user', parts: [{ text: question }] }]);
        assert.equal(rec.json.generationConfig.maxOutputTokens, 256);
      } else {
        // The pass-through: the client's body as sent, with the upstream model.
        assert.equal(rec.path, '/v1/messages');
        assert.deepEqual(rec.json, { ...params, model: p.upstreamModel });
        assert.equal(rec.headers['anthropic-version'], '2023-06-01');
        assert.equal(msg.usage.output_tokens, rec.response.usage.output_tokens);
      }
      const rows = await stack.ledger({ ids: [response.headers.get('x-tollgate-request-id')] });
      const row = rows.find((r) => r.request_id === response.headers.get('x-tollgate-request-id'));
      assert.ok(row, 'a ledger row');
      assert.equal(row.endpoint, 'messages');
      assert.equal(row.provider, p.provider);
      assert.ok(row.completion_tokens > 0);
    });

    test('streaming: Anthropic events, and stream.finalMessage() equals the non-streamed message', async () => {
      const params = { model: p.model, max_tokens: 256, messages: [{ role: 'user', content: question }] };
      resetAll();
      const whole = await client.messages.create(params);
      resetAll();
      const { events, message } = await streamed(params);
      assertStreamShape(events, p.provider);
      const deltas = events.filter((e) => e.type === 'content_block_delta');
      assert.ok(deltas.length > 3, 'text arrives in several deltas');
      assert.ok(deltas.every((d) => d.delta.type === 'text_delta'));
      assert.deepEqual(comparable(message), comparable(whole));
      const rec = onlyRequest(p);
      if (p.provider === 'gemini') assert.equal(rec.path, '/v1beta/models/gemini-2.5-flash:streamGenerateContent');
      else assert.equal(rec.json.stream, true);
      if (p.provider === 'openai') assert.deepEqual(rec.json.stream_options, { include_usage: true });
    });

    test('tool use with streamed arguments, the same as non-streamed', async () => {
      const params = {
        model: p.model,
        max_tokens: 256,
        tools: [WEATHER],
        tool_choice: { type: 'tool', name: 'get_weather' },
        messages: [{ role: 'user', content: 'Paris' }],
      };
      resetAll();
      const whole = await client.messages.create(params);
      assert.equal(whole.stop_reason, 'tool_use');
      const call = whole.content.find((b) => b.type === 'tool_use');
      assert.ok(call, JSON.stringify(whole.content));
      assert.equal(call.name, 'get_weather');
      assert.deepEqual(call.input, { echo: 'Paris' });
      assert.ok(call.id.length > 0);
      const rec = onlyRequest(p);
      if (p.provider === 'openai') {
        assert.deepEqual(rec.json.tools, [{ type: 'function', function: { name: 'get_weather', description: WEATHER.description, parameters: WEATHER.input_schema } }]);
        assert.deepEqual(rec.json.tool_choice, { type: 'function', function: { name: 'get_weather' } });
      } else if (p.provider === 'gemini') {
        assert.equal(rec.json.tools[0].functionDeclarations[0].name, 'get_weather');
      } else {
        assert.deepEqual(rec.json.tool_choice, params.tool_choice);
      }

      resetAll();
      const { events, message } = await streamed(params);
      assertStreamShape(events, p.provider);
      const start = events.find((e) => e.type === 'content_block_start' && e.content_block.type === 'tool_use');
      assert.ok(start, 'a tool_use block');
      assert.deepEqual(start.content_block.input, {});
      const fragments = events.filter((e) => e.type === 'content_block_delta' && e.delta.type === 'input_json_delta' && e.delta.partial_json !== '');
      // OpenAI-format and Anthropic providers stream the arguments in pieces;
      // Gemini sends a whole functionCall in one frame.
      assert.ok(fragments.length >= (p.provider === 'gemini' ? 1 : 2), `argument fragments: ${fragments.length}`);
      assert.deepEqual(JSON.parse(fragments.map((f) => f.delta.partial_json).join('')), { echo: 'Paris' });
      assert.equal(message.stop_reason, 'tool_use');
      assert.deepEqual(comparable(message), comparable(whole));
    });

    test('tool-result round trip: the tool answer reaches the provider and the model answers', async () => {
      resetAll();
      const first = await client.messages.create({
        model: p.model,
        max_tokens: 256,
        tools: [WEATHER],
        tool_choice: { type: 'any' },
        messages: [{ role: 'user', content: 'Weather in Oslo?' }],
      });
      const call = first.content.find((b) => b.type === 'tool_use');
      assert.ok(call);
      resetAll();
      const messages = [
        { role: 'user', content: 'Weather in Oslo?' },
        { role: 'assistant', content: first.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: '3 degrees and snowing' }] },
      ];
      const second = await client.messages.create({ model: p.model, max_tokens: 256, tools: [WEATHER], messages });
      assert.equal(second.stop_reason, 'end_turn');
      assert.equal(second.content[0].type, 'text');
      assert.match(second.content[0].text, new RegExp(`^mock\\(${p.provider}\\) reply to: `));
      const rec = onlyRequest(p);
      if (p.provider === 'openai') {
        const [user, assistant, tool] = rec.json.messages;
        assert.deepEqual(user, { role: 'user', content: 'Weather in Oslo?' });
        assert.deepEqual(assistant.tool_calls, [{ id: call.id, type: 'function', function: { name: 'get_weather', arguments: JSON.stringify(call.input) } }]);
        assert.deepEqual(tool, { role: 'tool', tool_call_id: call.id, content: '3 degrees and snowing' });
      } else if (p.provider === 'gemini') {
        const last = rec.json.contents.at(-1);
        assert.equal(last.parts[0].functionResponse.name, 'get_weather');
        assert.match(second.content[0].text, /3 degrees and snowing/);
      } else {
        assert.deepEqual(rec.json.messages, JSON.parse(JSON.stringify(messages)));
      }
    });
  });
}

describe('auth and errors in Anthropic shape', () => {
  test('x-api-key (the SDK default) and Authorization: Bearer both carry the virtual key', async () => {
    const bearer = new Anthropic({ apiKey: null, authToken: key.key, baseURL: stack.url, maxRetries: 0 });
    const msg = await bearer.messages.create({ model: 'openai/gpt-4o-mini', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(msg.type, 'message');
  });

  test('a wrong key → 401 authentication_error; a bad request → 400 invalid_request_error naming the field', async () => {
    const wrong = new Anthropic({ apiKey: 'tg-not-a-real-key', baseURL: stack.url, maxRetries: 0 });
    await assert.rejects(
      wrong.messages.create({ model: 'openai/gpt-4o-mini', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
      (e) => e instanceof Anthropic.AuthenticationError && e.status === 401 && e.error.type === 'error' && e.error.error.type === 'authentication_error',
    );
    await assert.rejects(
      client.messages.create({ model: 'openai/gpt-4o-mini', max_tokens: 16, messages: [{ role: 'tool', content: 'hi' }] }),
      (e) => e instanceof Anthropic.BadRequestError && e.error.error.type === 'invalid_request_error' && /messages\[0\]\.role/.test(e.error.error.message),
    );
    await assert.rejects(
      client.messages.create({ model: 'nope/none', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
      (e) => e instanceof Anthropic.NotFoundError && e.error.error.type === 'not_found_error',
    );
  });

  test('an upstream failure reaches the client as an Anthropic error with the mapped status', async () => {
    resetAll();
    stack.mocks.openai.enqueue({ rateLimit: { retryAfter: '7' } });
    await assert.rejects(
      client.messages.create({ model: 'openai/gpt-4o-mini', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
      (e) => e instanceof Anthropic.RateLimitError && e.error.error.type === 'rate_limit_error' && e.headers.get('retry-after') === '7',
    );
  });

  test('count_tokens is not offered: 404 in Anthropic shape', async () => {
    const r = await fetch(`${stack.url}/v1/messages/count_tokens`, {
      method: 'POST',
      headers: { 'x-api-key': key.key, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(r.status, 404);
    const body = await r.json();
    assert.equal(body.type, 'error');
    assert.equal(body.error.type, 'not_found_error');
  });
});

describe('exact cache', () => {
  test('a repeat is a HIT, replayed as the same message (JSON) and as Anthropic events (stream)', async () => {
    resetAll();
    const params = { model: 'openai/gpt-4o-mini', max_tokens: 64, temperature: 0, messages: [{ role: 'user', content: 'cache me please' }] };
    const opts = { headers: { 'x-tollgate-cache': 'exact' } };
    const first = await client.messages.create(params, opts).withResponse();
    assert.equal(first.response.headers.get('x-tollgate-cache'), 'MISS');
    // The cache write happens after the response.
    let again;
    for (let i = 0; i < 50; i++) {
      again = await client.messages.create(params, opts).withResponse();
      if (again.response.headers.get('x-tollgate-cache') === 'HIT') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(again.response.headers.get('x-tollgate-cache'), 'HIT');
    assert.deepEqual(again.data.content, first.data.content);
    assert.equal(again.data.stop_reason, 'end_turn');
    const stream = client.messages.stream(params, opts);
    const events = [];
    stream.on('streamEvent', (e) => events.push(e));
    const message = await stream.finalMessage();
    assertStreamShape(events, 'cache replay');
    assert.deepEqual(comparable(message), comparable(again.data));
    assert.equal(stack.mocks.openai.requests().length, 1, 'only the first call reached the provider');
  });
});

describe('the fallback commit point', () => {
  test('a failure before the first byte falls back invisibly: one clean stream', async () => {
    resetAll();
    stack.mocks.openai.enqueue({ match: { model: 'msg-fallback' }, errorFrame: true });
    const r = await fetch(`${stack.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': key.key, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'msg-fallback', max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'fall back' }] }),
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-tollgate-provider'), 'anthropic');
    const { frames } = await readSse(r);
    const names = frames.map((f) => /^event: (.*)$/m.exec(f)?.[1]);
    assert.equal(names.filter((n) => n === 'message_start').length, 1, 'one message_start');
    assert.equal(names.filter((n) => n === 'error').length, 0, 'the failed link is not relayed');
    assert.equal(names.at(-1), 'message_stop');
    assert.equal(stack.mocks.openai.requests().length, 1);
    assert.equal(stack.mocks.anthropic.requests().length, 1);
    // The SDK sees one complete message.
    resetAll();
    stack.mocks.openai.enqueue({ match: { model: 'msg-fallback' }, errorFrame: true });
    const { events, message } = await streamed({ model: 'msg-fallback', max_tokens: 64, messages: [{ role: 'user', content: 'fall back' }] });
    assertStreamShape(events, 'fallback');
    assert.deepEqual(message.content, [{ type: 'text', text: 'mock(anthropic) reply to: fall back' }]);
  });

  test('a cut after the first byte ends with an error event, no second message_start and no fallback', async () => {
    resetAll();
    const long = Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');
    stack.mocks.openai.enqueue({ match: { model: 'msg-cut' }, cutAfterChunks: 5, resetAfterBytes: 1e9 });
    const r = await fetch(`${stack.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': key.key, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'msg-cut', max_tokens: 256, stream: true, messages: [{ role: 'user', content: long }] }),
    });
    assert.equal(r.status, 200);
    const requestId = r.headers.get('x-tollgate-request-id');
    const { frames } = await readSse(r);
    const names = frames.map((f) => /^event: (.*)$/m.exec(f)?.[1]);
    assert.equal(names[0], 'message_start');
    assert.equal(names.filter((n) => n === 'message_start').length, 1, 'no second message_start');
    assert.equal(names.at(-1), 'error', `ends with an error event: ${names.join(',')}`);
    assert.ok(!names.includes('message_stop'), 'no message_stop');
    const error = JSON.parse(/^data: (.*)$/m.exec(frames.at(-1))[1]);
    assert.equal(error.type, 'error');
    assert.equal(error.error.type, 'api_error');
    assert.equal(stack.mocks.gemini.requests().length, 0, 'never falls back after the commit point');

    // The SDK raises instead of returning a cut answer.
    resetAll();
    stack.mocks.openai.enqueue({ match: { model: 'msg-cut' }, cutAfterChunks: 5, resetAfterBytes: 1e9 });
    await assert.rejects(streamed({ model: 'msg-cut', max_tokens: 256, messages: [{ role: 'user', content: long }] }), (e) => e instanceof Anthropic.APIError);

    const rows = await stack.ledger({ ids: [requestId] });
    const row = rows.find((x) => x.request_id === requestId);
    assert.ok(row);
    assert.equal(row.endpoint, 'messages');
    assert.equal(row.outcome, 'upstream_truncated');
  });
});
