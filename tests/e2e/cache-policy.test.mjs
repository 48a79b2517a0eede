// Cache policy at three levels — global ([vars.GATEWAY.cache]), per key
// (admin API `cache`), per route (`routes.<name>.cache`); the most specific
// level that sets a field wins.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startStack } from './harness.mjs';

let stack;
let key;

before(async () => {
  stack = await startStack({
    providers: { openai: { apiKey: 'sk-test-policy-00000000000' } },
    editConfig(g) {
      g.cache = { mode: 'on' };
      g.routes = {
        'no-tools': { strategy: 'fallback', targets: [{ model: 'openai/gpt-4o-mini' }], cache: { tools: false } },
        warm: { strategy: 'fallback', targets: [{ model: 'openai/gpt-4o-mini' }], cache: { max_temperature: 0.5 } },
      };
    },
  });
  key = await stack.createKey({ name: 'policy' });
});

after(async () => {
  await stack?.stop();
});

async function ask(k, body) {
  const r = await fetch(`${stack.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  await r.text();
  assert.equal(r.status, 200);
  return r.headers.get('x-tollgate-cache');
}

async function eventuallyHit(k, body) {
  for (let i = 0; i < 40; i++) {
    if ((await ask(k, body)) === 'HIT') return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

const TOOLS = [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }];

test('global mode "on" caches deterministic requests without a header; a warm temperature is skipped', async () => {
  const body = { model: 'openai/gpt-4o-mini', temperature: 0, messages: [{ role: 'user', content: 'global on' }] };
  assert.equal(await ask(key, body), 'MISS');
  assert.ok(await eventuallyHit(key, body));
  assert.equal(await ask(key, { ...body, temperature: 0.3 }), 'SKIP');
});

test('a route that does not cache tool requests skips them; without tools it caches', async () => {
  const msgs = [{ role: 'user', content: 'route tools' }];
  assert.equal(await ask(key, { model: 'no-tools', temperature: 0, messages: msgs, tools: TOOLS }), 'SKIP');
  assert.equal(await ask(key, { model: 'no-tools', temperature: 0, messages: msgs }), 'MISS');
});

test('a route with max_temperature 0.5 caches temperature 0.3, not 0.7', async () => {
  const body = { model: 'warm', temperature: 0.3, messages: [{ role: 'user', content: 'warm route' }] };
  assert.equal(await ask(key, body), 'MISS');
  assert.ok(await eventuallyHit(key, body));
  assert.equal(await ask(key, { ...body, temperature: 0.7 }), 'SKIP');
});

test('a key with cache mode off is never cached; PATCH can change it; bad policies are 400', async () => {
  const off = await stack.createKey({ name: 'no-cache', cache: { mode: 'off' } });
  assert.deepEqual(off.cache, { mode: 'off' });
  const body = { model: 'openai/gpt-4o-mini', temperature: 0, messages: [{ role: 'user', content: 'key off' }] };
  assert.equal(await ask(off, body), null, 'no cache header when off');
  const patched = await stack.admin('PATCH', `/admin/keys/${off.id}`, { cache: { mode: 'on', tools: false } });
  assert.equal(patched.status, 200, patched.text);
  assert.equal(await ask(off, body), 'MISS');
  assert.equal(await ask(off, { ...body, tools: TOOLS }), 'SKIP', "the key's tools:false applies");
  const bad = await stack.admin('PATCH', `/admin/keys/${off.id}`, { cache: { max_temperature: 9 } });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.param, 'cache');
  const unknown = await stack.admin('POST', '/admin/keys', { name: 'x', cache: { colour: 'red' } });
  assert.equal(unknown.status, 400);
});
