// The README's first command: `make dev` (scripts/dev.sh) starts the gateway
// and prints a curl example that works on its first run with no provider key.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { ROOT, freePort } from './harness.mjs';

test('make dev prints a base URL, a dev key and a curl that answers', { timeout: 180_000 }, async () => {
  const port = await freePort();
  const persist = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-dev-'));
  const child = spawn('sh', ['scripts/dev.sh'], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), DEV_PERSIST_DIR: persist },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  try {
    // Wait until wrangler reports it is ready.
    const deadline = Date.now() + 150_000;
    while (!/Ready on http/.test(out)) {
      assert.ok(child.exitCode === null, `dev command exited early:\n${out}`);
      assert.ok(Date.now() < deadline, `dev command not ready in time:\n${out}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.match(out, new RegExp(`base URL +http://127\\.0\\.0\\.1:${port}/v1`));
    const key = out.match(/dev key +(tg-[0-9a-f]{48})/)?.[1];
    assert.ok(key, `dev key printed:\n${out}`);
    const curl = out.split('\n').find((l) => l.trim().startsWith('curl '));
    assert.ok(curl?.includes(key), 'the curl example carries the dev key');
    const model = curl.match(/"model":"([^"]+)"/)[1];

    // Run the printed command exactly as a newcomer would paste it.
    const stdout = await new Promise((resolve, reject) =>
      execFile('sh', ['-c', `${curl.trim()} -s -w '\\n%{http_code}'`], (err, so, se) => (err ? reject(new Error(se || err.message)) : resolve(so))),
    );
    const [body, code] = [stdout.slice(0, stdout.lastIndexOf('\n')), stdout.slice(stdout.lastIndexOf('\n') + 1)];
    if (model === 'demo') {
      assert.equal(code, '200', body);
      const json = JSON.parse(body);
      assert.equal(json.choices[0].message.content, "Hello from tollgate's demo provider. You said: Hello, tollgate!");
    } else {
      // A developer's own .dev.vars has a real OPENAI_API_KEY: the example then goes to OpenAI,
      // which this sandbox cannot reach; it must still fail cleanly with an OpenAI error body.
      assert.ok(JSON.parse(body).choices || JSON.parse(body).error, body);
    }
  } finally {
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {}
    await new Promise((r) => (child.exitCode !== null ? r() : child.on('exit', r)));
    fs.rmSync(persist, { recursive: true, force: true });
  }
});
