// Anthropic, Gemini and Azure OpenAI behind the gateway, end to end: the
// built Worker under `wrangler dev` in front of the mock providers speaking
// each provider's own wire format, with the official `openai` SDK as the
// client. The point: an app written against OpenAI's SDK cannot tell which
// provider answered except by `model` — every test below runs the same SDK
// call for the three providers, changing only `model`.
//
// For each provider the tests check what the client sees (content, finish
// reasons, usage, stream shape, tool calls, errors in OpenAI's shape) and
// what the provider received (URL path and query, its own key in its own
// header and nobody else's key anywhere, the body in its wire format), and
// that the ledger row carries the provider's usage.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { embeddingVector } from '../mock/flavors/openai.mjs';
import { startStack } from './harness.mjs';

// Canary keys: distinct, recognisable, so any leak is unambiguous.
const KEYS = {
  anthropic: 'sk-ant-canary-ANTHROPIC-3b9f0c7e1d5a4f82',
  gemini: 'canary-GEMINI-key-8e2d6a0b4c7f1e93',
  azure: 'canary-AZURE-key-5c1e9b3f7a0d2e64',
};
const ANTHROPIC_VERSION = '2023-06-01';
const AZURE_API_VERSION = '2024-10-21';

/** The three providers: the only thing that changes between SDK calls is `model`. */
const PROVIDERS = [
  {
    provider: 'anthropic',
    model: 'anthropic/claude-sonnet-4-5',
    upstreamModel: 'claude-sonnet-4-5',
    keyHeader: 'x-api-key',
    path: '/v1/messages',
    query: {},
    streamPath: '/v1/messages',
    streamQuery: {},
  },
  {
    provider: 'gemini',
    model: 'gemini/gemini-2.5-flash',
    upstreamModel: 'gemini-2.5-flash',
    keyHeader: 'x-goog-api-key',
    path: '/v1beta/models/gemini-2.5-flash:generateContent',
    query: {},
    streamPath: '/v1beta/models/gemini-2.5-flash:streamGenerateContent',
    streamQuery: { alt: 'sse' },
  },
  {
    provider: 'azure',
    model: 'azure/my-deployment',
    upstreamModel: 'my-deployment',
    keyHeader: 'api-key',
    path: '/openai/deployments/my-deployment/chat/completions',
    query: { 'api-version': AZURE_API_VERSION },
    streamPath: '/openai/deployments/my-deployment/chat/completions',
    streamQuery: { 'api-version': AZURE_API_VERSION },
  },
];
const KEY_HEADERS = ['x-api-key', 'x-goog-api-key', 'api-key'];

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather for a city',
    parameters: { type: 'object', properties: { echo: { type: 'string' } }, required: ['echo'] },
  },
};

let stack;
let key;
let client;

before(async () => {
  stack = await startStack({
    providers: {
      anthropic: { apiKey: KEYS.anthropic },
      gemini: { apiKey: KEYS.gemini },
      azure: { apiKey: KEYS.azure },
    },
  });
  key = await stack.createKey({ name: 'providers-tests' });
  client = new OpenAI({ apiKey: key.key, baseURL: `${stack.url}/v1`, maxRetries: 0, timeout: 15_000 });
});

after(async () => {
  await stack?.stop();
});

// ------------------------------------------------------------------ helpers

function mock(p) {
  return stack.mocks[p.provider];
}

function resetAll() {
  for (const m of Object.values(stack.mocks)) m.reset();
}

/** The only upstream request since the last reset, after checking no other mock was called. */
function onlyRequest(p) {
  for (const [name, m] of Object.entries(stack.mocks)) {
    if (name !== p.provider) assert.equal(m.requests().length, 0, `${p.provider} request must not reach ${name}`);
  }
  const reqs = mock(p).requests();
  assert.equal(reqs.length, 1, `${p.provider}: exactly one upstream request`);
  return reqs[0];
}

/** The mock's recorded usage in OpenAI terms (Anthropic records its own shape). */
function mockUsage(p, rec) {
  const u = rec.response.usage;
  assert.ok(u, `${p.provider}: the mock recorded usage`);
  if (p.provider === 'anthropic') {
    const prompt = u.input_tokens + (u.cache_read_input_tokens ?? 0) + (u.cache_creation_input_tokens ?? 0);
    return { prompt_tokens: prompt, completion_tokens: u.output_tokens, total_tokens: prompt + u.output_tokens };
  }
  return { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total_tokens };
}

function assertUsage(actual, expected, context) {
  assert.ok(actual, `${context}: usage present`);
  assert.equal(actual.prompt_tokens, expected.prompt_tokens, `${context}: prompt_tokens`);
  assert.equal(actual.completion_tokens, expected.completion_tokens, `${context}: completion_tokens`);
  assert.equal(actual.total_tokens, expected.total_tokens, `${context}: total_tokens`);
  assert.ok(expected.completion_tokens > 0 && expected.prompt_tokens > 0, `${context}: non-trivial usage`);
}

/** Where the request went and with which credentials. */
function assertUpstreamTarget(p, rec, { stream = false } = {}) {
  const ctx = p.provider;
  assert.equal(rec.method, 'POST', ctx);
  assert.equal(rec.path, stream ? p.streamPath : p.path, `${ctx}: URL path`);
  assert.deepEqual(rec.query, stream ? p.streamQuery : p.query, `${ctx}: URL query`);
  assert.equal(rec.headers[p.keyHeader], KEYS[p.provider], `${ctx}: its key in ${p.keyHeader}`);
  for (const h of KEY_HEADERS) if (h !== p.keyHeader) assert.equal(rec.headers[h], undefined, `${ctx}: no ${h} header`);
  assert.equal(rec.headers.authorization, undefined, `${ctx}: no authorization header (the virtual key stays at the gateway)`);
  const everything = JSON.stringify({ url: rec.url, headers: rec.headers, body: rec.body });
  assert.ok(!everything.includes(key.key), `${ctx}: the virtual key never reaches the provider`);
  for (const [other, k] of Object.entries(KEYS)) {
    if (other !== p.provider) assert.ok(!everything.includes(k), `${ctx}: ${other}'s key never sent to ${p.provider}`);
  }
  if (p.provider === 'anthropic') assert.equal(rec.headers['anthropic-version'], ANTHROPIC_VERSION);
  assert.match(rec.headers['content-type'] ?? '', /^application\/json/, `${ctx}: JSON body`);
}

/** Text of an Anthropic `content` (string or text blocks). */
function anthropicText(content) {
  if (typeof content === 'string') return content;
  return content
    .filter((b) => b.type === 'text')
    .map((b) => b.text)
    .join('');
}

/** Text of a Gemini content's text parts. */
function geminiText(content) {
  return content.parts
    .filter((part) => typeof part.text === 'string')
    .map((part) => part.text)
    .join('');
}

/** Ledger row for one request id, waiting for the post-response write. */
async function ledgerRow(requestId, timeoutMs = 10_000) {
  assert.match(requestId ?? '', /^req_[0-9a-f]{32}$/, 'request id header');
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await stack.admin('GET', `/admin/requests/${requestId}`);
    if (r.status === 200) return r.json;
    assert.equal(r.status, 404, r.text);
    if (Date.now() > until) assert.fail(`no ledger row for ${requestId}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

async function assertLedgerOk(p, requestId, usage, { stream = false, endpoint = 'chat.completions' } = {}) {
  const row = await ledgerRow(requestId);
  const ctx = `${p.provider} ledger ${JSON.stringify(row)}`;
  assert.equal(row.key_id, key.id, ctx);
  assert.equal(row.provider, p.provider, ctx);
  assert.equal(row.endpoint, endpoint, ctx);
  assert.equal(row.model_requested, p.model, ctx);
  assert.equal(row.stream, stream ? 1 : 0, ctx);
  assert.equal(row.status, 200, ctx);
  assert.equal(row.outcome, 'ok', ctx);
  assert.equal(row.error_code, null, ctx);
  if (usage) {
    assert.equal(row.usage_source, 'provider', ctx);
    assert.equal(row.prompt_tokens, usage.prompt_tokens, ctx);
    assert.equal(row.completion_tokens, usage.completion_tokens, ctx);
    assert.equal(row.total_tokens, usage.total_tokens, ctx);
  }
  return row;
}

/** Raw request to the gateway, for reading whole error bodies. */
async function call(path, body, { apiKey = key.key, headers = {} } = {}) {
  const r = await fetch(stack.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}`, ...headers },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: r.status, headers: r.headers, text, json, requestId: r.headers.get('x-tollgate-request-id') };
}

/** OpenAI's error body: exactly {"error":{message,type,param,code}}. */
function assertErrorBody(json, { code, param, type } = {}, context = '') {
  const where = `${context} ${JSON.stringify(json)}`;
  assert.ok(json && typeof json === 'object' && !Array.isArray(json), `error body is an object: ${where}`);
  assert.deepEqual(Object.keys(json), ['error'], `only "error" at the top level: ${where}`);
  const e = json.error;
  assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'param', 'type'], `exactly the 4 OpenAI error keys: ${where}`);
  assert.equal(typeof e.message, 'string', where);
  assert.ok(e.message.length > 0, where);
  if (code !== undefined) assert.equal(e.code, code, where);
  if (param !== undefined) assert.equal(e.param, param, where);
  if (type !== undefined) assert.equal(e.type, type, where);
  return e;
}

function assertNoProviderKey(text, context) {
  for (const [name, k] of Object.entries(KEYS)) {
    assert.ok(!text.includes(k), `${context}: ${name}'s key in the client's body: ${text}`);
    // Not even a recognisable piece of it.
    assert.ok(!text.includes(k.slice(-16)), `${context}: part of ${name}'s key in the client's body: ${text}`);
  }
}

/** Runs `fn`, expecting an APIError; returns it. */
async function sdkError(fn) {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIError, `expected an APIError, got ${err}`);
    return err;
  }
  assert.fail('expected the SDK call to fail');
}

/** Drains an SDK stream: text, reasoning, role chunks, usage chunks, tool-call fragments per index. */
async function drain(stream) {
  const out = { chunks: [], text: '', reasoning: '', roles: 0, usages: [], finish: [], tools: new Map() };
  for await (const chunk of stream) {
    out.chunks.push(chunk);
    if (chunk.usage != null) out.usages.push(chunk.usage);
    for (const c of chunk.choices ?? []) {
      const d = c.delta ?? {};
      if (d.role) out.roles += 1;
      if (typeof d.content === 'string') out.text += d.content;
      if (typeof d.reasoning_content === 'string') out.reasoning += d.reasoning_content;
      if (c.finish_reason) out.finish.push(c.finish_reason);
      for (const tc of d.tool_calls ?? []) {
        const t = out.tools.get(tc.index) ?? { id: '', name: '', args: '' };
        if (tc.id) t.id += tc.id;
        if (tc.function?.name) t.name += tc.function.name;
        if (tc.function?.arguments) t.args += tc.function.arguments;
        out.tools.set(tc.index, t);
      }
    }
  }
  return out;
}

const reply = (p, text) => `mock(${p.provider}) reply to: ${text}`;

const CONVERSATION = [
  { role: 'system', content: 'be brief' },
  { role: 'user', content: 'first question' },
  { role: 'assistant', content: 'first answer' },
  { role: 'user', content: 'hello gateway' },
];

/** The conversation above, in each provider's wire format. */
function assertConversationBody(p, json) {
  const ctx = `${p.provider} body ${JSON.stringify(json)}`;
  if (p.provider === 'anthropic') {
    assert.equal(json.model, p.upstreamModel, ctx);
    assert.ok(Number.isInteger(json.max_tokens) && json.max_tokens > 0, `${ctx}: max_tokens required by Anthropic`);
    assert.equal(typeof json.system === 'string' ? json.system : anthropicText(json.system), 'be brief', `${ctx}: system top-level`);
    assert.deepEqual(
      json.messages.map((m) => [m.role, anthropicText(m.content)]),
      [
        ['user', 'first question'],
        ['assistant', 'first answer'],
        ['user', 'hello gateway'],
      ],
      ctx,
    );
    assert.equal(json.temperature, 0.2, ctx);
    for (const f of ['stream_options', 'n', 'max_completion_tokens']) assert.equal(json[f], undefined, `${ctx}: no ${f}`);
  } else if (p.provider === 'gemini') {
    assert.equal(json.model, undefined, `${ctx}: model is in the URL only`);
    assert.equal(json.messages, undefined, ctx);
    assert.equal(geminiText(json.systemInstruction), 'be brief', `${ctx}: systemInstruction`);
    assert.deepEqual(
      json.contents.map((c) => [c.role, geminiText(c)]),
      [
        ['user', 'first question'],
        ['model', 'first answer'],
        ['user', 'hello gateway'],
      ],
      ctx,
    );
    assert.equal(json.generationConfig?.temperature, 0.2, ctx);
  } else {
    assert.equal(json.model, p.upstreamModel, ctx);
    assert.deepEqual(json.messages, CONVERSATION, `${ctx}: OpenAI messages as sent`);
    assert.equal(json.temperature, 0.2, ctx);
  }
}

// ------------------------------------------------- 1. non-streamed completions

describe('non-streamed completion, same SDK call for every provider', () => {
  for (const p of PROVIDERS) {
    test(`${p.model}: reply, usage, headers, upstream URL/key/body, ledger`, async () => {
      resetAll();
      const { data, response } = await client.chat.completions
        .create({ model: p.model, messages: CONVERSATION, temperature: 0.2 })
        .withResponse();
      assert.equal(data.object, 'chat.completion');
      assert.equal(data.choices.length, 1);
      assert.equal(data.choices[0].message.role, 'assistant');
      assert.equal(data.choices[0].message.content, reply(p, 'hello gateway'));
      assert.equal(data.choices[0].finish_reason, 'stop');
      assert.equal(data.choices[0].message.tool_calls ?? undefined, undefined);
      assert.equal(data.model, p.upstreamModel, 'model is the only tell');
      assert.equal(response.headers.get('x-tollgate-provider'), p.provider);
      const requestId = response.headers.get('x-tollgate-request-id');

      const rec = onlyRequest(p);
      assertUpstreamTarget(p, rec);
      assertConversationBody(p, rec.json);
      if (p.provider !== 'gemini') assert.ok(rec.json.stream === undefined || rec.json.stream === false, 'not streamed');

      const usage = mockUsage(p, rec);
      assertUsage(data.usage, usage, p.provider);
      await assertLedgerOk(p, requestId, usage);
    });
  }
});

// ------------------------------------------------------ 2. streamed completions

describe('streamed completion', () => {
  for (const p of PROVIDERS) {
    test(`${p.model}: deltas, one role chunk, clean end, no usage unless asked`, async () => {
      resetAll();
      const { data: stream, response } = await client.chat.completions
        .create({ model: p.model, messages: [{ role: 'user', content: 'stream this please' }], stream: true })
        .withResponse();
      assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
      assert.equal(response.headers.get('x-tollgate-provider'), p.provider);
      const out = await drain(stream); // completes: the SDK iterator ended cleanly
      assert.equal(out.text, reply(p, 'stream this please'));
      assert.equal(out.roles, 1, 'exactly one role chunk');
      assert.deepEqual(out.finish, ['stop']);
      assert.equal(out.usages.length, 0, `no usage unless asked: ${JSON.stringify(out.usages)}`);
      for (const c of out.chunks) {
        assert.equal(c.object, 'chat.completion.chunk');
        assert.equal(c.model, p.upstreamModel);
      }
      assert.equal(new Set(out.chunks.map((c) => c.id)).size, 1, 'one completion id across chunks');

      const rec = onlyRequest(p);
      assertUpstreamTarget(p, rec, { stream: true });
      if (p.provider === 'anthropic') assert.equal(rec.json.stream, true);
      if (p.provider === 'azure') assert.equal(rec.json.stream, true);
      if (p.provider === 'gemini') assert.equal(rec.json.stream, undefined, 'Gemini streams by URL, not body');
      await assertLedgerOk(p, response.headers.get('x-tollgate-request-id'), mockUsage(p, rec), { stream: true });
    });

    test(`${p.model}: stream_options.include_usage → final usage chunk equals the mock's usage`, async () => {
      resetAll();
      const { data: stream, response } = await client.chat.completions
        .create({
          model: p.model,
          messages: [{ role: 'user', content: 'count my tokens please' }],
          stream: true,
          stream_options: { include_usage: true },
        })
        .withResponse();
      const out = await drain(stream);
      assert.equal(out.text, reply(p, 'count my tokens please'));
      assert.equal(out.roles, 1);
      assert.equal(out.usages.length, 1, `exactly one usage chunk: ${JSON.stringify(out.usages)}`);
      const last = out.chunks.at(-1);
      assert.ok(last.usage, 'the usage chunk is the last one');
      assert.deepEqual(last.choices, [], 'usage chunk has no choices');
      const rec = onlyRequest(p);
      if (p.provider === 'anthropic' || p.provider === 'gemini') {
        assert.equal(rec.json.stream_options, undefined, `${p.provider} gets no OpenAI-only stream_options`);
      }
      const usage = mockUsage(p, rec);
      assertUsage(last.usage, usage, p.provider);
      await assertLedgerOk(p, response.headers.get('x-tollgate-request-id'), usage, { stream: true });
    });
  }
});

// ------------------------------------------------------------------ 3. tools

/** The tool-call turn and its result, in each provider's wire format. */
function assertToolRoundTripBody(p, json, toolCall) {
  const ctx = `${p.provider} body ${JSON.stringify(json)}`;
  const args = JSON.parse(toolCall.function.arguments);
  if (p.provider === 'anthropic') {
    assert.deepEqual(
      json.messages.map((m) => m.role),
      ['user', 'assistant', 'user'],
      ctx,
    );
    const use = json.messages[1].content.find((b) => b.type === 'tool_use');
    assert.ok(use, `${ctx}: tool_use block`);
    assert.equal(use.id, toolCall.id, ctx);
    assert.equal(use.name, 'get_weather', ctx);
    assert.deepEqual(use.input, args, ctx);
    const result = json.messages[2].content.find((b) => b.type === 'tool_result');
    assert.ok(result, `${ctx}: tool_result block`);
    assert.equal(result.tool_use_id, toolCall.id, ctx);
    assert.match(JSON.stringify(result.content), /21/, ctx);
    assert.equal(json.tools[0].name, 'get_weather', ctx);
    assert.ok(json.tools[0].input_schema, ctx);
  } else if (p.provider === 'gemini') {
    assert.deepEqual(
      json.contents.map((c) => c.role),
      ['user', 'model', 'user'],
      ctx,
    );
    const callPart = json.contents[1].parts.find((part) => part.functionCall);
    assert.ok(callPart, `${ctx}: functionCall part`);
    assert.deepEqual(callPart.functionCall, { name: 'get_weather', args }, `${ctx}: no id sent back`);
    assert.equal(typeof callPart.thoughtSignature, 'string', `${ctx}: thought signature sent back with the call`);
    const resultPart = json.contents[2].parts.find((part) => part.functionResponse);
    assert.ok(resultPart, `${ctx}: functionResponse part`);
    assert.deepEqual(resultPart.functionResponse, { name: 'get_weather', response: { temp_c: 21 } }, ctx);
    assert.equal(json.tools[0].functionDeclarations[0].name, 'get_weather', ctx);
  } else {
    assert.equal(json.messages[1].role, 'assistant', ctx);
    assert.equal(json.messages[1].tool_calls[0].id, toolCall.id, ctx);
    assert.equal(json.messages[1].tool_calls[0].function.name, 'get_weather', ctx);
    assert.deepEqual(JSON.parse(json.messages[1].tool_calls[0].function.arguments), args, ctx);
    assert.deepEqual(json.messages[2], { role: 'tool', tool_call_id: toolCall.id, content: '{"temp_c":21}' }, ctx);
    assert.equal(json.tools[0].function.name, 'get_weather', ctx);
  }
}

function assertForcedToolBody(p, json) {
  const ctx = `${p.provider} body ${JSON.stringify(json)}`;
  if (p.provider === 'anthropic') {
    assert.deepEqual(json.tool_choice, { type: 'any' }, ctx);
    assert.deepEqual(json.tools[0].input_schema, WEATHER_TOOL.function.parameters, ctx);
    assert.equal(json.tools[0].description, WEATHER_TOOL.function.description, ctx);
  } else if (p.provider === 'gemini') {
    assert.equal(json.toolConfig.functionCallingConfig.mode, 'ANY', ctx);
    assert.equal(json.tools[0].functionDeclarations[0].name, 'get_weather', ctx);
  } else {
    assert.equal(json.tool_choice, 'required', ctx);
    assert.deepEqual(json.tools, [WEATHER_TOOL], ctx);
  }
}

describe('tool calls', () => {
  const QUESTION = 'weather in Paris?';
  for (const p of PROVIDERS) {
    test(`${p.model}: tool_choice required → one tool call; the result round trip is accepted`, async () => {
      resetAll();
      const first = await client.chat.completions.create({
        model: p.model,
        messages: [{ role: 'user', content: QUESTION }],
        tools: [WEATHER_TOOL],
        tool_choice: 'required',
      });
      const choice = first.choices[0];
      assert.equal(choice.finish_reason, 'tool_calls');
      assert.equal(choice.message.tool_calls.length, 1);
      const tc = choice.message.tool_calls[0];
      assert.equal(tc.type, 'function');
      assert.equal(tc.function.name, 'get_weather');
      assert.ok(typeof tc.id === 'string' && tc.id.length > 0, 'tool call id');
      assert.deepEqual(JSON.parse(tc.function.arguments), { echo: QUESTION });
      const rec1 = onlyRequest(p);
      assertUpstreamTarget(p, rec1);
      assertForcedToolBody(p, rec1.json);
      assertUsage(first.usage, mockUsage(p, rec1), p.provider);

      resetAll();
      const second = await client.chat.completions.create({
        model: p.model,
        messages: [
          { role: 'user', content: QUESTION },
          { role: 'assistant', content: null, tool_calls: [tc] },
          { role: 'tool', tool_call_id: tc.id, content: '{"temp_c":21}' },
        ],
        tools: [WEATHER_TOOL],
      });
      assert.equal(second.choices[0].finish_reason, 'stop');
      assert.ok(second.choices[0].message.content.startsWith(`mock(${p.provider}) reply to: `), second.choices[0].message.content);
      const rec2 = onlyRequest(p);
      assertUpstreamTarget(p, rec2);
      assertToolRoundTripBody(p, rec2.json, tc);
    });

    test(`${p.model}: streamed tool call — fragments per index parse to the same object`, async () => {
      resetAll();
      const stream = await client.chat.completions.create({
        model: p.model,
        messages: [{ role: 'user', content: QUESTION }],
        tools: [WEATHER_TOOL],
        tool_choice: 'required',
        stream: true,
        stream_options: { include_usage: true },
      });
      const out = await drain(stream);
      assert.deepEqual([...out.tools.keys()], [0], 'one tool call, index 0');
      const t = out.tools.get(0);
      assert.equal(t.name, 'get_weather');
      assert.ok(t.id.length > 0, 'tool call id streamed');
      assert.deepEqual(JSON.parse(t.args), { echo: QUESTION });
      assert.deepEqual(out.finish, ['tool_calls']);
      assert.equal(out.roles, 1);
      assert.equal(out.text, '');
      const rec = onlyRequest(p);
      assertUpstreamTarget(p, rec, { stream: true });
      assertUsage(out.usages.at(-1), mockUsage(p, rec), p.provider);

      // The streamed call, sent back, is as good as the non-streamed one.
      resetAll();
      const toolCall = { id: t.id, type: 'function', function: { name: t.name, arguments: t.args } };
      const next = await client.chat.completions.create({
        model: p.model,
        messages: [
          { role: 'user', content: QUESTION },
          { role: 'assistant', content: null, tool_calls: [toolCall] },
          { role: 'tool', tool_call_id: t.id, content: '{"temp_c":21}' },
        ],
        tools: [WEATHER_TOOL],
      });
      assert.equal(next.choices[0].finish_reason, 'stop');
      assertToolRoundTripBody(p, onlyRequest(p).json, toolCall);
    });
  }
});

// ----------------------------------------------------------------- 4. errors

/** A provider-shaped error body whose message quotes the provider key. */
function errorBodyQuotingKey(p, status) {
  const message = `the request was refused; credential presented: ${KEYS[p.provider]}`;
  if (p.provider === 'anthropic') {
    return { type: 'error', error: { type: status === 400 ? 'invalid_request_error' : 'authentication_error', message }, request_id: 'req_x' };
  }
  if (p.provider === 'gemini') {
    return { error: { code: status, message, status: status === 400 ? 'INVALID_ARGUMENT' : 'UNAUTHENTICATED' } };
  }
  return { error: { code: String(status), message } };
}

describe('upstream errors in OpenAI shape', () => {
  for (const p of PROVIDERS) {
    test(`${p.model}: 429 / 401 / 403 / 500 / 529 / key-quoting bodies`, async () => {
      const HELLO = [{ role: 'user', content: 'provoke an error' }];
      const cases = [
        { name: '429', fault: { rateLimit: { retryAfter: '7' } }, status: 429, code: 'upstream_rate_limited', retryAfter: '7' },
        { name: '401', fault: { status: 401 }, status: 502, code: 'upstream_auth_failed' },
        { name: '403', fault: { status: 403 }, status: 502, code: 'upstream_auth_failed' },
        { name: '500', fault: { status: 500 }, status: 502, code: 'upstream_error' },
        {
          name: '529',
          fault: { status: 529 },
          status: p.provider === 'anthropic' ? 503 : 502,
          code: p.provider === 'anthropic' ? 'upstream_overloaded' : 'upstream_error',
        },
        { name: '401 quoting the key', fault: { status: 401, body: errorBodyQuotingKey(p, 401) }, status: 502, code: 'upstream_auth_failed' },
        { name: '400 quoting the key', fault: { status: 400, body: errorBodyQuotingKey(p, 400) }, status: 400, code: 'upstream_invalid_request' },
        { name: 'stream 500', fault: { status: 500 }, stream: true, status: 502, code: 'upstream_error' },
        { name: 'stream 429', fault: { rateLimit: { retryAfter: '3' } }, stream: true, status: 429, code: 'upstream_rate_limited', retryAfter: '3' },
      ];
      for (const c of cases) {
        resetAll();
        mock(p).enqueue(c.fault);
        const res = await call('/v1/chat/completions', { model: p.model, messages: HELLO, ...(c.stream ? { stream: true } : {}) });
        const ctx = `${p.provider} ${c.name}`;
        assert.equal(res.status, c.status, `${ctx}: ${res.text}`);
        assert.match(res.headers.get('content-type') ?? '', /^application\/json/, ctx);
        const e = assertErrorBody(res.json, { code: c.code }, ctx);
        if (c.status >= 500) assert.ok(c.status < 600);
        if (c.retryAfter) assert.equal(res.headers.get('retry-after'), c.retryAfter, `${ctx}: retry-after passed on`);
        assert.ok(e.message.includes(p.provider), `${ctx}: message names the provider: ${e.message}`);
        assertNoProviderKey(res.text, ctx);
        assertNoProviderKey(JSON.stringify([...res.headers]), `${ctx} headers`);
        assert.equal(res.headers.get('x-tollgate-provider') ?? p.provider, p.provider, ctx);
        const rec = onlyRequest(p);
        assert.equal(rec.response.faults.length, 1, `${ctx}: the fault was used`);
        const row = await ledgerRow(res.requestId);
        assert.equal(row.provider, p.provider, ctx);
        assert.equal(row.status, c.status, ctx);
        assert.equal(row.outcome, 'upstream_error', ctx);
        assert.equal(row.error_code, c.code, ctx);
      }
    });

    test(`${p.model}: stream faults — an error as the first event is a 502; a cut stream ends in an error the SDK throws`, async () => {
      resetAll();
      mock(p).enqueue({ errorFrame: true });
      const err = await sdkError(async () => {
        const stream = await client.chat.completions.create({ model: p.model, messages: [{ role: 'user', content: 'a b c d' }], stream: true });
        await drain(stream);
      });
      assert.equal(err.status, 502);
      assert.equal(err.code, 'upstream_error');
      assert.equal((await ledgerRow(err.headers.get('x-tollgate-request-id'))).outcome, 'upstream_error');

      resetAll();
      mock(p).enqueue({ cutAfterChunks: 2 });
      const { data: stream, response } = await client.chat.completions
        .create({ model: p.model, messages: [{ role: 'user', content: 'one two three four five' }], stream: true })
        .withResponse();
      let text = '';
      const cut = await sdkError(async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
      });
      assert.match(cut.message, /ended before the response was complete/);
      assert.ok(reply(p, 'one two three four five').startsWith(text) && text.length > 0, `a prefix of the answer: ${text}`);
      const row = await ledgerRow(response.headers.get('x-tollgate-request-id'));
      assert.equal(row.provider, p.provider);
      assert.equal(row.outcome, 'upstream_truncated');
      assert.equal(row.error_code, 'upstream_truncated');
    });

    test(`${p.model}: the SDK sees a RateLimitError with retry-after`, async () => {
      resetAll();
      mock(p).enqueue({ rateLimit: { retryAfter: '5' } });
      const err = await sdkError(() => client.chat.completions.create({ model: p.model, messages: [{ role: 'user', content: 'hi' }] }));
      assert.ok(err instanceof OpenAI.RateLimitError, String(err));
      assert.equal(err.status, 429);
      assert.equal(err.code, 'upstream_rate_limited');
      assert.equal(err.headers.get('retry-after'), '5');
    });
  }

  test('gemini/gemini-2.5-flash: 429 without a Retry-After header → retry-after from RetryInfo.retryDelay', async () => {
    const p = PROVIDERS[1];
    resetAll();
    mock(p).enqueue({ rateLimit: {} });
    const res = await call('/v1/chat/completions', { model: p.model, messages: [{ role: 'user', content: 'hi' }] });
    assertErrorBody(res.json, { code: 'upstream_rate_limited' });
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after'), '20', 'the mock says "retryDelay": "20s"');
  });

  test("gemini/gemini-2.5-flash: a bad key (Gemini's 400 API_KEY_INVALID) is 502 upstream_auth_failed", async () => {
    const p = PROVIDERS[1];
    resetAll();
    mock(p).enqueue({
      status: 400,
      body: {
        error: {
          code: 400,
          message: 'API key not valid. Please pass a valid API key.',
          status: 'INVALID_ARGUMENT',
          details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com' }],
        },
      },
    });
    const res = await call('/v1/chat/completions', { model: p.model, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(res.status, 502, res.text);
    assertErrorBody(res.json, { code: 'upstream_auth_failed' });
  });
});

// ------------------------------------------------------------- 6. embeddings

describe('embeddings', () => {
  const INPUT = ['alpha beta', 'gamma'];
  const EMBEDDERS = [
    {
      provider: 'gemini',
      model: 'gemini/text-embedding-004',
      path: '/v1beta/models/text-embedding-004:batchEmbedContents',
      query: {},
      keyHeader: 'x-goog-api-key',
    },
    {
      provider: 'azure',
      model: 'azure/my-embeddings',
      path: '/openai/deployments/my-embeddings/embeddings',
      query: { 'api-version': AZURE_API_VERSION },
      keyHeader: 'api-key',
    },
  ];
  const expected = INPUT.map((s) => embeddingVector('text:' + s, 8));

  for (const e of EMBEDDERS) {
    for (const format of ['base64', 'float']) {
      test(`${e.model}: ${format === 'base64' ? 'SDK default (base64)' : "encoding_format: 'float'"}`, async () => {
        resetAll();
        const params = { model: e.model, input: INPUT };
        if (format === 'float') params.encoding_format = 'float';
        const { data: res, response } = await client.embeddings.create(params).withResponse();
        assert.equal(res.object, 'list');
        assert.equal(res.data.length, 2);
        assert.equal(response.headers.get('x-tollgate-provider'), e.provider);
        res.data.forEach((d, i) => {
          assert.equal(d.index, i);
          assert.ok(Array.isArray(d.embedding), 'decoded to a number array');
          assert.equal(d.embedding.length, 8);
          for (let j = 0; j < 8; j++) {
            assert.ok(Math.abs(d.embedding[j] - expected[i][j]) < 1e-6, `${e.provider}[${i}][${j}]: ${d.embedding[j]} vs ${expected[i][j]}`);
          }
          const norm = Math.sqrt(d.embedding.reduce((s, v) => s + v * v, 0));
          assert.ok(Math.abs(norm - 1) < 1e-5, `unit length: ${norm}`);
        });

        const rec = onlyRequest(e);
        assert.equal(rec.path, e.path);
        assert.deepEqual(rec.query, e.query);
        assert.equal(rec.headers[e.keyHeader], KEYS[e.provider]);
        assert.equal(rec.headers.authorization, undefined);
        const everything = JSON.stringify({ url: rec.url, headers: rec.headers, body: rec.body });
        assert.ok(!everything.includes(key.key), 'virtual key not forwarded');
        for (const [other, k] of Object.entries(KEYS)) if (other !== e.provider) assert.ok(!everything.includes(k), other);
        if (e.provider === 'gemini') {
          assert.deepEqual(
            rec.json.requests.map((r) => [r.model, r.content.parts.map((x) => x.text).join('')]),
            INPUT.map((s) => ['models/text-embedding-004', s]),
          );
          assert.equal(rec.json.encoding_format, undefined);
        } else {
          assert.deepEqual(rec.json.input, INPUT);
          assert.equal(rec.json.encoding_format, format === 'base64' ? 'base64' : 'float');
          assert.deepEqual(res.usage, rec.response.usage, 'usage as Azure reported it');
          assert.equal(res.usage.prompt_tokens, 3);
        }
        const row = await ledgerRow(response.headers.get('x-tollgate-request-id'));
        assert.equal(row.endpoint, 'embeddings');
        assert.equal(row.provider, e.provider);
        assert.equal(row.outcome, 'ok');
        if (e.provider === 'azure') assert.equal(row.prompt_tokens, rec.response.usage.prompt_tokens);
      });
    }
  }

  test(
    'azure/my-embeddings: the upstream body names the deployment, not the gateway id (as chat does)',
    async () => {
      resetAll();
      const res = await client.embeddings.create({ model: 'azure/my-embeddings', input: 'alpha beta', encoding_format: 'float' });
      const rec = onlyRequest({ provider: 'azure' });
      assert.equal(rec.json.model, 'my-embeddings', 'provider prefix stripped, as for chat');
      assert.equal(res.model, 'my-embeddings');
    },
  );

  test('anthropic/claude-sonnet-4-5 embeddings → 400 (Anthropic has no embeddings API), never sent upstream', async () => {
    resetAll();
    const err = await sdkError(() => client.embeddings.create({ model: 'anthropic/claude-sonnet-4-5', input: 'hi' }));
    assert.equal(err.status, 400);
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.equal(err.param, 'model');
    assert.match(err.message, /embeddings/i);
    assert.equal(stack.mocks.anthropic.requests().length, 0);
  });
});

// ------------------------------------------------------ 7. Anthropic-specific

describe('Anthropic specifics', () => {
  const p = PROVIDERS[0];

  test('reasoning_effort → thinking upstream, reasoning_content back (non-streamed)', async () => {
    resetAll();
    const res = await client.chat.completions.create({
      model: p.model,
      messages: [{ role: 'user', content: 'think hard' }],
      reasoning_effort: 'low',
    });
    const msg = res.choices[0].message;
    assert.equal(msg.content, reply(p, 'think hard'));
    assert.equal(msg.reasoning_content, 'mock thinking about: think hard');
    assert.equal(res.choices[0].finish_reason, 'stop');
    const rec = onlyRequest(p);
    assert.deepEqual(rec.json.thinking, { type: 'enabled', budget_tokens: 2048 }, 'Sonnet 4.5 takes a manual budget');
    assert.equal(rec.json.max_tokens, 4096 + 2048, 'budget added to the default max_tokens');
    assert.equal(rec.json.reasoning_effort, undefined);
    assertUsage(res.usage, mockUsage(p, rec), 'anthropic thinking');
  });

  test('reasoning_effort, streamed: reasoning_content deltas, then content', async () => {
    resetAll();
    const stream = await client.chat.completions.create({
      model: p.model,
      messages: [{ role: 'user', content: 'think in a stream' }],
      reasoning_effort: 'low',
      stream: true,
    });
    const out = await drain(stream);
    assert.equal(out.reasoning, 'mock thinking about: think in a stream');
    assert.equal(out.text, reply(p, 'think in a stream'));
    assert.equal(out.roles, 1);
    assert.deepEqual(out.finish, ['stop']);
    const firstContent = out.chunks.findIndex((c) => c.choices[0]?.delta?.content);
    const lastReasoning = out.chunks.findLastIndex((c) => c.choices[0]?.delta?.reasoning_content);
    assert.ok(lastReasoning < firstContent, 'reasoning before the answer');
  });

  test('temperature 1.5 → 400 naming temperature; never sent upstream', async () => {
    resetAll();
    const err = await sdkError(() =>
      client.chat.completions.create({ model: p.model, messages: [{ role: 'user', content: 'hi' }], temperature: 1.5 }),
    );
    assert.equal(err.status, 400);
    assert.equal(err.param, 'temperature');
    assert.match(err.message, /temperature/);
    assert.equal(stack.mocks.anthropic.requests().length, 0);
  });

  test('n: 2 → 400 naming n; never sent upstream', async () => {
    resetAll();
    const res = await call('/v1/chat/completions', { model: p.model, messages: [{ role: 'user', content: 'hi' }], n: 2 });
    assert.equal(res.status, 400, res.text);
    assertErrorBody(res.json, { param: 'n', type: 'invalid_request_error' });
    assert.equal(stack.mocks.anthropic.requests().length, 0);
  });
});
