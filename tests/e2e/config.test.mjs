// Operator configuration at run time: a GATEWAY JSON string (secret or
// .dev.vars) overrides the [vars.GATEWAY] table, and an invalid config makes
// the gateway refuse everything while logging every problem (fail closed).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { startStack } from './harness.mjs';

test('a GATEWAY JSON string overrides the wrangler.toml table', async () => {
  const stack = await startStack({
    providers: {},
    secrets: { GATEWAY: JSON.stringify({ providers: { demo: { kind: 'demo', models: ['only-this'] } }, models: { tiny: 'demo/only-this' } }) },
  });
  try {
    const key = await stack.createKey({ name: 'cfg' });
    const r = await fetch(`${stack.url}/v1/models`, { headers: { authorization: `Bearer ${key.key}` } });
    assert.equal(r.status, 200);
    const ids = (await r.json()).data.map((m) => m.id);
    assert.deepEqual(ids, ['tiny', 'demo/only-this']);
    const cfg = await stack.admin('GET', '/admin/config');
    assert.deepEqual(Object.keys(cfg.json.providers), ['demo']);
    assert.equal(cfg.json.providers.demo.api_key, 'not_required');
  } finally {
    await stack.stop();
  }
});

test('an invalid config rejects every request with 503 and logs each problem', async () => {
  const stack = await startStack({
    providers: {},
    secrets: { GATEWAY: JSON.stringify({ providers: { demo: { kind: 'demo', api_kye: 'typo' } } }) },
  });
  try {
    const health = await fetch(`${stack.url}/healthz`);
    assert.equal(health.status, 503);
    assert.deepEqual(await health.json(), { status: 'misconfigured' });
    for (const [method, path] of [['POST', '/v1/chat/completions'], ['GET', '/v1/models'], ['GET', '/admin/config']]) {
      const r = await fetch(stack.url + path, {
        method,
        headers: { authorization: `Bearer ${stack.adminToken}`, 'content-type': 'application/json' },
        body: method === 'POST' ? '{"model":"demo/x","messages":[{"role":"user","content":"x"}]}' : undefined,
      });
      // /v1 routes fail on the key check first (401) or on config (503); never a 200 or a 500.
      assert.ok([401, 503].includes(r.status), `${path}: ${r.status}`);
      const body = await r.json();
      assert.ok(body.error.code === 'gateway_misconfigured' || body.error.code === 'invalid_api_key', JSON.stringify(body));
    }
    const cfg = await stack.admin('GET', '/admin/config');
    assert.equal(cfg.status, 503);
    assert.equal(cfg.json.error.code, 'gateway_misconfigured');
    assert.ok(await stack.waitForLog(/unknown field `api_kye`/), stack.logs());
  } finally {
    await stack.stop();
  }
});
