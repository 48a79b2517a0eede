// The exact cache in KV (issue 5) end to end: the built Worker under
// `wrangler dev` (local KV and D1) in front of mock OpenAI-wire providers,
// with the official `openai` SDK as the client where a user would hold one and
// raw fetch where the bytes matter (SSE framing, header errors).
//
// Anchors (`../shared/reference/anchors-reliability.md` section B):
//   C1  entries are per tenant (virtual key): same body from two keys → two misses.
//   C2  everything that changes the output is in the key; only explicit
//       `temperature: 0` or a `seed` is cacheable.
//   C4  only complete, successful answers are stored (cut streams, error
//       frames, upstream errors and client aborts are not).
//   C5  a hit writes its own ledger row with cache_status "hit" and no upstream attempt.
//
// Two stacks, started together: `stack` with the default mode (opt-in) and a
// fallback route over two mocks, and `onStack` with `mode = "on"` and
// `max_entry_bytes = 4096`.
//
// Entries are written after the response (`ctx.wait_until`), so a repeat is
// retried until it HITs (≤ 3 s) after the first request's ledger row exists;
// every retry that MISSes is counted, and the upstream request count is
// asserted exactly against the MISS responses actually observed.

import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import OpenAI from 'openai';

import { readSse, startStack } from './harness.mjs';

const CHAT = '/v1/chat/completions';
const EMBED = '/v1/embeddings';
const MODEL = 'openai/gpt-4o-mini';
const EMBED_MODEL = 'openai/text-embedding-3-small';
const EXACT = { 'x-tollgate-cache': 'exact' };
const ROUTE = 'cache-fb';

let stack; // mode opt-in (default), providers openai + groq, route `cache-fb`
let onStack; // mode on, provider openai
let keyA;
let keyB;
let keyOn;
let clientA;
let clientB;
let clientOn;

before(async () => {
  [stack, onStack] = await Promise.all([
    startStack({
      providers: {
        openai: { apiKey: 'sk-test-openai-cache-000000000000000' },
        groq: { apiKey: 'gsk-test-groq-cache-0000000000000000' },
      },
      editConfig(g) {
        g.routes = {
          [ROUTE]: { strategy: 'fallback', targets: [{ model: 'openai/cfb' }, { model: 'groq/cfb' }] },
        };
      },
    }),
    startStack({
      providers: { openai: { apiKey: 'sk-test-openai-cache-on-0000000000000' } },
      editConfig(g) {
        g.cache = { mode: 'on', max_entry_bytes: 4096 };
      },
    }),
  ]);
  [keyA, keyB, keyOn] = await Promise.all([
    stack.createKey({ name: 'cache-a' }),
    stack.createKey({ name: 'cache-b' }),
    onStack.createKey({ name: 'cache-on' }),
  ]);
  clientA = clientFor(stack, keyA.key);
  clientB = clientFor(stack, keyB.key);
  clientOn = clientFor(onStack, keyOn.key);
});

after(async () => {
  await Promise.all([stack?.stop(), onStack?.stop()]);
});

beforeEach(() => {
  for (const s of [stack, onStack]) for (const m of Object.values(s?.mocks ?? {})) m.reset();
});

// ------------------------------------------------------------------ helpers

function clientFor(s, apiKey) {
  return new OpenAI({ apiKey, baseURL: `${s.url}/v1`, maxRetries: 0, timeout: 15_000 });
}

const openai = () => stack.mocks.openai;
const groq = () => stack.mocks.groq;
const upstream = (s = stack) => s.mocks.openai.requests().length;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let counter = 0;
/** A prompt no other test sends, so entries never leak between tests. */
const uniq = (label) => `${label} number ${++counter}`;

const chatBody = (content, extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content }], temperature: 0, ...extra });

/** Raw POST; the body is parsed as JSON when it is JSON. */
async function post(path, body, { s = stack, apiKey = keyA.key, headers = {} } = {}) {
  const res = await fetch(s.url + path, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return wrap(res, { status: res.status, text, json });
}

/** Raw streamed POST: the frames, read to the end. */
async function postStream(body, { s = stack, apiKey = keyA.key, headers = {} } = {}) {
  const res = await fetch(s.url + CHAT, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ ...body, stream: true }),
  });
  const { frames, rest } = await readSse(res);
  return wrap(res, { status: res.status, frames, rest });
}

function wrap(res, extra) {
  return {
    ...extra,
    headers: res.headers,
    cache: res.headers.get('x-tollgate-cache'),
    age: res.headers.get('x-tollgate-cache-age'),
    requestId: res.headers.get('x-tollgate-request-id'),
  };
}

/** SDK chat call with the response headers. */
async function sdkChat(client, body, headers = {}) {
  const { data, response } = await client.chat.completions.create(body, { headers }).withResponse();
  return wrap(response, { data });
}

/** SDK streamed chat call: the text, the chunks, and the response headers. */
async function sdkStream(client, body, headers = {}) {
  const { data: stream, response } = await client.chat.completions.create({ ...body, stream: true }, { headers }).withResponse();
  const chunks = [];
  let text = '';
  for await (const chunk of stream) {
    chunks.push(chunk);
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  return wrap(response, { text, chunks });
}

async function sdkEmbed(client, body, headers = {}) {
  const { data, response } = await client.embeddings.create(body, { headers }).withResponse();
  return wrap(response, { data });
}

/**
 * Repeats `send` until its answer is a HIT (the entry is written after the
 * first response). Returns the HIT and how many MISSes came first (each of
 * those went upstream; the callers count them).
 */
async function untilHit(send, { timeoutMs = 3000 } = {}) {
  const until = Date.now() + timeoutMs;
  let misses = 0;
  for (;;) {
    const r = await send();
    if (r.cache === 'HIT') {
      if (process.env.CACHE_TEST_DEBUG) console.error(`untilHit: ${misses} misses`);
      return { hit: r, misses };
    }
    assert.equal(r.cache, 'MISS', `while waiting for a HIT: ${r.cache} ${r.status ?? ''} ${r.text ?? ''}`);
    misses++;
    if (Date.now() > until) assert.fail(`no HIT within ${timeoutMs} ms (${misses} misses)`);
    await sleep(50);
  }
}

/** The ledger row of one request (written after the response). */
async function ledgerRow(requestId, s = stack, timeoutMs = 10_000) {
  assert.match(requestId ?? '', /^req_[0-9a-f]{32}$/, 'request id header');
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await s.admin('GET', `/admin/requests/${requestId}`);
    if (r.status === 200) return r.json;
    assert.equal(r.status, 404, r.text);
    if (Date.now() > until) assert.fail(`no ledger row for ${requestId}`);
    await sleep(100);
  }
}

/** Choices as a client compares them: empty `annotations` carry nothing (the entry does not keep them). */
function comparableChoices(choices) {
  return choices.map((c) => {
    const message = { ...c.message };
    if (Array.isArray(message.annotations) && message.annotations.length === 0) delete message.annotations;
    return { ...c, message };
  });
}

/** The token counts of a usage object (the entry keeps counts and the cached/reasoning details). */
function counts(u) {
  return {
    prompt_tokens: u.prompt_tokens,
    completion_tokens: u.completion_tokens,
    total_tokens: u.total_tokens,
    cached_tokens: u.prompt_tokens_details?.cached_tokens ?? 0,
    reasoning_tokens: u.completion_tokens_details?.reasoning_tokens ?? 0,
  };
}

const reply = (text, name = 'openai') => `mock(${name}) reply to: ${text}`;

function data(frame) {
  assert.ok(frame.startsWith('data: '), `SSE data frame: ${frame}`);
  const d = frame.slice(6);
  return d === '[DONE]' ? d : JSON.parse(d);
}

function sseText(frames) {
  return frames
    .map(data)
    .filter((d) => d !== '[DONE]')
    .map((d) => d.choices?.[0]?.delta?.content ?? '')
    .join('');
}

function assertBadHeader(res, param) {
  assert.equal(res.status, 400, res.text);
  assert.equal(res.json?.error?.type, 'invalid_request_error', res.text);
  assert.equal(res.json?.error?.param, param, res.text);
}

// ---------------------------------------------------------- 1. opt-in, C5

describe('opt-in mode (the default)', () => {
  test('temperature 0 with x-tollgate-cache: exact → MISS then HIT from one upstream request; fresh id, same choices and usage', async () => {
    const body = chatBody(uniq('opt in please'));
    const miss = await sdkChat(clientA, body, EXACT);
    assert.equal(miss.cache, 'MISS');
    assert.equal(miss.age, null, 'no age on a miss');
    assert.equal(miss.data.choices[0].message.content, reply(body.messages[0].content));
    assert.equal(upstream(), 1);
    await ledgerRow(miss.requestId);

    const { hit, misses } = await untilHit(() => sdkChat(clientA, body, EXACT));
    assert.equal(upstream(), 1 + misses, 'the HIT did not reach the provider');
    assert.match(hit.age, /^\d+$/, 'x-tollgate-cache-age on a hit');
    assert.ok(Number(hit.age) < 60, hit.age);
    assert.equal(hit.data.object, 'chat.completion');
    assert.match(hit.data.id, /^chatcmpl-/);
    assert.notEqual(hit.data.id, miss.data.id, 'a hit gets its own id');
    assert.notEqual(hit.requestId, miss.requestId);
    assert.equal(hit.data.model, miss.data.model);
    assert.deepEqual(comparableChoices(hit.data.choices), comparableChoices(miss.data.choices));
    assert.deepEqual(counts(hit.data.usage), counts(miss.data.usage));
    assert.equal(hit.headers.get('x-tollgate-provider'), 'openai');
  });

  test('without the header: no cache header, every request goes upstream', async () => {
    const body = chatBody(uniq('no header'));
    const first = await sdkChat(clientA, body);
    await ledgerRow(first.requestId);
    const second = await sdkChat(clientA, body);
    assert.equal(first.cache, null);
    assert.equal(second.cache, null);
    assert.equal(second.age, null);
    assert.equal(upstream(), 2);
    const row = await ledgerRow(second.requestId);
    assert.equal(row.cache_status, null);
  });

  test('C5: the MISS row says "miss", the HIT row says "hit", costs 0 and saved what the miss cost, with no upstream attempt; one row each', async () => {
    const body = chatBody(uniq('ledger me'));
    const miss = await sdkChat(clientA, body, EXACT);
    const missRow = await ledgerRow(miss.requestId);
    const { hit, misses } = await untilHit(() => sdkChat(clientA, body, EXACT));
    assert.equal(upstream(), 1 + misses);
    const hitRow = await ledgerRow(hit.requestId);

    assert.equal(missRow.cache_status, 'miss');
    assert.equal(missRow.attempts.length, 1);
    assert.equal(hitRow.cache_status, 'hit');
    assert.equal(hitRow.status, 200);
    assert.equal(hitRow.outcome, 'ok');
    assert.deepEqual(hitRow.attempts, [], 'a hit makes no upstream attempt');
    assert.equal(hitRow.provider, 'openai');
    // The tokens the hit would have cost (saved), as the provider reported them.
    assert.equal(hitRow.prompt_tokens, miss.data.usage.prompt_tokens);
    assert.equal(hitRow.completion_tokens, miss.data.usage.completion_tokens);
    // A hit costs nothing; what it saved is what the miss cost.
    assert.ok(missRow.cost_micros > 0, `the miss is priced: ${JSON.stringify(missRow)}`);
    assert.equal(missRow.saved_micros, null);
    assert.equal(hitRow.cost_micros, 0);
    assert.equal(hitRow.saved_micros, missRow.cost_micros);

    const rows = await stack.ledger({ keyId: keyA.id });
    assert.equal(rows.filter((r) => r.request_id === miss.requestId).length, 1);
    assert.equal(rows.filter((r) => r.request_id === hit.requestId).length, 1);
  });
});

// ------------------------------------------------------------ 2. C1 tenants

describe('C1: entries are per virtual key', () => {
  test('same body from keys A and B → two MISSes, two upstream requests; A repeats → HIT', async () => {
    const body = chatBody(uniq('tenant secret'));
    const a = await sdkChat(clientA, body, EXACT);
    assert.equal(a.cache, 'MISS');
    await ledgerRow(a.requestId);
    // A's entry exists now (wait for it through A), so B's MISS is the key's doing.
    const { misses } = await untilHit(() => sdkChat(clientA, body, EXACT));
    assert.equal(upstream(), 1 + misses);

    const b = await sdkChat(clientB, body, EXACT);
    assert.equal(b.cache, 'MISS', "key B must not see key A's entry");
    assert.equal(upstream(), 2 + misses);
    await ledgerRow(b.requestId);
    const again = await untilHit(() => sdkChat(clientB, body, EXACT));
    const a2 = await sdkChat(clientA, body, EXACT);
    assert.equal(a2.cache, 'HIT');
    assert.equal(upstream(), 2 + misses + again.misses);
  });
});

// -------------------------------------------------------- 3. C2 key content

describe('C2: what is cacheable and what is in the key', () => {
  test('no temperature and no seed → SKIP, never HIT; so are temperature 0.7 and n: 2', async () => {
    const noTemp = { model: MODEL, messages: [{ role: 'user', content: uniq('random please') }] };
    const first = await sdkChat(clientA, noTemp, EXACT);
    await ledgerRow(first.requestId);
    await sleep(200);
    const second = await sdkChat(clientA, noTemp, EXACT);
    assert.equal(first.cache, 'SKIP');
    assert.equal(second.cache, 'SKIP');
    assert.equal(upstream(), 2);
    assert.equal((await ledgerRow(second.requestId)).cache_status, 'skip');

    for (const extra of [{ temperature: 0.7 }, { temperature: 0, n: 2 }, { temperature: null }]) {
      const body = { ...noTemp, messages: [{ role: 'user', content: uniq('skip') }], ...extra };
      const r1 = await sdkChat(clientA, body, EXACT);
      await ledgerRow(r1.requestId);
      const r2 = await sdkChat(clientA, body, EXACT);
      assert.equal(r1.cache, 'SKIP', JSON.stringify(extra));
      assert.equal(r2.cache, 'SKIP', JSON.stringify(extra));
    }
    assert.equal(upstream(), 8);
  });

  test('a seed alone makes a request cacheable', async () => {
    const body = { model: MODEL, messages: [{ role: 'user', content: uniq('seeded') }], seed: 42 };
    const miss = await sdkChat(clientA, body, EXACT);
    assert.equal(miss.cache, 'MISS');
    await ledgerRow(miss.requestId);
    const { misses } = await untilHit(() => sdkChat(clientA, body, EXACT));
    assert.equal(upstream(), 1 + misses);
  });

  test('changing max_tokens, tools, tool_choice, response_format, stop, seed, top_p, the system prompt or the model → MISS; user, stream_options, key order → HIT', async () => {
    const user = uniq('key fields');
    const system = 'You answer briefly.';
    const base = {
      model: MODEL,
      messages: [
        { role: 'system', content: system },
        { role: 'user', content: user },
      ],
      temperature: 0,
      max_tokens: 50,
    };
    const miss = await sdkChat(clientA, base, EXACT);
    assert.equal(miss.cache, 'MISS');
    await ledgerRow(miss.requestId);
    const { misses } = await untilHit(() => sdkChat(clientA, base, EXACT));
    let expected = 1 + misses;
    assert.equal(upstream(), expected);

    const tool = { type: 'function', function: { name: 'lookup', parameters: { type: 'object', properties: { q: { type: 'string' } } } } };
    const variants = {
      max_tokens: { ...base, max_tokens: 51 },
      tools: { ...base, tools: [tool] },
      tool_choice: { ...base, tools: [tool], tool_choice: 'required' },
      response_format: { ...base, response_format: { type: 'json_object' } },
      stop: { ...base, stop: ['zzz'] },
      seed: { ...base, seed: 7 },
      top_p: { ...base, top_p: 0.5 },
      system_prompt: { ...base, messages: [{ role: 'system', content: 'You answer at length.' }, base.messages[1]] },
      model: { ...base, model: 'openai/gpt-4o' },
    };
    for (const [name, body] of Object.entries(variants)) {
      const r = await sdkChat(clientA, body, EXACT);
      expected++;
      assert.equal(r.cache, 'MISS', `changing ${name} must change the key`);
      assert.equal(upstream(), expected, `changing ${name} reaches the provider`);
    }
    // temperature: with a seed both 0 and 0.9 are cacheable, and they are different entries.
    const seeded = await untilHit(() => sdkChat(clientA, variants.seed, EXACT));
    expected += seeded.misses;
    const hotter = await sdkChat(clientA, { ...variants.seed, temperature: 0.9 }, EXACT);
    expected++;
    assert.equal(hotter.cache, 'MISS', 'changing temperature must change the key');
    assert.equal(upstream(), expected);

    const reordered = {
      max_tokens: 50,
      temperature: 0,
      messages: [
        { content: system, role: 'system' },
        { content: user, role: 'user' },
      ],
      model: MODEL,
    };
    const same = {
      user: { ...base, user: 'end-user-17' },
      stream_options: { ...base, stream_options: { include_usage: true } },
      key_order: reordered,
    };
    for (const [name, body] of Object.entries(same)) {
      const r = await post(CHAT, body, { headers: EXACT });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.cache, 'HIT', `changing only ${name} must keep the key`);
      assert.equal(r.json.choices[0].message.content, reply(user));
    }
    assert.equal(upstream(), expected, 'the HITs did not reach the provider');
  });

  test('a tool-call answer is replayed with the same tool call', async () => {
    const tool = { type: 'function', function: { name: 'search', parameters: { type: 'object', properties: {} } } };
    const body = { ...chatBody(uniq('call a tool')), tools: [tool], tool_choice: 'required' };
    const miss = await sdkChat(clientA, body, EXACT);
    assert.equal(miss.data.choices[0].finish_reason, 'tool_calls');
    await ledgerRow(miss.requestId);
    const { hit, misses } = await untilHit(() => sdkChat(clientA, body, EXACT));
    assert.equal(upstream(), 1 + misses);
    assert.equal(hit.data.choices[0].finish_reason, 'tool_calls');
    assert.deepEqual(hit.data.choices[0].message.tool_calls, miss.data.choices[0].message.tool_calls);
  });
});

// ----------------------------------------------------------------- 4. streams

describe('streams', () => {
  test('a streamed MISS is cached once it completes; the same request non-streamed → HIT with the same content', async () => {
    const body = chatBody(uniq('stream then json'));
    const miss = await sdkStream(clientA, body, EXACT);
    assert.equal(miss.cache, 'MISS');
    assert.equal(miss.text, reply(body.messages[0].content));
    assert.equal(upstream(), 1);
    const streamedUsage = openai().requests()[0].response.usage;
    assert.ok(streamedUsage, 'the gateway asked the provider for usage');
    // In the stream path the entry is written before the ledger row.
    await ledgerRow(miss.requestId);

    const { hit, misses } = await untilHit(() => sdkChat(clientA, body, EXACT));
    assert.equal(upstream(), 1 + misses);
    assert.equal(hit.data.choices[0].message.content, miss.text);
    assert.equal(hit.data.choices[0].message.role, 'assistant');
    assert.equal(hit.data.choices[0].finish_reason, 'stop');
    assert.deepEqual(counts(hit.data.usage), counts(streamedUsage));
  });

  test('a non-streamed MISS → a streamed request HITs as proper SSE (role, content, finish, [DONE]; usage only when asked)', async () => {
    const body = chatBody(uniq('json then stream please'));
    const miss = await sdkChat(clientA, body, EXACT);
    assert.equal(miss.cache, 'MISS');
    await ledgerRow(miss.requestId);
    const { hit, misses } = await untilHit(() => postStream(body, { headers: EXACT }));
    assert.equal(upstream(), 1 + misses);

    assert.equal(hit.status, 200);
    assert.match(hit.headers.get('content-type'), /^text\/event-stream/);
    assert.match(hit.age, /^\d+$/);
    assert.equal(hit.rest, '', 'the stream ends on a frame boundary');
    const frames = hit.frames;
    assert.equal(frames[frames.length - 1], 'data: [DONE]');
    const chunks = frames.slice(0, -1).map(data);
    for (const c of chunks) {
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(c.model, miss.data.model);
      assert.ok(!('usage' in c), `no usage member when not asked: ${JSON.stringify(c)}`);
    }
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one id for the whole stream');
    assert.notEqual(chunks[0].id, miss.data.id);
    assert.equal(chunks[0].choices[0].delta.role, 'assistant', 'first chunk carries the role');
    const last = chunks[chunks.length - 1];
    assert.equal(last.choices[0].finish_reason, 'stop');
    assert.ok(chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null), 'only the last chunk finishes');
    assert.equal(sseText(frames), miss.data.choices[0].message.content);

    // The SDK parses the replay into the same text, with the usage chunk when asked for.
    const plain = await sdkStream(clientA, body, EXACT);
    assert.equal(plain.cache, 'HIT');
    assert.equal(plain.text, miss.data.choices[0].message.content);
    assert.ok(plain.chunks.every((c) => !c.usage), 'no usage chunk without include_usage');

    const withUsage = await sdkStream(clientA, { ...body, stream_options: { include_usage: true } }, EXACT);
    assert.equal(withUsage.cache, 'HIT', 'stream_options is not in the key');
    assert.equal(withUsage.text, miss.data.choices[0].message.content);
    const usageChunks = withUsage.chunks.filter((c) => c.usage);
    assert.equal(usageChunks.length, 1, 'exactly one usage chunk');
    const u = usageChunks[0];
    assert.equal(withUsage.chunks[withUsage.chunks.length - 1], u, 'the usage chunk is the last one');
    assert.deepEqual(u.choices, []);
    assert.deepEqual(counts(u.usage), counts(miss.data.usage));
    assert.ok(
      withUsage.chunks.slice(0, -1).every((c) => 'usage' in c && c.usage === null),
      'every other chunk carries "usage": null (OpenAI\'s shape)',
    );
    assert.equal(upstream(), 1 + misses, 'no replay reached the provider');
  });
});

// -------------------------------------------------- 5. C4 incomplete answers

describe('C4: only complete, successful answers are stored', () => {
  /** After the failed first request: the next identical one MISSes upstream, and once complete it is cached. */
  async function assertNotCachedThenCacheable(body, stream, failedRequestId) {
    await ledgerRow(failedRequestId);
    await sleep(300); // give any (wrong) post-response cache write time to land
    const send = () => (stream ? postStream(body, { headers: EXACT }) : post(CHAT, body, { headers: EXACT }));
    const next = await send();
    assert.equal(next.status, 200);
    assert.equal(next.cache, 'MISS', 'the failed answer was not cached');
    assert.equal(upstream(), 2, 'the next identical request reached the provider');
    // And the request itself is cacheable: the complete answer is stored.
    await ledgerRow(next.requestId);
    const { misses } = await untilHit(send);
    assert.equal(upstream(), 2 + misses);
  }

  test('a stream cut after 3 chunks (200, no finish/usage/[DONE]) is not cached', async () => {
    const body = chatBody(uniq('cut me off in the middle of a long sentence'));
    openai().enqueue({ cutAfterChunks: 3 });
    const cut = await postStream(body, { headers: EXACT });
    assert.equal(cut.status, 200);
    assert.equal(cut.cache, 'MISS');
    assert.notEqual(cut.frames[cut.frames.length - 1], 'data: [DONE]');
    assert.equal((await ledgerRow(cut.requestId)).outcome, 'upstream_truncated');
    await assertNotCachedThenCacheable(body, true, cut.requestId);
  });

  test('a stream whose first frame is an error (→ 502) is not cached', async () => {
    const body = chatBody(uniq('error frame first'));
    openai().enqueue({ errorFrame: true });
    const bad = await postStream(body, { headers: EXACT });
    assert.equal(bad.status, 502);
    await assertNotCachedThenCacheable(body, true, bad.requestId);
  });

  test('an upstream 500 (→ 502 upstream_error) is not cached', async () => {
    const body = chatBody(uniq('server error'));
    openai().enqueue({ status: 500 });
    const bad = await post(CHAT, body, { headers: EXACT });
    assert.equal(bad.status, 502, bad.text);
    assert.equal(bad.json.error.code, 'upstream_error');
    await assertNotCachedThenCacheable(body, false, bad.requestId);
  });

  test('a stream the client aborts is not cached', async () => {
    const body = chatBody(uniq('a b c d e f g h i j k l'));
    openai().enqueue({ chunkDelayMs: 150 });
    const controller = new AbortController();
    const res = await fetch(stack.url + CHAT, {
      method: 'POST',
      signal: controller.signal,
      headers: { authorization: `Bearer ${keyA.key}`, 'content-type': 'application/json', ...EXACT },
      body: JSON.stringify({ ...body, stream: true }),
    });
    assert.equal(res.headers.get('x-tollgate-cache'), 'MISS');
    const id = res.headers.get('x-tollgate-request-id');
    const reader = res.body.getReader();
    await reader.read();
    await reader.read();
    controller.abort();
    await reader.read().catch(() => {});
    const row = await ledgerRow(id, stack, 15_000);
    assert.equal(row.outcome, 'client_aborted');
    await assertNotCachedThenCacheable(body, true, id);
  });
});

// ---------------------------------------------------------------- 7. controls

describe('request controls', () => {
  test('refresh → REFRESH, goes upstream, and the next exact request HITs the refreshed entry', async () => {
    const body = chatBody(uniq('refresh me'));
    const miss = await sdkChat(clientA, body, EXACT);
    await ledgerRow(miss.requestId);
    const first = await untilHit(() => sdkChat(clientA, body, EXACT));
    assert.equal(first.hit.data.choices[0].message.content, reply(body.messages[0].content));
    let expected = 1 + first.misses;
    assert.equal(upstream(), expected);

    // The provider now answers differently, so the refreshed entry is recognisable.
    openai().enqueue({
      body: {
        id: 'chatcmpl-refreshed',
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: 'gpt-4o-mini',
        choices: [{ index: 0, message: { role: 'assistant', content: 'the refreshed answer', refusal: null }, logprobs: null, finish_reason: 'stop' }],
        usage: { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 },
      },
    });
    const refreshed = await sdkChat(clientA, body, { 'x-tollgate-cache': 'refresh' });
    expected++;
    assert.equal(refreshed.cache, 'REFRESH');
    assert.equal(refreshed.data.choices[0].message.content, 'the refreshed answer');
    assert.equal(upstream(), expected, 'refresh skips the read and goes upstream');
    assert.equal((await ledgerRow(refreshed.requestId)).cache_status, 'refresh');

    const until = Date.now() + 3000;
    let hit;
    for (;;) {
      hit = await sdkChat(clientA, body, EXACT);
      assert.equal(hit.cache, 'HIT');
      if (hit.data.choices[0].message.content === 'the refreshed answer' || Date.now() > until) break;
      await sleep(50);
    }
    assert.equal(hit.data.choices[0].message.content, 'the refreshed answer', 'the refresh replaced the entry');
    assert.deepEqual(counts(hit.data.usage), counts({ prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 }));
    assert.equal(upstream(), expected);
  });

  test('x-tollgate-cache: maybe → 400, nothing sent upstream', async () => {
    const r = await post(CHAT, chatBody(uniq('bad control')), { headers: { 'x-tollgate-cache': 'maybe' } });
    assertBadHeader(r, 'x-tollgate-cache');
    assert.equal(upstream(), 0);
  });

  test('x-tollgate-cache-ttl: 0 or abc → 400; 120 → accepted', async () => {
    for (const ttl of ['0', 'abc', '-5', '1.5']) {
      const r = await post(CHAT, chatBody(uniq('bad ttl')), { headers: { ...EXACT, 'x-tollgate-cache-ttl': ttl } });
      assertBadHeader(r, 'x-tollgate-cache-ttl');
    }
    assert.equal(upstream(), 0);
    const body = chatBody(uniq('good ttl'));
    const ok = await post(CHAT, body, { headers: { ...EXACT, 'x-tollgate-cache-ttl': '120' } });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.cache, 'MISS');
    await ledgerRow(ok.requestId);
    const { misses } = await untilHit(() => post(CHAT, body, { headers: EXACT }));
    assert.equal(upstream(), 1 + misses);
  });

  test('namespaces a and b (and none) are separate entries; a bad namespace → 400', async () => {
    const body = chatBody(uniq('namespaced'));
    const ns = (n) => (n ? { ...EXACT, 'x-tollgate-cache-namespace': n } : EXACT);
    const a = await sdkChat(clientA, body, ns('a'));
    assert.equal(a.cache, 'MISS');
    await ledgerRow(a.requestId);
    const aHit = await untilHit(() => sdkChat(clientA, body, ns('a')));
    let expected = 1 + aHit.misses;
    assert.equal(upstream(), expected);

    const b = await sdkChat(clientA, body, ns('b'));
    assert.equal(b.cache, 'MISS', 'namespace b does not see a');
    const none = await sdkChat(clientA, body, ns(null));
    assert.equal(none.cache, 'MISS', 'no namespace does not see a');
    expected += 2;
    assert.equal(upstream(), expected);
    await ledgerRow(b.requestId);
    const bHit = await untilHit(() => sdkChat(clientA, body, ns('b')));
    expected += bHit.misses;
    assert.equal((await sdkChat(clientA, body, ns('a'))).cache, 'HIT');
    assert.equal(upstream(), expected);

    // A namespace never crosses tenants: key B with namespace a misses.
    assert.equal((await sdkChat(clientB, body, ns('a'))).cache, 'MISS');
    assert.equal(upstream(), expected + 1);

    const bad = await post(CHAT, body, { headers: ns('no spaces allowed') });
    assertBadHeader(bad, 'x-tollgate-cache-namespace');
    assert.equal(upstream(), expected + 1);
  });
});

// ------------------------------------------------------------- 8. mode "on"

describe('mode = "on"', () => {
  test('a cacheable request is cached without any header', async () => {
    const body = chatBody(uniq('always on'));
    const miss = await sdkChat(clientOn, body);
    assert.equal(miss.cache, 'MISS');
    await ledgerRow(miss.requestId, onStack);
    const { hit, misses } = await untilHit(() => sdkChat(clientOn, body));
    assert.equal(upstream(onStack), 1 + misses);
    assert.equal(hit.data.choices[0].message.content, miss.data.choices[0].message.content);
    assert.equal((await ledgerRow(hit.requestId, onStack)).cache_status, 'hit');
  });

  test('a request without temperature is SKIPped even in mode on', async () => {
    const body = { model: MODEL, messages: [{ role: 'user', content: uniq('on but random') }] };
    const r1 = await sdkChat(clientOn, body);
    await ledgerRow(r1.requestId, onStack);
    const r2 = await sdkChat(clientOn, body);
    assert.equal(r1.cache, 'SKIP');
    assert.equal(r2.cache, 'SKIP');
    assert.equal(upstream(onStack), 2);
  });

  test('x-tollgate-cache: off → no cache at all (no header, every request upstream, null in the ledger)', async () => {
    const body = chatBody(uniq('on but off'));
    const off = { 'x-tollgate-cache': 'off' };
    const r1 = await sdkChat(clientOn, body, off);
    await ledgerRow(r1.requestId, onStack);
    await sleep(200);
    const r2 = await sdkChat(clientOn, body, off);
    assert.equal(r1.cache, null);
    assert.equal(r2.cache, null);
    assert.equal(upstream(onStack), 2);
    assert.equal((await ledgerRow(r2.requestId, onStack)).cache_status, null);
    // Nor was anything written for a later request without the header.
    const r3 = await sdkChat(clientOn, body);
    assert.equal(r3.cache, 'MISS');
    assert.equal(upstream(onStack), 3);
  });

  test('an answer larger than max_entry_bytes (4096) is not stored, streamed or not', async () => {
    // The mock echoes the prompt: ~800 words make a ~7 KB answer.
    const long = `${uniq('long')} ${Array.from({ length: 800 }, (_, i) => `w${i}`).join(' ')}`;
    for (const stream of [false, true]) {
      const body = chatBody(`${long} ${stream}`);
      const send = () => (stream ? postStream(body, { s: onStack, apiKey: keyOn.key }) : post(CHAT, body, { s: onStack, apiKey: keyOn.key }));
      const first = await send();
      assert.equal(first.status, 200);
      assert.equal(first.cache, 'MISS');
      await ledgerRow(first.requestId, onStack);
      await sleep(300);
      const second = await send();
      assert.equal(second.cache, 'MISS', `too large to store (stream: ${stream})`);
    }
    assert.equal(upstream(onStack), 4);
  });
});

// --------------------------------------------------------------- 9. embeddings

describe('embeddings', () => {
  test('same input twice → HIT from one upstream request; float MISS replays as base64 (SDK default) and float with the same vectors', async () => {
    const input = [uniq('embed me'), 'and me too'];
    const miss = await sdkEmbed(clientA, { model: EMBED_MODEL, input, encoding_format: 'float' }, EXACT);
    assert.equal(miss.cache, 'MISS');
    assert.equal(miss.data.data.length, 2);
    await ledgerRow(miss.requestId);
    const f32 = (v) => v.map(Math.fround);

    // The SDK asks for base64 by default and decodes it.
    const { hit, misses } = await untilHit(() => sdkEmbed(clientA, { model: EMBED_MODEL, input }, EXACT));
    assert.equal(upstream(), 1 + misses);
    assert.equal(hit.data.data.length, 2);
    for (const i of [0, 1]) {
      assert.equal(hit.data.data[i].index, i);
      assert.deepEqual(hit.data.data[i].embedding, f32(miss.data.data[i].embedding), `vector ${i}`);
    }
    assert.equal(hit.data.usage.prompt_tokens, miss.data.usage.prompt_tokens);
    assert.match(hit.age, /^\d+$/);

    const floatHit = await post(EMBED, { model: EMBED_MODEL, input, encoding_format: 'float' }, { headers: EXACT });
    assert.equal(floatHit.cache, 'HIT');
    for (const i of [0, 1]) assert.deepEqual(f32(floatHit.json.data[i].embedding), f32(miss.data.data[i].embedding));
    assert.equal(upstream(), 1 + misses);

    // Different input → its own entry.
    const other = await sdkEmbed(clientA, { model: EMBED_MODEL, input: [input[0]] }, EXACT);
    assert.equal(other.cache, 'MISS');
    assert.equal(upstream(), 2 + misses);
  });

  test('a base64 MISS is stored too and replays as floats', async () => {
    const input = uniq('embed base64 first');
    const miss = await sdkEmbed(clientA, { model: EMBED_MODEL, input }, EXACT);
    assert.equal(miss.cache, 'MISS');
    await ledgerRow(miss.requestId);
    const { hit, misses } = await untilHit(() => sdkEmbed(clientA, { model: EMBED_MODEL, input, encoding_format: 'float' }, EXACT));
    assert.equal(upstream(), 1 + misses);
    assert.deepEqual(hit.data.data[0].embedding.map(Math.fround), miss.data.data[0].embedding);
  });
});

// ------------------------------------------------------------------ 10. routes

describe('routes', () => {
  test('a fallback route whose first link fails (500) is cached under the route; the repeat HITs without touching either mock', async () => {
    // The first link fails for the whole test, so any repeat that MISSes takes the same path.
    openai().enqueue({ match: { model: 'cfb' }, status: 500, times: -1 });
    const body = { ...chatBody(uniq('route me')), model: ROUTE };
    const miss = await sdkChat(clientA, body, EXACT);
    assert.equal(miss.cache, 'MISS');
    assert.equal(miss.headers.get('x-tollgate-provider'), 'groq');
    assert.equal(miss.data.choices[0].message.content, reply(body.messages[0].content, 'groq'));
    assert.equal(openai().requests().length, 1);
    assert.equal(groq().requests().length, 1);
    await ledgerRow(miss.requestId);

    const { hit, misses } = await untilHit(() => sdkChat(clientA, body, EXACT));
    assert.equal(openai().requests().length, 1 + misses, 'the HIT did not touch the first link');
    assert.equal(groq().requests().length, 1 + misses, 'nor the second');
    assert.equal(hit.headers.get('x-tollgate-provider'), 'groq', 'the entry remembers who answered');
    assert.equal(hit.data.choices[0].message.content, miss.data.choices[0].message.content);
    const row = await ledgerRow(hit.requestId);
    assert.equal(row.cache_status, 'hit');
    assert.equal(row.provider, 'groq');
    assert.deepEqual(row.attempts, []);

    // The route's entry is not the direct model's: groq/cfb asked directly misses.
    const direct = await sdkChat(clientA, { ...body, model: 'groq/cfb' }, EXACT);
    assert.equal(direct.cache, 'MISS');
    assert.equal(groq().requests().length, 2 + misses);
  });

  // Link `params` override the client's body before it goes upstream
  // (proxy.rs `walk`), so they change the output and must be in the key and
  // in the determinism check. Shown with inline routes (x-tollgate-config);
  // the same holds for a configured route whose params an operator changes.
  const inlineRoute = (params) => JSON.stringify({ strategy: 'fallback', targets: [{ model: MODEL, params }] });

  test(
    'C2: two routes to the same model that differ only in link params (max_tokens 2 vs 50) are separate entries',
    async () => {
      const inlineKey = await stack.createKey({ name: 'cache-inline-params', allow_inline_config: true });
      const body = chatBody(uniq('link params change the answer'));
      const send = (params) => post(CHAT, body, { apiKey: inlineKey.key, headers: { ...EXACT, 'x-tollgate-config': inlineRoute(params) } });
      const short = await send({ max_tokens: 2 });
      assert.equal(short.status, 200, short.text);
      assert.equal(short.cache, 'MISS');
      assert.equal(short.json.choices[0].message.content, 'mock(openai) reply');
      assert.equal(short.json.choices[0].finish_reason, 'length');
      await ledgerRow(short.requestId);
      const { misses } = await untilHit(() => send({ max_tokens: 2 }));
      assert.equal(upstream(), 1 + misses);

      const long = await send({ max_tokens: 50 });
      assert.equal(long.cache, 'MISS', 'other link params → another entry');
      assert.equal(long.json.choices[0].message.content, reply(body.messages[0].content), 'not the 2-token answer');
      assert.equal(upstream(), 2 + misses);
    },
  );

  test(
    'C2: a link that forces temperature 1 makes a temperature-0 request nondeterministic → SKIP',
    async () => {
      const inlineKey = await stack.createKey({ name: 'cache-inline-temp', allow_inline_config: true });
      const body = chatBody(uniq('hot link'));
      const r = await post(CHAT, body, { apiKey: inlineKey.key, headers: { ...EXACT, 'x-tollgate-config': inlineRoute({ temperature: 1 }) } });
      assert.equal(r.status, 200, r.text);
      assert.equal(openai().requests()[0].json.temperature, 1, 'the provider was asked for temperature 1');
      assert.equal(r.cache, 'SKIP', 'what the provider generated at temperature 1 must not be cached');
    },
  );
});
