// Tests for the mock provider's Cohere flavor (tests/mock/flavors/cohere.mjs), over raw HTTP.
// Run: node --test tests/mock/cohere-flavor.test.mjs
import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startMockProvider } from './mock-provider.mjs';
import { RATE_LIMIT_MESSAGE } from './flavors/cohere.mjs';

const KEY = 'co-mock-0123456789abcdefghijklmnopqrstuv';
const FIXTURES = fileURLToPath(new URL('../fixtures/cohere/', import.meta.url));
const fixture = (name) => readFileSync(FIXTURES + name, 'utf8');
const MODEL = 'command-a-03-2025';

let mock;

before(async () => {
  mock = await startMockProvider({ name: 'cohere', flavor: 'cohere', apiKey: KEY });
});
after(async () => {
  await mock.close();
});
beforeEach(() => mock.reset());

// ------------------------------------------------------------ helpers

/** Raw request the way the gateway sends it: Authorization: Bearer <key>. */
function call(path, body, { key = KEY, scheme = 'Bearer', headers = {}, raw = false, method = 'POST' } = {}) {
  return fetch(mock.url + path, {
    method,
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `${scheme} ${key}` } : {}), ...headers },
    body: method === 'GET' ? undefined : raw ? body : JSON.stringify(body),
  });
}

const chat = (body, opts) => call('/v2/chat', body, opts);
const embed = (body, opts) => call('/v2/embed', body, opts);

const ask = (text = 'Say hello to the gateway', extra = {}) => ({
  model: MODEL,
  messages: [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: text },
  ],
  ...extra,
});
const reply = (text) => `mock(cohere) reply to: ${text}`;

const WEATHER = {
  type: 'function',
  function: {
    name: 'weather',
    description: 'Get the weather in a location',
    parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
  },
};
const TIME = { type: 'function', function: { name: 'currentTime', parameters: { type: 'object', properties: {} } } };

async function json(res, status = 200) {
  const text = await res.text();
  assert.equal(res.status, status, text);
  assert.match(res.headers.get('content-type'), /^application\/json/);
  assert.equal(text, JSON.stringify(JSON.parse(text)), 'compact JSON');
  return JSON.parse(text);
}

/** Asserts Cohere's error shape and returns the message. */
async function cohereError(res, status, message) {
  const body = await json(res, status);
  assert.deepEqual(Object.keys(body), ['id', 'message']);
  assert.match(body.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  if (message instanceof RegExp) assert.match(body.message, message);
  else if (message !== undefined) assert.equal(body.message, message);
  return body.message;
}

/** `event: <type>\ndata: <json>\n\n` frames → [{event, data}]; asserts the framing. */
function events(text) {
  assert.ok(text.endsWith('\n\n'), 'stream ends on a frame boundary');
  return text
    .split('\n\n')
    .filter((f) => f.length > 0)
    .map((frame) => {
      const lines = frame.split('\n');
      assert.equal(lines.length, 2, `one event and one data line: ${frame.slice(0, 60)}`);
      assert.ok(lines[0].startsWith('event: ') && lines[1].startsWith('data: '), frame.slice(0, 60));
      const event = lines[0].slice(7);
      const raw = lines[1].slice(6);
      const data = JSON.parse(raw);
      assert.equal(raw, JSON.stringify(data), 'compact JSON');
      assert.equal(data.type, event, 'the event name is repeated as the type');
      return { event, data };
    });
}

async function stream(body, opts) {
  const res = await chat({ ...body, stream: true }, opts);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  return events(await res.text());
}

/** Structure of a JSON value: key order, value kinds, first array element. */
function shape(v) {
  if (v === null) return null;
  if (Array.isArray(v)) return v.length ? [shape(v[0])] : [];
  if (typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)]));
  return typeof v;
}
const sameShape = (a, b, msg) => assert.equal(JSON.stringify(shape(a)), JSON.stringify(shape(b)), msg);

const recordedEvents = (name) => events(fixture(name)).map((e) => e.data);

// ---------------------------------------------------------------- chat

describe('chat', () => {
  test('text answer: Cohere body, usage, request recorded', async () => {
    const body = await json(await chat(ask()));
    assert.deepEqual(Object.keys(body), ['id', 'message', 'finish_reason', 'usage']);
    assert.deepEqual(body.message, { role: 'assistant', content: [{ type: 'text', text: reply('Say hello to the gateway') }] });
    assert.equal(body.finish_reason, 'COMPLETE');
    const out = reply('Say hello to the gateway').split(' ').length;
    assert.deepEqual(body.usage, {
      billed_units: { input_tokens: 3 + 5, output_tokens: out },
      tokens: { input_tokens: 3 + 5, output_tokens: out },
      cached_tokens: 0,
    });
    const [rec] = mock.requests();
    assert.equal(rec.path, '/v2/chat');
    assert.equal(rec.json.model, MODEL);
    assert.deepEqual(rec.response.usage, { prompt_tokens: 8, completion_tokens: out, total_tokens: 8 + out });
    const again = await json(await chat(ask()));
    assert.notEqual(again.id, body.id, 'a fresh id per request');
  });

  test('stream: message-start, one text block word by word, message-end with usage', async () => {
    const evs = await stream(ask('one two'));
    assert.deepEqual(
      evs.map((e) => e.event),
      ['message-start', 'content-start', ...Array(5).fill('content-delta'), 'content-end', 'message-end'],
    );
    assert.deepEqual(evs[0].data.delta, { message: { role: 'assistant', content: [], tool_plan: '', tool_calls: [], citations: [] } });
    const text = evs.filter((e) => e.event === 'content-delta').map((e) => e.data.delta.message.content.text).join('');
    assert.equal(text, reply('one two'));
    assert.equal(evs[3].data.delta.message.content.text, ' reply', 'later words carry their leading space');
    const end = evs.at(-1).data;
    assert.equal(end.delta.finish_reason, 'COMPLETE');
    assert.deepEqual(end.delta.usage.tokens, { input_tokens: 5, output_tokens: 5 });
    assert.equal(mock.requests()[0].response.usage.completion_tokens, 5);
  });

  test('max_tokens cuts by words; stop_sequences stop the answer', async () => {
    let body = await json(await chat(ask('one two three', { max_tokens: 3 })));
    assert.equal(body.finish_reason, 'MAX_TOKENS');
    assert.equal(body.message.content[0].text, 'mock(cohere) reply to:');
    body = await json(await chat(ask('one two three', { stop_sequences: ['three'] })));
    assert.equal(body.finish_reason, 'STOP_SEQUENCE');
    assert.equal(body.message.content[0].text, 'mock(cohere) reply to: one two');
    const evs = await stream(ask('x y z', { max_tokens: 2 }));
    assert.equal(evs.at(-1).data.delta.finish_reason, 'MAX_TOKENS');
  });

  test('JSON mode answers with a JSON object as text', async () => {
    const body = await json(await chat(ask('Ada', { response_format: { type: 'json_object', json_schema: { type: 'object' } } })));
    assert.deepEqual(JSON.parse(body.message.content[0].text), { echo: 'Ada' });
  });

  test('a reasoning model thinks unless thinking is disabled; others refuse thinking', async () => {
    const model = 'command-a-reasoning-08-2025';
    let body = await json(await chat(ask('2+2', { model, thinking: { type: 'enabled', token_budget: 1024 } })));
    assert.deepEqual(body.message.content[0], { type: 'thinking', thinking: 'mock thinking about: 2+2' });
    assert.equal(body.message.content[1].text, reply('2+2'));
    body = await json(await chat(ask('2+2', { model, thinking: { type: 'disabled' } })));
    assert.equal(body.message.content.length, 1);
    const evs = await stream(ask('2+2', { model }));
    assert.deepEqual(evs[1].data, { type: 'content-start', index: 0, delta: { message: { content: { type: 'thinking', thinking: '' } } } });
    assert.equal(evs.find((e) => e.event === 'content-delta').data.delta.message.content.thinking, 'mock');
    await cohereError(await chat(ask('x', { thinking: { type: 'enabled' } })), 400, /thinking is not supported/);
  });

  test('images need a vision model', async () => {
    const content = [
      { type: 'text', text: 'What is this?' },
      { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA', detail: 'high' } },
    ];
    const body = await json(await chat({ model: 'command-a-vision-07-2025', messages: [{ role: 'user', content }] }));
    assert.equal(body.message.content[0].text, reply('What is this?'));
    await cohereError(await chat({ model: MODEL, messages: [{ role: 'user', content }] }), 400, /does not support image inputs/);
  });
});

// --------------------------------------------------------------- tools

describe('tools', () => {
  test('REQUIRED with two tools: tool_plan and parallel calls; NONE answers text', async () => {
    const body = await json(await chat(ask('Paris', { tools: [WEATHER, TIME], tool_choice: 'REQUIRED' })));
    assert.equal(body.finish_reason, 'TOOL_CALL');
    assert.deepEqual(Object.keys(body.message), ['role', 'tool_plan', 'tool_calls']);
    assert.equal(body.message.tool_plan, 'I will use the weather and currentTime tools.');
    assert.deepEqual(
      body.message.tool_calls.map((c) => [c.type, c.function.name, JSON.parse(c.function.arguments)]),
      [
        ['function', 'weather', { echo: 'Paris' }],
        ['function', 'currentTime', { echo: 'Paris' }],
      ],
    );
    assert.match(body.message.tool_calls[0].id, /^weather_[a-z0-9]{12}$/);
    const none = await json(await chat(ask('Paris', { tools: [WEATHER], tool_choice: 'NONE' })));
    assert.equal(none.message.content[0].text, reply('Paris'));
  });

  test('streamed calls: plan deltas, then start / argument fragments / end per call', async () => {
    const evs = await stream(ask('Rome', { tools: [WEATHER], tool_choice: 'REQUIRED' }));
    const kinds = [...new Set(evs.map((e) => e.event))];
    assert.deepEqual(kinds, ['message-start', 'tool-plan-delta', 'tool-call-start', 'tool-call-delta', 'tool-call-end', 'message-end']);
    const plan = evs.filter((e) => e.event === 'tool-plan-delta').map((e) => e.data.delta.message.tool_plan).join('');
    assert.equal(plan, 'I will use the weather tool.');
    const start = evs.find((e) => e.event === 'tool-call-start').data;
    assert.equal(start.delta.message.tool_calls.function.arguments, '');
    const args = evs
      .filter((e) => e.event === 'tool-call-delta')
      .map((e) => e.data.delta.message.tool_calls.function.arguments)
      .join('');
    assert.deepEqual(JSON.parse(args), { echo: 'Rome' });
    assert.equal(evs.at(-1).data.delta.finish_reason, 'TOOL_CALL');
  });

  test('a tool-result turn is answered from the results; ids must match earlier calls', async () => {
    const history = [
      { role: 'user', content: 'Weather in Paris?' },
      {
        role: 'assistant',
        tool_plan: 'I will check.',
        tool_calls: [{ id: 'weather_1', type: 'function', function: { name: 'weather', arguments: '{"location":"Paris"}' } }],
      },
      { role: 'tool', tool_call_id: 'weather_1', content: [{ type: 'text', text: '21 degrees' }] },
    ];
    const body = await json(await chat({ model: MODEL, messages: history, tools: [WEATHER] }));
    assert.equal(body.message.content[0].text, reply('21 degrees'));

    const wrongId = structuredClone(history);
    wrongId[2].tool_call_id = 'nope';
    await cohereError(await chat({ model: MODEL, messages: wrongId }), 400, 'tool call id not found in previous tool calls');
    const noId = structuredClone(history);
    delete noId[2].tool_call_id;
    await cohereError(await chat({ model: MODEL, messages: noId }), 400, 'tool call id must be provided with tool message');
    const dup = structuredClone(history);
    dup[1].tool_calls.push(dup[1].tool_calls[0]);
    await cohereError(await chat({ model: MODEL, messages: dup }), 400, 'cannot have duplicate tool ids');
    const withText = structuredClone(history);
    withText[1].content = 'I will check.';
    delete withText[1].tool_plan;
    await cohereError(
      await chat({ model: MODEL, messages: withText }),
      400,
      "text content is not allowed when tool_calls are provided. If you wish to pass a tool plan, either pass thinking content (with thinking enabled) or use 'tool_plan': 'messages[1].content[0]'",
    );
  });

  test('tool definitions are checked as Cohere checks them', async () => {
    const strict = structuredClone(WEATHER);
    strict.function.strict = true;
    const msg = await cohereError(await chat(ask('x', { tools: [strict] })), 422);
    assert.equal(msg, JSON.parse(fixture('error.422.json')).message, 'the recorded 422 for a per-tool strict');
    const dashed = structuredClone(WEATHER);
    dashed.function.name = 'get-weather';
    await cohereError(await chat(ask('x', { tools: [dashed] })), 400, /^invalid request: tool names can only contain certain characters/);
    const noParams = structuredClone(TIME);
    delete noParams.function.parameters;
    await cohereError(await chat(ask('x', { tools: [noParams] })), 400, /must have parameters/);
    await cohereError(await chat(ask('x', { tool_choice: 'REQUIRED' })), 400, /only be used together with tools/);
    await cohereError(await chat(ask('x', { tools: [WEATHER], tool_choice: 'required' })), 400, /tool_choice must be one of/);
    await cohereError(
      await chat(ask('x', { tools: [WEATHER], response_format: { type: 'json_object' } })),
      400,
      'invalid request: response_format is not supported with tools.',
    );
  });
});

// ---------------------------------------------------------- validation

describe('validation', () => {
  test('unknown fields anywhere -> 422 unknown field', async () => {
    for (const [body, field] of [
      [ask('x', { top_p: 0.5 }), 'top_p'],
      [ask('x', { stream_options: { include_usage: true } }), 'stream_options'],
      [ask('x', { n: 1 }), 'n'],
      [{ model: MODEL, messages: [{ role: 'user', content: 'x', name: 'ana' }] }, 'name'],
      [{ model: MODEL, messages: [{ role: 'user', content: [{ type: 'text', text: 'x', cache_control: {} }] }] }, 'cache_control'],
    ]) {
      await cohereError(
        await chat(body),
        422,
        `unknown field: parameter '${field}' is not a valid field. For proper usage, please refer to https://docs.cohere.com/reference/chat`,
      );
    }
  });

  test('roles, system position, models and ranges', async () => {
    await cohereError(await chat({ model: MODEL, messages: [{ role: 'developer', content: 'x' }] }), 400, /invalid role 'developer'/);
    await cohereError(
      await chat({ model: MODEL, messages: [{ role: 'user', content: 'x' }, { role: 'system', content: 'late' }] }),
      400,
      'system turn must be the first in the list',
    );
    await cohereError(await chat({ messages: [{ role: 'user', content: 'x' }] }), 400, 'a model parameter is required for this endpoint.');
    await cohereError(await chat(ask('x', { model: 'command-z' })), 404, JSON.parse(fixture('error.404.json')).message);
    await cohereError(await chat(ask('x', { model: 'embed-v4.0' })), 404, /model 'embed-v4.0' not found/);
    await cohereError(await chat(ask('x', { temperature: 1.5 })), 400, JSON.parse(fixture('error.400.json')).message);
    await cohereError(await chat(ask('x', { p: 1 })), 400, 'invalid request: p must be between 0.01 and 0.99 inclusive.');
    await cohereError(await chat(ask('x', { presence_penalty: 2 })), 400, 'invalid request: presence_penalty must be between 0 and 1 inclusive.');
    await cohereError(await chat(ask('x', { k: 501 })), 400, /k must be between 0 and 500/);
    await cohereError(await chat(ask('x', { stop_sequences: ['a', 'b', 'c', 'd', 'e', 'f'] })), 400, /at most 5/);
    await cohereError(await chat(ask('x', { max_tokens: 0 })), 400, /max_tokens/);
    await cohereError(await chat('{"model":', { raw: true }), 400, /^invalid json syntax/);
    // Everything the gateway sends is accepted.
    const ok = await chat(
      ask('x', { temperature: 0.3, p: 0.99, k: 40, seed: 7, frequency_penalty: 0.5, max_tokens: 10, stop_sequences: ['5'], strict_tools: true }),
    );
    assert.equal(ok.status, 200);
    await ok.text();
  });
});

// ---------------------------------------------------------- embeddings

describe('embed', () => {
  const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const ask = (texts, extra = {}) => ({ model: 'embed-v4.0', texts, input_type: 'search_document', embedding_types: ['float'], ...extra });

  test('float vectors of unit length, billed units, recorded usage', async () => {
    const body = await json(await embed(ask(['sunny day at the beach', 'rainy day'])));
    assert.deepEqual(Object.keys(body), ['id', 'texts', 'embeddings', 'meta', 'response_type']);
    assert.equal(body.response_type, 'embeddings_by_type');
    assert.equal(body.embeddings.float.length, 2);
    assert.equal(body.embeddings.float[0].length, 1536);
    assert.ok(Math.abs(norm(body.embeddings.float[0]) - 1) < 1e-5);
    assert.deepEqual(body.meta, { api_version: { version: '2' }, billed_units: { input_tokens: 7 } });
    assert.deepEqual(mock.requests()[0].response.usage, { prompt_tokens: 7, total_tokens: 7 });
    const again = await json(await embed(ask(['sunny day at the beach'])));
    assert.deepEqual(again.embeddings.float[0], body.embeddings.float[0], 'deterministic');
    const query = await json(await embed(ask(['sunny day at the beach'], { input_type: 'search_query' })));
    assert.notDeepEqual(query.embeddings.float[0], body.embeddings.float[0], 'input_type changes the vector');
  });

  test('output_dimension and the other embedding types', async () => {
    const body = await json(await embed(ask(['a'], { output_dimension: 256, embedding_types: ['float', 'int8', 'base64', 'ubinary'] })));
    assert.deepEqual(Object.keys(body.embeddings), ['float', 'int8', 'base64', 'ubinary']);
    const [f] = body.embeddings.float;
    assert.equal(f.length, 256);
    assert.ok(body.embeddings.int8[0].every((x) => Number.isInteger(x) && x >= -128 && x <= 127));
    const b = Buffer.from(body.embeddings.base64[0], 'base64');
    assert.equal(b.length, 256 * 4);
    assert.ok(Math.abs(b.readFloatLE(0) - f[0]) < 1e-6);
    assert.equal(body.embeddings.ubinary[0].length, 32);
    await cohereError(await embed(ask(['a'], { output_dimension: 100 })), 400, /output_dimension must be one of 256, 512, 1024, 1536/);
    await cohereError(await embed(ask(['a'], { model: 'embed-english-v3.0', output_dimension: 256 })), 400, /not supported/);
    const v3 = await json(await embed(ask(['a'], { model: 'embed-english-v3.0' })));
    assert.equal(v3.embeddings.float[0].length, 1024);
  });

  test('required fields and limits', async () => {
    const { input_type: _i, ...noType } = ask(['a']);
    await cohereError(await embed(noType), 400, 'invalid request: valid input_type must be provided with the provided model');
    const { embedding_types: _e, ...noTypes } = ask(['a']);
    await cohereError(await embed(noTypes), 400, 'embedding_types parameter is required');
    const many = Array.from({ length: 97 }, (_, i) => `t${i}`);
    await cohereError(await embed(ask(many)), 400, 'invalid request: total number of texts must be at most 96 - received 97');
    await cohereError(await embed(ask(['a', ''])), 400, 'invalid request: inputs contains an element that is the empty string at index 1');
    await cohereError(await embed(ask(['a'], { dimensions: 8 })), 422, /parameter 'dimensions'/);
    await cohereError(await embed(ask(['a'], { model: MODEL })), 404, /not found/);
  });
});

// ---------------------------------------------------------------- auth

describe('auth and models', () => {
  test('no key -> 401 "no api key supplied"; wrong key -> the recorded 401; scheme is case-insensitive', async () => {
    await cohereError(await chat(ask(), { key: null }), 401, 'no api key supplied');
    await cohereError(await chat(ask(), { key: 'co-wrong' }), 401, JSON.parse(fixture('error.401.json')).message);
    await cohereError(await chat(ask(), { headers: { authorization: KEY } }), 401, 'no api key supplied');
    const res = await chat(ask(), { scheme: 'bearer' });
    assert.equal(res.status, 200);
    await res.text();
  });

  test('models list and one model', async () => {
    const list = await json(await call('/v1/models', null, { method: 'GET' }));
    assert.ok(list.models.some((m) => m.name === MODEL && m.endpoints.includes('chat')));
    assert.ok(list.models.some((m) => m.name === 'embed-v4.0' && m.endpoints.includes('embed')));
    const one = await json(await call('/v1/models/embed-v4.0', null, { method: 'GET' }));
    assert.deepEqual(Object.keys(one), ['name', 'endpoints', 'finetuned', 'context_length']);
    await cohereError(await call('/v1/models/nope', null, { method: 'GET' }), 404, /model 'nope' not found/);
    await cohereError(await call('/v2/nothing', {}), 404, '404 page not found');
  });
});

// -------------------------------------------------------------- faults

describe('faults', () => {
  test('status-only faults get Cohere error bodies with typical messages', async () => {
    for (const [status, fixtureName] of [
      [401, 'error.401.json'],
      [402, 'error.402.json'],
      [429, null],
      [499, 'error.499.json'],
      [500, 'error.500.json'],
      [503, 'error.503.json'],
    ]) {
      mock.enqueue({ status });
      const message = await cohereError(await chat(ask()), status);
      if (fixtureName) assert.equal(message, JSON.parse(fixture(fixtureName)).message, `${status}`);
    }
  });

  test('rateLimit -> 429 with the trial-key message; retry-after only when asked', async () => {
    mock.enqueue({ rateLimit: {} });
    let res = await chat(ask());
    assert.equal(res.headers.get('retry-after'), null);
    await cohereError(res, 429, RATE_LIMIT_MESSAGE);
    assert.equal(RATE_LIMIT_MESSAGE, JSON.parse(fixture('error.429.json')).message);
    mock.enqueue({ rateLimit: { retryAfter: '3' } });
    res = await chat(ask());
    assert.equal(res.headers.get('retry-after'), '3');
    await res.text();
  });

  test('errorFrame -> 200 SSE whose only event is message-end with finish_reason ERROR', async () => {
    mock.enqueue({ errorFrame: true });
    const evs = await stream(ask());
    assert.deepEqual(evs, [
      { event: 'message-end', data: { type: 'message-end', delta: { error: 'internal server error', finish_reason: 'ERROR' } } },
    ]);
  });

  test('cutAfterChunks ends a stream without message-end; omitUsage drops usage', async () => {
    mock.enqueue({ cutAfterChunks: 2 });
    let evs = await stream(ask());
    assert.deepEqual(evs.map((e) => e.event), ['message-start', 'content-start', 'content-delta', 'content-delta']);
    assert.equal(mock.requests()[0].response.outcome, 'cut');
    mock.enqueue({ omitUsage: true, times: 2 });
    const body = await json(await chat(ask()));
    assert.equal(body.usage, undefined);
    evs = await stream(ask());
    assert.deepEqual(Object.keys(evs.at(-1).data.delta), ['finish_reason']);
    assert.equal(mock.requests()[2].response.usage, null);
  });

  test('faults match on model and stream in the body', async () => {
    mock.enqueue({ match: { stream: true, model: MODEL }, status: 503 });
    const ok = await chat(ask());
    assert.equal(ok.status, 200);
    await ok.text();
    await cohereError(await chat({ ...ask(), stream: true }), 503);
  });

  test('sliceBytes keeps the bytes; resetAfterBytes cuts the connection', async () => {
    const whole = await (await chat({ ...ask(), stream: true })).text();
    mock.enqueue({ sliceBytes: 7 });
    const strip = (s) => s.replace(/"id":"[^"]+"/g, '');
    assert.equal(strip(await (await chat({ ...ask(), stream: true })).text()), strip(whole));
    mock.enqueue({ resetAfterBytes: 40 });
    await assert.rejects(async () => (await chat({ ...ask(), stream: true })).text());
  });
});

// ---------------------------------------------------- fixture conformance

describe('fixture conformance (mock output has the recorded Cohere shapes)', () => {
  test('chat bodies match response.*.json key order and field kinds', async () => {
    const body = await json(await chat(ask()));
    sameShape(body, JSON.parse(fixture('response.text.json')), 'text body');
    const tools = await json(await chat(ask('x', { tools: [WEATHER, TIME], tool_choice: 'REQUIRED' })));
    const recorded = JSON.parse(fixture('response.tool_calls.json'));
    sameShape(tools.message, recorded.message, 'tool-call message');
    assert.deepEqual(Object.keys(tools), Object.keys(recorded));
    const thinking = await json(await chat(ask('2+2', { model: 'command-a-reasoning-08-2025' })));
    sameShape(thinking.message.content, JSON.parse(fixture('response.thinking.json')).message.content, 'thinking blocks');
  });

  test('stream events match stream.*.sse framing and shapes', async () => {
    const text = await stream(ask());
    const recorded = recordedEvents('stream.text.sse');
    assert.deepEqual(
      [...new Set(text.map((e) => e.event))],
      [...new Set(recorded.map((e) => e.type))],
      'same event sequence',
    );
    for (const type of ['message-start', 'content-start', 'content-delta', 'content-end', 'message-end']) {
      sameShape(text.find((e) => e.event === type).data, recorded.find((e) => e.type === type), type);
    }
    const tools = (await stream(ask('x', { tools: [WEATHER], tool_choice: 'REQUIRED' }))).map((e) => e.data);
    const recordedTools = recordedEvents('stream.tool_calls.sse');
    for (const type of ['tool-plan-delta', 'tool-call-start', 'tool-call-delta', 'tool-call-end', 'message-end']) {
      sameShape(tools.find((e) => e.type === type), recordedTools.find((e) => e.type === type), type);
    }
    const thinking = (await stream(ask('2+2', { model: 'command-a-reasoning-08-2025' }))).map((e) => e.data);
    const recordedThinking = recordedEvents('stream.thinking.sse');
    sameShape(thinking[1], recordedThinking[1], 'thinking content-start');
    sameShape(thinking[2], recordedThinking[2], 'thinking content-delta');
  });

  test('errors and embeddings match error.*.json and embed.response.json', async () => {
    const e = await json(await chat(ask('x', { temperature: 2 })), 400);
    sameShape(e, JSON.parse(fixture('error.400.json')));
    const body = await json(await embed({ model: 'embed-v4.0', texts: ['a'], input_type: 'search_document', embedding_types: ['float'] }));
    sameShape(body, JSON.parse(fixture('embed.response.json')));
  });

  test('the gateway request fixtures are accepted as sent', async () => {
    for (const name of ['request.text.json', 'request.tools.json', 'request.image.json', 'request.json_schema.json', 'request.reasoning.json']) {
      const res = await chat(JSON.parse(fixture(name)));
      assert.equal(res.status, 200, `${name}: ${await res.clone().text()}`);
      await res.text();
    }
    const res = await embed(JSON.parse(fixture('embed.request.json')));
    assert.equal(res.status, 200, await res.clone().text());
    await res.text();
  });
});
