// Error paths, the usage ledger's completeness, and the admin API for virtual
// keys, end to end: the built Worker under `wrangler dev` in front of the mock
// OpenAI provider (faults chosen per request), with the official `openai` SDK
// as the client where an SDK is what a user would hold, raw fetch otherwise.
//
// Every error is checked for OpenAI's body shape — exactly
// {"error":{"message","type","param","code"}} — and its status; request
// errors are checked to never reach the provider; every authenticated request
// is checked to leave exactly one ledger row with the right outcome.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { freePort, readSse, startStack } from './harness.mjs';

const UPSTREAM_KEY = 'sk-test-openai-errors-0000000000000';
const DEEPSEEK_KEY = 'sk-test-deepseek-refused-00000000000';
const MAX_BODY_BYTES = 4 * 1024 * 1024; // wrangler.toml [vars.GATEWAY.limits] max_body_bytes
const CHAT = '/v1/chat/completions';
const MODEL = 'openai/gpt-4o-mini';
const HELLO = [{ role: 'user', content: 'one two three four five six seven' }];

let stack;
let key; // the main key for sections 1-3
let client;

before(async () => {
  // A loopback port nobody listens on: connections to it are refused.
  const closedPort = await freePort();
  stack = await startStack({
    providers: {
      openai: { apiKey: UPSTREAM_KEY },
      // Configured and pointed at a mock, but GROQ_API_KEY is not set.
      groq: { apiKey: null },
    },
    secrets: { DEEPSEEK_API_KEY: DEEPSEEK_KEY },
    editConfig(gateway) {
      gateway.providers.deepseek = { base_url: `http://127.0.0.1:${closedPort}/v1` };
    },
  });
  key = await stack.createKey({ name: 'errors-and-keys' });
  client = clientFor(key.key);
});

after(async () => {
  await stack?.stop();
});

// ------------------------------------------------------------------ helpers

function clientFor(apiKey) {
  return new OpenAI({ apiKey, baseURL: `${stack.url}/v1`, maxRetries: 0, timeout: 15_000 });
}

/** Raw request to the gateway; `body` is sent as is when a string, else as JSON. */
async function call(path, { method = 'POST', body, headers = {}, apiKey = key.key } = {}) {
  const h = { 'content-type': 'application/json', ...headers };
  if (apiKey) h.authorization = `Bearer ${apiKey}`;
  const r = await fetch(stack.url + path, {
    method,
    headers: h,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: r.status, headers: r.headers, text, json, requestId: r.headers.get('x-tollgate-request-id') };
}

function chat(body, opts = {}) {
  return call(CHAT, { body, ...opts });
}

/** Asserts OpenAI's error body: exactly message/type/param/code, with the given values. */
function assertErrorBody(json, { code, param, type } = {}, context = '') {
  const where = `${context} ${JSON.stringify(json)}`;
  assert.ok(json && typeof json === 'object' && !Array.isArray(json), `error body is an object: ${where}`);
  assert.deepEqual(Object.keys(json), ['error'], `only "error" at the top level: ${where}`);
  const e = json.error;
  assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'param', 'type'], `exactly the 4 OpenAI error keys: ${where}`);
  assert.equal(typeof e.message, 'string', where);
  assert.ok(e.message.length > 0, `non-empty message: ${where}`);
  assert.equal(typeof e.type, 'string', where);
  assert.ok(e.param === null || typeof e.param === 'string', `param is string|null: ${where}`);
  assert.ok(e.code === null || typeof e.code === 'string', `code is string|null: ${where}`);
  if (code !== undefined) assert.equal(e.code, code, where);
  if (param !== undefined) assert.equal(e.param, param, where);
  if (type !== undefined) assert.equal(e.type, type, where);
  return e;
}

function assertError(res, status, expect = {}, context = '') {
  assert.equal(res.status, status, `${context}: status ${res.status} ${res.text}`);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, `${context}: JSON content type`);
  return assertErrorBody(res.json, expect, context);
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

/** Ledger row for one request id, waiting for the post-response write. */
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

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** SSE data payloads of a streamed gateway response. */
async function streamFrames(res) {
  const { frames, rest } = await readSse(res);
  assert.equal(rest.trim(), '', 'no partial frame at the end of the stream');
  return frames;
}

function parseData(frame) {
  assert.ok(frame.startsWith('data: '), frame);
  const data = frame.slice(6);
  return data === '[DONE]' ? data : JSON.parse(data);
}

const fullReply = (text) => `mock(openai) reply to: ${text}`;

function contentOf(frames) {
  return frames
    .map(parseData)
    .filter((d) => d !== '[DONE]' && !d.error)
    .map((d) => d.choices?.[0]?.delta?.content ?? '')
    .join('');
}

// ---------------------------------------------------- 1. request errors

describe('request errors are 400/404/405/413 in OpenAI shape and never reach the provider', () => {
  const cases = [
    { name: 'body not JSON', req: () => chat('{"model": "demo", nope'), status: 400, code: 'invalid_json' },
    { name: 'JSON array body', req: () => chat([{ model: 'demo' }]), status: 400, code: 'invalid_request' },
    { name: 'empty body', req: () => chat(''), status: 400 },
    { name: 'missing model', req: () => chat({ messages: HELLO }), status: 400, code: 'missing_required_parameter', param: 'model' },
    { name: 'model not a string', req: () => chat({ model: 42, messages: HELLO }), status: 400, param: 'model' },
    { name: 'empty messages', req: () => chat({ model: MODEL, messages: [] }), status: 400, param: 'messages' },
    { name: 'missing messages', req: () => chat({ model: MODEL }), status: 400, code: 'missing_required_parameter', param: 'messages' },
    { name: 'message without role', req: () => chat({ model: MODEL, messages: [{ content: 'x' }] }), status: 400, param: 'messages[0].role' },
    { name: 'stream: "yes"', req: () => chat({ model: MODEL, messages: HELLO, stream: 'yes' }), status: 400, param: 'stream' },
    { name: 'unknown model', req: () => chat({ model: 'nope', messages: HELLO }), status: 404, code: 'model_not_found', param: 'model' },
    {
      name: 'unknown provider',
      req: () => chat({ model: 'unknownprovider/x', messages: HELLO }),
      status: 404,
      code: 'model_not_found',
      param: 'model',
    },
    {
      name: 'body over max_body_bytes (content-length)',
      req: () => chat(JSON.stringify({ model: MODEL, messages: HELLO, pad: 'x'.repeat(MAX_BODY_BYTES) })),
      status: 413,
      code: 'payload_too_large',
    },
    {
      name: 'JSON nested 100 deep',
      req: () => chat(`{"model":"${MODEL}","messages":[{"role":"user","content":"x"}],"extra":${'['.repeat(100)}${']'.repeat(100)}}`),
      status: 400,
      code: 'invalid_request',
    },
    {
      name: 'client-chosen upstream URL',
      req: () => chat({ model: MODEL, messages: HELLO, extra_body: { api_base: 'http://169.254.169.254/' } }),
      status: 400,
      code: 'upstream_override_not_allowed',
    },
    {
      name: 'metadata header not JSON',
      req: () => chat({ model: MODEL, messages: HELLO }, { headers: { 'x-tollgate-metadata': 'user=alice' } }),
      status: 400,
      code: 'invalid_metadata',
      param: 'x-tollgate-metadata',
    },
    {
      name: 'metadata header with a nested object',
      req: () => chat({ model: MODEL, messages: HELLO }, { headers: { 'x-tollgate-metadata': '{"user":{"id":"u1"}}' } }),
      status: 400,
      code: 'invalid_metadata',
      param: 'x-tollgate-metadata',
    },
    { name: 'embeddings without input', req: () => call('/v1/embeddings', { body: { model: 'openai/text-embedding-3-small' } }), status: 400, param: 'input' },
    { name: 'POST /v1/nope', req: () => call('/v1/nope', { body: { model: MODEL, messages: HELLO } }), status: 404, code: 'unknown_url' },
    { name: 'GET /v1/nope', req: () => call('/v1/nope', { method: 'GET' }), status: 404, code: 'unknown_url' },
  ];

  for (const c of cases) {
    test(c.name, async () => {
      stack.mocks.openai.reset();
      const res = await c.req();
      assertError(res, c.status, { code: c.code, param: c.param, type: 'invalid_request_error' }, c.name);
      assert.equal(stack.mocks.openai.requests().length, 0, 'the provider received nothing');
    });
  }

  /** A chat body for the demo model of exactly `size` bytes. */
  function bodyOfSize(size) {
    const head = '{"model":"demo","messages":[{"role":"user","content":"hi"}],"pad":"';
    const tail = '"}';
    return head + 'x'.repeat(size - head.length - tail.length) + tail;
  }

  test('a body of exactly max_body_bytes is accepted; one byte more is 413', async () => {
    const exact = bodyOfSize(MAX_BODY_BYTES);
    assert.equal(Buffer.byteLength(exact), MAX_BODY_BYTES);
    const ok = await chat(exact);
    assert.equal(ok.status, 200, ok.text.slice(0, 300));
    assert.equal(ok.json.choices[0].message.content, "Hello from tollgate's demo provider. You said: hi");
    const over = await chat(bodyOfSize(MAX_BODY_BYTES + 1));
    const e = assertError(over, 413, { code: 'payload_too_large', type: 'invalid_request_error', param: null });
    assert.ok(e.message.includes(String(MAX_BODY_BYTES)), e.message);
  });

  test('body over max_body_bytes without content-length (chunked) is 413 too', async () => {
    stack.mocks.openai.reset();
    const head = Buffer.from(`{"model":"${MODEL}","messages":[{"role":"user","content":"x"}],"pad":"`);
    const chunk = Buffer.alloc(256 * 1024, 'x');
    let sent = 0;
    const body = new ReadableStream({
      pull(controller) {
        if (sent === 0) controller.enqueue(head);
        if (sent > MAX_BODY_BYTES + chunk.length) {
          controller.enqueue(Buffer.from('"}'));
          controller.close();
          return;
        }
        controller.enqueue(chunk);
        sent += chunk.length;
      },
    });
    const r = await fetch(stack.url + CHAT, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body,
      duplex: 'half',
    });
    const text = await r.text();
    assert.equal(r.status, 413, text);
    assertErrorBody(JSON.parse(text), { code: 'payload_too_large' });
    assert.equal(stack.mocks.openai.requests().length, 0);
  });

  test('GET /v1/chat/completions is 405 with an Allow header', async () => {
    const res = await call(CHAT, { method: 'GET' });
    assertError(res, 405, { code: 'method_not_allowed', type: 'invalid_request_error' });
    assert.equal(res.headers.get('allow'), 'POST');
  });

  test('the SDK surfaces request errors as APIError with the body fields', async () => {
    stack.mocks.openai.reset();
    const err = await sdkError(() => client.chat.completions.create({ model: 'nope', messages: HELLO }));
    assert.equal(err.status, 404);
    assert.ok(err instanceof OpenAI.NotFoundError);
    assertErrorBody({ error: err.error }, { code: 'model_not_found', param: 'model' });
    assert.match(err.headers.get('x-tollgate-request-id'), /^req_[0-9a-f]{32}$/);
    assert.equal(stack.mocks.openai.requests().length, 0);
  });

  test('bad or missing virtual keys are 401 in OpenAI shape', async () => {
    for (const apiKey of [null, 'sk-proj-not-a-virtual-key', `tg-${'0'.repeat(48)}`]) {
      const res = await chat({ model: MODEL, messages: HELLO }, { apiKey });
      assertError(res, 401, { code: 'invalid_api_key', type: 'authentication_error' }, `key ${apiKey}`);
    }
  });
});

// ------------------------------------------------ 2. upstream errors

describe('upstream errors are re-wrapped', () => {
  async function upstreamCase(fault, body = { model: MODEL, messages: HELLO }) {
    stack.mocks.openai.reset();
    stack.mocks.openai.enqueue(fault);
    const res = await chat(body);
    const recs = stack.mocks.openai.requests();
    assert.equal(recs.length, 1, 'exactly one upstream attempt');
    return res;
  }

  test('upstream 400 with an OpenAI error body → 400 upstream_invalid_request carrying the message', async () => {
    const upstreamMessage = "Invalid value for 'temperature': 7 is greater than the maximum of 2.";
    const res = await upstreamCase({
      status: 400,
      body: { error: { message: upstreamMessage, type: 'invalid_request_error', param: 'temperature', code: 'invalid_value' } },
    });
    const e = assertError(res, 400, { code: 'upstream_invalid_request', type: 'invalid_request_error' });
    assert.ok(e.message.includes(upstreamMessage), e.message);
    const row = await ledgerRow(res.requestId);
    assert.equal(row.status, 400);
    assert.equal(row.outcome, 'upstream_error');
    assert.equal(row.error_code, 'upstream_invalid_request');
  });

  test('upstream 400 text that echoes the provider key is scrubbed', async () => {
    const res = await upstreamCase({ status: 400, body: { error: { message: `bad request from ${UPSTREAM_KEY} here` } } });
    const e = assertError(res, 400, { code: 'upstream_invalid_request' });
    assert.ok(!res.text.includes(UPSTREAM_KEY), res.text);
    assert.ok(!res.text.includes(UPSTREAM_KEY.slice(8)), res.text);
    assert.ok(e.message.includes('bad request from'), e.message);
  });

  test('upstream 500 → 502 upstream_error (via the SDK)', async () => {
    stack.mocks.openai.reset();
    stack.mocks.openai.enqueue({ status: 500 });
    const err = await sdkError(() => client.chat.completions.create({ model: MODEL, messages: HELLO }));
    assert.equal(err.status, 502);
    const e = assertErrorBody({ error: err.error }, { code: 'upstream_error', type: 'server_error' });
    assert.ok(!e.message.includes(UPSTREAM_KEY));
    const row = await ledgerRow(err.headers.get('x-tollgate-request-id'));
    assert.equal(row.status, 502);
    assert.equal(row.outcome, 'upstream_error');
  });

  test('upstream 503 → 503', async () => {
    const res = await upstreamCase({ status: 503 });
    assertError(res, 503, { code: 'upstream_error', type: 'server_error' });
  });

  test('upstream 429 with retry-after → 429 upstream_rate_limited with retry-after passed on', async () => {
    const res = await upstreamCase({ rateLimit: { retryAfter: '7' } });
    assertError(res, 429, { code: 'upstream_rate_limited', type: 'rate_limit_error' });
    assert.equal(res.headers.get('retry-after'), '7');
    // Also through the SDK, which exposes the headers.
    stack.mocks.openai.enqueue({ rateLimit: { retryAfter: '7' } });
    const err = await sdkError(() => client.chat.completions.create({ model: MODEL, messages: HELLO }));
    assert.ok(err instanceof OpenAI.RateLimitError);
    assert.equal(err.status, 429);
    assert.equal(err.headers.get('retry-after'), '7');
    assert.equal(err.code, 'upstream_rate_limited');
  });

  test('upstream 429 with only retry-after-ms gives the client Retry-After in whole seconds, rounded up', async () => {
    const res = await upstreamCase({ rateLimit: { retryAfterMs: 1500 } });
    assertError(res, 429, { code: 'upstream_rate_limited' });
    assert.equal(res.headers.get('retry-after'), '2', [...res.headers].join(' '));
  });

  test("upstream 401 → 502 upstream_auth_failed (the operator's provider key, not the client's)", async () => {
    const res = await upstreamCase({
      status: 401,
      body: { error: { message: `Incorrect API key provided: ${UPSTREAM_KEY}.`, type: 'invalid_request_error', param: null, code: 'invalid_api_key' } },
    });
    const e = assertError(res, 502, { code: 'upstream_auth_failed', type: 'server_error' });
    assert.ok(!res.text.includes(UPSTREAM_KEY), 'provider key never echoed');
    assert.ok(e.message.includes('openai'), e.message);
    const row = await ledgerRow(res.requestId);
    assert.equal(row.outcome, 'upstream_error');
    assert.equal(row.error_code, 'upstream_auth_failed');
  });

  test('connection reset before any body byte → 502 upstream_unreachable', async () => {
    const res = await upstreamCase({ resetAfterBytes: 0 });
    assertError(res, 502, { code: 'upstream_unreachable', type: 'server_error' });
    const row = await ledgerRow(res.requestId);
    assert.equal(row.status, 502);
    assert.equal(row.outcome, 'upstream_error');
  });

  test('non-stream response cut by a reset mid-body → 502, not a 200 with a partial body', async () => {
    const res = await upstreamCase({ resetAfterBytes: 20 });
    const e = assertError(res, 502, { type: 'server_error' });
    assert.ok(['upstream_unreachable', 'upstream_invalid_response', 'upstream_error'].includes(e.code), e.code);
    const row = await ledgerRow(res.requestId);
    assert.equal(row.status, 502);
    assert.equal(row.outcome, 'upstream_error');
  });

  test('provider whose secret is missing → 503 provider_not_configured, nothing sent', async () => {
    stack.mocks.groq.reset();
    const res = await chat({ model: 'groq/llama-3.1-8b-instant', messages: HELLO });
    const e = assertError(res, 503, { code: 'provider_not_configured', type: 'server_error' });
    assert.ok(e.message.includes('GROQ_API_KEY'), e.message);
    assert.equal(stack.mocks.groq.requests().length, 0);
    const row = await ledgerRow(res.requestId);
    assert.equal(row.status, 503);
    assert.equal(row.outcome, 'rejected');
    assert.equal(row.error_code, 'provider_not_configured');
  });

  test('connection refused → 502 upstream_unreachable, without the provider key or URL in the body', async () => {
    const res = await chat({ model: 'deepseek/deepseek-chat', messages: HELLO });
    const e = assertError(res, 502, { code: 'upstream_unreachable', type: 'server_error' });
    assert.ok(e.message.includes('deepseek'), e.message);
    assert.ok(!res.text.includes(DEEPSEEK_KEY) && !res.text.includes('127.0.0.1'), res.text);
    const row = await ledgerRow(res.requestId);
    assert.equal(row.status, 502);
    assert.equal(row.outcome, 'upstream_error');
    assert.equal(row.error_code, 'upstream_unreachable');
  });

  test('upstream redirect is not followed → 502 upstream_redirect', async () => {
    const res = await upstreamCase({ redirectTo: `${stack.mocks.groq.url}/openai/v1/chat/completions` });
    assertError(res, 502, { code: 'upstream_redirect' });
  });
});

// --------------------------------------- 3. streams after the commit point

describe('streams that fail after the commit point', () => {
  async function streamCase(fault, content = HELLO[0].content) {
    stack.mocks.openai.reset();
    stack.mocks.openai.enqueue(fault);
    const res = await fetch(stack.url + CHAT, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, stream: true, messages: [{ role: 'user', content }] }),
    });
    assert.equal(res.status, 200, 'headers were committed before the failure');
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const requestId = res.headers.get('x-tollgate-request-id');
    const frames = await streamFrames(res);
    return { frames, requestId };
  }

  function assertTruncatedEnd(frames) {
    assert.ok(frames.length >= 1);
    assert.ok(!frames.includes('data: [DONE]'), `no [DONE]: ${frames.join(' | ')}`);
    const last = parseData(frames[frames.length - 1]);
    assertErrorBody(last, { code: 'upstream_truncated', type: 'server_error' }, 'final frame');
    // Only the last frame is an error.
    for (const f of frames.slice(0, -1)) assert.ok(!parseData(f).error, f);
  }

  test('cutAfterChunks: 3 → 200, the first deltas, then an upstream_truncated error frame and no [DONE]', async () => {
    const { frames, requestId } = await streamCase({ cutAfterChunks: 3 });
    assertTruncatedEnd(frames);
    // role frame + 3 content frames, then the gateway's error frame.
    assert.equal(frames.length, 5, frames.join('\n'));
    assert.equal(contentOf(frames), 'mock(openai) reply to: ');
    const row = await ledgerRow(requestId);
    assert.equal(row.status, 200);
    assert.equal(row.outcome, 'upstream_truncated');
    assert.equal(row.error_code, 'upstream_truncated');
    assert.equal(row.stream, 1);
  });

  test('cutAfterChunks through the SDK: the async iterator rejects after the first deltas', async () => {
    stack.mocks.openai.reset();
    stack.mocks.openai.enqueue({ cutAfterChunks: 3 });
    const stream = await client.chat.completions.create({ model: MODEL, messages: HELLO, stream: true });
    let text = '';
    await assert.rejects(
      async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
      },
      (err) => {
        assert.ok(err instanceof OpenAI.APIError, String(err));
        assert.equal(err.code, 'upstream_truncated');
        return true;
      },
    );
    assert.equal(text, 'mock(openai) reply to: ');
  });

  test('reset after 400 bytes of a stream → same shape: 200, error frame, no [DONE]', async () => {
    const { frames, requestId } = await streamCase({ resetAfterBytes: 400 });
    assertTruncatedEnd(frames);
    assert.ok(frames.length >= 2, 'the complete role frame before the reset was forwarded');
    assert.equal(parseData(frames[0]).choices[0].delta.role, 'assistant');
    assert.ok(fullReply(HELLO[0].content).startsWith(contentOf(frames)));
    assert.equal(stack.mocks.openai.requests()[0].response.outcome, 'reset');
    const row = await ledgerRow(requestId);
    assert.equal(row.status, 200);
    assert.equal(row.outcome, 'upstream_truncated');
    assert.equal(row.error_code, 'upstream_truncated');
  });

  test('reset after 1000 bytes: the content deltas before it arrive whole, then the error frame', async () => {
    const { frames } = await streamCase({ resetAfterBytes: 1000 });
    assertTruncatedEnd(frames);
    const text = contentOf(frames);
    assert.ok(text.length > 0, 'some content arrived');
    assert.ok(fullReply(HELLO[0].content).startsWith(text), text);
    assert.ok(text.length < fullReply(HELLO[0].content).length);
  });

  test('reset mid-stream through the SDK rejects the iterator', async () => {
    stack.mocks.openai.reset();
    stack.mocks.openai.enqueue({ resetAfterBytes: 700 });
    const stream = await client.chat.completions.create({ model: MODEL, messages: HELLO, stream: true });
    await assert.rejects(async () => {
      for await (const _ of stream);
    }, OpenAI.APIError);
  });

  // DESIGN §1: the commit point is the first byte sent to the client. Before
  // it, a failed stream is a normal error response (and, later, a reason to
  // try the next link of a fallback chain).
  test('a stream that opens with an error frame is a 502 error response, not a committed 200', async () => {
    stack.mocks.openai.reset();
    stack.mocks.openai.enqueue({ errorFrame: true });
    const res = await chat({ model: MODEL, messages: HELLO, stream: true });
    const e = assertError(res, 502, { code: 'upstream_error', type: 'server_error' });
    assert.match(e.message, /start of its stream/);
    const row = await ledgerRow(res.headers.get('x-tollgate-request-id'));
    assert.equal(row.status, 502);
    assert.equal(row.outcome, 'upstream_error');
    assert.equal(row.error_code, 'upstream_error');

    stack.mocks.openai.enqueue({ errorFrame: true });
    const err = await sdkError(async () => {
      const s = await client.chat.completions.create({ model: MODEL, messages: HELLO, stream: true });
      for await (const _ of s);
    });
    assert.equal(err.status, 502);
  });

  test('a stream that fails before its first byte is an error response, not a committed 200', async () => {
    stack.mocks.openai.reset();
    stack.mocks.openai.enqueue({ resetAfterBytes: 0 });
    const res = await chat({ model: MODEL, messages: HELLO, stream: true });
    assertError(res, 502, { code: 'upstream_unreachable' });
    stack.mocks.openai.enqueue({ body: { not: 'sse' } });
    const res2 = await chat({ model: MODEL, messages: HELLO, stream: true });
    assertError(res2, 502, { code: 'upstream_invalid_response' });
  });

  test('a stream that errors before the commit point is a normal error response', async () => {
    stack.mocks.openai.reset();
    stack.mocks.openai.enqueue({ status: 500 });
    const err = await sdkError(async () => {
      const s = await client.chat.completions.create({ model: MODEL, messages: HELLO, stream: true });
      for await (const _ of s);
    });
    assert.equal(err.status, 502);
    assert.equal(err.code, 'upstream_error');
  });
});

// -------------------------------------------------- 4. ledger completeness

describe('ledger completeness', () => {
  test('exactly one row per authenticated request, with matching id, status, outcome and error_code', async () => {
    const k = await stack.createKey({ name: 'ledger-completeness' });
    const opts = { apiKey: k.key };
    const body = { model: MODEL, messages: HELLO };
    const plan = [
      { name: 'success', run: () => chat(body, opts), status: 200, outcome: 'ok', code: null },
      { name: 'demo success', run: () => chat({ model: 'demo', messages: HELLO }, opts), status: 200, outcome: 'ok', code: null },
      { name: 'stream success', fault: null, stream: true, status: 200, outcome: 'ok', code: null },
      { name: '404 model', run: () => chat({ model: 'nope', messages: HELLO }, opts), status: 404, outcome: 'rejected', code: 'model_not_found' },
      { name: '400 bad body', run: () => chat('{not json', opts), status: 400, outcome: 'rejected', code: 'invalid_json' },
      {
        name: '400 bad metadata',
        run: () => chat(body, { ...opts, headers: { 'x-tollgate-metadata': '[1]' } }),
        status: 400,
        outcome: 'rejected',
        code: 'invalid_metadata',
      },
      { name: '503 no secret', run: () => chat({ model: 'groq/x', messages: HELLO }, opts), status: 503, outcome: 'rejected', code: 'provider_not_configured' },
      { name: 'upstream 500', fault: { status: 500 }, status: 502, outcome: 'upstream_error', code: 'upstream_error' },
      { name: 'upstream 429', fault: { rateLimit: { retryAfter: '3' } }, status: 429, outcome: 'upstream_error', code: 'upstream_rate_limited' },
      { name: 'stream cut', fault: { cutAfterChunks: 2 }, stream: true, status: 200, outcome: 'upstream_truncated', code: 'upstream_truncated' },
      { name: 'stream error frame', fault: { errorFrame: true }, stream: true, status: 502, outcome: 'upstream_error', code: 'upstream_error' },
      {
        name: '413 body',
        run: () => chat(JSON.stringify({ ...body, pad: 'x'.repeat(MAX_BODY_BYTES) }), opts),
        status: 413,
        outcome: 'rejected',
        code: 'payload_too_large',
      },
      {
        name: 'connection refused',
        run: () => chat({ model: 'deepseek/deepseek-chat', messages: HELLO }, opts),
        status: 502,
        outcome: 'upstream_error',
        code: 'upstream_unreachable',
      },
      {
        name: 'embeddings success',
        run: () => call('/v1/embeddings', { body: { model: 'openai/text-embedding-3-small', input: 'a b c' }, ...opts }),
        status: 200,
        outcome: 'ok',
        code: null,
        endpoint: 'embeddings',
      },
    ];
    const sent = [];
    for (const p of plan) {
      stack.mocks.openai.reset();
      if (p.fault) stack.mocks.openai.enqueue(p.fault);
      let status;
      let requestId;
      if (p.run) {
        const res = await p.run();
        status = res.status;
        requestId = res.requestId;
      } else if (p.stream) {
        const res = await fetch(stack.url + CHAT, {
          method: 'POST',
          headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ ...body, stream: true }),
        });
        status = res.status;
        requestId = res.headers.get('x-tollgate-request-id');
        await res.text();
      } else {
        const res = await chat(body, opts);
        status = res.status;
        requestId = res.requestId;
      }
      assert.equal(status, p.status, p.name);
      assert.match(requestId ?? '', /^req_[0-9a-f]{32}$/, `${p.name}: request id header`);
      sent.push({ ...p, requestId });
    }
    const ids = new Set(sent.map((s) => s.requestId));
    assert.equal(ids.size, plan.length, 'request ids are distinct');

    const N = plan.length;
    let rows = await stack.ledger({ keyId: k.id, count: N, timeoutMs: 10_000 });
    assert.equal(rows.length, N, `rows: ${JSON.stringify(rows.map((r) => [r.outcome, r.error_code]))}`);
    await sleep(1000);
    rows = await stack.ledger({ keyId: k.id, count: N });
    assert.equal(rows.length, N, 'still exactly N rows (no late duplicates)');
    assert.equal(new Set(rows.map((r) => r.request_id)).size, N, 'distinct request ids in the ledger');

    for (const s of sent) {
      const row = rows.find((r) => r.request_id === s.requestId);
      assert.ok(row, `${s.name}: row for ${s.requestId}`);
      assert.equal(row.key_id, k.id, s.name);
      assert.equal(row.status, s.status, `${s.name}: status`);
      assert.equal(row.outcome, s.outcome, `${s.name}: outcome`);
      assert.equal(row.error_code, s.code, `${s.name}: error_code`);
      assert.equal(row.endpoint, s.endpoint ?? 'chat.completions', s.name);
      if (s.outcome === 'ok') {
        assert.equal(row.usage_source, 'provider', `${s.name}: usage counted`);
        assert.ok(row.total_tokens > 0, s.name);
      }
    }

    // Unauthenticated requests write no row, even though they get a request id.
    const before = (await stack.ledger({ count: 0 })).length;
    const bad = [];
    for (const apiKey of [null, 'not-a-key', `tg-${'f'.repeat(48)}`]) {
      const res = await chat(body, { apiKey });
      assert.equal(res.status, 401);
      if (res.requestId) bad.push(res.requestId);
    }
    await sleep(1000);
    assert.equal((await stack.ledger({ count: 0 })).length, before, 'no rows for unauthenticated requests');
    for (const id of bad) assert.equal((await stack.admin('GET', `/admin/requests/${id}`)).status, 404);
  });
});

// -------------------------------------------------------- 5. admin: keys

describe('admin API: virtual keys', () => {
  const sha256 = (s) => createHash('sha256').update(s).digest('hex');

  function assertNoSecret(text, k) {
    assert.ok(!text.includes(k.key), 'plaintext key never shown again');
    assert.ok(!text.includes(sha256(k.key)), 'key hash never shown');
    assert.ok(!/hash/i.test(text), `no hash field: ${text.slice(0, 300)}`);
  }

  test('create returns the key exactly once; list and get never show it or its hash', async () => {
    const r = await stack.admin('POST', '/admin/keys', { name: 'shown-once', metadata: { team: 'search' } });
    assert.equal(r.status, 201, r.text);
    const k = r.json;
    assert.match(k.key, /^tg-[0-9a-f]{48}$/);
    assert.match(k.id, /^key_[0-9a-f]{16}$/);
    assert.equal(k.name, 'shown-once');
    assert.equal(k.revoked_at, null);
    assert.equal(k.allowed_models, null);
    assert.ok(k.key.startsWith(k.key_prefix) && k.key_prefix.length < 16, 'prefix is a short display prefix');
    assert.ok(!Object.keys(k).some((f) => /hash/i.test(f)));

    const list = await stack.admin('GET', '/admin/keys');
    assert.equal(list.status, 200);
    const listed = list.json.data.find((x) => x.id === k.id);
    assert.ok(listed, 'new key listed');
    assert.equal(listed.key, undefined);
    assertNoSecret(list.text, k);

    const one = await stack.admin('GET', `/admin/keys/${k.id}`);
    assert.equal(one.status, 200);
    assert.equal(one.json.id, k.id);
    assert.equal(one.json.key, undefined);
    assert.deepEqual(one.json.metadata, { team: 'search' });
    assertNoSecret(one.text, k);

    // The key works.
    const ok = await chat({ model: 'demo', messages: HELLO }, { apiKey: k.key });
    assert.equal(ok.status, 200, ok.text);
  });

  test('PATCH allowed_models restricts models and /v1/models; null restores', async () => {
    const k = await stack.createKey({ name: 'restricted' });
    const sdk = clientFor(k.key);
    const p = await stack.admin('PATCH', `/admin/keys/${k.id}`, { allowed_models: ['demo'] });
    assert.equal(p.status, 200, p.text);
    assert.deepEqual(p.json.allowed_models, ['demo']);
    assertNoSecret(p.text, k);

    const r = await sdk.chat.completions.create({ model: 'demo', messages: HELLO });
    assert.match(r.choices[0].message.content, /demo provider/);

    stack.mocks.openai.reset();
    const err = await sdkError(() => sdk.chat.completions.create({ model: MODEL, messages: HELLO }));
    assert.equal(err.status, 403);
    assert.ok(err instanceof OpenAI.PermissionDeniedError);
    assertErrorBody({ error: err.error }, { code: 'model_not_allowed', type: 'permission_error' });
    assert.equal(stack.mocks.openai.requests().length, 0, 'forbidden model never reaches the provider');
    const row = await ledgerRow(err.headers.get('x-tollgate-request-id'));
    assert.equal(row.status, 403);
    assert.equal(row.outcome, 'rejected');
    assert.equal(row.error_code, 'model_not_allowed');

    const models = await sdk.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      ['demo'],
    );

    const restore = await stack.admin('PATCH', `/admin/keys/${k.id}`, { allowed_models: null });
    assert.equal(restore.status, 200, restore.text);
    assert.equal(restore.json.allowed_models, null);
    const again = await sdk.chat.completions.create({ model: MODEL, messages: HELLO });
    assert.equal(again.object, 'chat.completion');
    const all = (await sdk.models.list()).data.map((m) => m.id);
    for (const id of ['demo', 'gpt-4o-mini', MODEL]) assert.ok(all.includes(id), `${id} in ${all}`);

    // Renaming leaves allowed_models alone.
    const rename = await stack.admin('PATCH', `/admin/keys/${k.id}`, { name: 'renamed' });
    assert.equal(rename.status, 200);
    assert.equal(rename.json.name, 'renamed');
    assert.equal(rename.json.allowed_models, null);
  });

  test('PATCH with an unknown or invalid field is 400; on an unknown id 404', async () => {
    const k = await stack.createKey({ name: 'patch-errors' });
    for (const [body, param] of [
      [{ revoked_at: null }, 'revoked_at'],
      [{ allowed_models: ['op*'] }, 'allowed_models'],
      [{ allowed_models: 'demo' }, 'allowed_models'],
      [{ name: '' }, 'name'],
      [{ name: 7 }, 'name'],
    ]) {
      const r = await stack.admin('PATCH', `/admin/keys/${k.id}`, body);
      assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
      assertErrorBody(r.json, { param, type: 'invalid_request_error' }, JSON.stringify(body));
    }
    const unchanged = await stack.admin('GET', `/admin/keys/${k.id}`);
    assert.equal(unchanged.json.name, 'patch-errors');
    assert.equal(unchanged.json.allowed_models, null);

    const missing = await stack.admin('PATCH', '/admin/keys/key_doesnotexist', { name: 'x' });
    assert.equal(missing.status, 404);
    assertErrorBody(missing.json, { code: 'not_found' });
  });

  test('POST /admin/keys with an unknown field, empty name or bad wildcard is 400', async () => {
    const countBefore = (await stack.admin('GET', '/admin/keys')).json.data.length;
    for (const body of [
      { name: 'x', bogus: 1 },
      { name: '' },
      { name: '   ' },
      {},
      { name: 'x', allowed_models: ['op*'] },
      { name: 'x', allowed_models: ['openai/*/*'] },
    ]) {
      const r = await stack.admin('POST', '/admin/keys', body);
      assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
      assertErrorBody(r.json, { type: 'invalid_request_error' }, JSON.stringify(body));
    }
    const raw = await fetch(`${stack.url}/admin/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.adminToken}`, 'content-type': 'application/json' },
      body: '{"name":',
    });
    assert.equal(raw.status, 400);
    assertErrorBody(await raw.json(), { code: 'invalid_json' });
    assert.equal((await stack.admin('GET', '/admin/keys')).json.data.length, countBefore, 'no key created');
  });

  test('GET /admin/keys/key_doesnotexist → 404; admin needs the admin token', async () => {
    const r = await stack.admin('GET', '/admin/keys/key_doesnotexist');
    assert.equal(r.status, 404);
    assertErrorBody(r.json, { code: 'not_found', type: 'invalid_request_error' });
    const del = await stack.admin('DELETE', '/admin/keys/key_doesnotexist');
    assert.equal(del.status, 404);

    for (const authorization of [undefined, `Bearer ${key.key}`, 'Bearer wrong-admin-token-0000000000000']) {
      const res = await fetch(`${stack.url}/admin/keys`, { headers: authorization ? { authorization } : {} });
      assert.equal(res.status, 401);
      assertErrorBody(await res.json(), { code: 'invalid_api_key', type: 'authentication_error' });
    }
  });

  test('DELETE revokes: revoked_at set, the key is 401 next, revoking twice keeps the first time', async () => {
    const k = await stack.createKey({ name: 'to-revoke' });
    assert.equal((await chat({ model: 'demo', messages: HELLO }, { apiKey: k.key })).status, 200);

    const del = await stack.admin('DELETE', `/admin/keys/${k.id}`);
    assert.equal(del.status, 200, del.text);
    assert.equal(typeof del.json.revoked_at, 'number');
    assert.ok(del.json.revoked_at >= k.created_at);
    assertNoSecret(del.text, k);

    const res = await chat({ model: 'demo', messages: HELLO }, { apiKey: k.key });
    assertError(res, 401, { code: 'invalid_api_key', type: 'authentication_error' });
    const err = await sdkError(() => clientFor(k.key).models.list());
    assert.equal(err.status, 401);

    await sleep(20);
    const again = await stack.admin('DELETE', `/admin/keys/${k.id}`);
    assert.equal(again.status, 200);
    assert.equal(again.json.revoked_at, del.json.revoked_at, 'first revocation time kept');
    const viaPost = await stack.admin('POST', `/admin/keys/${k.id}/revoke`);
    assert.equal(viaPost.status, 200);
    assert.equal(viaPost.json.revoked_at, del.json.revoked_at);
    const got = await stack.admin('GET', `/admin/keys/${k.id}`);
    assert.equal(got.json.revoked_at, del.json.revoked_at);
  });

  test('allowed_models ["openai/*"]: openai/… and aliases to openai work, demo does not', async () => {
    const k = await stack.createKey({ name: 'openai-only', allowed_models: ['openai/*'] });
    assert.deepEqual(k.allowed_models, ['openai/*']);
    const sdk = clientFor(k.key);
    const a = await sdk.chat.completions.create({ model: MODEL, messages: HELLO });
    assert.equal(a.object, 'chat.completion');
    const b = await sdk.chat.completions.create({ model: 'gpt-4o-mini', messages: HELLO });
    assert.equal(b.object, 'chat.completion');
    for (const model of ['demo', 'demo/echo']) {
      const err = await sdkError(() => sdk.chat.completions.create({ model, messages: HELLO }));
      assert.equal(err.status, 403, model);
      assert.equal(err.code, 'model_not_allowed');
    }
    const ids = (await sdk.models.list()).data.map((m) => m.id);
    assert.ok(ids.includes(MODEL) && ids.includes('gpt-4o-mini'), String(ids));
    assert.ok(!ids.includes('demo') && !ids.includes('demo/echo'), String(ids));
  });
});

// --------------------------------------------------- 6. admin: requests

describe('admin API: ledger queries', () => {
  test('bad query parameters are 400', async () => {
    for (const [q, param] of [
      ['limit=0', 'limit'],
      ['limit=1001', 'limit'],
      ['limit=abc', 'limit'],
      ['bogus=1', 'bogus'],
    ]) {
      const r = await stack.admin('GET', `/admin/requests?${q}`);
      assert.equal(r.status, 400, `${q}: ${r.text}`);
      assertErrorBody(r.json, { param, type: 'invalid_request_error' }, q);
    }
  });

  test('GET /admin/requests/{id} returns the row; an unknown id is 404', async () => {
    const res = await chat({ model: 'demo', messages: HELLO }, { headers: { 'x-tollgate-metadata': '{"feature":"ledger"}' } });
    assert.equal(res.status, 200);
    const row = await ledgerRow(res.requestId);
    assert.equal(row.request_id, res.requestId);
    assert.equal(row.key_id, key.id);
    assert.equal(row.model_requested, 'demo');
    assert.equal(row.provider, 'demo');
    assert.equal(row.outcome, 'ok');
    assert.deepEqual(JSON.parse(row.metadata), { feature: 'ledger' });

    const limited = await stack.admin('GET', `/admin/requests?limit=1&key_id=${key.id}`);
    assert.equal(limited.status, 200);
    assert.equal(limited.json.data.length, 1);

    const missing = await stack.admin('GET', '/admin/requests/req_00000000000000000000000000000000');
    assert.equal(missing.status, 404);
    assertErrorBody(missing.json, { code: 'not_found' });
  });
});
