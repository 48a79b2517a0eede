// Tests for the mock provider's Gemini flavor (tests/mock/flavors/gemini.mjs), over raw HTTP.
// Run: node --test tests/mock/gemini-flavor.test.mjs
import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startMockProvider } from './mock-provider.mjs';
import { createFlavor, googleJson } from './flavors/gemini.mjs';

const KEY = 'AIzaSyMOCK-0123456789abcdefghijklmnopq';
const FIXTURES = fileURLToPath(new URL('../fixtures/gemini/', import.meta.url));
const fixture = (name) => readFileSync(FIXTURES + name, 'utf8');
const MODEL = 'gemini-2.5-flash';
const EMBED_MODEL = 'gemini-embedding-001';

let mock;

before(async () => {
  mock = await startMockProvider({ name: 'gemini', flavor: 'gemini', apiKey: KEY });
});
after(async () => {
  await mock.close();
});
beforeEach(() => mock.reset());

// ------------------------------------------------------------ helpers

function call(path, body, { key = KEY, headers = {}, raw = false, method = 'POST' } = {}) {
  return fetch(mock.url + path, {
    method,
    headers: { 'content-type': 'application/json', ...(key ? { 'x-goog-api-key': key } : {}), ...headers },
    body: method === 'GET' ? undefined : raw ? body : JSON.stringify(body),
  });
}

const generate = (body, opts) => call(`/v1beta/models/${MODEL}:generateContent`, body, opts);
const stream = (body, opts) => call(`/v1beta/models/${MODEL}:streamGenerateContent?alt=sse`, body, opts);

const userTurn = (text) => ({ role: 'user', parts: [{ text }] });
const ask = (text = 'Say hello to the gateway', extra = {}) => ({ contents: [userTurn(text)], ...extra });
const REPLY = 'mock(gemini) reply to: Say hello to the gateway';
const REPLY_WORDS = REPLY.split(' ');

/** `data: …\r\n\r\n` events → parsed objects; asserts the framing. */
function sseEvents(text) {
  assert.ok(text.endsWith('\r\n\r\n'), 'events end with CRLF CRLF');
  return text
    .split('\r\n\r\n')
    .filter((f) => f.length > 0)
    .map((raw) => {
      assert.ok(raw.startsWith('data: '), `event starts with "data: ": ${raw.slice(0, 40)}`);
      assert.ok(!raw.includes('\n'), 'one data line per event');
      const payload = raw.slice(6);
      assert.notEqual(payload, '[DONE]', 'Gemini sends no [DONE]');
      const obj = JSON.parse(payload);
      assert.equal(payload, googleJson(obj), "Google's compact JSON (': ' after keys)");
      return obj;
    });
}

/** Structure of a JSON value: key order, value kinds, first array element. */
function shape(v) {
  if (v === null) return null;
  if (Array.isArray(v)) return v.length ? [shape(v[0])] : [];
  if (typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)]));
  return typeof v;
}
const sameShape = (a, b, msg) => assert.equal(JSON.stringify(shape(a)), JSON.stringify(shape(b)), msg);

async function json(res, status = 200) {
  const text = await res.text();
  assert.equal(res.status, status, text);
  assert.equal(text, JSON.stringify(JSON.parse(text), null, 2) + '\n', 'Google pretty-prints with 2 spaces');
  return JSON.parse(text);
}

async function googleError(res, status, grpc) {
  const body = await json(res, status);
  assert.deepEqual(Object.keys(body), ['error']);
  assert.equal(body.error.code, status);
  assert.equal(body.error.status, grpc);
  assert.equal(typeof body.error.message, 'string');
  return body.error;
}

// ------------------------------------------------------------ generate

describe('generateContent', () => {
  test('text reply, fields, usage', async () => {
    const res = await generate(ask('Say hello to the gateway', { systemInstruction: { parts: [{ text: 'You are terse.' }] } }));
    assert.match(res.headers.get('content-type'), /^application\/json; charset=UTF-8$/);
    const body = await json(res);
    assert.deepEqual(Object.keys(body), ['candidates', 'usageMetadata', 'modelVersion', 'responseId']);
    const [c] = body.candidates;
    assert.deepEqual(c, { content: { parts: [{ text: REPLY }], role: 'model' }, finishReason: 'STOP', index: 0 });
    assert.deepEqual(body.usageMetadata, {
      promptTokenCount: 8, // "You are terse." (3) + "Say hello to the gateway" (5)
      candidatesTokenCount: REPLY_WORDS.length,
      totalTokenCount: 8 + REPLY_WORDS.length,
      promptTokensDetails: [{ modality: 'TEXT', tokenCount: 8 }],
    });
    assert.equal(body.modelVersion, MODEL);
    assert.match(body.responseId, /^[A-Za-z0-9_-]{23}$/);
    assert.deepEqual(mock.requests()[0].response.usage, {
      prompt_tokens: 8,
      completion_tokens: REPLY_WORDS.length,
      total_tokens: 8 + REPLY_WORDS.length,
    });
  });

  test('multi-turn answers the last user turn; snake_case fields are accepted', async () => {
    const body = await json(
      await generate({
        system_instruction: { parts: [{ text: 'sys' }] },
        contents: [userTurn('first'), { role: 'model', parts: [{ text: 'ok' }] }, userTurn('second one')],
        generation_config: { temperature: 0.2, max_output_tokens: 100 },
      }),
    );
    assert.equal(body.candidates[0].content.parts[0].text, 'mock(gemini) reply to: second one');
    assert.equal(body.usageMetadata.promptTokenCount, 5);
  });

  test('maxOutputTokens cuts the reply with MAX_TOKENS', async () => {
    const body = await json(await generate(ask(undefined, { generationConfig: { maxOutputTokens: 2 } })));
    assert.equal(body.candidates[0].content.parts[0].text, 'mock(gemini) reply');
    assert.equal(body.candidates[0].finishReason, 'MAX_TOKENS');
    assert.equal(body.usageMetadata.candidatesTokenCount, 2);
  });

  test('JSON mode answers JSON text; thinking adds a thought part and thoughtsTokenCount', async () => {
    let body = await json(await generate(ask('hi', { generationConfig: { responseMimeType: 'application/json' } })));
    assert.deepEqual(JSON.parse(body.candidates[0].content.parts[0].text), { echo: 'hi' });
    body = await json(await generate(ask('hi', { generationConfig: { thinkingConfig: { thinkingBudget: 1024, includeThoughts: true } } })));
    assert.deepEqual(body.candidates[0].content.parts, [
      { text: 'mock thinking about: hi', thought: true },
      { text: 'mock(gemini) reply to: hi' },
    ]);
    assert.equal(body.usageMetadata.thoughtsTokenCount, 4);
    assert.equal(body.usageMetadata.totalTokenCount, 1 + 4 + 4);
    assert.deepEqual(mock.requests()[1].response.usage, { prompt_tokens: 1, completion_tokens: 8, total_tokens: 9 });
  });

  test('request validation mirrors Gemini', async () => {
    let e = await googleError(await generate({ model: MODEL, ...ask() }), 400, 'INVALID_ARGUMENT');
    assert.equal(e.message, 'Invalid JSON payload received. Unknown name "model": Cannot find field.');
    assert.equal(e.details[0]['@type'], 'type.googleapis.com/google.rpc.BadRequest');
    e = await googleError(await generate({ contents: [] }), 400, 'INVALID_ARGUMENT');
    assert.equal(e.message, '* GenerateContentRequest.contents: contents is not specified\n');
    e = await googleError(await generate({ contents: [{ role: 'assistant', parts: [{ text: 'x' }] }] }), 400, 'INVALID_ARGUMENT');
    assert.equal(e.message, 'Please use a valid role: user, model.');
    e = await googleError(await generate({ contents: [{ role: 'user', parts: [] }] }), 400, 'INVALID_ARGUMENT');
    assert.match(e.message, /contents\.parts must not be empty/);
    e = await googleError(await generate({ contents: [userTurn('')] }), 400, 'INVALID_ARGUMENT');
    assert.match(e.message, /empty text parameter/);
    e = await googleError(await generate(ask('x', { generationConfig: { max_tokens: 5 } })), 400, 'INVALID_ARGUMENT');
    assert.equal(e.message, `Invalid JSON payload received. Unknown name "max_tokens" at 'generation_config': Cannot find field.`);
    e = await googleError(await generate('{"contents": [', { raw: true }), 400, 'INVALID_ARGUMENT');
    assert.match(e.message, /^Invalid JSON payload received/);
  });

  test('unknown models and paths', async () => {
    const e = await googleError(await call('/v1beta/models/gpt-4o:generateContent', ask()), 404, 'NOT_FOUND');
    assert.match(e.message, /^models\/gpt-4o is not found for API version v1beta, or is not supported for generateContent/);
    await googleError(await call(`/v1beta/models/${EMBED_MODEL}:generateContent`, ask()), 404, 'NOT_FOUND');
    const res = await call('/v1beta/nothing/here', {});
    assert.equal(res.status, 404);
    assert.match(res.headers.get('content-type'), /^text\/html/);
    assert.match(await res.text(), /Error 404 \(Not Found\)/);
    // Any prefix works, and the model id is percent-decoded.
    const body = await json(await call(`/proxy/v1beta/models/${encodeURIComponent(MODEL)}:generateContent`, ask()));
    assert.equal(body.modelVersion, MODEL);
  });
});

// -------------------------------------------------------------- stream

describe('streamGenerateContent', () => {
  test('alt=sse: data frames, each a full response; the last has finishReason and usage', async () => {
    const res = await stream(ask());
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const events = sseEvents(await res.text());
    assert.equal(events.length, REPLY_WORDS.length + 1);
    const ids = new Set(events.map((e) => e.responseId));
    assert.equal(ids.size, 1, 'one responseId for the whole stream');
    for (const e of events) {
      assert.deepEqual(Object.keys(e), ['candidates', 'usageMetadata', 'modelVersion', 'responseId']);
      assert.equal(e.candidates[0].content.role, 'model');
      assert.equal(e.usageMetadata.promptTokenCount, 5);
    }
    const text = events.map((e) => e.candidates[0].content.parts.map((p) => p.text).join('')).join('');
    assert.equal(text, REPLY);
    const running = events.map((e) => e.usageMetadata.candidatesTokenCount ?? 0);
    assert.deepEqual(running, [...running].sort((a, b) => a - b), 'running totals only grow');
    for (const e of events.slice(0, -1)) assert.equal(e.candidates[0].finishReason, undefined);
    const last = events.at(-1);
    assert.deepEqual(last.candidates[0], { content: { parts: [{ text: '' }], role: 'model' }, finishReason: 'STOP', index: 0 });
    assert.deepEqual(last.usageMetadata, {
      promptTokenCount: 5,
      candidatesTokenCount: REPLY_WORDS.length,
      totalTokenCount: 5 + REPLY_WORDS.length,
      promptTokensDetails: [{ modality: 'TEXT', tokenCount: 5 }],
    });
  });

  test('without alt=sse the stream is one JSON array of responses', async () => {
    const res = await call(`/v1beta/models/${MODEL}:streamGenerateContent`, ask());
    const body = JSON.parse(await res.text());
    assert.ok(Array.isArray(body));
    assert.equal(body.length, REPLY_WORDS.length + 1);
    assert.equal(body.at(-1).candidates[0].finishReason, 'STOP');
  });

  test('max tokens and thinking in a stream', async () => {
    let events = sseEvents(await (await stream(ask(undefined, { generationConfig: { maxOutputTokens: 3 } }))).text());
    assert.equal(events.length, 4);
    assert.equal(events.at(-1).candidates[0].finishReason, 'MAX_TOKENS');
    events = sseEvents(await (await stream(ask('hi', { generationConfig: { thinkingConfig: { includeThoughts: true } } }))).text());
    assert.deepEqual(events[0].candidates[0].content.parts, [{ text: 'mock thinking about: hi', thought: true }]);
    assert.equal(events[0].usageMetadata.thoughtsTokenCount, 4);
  });
});

// ------------------------------------------------------ function calls

describe('function calls', () => {
  const tools = [
    {
      functionDeclarations: [
        { name: 'get_weather', description: 'Weather', parameters: { type: 'OBJECT', properties: { city: { type: 'STRING' } } } },
        { name: 'get_time' },
      ],
    },
  ];

  test('ANY with two allowed names: parallel calls, the first signed; AUTO answers text', async () => {
    const body = await json(
      await generate(ask('Paris', { tools, toolConfig: { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['get_weather', 'get_time'] } } })),
    );
    const parts = body.candidates[0].content.parts;
    assert.deepEqual(parts.map((p) => p.functionCall), [
      { name: 'get_weather', args: { echo: 'Paris' } },
      { name: 'get_time', args: { echo: 'Paris' } },
    ]);
    assert.match(parts[0].thoughtSignature, /^[A-Za-z0-9+/]+=*$/);
    assert.equal(parts[1].thoughtSignature, undefined);
    assert.equal(body.candidates[0].finishReason, 'STOP');
    const auto = await json(await generate(ask('Paris', { tools, toolConfig: { functionCallingConfig: { mode: 'AUTO' } } })));
    assert.equal(auto.candidates[0].content.parts[0].text, 'mock(gemini) reply to: Paris');
    const any = await json(await generate(ask('Paris', { tools, toolConfig: { functionCallingConfig: { mode: 'ANY' } } })));
    assert.deepEqual(any.candidates[0].content.parts.map((p) => p.functionCall.name), ['get_weather']);
  });

  test('streamed call arrives whole in one frame, then the STOP frame', async () => {
    const events = sseEvents(
      await (await stream(ask('Rome', { tools, toolConfig: { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['get_weather'] } } }))).text(),
    );
    assert.equal(events.length, 2);
    assert.deepEqual(events[0].candidates[0].content.parts[0].functionCall, { name: 'get_weather', args: { echo: 'Rome' } });
    assert.equal(events[1].candidates[0].finishReason, 'STOP');
  });

  test('a function-result turn is answered; results must match calls; request ids are rejected', async () => {
    const history = [
      userTurn('Weather in Paris?'),
      { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: { city: 'Paris' } }, thoughtSignature: 'c2ln' }] },
      { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { temp: 21 } } }] },
    ];
    const body = await json(await generate({ contents: history, tools }));
    assert.equal(body.candidates[0].content.parts[0].text, 'mock(gemini) reply to: get_weather={"temp":21}');

    let e = await googleError(await generate({ contents: history.slice(0, 2).concat([userTurn('and?')]), tools }), 400, 'INVALID_ARGUMENT');
    assert.match(e.message, /number of function response parts is equal to the number of function call parts/);

    const withId = structuredClone(history);
    withId[1].parts[0].functionCall.id = 'call_1';
    e = await googleError(await generate({ contents: withId, tools }), 400, 'INVALID_ARGUMENT');
    assert.equal(e.message, `Invalid JSON payload received. Unknown name "id" at 'contents[1].parts[0].function_call': Cannot find field.`);
    assert.equal(e.details[0].fieldViolations[0].field, 'contents[1].parts[0].function_call');
    const responseId = structuredClone(history);
    responseId[2].parts[0].functionResponse.id = 'call_1';
    e = await googleError(await generate({ contents: responseId, tools }), 400, 'INVALID_ARGUMENT');
    assert.match(e.message, /Unknown name "id" at 'contents\[2\]\.parts\[0\]\.function_response'/);
  });
});

// ---------------------------------------------------------- embeddings

describe('embeddings', () => {
  const batch = (texts, extra = {}, model = EMBED_MODEL) =>
    call(`/v1beta/models/${model}:batchEmbedContents`, {
      requests: texts.map((text) => ({ model: `models/${model}`, content: { parts: [{ text }] }, ...extra })),
    });
  const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

  test('batchEmbedContents: one vector per request, no usage', async () => {
    const body = await json(await batch(['hello', 'world']));
    assert.deepEqual(Object.keys(body), ['embeddings']);
    assert.equal(body.embeddings.length, 2);
    for (const e of body.embeddings) {
      assert.deepEqual(Object.keys(e), ['values']);
      assert.equal(e.values.length, 8);
      assert.ok(Math.abs(norm(e.values) - 1) < 1e-6);
    }
    assert.notDeepEqual(body.embeddings[0].values, body.embeddings[1].values);
    const again = await json(await batch(['hello']));
    assert.deepEqual(again.embeddings[0].values, body.embeddings[0].values, 'deterministic');
    assert.equal(mock.requests()[0].response.usage, null);
  });

  test('outputDimensionality truncates without normalising', async () => {
    const body = await json(await batch(['hello'], { outputDimensionality: 16 }));
    assert.equal(body.embeddings[0].values.length, 16);
    assert.ok(Math.abs(norm(body.embeddings[0].values) - 0.5) < 1e-6);
  });

  test('embedContent, limits and model checks', async () => {
    const one = await json(await call(`/v1beta/models/${EMBED_MODEL}:embedContent`, { content: { parts: [{ text: 'hello' }] } }));
    const many = await json(await batch(['hello']));
    assert.deepEqual(one.embedding.values, many.embeddings[0].values);
    const e = await googleError(await batch(Array.from({ length: 101 }, (_, i) => `t${i}`)), 400, 'INVALID_ARGUMENT');
    assert.equal(e.message, JSON.parse(fixture('error.400-batch-limit.json')).error.message);
    const mismatch = await call(`/v1beta/models/${EMBED_MODEL}:batchEmbedContents`, {
      requests: [{ model: 'models/other', content: { parts: [{ text: 'x' }] } }],
    });
    await googleError(mismatch, 400, 'INVALID_ARGUMENT');
    await googleError(await batch(['x'], {}, MODEL), 404, 'NOT_FOUND');
  });
});

// ---------------------------------------------------------------- auth

describe('auth', () => {
  test('no key -> 403 PERMISSION_DENIED, exactly the recorded body', async () => {
    const res = await generate(ask(), { key: null });
    assert.deepEqual(await json(res, 403), JSON.parse(fixture('error.403-unregistered-caller.json')));
  });

  test('wrong key -> 400 INVALID_ARGUMENT with reason API_KEY_INVALID, exactly the recorded body', async () => {
    const res = await generate(ask(), { key: 'AIzaSyWRONG-000000000000000000000000000' });
    assert.deepEqual(await json(res, 400), JSON.parse(fixture('error.400-api-key-invalid.json')));
  });

  test('a Bearer token is read as OAuth -> 401 UNAUTHENTICATED; ?key= works', async () => {
    const e = await googleError(await generate(ask(), { key: null, headers: { authorization: `Bearer ${KEY}` } }), 401, 'UNAUTHENTICATED');
    assert.equal(e.details[0].reason, 'ACCESS_TOKEN_TYPE_UNSUPPORTED');
    const res = await call(`/v1beta/models/${MODEL}:generateContent?key=${KEY}`, ask(), { key: null });
    assert.equal(res.status, 200);
    await res.text();
  });

  test('models list and get need the key too', async () => {
    const list = await json(await call('/v1beta/models', null, { method: 'GET' }));
    assert.ok(list.models.some((m) => m.name === `models/${MODEL}`));
    const one = await json(await call(`/v1beta/models/${EMBED_MODEL}`, null, { method: 'GET' }));
    assert.equal(one.name, `models/${EMBED_MODEL}`);
    await googleError(await call('/v1beta/models/nope', null, { method: 'GET' }), 404, 'NOT_FOUND');
    await googleError(await call('/v1beta/models', null, { method: 'GET', key: null }), 403, 'PERMISSION_DENIED');
  });
});

// -------------------------------------------------------------- faults

describe('faults', () => {
  test('status-only faults get Gemini error bodies', async () => {
    const cases = [
      [400, 'INVALID_ARGUMENT'],
      [404, 'NOT_FOUND'],
      [500, 'INTERNAL'],
      [503, 'UNAVAILABLE'],
      [504, 'DEADLINE_EXCEEDED'],
    ];
    for (const [status, grpc] of cases) {
      mock.enqueue({ status });
      const e = await googleError(await generate(ask()), status, grpc);
      if (status === 503) assert.equal(e.message, JSON.parse(fixture('error.503-unavailable.json')).error.message);
    }
  });

  test('rateLimit -> 429 RESOURCE_EXHAUSTED with RetryInfo; retry-after only on request', async () => {
    mock.enqueue({ rateLimit: {} });
    let res = await generate(ask());
    assert.equal(res.headers.get('retry-after'), null, 'Gemini sends no Retry-After header');
    let e = await googleError(res, 429, 'RESOURCE_EXHAUSTED');
    assert.deepEqual(e.details.at(-1), { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '20s' });
    sameShape(e.details.at(-1), JSON.parse(fixture('error.429-resource-exhausted.json')).error.details.at(-1));
    mock.enqueue({ rateLimit: { retryAfter: '3' } });
    res = await generate(ask());
    assert.equal(res.headers.get('retry-after'), '3');
    e = await googleError(res, 429, 'RESOURCE_EXHAUSTED');
    assert.equal(e.details.at(-1).retryDelay, '3s');
  });

  test('errorFrame -> 200 SSE whose only event is an error object', async () => {
    mock.enqueue({ errorFrame: true });
    const res = await stream(ask());
    assert.equal(res.status, 200);
    const events = sseEvents(await res.text());
    assert.equal(events.length, 1);
    assert.deepEqual(events[0], { error: { code: 500, message: JSON.parse(fixture('error.500-internal.json')).error.message, status: 'INTERNAL' } });
  });

  test('cutAfterChunks ends the stream cleanly without a finishReason', async () => {
    mock.enqueue({ cutAfterChunks: 2 });
    const events = sseEvents(await (await stream(ask())).text());
    assert.equal(events.length, 2);
    assert.ok(events.every((e) => e.candidates[0].finishReason === undefined));
    assert.equal(mock.requests()[0].response.outcome, 'cut');
  });

  test('omitUsage drops usageMetadata in both modes', async () => {
    mock.enqueue({ omitUsage: true, times: 2 });
    const body = await json(await generate(ask()));
    assert.equal(body.usageMetadata, undefined);
    const events = sseEvents(await (await stream(ask())).text());
    assert.ok(events.every((e) => e.usageMetadata === undefined));
    assert.equal(mock.requests()[1].response.usage, null);
  });

  test('faults match on the path (Gemini has no model or stream flag in the body)', async () => {
    mock.enqueue({ match: { path: ':streamGenerateContent' }, status: 503 });
    assert.equal((await generate(ask())).status, 200);
    assert.equal((await stream(ask())).status, 503);
  });

  test('requestFacts reads the model and stream flag from the path', () => {
    const { requestFacts } = createFlavor();
    assert.deepEqual(requestFacts({ method: 'POST', pathname: `/v1beta/models/${MODEL}:streamGenerateContent` }), { model: MODEL, stream: true });
    assert.deepEqual(requestFacts({ method: 'POST', pathname: '/v1beta/models/a%2Db:generateContent' }), { model: 'a-b', stream: false });
    assert.deepEqual(requestFacts({ method: 'GET', pathname: '/v1beta/models' }), { model: undefined, stream: false });
  });

  test('sliceBytes keeps the bytes; resetAfterBytes cuts the connection', async () => {
    const whole = await (await stream(ask())).text();
    mock.enqueue({ sliceBytes: 7 });
    assert.equal((await (await stream(ask())).text()).replace(/"responseId": "[^"]+"/g, ''), whole.replace(/"responseId": "[^"]+"/g, ''));
    mock.enqueue({ resetAfterBytes: 40 });
    await assert.rejects(async () => (await stream(ask())).text());
  });
});

// ---------------------------------------------------- fixture conformance

describe('fixture conformance (mock output has the recorded Gemini shapes)', () => {
  test('generateContent body matches generate.*.json field order', async () => {
    const body = await json(await generate(ask()));
    const recorded = JSON.parse(fixture('generate.max-tokens.json'));
    assert.deepEqual(Object.keys(body), Object.keys(recorded));
    assert.deepEqual(Object.keys(body.candidates[0]), ['content', 'finishReason', 'index']);
    assert.deepEqual(Object.keys(body.candidates[0].content), Object.keys(recorded.candidates[0].content));
    assert.deepEqual(Object.keys(body.usageMetadata), Object.keys(recorded.usageMetadata).slice(0, 4));
  });

  test('stream events match stream.*.sse framing and field order', async () => {
    const recorded = fixture('stream.max-tokens.sse');
    const mine = await (await stream(ask(undefined, { generationConfig: { maxOutputTokens: 2 } }))).text();
    const a = sseEvents(recorded);
    const b = sseEvents(mine);
    sameShape(b[0], a[0], 'content frame');
    assert.deepEqual(Object.keys(b.at(-1).candidates[0]), Object.keys(a.at(-1).candidates[0]));
    assert.equal(b.at(-1).candidates[0].finishReason, 'MAX_TOKENS');
  });

  test('function-call parts match generate.tool-call.json', async () => {
    const body = await json(
      await generate(ask('x', { tools: [{ functionDeclarations: [{ name: 'weather' }] }], toolConfig: { functionCallingConfig: { mode: 'ANY' } } })),
    );
    const recorded = JSON.parse(fixture('generate.tool-call.json'));
    assert.deepEqual(Object.keys(body.candidates[0].content.parts[0]), Object.keys(recorded.candidates[0].content.parts[0]));
  });

  test('embeddings match embed.batch.json', async () => {
    const body = await json(await call(`/v1beta/models/${EMBED_MODEL}:batchEmbedContents`, {
      requests: [{ model: `models/${EMBED_MODEL}`, content: { parts: [{ text: 'a' }] } }],
    }));
    sameShape(body, JSON.parse(fixture('embed.batch.json')));
  });
});
