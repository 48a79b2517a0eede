// Routing and resilience end to end (issue 4): fallback chains, per-link
// TTFB / idle timeouts, retries with Retry-After inside one deadline, the
// attempt cap, weighted load balancing, conditional routes, inline routes,
// per-link params, and honest streams (the commit point is the first byte sent
// to the client: before it an upstream failure falls back invisibly, after it
// the stream ends with an explicit error event and no [DONE]).
//
// One stack: the built Worker under `wrangler dev` in front of two mock
// providers speaking OpenAI's wire format, `openai` and `groq`. Every
// behaviour has its own route whose links use their own upstream model names,
// so a fault queued with `match: { model }` hits exactly the intended link.
// Each test starts from reset mocks (no recordings, no queued faults).

import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import OpenAI from 'openai';

import { readSse, startStack } from './harness.mjs';

const OPENAI_KEY = 'sk-test-openai-routing-00000000000000';
const GROQ_KEY = 'gsk-test-groq-routing-000000000000000';
const CHAT = '/v1/chat/completions';
const HELLO = [{ role: 'user', content: 'route me somewhere nice' }];
// 30 words: the mock's reply ("mock(x) reply to: " + the prompt) has 33 content chunks.
const LONG_PROMPT = Array.from({ length: 30 }, (_, i) => `word${i + 1}`).join(' ');

const RESILIENCE = {
  deadline_ms: 5000,
  max_attempts: 3,
  // Retry-After up to 2 s is worth waiting for; longer → next link at once.
  retry_after_cap_ms: 2000,
  backoff_base_ms: 100,
  backoff_max_ms: 400,
  // 5 consecutive failures open a provider/model's circuit for 1.5 s, then one probe.
  circuit_failures: 5,
  circuit_cooldown_ms: 1500,
};

/** `fallback` route over openai/<name> then groq/<name>; `first` and `second` add link fields. */
function chain(name, first = {}, second = {}, extra = {}) {
  return {
    strategy: 'fallback',
    targets: [
      { model: `openai/${name}`, ...first },
      { model: `groq/${name}`, ...second },
    ],
    ...extra,
  };
}

const ROUTES = {
  hung: chain('hung', { ttfb_ms: 2000 }),
  'hung-stream': chain('hung-stream', { ttfb_ms: 2000 }),
  // Each test gets its own links: the circuit breaker counts failures per provider/model.
  'ra-1': chain('ra-1', { retries: 1 }),
  'ra-86400': chain('ra-86400', { retries: 1 }),
  'ra-all': chain('ra-all', { retries: 1 }),
  auth: chain('auth', { retries: 2 }),
  'auth-listed': chain('auth-listed', { retries: 2 }, {}, { on_status_codes: [401] }),
  ef: chain('ef'),
  cut: chain('cut'),
  'cut-usage': chain('cut-usage'),
  idle: chain('idle', { idle_ms: 500 }),
  amp: chain('amp', { retries: 5 }, { retries: 5 }),
  'amp-msg': chain('amp-msg', { retries: 5 }, { retries: 5 }),
  brk: chain('brk'),
  l500: chain('l500'),
  lb: {
    strategy: 'loadbalance',
    targets: [
      { model: 'openai/lb', weight: 3 },
      { model: 'groq/lb', weight: 1 },
    ],
  },
  cond: {
    strategy: 'conditional',
    targets: [{ model: 'groq/cond', when: { 'metadata.plan': 'free' } }, { model: 'openai/cond' }],
  },
  tuned: { strategy: 'fallback', targets: [{ model: 'openai/tuned', params: { temperature: 0, seed: 7 } }] },
};

let stack;
let key;
let client;

before(async () => {
  stack = await startStack({
    providers: { openai: { apiKey: OPENAI_KEY }, groq: { apiKey: GROQ_KEY } },
    editConfig(gateway) {
      gateway.routes = ROUTES;
      gateway.resilience = RESILIENCE;
    },
  });
  key = await stack.createKey({ name: 'routing' });
  client = clientFor(key.key);
});

after(async () => {
  await stack?.stop();
});

beforeEach(() => {
  stack.mocks.openai.reset();
  stack.mocks.groq.reset();
});

// ------------------------------------------------------------------ helpers

function clientFor(apiKey) {
  return new OpenAI({ apiKey, baseURL: `${stack.url}/v1`, maxRetries: 0, timeout: 30_000 });
}

const openai = () => stack.mocks.openai;
const groq = () => stack.mocks.groq;

/** Raw chat request; resolves after the whole body is read. */
async function chat(body, { headers = {}, apiKey = key.key } = {}) {
  const t0 = Date.now();
  const r = await fetch(stack.url + CHAT, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}`, ...headers },
    body: JSON.stringify(body),
  });
  const headersAt = Date.now();
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return {
    status: r.status,
    headers: r.headers,
    text,
    json,
    elapsed: headersAt - t0,
    requestId: r.headers.get('x-tollgate-request-id'),
  };
}

/** Streamed chat request: every SSE frame with the time it arrived. */
async function chatStream(body, { headers = {}, apiKey = key.key } = {}) {
  const t0 = Date.now();
  const r = await fetch(stack.url + CHAT, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}`, ...headers },
    body: JSON.stringify({ ...body, stream: true }),
  });
  const headersAt = Date.now();
  if (!(r.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    const text = await r.text();
    assert.fail(`expected a stream, got ${r.status} ${r.headers.get('content-type')}: ${text}`);
  }
  const times = [];
  const { frames, rest } = await readSse(r, () => times.push(Date.now()));
  assert.equal(rest.trim(), '', 'no partial frame at the end of the stream');
  const events = frames.map((f, i) => {
    assert.ok(f.startsWith('data: '), `SSE data frame: ${f}`);
    const data = f.slice(6);
    return { at: times[i], data: data === '[DONE]' ? '[DONE]' : JSON.parse(data) };
  });
  return { status: r.status, headers: r.headers, events, t0, elapsed: headersAt - t0, requestId: r.headers.get('x-tollgate-request-id') };
}

const isRole = (e) => e.data !== '[DONE]' && e.data.choices?.[0]?.delta?.role !== undefined;
const isDone = (e) => e.data === '[DONE]';
const isError = (e) => e.data !== '[DONE]' && e.data.error !== undefined;
const contentOf = (events) =>
  events
    .filter((e) => !isDone(e) && !isError(e))
    .map((e) => e.data.choices?.[0]?.delta?.content ?? '')
    .join('');
const contentChunks = (events) => events.filter((e) => !isDone(e) && !isError(e) && e.data.choices?.[0]?.delta?.content);

const reply = (provider, text) => `mock(${provider}) reply to: ${text}`;

/** Asserts OpenAI's error body shape and the given status / fields. */
function assertError(res, status, { code, param, type } = {}, context = '') {
  const where = `${context}: ${res.status} ${res.text}`;
  assert.equal(res.status, status, where);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, where);
  assert.deepEqual(Object.keys(res.json ?? {}), ['error'], where);
  const e = res.json.error;
  assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'param', 'type'], where);
  if (code !== undefined) assert.equal(e.code, code, where);
  if (param !== undefined) assert.equal(e.param, param, where);
  if (type !== undefined) assert.equal(e.type, type, where);
  return e;
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `fn` until it returns a truthy value; returns it, or the last value after the timeout. */
async function waitFor(fn, timeoutMs = 5000, everyMs = 100) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > until) return v;
    await sleep(everyMs);
  }
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

/**
 * Watches the mock's HTTP server for responses whose connection closed before
 * the mock finished them — the gateway hanging up on a hung upstream.
 */
function watchCloses(mock) {
  const closes = [];
  const onRequest = (req, res) => {
    res.once('close', () => closes.push({ url: req.url, at: Date.now(), finished: res.writableFinished }));
  };
  mock.server.on('request', onRequest);
  return { closes, stop: () => mock.server.off('request', onRequest) };
}

/** Waits until the mock recorded how request `seq` ended (hung handlers finish late). */
async function outcomeOf(mock, seq, timeoutMs) {
  const rec = await waitFor(() => mock.requests().find((r) => r.seq === seq && r.response.outcome), timeoutMs, 100);
  return rec?.response.outcome ?? null;
}

// ------------------------------------------------ 1-2. hung upstream → TTFB

describe('a hung link is abandoned at its TTFB timeout and the next link answers', () => {
  test('non-streamed: headers delayed 10 s, TTFB 2 s, deadline 5 s → groq answers in ~2 s, the first connection is closed', async () => {
    openai().enqueue({ match: { model: 'hung' }, delayHeadersMs: 10_000 });
    const watch = watchCloses(openai());
    try {
      const t0 = Date.now();
      const { data, response } = await client.chat.completions.create({ model: 'hung', messages: HELLO }).withResponse();
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 1900 && elapsed <= 3500, `answered in ${elapsed} ms, expected ~2 s (the link's TTFB)`);
      assert.equal(data.choices[0].message.content, reply('groq', HELLO[0].content));
      assert.equal(response.headers.get('x-tollgate-provider'), 'groq');
      assert.equal(response.headers.get('x-tollgate-model'), 'hung');
      assert.equal(response.headers.get('x-tollgate-attempts'), '2');
      assert.equal(
        response.headers.get('x-tollgate-trace'),
        'openai/hung;attempts=1;result=ttfb_timeout, groq/hung;attempts=1;result=ok',
      );
      assert.equal(openai().requests().length, 1, 'one attempt at the hung link, no retry');
      assert.equal(groq().requests().length, 1);

      // The gateway aborted the fetch: the mock's connection closed at ~2 s, unfinished …
      const closed = await waitFor(() => watch.closes.find((c) => !c.finished), 2000, 50);
      assert.ok(closed, `the hung connection was closed by the gateway (closes seen: ${JSON.stringify(watch.closes)})`);
      assert.ok(closed.at - t0 < 3500, `closed ${closed.at - t0} ms after the request, not when the mock gave up`);
      // … and the mock, waking up at 10 s, finds nobody listening.
      const seq = openai().requests()[0].seq;
      assert.equal(await outcomeOf(openai(), seq, 12_000), 'client-closed');
    } finally {
      watch.stop();
    }
  });

  test('streamed: the TTFB timeout covers the first frame (headers at once, first frame never) → one clean stream from groq', async () => {
    // Headers and the first 5 bytes ("data:") at once, the rest 10 s later: no complete first frame in time.
    openai().enqueue({ match: { model: 'hung-stream' }, sliceBytes: 5, chunkDelayMs: 10_000 });
    const s = await chatStream({ model: 'hung-stream', messages: HELLO });
    assert.equal(s.status, 200);
    assert.ok(s.elapsed >= 1900 && s.elapsed <= 3500, `stream started after ${s.elapsed} ms, expected ~2 s`);
    assert.equal(s.headers.get('x-tollgate-provider'), 'groq');
    assert.equal(
      s.headers.get('x-tollgate-trace'),
      'openai/hung-stream;attempts=1;result=ttfb_timeout, groq/hung-stream;attempts=1;result=ok',
    );
    assert.equal(s.events.filter(isRole).length, 1, 'exactly one stream start');
    assert.equal(s.events.filter(isError).length, 0, 'no error event');
    assert.equal(contentOf(s.events), reply('groq', HELLO[0].content));
    assert.ok(isDone(s.events.at(-1)), 'ends with [DONE]');
    assert.equal(s.events.filter(isDone).length, 1);
    assert.equal(openai().requests().length, 1);
    assert.equal(groq().requests().length, 1);
    const seq = openai().requests()[0].seq;
    assert.equal(await outcomeOf(openai(), seq, 12_000), 'client-closed', 'the gateway aborted the stalled stream');
  });
});

// ---------------------------------------------------------- 3. 429 handling

describe('429 and Retry-After', () => {
  test('Retry-After: 1 on a link with retries: 1 → the same link again after ≥ 1 s', async () => {
    openai().enqueue({ match: { model: 'ra-1' }, rateLimit: { retryAfter: '1' } });
    const res = await chat({ model: 'ra-1', messages: HELLO });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers.get('x-tollgate-provider'), 'openai');
    assert.equal(res.headers.get('x-tollgate-trace'), 'openai/ra-1;attempts=2;result=ok');
    assert.equal(res.headers.get('x-tollgate-attempts'), '2');
    assert.equal(res.json.choices[0].message.content, reply('openai', HELLO[0].content));
    const seen = openai().requests();
    assert.equal(seen.length, 2, 'retried once on the same link');
    const gap = seen[1].receivedAt - seen[0].receivedAt;
    assert.ok(gap >= 1000, `retry came ${gap} ms after the 429, before Retry-After allowed`);
    assert.ok(gap < 2000, `retry came ${gap} ms after the 429; expected about 1 s`);
    assert.equal(groq().requests().length, 0, 'no fallback needed');
  });

  test('Retry-After: 86400 → the next link at once, no sleeping past the deadline', async () => {
    openai().enqueue({ match: { model: 'ra-86400' }, rateLimit: { retryAfter: '86400' } });
    const res = await chat({ model: 'ra-86400', messages: HELLO });
    assert.equal(res.status, 200, res.text);
    assert.ok(res.elapsed < 800, `fell back after ${res.elapsed} ms; expected at once`);
    assert.equal(res.headers.get('x-tollgate-provider'), 'groq');
    assert.equal(res.headers.get('x-tollgate-trace'), 'openai/ra-86400;attempts=1;result=status_429, groq/ra-86400;attempts=1;result=ok');
    assert.equal(openai().requests().length, 1, 'no retry on the rate-limited link');
    assert.equal(groq().requests().length, 1);
  });

  test('every link 429 → the client gets 429 upstream_rate_limited with Retry-After, and a message naming every link', async () => {
    openai().enqueue({ match: { model: 'ra-all' }, rateLimit: { retryAfter: '3' } });
    groq().enqueue({ match: { model: 'ra-all' }, rateLimit: { retryAfter: '3' } });
    const res = await chat({ model: 'ra-all', messages: HELLO });
    const e = assertError(res, 429, { code: 'upstream_rate_limited', type: 'rate_limit_error' }, 'all links 429');
    assert.equal(res.headers.get('retry-after'), '3');
    assert.match(e.message, /openai\/ra-all/, 'message names link 1');
    assert.match(e.message, /groq\/ra-all/, 'message names link 2');
    // Retry-After 3 s is over the 2 s cap: no waiting on link 1 even though it has a retry.
    assert.ok(res.elapsed < 800, `gave up after ${res.elapsed} ms`);
    assert.equal(openai().requests().length, 1);
    assert.equal(groq().requests().length, 1);
  });
});

// ------------------------------------------------------- 4. non-retryable

describe('an upstream 401 is not retried and does not fall back unless the route says so', () => {
  test('401 → 502 upstream_auth_failed after exactly one upstream request (link has retries: 2)', async () => {
    openai().enqueue({ match: { model: 'auth' }, status: 401 });
    const res = await chat({ model: 'auth', messages: HELLO });
    const e = assertError(res, 502, { code: 'upstream_auth_failed' }, 'upstream 401');
    assert.doesNotMatch(e.message, /API key provided|sk-/, 'the provider message is not relayed');
    assert.equal(openai().requests().length, 1, 'exactly one attempt');
    assert.equal(groq().requests().length, 0, 'no fallback');
  });

  test('on_status_codes: [401] → falls back to link 2, never retrying the 401 link', async () => {
    openai().enqueue({ match: { model: 'auth-listed' }, status: 401 });
    const res = await chat({ model: 'auth-listed', messages: HELLO });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers.get('x-tollgate-provider'), 'groq');
    assert.equal(
      res.headers.get('x-tollgate-trace'),
      'openai/auth-listed;attempts=1;result=status_401, groq/auth-listed;attempts=1;result=ok',
    );
    assert.equal(res.json.choices[0].message.content, reply('groq', HELLO[0].content));
    assert.equal(openai().requests().length, 1, 'the 401 link is not retried');
    assert.equal(groq().requests().length, 1);
  });
});

// ------------------------------------------------- 5-7. streams, commit point

describe('streams: invisible fallback before the commit point, an explicit error after it', () => {
  test('a 200 whose first SSE frame is an error → one clean stream from link 2', async () => {
    openai().enqueue({ match: { model: 'ef' }, errorFrame: true });
    const s = await chatStream({ model: 'ef', messages: HELLO });
    assert.equal(s.status, 200);
    assert.equal(s.headers.get('x-tollgate-provider'), 'groq');
    assert.match(s.headers.get('x-tollgate-trace') ?? '', /^openai\/ef;attempts=1;result=(?!ok)[a-z0-9_]+, groq\/ef;attempts=1;result=ok$/);
    assert.equal(s.events.filter(isRole).length, 1, 'exactly one role chunk');
    assert.equal(s.events.filter(isError).length, 0, 'the error frame is not relayed');
    assert.equal(contentOf(s.events), reply('groq', HELLO[0].content));
    assert.ok(isDone(s.events.at(-1)), 'ends with [DONE]');
    assert.equal(openai().requests().length, 1);
    assert.equal(groq().requests().length, 1);
    const row = await ledgerRow(s.requestId);
    assert.equal(row.outcome, 'ok');
    assert.equal(row.provider, 'groq');
  });

  test('20 chunks then a reset → those 20 chunks and an upstream_truncated error event, no [DONE], no fallback', async () => {
    // Role chunk + 20 content chunks, then a TCP reset instead of the rest.
    openai().enqueue({ match: { model: 'cut' }, cutAfterChunks: 20, resetAfterBytes: 1e9 });
    const s = await chatStream({ model: 'cut', messages: [{ role: 'user', content: LONG_PROMPT }] });
    assert.equal(s.status, 200);
    assert.equal(s.headers.get('x-tollgate-provider'), 'openai');
    // A TCP reset lets the receiving kernel drop bytes not yet read, so the
    // gateway may see fewer than the 20 chunks written: it must forward every
    // one it saw, in order — a prefix of the answer — and nothing more.
    const chunks = contentChunks(s.events);
    assert.ok(chunks.length >= 1 && chunks.length <= 20, `content chunks before the reset: ${chunks.length}`);
    const words = reply('openai', LONG_PROMPT).split(' ');
    assert.equal(contentOf(s.events), words.slice(0, chunks.length).join(' ') + ' ');
    assert.equal(s.events.filter(isRole).length, 1, 'no second stream start');
    assert.equal(s.events.filter(isDone).length, 0, 'no [DONE]');
    const last = s.events.at(-1);
    assert.ok(isError(last), `ends with an error event: ${JSON.stringify(last.data)}`);
    assert.equal(last.data.error.code, 'upstream_truncated');
    assert.equal(s.events.filter(isError).length, 1);
    assert.equal(openai().requests().length, 1);
    assert.equal(groq().requests().length, 0, 'never falls back after the commit point');
    const rec = await waitFor(() => openai().requests()[0].response.outcome, 2000);
    assert.equal(rec, 'reset', 'the mock really reset the connection');

    const row = await ledgerRow(s.requestId);
    assert.equal(row.outcome, 'upstream_truncated');
    assert.equal(row.error_code, 'upstream_truncated');
    assert.equal(row.provider, 'openai');
    assert.equal(row.stream, 1);
  });

  test(
    'a truncated stream still has usage in the ledger (the issue: "the ledger row says truncated and has usage")',
    async () => {
      openai().enqueue({ match: { model: 'cut-usage' }, cutAfterChunks: 20, resetAfterBytes: 1e9 });
      const s = await chatStream({ model: 'cut-usage', messages: [{ role: 'user', content: LONG_PROMPT }] });
      assert.ok(contentChunks(s.events).length >= 1);
      const row = await ledgerRow(s.requestId);
      assert.equal(row.outcome, 'upstream_truncated');
      assert.ok(row.prompt_tokens > 0, `prompt_tokens: ${row.prompt_tokens}`);
      assert.ok(row.completion_tokens > 0, `completion_tokens: ${row.completion_tokens}`);
      assert.notEqual(row.usage_source, 'none');
    },
  );

  test('a stream whose chunks come every 200 ms outlives idle_ms 500: the limit is per gap, not per stream', async () => {
    openai().enqueue({ match: { model: 'idle' }, chunkDelayMs: 200 });
    const s = await chatStream({ model: 'idle', messages: HELLO });
    assert.equal(s.status, 200);
    assert.equal(s.events.filter(isError).length, 0, `no error event: ${JSON.stringify(s.events.map((e) => e.data))}`);
    assert.equal(s.events.filter(isDone).length, 1, 'ends with [DONE]');
    const span = s.events.at(-1).at - s.events[0].at;
    assert.ok(span >= 700, `the stream ran ${span} ms, well past idle_ms 500 (else this test proves nothing)`);
    const row = await ledgerRow(s.requestId);
    assert.equal(row.outcome, 'ok');
  });

  test('idle timeout mid-stream (idle_ms 500, chunks every 1.5 s) → the first chunk, then upstream_truncated within ~0.5-1.5 s', async () => {
    openai().enqueue({ match: { model: 'idle' }, chunkDelayMs: 1500 });
    const s = await chatStream({ model: 'idle', messages: HELLO });
    assert.equal(s.status, 200);
    assert.equal(s.headers.get('x-tollgate-provider'), 'openai');
    const errors = s.events.filter(isError);
    assert.equal(errors.length, 1, `one error event: ${JSON.stringify(s.events.map((e) => e.data))}`);
    const last = s.events.at(-1);
    assert.ok(isError(last), 'the error event ends the stream');
    assert.equal(last.data.error.code, 'upstream_truncated');
    const before = s.events.slice(0, -1);
    assert.ok(before.length >= 1, 'the client got the first chunk(s) first');
    assert.equal(before.filter(isRole).length, 1);
    const gap = last.at - before.at(-1).at;
    assert.ok(gap >= 400 && gap <= 1500, `error came ${gap} ms after the last chunk; idle_ms is 500`);
    assert.equal(s.events.filter(isDone).length, 0, 'no [DONE]');
    assert.equal(groq().requests().length, 0, 'no fallback after the commit point');
    const seq = openai().requests()[0].seq;
    assert.equal(await outcomeOf(openai(), seq, 4000), 'client-closed', 'the idle stream was aborted upstream');
    const row = await ledgerRow(s.requestId);
    assert.equal(row.outcome, 'upstream_truncated');
  });
});

// ----------------------------------------------------- 8. attempt cap

describe('retry amplification is capped', () => {
  test('2 links with retries: 5 each, max_attempts 3, everything 500 → at most 3 upstream requests, 502', async () => {
    openai().enqueue({ match: { model: 'amp' }, status: 500, times: -1 });
    groq().enqueue({ match: { model: 'amp' }, status: 500, times: -1 });
    const res = await chat({ model: 'amp', messages: HELLO });
    assertError(res, 502, { code: 'upstream_error', type: 'server_error' }, 'all attempts 500');
    const total = openai().requests().length + groq().requests().length;
    assert.ok(total >= 1 && total <= 3, `${total} upstream requests; max_attempts is 3`);
    await sleep(500); // nothing more arrives later either
    assert.equal(openai().requests().length + groq().requests().length, total);
  });

  test(
    'the capped error message lists every link that was tried',
    async () => {
      openai().enqueue({ match: { model: 'amp-msg' }, status: 500, times: -1 });
      groq().enqueue({ match: { model: 'amp-msg' }, status: 500, times: -1 });
      const res = await chat({ model: 'amp-msg', messages: HELLO });
      const e = assertError(res, 502, { code: 'upstream_error' }, 'all attempts 500');
      for (const [name, mock] of [
        ['openai', openai()],
        ['groq', groq()],
      ]) {
        if (mock.requests().length > 0) assert.match(e.message, new RegExp(`${name}/amp-msg`), `message names ${name}/amp: ${e.message}`);
      }
      assert.match(e.message, /status_500/);
    },
  );
});

// ------------------------------------------------------ circuit breaker

describe('circuit breaker', () => {
  test('5 failures open the circuit: the link is skipped (trace says circuit_open) until a probe after the cool-down succeeds', async () => {
    openai().enqueue({ match: { model: 'brk' }, status: 500, times: 5 });
    for (let i = 1; i <= 5; i++) {
      const res = await chat({ model: 'brk', messages: HELLO });
      assert.equal(res.status, 200, res.text);
      assert.equal(
        res.headers.get('x-tollgate-trace'),
        'openai/brk;attempts=1;result=status_500, groq/brk;attempts=1;result=ok',
        `failure ${i} still tries openai`,
      );
    }
    assert.equal(openai().requests().length, 5);

    const skipped = await chat({ model: 'brk', messages: HELLO });
    assert.equal(skipped.status, 200, skipped.text);
    assert.equal(skipped.headers.get('x-tollgate-trace'), 'openai/brk;attempts=0;result=circuit_open, groq/brk;attempts=1;result=ok');
    assert.equal(skipped.headers.get('x-tollgate-provider'), 'groq');
    assert.equal(openai().requests().length, 5, 'an open circuit sends nothing to the link');

    await sleep(1700); // circuit_cooldown_ms 1500
    const probe = await chat({ model: 'brk', messages: HELLO });
    assert.equal(probe.status, 200, probe.text);
    assert.equal(probe.headers.get('x-tollgate-trace'), 'openai/brk;attempts=1;result=ok', 'the probe goes to openai');
    assert.equal(openai().requests().length, 6);

    const closed = await chat({ model: 'brk', messages: HELLO });
    assert.equal(closed.headers.get('x-tollgate-trace'), 'openai/brk;attempts=1;result=ok', 'closed again after the probe');
    assert.equal(openai().requests().length, 7);
    assert.equal(groq().requests().length, 6);
  });
});

// ------------------------------------------------- 9-10. choosing a link

describe('load balancing and conditional routes', () => {
  test('weights 3:1 over 1,000 requests → openai answers 75 % ± 5 points', async () => {
    const N = 1000;
    const CONCURRENCY = 20;
    const by = { openai: 0, groq: 0 };
    let next = 0;
    const failures = [];
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < N) {
          next++;
          const res = await chat({ model: 'lb', messages: HELLO });
          if (res.status !== 200) failures.push(`${res.status} ${res.text}`);
          const p = res.headers.get('x-tollgate-provider');
          if (p in by) by[p]++;
        }
      }),
    );
    assert.deepEqual(failures, []);
    assert.equal(by.openai + by.groq, N);
    const share = by.openai / N;
    assert.ok(Math.abs(share - 0.75) <= 0.05, `openai answered ${(share * 100).toFixed(1)} % (${by.openai}/${N})`);
    // What the mocks saw agrees with the headers: one upstream request each, no fallbacks.
    assert.equal(openai().requests().length, by.openai);
    assert.equal(groq().requests().length, by.groq);
  });

  test('conditional: metadata.plan = free → groq; any other plan or none → openai', async () => {
    const cases = [
      [{ 'x-tollgate-metadata': '{"plan":"free"}' }, 'groq'],
      [{ 'x-tollgate-metadata': '{"plan":"pro"}' }, 'openai'],
      [{ 'x-tollgate-metadata': '{"team":"free"}' }, 'openai'],
      [{}, 'openai'],
    ];
    for (const [headers, want] of cases) {
      const { data, response } = await client.chat.completions.create({ model: 'cond', messages: HELLO }, { headers }).withResponse();
      assert.equal(response.headers.get('x-tollgate-provider'), want, JSON.stringify(headers));
      assert.equal(data.choices[0].message.content, reply(want, HELLO[0].content));
    }
    assert.equal(groq().requests().length, 1);
    assert.equal(openai().requests().length, 3);
  });
});

// ------------------------------------------------------ 11. ledger rows

describe('the ledger has one request row and one attempt row per upstream attempt', () => {
  let ledgerKey;
  let requestId;

  before(async () => {
    ledgerKey = await stack.createKey({ name: 'routing-ledger' });
  });

  test('500 then fallback → one request row, answered by groq', async () => {
    openai().enqueue({ match: { model: 'l500' }, status: 500 });
    const res = await chat({ model: 'l500', messages: HELLO }, { apiKey: ledgerKey.key });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers.get('x-tollgate-trace'), 'openai/l500;attempts=1;result=status_500, groq/l500;attempts=1;result=ok');
    requestId = res.requestId;
    const row = await ledgerRow(requestId);
    assert.equal(row.provider, 'groq');
    assert.equal(row.model_requested, 'l500');
    assert.equal(row.outcome, 'ok');
    assert.equal(row.status, 200);
    await sleep(300);
    const rows = await stack.ledger({ keyId: ledgerKey.id });
    assert.equal(rows.filter((r) => r.request_id === requestId).length, 1, 'exactly one request row');
    assert.equal(rows.length, 1, 'one request, one row');
  });

  test(
    'GET /admin/requests/{id} lists the attempts: openai status_500, then groq ok',
    async () => {
      assert.ok(requestId, 'the previous test made the request');
      const row = await ledgerRow(requestId);
      assert.ok(Array.isArray(row.attempts), `attempts array in ${JSON.stringify(row)}`);
      assert.equal(row.attempts.length, 2);
      const pick = (a) => ({ attempt: a.attempt, provider: a.provider, model: a.model, outcome: a.outcome, failure: a.failure ?? null, status: a.status });
      assert.deepEqual(row.attempts.map(pick), [
        { attempt: 1, provider: 'openai', model: 'l500', outcome: 'failed', failure: 'status_500', status: 500 },
        { attempt: 2, provider: 'groq', model: 'l500', outcome: 'ok', failure: null, status: 200 },
      ]);
    },
  );
});

// ------------------------------------------------------- 12. inline routes

describe('inline routes (x-tollgate-config)', () => {
  const INLINE_GROQ = JSON.stringify({ strategy: 'fallback', targets: [{ model: 'groq/x' }] });
  let inlineKey;

  before(async () => {
    inlineKey = await stack.createKey({ name: 'routing-inline', allow_inline_config: true });
  });

  test('a key without allow_inline_config → 403 inline_config_not_allowed, nothing sent upstream', async () => {
    const res = await chat({ model: 'openai/gpt-4o-mini', messages: HELLO }, { headers: { 'x-tollgate-config': INLINE_GROQ } });
    assertError(res, 403, { code: 'inline_config_not_allowed', type: 'permission_error' }, 'inline without permission');
    assert.equal(openai().requests().length + groq().requests().length, 0);
  });

  test('a permitted key → its inline route decides (groq answers, not the body model)', async () => {
    const c = clientFor(inlineKey.key);
    const { data, response } = await c.chat.completions
      .create({ model: 'openai/gpt-4o-mini', messages: HELLO }, { headers: { 'x-tollgate-config': INLINE_GROQ } })
      .withResponse();
    assert.equal(response.headers.get('x-tollgate-provider'), 'groq');
    assert.equal(response.headers.get('x-tollgate-trace'), 'groq/x;attempts=1;result=ok');
    assert.equal(data.choices[0].message.content, reply('groq', HELLO[0].content));
    assert.equal(groq().requests().length, 1);
    assert.equal(groq().requests()[0].json.model, 'x');
    assert.equal(openai().requests().length, 0);
  });

  test('an inline route may not name an unconfigured provider or an upstream URL', async () => {
    const cases = [
      [{ strategy: 'fallback', targets: [{ model: 'evil/x' }] }, 'invalid_inline_config'],
      [{ strategy: 'fallback', targets: [{ model: 'groq/x', params: { api_base: 'http://169.254.169.254/' } }] }, 'upstream_override_not_allowed'],
      [{ strategy: 'fallback', targets: [{ model: 'groq/x', base_url: 'http://evil.example/' }] }, 'upstream_override_not_allowed'],
      [{ strategy: 'fallback', targets: [{ model: 'http://evil.example/v1' }] }, 'invalid_inline_config'],
    ];
    for (const [route, code] of cases) {
      const res = await chat({ model: 'openai/gpt-4o-mini', messages: HELLO }, { apiKey: inlineKey.key, headers: { 'x-tollgate-config': JSON.stringify(route) } });
      assertError(res, 400, { code }, JSON.stringify(route));
    }
    const notJson = await chat({ model: 'openai/gpt-4o-mini', messages: HELLO }, { apiKey: inlineKey.key, headers: { 'x-tollgate-config': 'groq/x' } });
    assertError(notJson, 400, { code: 'invalid_inline_config', param: 'x-tollgate-config' }, 'not JSON');
    assert.equal(openai().requests().length + groq().requests().length, 0, 'zero upstream requests');
  });
});

// ------------------------------------------------------ 13. link params

describe("a route link's params", () => {
  test('override the client’s fields in the upstream body, and nothing else', async () => {
    const { data } = await client.chat.completions
      .create({ model: 'tuned', messages: HELLO, temperature: 0.9, max_tokens: 50, user: 'u-1' })
      .withResponse();
    assert.equal(data.choices[0].message.content, reply('openai', HELLO[0].content));
    const sent = openai().requests();
    assert.equal(sent.length, 1);
    assert.equal(sent[0].json.model, 'tuned');
    assert.equal(sent[0].json.temperature, 0, 'route param wins over the client value');
    assert.equal(sent[0].json.seed, 7, 'route param added');
    assert.equal(sent[0].json.max_tokens, 50, 'other client fields pass through');
    assert.equal(sent[0].json.user, 'u-1');
    assert.deepEqual(sent[0].json.messages, HELLO);
  });
});
