// Tests for the mock LLM provider, driven through the official `openai` SDK and raw HTTP.
// Run: node --test tests/mock/
import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { startMockProvider } from './mock-provider.mjs';

const KEY = 'sk-test-mock-0123456789abcdefXYZ';
const FIXTURES = fileURLToPath(new URL('../fixtures/openai/', import.meta.url));
const fixture = (name) => readFileSync(FIXTURES + name, 'utf8');

let mock;
let client;

before(async () => {
  mock = await startMockProvider({ name: 'openai', apiKey: KEY });
  client = new OpenAI({ apiKey: KEY, baseURL: mock.url + '/v1', maxRetries: 0 });
});
after(async () => {
  await mock.close();
});
beforeEach(() => mock.reset());

// ------------------------------------------------------------ helpers

function post(path, body, { headers = {}, key = KEY, raw = false, ...init } = {}) {
  return fetch(mock.url + path, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...headers,
    },
    body: raw ? body : JSON.stringify(body),
    ...init,
  });
}

const chatBody = (extra = {}) => ({
  model: 'gpt-4o-mini',
  messages: [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Say hello to the gateway' },
  ],
  ...extra,
});
const EXPECTED = 'mock(openai) reply to: Say hello to the gateway';
const EXPECTED_WORDS = EXPECTED.split(' ');

/** Parses `data: ...\n\n` frames; returns [{raw, data}] with data parsed when it is JSON. */
function sseFrames(text) {
  assert.ok(text.endsWith('\n\n') || text === '', 'stream must end on a frame boundary');
  return text
    .split('\n\n')
    .filter((f) => f.length > 0)
    .map((raw) => {
      assert.ok(raw.startsWith('data: '), `frame must start with "data: ": ${raw.slice(0, 40)}`);
      const payload = raw.slice(6);
      return { raw, data: payload === '[DONE]' ? '[DONE]' : JSON.parse(payload) };
    });
}

/** Structure of a JSON value: key order, value kinds (null stays null), first array element. */
function shape(v) {
  if (v === null) return null;
  if (Array.isArray(v)) return v.length ? [shape(v[0])] : [];
  if (typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)]));
  return typeof v;
}
const sameShape = (a, b, msg) => assert.equal(JSON.stringify(shape(a)), JSON.stringify(shape(b)), msg);

/** GET/POST with node:http, returning every 'data' event's bytes. */
function rawRequest(path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      mock.url + path,
      { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` } },
      (res) => {
        const parts = [];
        res.on('data', (c) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, parts, body: Buffer.concat(parts) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

const normalise = (s) => s.replace(/chatcmpl-mock[A-Za-z0-9]+/g, 'ID').replace(/"created":\d+/g, '"created":0');

// ---------------------------------------------------------------- chat

describe('chat completions via the openai SDK', () => {
  test('non-streaming reply, usage and fields', async () => {
    const r = await client.chat.completions.create(chatBody());
    assert.match(r.id, /^chatcmpl-mock[A-Za-z0-9]{25}$/);
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.model, 'gpt-4o-mini');
    assert.equal(typeof r.created, 'number');
    assert.equal(r.service_tier, 'default');
    assert.match(r.system_fingerprint, /^fp_[0-9a-f]{10}$/);
    assert.equal(r.choices.length, 1);
    assert.deepEqual(r.choices[0].message, { role: 'assistant', content: EXPECTED, refusal: null, annotations: [] });
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.choices[0].logprobs, null);
    assert.deepEqual(r.usage, {
      prompt_tokens: 8, // "You are terse." (3) + "Say hello to the gateway" (5)
      completion_tokens: EXPECTED_WORDS.length,
      total_tokens: 8 + EXPECTED_WORDS.length,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    });
  });

  test('model is echoed and array content joins text parts', async () => {
    const r = await client.chat.completions.create({
      model: 'my-custom-model',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'part one' },
            { type: 'image_url', image_url: { url: 'https://example.invalid/x.png' } },
            { type: 'text', text: 'part two' },
          ],
        },
      ],
    });
    assert.equal(r.model, 'my-custom-model');
    assert.equal(r.choices[0].message.content, 'mock(openai) reply to: part one part two');
    assert.equal(r.usage.prompt_tokens, 4);
  });

  test('max_tokens and max_completion_tokens truncate with finish_reason length', async () => {
    const a = await client.chat.completions.create(chatBody({ max_tokens: 2 }));
    assert.equal(a.choices[0].message.content, 'mock(openai) reply');
    assert.equal(a.choices[0].finish_reason, 'length');
    assert.equal(a.usage.completion_tokens, 2);
    const b = await client.chat.completions.create(chatBody({ max_completion_tokens: 4 }));
    assert.equal(b.choices[0].message.content, 'mock(openai) reply to: Say');
    assert.equal(b.choices[0].finish_reason, 'length');
    const c = await client.chat.completions.create(chatBody({ max_tokens: 100 }));
    assert.equal(c.choices[0].finish_reason, 'stop');
  });

  test('stream with include_usage: word chunks, usage null on every chunk, final usage chunk', async () => {
    const stream = await client.chat.completions.create(chatBody({ stream: true, stream_options: { include_usage: true } }));
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const ids = new Set(chunks.map((c) => c.id));
    assert.equal(ids.size, 1, 'one id for the whole stream');
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.model === 'gpt-4o-mini'));
    assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '', refusal: null });
    const contentChunks = chunks.filter((c) => c.choices.length && typeof c.choices[0].delta.content === 'string' && c.choices[0].delta.content !== '');
    assert.equal(contentChunks.length, EXPECTED_WORDS.length, 'one chunk per word');
    contentChunks.forEach((c, i) => {
      const want = i < EXPECTED_WORDS.length - 1 ? EXPECTED_WORDS[i] + ' ' : EXPECTED_WORDS[i];
      assert.equal(c.choices[0].delta.content, want);
    });
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, EXPECTED);
    const last = chunks.at(-1);
    const finish = chunks.at(-2);
    assert.deepEqual(finish.choices[0].delta, {});
    assert.equal(finish.choices[0].finish_reason, 'stop');
    for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.prompt_tokens, 8);
    assert.equal(last.usage.completion_tokens, EXPECTED_WORDS.length);
    assert.equal(last.usage.total_tokens, 8 + EXPECTED_WORDS.length);
  });

  test('stream without include_usage carries no usage field; SDK stream helper accumulates', async () => {
    const res = await post('/v1/chat/completions', chatBody({ stream: true }));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const frames = sseFrames(await res.text());
    assert.equal(frames.at(-1).data, '[DONE]');
    for (const f of frames.slice(0, -1)) {
      assert.ok(!('usage' in f.data), 'no usage key without include_usage');
      assert.equal(typeof f.data.obfuscation, 'string');
      assert.deepEqual(Object.keys(f.data).slice(0, 7), ['id', 'object', 'created', 'model', 'service_tier', 'system_fingerprint', 'choices']);
    }
    const helper = client.chat.completions.stream(chatBody());
    const final = await helper.finalChatCompletion();
    assert.equal(final.choices[0].message.content, EXPECTED);
    assert.equal(final.choices[0].finish_reason, 'stop');
  });

  test('include_obfuscation:false removes the obfuscation field', async () => {
    const res = await post('/v1/chat/completions', chatBody({ stream: true, stream_options: { include_obfuscation: false } }));
    const text = await res.text();
    assert.ok(!text.includes('obfuscation'));
    assert.equal(sseFrames(text).length, 1 + EXPECTED_WORDS.length + 2);
  });
});

describe('tool calls', () => {
  const tools = [
    { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
    { type: 'function', function: { name: 'lookup', parameters: { type: 'object', properties: {} } } },
  ];

  test('tool_choice required -> first tool, non-streaming', async () => {
    const r = await client.chat.completions.create(chatBody({ tools, tool_choice: 'required' }));
    const msg = r.choices[0].message;
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    assert.equal(msg.content, null);
    assert.equal(msg.tool_calls.length, 1);
    const call = msg.tool_calls[0];
    assert.match(call.id, /^call_[A-Za-z0-9]{24}$/);
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { echo: 'Say hello to the gateway' });
    assert.deepEqual(Object.keys(msg), ['role', 'content', 'tool_calls', 'refusal', 'annotations']);
  });

  test('named tool_choice picks that function; auto answers with text', async () => {
    const r = await client.chat.completions.create(chatBody({ tools, tool_choice: { type: 'function', function: { name: 'lookup' } } }));
    assert.equal(r.choices[0].message.tool_calls[0].function.name, 'lookup');
    const t = await client.chat.completions.create(chatBody({ tools, tool_choice: 'auto' }));
    assert.equal(t.choices[0].message.content, EXPECTED);
    assert.equal(t.choices[0].finish_reason, 'stop');
  });

  test('streamed tool call: header delta, argument fragments, tool_calls finish', async () => {
    const stream = await client.chat.completions.create(
      chatBody({ tools, tool_choice: 'required', stream: true, stream_options: { include_usage: true } }),
    );
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const first = chunks[0].choices[0].delta;
    assert.equal(first.role, 'assistant');
    assert.equal(first.content, null);
    assert.equal(first.tool_calls.length, 1);
    const head = first.tool_calls[0];
    assert.equal(head.index, 0);
    assert.match(head.id, /^call_/);
    assert.equal(head.type, 'function');
    assert.deepEqual(head.function, { name: 'get_weather', arguments: '' });
    const frags = chunks.slice(1).filter((c) => c.choices[0]?.delta?.tool_calls);
    assert.ok(frags.length >= 3, 'arguments arrive in several deltas');
    for (const f of frags) {
      const tc = f.choices[0].delta.tool_calls[0];
      assert.equal(tc.index, 0);
      assert.ok(!('id' in tc) && !('name' in tc.function), 'later deltas carry only arguments');
    }
    const args = frags.map((f) => f.choices[0].delta.tool_calls[0].function.arguments).join('');
    assert.deepEqual(JSON.parse(args), { echo: 'Say hello to the gateway' });
    assert.equal(chunks.at(-2).choices[0].finish_reason, 'tool_calls');
    assert.equal(chunks.at(-1).usage.completion_tokens, frags.length);

    const final = await client.chat.completions.stream(chatBody({ tools, tool_choice: 'required' })).finalChatCompletion();
    assert.equal(final.choices[0].finish_reason, 'tool_calls');
    assert.equal(final.choices[0].message.tool_calls[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(final.choices[0].message.tool_calls[0].function.arguments), { echo: 'Say hello to the gateway' });
  });
});

// ----------------------------------------------------------- embeddings

describe('embeddings', () => {
  const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

  test('SDK default (base64 on the wire) round-trips and matches float format', async () => {
    const input = ['hello world', 'a different input'];
    const b64 = await client.embeddings.create({ model: 'text-embedding-3-small', input });
    assert.equal(mock.requests().at(-1).json.encoding_format, 'base64', 'the SDK asked for base64');
    const flt = await client.embeddings.create({ model: 'text-embedding-3-small', input, encoding_format: 'float' });
    assert.equal(b64.object, 'list');
    assert.equal(b64.model, 'text-embedding-3-small');
    assert.equal(b64.data.length, 2);
    for (let i = 0; i < 2; i++) {
      assert.equal(b64.data[i].object, 'embedding');
      assert.equal(b64.data[i].index, i);
      assert.equal(b64.data[i].embedding.length, 8);
      assert.ok(Math.abs(norm(b64.data[i].embedding) - 1) < 1e-5, 'L2-normalised');
      assert.deepEqual(
        flt.data[i].embedding.map((x) => Math.fround(x)),
        b64.data[i].embedding,
        'float and base64 encode the same float32 vector',
      );
    }
    assert.notDeepEqual(b64.data[0].embedding, b64.data[1].embedding);
    assert.deepEqual(b64.usage, { prompt_tokens: 5, total_tokens: 5 });
    const again = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'hello world' });
    assert.deepEqual(again.data[0].embedding, b64.data[0].embedding, 'deterministic per input');
  });

  test('dimensions, token inputs and raw base64 bytes', async () => {
    const d = await client.embeddings.create({ model: 'e', input: 'x', dimensions: 16, encoding_format: 'float' });
    assert.equal(d.data[0].embedding.length, 16);
    const t = await client.embeddings.create({ model: 'e', input: [[1, 2, 3], [4, 5]], encoding_format: 'float' });
    assert.equal(t.data.length, 2);
    assert.equal(t.usage.prompt_tokens, 5);
    const single = await client.embeddings.create({ model: 'e', input: [7, 8, 9, 10], encoding_format: 'float' });
    assert.equal(single.data.length, 1);
    assert.equal(single.usage.prompt_tokens, 4);
    const res = await post('/v1/embeddings', { model: 'e', input: 'x', encoding_format: 'base64' });
    const body = await res.json();
    const buf = Buffer.from(body.data[0].embedding, 'base64');
    assert.equal(buf.length, 8 * 4, 'little-endian float32 x 8');
    const asFloat = await client.embeddings.create({ model: 'e', input: 'x', encoding_format: 'float' });
    for (let i = 0; i < 8; i++) assert.equal(buf.readFloatLE(i * 4), Math.fround(asFloat.data[0].embedding[i]));
    const bad = await post('/v1/embeddings', { model: 'e', input: [{ nope: 1 }] });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.type, 'invalid_request_error');
  });
});

// ------------------------------------------------------- misc endpoints

describe('routing, auth and errors', () => {
  test('models list and retrieve', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.ok(ids.includes('gpt-4o-mini') && ids.length >= 2);
    const m = await client.models.retrieve('gpt-4o');
    assert.deepEqual(Object.keys(m), ['id', 'object', 'created', 'owned_by']);
    assert.equal(m.object, 'model');
  });

  test('any base-path prefix works; unknown path 404; bad JSON 400', async () => {
    for (const p of ['/openai/v1/chat/completions', '/chat/completions', '/v1/chat/completions/']) {
      const r = await post(p, chatBody());
      assert.equal(r.status, 200, p);
      assert.equal((await r.json()).choices[0].message.content, EXPECTED);
    }
    const nf = await post('/v1/nope', {});
    assert.equal(nf.status, 404);
    assert.deepEqual(await nf.json(), {
      error: { message: 'Invalid URL (POST /v1/nope)', type: 'invalid_request_error', param: null, code: null },
    });
    const bj = await post('/v1/chat/completions', '{"model": "x", ', { raw: true });
    assert.equal(bj.status, 400);
    const e = (await bj.json()).error;
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.message, /could not parse the JSON body/);
  });

  test('401 with a wrong key echoes a masked key, like OpenAI', async () => {
    const wrongKey = 'sk-wrong-0123456789abcdefghijKLMN';
    const bad = new OpenAI({ apiKey: wrongKey, baseURL: mock.url + '/v1', maxRetries: 0 });
    await assert.rejects(bad.chat.completions.create(chatBody()), (err) => {
      assert.ok(err instanceof OpenAI.AuthenticationError);
      assert.equal(err.status, 401);
      assert.equal(err.code, 'invalid_api_key');
      assert.equal(err.type, 'invalid_request_error');
      assert.match(err.message, /Incorrect API key provided: sk-wrong\*+KLMN\. You can find your API key at/);
      assert.ok(!err.message.includes(wrongKey));
      return true;
    });
    const none = await post('/v1/chat/completions', chatBody(), { key: null });
    assert.equal(none.status, 401);
    const body = await none.json();
    assert.match(body.error.message, /^You didn't provide an API key/);
    assert.equal(body.error.code, null);
  });

  test('hostile inputs never crash the server', async () => {
    const cases = [
      ['/v1/chat/completions', '[]'],
      ['/v1/chat/completions', 'null'],
      ['/v1/chat/completions', '{"model":"m"}'],
      ['/v1/chat/completions', '{"model":"m","messages":"hi"}'],
      ['/v1/chat/completions', '{"model":"m","messages":[null,5,{"role":"user","content":{"x":1}}],"tools":"x","tool_choice":7}'],
      ['/v1/chat/completions', '{"model":"m","messages":[{"role":"user","content":[null,1,{"text":5}]}],"tools":[null],"tool_choice":"required","max_tokens":-3,"stream_options":5,"stream":true}'],
      ['/v1/chat/completions', '{"messages":[]}'],
      ['/v1/embeddings', '{"model":"m"}'],
      ['/v1/embeddings', '{"model":"m","input":[]}'],
      ['/v1/embeddings', '{"model":"m","input":"x","dimensions":"big"}'],
      ['/v1/embeddings', '\u0000\u0001'],
    ];
    for (const [path, body] of cases) {
      const r = await post(path, body, { raw: true });
      const text = await r.text();
      assert.ok([200, 400].includes(r.status), `${body} -> ${r.status}`);
      if (r.status === 400) assert.equal(typeof JSON.parse(text).error.message, 'string');
    }
    const ok = await client.chat.completions.create(chatBody());
    assert.equal(ok.choices[0].message.content, EXPECTED);
  });

  test('handler exceptions become a 500 OpenAI error body', async () => {
    const broken = await startMockProvider({ name: 'broken', models: [{ id: 'x', big: 1n }] });
    try {
      const r = await fetch(broken.url + '/v1/models');
      assert.equal(r.status, 500);
      assert.deepEqual((await r.json()).error, {
        message: 'The server had an error while processing your request. Sorry about that!',
        type: 'server_error',
        param: null,
        code: null,
      });
    } finally {
      await broken.close();
    }
  });

  test('keep-alive: one socket serves consecutive requests', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = () =>
      new Promise((resolve, reject) => {
        const req = http.get(mock.url + '/v1/models', { agent, headers: { authorization: `Bearer ${KEY}` } }, (res) => {
          res.resume();
          res.on('end', () => resolve({ reused: req.reusedSocket, conn: res.headers.connection }));
        });
        req.on('error', reject);
      });
    const a = await get();
    const b = await get();
    agent.destroy();
    assert.equal(a.conn, 'keep-alive');
    assert.equal(b.reused, true);
  });
});

// --------------------------------------------------------------- faults

describe('faults', () => {
  test('fixed status/body/headers; status-only gets an OpenAI error body; headers-only decorate', async () => {
    mock.enqueue({ status: 418, body: { hello: 'teapot' }, headers: { 'X-Custom': 'yes' } });
    const a = await post('/v1/chat/completions', chatBody());
    assert.equal(a.status, 418);
    assert.equal(a.headers.get('x-custom'), 'yes');
    assert.deepEqual(await a.json(), { hello: 'teapot' });

    mock.enqueue({ status: 503 });
    const b = await post('/v1/chat/completions', chatBody());
    assert.equal(b.status, 503);
    assert.equal((await b.json()).error.type, 'server_error');

    mock.enqueue({ body: 'plain text' });
    const c = await post('/v1/chat/completions', chatBody());
    assert.equal(c.status, 200);
    assert.match(c.headers.get('content-type'), /^text\/plain/);
    assert.equal(await c.text(), 'plain text');

    mock.enqueue({ headers: { 'x-extra': '1' } });
    const d = await post('/v1/chat/completions', chatBody());
    assert.equal(d.status, 200);
    assert.equal(d.headers.get('x-extra'), '1');
    assert.equal((await d.json()).choices[0].message.content, EXPECTED);

    const e = await post('/v1/chat/completions', chatBody());
    assert.equal(e.status, 200, 'faults are consumed');
    assert.equal(e.headers.get('x-extra'), null);
  });

  test('rateLimit -> 429 with retry-after / retry-after-ms and OpenAI body; SDK sees RateLimitError', async () => {
    mock.enqueue({ rateLimit: { retryAfter: '1' } });
    const a = await post('/v1/chat/completions', chatBody());
    assert.equal(a.status, 429);
    assert.equal(a.headers.get('retry-after'), '1');
    assert.equal(a.headers.get('retry-after-ms'), null);
    const body = await a.json();
    assert.equal(body.error.code, 'rate_limit_exceeded');
    assert.equal(body.error.type, 'requests');
    assert.match(body.error.message, /^Rate limit reached for gpt-4o-mini .* Please try again in 1s\./);

    mock.enqueue({ rateLimit: { retryAfterMs: 1500 } });
    const b = await post('/v1/chat/completions', chatBody());
    assert.equal(b.status, 429);
    assert.equal(b.headers.get('retry-after-ms'), '1500');
    assert.equal(b.headers.get('retry-after'), null);

    mock.enqueue({ rateLimit: {} });
    await assert.rejects(client.chat.completions.create(chatBody()), (err) => err instanceof OpenAI.RateLimitError && err.status === 429);
  });

  test('match, times and FIFO order', async () => {
    mock.enqueue({ match: { model: 'm-a' }, status: 500 });
    mock.enqueue({ status: 502, times: 2 });
    mock.enqueue({ match: { path: '/embeddings' }, status: 503 });
    const status = async (model) => (await post('/v1/chat/completions', chatBody({ model }))).status;
    assert.equal(await status('m-b'), 502, 'first fault does not match m-b');
    assert.equal(await status('m-a'), 500, 'FIFO: the m-a fault is older');
    assert.equal(await status('m-a'), 502, 'second use of times:2');
    assert.equal(await status('m-a'), 200);
    assert.equal(mock.pendingFaults().length, 1);
    const emb = await post('/v1/embeddings', { model: 'e', input: 'x' });
    assert.equal(emb.status, 503);
    assert.equal(mock.pendingFaults().length, 0);

    mock.enqueue({ status: 500, times: -1 });
    for (let i = 0; i < 3; i++) assert.equal(await status('any'), 500);
    mock.reset();
    assert.equal(await status('any'), 200, 'reset() clears queued faults');
  });

  test('delayHeadersMs delays the status line', async () => {
    mock.enqueue({ delayHeadersMs: 150 });
    const t0 = performance.now();
    const r = await post('/v1/chat/completions', chatBody());
    const dt = performance.now() - t0;
    assert.equal(r.status, 200);
    assert.ok(dt >= 140, `headers after ${dt} ms`);
    await r.text();
  });

  test('chunkDelayMs spaces stream frames and frames arrive incrementally', async () => {
    mock.enqueue({ chunkDelayMs: 30 });
    const t0 = performance.now();
    const r = await post('/v1/chat/completions', chatBody({ stream: true }));
    const reader = r.body.getReader();
    const arrivals = [];
    let text = '';
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      arrivals.push(performance.now() - t0);
      text += dec.decode(value, { stream: true });
    }
    const frames = sseFrames(text);
    const gaps = frames.length - 1;
    assert.ok(arrivals.at(-1) >= gaps * 30 - 10, `total ${arrivals.at(-1)} ms for ${gaps} gaps`);
    assert.ok(arrivals.length >= frames.length - 1, `frames arrived in ${arrivals.length} reads`);
    assert.ok(arrivals[0] < arrivals.at(-1) / 2, 'first frame long before the last');
  });

  test('resetAfterBytes: partial body then TCP reset surfaces as a client error', async () => {
    mock.enqueue({ resetAfterBytes: 20 });
    const r = await post('/v1/chat/completions', chatBody());
    assert.equal(r.status, 200);
    await assert.rejects(r.text(), (err) => err.cause?.code === 'ECONNRESET', 'a TCP RST, not a clean FIN');

    mock.enqueue({ resetAfterBytes: 600 });
    const stream = await client.chat.completions.create(chatBody({ stream: true }));
    const got = [];
    await assert.rejects(async () => {
      for await (const c of stream) got.push(c);
    });
    assert.ok(got.length >= 1, 'some chunks arrived before the reset');

    mock.enqueue({ resetAfterBytes: 0 });
    await assert.rejects(client.chat.completions.create(chatBody()));
    assert.deepEqual(
      mock.requests().map((q) => q.response.outcome),
      ['reset', 'reset', 'reset'],
    );
  });

  test('cutAfterChunks ends the stream cleanly after k content chunks: no finish, usage or [DONE]', async () => {
    mock.enqueue({ cutAfterChunks: 2 });
    const r = await post('/v1/chat/completions', chatBody({ stream: true, stream_options: { include_usage: true } }));
    const text = await r.text(); // must not throw: clean end
    const frames = sseFrames(text);
    assert.equal(frames.length, 3, 'role chunk + 2 content chunks');
    assert.ok(!text.includes('[DONE]'));
    assert.ok(frames.every((f) => f.data.choices.length === 1 && f.data.choices[0].finish_reason === null));
    assert.equal(frames[1].data.choices[0].delta.content + frames[2].data.choices[0].delta.content, 'mock(openai) reply ');

    mock.enqueue({ cutAfterChunks: 1 });
    const s = await client.chat.completions.create(chatBody({ stream: true }));
    const got = [];
    for await (const c of s) got.push(c);
    assert.equal(got.length, 2);
    assert.equal(mock.requests().at(-1).response.outcome, 'cut');
  });

  test('errorFrame: 200 SSE whose first frame is an error; SDK raises APIError', async () => {
    mock.enqueue({ errorFrame: true });
    const r = await post('/v1/chat/completions', chatBody({ stream: true }));
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/event-stream/);
    assert.equal(
      await r.text(),
      'data: {"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}\n\n',
    );
    mock.enqueue({ errorFrame: true });
    const s = await client.chat.completions.create(chatBody({ stream: true }));
    await assert.rejects(
      async () => {
        for await (const _ of s) {
          /* drain */
        }
      },
      (err) => err instanceof OpenAI.APIError && /server had an error/.test(err.message),
    );
  });

  test('redirectTo -> 302 with location', async () => {
    mock.enqueue({ redirectTo: 'http://127.0.0.1:9/elsewhere' });
    const r = await post('/v1/chat/completions', chatBody(), { redirect: 'manual' });
    assert.equal(r.status, 302);
    assert.equal(r.headers.get('location'), 'http://127.0.0.1:9/elsewhere');
  });

  test('sliceBytes: many small writes, identical concatenated bytes', async () => {
    const plain = await rawRequest('/v1/chat/completions', chatBody({ stream: true, stream_options: { include_usage: true } }));
    mock.enqueue({ sliceBytes: 7 });
    const sliced = await rawRequest('/v1/chat/completions', chatBody({ stream: true, stream_options: { include_usage: true } }));
    assert.equal(sliced.status, 200);
    assert.equal(normalise(sliced.body.toString()), normalise(plain.body.toString()));
    assert.ok(sliced.parts.length > plain.parts.length, `${sliced.parts.length} reads vs ${plain.parts.length}`);
    assert.ok(sliced.parts.some((p) => !p.toString().endsWith('\n\n')), 'slices cut through frames');

    const fixed = 'data: {"a":1}\n\ndata: [DONE]\n\n';
    mock.enqueue({ body: fixed, headers: { 'content-type': 'text/event-stream' }, sliceBytes: 3 });
    const f = await rawRequest('/v1/chat/completions', chatBody());
    assert.equal(f.body.toString(), fixed);

    mock.enqueue({ sliceBytes: 5 });
    const j = await client.chat.completions.create(chatBody());
    assert.equal(j.choices[0].message.content, EXPECTED, 'non-streaming bodies can be sliced too');
  });

  test('omitUsage removes usage everywhere', async () => {
    mock.enqueue({ omitUsage: true });
    const a = await (await post('/v1/chat/completions', chatBody())).json();
    assert.ok(!('usage' in a));
    assert.equal(a.choices[0].message.content, EXPECTED);
    mock.enqueue({ omitUsage: true });
    const text = await (await post('/v1/chat/completions', chatBody({ stream: true, stream_options: { include_usage: true } }))).text();
    assert.ok(!text.includes('"usage"'));
    const frames = sseFrames(text);
    assert.ok(frames.slice(0, -1).every((f) => f.data.choices.length === 1), 'no usage-only chunk');
    assert.equal(frames.at(-1).data, '[DONE]');
    mock.enqueue({ omitUsage: true });
    const e = await (await post('/v1/embeddings', { model: 'e', input: 'x' })).json();
    assert.ok(!('usage' in e));
    assert.equal(mock.requests().at(-1).response.usage, null);
  });
});

// --------------------------------------------------- recording + control

describe('recording and control plane', () => {
  test('recordings hold lower-cased headers, raw body, parsed json and the response', async () => {
    const sent = JSON.stringify(chatBody({ user: 'u-1' }));
    mock.enqueue({ match: { model: 'nope' }, status: 500 });
    mock.enqueue({ headers: { 'x-f': '1' } });
    const r = await post('/v1/chat/completions?trace=1', sent, { raw: true, headers: { 'X-Trace-Id': 'abc' } });
    const body = await r.json();
    await post('/v1/chat/completions', '{oops', { raw: true });
    const recs = mock.requests();
    assert.equal(recs.length, 2);
    const [a, b] = recs;
    assert.equal(a.seq + 1, b.seq);
    assert.equal(a.method, 'POST');
    assert.equal(a.path, '/v1/chat/completions');
    assert.deepEqual(a.query, { trace: '1' });
    assert.equal(a.headers['x-trace-id'], 'abc');
    assert.equal(a.headers.authorization, `Bearer ${KEY}`);
    assert.ok(Object.keys(a.headers).every((k) => k === k.toLowerCase()));
    assert.equal(a.body, sent);
    assert.deepEqual(a.json, JSON.parse(sent));
    assert.equal(typeof a.receivedAt, 'number');
    assert.ok(Math.abs(a.receivedAt - Date.now()) < 10_000);
    assert.equal(a.response.status, 200);
    assert.deepEqual(a.response.usage, body.usage);
    assert.equal(a.response.outcome, 'complete');
    assert.equal(a.response.faults.length, 1);
    assert.deepEqual(a.response.faults[0].headers, { 'x-f': '1' });
    assert.equal(b.body, '{oops');
    assert.equal(b.json, null);
    assert.equal(b.response.status, 400);
    assert.deepEqual(b.response.faults, []);
    recs[0].body = 'mutated';
    assert.equal(mock.requests()[0].body, sent, 'requests() returns a copy');
  });

  test('HTTP control plane enqueues, lists and resets; its paths are not recorded', async () => {
    const q = await fetch(mock.url + '/__mock/faults', { method: 'POST', body: JSON.stringify({ match: { model: 'cp' }, status: 500 }) });
    assert.equal(q.status, 200);
    assert.equal((await q.json()).pending, 1);
    assert.equal((await post('/v1/chat/completions', chatBody({ model: 'cp' }))).status, 500);
    const listed = await (await fetch(mock.url + '/__mock/requests')).json();
    assert.equal(listed.length, 1);
    assert.equal(listed[0].json.model, 'cp');
    assert.deepEqual(listed[0].response.faults.map((f) => f.status), [500]);
    assert.ok(mock.requests().every((r) => !r.path.startsWith('/__mock')));
    await fetch(mock.url + '/__mock/faults', { method: 'POST', body: JSON.stringify([{ status: 501 }, { status: 502 }]) });
    assert.equal(mock.pendingFaults().length, 2);
    const rs = await fetch(mock.url + '/__mock/reset', { method: 'POST' });
    assert.equal(rs.status, 200);
    assert.equal(mock.requests().length, 0);
    assert.equal(mock.pendingFaults().length, 0);
    const bad = await fetch(mock.url + '/__mock/faults', { method: 'POST', body: 'nope' });
    assert.equal(bad.status, 400);
  });

  test('standalone CLI prints {name,url,port} and serves', async () => {
    const bin = fileURLToPath(new URL('./mock-provider.mjs', import.meta.url));
    const child = spawn(process.execPath, [bin, '--port', '0', '--name', 'cli-mock', '--api-key', 'sk-cli-key-000000000000'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const line = await new Promise((resolve, reject) => {
        let buf = '';
        child.stdout.on('data', (c) => {
          buf += c;
          const i = buf.indexOf('\n');
          if (i >= 0) resolve(buf.slice(0, i));
        });
        child.on('exit', (code) => reject(new Error(`exited ${code}`)));
      });
      const info = JSON.parse(line);
      assert.deepEqual(Object.keys(info), ['name', 'url', 'port']);
      assert.equal(info.name, 'cli-mock');
      assert.equal(info.url, `http://127.0.0.1:${info.port}`);
      const c = new OpenAI({ apiKey: 'sk-cli-key-000000000000', baseURL: info.url + '/v1', maxRetries: 0 });
      const r = await c.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'ping' }] });
      assert.equal(r.choices[0].message.content, 'mock(cli-mock) reply to: ping');
    } finally {
      const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
      child.kill('SIGTERM');
      const { code } = await exited;
      assert.equal(code, 0);
    }
  });
});

// --------------------------------------------------- fixture conformance

describe('fixture conformance (mock output has the recorded OpenAI shapes)', () => {
  test('chat.response.json: fields, order and 2-space pretty printing', async () => {
    const text = await (await post('/v1/chat/completions', chatBody())).text();
    const fx = fixture('chat.response.json');
    sameShape(JSON.parse(text), JSON.parse(fx));
    assert.ok(text.startsWith('{\n  "id": "chatcmpl-') && text.endsWith('}\n'));
    assert.ok(fx.startsWith('{\n  "id": "chatcmpl-') && fx.endsWith('}\n'));
  });

  test('chat.stream.sse: role, content, finish and usage chunks', async () => {
    const text = await (await post('/v1/chat/completions', chatBody({ stream: true, stream_options: { include_usage: true } }))).text();
    const mine = sseFrames(text);
    const fx = sseFrames(fixture('chat.stream.sse'));
    for (const [m, f, what] of [
      [mine[0], fx[0], 'role chunk'],
      [mine[1], fx[1], 'content chunk'],
      [mine.at(-3), fx.at(-3), 'finish chunk'],
      [mine.at(-2), fx.at(-2), 'usage chunk'],
    ]) {
      sameShape(m.data, f.data, what);
    }
    assert.equal(mine.at(-1).raw, 'data: [DONE]');
    assert.equal(fx.at(-1).raw, 'data: [DONE]');
  });

  test('chat.tools.stream.sse: tool header, argument fragment, finish and usage chunks', async () => {
    const tools = [{ type: 'function', function: { name: 'get_current_weather', parameters: { type: 'object', properties: {} } } }];
    const body = chatBody({ tools, tool_choice: 'required', stream: true, stream_options: { include_usage: true } });
    const mine = sseFrames(await (await post('/v1/chat/completions', body)).text());
    const fx = sseFrames(fixture('chat.tools.stream.sse'));
    sameShape(mine[0].data, fx[0].data, 'tool header chunk');
    sameShape(mine[1].data, fx[1].data, 'argument fragment');
    sameShape(mine.at(-3).data, fx.at(-3).data, 'finish chunk');
    sameShape(mine.at(-2).data, fx.at(-2).data, 'usage chunk');
    assert.equal(fx.at(-3).data.choices[0].finish_reason, 'tool_calls');
  });

  test('embeddings.response.json and error fixtures', async () => {
    const e = await (await post('/v1/embeddings', { model: 'text-embedding-3-small', input: 'x', encoding_format: 'float' })).text();
    sameShape(JSON.parse(e), JSON.parse(fixture('embeddings.response.json')));
    assert.ok(e.startsWith('{\n  "object": "list",'));

    const wrong = await post('/v1/chat/completions', chatBody(), { key: 'sk-proj-abcdefghijklmnopqrstuvwxyz' });
    const w = await wrong.text();
    const fx401 = fixture('error.401.json');
    assert.deepEqual(shape(JSON.parse(w)), shape(JSON.parse(fx401)));
    assert.equal(JSON.parse(w).error.code, JSON.parse(fx401).error.code);
    assert.ok(w.startsWith('{\n    "error": {\n        "message": ') && w.endsWith('}\n'), '4-space error indent');
    assert.ok(fx401.startsWith('{\n    "error": {\n        "message": '));

    mock.enqueue({ rateLimit: { retryAfter: '20' } });
    const rl = JSON.parse(await (await post('/v1/chat/completions', chatBody())).text());
    const fx429 = JSON.parse(fixture('error.429.json'));
    assert.deepEqual(shape(rl), shape(fx429));
    assert.equal(rl.error.type, fx429.error.type);
    assert.equal(rl.error.code, fx429.error.code);
    assert.equal(
      rl.error.message.replace(/organization \S+/, 'organization X'),
      fx429.error.message.replace(/organization \S+/, 'organization X'),
    );
  });
});
