// Chat completions and embeddings through the gateway with the official
// `openai` SDK as the client, against the mock OpenAI provider.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { readSse, startStack } from './harness.mjs';

const UPSTREAM_KEY = 'sk-test-openai-chat-000000000000';
let stack;
let key;
let client;

before(async () => {
  stack = await startStack({ providers: { openai: { apiKey: UPSTREAM_KEY } } });
  key = await stack.createKey({ name: 'chat-tests' });
  client = new OpenAI({ apiKey: key.key, baseURL: `${stack.url}/v1`, maxRetries: 0 });
});

after(async () => {
  await stack?.stop();
});

function lastRequest() {
  const r = stack.mocks.openai.requests();
  return r[r.length - 1];
}

describe('chat completions', () => {
  test('non-streamed completion comes back as the mock sent it, with usage in the ledger', async () => {
    stack.mocks.openai.reset();
    const { data, response } = await client.chat.completions
      .create({
        model: 'openai/gpt-4o-mini',
        messages: [
          { role: 'system', content: 'be brief' },
          { role: 'user', content: 'hello gateway' },
        ],
        temperature: 0.2,
      })
      .withResponse();
    assert.equal(data.choices[0].message.content, 'mock(openai) reply to: hello gateway');
    assert.equal(data.object, 'chat.completion');
    assert.equal(response.headers.get('x-tollgate-provider'), 'openai');
    assert.equal(response.headers.get('x-tollgate-model'), 'gpt-4o-mini');
    const requestId = response.headers.get('x-tollgate-request-id');
    assert.match(requestId, /^req_[0-9a-f]{32}$/);
    assert.match(response.headers.get('server-timing'), /gateway;dur=\d+, upstream;dur=\d+/);

    const sent = lastRequest();
    assert.equal(sent.json.model, 'gpt-4o-mini', 'provider prefix stripped');
    assert.equal(sent.json.temperature, 0.2, 'parameters passed through');
    assert.equal(sent.headers.authorization, `Bearer ${UPSTREAM_KEY}`, 'provider key, not the virtual key');

    const rows = await stack.ledger({ keyId: key.id, ids: [requestId] });
    const row = rows.find((r) => r.request_id === requestId);
    assert.ok(row, 'ledger row for the request');
    assert.equal(row.prompt_tokens, data.usage.prompt_tokens);
    assert.equal(row.completion_tokens, data.usage.completion_tokens);
    assert.equal(row.total_tokens, data.usage.total_tokens);
    assert.equal(row.provider, 'openai');
    assert.equal(row.model_requested, 'openai/gpt-4o-mini');
    assert.equal(row.outcome, 'ok');
    assert.equal(row.status, 200);
    assert.equal(row.stream, 0);
    assert.equal(row.usage_source, 'provider');
    // Priced from data/prices.json: gpt-4o-mini is in the table.
    assert.equal(row.pricing, 'priced');
    assert.ok(row.cost_micros > 0, `cost ${row.cost_micros}`);
  });

  test('streamed completion: deltas concatenate to the mock text; usage counted even when not asked', async () => {
    stack.mocks.openai.reset();
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'stream this please' }],
      stream: true,
    });
    let text = '';
    let sawUsage = false;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) sawUsage = true;
    }
    assert.equal(text, 'mock(openai) reply to: stream this please');
    assert.equal(sawUsage, false, 'the usage chunk the gateway asked for is stripped again');
    const sent = lastRequest();
    assert.equal(sent.json.stream_options.include_usage, true, 'gateway always asks for usage');
    const usage = sent.response.usage;
    assert.ok(usage.completion_tokens > 0);

    const rows = await stack.ledger({ keyId: key.id, count: 2 });
    const row = rows.find((r) => r.stream === 1 && r.model_requested === 'gpt-4o-mini');
    assert.ok(row, JSON.stringify(rows));
    assert.equal(row.prompt_tokens, usage.prompt_tokens);
    assert.equal(row.completion_tokens, usage.completion_tokens);
    assert.equal(row.outcome, 'ok');
    assert.ok(row.ttft_ms !== null && row.ttft_ms >= 0);
  });

  test('stream_options.include_usage from the client is honoured', async () => {
    const stream = await client.chat.completions.create({
      model: 'openai/gpt-4o-mini',
      messages: [{ role: 'user', content: 'count me' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage = null;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    assert.ok(usage, 'usage chunk delivered');
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    assert.equal(usage.completion_tokens, lastRequest().response.usage.completion_tokens);
  });

  test('stream chunks arrive incrementally, before the mock has sent its last', async () => {
    stack.mocks.openai.reset();
    // 150 ms between frames upstream: a buffering gateway would deliver all at once at the end.
    stack.mocks.openai.enqueue({ chunkDelayMs: 150 });
    const res = await fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'one two three four five' }] }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const arrivals = [];
    const { frames } = await readSse(res, () => arrivals.push(Date.now()));
    const rec = lastRequest();
    assert.ok(frames.length >= 8, `frames: ${frames.length}`);
    assert.equal(frames[frames.length - 1], 'data: [DONE]');
    // The first frame reached the client long before the mock finished writing.
    assert.ok(arrivals[0] < rec.response.completedAt - 500, `first at ${arrivals[0]}, mock done at ${rec.response.completedAt}`);
    assert.ok(arrivals[arrivals.length - 1] - arrivals[0] > 800, 'frames spread over time');
  });

  test('a client that disconnects mid-stream still gets exactly one ledger row', async () => {
    stack.mocks.openai.reset();
    stack.mocks.openai.enqueue({ chunkDelayMs: 300 });
    const controller = new AbortController();
    const res = await fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      signal: controller.signal,
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'a b c d e f g h i j' }] }),
    });
    const id = res.headers.get('x-tollgate-request-id');
    const reader = res.body.getReader();
    await reader.read();
    await reader.read();
    controller.abort();
    await reader.read().catch(() => {});
    const until = Date.now() + 15_000;
    let row;
    while (!row && Date.now() < until) {
      row = (await stack.ledger({ keyId: key.id })).find((r) => r.request_id === id);
      if (!row) await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(row, 'ledger row written for the aborted stream');
    assert.equal(row.outcome, 'client_aborted');
    const all = (await stack.ledger({ keyId: key.id })).filter((r) => r.request_id === id);
    assert.equal(all.length, 1);
  });

  test('a model alias from config resolves to provider/model', async () => {
    await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(lastRequest().json.model, 'gpt-4o');
  });

  test('metadata header is stored on the ledger row', async () => {
    const { response } = await client.chat.completions
      .create({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'tagged' }] }, { headers: { 'x-tollgate-metadata': '{"user":"u-42","feature":"search"}' } })
      .withResponse();
    const id = response.headers.get('x-tollgate-request-id');
    const rows = await stack.ledger({ keyId: key.id, ids: [id] });
    const row = rows.find((r) => r.request_id === id);
    assert.deepEqual(JSON.parse(row.metadata), { feature: 'search', user: 'u-42' });
  });
});

describe('embeddings and models', () => {
  test('embeddings round-trip through the SDK (base64 by default) and are ledgered', async () => {
    stack.mocks.openai.reset();
    const { data: res, response } = await client.embeddings
      .create({ model: 'openai/text-embedding-3-small', input: ['alpha beta', 'gamma'] })
      .withResponse();
    assert.equal(res.data.length, 2);
    assert.equal(res.data[0].embedding.length, 8);
    const sent = lastRequest();
    assert.equal(sent.path, '/v1/embeddings');
    assert.equal(sent.json.model, 'text-embedding-3-small');
    // Same vectors as asking the mock directly in float format.
    const direct = await new OpenAI({ apiKey: UPSTREAM_KEY, baseURL: `${stack.mocks.openai.url}/v1`, maxRetries: 0 }).embeddings.create({
      model: 'text-embedding-3-small',
      input: ['alpha beta', 'gamma'],
      encoding_format: 'float',
    });
    assert.deepEqual(res.data[1].embedding, direct.data[1].embedding.map(Math.fround));
    const id = response.headers.get('x-tollgate-request-id');
    const rows = await stack.ledger({ keyId: key.id, ids: [id] });
    const row = rows.find((r) => r.request_id === id);
    assert.equal(row.endpoint, 'embeddings');
    assert.equal(row.prompt_tokens, res.usage.prompt_tokens);
  });

  test('demo provider answers without any key (and is ledgered as unpriced, not free)', async () => {
    const { data: r, response } = await client.chat.completions.create({ model: 'demo', messages: [{ role: 'user', content: 'hi' }] }).withResponse();
    const id = response.headers.get('x-tollgate-request-id');
    let row;
    for (let i = 0; i < 50 && !row; i++) {
      row = (await stack.admin('GET', `/admin/requests/${id}`)).json;
      if (row?.error) row = undefined;
      if (!row) await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(row.pricing, 'unpriced');
    assert.equal(row.cost_micros, null);
    assert.equal(r.choices[0].message.content, "Hello from tollgate's demo provider. You said: hi");
    const e = await client.embeddings.create({ model: 'demo/echo', input: 'hi' });
    assert.equal(e.data[0].embedding.length, 16);
  });

  test('GET /v1/models lists aliases and provider models', async () => {
    const list = await client.models.list();
    const ids = list.data.map((m) => m.id);
    for (const id of ['demo', 'gpt-4o-mini', 'openai/gpt-4o-mini', 'demo/echo']) assert.ok(ids.includes(id), `${id} in ${ids}`);
  });
});
