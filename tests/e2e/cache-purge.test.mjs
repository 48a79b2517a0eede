// DELETE /admin/cache: purge exact-cache entries by key, by route, or all.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startStack } from './harness.mjs';

let stack;
let keyA;
let keyB;

before(async () => {
  stack = await startStack({ providers: { openai: { apiKey: 'sk-test-purge-0000000000' } } });
  keyA = await stack.createKey({ name: 'purge-a' });
  keyB = await stack.createKey({ name: 'purge-b' });
});

after(async () => {
  await stack?.stop();
});

async function ask(key, model, content) {
  const r = await fetch(`${stack.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json', 'x-tollgate-cache': 'exact' },
    body: JSON.stringify({ model, temperature: 0, messages: [{ role: 'user', content }] }),
  });
  await r.text();
  return r.headers.get('x-tollgate-cache');
}

/** Asks until the entry written after the first answer is visible (writes happen after the response). */
async function primed(key, model, content) {
  assert.equal(await ask(key, model, content), 'MISS');
  for (let i = 0; i < 40; i++) {
    if ((await ask(key, model, content)) === 'HIT') return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail('entry never became visible');
}

test('purge one key and one route; others stay cached', async () => {
  await primed(keyA, 'openai/gpt-4o-mini', 'one');
  await primed(keyA, 'gpt-4o', 'two');
  await primed(keyB, 'openai/gpt-4o-mini', 'one');

  const byRoute = await stack.admin('DELETE', `/admin/cache?key_id=${keyA.id}&model=gpt-4o`);
  assert.equal(byRoute.status, 200, byRoute.text);
  assert.equal(byRoute.json.deleted, 1);
  assert.equal(await ask(keyA, 'gpt-4o', 'two'), 'MISS');
  assert.equal(await ask(keyA, 'openai/gpt-4o-mini', 'one'), 'HIT', 'other route of the key kept');

  const byKey = await stack.admin('DELETE', `/admin/cache?key_id=${keyB.id}`);
  assert.equal(byKey.json.deleted, 1);
  assert.equal(byKey.json.more, false);
  assert.equal(await ask(keyB, 'openai/gpt-4o-mini', 'one'), 'MISS');
  assert.equal(await ask(keyA, 'openai/gpt-4o-mini', 'one'), 'HIT', 'other key kept');
});

test('purge everything; bad parameters are 400; only admins may purge', async () => {
  await new Promise((r) => setTimeout(r, 300));
  const all = await stack.admin('DELETE', '/admin/cache');
  assert.equal(all.status, 200);
  assert.ok(all.json.deleted >= 1, all.text);
  assert.equal(await ask(keyA, 'openai/gpt-4o-mini', 'one'), 'MISS');
  const bad = await stack.admin('DELETE', '/admin/cache?tenant=x');
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.param, 'tenant');
  const r = await fetch(`${stack.url}/admin/cache`, { method: 'DELETE', headers: { authorization: `Bearer ${keyA.key}` } });
  assert.equal(r.status, 401);
});
