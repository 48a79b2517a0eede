// Security end-to-end tests (anchors-reliability.md section A, S1–S5) against
// the built Worker under `wrangler dev`, in front of the project's mock
// providers. Every test here fails if the protection it names breaks:
//
//   S1   a client cannot choose the upstream (body fields at any depth, query,
//        headers) and the gateway never follows an upstream redirect;
//   S2   provider keys (canaries) never reach a client, the ledger, the admin
//        API or the logs — not whole and not as any 8-character piece — and
//        each goes only to its own provider; the virtual key and the client's
//        headers never go upstream;
//   S3   hostile bearer values are a 401 (never a 500) and the tables survive;
//   S4   the admin API takes only ADMIN_TOKEN (not a virtual key, not a Host
//        trick); without ADMIN_TOKEN the whole gateway fails closed;
//   S5   template syntax in prompts is data, forwarded byte for byte;
//   and a revoked key stops working immediately.
//
// Two stacks: the main one (openai + groq mocks holding canary keys, plus a
// mistral mock that expects a different key than the gateway has, so it
// answers a real 401 echoing the masked presented key), and one started
// without ADMIN_TOKEN. The final describe sweeps everything both stacks
// produced for leaks, so it must stay last.

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { ADMIN_TOKEN, startStack } from './harness.mjs';

const CANARY_OPENAI = 'sk-CANARY-openai-0123456789abcdef';
const CANARY_GROQ = 'sk-CANARY-groq-fedcba9876543210';
const CANARY_MISTRAL = 'sk-CANARY-mstrl-5a6b7c8d9e0f1a2b';
/** What the mistral mock accepts: the gateway holds CANARY_MISTRAL instead, so every call there is a real 401. */
const MISTRAL_MOCK_EXPECTS = 'sk-mock-mistral-expects-something-else';
const CANARIES = { openai: CANARY_OPENAI, groq: CANARY_GROQ, mistral: CANARY_MISTRAL };

const CHAT = '/v1/chat/completions';
const EMBED = '/v1/embeddings';
const OPENAI_MODEL = 'openai/gpt-4o-mini';
const GROQ_MODEL = 'groq/llama-3.1-8b-instant';
const MISTRAL_MODEL = 'mistral/mistral-small-latest';

/** Every n-character substring of s. */
function windows(s, n = 8) {
  const out = new Set();
  for (let i = 0; i + n <= s.length; i++) out.add(s.slice(i, i + n));
  return [...out];
}

/** Any 8-character piece of any canary: none may ever be seen outside its own provider's request. */
const LEAK_WINDOWS = [...new Set(Object.values(CANARIES).flatMap((c) => windows(c)))];

/** Pieces of `canary` that no other canary shares (they all start `sk-CANARY-`). */
function ownWindows(canary) {
  const others = Object.values(CANARIES).filter((c) => c !== canary);
  return windows(canary).filter((w) => !others.some((o) => o.includes(w)));
}

function leaksIn(text) {
  return LEAK_WINDOWS.filter((w) => text.includes(w));
}

function assertNoLeak(text, where) {
  const found = leaksIn(text);
  assert.deepEqual(found, [], `${where} contains canary piece(s) ${JSON.stringify(found)}:\n${text.slice(0, 2000)}`);
}

let stack; // main stack
let closed; // started without ADMIN_TOKEN
let key; // the main virtual key
let client;
/** Every virtual key created (none may ever reach an upstream). */
const virtualKeys = [];
/** Everything a client saw: status, headers and body of every gateway response. */
const clientSeen = [];
/** Mock recordings from before each reset, per mock, so the final sweep sees all traffic. */
const archive = new Map();

function resetMocks() {
  for (const s of [stack, closed]) {
    if (!s) continue;
    for (const [name, m] of Object.entries(s.mocks)) {
      const k = `${s.url}|${name}`;
      if (!archive.has(k)) archive.set(k, { name, recs: [] });
      archive.get(k).recs.push(...m.requests());
      m.reset();
    }
  }
}

function allRecordings() {
  resetMocks();
  return [...archive.values()];
}

function assertNoUpstreamCalls(where) {
  for (const [name, m] of Object.entries(stack.mocks)) {
    assert.equal(m.requests().length, 0, `${where}: mock ${name} got ${JSON.stringify(m.requests().map((r) => r.json))}`);
  }
}

function recordResponse(label, res, text) {
  clientSeen.push(`${label} -> ${res.status}\n${[...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n')}\n\n${text}`);
}

/** A raw request to a stack; records what the client saw. */
async function call(method, path, { bearer, headers = {}, body, raw, on = stack } = {}) {
  const h = { ...headers };
  if (bearer !== undefined) h.authorization = `Bearer ${bearer}`;
  if ((body !== undefined || raw !== undefined) && !h['content-type']) h['content-type'] = 'application/json';
  const res = await fetch(on.url + path, {
    method,
    headers: h,
    body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
  });
  const text = await res.text();
  recordResponse(`${method} ${path}`, res, text);
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, text, json };
}

/** node:http, for headers fetch will not send as given (Host). */
function rawHttp(method, path, headers, on = stack) {
  const u = new URL(on.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        clientSeen.push(`${method} ${path} (raw) -> ${res.statusCode}\n${JSON.stringify(res.headers)}\n\n${text}`);
        let json = null;
        try {
          json = JSON.parse(text);
        } catch {}
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

function assertError(r, status, code, type) {
  assert.equal(r.status, status, `status (${r.text.slice(0, 500)})`);
  assert.ok(r.json && typeof r.json.error === 'object', `OpenAI error body: ${r.text.slice(0, 500)}`);
  assert.equal(typeof r.json.error.message, 'string');
  if (code !== undefined) assert.equal(r.json.error.code, code, r.text);
  if (type !== undefined) assert.equal(r.json.error.type, type, r.text);
}

const chatBody = (extra = {}, model = OPENAI_MODEL) => ({ model, messages: [{ role: 'user', content: 'hello' }], ...extra });

before(async () => {
  [stack, closed] = await Promise.all([
    startStack({
      providers: {
        openai: { apiKey: CANARY_OPENAI },
        groq: { apiKey: CANARY_GROQ },
        mistral: { apiKey: MISTRAL_MOCK_EXPECTS },
      },
      // The gateway's MISTRAL_API_KEY differs from what the mistral mock accepts.
      secrets: { MISTRAL_API_KEY: CANARY_MISTRAL },
    }),
    startStack({ providers: { openai: { apiKey: CANARY_OPENAI } }, secrets: { ADMIN_TOKEN: null } }),
  ]);
  key = await stack.createKey({ name: 'security-main' });
  virtualKeys.push(key.key);
  client = new OpenAI({ apiKey: key.key, baseURL: `${stack.url}/v1`, maxRetries: 0 });
});

after(async () => {
  await Promise.all([stack?.stop(), closed?.stop()]);
});

// ---------------------------------------------------------------------- S1

describe('S1: clients cannot choose the upstream', () => {
  const evil = 'http://169.254.169.254/latest/meta-data';
  const rejected = [
    ['top-level api_base', CHAT, chatBody({ api_base: evil }), 'api_base'],
    ['top-level base_url', CHAT, chatBody({ base_url: evil }), 'base_url'],
    ['upper-case API_BASE', CHAT, chatBody({ API_BASE: evil }), 'API_BASE'],
    ['camel-case baseURL', CHAT, chatBody({ baseURL: evil }), 'baseURL'],
    ['*_host field', CHAT, chatBody({ custom_host: 'evil.example' }), 'custom_host'],
    ['user_config.api_base', CHAT, chatBody({ user_config: { api_base: evil } }), 'api_base'],
    [
      'user_config model_list (LiteLLM shape)',
      CHAT,
      chatBody({ user_config: { model_list: [{ model_name: 'x', litellm_params: { model: 'openai/x', api_base: evil } }] } }),
      'api_base',
    ],
    ['extra_body.base_url', CHAT, chatBody({ extra_body: { base_url: evil } }), 'base_url'],
    ['metadata.api_base', CHAT, chatBody({ metadata: { api_base: evil } }), 'api_base'],
    [
      'tools[].function.base_url',
      CHAT,
      chatBody({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} }, base_url: evil } }] }),
      'base_url',
    ],
    [
      "inside a tool property's own schema",
      CHAT,
      chatBody({
        tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { x: { type: 'string', api_base: evil } } } } }],
      }),
      'api_base',
    ],
    ['inside a message object', CHAT, { model: OPENAI_MODEL, messages: [{ role: 'user', content: 'hi', api_base: evil }] }, 'api_base'],
    ['streamed request', CHAT, chatBody({ stream: true, base_url: evil }), 'base_url'],
    ['to a groq model', CHAT, chatBody({ api_base: evil }, GROQ_MODEL), 'api_base'],
    ['to the demo provider', CHAT, chatBody({ api_base: evil }, 'demo'), 'api_base'],
    ['embeddings api_base', EMBED, { model: 'openai/text-embedding-3-small', input: 'x', api_base: evil }, 'api_base'],
    [
      'embeddings litellm_embedding_config',
      EMBED,
      { model: 'openai/text-embedding-3-small', input: 'x', litellm_embedding_config: { api_base: evil } },
      'api_base',
    ],
    ['embeddings user_config', EMBED, { model: 'openai/text-embedding-3-small', input: ['x'], user_config: { base_url: evil } }, 'base_url'],
    ['hyphenated api-base', CHAT, chatBody({ 'api-base': evil }), 'api-base'],
    ['hyphenated Custom-Host in extra_body', CHAT, chatBody({ extra_body: { 'Custom-Host': 'evil.example' } }), 'Custom-Host'],
    ['a "properties" object outside any schema', CHAT, chatBody({ extra_body: { properties: { api_base: evil } } }), 'api_base'],
  ];

  for (const [label, path, body, param] of rejected) {
    test(`${label} → 400 upstream_override_not_allowed, no upstream call`, async () => {
      resetMocks();
      const r = await call('POST', path, { bearer: key.key, body });
      assertError(r, 400, 'upstream_override_not_allowed', 'invalid_request_error');
      assert.equal(r.json.error.param, param);
      assert.ok(!r.text.includes('169.254'), 'the rejected URL is not echoed');
      assertNoUpstreamCalls(label);
    });
  }

  test('a key written with a JSON unicode escape ("api\\u005fbase") is still caught', async () => {
    resetMocks();
    const raw = `{"model":"${OPENAI_MODEL}","messages":[{"role":"user","content":"x"}],"api\\u005fbase":"${evil}"}`;
    const r = await call('POST', CHAT, { bearer: key.key, raw });
    assertError(r, 400, 'upstream_override_not_allowed');
    assertNoUpstreamCalls('unicode escape');
  });

  test('a key buried 30 levels deep is still caught', async () => {
    resetMocks();
    let nested = { base_url: evil };
    for (let i = 0; i < 30; i++) nested = i % 2 ? { ['level' + i]: nested } : [nested];
    const r = await call('POST', CHAT, { bearer: key.key, body: chatBody({ extra_body: nested }) });
    assertError(r, 400, 'upstream_override_not_allowed');
    assertNoUpstreamCalls('deep nesting');
  });

  test('a tool whose JSON-Schema property is named base_url is accepted and forwarded intact', async () => {
    resetMocks();
    const tools = [
      {
        type: 'function',
        function: {
          name: 'connect',
          description: 'connect to a service',
          parameters: {
            type: 'object',
            properties: { base_url: { type: 'string' }, db_host: { type: 'string' }, api_base: { type: 'string' } },
            required: ['base_url'],
          },
        },
      },
    ];
    const { data } = await client.chat.completions
      .create({ model: OPENAI_MODEL, messages: [{ role: 'user', content: 'set base_url and api_base to localhost please' }], tools })
      .withResponse();
    clientSeen.push(JSON.stringify(data));
    assert.equal(data.object, 'chat.completion');
    const recs = stack.mocks.openai.requests();
    assert.equal(recs.length, 1);
    assert.deepEqual(recs[0].json.tools, tools, 'tool schema forwarded unchanged');
    assert.equal(recs[0].json.messages[0].content, 'set base_url and api_base to localhost please');
  });

  test('a query string is not forwarded and does not change the destination', async () => {
    resetMocks();
    const r = await call('POST', `${CHAT}?api_base=${encodeURIComponent(evil)}&base_url=x`, { bearer: key.key, body: chatBody() });
    assert.equal(r.status, 200, r.text);
    const recs = stack.mocks.openai.requests();
    assert.equal(recs.length, 1);
    assert.equal(recs[0].url, '/v1/chat/completions', 'provider URL from config only, no client query');
  });
});

describe('S1b: upstream redirects are never followed', () => {
  test('302 to 127.0.0.1:1 → 502 upstream_redirect, exactly one upstream request', async () => {
    resetMocks();
    stack.mocks.openai.enqueue({ redirectTo: 'http://127.0.0.1:1/steal' });
    const r = await call('POST', CHAT, { bearer: key.key, body: chatBody() });
    assertError(r, 502, 'upstream_redirect', 'server_error');
    assert.equal(r.headers.get('location'), null, 'no location header passed to the client');
    assert.ok(!r.text.includes('steal') && !r.text.includes('127.0.0.1:1'), 'redirect target not echoed');
    assert.equal(stack.mocks.openai.requests().length, 1);
    assert.equal(stack.mocks.openai.requests()[0].response.status, 302);
    const id = r.headers.get('x-tollgate-request-id');
    const row = (await stack.ledger({ keyId: key.id, ids: [id] })).find((x) => x.request_id === id);
    assert.ok(row, 'ledger row for the redirect');
    assert.equal(row.error_code, 'upstream_redirect');
    assert.equal(row.outcome, 'upstream_error');
  });

  for (const [status, stream] of [
    [307, false],
    [308, true],
    [301, false],
  ]) {
    test(`${status}${stream ? ' (stream)' : ''} to another provider's host → 502, nothing arrives there`, async () => {
      resetMocks();
      // A followed 307/308 would replay the POST, provider key included, to the groq mock.
      stack.mocks.openai.enqueue({ redirectTo: `${stack.mocks.groq.url}/openai/v1/chat/completions`, status });
      const r = await call('POST', CHAT, { bearer: key.key, body: chatBody({ stream }) });
      assertError(r, 502, 'upstream_redirect');
      assert.equal(stack.mocks.openai.requests().length, 1);
      assert.equal(stack.mocks.groq.requests().length, 0, 'redirect not followed to the groq mock');
      assert.equal(stack.mocks.mistral.requests().length, 0);
    });
  }
});

// ---------------------------------------------------------------------- S2

describe('S2: provider keys stay with their provider', () => {
  test('non-streamed success on two providers: each gets exactly its own key', async () => {
    resetMocks();
    for (const [model, provider] of [
      [OPENAI_MODEL, 'openai'],
      [GROQ_MODEL, 'groq'],
    ]) {
      const { data, response } = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] }).withResponse();
      recordResponse(`sdk ${model}`, response, JSON.stringify(data));
      assert.equal(data.choices[0].message.content, `mock(${provider}) reply to: hi`);
      const recs = stack.mocks[provider].requests();
      assert.equal(recs.length, 1);
      assert.equal(recs[0].headers.authorization, `Bearer ${CANARIES[provider]}`);
      assert.equal(recs[0].response.status, 200, 'the mock accepted the key');
    }
  });

  test('streamed success on two providers', async () => {
    resetMocks();
    for (const [model, provider] of [
      [OPENAI_MODEL, 'openai'],
      [GROQ_MODEL, 'groq'],
    ]) {
      const { data: stream, response } = await client.chat.completions
        .create({ model, messages: [{ role: 'user', content: 'stream it' }], stream: true })
        .withResponse();
      const chunks = [];
      for await (const c of stream) chunks.push(c);
      recordResponse(`sdk stream ${model}`, response, JSON.stringify(chunks));
      assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), `mock(${provider}) reply to: stream it`);
      assert.equal(stack.mocks[provider].requests()[0].headers.authorization, `Bearer ${CANARIES[provider]}`);
    }
  });

  test('upstream response headers echoing the key are not passed to the client', async () => {
    resetMocks();
    stack.mocks.openai.enqueue({ headers: { 'x-debug-authorization': `Bearer ${CANARY_OPENAI}`, 'x-echo-key': CANARY_OPENAI } });
    const r = await call('POST', CHAT, { bearer: key.key, body: chatBody() });
    assert.equal(r.status, 200);
    for (const [k, v] of r.headers) assertNoLeak(`${k}: ${v}`, 'response header');
    stack.mocks.openai.enqueue({ headers: { 'x-debug-authorization': `Bearer ${CANARY_OPENAI}` }, match: { stream: true } });
    const s = await call('POST', CHAT, { bearer: key.key, body: chatBody({ stream: true }) });
    assert.equal(s.status, 200);
    for (const [k, v] of s.headers) assertNoLeak(`${k}: ${v}`, 'stream response header');
  });

  test('upstream 401 echoing the masked key → 502 upstream_auth_failed, nothing of the key', async () => {
    resetMocks();
    const masked = 'sk-CANAR*********************cdef';
    const fault = {
      status: 401,
      body: { error: { message: `Incorrect API key provided: ${masked}. You can find your API key at https://platform.openai.com/account/api-keys.`, type: 'invalid_request_error', param: null, code: 'invalid_api_key' } },
      headers: { 'www-authenticate': `Bearer realm="${CANARY_OPENAI}"` },
    };
    stack.mocks.openai.enqueue(fault);
    const r = await call('POST', CHAT, { bearer: key.key, body: chatBody() });
    assertError(r, 502, 'upstream_auth_failed', 'server_error');
    assertNoLeak(r.text, '401 body');
    stack.mocks.openai.enqueue(fault);
    const s = await call('POST', CHAT, { bearer: key.key, body: chatBody({ stream: true }) });
    assertError(s, 502, 'upstream_auth_failed');
  });

  test('a real upstream 401 (provider rejects the configured key and echoes it masked) → 502', async () => {
    resetMocks();
    const r = await call('POST', CHAT, { bearer: key.key, body: chatBody({}, MISTRAL_MODEL) });
    assertError(r, 502, 'upstream_auth_failed');
    const recs = stack.mocks.mistral.requests();
    assert.equal(recs.length, 1);
    assert.equal(recs[0].response.status, 401, 'the mock really rejected the key');
    assert.equal(recs[0].headers.authorization, `Bearer ${CANARY_MISTRAL}`);
    assertNoLeak(r.text, 'real 401 body');
  });

  test('upstream 500 whose body and headers echo the key and Authorization → generic 502', async () => {
    resetMocks();
    const fault = {
      status: 500,
      body: {
        error: {
          message: `Internal error handling request. Debug: headers={"authorization":"Bearer ${CANARY_OPENAI}"} key=${CANARY_OPENAI}`,
          type: 'server_error',
          param: CANARY_OPENAI,
          code: CANARY_OPENAI,
        },
      },
      headers: { 'x-debug-request-authorization': `Bearer ${CANARY_OPENAI}` },
    };
    stack.mocks.openai.enqueue(fault);
    const r = await call('POST', CHAT, { bearer: key.key, body: chatBody() });
    assertError(r, 502, 'upstream_error', 'server_error');
    assertNoLeak(r.text, '500 body');
    stack.mocks.groq.enqueue({
      status: 500,
      body: JSON.stringify(fault.body).replaceAll(CANARY_OPENAI, CANARY_GROQ),
      headers: { 'x-debug-request-authorization': `Bearer ${CANARY_GROQ}` },
    });
    const g = await call('POST', CHAT, { bearer: key.key, body: chatBody({ stream: true }, GROQ_MODEL) });
    assertError(g, 502, 'upstream_error');
    assertNoLeak(g.text, 'groq 500 body');
  });

  test('upstream 400/404/422/429 messages echoing the key reach the client scrubbed', async () => {
    resetMocks();
    const echo = (k) =>
      `Invalid 'messages' for key ${k} (shown as ${k.slice(0, 8)}****${k.slice(-4)}); ` +
      `header was Authorization: Bearer ${k}; org-key=${k}; tail ${k.slice(-12)}.`;
    stack.mocks.openai.enqueue({ status: 400, body: { error: { message: echo(CANARY_OPENAI), type: 'invalid_request_error', param: 'messages', code: null } } });
    const r400 = await call('POST', CHAT, { bearer: key.key, body: chatBody() });
    assertError(r400, 400, 'upstream_invalid_request', 'invalid_request_error');
    assert.match(r400.json.error.message, /^Provider 'openai' rejected the request: Invalid 'messages'/, 'provider text is still useful');
    assertNoLeak(r400.text, '400 body');

    stack.mocks.groq.enqueue({ status: 422, body: { error: { message: echo(CANARY_GROQ), type: 'invalid_request_error' } } });
    const r422 = await call('POST', CHAT, { bearer: key.key, body: chatBody({}, GROQ_MODEL) });
    assertError(r422, 422, 'upstream_invalid_request');
    assertNoLeak(r422.text, '422 body');

    stack.mocks.openai.enqueue({ status: 404, body: { error: { message: echo(CANARY_OPENAI), type: 'invalid_request_error', code: 'model_not_found' } } });
    const r404 = await call('POST', EMBED, { bearer: key.key, body: { model: 'openai/text-embedding-3-small', input: 'x' } });
    assertError(r404, 404, 'upstream_not_found');
    assertNoLeak(r404.text, '404 body');

    stack.mocks.openai.enqueue({ status: 400, body: { error: echo(CANARY_OPENAI) } });
    const rs = await call('POST', CHAT, { bearer: key.key, body: chatBody({ stream: true }) });
    assertError(rs, 400, 'upstream_invalid_request');
    assertNoLeak(rs.text, 'string error body');

    stack.mocks.openai.enqueue({ status: 429, body: { error: { message: echo(CANARY_OPENAI), type: 'requests' } }, headers: { 'retry-after': '1', 'x-key': CANARY_OPENAI } });
    const r429 = await call('POST', CHAT, { bearer: key.key, body: chatBody() });
    assertError(r429, 429, 'upstream_rate_limited');
    assertNoLeak(r429.text, '429 body');
  });

  // Kept out of clientSeen so a failure here is reported once, here.
  async function streamWithUpstreamBody(sse, firstWriteBytes) {
    resetMocks();
    // With firstWriteBytes the mock writes that much, waits, then the rest (in
    // pieces of the same size), so the gateway sees the content before the error.
    const pacing = firstWriteBytes ? { sliceBytes: firstWriteBytes, chunkDelayMs: 150 } : {};
    stack.mocks.openai.enqueue({ body: sse, headers: { 'content-type': 'text/event-stream' }, ...pacing });
    const res = await fetch(stack.url + CHAT, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify(chatBody({ stream: true })),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text };
  }
  const errorFrame = `data: ${JSON.stringify({
    error: {
      message: `Incorrect API key provided: ${CANARY_OPENAI} (Authorization: Bearer ${CANARY_OPENAI})`,
      type: 'invalid_request_error',
      code: 'invalid_api_key',
    },
  })}\n\n`;

  test('a stream that opens with an error frame echoing the key: the client learns of the error, not the key', async () => {
    const r = await streamWithUpstreamBody(errorFrame);
    assert.ok(r.status >= 500 || r.text.includes('"error"'), `the client learns the stream failed: ${r.status} ${r.text}`);
    for (const [k, v] of r.headers) assertNoLeak(`${k}: ${v}`, 'response header');
    assertNoLeak(r.text, 'opening stream error frame');
  });

  test('an error frame mid-stream (after content) echoing the key reaches the client scrubbed', async () => {
    const content = `data: ${JSON.stringify({
      id: 'chatcmpl-mid',
      object: 'chat.completion.chunk',
      created: 1,
      model: 'gpt-4o-mini',
      choices: [{ index: 0, delta: { role: 'assistant', content: 'partial answer' }, finish_reason: null }],
    })}\n\n`;
    const r = await streamWithUpstreamBody(content + errorFrame, Buffer.byteLength(content));
    assert.equal(r.status, 200);
    assert.ok(r.text.includes('partial answer'), r.text);
    assert.ok(r.text.includes('"error"'), `the client still learns the stream failed: ${r.text}`);
    assertNoLeak(r.text, 'mid-stream error frame');
  });
});

describe('client headers are not forwarded upstream', () => {
  const UPSTREAM_HEADER_ALLOWLIST = new Set([
    'host',
    'content-length',
    'content-type',
    'accept',
    'accept-encoding',
    'authorization',
    'user-agent',
    'connection',
    'transfer-encoding',
    'cf-worker', // added by workerd to every subrequest
  ]);

  test('cookie, x-forwarded-*, openai-organization, custom secrets and the virtual key stay at the gateway', async () => {
    resetMocks();
    const sent = {
      cookie: 'session=client-cookie-value-77',
      'x-forwarded-for': '203.0.113.77',
      'x-forwarded-host': 'evil-forwarded.example',
      forwarded: 'for=203.0.113.78;host=evil-fwd.example',
      'x-real-ip': '203.0.113.79',
      'openai-organization': 'org-client-chosen-77',
      'openai-project': 'proj_client_chosen_77',
      'x-custom-secret': 'client-custom-secret-77',
      'x-api-key': key.key,
      'proxy-authorization': 'Basic Y2xpZW50OnByb3h5LTc3',
      'x-portkey-custom-host': 'http://127.0.0.1:1',
      'x-tollgate-upstream': 'http://127.0.0.1:1',
      'api-key': 'client-azure-key-77',
    };
    for (const [model, provider] of [
      [OPENAI_MODEL, 'openai'],
      [GROQ_MODEL, 'groq'],
    ]) {
      const r = await call('POST', CHAT, { bearer: key.key, headers: sent, body: chatBody({}, model) });
      assert.equal(r.status, 200, r.text);
      const recs = stack.mocks[provider].requests();
      assert.equal(recs.length, 1, 'sent to the configured provider despite host-override headers');
      const rec = recs[0];
      assert.equal(rec.headers.authorization, `Bearer ${CANARIES[provider]}`, 'upstream authorization is exactly the provider key');
      for (const name of Object.keys(sent)) assert.equal(rec.headers[name], undefined, `${name} forwarded to ${provider}`);
      for (const name of Object.keys(rec.headers)) assert.ok(UPSTREAM_HEADER_ALLOWLIST.has(name), `unexpected upstream header ${name}: ${rec.headers[name]}`);
      const dump = JSON.stringify(rec.headers) + rec.body;
      for (const v of [...Object.values(sent), key.key]) assert.ok(!dump.includes(v), `client value ${v} reached ${provider}`);
    }
  });

  test('the SDK’s own headers (x-stainless-*, the virtual key) are not forwarded either', async () => {
    resetMocks();
    await client.chat.completions.create({ model: OPENAI_MODEL, messages: [{ role: 'user', content: 'x' }] });
    const rec = stack.mocks.openai.requests()[0];
    for (const name of Object.keys(rec.headers)) {
      assert.ok(UPSTREAM_HEADER_ALLOWLIST.has(name), `unexpected upstream header ${name}`);
    }
    assert.equal(rec.headers.authorization, `Bearer ${CANARY_OPENAI}`);
  });
});

// ---------------------------------------------------------------------- S3

describe('S3: hostile credentials are a 401, never a 500, and the tables survive', () => {
  const hostile = [
    ["Bearer ' OR '1'='1", "Bearer ' OR '1'='1"],
    ['SQL after a tg- prefix', "Bearer tg-x';DROP TABLE virtual_keys;--"],
    ['SQL comment trick', "Bearer tg-' OR 1=1--"],
    ['UNION select', "Bearer tg-x' UNION SELECT id,key_prefix,name,allowed_models FROM virtual_keys--"],
    ['16 KB bearer', `Bearer tg-${'a'.repeat(16 * 1024)}`],
    ['percent-encoded NUL', 'Bearer tg-%00'],
    ['well-formed but unknown key', `Bearer tg-${'0'.repeat(48)}`],
    ['Basic auth', `Basic ${Buffer.from('tg-user:password').toString('base64')}`],
    ['bare scheme', 'Bearer'],
    ['empty value', ''],
  ];

  test('every hostile bearer → 401 authentication_error on chat, embeddings and models', async (t) => {
    resetMocks();
    // The real key with SQL appended must not authenticate either.
    const cases = [...hostile, ['real key + SQL suffix', `Bearer ${key.key}' OR '1'='1`], ['Basic with the real key', `Basic ${Buffer.from(`${key.key}:`).toString('base64')}`]];
    for (const [label, value] of cases) {
      for (const [method, path, body] of [
        ['POST', CHAT, chatBody()],
        ['POST', EMBED, { model: 'openai/text-embedding-3-small', input: 'x' }],
        ['GET', '/v1/models', undefined],
      ]) {
        const r = await call(method, path, { headers: value === '' ? {} : { authorization: value }, body });
        assert.notEqual(r.status, 500, `${label} ${path}: 500`);
        assertError(r, 401, 'invalid_api_key', 'authentication_error');
      }
    }
    for (const [label, value] of [
      ['x-api-key SQL', "tg-x' OR '1'='1"],
      ['x-api-key 16 KB', `tg-${'b'.repeat(16 * 1024)}`],
    ]) {
      const r = await call('POST', CHAT, { headers: { 'x-api-key': value }, body: chatBody() });
      assertError(r, 401, 'invalid_api_key', 'authentication_error');
      t.diagnostic(`${label}: ${r.status}`);
    }
    const none = await call('POST', CHAT, { body: chatBody() });
    assertError(none, 401, 'invalid_api_key', 'authentication_error');
    assertNoUpstreamCalls('hostile bearers');
  });

  test('a NUL byte in the bearer is refused before it authenticates anything', async (t) => {
    let fetchRefused = false;
    try {
      const r = await call('GET', '/v1/models', { headers: { authorization: `Bearer ${key.key}\0` } });
      assertError(r, 401, 'invalid_api_key', 'authentication_error');
      return;
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      fetchRefused = true;
    }
    assert.ok(fetchRefused);
    // fetch will not send it; write the bytes on a raw socket instead.
    const u = new URL(stack.url);
    const reply = await new Promise((resolve, reject) => {
      const s = net.connect(Number(u.port), u.hostname, () =>
        s.write(`GET /v1/models HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${key.key}\0\r\nConnection: close\r\n\r\n`),
      );
      let d = '';
      s.setEncoding('latin1');
      s.on('data', (c) => (d += c));
      s.on('end', () => resolve(d));
      s.on('error', reject);
    });
    clientSeen.push(reply);
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(reply)?.[1]);
    assert.ok(status === 400 || status === 401, `NUL bearer → ${status}:\n${reply.slice(0, 300)}`);
    if (status === 400) t.diagnostic('the HTTP layer in front of the Worker rejects a NUL header before the gateway sees it (400)');
    else assert.match(reply, /authentication_error/);
  });

  test('afterwards the key table is intact: listing works and the key still authenticates', async () => {
    const list = await stack.admin('GET', '/admin/keys');
    clientSeen.push(list.text);
    assert.equal(list.status, 200, list.text);
    const mine = list.json.data.find((k) => k.id === key.id);
    assert.ok(mine, 'the key created before the attack is still listed');
    assert.equal(mine.revoked_at, null);
    const models = await call('GET', '/v1/models', { bearer: key.key });
    assert.equal(models.status, 200, models.text);
    resetMocks();
    const chat = await call('POST', CHAT, { bearer: key.key, body: chatBody() });
    assert.equal(chat.status, 200, chat.text);
    const ledger = await stack.admin('GET', '/admin/requests?limit=5');
    assert.equal(ledger.status, 200, 'requests table intact');
  });

  test('admin-side injection: key_id filter and key ids are bound or refused, not interpolated', async () => {
    const all = await stack.admin('GET', '/admin/requests?limit=1000');
    assert.ok(all.json.data.length > 0);
    const inj = await stack.admin('GET', `/admin/requests?limit=1000&key_id=${encodeURIComponent("x' OR '1'='1")}`);
    clientSeen.push(inj.text);
    assert.equal(inj.status, 200, inj.text);
    assert.deepEqual(inj.json.data, [], 'the injected filter matched nothing');
    for (const id of ["key_x' OR '1'='1", 'key_x;DROP TABLE virtual_keys']) {
      const r = await stack.admin('POST', `/admin/keys/${encodeURIComponent(id)}/revoke`);
      assert.ok(r.status === 404, `${id} → ${r.status} ${r.text}`);
    }
    const still = await call('GET', '/v1/models', { bearer: key.key });
    assert.equal(still.status, 200, 'no key was revoked by the injected ids');
  });
});

// ---------------------------------------------------------------------- S4

describe('S4: the admin API takes only ADMIN_TOKEN; without it the gateway fails closed', () => {
  test('/admin/keys rejects no token, wrong tokens, the virtual key, and Host tricks', async () => {
    const attempts = [
      ['no token', {}],
      ['wrong token', { authorization: 'Bearer wrong-token-0123456789abcdef' }],
      ['token minus one char', { authorization: `Bearer ${ADMIN_TOKEN.slice(0, -1)}` }],
      ['token plus one char', { authorization: `Bearer ${ADMIN_TOKEN}x` }],
      ['token as Basic', { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` }],
      ['token in x-api-key', { 'x-api-key': ADMIN_TOKEN }],
      ['virtual key', { authorization: `Bearer ${key.key}` }],
      ['virtual key in x-api-key', { 'x-api-key': key.key }],
    ];
    for (const [label, headers] of attempts) {
      for (const [method, body] of [
        ['GET', undefined],
        ['POST', { name: 'minted' }],
      ]) {
        const r = await call(method, '/admin/keys', { headers, body });
        assert.equal(r.status, 401, `${label} ${method}: ${r.status} ${r.text}`);
        assertError(r, 401, undefined, 'authentication_error');
      }
    }
    for (const [label, headers] of [
      ['Host: evil.example', { host: 'evil.example' }],
      ['Host: evil.example + virtual key', { host: 'evil.example', authorization: `Bearer ${key.key}` }],
      ['Host: localhost', { host: 'localhost' }],
      ['Host: 127.0.0.1 + x-forwarded-for', { host: '127.0.0.1', 'x-forwarded-for': '127.0.0.1', 'x-real-ip': '127.0.0.1' }],
      ['Host: admin.internal', { host: 'admin.internal', 'x-forwarded-host': 'admin.internal' }],
    ]) {
      const r = await rawHttp('GET', '/admin/keys', headers);
      assert.equal(r.status, 401, `${label}: ${r.status} ${r.text}`);
      assert.equal(r.json?.error?.type, 'authentication_error');
    }
    const minted = (await stack.admin('GET', '/admin/keys')).json.data.filter((k) => k.name === 'minted');
    assert.deepEqual(minted, [], 'no key was minted by a rejected request');
  });

  test('a virtual key cannot call any /admin/ route, and its attempts change nothing', async () => {
    const victim = await stack.createKey({ name: 'victim' });
    virtualKeys.push(victim.key);
    const routes = [
      ['GET', '/admin/keys'],
      ['POST', '/admin/keys', { name: 'self-minted', allowed_models: ['*'] }],
      ['GET', `/admin/keys/${key.id}`],
      ['PATCH', `/admin/keys/${key.id}`, { allowed_models: ['*'], name: 'escalated' }],
      ['DELETE', `/admin/keys/${victim.id}`],
      ['POST', `/admin/keys/${victim.id}/revoke`],
      ['GET', '/admin/requests'],
      ['GET', '/admin/requests/req_00000000000000000000000000000000'],
      ['GET', '/admin/config'],
      ['GET', '/admin/keys/'],
      ['GET', '/admin/unknown'],
    ];
    for (const [method, path, body] of routes) {
      for (const headers of [{ authorization: `Bearer ${key.key}` }, { 'x-api-key': key.key }]) {
        const r = await call(method, path, { headers, body });
        assert.ok(r.status === 401 || (path === '/admin/unknown' && r.status === 404), `${method} ${path}: ${r.status} ${r.text}`);
        assert.ok(!r.text.includes('"data"') && !r.text.includes('providers'), `${method} ${path} returned admin data`);
      }
    }
    const keys = (await stack.admin('GET', '/admin/keys')).json.data;
    assert.equal(keys.find((k) => k.id === victim.id).revoked_at, null, 'victim not revoked');
    const mine = keys.find((k) => k.id === key.id);
    assert.equal(mine.name, 'security-main', 'name not changed');
    assert.equal(mine.allowed_models, null);
    assert.deepEqual(keys.filter((k) => k.name === 'self-minted'), []);
  });

  test('the admin token is not a virtual key', async () => {
    const r = await call('GET', '/v1/models', { bearer: ADMIN_TOKEN });
    assertError(r, 401, 'invalid_api_key', 'authentication_error');
  });

  test('with ADMIN_TOKEN unset: /v1/*, /admin/* → 503 gateway_misconfigured; /healthz → 503 misconfigured', async () => {
    const someKey = `tg-${'1'.repeat(48)}`;
    const checks = [
      ['POST', CHAT, { bearer: someKey, body: chatBody() }],
      ['POST', CHAT, { body: chatBody() }],
      ['POST', CHAT, { bearer: someKey, body: chatBody({}, 'demo') }],
      ['POST', EMBED, { bearer: someKey, body: { model: 'openai/text-embedding-3-small', input: 'x' } }],
      ['GET', '/v1/models', { bearer: someKey }],
      ['GET', '/v1/models', {}],
      ['GET', '/admin/keys', { bearer: ADMIN_TOKEN }],
      ['GET', '/admin/keys', {}],
      ['POST', '/admin/keys', { bearer: ADMIN_TOKEN, body: { name: 'x' } }],
      ['GET', '/admin/config', { bearer: ADMIN_TOKEN }],
    ];
    for (const [method, path, opts] of checks) {
      const r = await call(method, path, { ...opts, on: closed });
      assert.equal(r.status, 503, `${method} ${path}: ${r.status} ${r.text}`);
      assertError(r, 503, 'gateway_misconfigured', 'server_error');
    }
    const h = await call('GET', '/healthz', { on: closed });
    assert.equal(h.status, 503);
    assert.deepEqual(h.json, { status: 'misconfigured' });
    assert.equal(closed.mocks.openai.requests().length, 0, 'nothing went upstream');
    const ok = await call('GET', '/healthz');
    assert.equal(ok.status, 200, 'the main stack reports healthy');
    assert.deepEqual(ok.json, { status: 'ok' });
  });
});

// ---------------------------------------------------------------------- S5

describe('S5: template syntax is data', () => {
  test('{{7*7}} and ${7*7} reach the upstream byte for byte', async () => {
    resetMocks();
    const system = 'You are ${7*7} and #{7*7} and <%= 7*7 %>';
    const user = "{{7*7}} ${7*7} {% print(7*7) %} {{config.__class__}} ${{7*7}} $(echo 49) `id`";
    const { data } = await client.chat.completions
      .create(
        { model: OPENAI_MODEL, messages: [{ role: 'system', content: system }, { role: 'user', content: user }] },
        { headers: { 'x-tollgate-metadata': '{"note":"{{7*7}}"}' } },
      )
      .withResponse();
    clientSeen.push(JSON.stringify(data));
    const rec = stack.mocks.openai.requests()[0];
    assert.equal(rec.json.messages[0].content, system);
    assert.equal(rec.json.messages[1].content, user);
    assert.ok(rec.body.includes(JSON.stringify(user)), 'raw upstream bytes carry the prompt unchanged');
    assert.ok(!rec.body.includes('49') || rec.body.includes('echo 49'), 'nothing was evaluated');
    assert.equal(data.choices[0].message.content, `mock(openai) reply to: ${user}`);
  });
});

// ----------------------------------------------------------------- revoked

describe('revocation', () => {
  test('a revoked key is refused on its very next request', async () => {
    const k = await stack.createKey({ name: 'to-revoke' });
    virtualKeys.push(k.key);
    const c = new OpenAI({ apiKey: k.key, baseURL: `${stack.url}/v1`, maxRetries: 0 });
    const first = await c.chat.completions.create({ model: OPENAI_MODEL, messages: [{ role: 'user', content: 'before' }] });
    assert.equal(first.choices[0].message.content, 'mock(openai) reply to: before');

    const rev = await stack.admin('POST', `/admin/keys/${k.id}/revoke`);
    assert.equal(rev.status, 200, rev.text);
    assert.ok(rev.json.revoked_at > 0);

    resetMocks();
    await assert.rejects(
      c.chat.completions.create({ model: OPENAI_MODEL, messages: [{ role: 'user', content: 'after' }] }),
      (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.error?.type === 'authentication_error',
    );
    await assert.rejects(c.models.list(), (e) => e.status === 401);
    await assert.rejects(c.embeddings.create({ model: 'openai/text-embedding-3-small', input: 'x' }), (e) => e.status === 401);
    const viaHeader = await call('POST', CHAT, { headers: { 'x-api-key': k.key }, body: chatBody() });
    assertError(viaHeader, 401, 'invalid_api_key', 'authentication_error');
    assertNoUpstreamCalls('revoked key');

    // Same answer as a key that never existed (does not reveal which keys exist).
    const unknown = await call('GET', '/v1/models', { bearer: `tg-${'f'.repeat(48)}` });
    const revoked = await call('GET', '/v1/models', { bearer: k.key });
    assert.deepEqual(revoked.json, unknown.json);

    const other = await call('GET', '/v1/models', { bearer: key.key });
    assert.equal(other.status, 200, 'other keys unaffected');
  });
});

// ------------------------------------------------------------ final sweep

describe('leak sweep over everything above (keep last)', () => {
  test('no response seen by a client carries any 8-character piece of a provider key', () => {
    assert.ok(clientSeen.length > 50, `responses recorded: ${clientSeen.length}`);
    for (const seen of clientSeen) assertNoLeak(seen, 'client-visible response');
  });

  test('no ledger row, admin listing or /admin/config output carries a provider key', async () => {
    const rows = await stack.ledger({ count: 20 });
    assert.ok(rows.length >= 20, `ledger rows: ${rows.length}`);
    assertNoLeak(JSON.stringify(rows), 'ledger');
    for (const row of rows.filter((r) => r.outcome !== 'ok').slice(0, 10)) {
      const one = await stack.admin('GET', `/admin/requests/${row.request_id}`);
      assert.equal(one.status, 200);
      assertNoLeak(one.text, `GET /admin/requests/${row.request_id}`);
    }
    const cfg = await stack.admin('GET', '/admin/config');
    assert.equal(cfg.status, 200, cfg.text);
    assertNoLeak(cfg.text, '/admin/config');
    for (const p of ['openai', 'groq', 'mistral']) assert.equal(cfg.json.providers[p].api_key, 'set', `${p} key state`);
    const keys = await stack.admin('GET', '/admin/keys');
    assertNoLeak(keys.text, '/admin/keys');
    for (const vk of virtualKeys) {
      assert.ok(!keys.text.includes(vk), 'a virtual key plaintext is listed');
      assert.ok(!JSON.stringify(rows).includes(vk), 'a virtual key plaintext is in the ledger');
    }
  });

  test('no log line of either stack carries a provider key piece or a virtual key', async () => {
    // wrangler's output lags the responses; let it flush before reading it.
    await new Promise((r) => setTimeout(r, 1500));
    for (const [name, s] of [
      ['main', stack],
      ['no-admin-token', closed],
    ]) {
      const lines = s.logs().split('\n');
      assert.ok(lines.length > 5, `${name} logs captured`);
      for (const line of lines) {
        assertNoLeak(line, `${name} log line`);
        for (const vk of virtualKeys) assert.ok(!line.includes(vk), `${name} log line has a virtual key: ${line}`);
        assert.ok(!line.includes(ADMIN_TOKEN), `${name} log line has the admin token`);
      }
    }
  });

  test('each provider key went only to its own provider, only in Authorization; no virtual key went anywhere', () => {
    const recorded = allRecordings();
    const seenBy = Object.fromEntries(Object.keys(CANARIES).map((p) => [p, 0]));
    const virtualPieces = virtualKeys.flatMap((vk) => windows(vk.slice(3), 12));
    for (const { name, recs } of recorded) {
      for (const rec of recs) {
        const headerDump = JSON.stringify(rec.headers);
        const everything = `${rec.method} ${rec.url}\n${headerDump}\n${rec.body}`;
        for (const [provider, canary] of Object.entries(CANARIES)) {
          const pieces = ownWindows(canary).filter((w) => everything.includes(w));
          if (provider === name) {
            if (pieces.length) {
              assert.equal(rec.headers.authorization, `Bearer ${canary}`, `${name} got its key outside Authorization`);
              assert.deepEqual(ownWindows(canary).filter((w) => rec.body.includes(w)), [], `${name} key in a request body`);
              seenBy[provider]++;
            }
          } else {
            assert.deepEqual(pieces, [], `${provider}'s key reached the ${name} mock: ${everything.slice(0, 500)}`);
          }
        }
        // Whatever went upstream, Authorization is that provider's own key and nothing else.
        if (rec.headers.authorization !== undefined) assert.equal(rec.headers.authorization, `Bearer ${CANARIES[name]}`);
        const vp = virtualPieces.filter((w) => everything.includes(w));
        assert.deepEqual(vp, [], `a virtual key reached the ${name} mock`);
        assert.ok(!everything.includes('tg-'), `something tg- shaped reached ${name}: ${everything.slice(0, 300)}`);
        assert.ok(!everything.includes(ADMIN_TOKEN), `the admin token reached ${name}`);
      }
    }
    for (const p of Object.keys(CANARIES)) assert.ok(seenBy[p] > 0, `positive control: ${p} mock saw its key`);
  });
});
