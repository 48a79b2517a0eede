// Tests for the mock provider's Anthropic flavor (tests/mock/flavors/anthropic.mjs),
// driven through the official `@anthropic-ai/sdk` and raw HTTP.
// Run: node --test tests/mock/anthropic-flavor.test.mjs
import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { startMockProvider } from './mock-provider.mjs';

const KEY = 'sk-ant-api03-mock-0123456789abcdefXYZ';
const MODEL = 'claude-sonnet-4-6';
const GATEWAY_VERSION = '2023-06-01'; // what tollgate sends (src/providers/anthropic.rs API_VERSION)

let mock;
let client;

before(async () => {
  mock = await startMockProvider({ name: 'anthropic', flavor: 'anthropic', apiKey: KEY });
  client = new Anthropic({ apiKey: KEY, baseURL: mock.url, maxRetries: 0 });
});
after(async () => {
  await mock.close();
});
beforeEach(() => mock.reset());

// ------------------------------------------------------------ helpers

const ask = (text, extra = {}) => ({
  model: MODEL,
  max_tokens: 256,
  system: 'You are terse.',
  messages: [{ role: 'user', content: text }],
  ...extra,
});
const reply = (text) => `mock(anthropic) reply to: ${text}`;

const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Get the current weather in a given location',
  input_schema: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
};

/** Raw POST the way the gateway sends it: x-api-key + anthropic-version 2023-06-01. */
function post(path, body, { key = KEY, version = GATEWAY_VERSION, headers = {} } = {}) {
  return fetch(mock.url + path, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(key ? { 'x-api-key': key } : {}),
      ...(version ? { 'anthropic-version': version } : {}),
      ...headers,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** Parses an Anthropic event stream: [{event, data}], data parsed as JSON. */
function events(text) {
  assert.ok(text.endsWith('\n\n'), 'stream must end on a frame boundary');
  return text
    .split('\n\n')
    .filter((f) => f.length > 0)
    .map((frame) => {
      const lines = frame.split('\n');
      const event = lines.find((l) => l.startsWith('event: '))?.slice(7);
      const data = lines.find((l) => l.startsWith('data: '))?.slice(6);
      return { event, raw: data, data: JSON.parse(data) };
    });
}

async function rejects(promise, check) {
  let error;
  try {
    await promise;
  } catch (e) {
    error = e;
  }
  assert.ok(error, 'expected a rejection');
  check(error);
  return error;
}

function assertAnthropicError(body, type, message) {
  assert.equal(body.type, 'error');
  assert.equal(body.error.type, type);
  if (message !== undefined) assert.equal(body.error.message, message);
  assert.match(body.request_id, /^req_/);
}

// -------------------------------------------------------- non-streaming

describe('messages.create', () => {
  test('text answer in Anthropic shape, usage, request recorded', async () => {
    const msg = await client.messages.create(ask('Say hello to the gateway'));
    assert.equal(msg.type, 'message');
    assert.equal(msg.role, 'assistant');
    assert.equal(msg.model, MODEL);
    assert.match(msg.id, /^msg_01/);
    assert.deepEqual(msg.content, [{ type: 'text', text: reply('Say hello to the gateway') }]);
    assert.equal(msg.stop_reason, 'end_turn');
    assert.equal(msg.stop_sequence, null);
    assert.equal(msg.usage.input_tokens, 3 + 5); // system + user words
    assert.equal(msg.usage.output_tokens, reply('Say hello to the gateway').split(' ').length);
    assert.equal(msg.usage.cache_read_input_tokens, 0);

    const [rec] = mock.requests();
    assert.equal(rec.path, '/v1/messages');
    assert.equal(rec.json.model, MODEL);
    assert.ok(rec.headers['anthropic-version']);
    assert.equal(rec.response.status, 200);
    assert.equal(rec.response.usage.output_tokens, msg.usage.output_tokens);
  });

  test('body bytes: compact JSON in recorded key order', async () => {
    const res = await post('/v1/messages', ask('hi'));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    assert.match(res.headers.get('request-id'), /^req_/);
    const text = await res.text();
    assert.ok(!text.includes('\n'), 'compact JSON');
    assert.deepEqual(Object.keys(JSON.parse(text)), ['model', 'id', 'type', 'role', 'content', 'stop_reason', 'stop_sequence', 'usage']);
  });

  test('max_tokens cuts by words; stop_sequences stop the answer', async () => {
    const cut = await client.messages.create(ask('one two three four', { max_tokens: 3 }));
    assert.equal(cut.stop_reason, 'max_tokens');
    assert.equal(cut.content[0].text, 'mock(anthropic) reply to:');
    const stopped = await client.messages.create(ask('one two three four', { stop_sequences: ['three'] }));
    assert.equal(stopped.stop_reason, 'stop_sequence');
    assert.equal(stopped.stop_sequence, 'three');
    assert.equal(stopped.content[0].text, 'mock(anthropic) reply to: one two');
  });

  test('thinking adds a signed thinking block before the answer', async () => {
    const msg = await client.messages.create(ask('27 * 453?', { max_tokens: 4096, thinking: { type: 'enabled', budget_tokens: 1024 } }));
    assert.equal(msg.content[0].type, 'thinking');
    assert.equal(msg.content[0].thinking, 'mock thinking about: 27 * 453?');
    assert.ok(msg.content[0].signature.length > 10);
    assert.equal(msg.content[1].text, reply('27 * 453?'));
    const adaptive = await client.messages.create(ask('x', { thinking: { type: 'adaptive' }, output_config: { effort: 'low' } }));
    assert.equal(adaptive.content[0].type, 'thinking');
  });

  test('count_tokens and models', async () => {
    const count = await client.messages.countTokens({ model: MODEL, system: 'a b', messages: [{ role: 'user', content: 'c d e' }] });
    assert.deepEqual(count, { input_tokens: 5 });
    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    assert.ok(models.includes(MODEL));
    const one = await client.models.retrieve(MODEL);
    assert.equal(one.type, 'model');
  });
});

// ------------------------------------------------------------ streaming

describe('streaming', () => {
  test('messages.stream().finalMessage() equals the non-streamed answer', async () => {
    const stream = client.messages.stream(ask('Say hello to the gateway'));
    const texts = [];
    stream.on('text', (t) => texts.push(t));
    const final = await stream.finalMessage();
    const plain = await client.messages.create(ask('Say hello to the gateway'));
    assert.deepEqual(final.content, plain.content);
    assert.equal(final.stop_reason, 'end_turn');
    assert.deepEqual(final.usage, { ...plain.usage });
    assert.equal(texts.join(''), reply('Say hello to the gateway'));
    assert.ok(texts.length > 3, 'one text_delta per word');
  });

  test('wire: event names, padding, ping, cumulative usage', async () => {
    const res = await post('/v1/messages', ask('hi there', { stream: true }));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const evs = events(await res.text());
    for (const e of evs) assert.equal(e.event, e.data.type, 'event name repeats the data type');
    assert.deepEqual(
      [...new Set(evs.map((e) => e.event))],
      ['message_start', 'content_block_start', 'ping', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop'],
    );
    assert.ok(evs.some((e) => / }$/.test(e.raw)), 'production-style padding before the closing brace');
    const start = evs[0].data.message;
    assert.deepEqual(start.content, []);
    assert.equal(start.usage.output_tokens, 1);
    const delta = evs.find((e) => e.event === 'message_delta').data;
    assert.equal(delta.delta.stop_reason, 'end_turn');
    assert.equal(delta.usage.input_tokens, start.usage.input_tokens);
    assert.equal(delta.usage.output_tokens, reply('hi there').split(' ').length);
  });

  test('thinking stream: thinking_delta and signature_delta precede the text block', async () => {
    const seen = [];
    const stream = client.messages.stream(ask('why?', { max_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 } }));
    stream.on('streamEvent', (e) => {
      if (e.type === 'content_block_delta') seen.push(`${e.index}:${e.delta.type}`);
    });
    const final = await stream.finalMessage();
    assert.deepEqual(final.content.map((b) => b.type), ['thinking', 'text']);
    assert.ok(seen.includes('0:thinking_delta') && seen.includes('0:signature_delta') && seen.includes('1:text_delta'));
  });
});

// ------------------------------------------------------------ tool use

describe('tool use', () => {
  test('forced tool: tool_use block with echo input, stop_reason tool_use', async () => {
    const msg = await client.messages.create(
      ask('Weather in Paris?', { tools: [WEATHER_TOOL], tool_choice: { type: 'tool', name: 'get_weather' } }),
    );
    assert.equal(msg.stop_reason, 'tool_use');
    assert.equal(msg.content.length, 1);
    const [block] = msg.content;
    assert.equal(block.type, 'tool_use');
    assert.match(block.id, /^toolu_01/);
    assert.equal(block.name, 'get_weather');
    assert.deepEqual(block.input, { echo: 'Weather in Paris?' });
  });

  test('any picks the first tool; auto answers with text', async () => {
    const second = { ...WEATHER_TOOL, name: 'get_time' };
    const any = await client.messages.create(ask('x', { tools: [WEATHER_TOOL, second], tool_choice: { type: 'any' } }));
    assert.equal(any.content[0].name, 'get_weather');
    const auto = await client.messages.create(ask('x', { tools: [WEATHER_TOOL] }));
    assert.equal(auto.content[0].type, 'text');
  });

  test('streamed tool call: input_json_delta fragments parse to the same input', async () => {
    const stream = client.messages.stream(
      ask('Weather in "Paris"?', { tools: [WEATHER_TOOL], tool_choice: { type: 'tool', name: 'get_weather' } }),
    );
    const fragments = [];
    stream.on('inputJson', (partial) => fragments.push(partial));
    const final = await stream.finalMessage();
    assert.equal(final.stop_reason, 'tool_use');
    assert.deepEqual(final.content[0].input, { echo: 'Weather in "Paris"?' });
    assert.ok(fragments.length >= 3);
  });

  test('tool_result round trip is accepted; mismatched ids are a 400', async () => {
    const first = await client.messages.create(
      ask('Weather in Paris?', { tools: [WEATHER_TOOL], tool_choice: { type: 'tool', name: 'get_weather' } }),
    );
    const use = first.content[0];
    const followUp = {
      model: MODEL,
      max_tokens: 256,
      tools: [WEATHER_TOOL],
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: [use] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '15 degrees' }, { type: 'text', text: 'Summarise.' }] },
      ],
    };
    const second = await client.messages.create(followUp);
    assert.equal(second.content[0].text, reply('15 degrees Summarise.'));

    const wrong = structuredClone(followUp);
    wrong.messages[2].content[0].tool_use_id = 'toolu_01nope';
    await rejects(client.messages.create(wrong), (e) => {
      assert.ok(e instanceof Anthropic.BadRequestError);
      assert.match(e.error.error.message, /tool_use.*without `tool_result`|unexpected `tool_use_id`/);
    });
  });
});

// ------------------------------------------------------ auth and checks

describe('authentication and request checks', () => {
  test('wrong key: 401 authentication_error in Anthropic shape', async () => {
    const bad = new Anthropic({ apiKey: 'sk-ant-wrong', baseURL: mock.url, maxRetries: 0 });
    await rejects(bad.messages.create(ask('hi')), (e) => {
      assert.ok(e instanceof Anthropic.AuthenticationError);
      assert.equal(e.status, 401);
      assertAnthropicError(e.error, 'authentication_error');
    });
    const res = await post('/v1/messages', ask('hi'), { key: 'sk-ant-wrong' });
    assert.equal(res.status, 401);
    assertAnthropicError(await res.json(), 'authentication_error', 'invalid x-api-key');
    const none = await post('/v1/messages', ask('hi'), { key: null });
    assert.equal(none.status, 401);
    assertAnthropicError(await none.json(), 'authentication_error', 'x-api-key header is required');
  });

  test('x-api-key is what authenticates, as the gateway sends it', async () => {
    const viaHeader = new Anthropic({ apiKey: null, baseURL: mock.url, maxRetries: 0, defaultHeaders: { 'x-api-key': KEY } });
    const msg = await viaHeader.messages.create(ask('hi'));
    assert.equal(msg.content[0].text, reply('hi'));
    const [rec] = mock.requests();
    assert.equal(rec.headers['x-api-key'], KEY);
    assert.equal(rec.headers.authorization, undefined);
    // An x-api-key wins over a bearer token.
    const res = await post('/v1/messages', ask('hi'), { key: 'sk-ant-wrong', headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(res.status, 401);
  });

  test('anthropic-version: required and known; 2026-10-21 drops sampling parameters', async () => {
    const missing = await post('/v1/messages', ask('hi'), { version: null });
    assert.equal(missing.status, 400);
    assertAnthropicError(await missing.json(), 'invalid_request_error', 'anthropic-version: header is required');
    const unknown = await post('/v1/messages', ask('hi'), { version: '2099-01-01' });
    assert.equal(unknown.status, 400);
    const ok = await post('/v1/messages', ask('hi', { temperature: 0.2, top_p: 0.9 }), { version: '2023-06-01' });
    assert.equal(ok.status, 200);
    // The SDK sends 2026-10-21, where temperature no longer exists.
    await rejects(client.messages.create(ask('hi', { temperature: 0.2 })), (e) => {
      assert.equal(e.status, 400);
      assert.match(e.error.error.message, /^temperature: /);
    });
  });

  test('OpenAI-isms a translator might leak are rejected', async () => {
    const cases = [
      [{ stream_options: { include_usage: true } }, /^stream_options: Extra inputs are not permitted/],
      [{ n: 1 }, /^n: Extra inputs/],
      [{ messages: [{ role: 'system', content: 'x' }, { role: 'user', content: 'hi' }] }, /^messages\.0\.role/],
      [{ messages: [{ role: 'user', content: [{ type: 'text', text: '' }] }] }, /text content blocks must be non-empty/],
      [{ messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: '' }, { role: 'user', content: 'b' }] }, /non-empty content/],
      [{ max_tokens: undefined }, /^max_tokens: Field required/],
      [{ temperature: 1.5 }, /^temperature: range: 0\.\.1/],
      [{ tools: [WEATHER_TOOL], tool_choice: { type: 'tool', name: 'nope' } }, /Tool 'nope' not found/],
      [{ tool_choice: { type: 'any' } }, /tool_choice may only be specified while providing tools/],
      [{ max_tokens: 1024, thinking: { type: 'enabled', budget_tokens: 1024 } }, /must be greater than `thinking.budget_tokens`/],
      [{ max_tokens: 4096, thinking: { type: 'enabled', budget_tokens: 1024 }, tools: [WEATHER_TOOL], tool_choice: { type: 'any' } }, /Thinking may not be enabled when tool_choice forces tool use/],
    ];
    for (const [extra, pattern] of cases) {
      const body = ask('hi', extra);
      if ('max_tokens' in extra && extra.max_tokens === undefined) delete body.max_tokens;
      const res = await post('/v1/messages', body);
      assert.equal(res.status, 400, JSON.stringify(extra));
      const err = await res.json();
      assertAnthropicError(err, 'invalid_request_error');
      assert.match(err.error.message, pattern, JSON.stringify(extra));
    }
    const bad = await post('/v1/messages', '{not json');
    assert.equal(bad.status, 400);
  });

  test('unknown route: 404 not_found_error', async () => {
    const res = await post('/v1/complete', { prompt: 'x' });
    assert.equal(res.status, 404);
    assertAnthropicError(await res.json(), 'not_found_error');
  });
});

// ------------------------------------------------------------- faults

describe('faults', () => {
  test('status faults carry the Anthropic error type for the status', async () => {
    const cases = [
      [529, Anthropic.InternalServerError, 'overloaded_error'],
      [500, Anthropic.InternalServerError, 'api_error'],
      [400, Anthropic.BadRequestError, 'invalid_request_error'],
      [403, Anthropic.PermissionDeniedError, 'permission_error'],
      [404, Anthropic.NotFoundError, 'not_found_error'],
      [413, Anthropic.APIError, 'request_too_large'],
    ];
    for (const [status, cls, type] of cases) {
      mock.enqueue({ status });
      await rejects(client.messages.create(ask('hi')), (e) => {
        assert.ok(e instanceof cls, `${status}: ${e.constructor.name}`);
        assert.equal(e.status, status);
        assertAnthropicError(e.error, type);
      });
    }
    mock.enqueue({ status: 529 });
    const res = await post('/v1/messages', ask('hi'));
    assertAnthropicError(await res.json(), 'overloaded_error', 'Overloaded');
  });

  test('rateLimit: 429 rate_limit_error with retry-after and anthropic-ratelimit-* headers', async () => {
    mock.enqueue({ rateLimit: { retryAfter: '7' } });
    const e = await rejects(client.messages.create(ask('hi')), (err) => {
      assert.ok(err instanceof Anthropic.RateLimitError);
      assertAnthropicError(err.error, 'rate_limit_error');
    });
    assert.equal(e.headers.get('retry-after'), '7');
    assert.equal(e.headers.get('anthropic-ratelimit-requests-remaining'), '0');
    mock.enqueue({ rateLimit: { retryAfterMs: 1500 } });
    const res = await post('/v1/messages', ask('hi'));
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after-ms'), '1500');
  });

  test('errorFrame: a 200 stream whose only event is an overloaded_error', async () => {
    mock.enqueue({ errorFrame: true });
    await rejects(client.messages.stream(ask('hi')).finalMessage(), (e) => {
      assert.ok(e instanceof Anthropic.APIError);
      assert.equal(e.type, 'overloaded_error');
      assert.deepEqual(e.error, { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
    });
    mock.enqueue({ errorFrame: true });
    const res = await post('/v1/messages', ask('hi', { stream: true }));
    assert.equal(res.status, 200);
    const evs = events(await res.text());
    assert.deepEqual(evs.map((e) => e.event), ['error']);
  });

  test('cutAfterChunks: the stream ends cleanly after k deltas, without message_delta/message_stop', async () => {
    mock.enqueue({ cutAfterChunks: 2 });
    const res = await post('/v1/messages', ask('one two three four', { stream: true }));
    const evs = events(await res.text());
    assert.equal(evs.filter((e) => e.event === 'content_block_delta').length, 2);
    assert.ok(!evs.some((e) => e.event === 'message_stop' || e.event === 'message_delta'));
    assert.equal(mock.requests()[0].response.outcome, 'cut');

    mock.enqueue({ cutAfterChunks: 1 });
    await rejects(client.messages.stream(ask('one two three')).finalMessage(), (e) => {
      assert.ok(e instanceof Anthropic.AnthropicError);
    });
  });

  test('resetAfterBytes: the connection is reset mid-stream', async () => {
    mock.enqueue({ resetAfterBytes: 400 });
    await rejects(client.messages.stream(ask('one two three four five')).finalMessage(), (e) => {
      assert.ok(e instanceof Error);
    });
    assert.equal(mock.requests()[0].response.outcome, 'reset');
  });

  test('omitUsage: no usage anywhere', async () => {
    mock.enqueue({ omitUsage: true });
    const body = await (await post('/v1/messages', ask('hi'))).json();
    assert.equal(body.usage, undefined);
    mock.enqueue({ omitUsage: true });
    const evs = events(await (await post('/v1/messages', ask('hi', { stream: true }))).text());
    assert.ok(evs.every((e) => e.data.usage === undefined && e.data.message?.usage === undefined));
    assert.equal(mock.requests()[1].response.usage, null);
  });

  test('sliceBytes: frames split across writes still decode to the same answer', async () => {
    mock.enqueue({ sliceBytes: 7 });
    const final = await client.messages.stream(ask('split me please')).finalMessage();
    assert.equal(final.content[0].text, reply('split me please'));
  });
});
