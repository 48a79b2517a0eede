// Health probes end to end (issue 12, "Health"): the built Worker under
// `wrangler dev --test-scheduled`, cron runs fired with Miniflare's GET
// /cdn-cgi/local/scheduled, which (unlike wrangler's /__scheduled) takes the
// run's scheduled `time=`, so each run is its own probe slot; in front of two mock
// providers speaking OpenAI's wire format, `openai` (A) and `groq` (B).
//
// - A's probes start failing (mock fault: 503 on every request for A's
//   model) → after two failed probes A's circuit is open, and user requests
//   go straight to B: A's request log holds only probes, and the trace says
//   A was skipped as `circuit_open`.
// - A recovers → the next probe closes the circuit → users are back on A.
// - Two cron runs for the same time probe each link once.
// - A slow probe on A (400 ms) makes the `latency` strategy put B first
//   without any user request having been sent to A.
// - A fresh isolate (runtime restarted; the Durable Objects keep their
//   state) learns of A's probe-opened circuit by the bounded pull after a
//   request that did not use A, before any user request reaches A.
// - Probes off (the default): a cron run sends nothing to any provider.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startStack } from './harness.mjs';

const PROBE_PROMPT = 'ping';
const USER = [{ role: 'user', content: 'hello from a real user' }];
const INTERVAL_MS = 300_000;
const OPENAI_KEY = 'sk-test-openai-probes-00000000000000';
const GROQ_KEY = 'gsk-test-groq-probes-000000000000000';

/** Whether a recorded upstream request is a health probe (and not a user's). */
const isProbe = (r) => r.json?.max_tokens === 1 && r.json?.messages?.length === 1 && r.json.messages[0].content === PROBE_PROMPT;

async function chat(stack, key, model) {
  const r = await fetch(`${stack.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: USER, max_tokens: 20 }),
  });
  const text = await r.text();
  return { status: r.status, text, headers: r.headers };
}

/** Counts the cron runs that have logged a probe round. */
const probeRounds = (stack) => (stack.logs().match(/"event":"health_probes"/g) ?? []).length;

/** Fires one cron run at `timeMs` (a multiple of the interval: its own slot) and waits for it. */
async function cron(stack, timeMs) {
  const r = await fetch(`${stack.url}/cdn-cgi/local/scheduled?cron=*/5+*+*+*+*&time=${timeMs}`);
  assert.equal(r.status, 200, await r.text());
}

describe('probes on', () => {
  let stack;
  let key;
  // Each run gets the next slot; the first is well in the past of "now".
  let slot = Math.floor(Date.now() / INTERVAL_MS) * INTERVAL_MS;
  const nextSlot = () => (slot += INTERVAL_MS);
  const openai = () => stack.mocks.openai;
  const groq = () => stack.mocks.groq;
  /** Requests a mock received for one model. */
  const reqs = (mock, model) => mock.requests().filter((r) => r.json?.model === model);

  before(async () => {
    stack = await startStack({
      providers: { openai: { apiKey: OPENAI_KEY }, groq: { apiKey: GROQ_KEY } },
      devArgs: ['--test-scheduled'],
      logLevel: 'log',
      editConfig(g) {
        g.resilience = { ...g.resilience, circuit_failures: 5, circuit_cooldown_ms: 30_000 };
        g.health = { probe_interval_secs: INTERVAL_MS / 1000, timeout_ms: 2000, failures_to_open: 2, prompt: PROBE_PROMPT };
        g.pricing = { overrides: { 'openai/probe-a': { input: 2.5, output: 10 } } };
        g.routes = {
          chain: { strategy: 'fallback', targets: [{ model: 'openai/probe-a' }, { model: 'groq/probe-b' }] },
          'b-first': { strategy: 'fallback', targets: [{ model: 'groq/probe-b' }, { model: 'openai/probe-a' }] },
          fastest: { strategy: 'latency', explore_rate: 0, targets: [{ model: 'openai/lat-a' }, { model: 'groq/lat-b' }] },
        };
      },
    });
    key = (await stack.createKey({ name: 'probes' })).key;
  });

  after(async () => {
    await stack?.stop();
  });

  test('a failing probe opens A’s circuit: no user request reaches A, all answer 200 from B, the trace shows A skipped as open', async () => {
    // Users are on A, and this isolate's view of A is fresh and closed.
    for (let i = 0; i < 3; i++) {
      const r = await chat(stack, key, 'chain');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-tollgate-provider'), 'openai');
    }
    openai().reset();
    groq().reset();
    openai().enqueue({ match: { model: 'probe-a' }, status: 503, times: -1 });

    await cron(stack, nextSlot());
    await cron(stack, nextSlot());
    assert.equal(reqs(openai(), 'probe-a').length, 2, 'one probe per run');
    const probe = reqs(openai(), 'probe-a')[0];
    assert.ok(isProbe(probe), JSON.stringify(probe.json));
    assert.equal(probe.headers.authorization, `Bearer ${OPENAI_KEY}`, 'the provider’s own key');
    assert.ok(!JSON.stringify(openai().requests()).includes(GROQ_KEY), 'no other secret reaches A');
    assert.ok(!stack.logs().includes(OPENAI_KEY), 'the key is never logged');
    assert.ok(await stack.waitForLog(/"failing":\["openai\/probe-a:status_503"\]/), 'the run says which link failed');

    for (let i = 0; i < 10; i++) {
      const r = await chat(stack, key, 'chain');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-tollgate-provider'), 'groq');
      assert.equal(r.headers.get('x-tollgate-trace'), 'openai/probe-a;attempts=0;result=circuit_open, groq/probe-b;attempts=1;result=ok');
    }
    const atA = reqs(openai(), 'probe-a');
    assert.equal(atA.length, 2, 'A saw only the two probes');
    assert.ok(atA.every(isProbe));
    assert.equal(reqs(groq(), 'probe-b').filter((r) => !isProbe(r)).length, 10);

    const health = await stack.admin('GET', '/admin/health');
    assert.equal(health.status, 200, health.text);
    const a = health.json.links.find((l) => l.link === 'openai/probe-a');
    assert.equal(a.circuit, 'open');
    assert.equal(a.probe.failures, 2);
    assert.equal(a.probe.last_failure, 'status_503');
    assert.equal(health.json.probes_per_day, 4 * 288, '4 links every 5 minutes');
  });

  test('A recovers: the next probe closes the circuit and user traffic returns to A', async () => {
    openai().reset(); // clears the fault: A answers again
    await cron(stack, nextSlot());
    const probes = reqs(openai(), 'probe-a');
    assert.equal(probes.length, 1);
    assert.equal(probes[0].response.status, 200);

    for (let i = 0; i < 3; i++) {
      const r = await chat(stack, key, 'chain');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-tollgate-provider'), 'openai');
      assert.equal(r.headers.get('x-tollgate-trace'), 'openai/probe-a;attempts=1;result=ok');
    }
    assert.equal(reqs(openai(), 'probe-a').filter((r) => !isProbe(r)).length, 3);

    const a = (await stack.admin('GET', '/admin/health')).json.links.find((l) => l.link === 'openai/probe-a');
    assert.equal(a.circuit, 'closed');
    assert.equal(a.probe.probes, 3);
    assert.ok(a.probe.prompt_tokens > 0 && a.probe.cost_micros > 0, JSON.stringify(a.probe));
    const b = (await stack.admin('GET', '/admin/health')).json.links.find((l) => l.link === 'groq/probe-b');
    assert.ok(b.probe.unpriced_probes >= 3, 'an unpriced model’s probes are counted as such, not as free');
  });

  test('two cron runs for the same time probe each link once', async () => {
    openai().reset();
    groq().reset();
    const t = nextSlot();
    await Promise.all([cron(stack, t), cron(stack, t)]);
    assert.equal(reqs(openai(), 'probe-a').length, 1);
    assert.equal(reqs(groq(), 'probe-b').length, 1);
    assert.equal(openai().requests().length + groq().requests().length, 4, 'four links, one probe each');
  });

  test('a slow probe on A puts B first in the latency strategy, with no user request sent to A', async () => {
    openai().reset();
    groq().reset();
    openai().enqueue({ match: { model: 'lat-a' }, delayHeadersMs: 400, times: -1 });
    await cron(stack, nextSlot());
    await cron(stack, nextSlot());
    assert.equal(reqs(openai(), 'lat-a').length, 2);

    for (let i = 0; i < 5; i++) {
      const r = await chat(stack, key, 'fastest');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-tollgate-provider'), 'groq');
      const decision = r.headers.get('x-tollgate-route-decision');
      const m = /^latency:fastest groq\/lat-b=(\d+)ms openai\/lat-a=(\d+)ms$/.exec(decision);
      assert.ok(m, decision);
      assert.ok(Number(m[2]) >= 100, `A measured slow by its probes: ${decision}`);
    }
    assert.ok(reqs(openai(), 'lat-a').every(isProbe), 'A saw probes only');
  });

  test('a fresh isolate learns of a probe-opened circuit from the bounded pull, before any user request reaches A', async () => {
    openai().reset();
    groq().reset();
    openai().enqueue({ match: { model: 'probe-a' }, status: 500, times: -1 });
    await cron(stack, nextSlot());
    await cron(stack, nextSlot());
    // New runtime, empty per-isolate view; the Durable Objects keep A open.
    await stack.restart();
    // A request that does not use A (B answers first) pulls the route's other links after its response…
    const first = await chat(stack, key, 'b-first');
    assert.equal(first.status, 200, first.text);
    assert.equal(first.headers.get('x-tollgate-provider'), 'groq');
    await new Promise((r) => setTimeout(r, 500));
    // …so a request that would go to A first skips it.
    const r = await chat(stack, key, 'chain');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-tollgate-trace'), 'openai/probe-a;attempts=0;result=circuit_open, groq/probe-b;attempts=1;result=ok');
    assert.ok(reqs(openai(), 'probe-a').every(isProbe), 'A saw probes only');
  });
});

describe('probes off (the default)', () => {
  let stack;
  before(async () => {
    stack = await startStack({
      providers: { openai: { apiKey: OPENAI_KEY }, groq: { apiKey: GROQ_KEY } },
      devArgs: ['--test-scheduled'],
      logLevel: 'log',
      editConfig(g) {
        g.routes = { chain: { strategy: 'fallback', targets: [{ model: 'openai/probe-a' }, { model: 'groq/probe-b' }] } };
      },
    });
  });
  after(async () => {
    await stack?.stop();
  });

  test('a cron run sends nothing to any provider', async () => {
    const runs = () => (stack.logs().match(/"event":"cron"/g) ?? []).length;
    await cron(stack, Math.floor(Date.now() / INTERVAL_MS) * INTERVAL_MS);
    assert.ok(await stack.waitForLog({ test: () => runs() >= 1 }, 10_000), 'the cron ran');
    assert.equal(stack.mocks.openai.requests().length, 0);
    assert.equal(stack.mocks.groq.requests().length, 0);
    assert.equal(probeRounds(stack), 0);
    const health = await stack.admin('GET', '/admin/health');
    assert.equal(health.json.probe_interval_secs, 0);
    assert.equal(health.json.probes_per_day, 0);
  });
});
