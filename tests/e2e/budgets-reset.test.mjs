// Issue 7, "a DO reset between reserve and settle": the Worker runtime is
// killed (SIGKILL — workerd, the Worker and the key's KeyBudget Durable Object
// all die, no graceful shutdown) while a request holds a reservation and is
// still waiting on the upstream, so its settle never runs. The runtime is
// started again over the same persisted state. The reservation must survive
// the reset (it is in the object's SQLite storage, not in memory), must stop
// blocking at its expiry, and the budget it held must be usable again.
//
// Found by this test: workerd under `wrangler dev` loses a Durable Object's
// pending alarm when the runtime is killed, so the object also releases
// expired reservations on every access (admit, settle, snapshot) — it never
// relies on the alarm alone.
//
// Short timings keep the test quick: deadline 2 s + grace 2 s → the
// reservation expires 4 s after admission.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startStack } from './harness.mjs';

const MODEL = 'openai/gpt-4o-mini';
const TEXT = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hold this' }], max_tokens: 1000 });

let stack;

before(async () => {
  stack = await startStack({
    providers: { openai: { apiKey: 'sk-test-openai-reset-0000000000000' } },
    editConfig(gateway) {
      gateway.resilience = { ...(gateway.resilience ?? {}), circuit_failures: 0, deadline_ms: 2000 };
      gateway.budgets = { ...(gateway.budgets ?? {}), reservation_grace_ms: 2000 };
    },
  });
});

after(async () => {
  await stack?.stop();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function state(keyId) {
  const r = await stack.admin('GET', `/admin/keys/${keyId}/budget`);
  assert.equal(r.status, 200, r.text);
  return r.json.state;
}

function call(key) {
  return fetch(`${stack.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: TEXT,
  });
}

test('a reservation whose Worker died before settling survives the reset, is released by the alarm at its expiry, and the budget is whole again', async () => {
  const mock = stack.mocks.openai;
  // Learn the worst case from a first admitted request, then allow exactly one in flight.
  const key = await stack.createKey({ name: 'reset', limits: { micro_usd_lifetime: 1_000_000 } });
  mock.enqueue({ delayHeadersMs: 60_000 });
  const inflight = call(key.key).catch((e) => e);
  let s;
  const until = Date.now() + 5000;
  do {
    await sleep(50);
    s = await state(key.id);
  } while (s.open_reservations.length === 0 && Date.now() < until);
  assert.equal(s.open_reservations.length, 1, `reserved: ${JSON.stringify(s)}`);
  const reservation = s.open_reservations[0];
  assert.ok(reservation.micros > 0);
  assert.equal(reservation.expires_at_ms - reservation.admitted_at_ms, 4000, 'ttl = deadline + grace');

  // Room for exactly the one held reservation: while it is open, nothing else fits.
  const patched = await stack.admin('PATCH', `/admin/keys/${key.id}`, { limits: { micro_usd_lifetime: reservation.micros } });
  assert.equal(patched.status, 200, patched.text);

  // The reset: the Worker that would have settled is gone.
  await stack.restart({ hard: true });
  const lost = await inflight;
  assert.ok(lost instanceof Error || lost.status >= 500, 'the in-flight request died with the runtime');

  const afterReset = await state(key.id);
  if (Date.now() < reservation.expires_at_ms - 500) {
    assert.deepEqual(
      afterReset.open_reservations.map((r) => r.id),
      [reservation.id],
      'the reservation survived the reset (persisted, not in memory)',
    );
    mock.reset();
    const blocked = await call(key.key);
    const body = await blocked.json();
    assert.equal(blocked.status, 429, JSON.stringify(body));
    assert.equal(body.error.code, 'budget_held_by_requests_in_flight');
    assert.equal(mock.requests().length, 0, 'nothing went upstream');
  }

  // Past its expiry: released (counted in `expired_unsettled`, which only a
  // release at expiry increments), charging nothing and holding no tokens.
  await sleep(Math.max(0, reservation.expires_at_ms - Date.now()) + 1500);
  let released = await state(key.id);
  const deadline = Date.now() + 5000;
  while (released.expired_unsettled !== 1 && Date.now() < deadline) {
    await sleep(200);
    released = await state(key.id);
  }
  assert.deepEqual(released.open_reservations, [], 'no reservation open past its expiry');
  assert.equal(released.expired_unsettled, 1, `released at expiry: ${JSON.stringify(released)}`);
  assert.equal(released.tokens_last_minute, 0, 'its reserved tokens left the TPM window');
  assert.equal(released.lifetime.spent_micros, 0, 'an unsettled reservation charges nothing');
  assert.equal(released.lifetime.reserved_micros, 0);

  // The whole budget is usable again: a request with the same worst case is admitted.
  mock.reset();
  const res = await call(key.key);
  assert.equal(res.status, 200, await res.clone().text());
  await res.text();
  assert.equal(mock.requests().length, 1);
});
