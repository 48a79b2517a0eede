// Tests for the mock provider's Workers AI flavor (tests/mock/flavors/workers-ai.mjs),
// over raw HTTP: its answers must have the shapes of tests/fixtures/workers-ai/,
// which the gateway's translator is tested against.
// Run: node --test tests/mock/workers-ai-flavor.test.mjs
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startMockProvider } from './mock-provider.mjs';
import { CAPACITY_MESSAGE } from './flavors/workers-ai.mjs';

const TOKEN = 'cf-mock-token-0123456789';
const FIXTURES = fileURLToPath(new URL('../fixtures/workers-ai/', import.meta.url));
const LLAMA = '@cf/meta/llama-3.3-70b-instruct-fp8-fast';

let mock;
before(async () => {
  mock = await startMockProvider({ name: 'wai', flavor: 'workers-ai', apiKey: TOKEN });
});
after(async () => {
  await mock.close();
});
beforeEach(() => mock.reset());

function run(model, inputs, { token = TOKEN } = {}) {
  return fetch(`${mock.url}/client/v4/accounts/acct/ai/run/${model}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(inputs),
  });
}

const frames = (text) =>
  text
    .split('\n\n')
    .filter(Boolean)
    .map((f) => f.replace(/^data: /, ''));

/** The keys of every frame of a stream fixture or answer, `[DONE]` as itself. */
const shape = (text) => frames(text).map((d) => (d === '[DONE]' ? d : Object.keys(JSON.parse(d)).sort().join(',')));

test('JSON answers: the REST envelope around exactly what run() returns (the response.text.json shape)', async () => {
  const res = await run(LLAMA, { messages: [{ role: 'user', content: 'hello there' }] });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/json', 'the binding returns JSON only for exactly this type');
  const body = await res.json();
  assert.deepEqual(Object.keys(body).sort(), ['errors', 'messages', 'result', 'success']);
  const fixture = JSON.parse(readFileSync(FIXTURES + 'response.text.json', 'utf8'));
  assert.deepEqual(Object.keys(body.result).sort(), Object.keys(fixture).sort());
  assert.deepEqual(Object.keys(body.result.usage).sort(), Object.keys(fixture.usage).sort());
  assert.equal(body.result.response, 'mock(wai) reply to: hello there');
});

test('streams: text frames with padding, then the usage total and [DONE] (the stream.text.sse shape)', async () => {
  const res = await run(LLAMA, { messages: [{ role: 'user', content: 'one two' }], stream: true });
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const got = shape(await res.text());
  const want = shape(readFileSync(FIXTURES + 'stream.text.sse', 'utf8')).filter((k) => k !== 'response');
  assert.deepEqual([...new Set(got)], [...new Set(want)]);
  assert.deepEqual(got.slice(-2), ['response,usage', '[DONE]']);
});

test('tool calls: native objects without ids in JSON, index-keyed deltas with a finalization item in streams', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: {} } } }];
  const messages = [{ role: 'user', content: 'weather?' }];
  const body = await (await run(LLAMA, { messages, tools })).json();
  assert.equal(body.result.response, null);
  assert.deepEqual(body.result.tool_calls, [{ name: 'get_weather', arguments: { echo: 'weather?' } }]);
  const text = await (await run(LLAMA, { messages, tools, stream: true })).text();
  const items = frames(text)
    .filter((d) => d !== '[DONE]')
    .map((d) => JSON.parse(d).tool_calls?.[0])
    .filter(Boolean);
  assert.equal(items[0].function.name, 'get_weather');
  assert.match(items[0].id, /^chatcmpl-tool-/);
  assert.deepEqual(JSON.parse(items.slice(1, -1).map((i) => i.function.arguments).join('')), { echo: 'weather?' });
  assert.deepEqual(items[items.length - 1], { id: null, type: null, index: 0, function: { name: null, arguments: null } });
});

test('schema validation answers 5006 the way the binding reports it; unknown models 5007; bad token 10000', async () => {
  const cases = [
    [{ messages: [{ role: 'user', content: [{ type: 'text', text: 'x' }] }] }, /Type mismatch of '\/messages\/0\/content', 'array' not in 'string'/],
    [{ messages: [{ role: 'assistant', content: null }] }, /'null' not in 'string'/],
    [{ foo: 1 }, /required properties at '\/' are 'prompt', required properties at '\/' are 'messages'/],
    [{ messages: [], seed: 0 }, /'\/seed'/],
    [{ messages: [], tools: [{ type: 'function', function: { name: 'x' } }] }, /required properties at '\/tools\/0' are 'description'/],
  ];
  for (const [inputs, re] of cases) {
    const res = await run(LLAMA, inputs);
    assert.equal(res.status, 400, JSON.stringify(inputs));
    const body = await res.json();
    assert.equal(body.success, false);
    assert.equal(body.errors[0].code, 5006);
    assert.match(body.errors[0].message, re);
  }
  const unknown = await (await run('@cf/meta/nope', { messages: [] })).json();
  assert.deepEqual(unknown.errors[0], { code: 5007, message: 'No such model @cf/meta/nope or task' });
  const denied = await run(LLAMA, { messages: [] }, { token: 'wrong' });
  assert.equal(denied.status, 401);
  assert.equal((await denied.json()).errors[0].code, 10000);
});

test('faults: rate limit is 3040 capacity (3036 on request), status faults carry documented codes', async () => {
  mock.enqueue({ rateLimit: {} });
  let body = await (await run(LLAMA, { messages: [] })).json();
  assert.deepEqual(body.errors[0], { code: 3040, message: CAPACITY_MESSAGE });
  mock.enqueue({ rateLimit: { code: 3036 } });
  body = await (await run(LLAMA, { messages: [] })).json();
  assert.equal(body.errors[0].code, 3036);
  for (const [status, code] of [[408, 3007], [413, 3006], [500, 3043], [403, 3023]]) {
    mock.enqueue({ status });
    const res = await run(LLAMA, { messages: [] });
    assert.equal(res.status, status);
    assert.equal((await res.json()).errors[0].code, code);
  }
});

test('embeddings: {text} → {shape, data, pooling} of the model size; no usage reported', async () => {
  const body = await (await run('@cf/baai/bge-small-en-v1.5', { text: ['a', 'b c'] })).json();
  assert.deepEqual(body.result.shape, [2, 384]);
  assert.equal(body.result.data[1].length, 384);
  assert.equal(body.result.pooling, 'mean');
  assert.equal('usage' in body.result, false);
  const cls = await (await run('@cf/baai/bge-small-en-v1.5', { text: 'a', pooling: 'cls' })).json();
  assert.notDeepEqual(cls.result.data[0], body.result.data[0], 'cls pooling gives other vectors');
  assert.equal((await run('@cf/baai/bge-small-en-v1.5', { text: [] })).status, 400);
});
