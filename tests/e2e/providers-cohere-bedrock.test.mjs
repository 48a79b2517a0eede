// Cohere v2 and Amazon Bedrock (Converse, SigV4, AWS event streams) through
// the official `openai` SDK, changing only `model`. The Bedrock mock checks
// the SigV4 signature itself and answers 403 when it does not match.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { startStack } from './harness.mjs';

const COHERE_KEY = 'co-CANARY-cohere-0123456789';
const AWS_ID = 'AKIDCANARY0000000000';
const AWS_SECRET = 'wJalrXUtnFEMI/K7MDENG/CANARYSECRETKEY0000';
let stack;
let client;

before(async () => {
  stack = await startStack({
    providers: { cohere: { apiKey: COHERE_KEY }, bedrock: { apiKey: `${AWS_ID}:${AWS_SECRET}` } },
  });
  const key = await stack.createKey({ name: 'more-providers' });
  client = new OpenAI({ apiKey: key.key, baseURL: `${stack.url}/v1`, maxRetries: 0 });
});

after(async () => {
  await stack?.stop();
});

const CASES = [
  { provider: 'cohere', model: 'cohere/command-a-03-2025', upstream: 'command-a-03-2025' },
  { provider: 'bedrock', model: 'bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0', upstream: 'anthropic.claude-3-5-sonnet-20240620-v1:0' },
];

function last(provider) {
  const r = stack.mocks[provider].requests();
  return r[r.length - 1];
}

function assertNoSecrets(text, where) {
  for (const s of [COHERE_KEY, AWS_SECRET, AWS_SECRET.slice(0, 12)]) assert.ok(!text.includes(s), `${where} leaks a secret`);
}

for (const c of CASES) {
  describe(c.provider, () => {
    test('completion, with usage and the provider wire format upstream', async () => {
      stack.mocks[c.provider].reset();
      const { data, response } = await client.chat.completions
        .create({ model: c.model, messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello there' }] })
        .withResponse();
      assert.equal(data.choices[0].message.content, `mock(${c.provider}) reply to: hello there`);
      assert.equal(data.choices[0].finish_reason, 'stop');
      const rec = last(c.provider);
      assert.equal(data.usage.prompt_tokens, rec.response.usage.prompt_tokens);
      assert.equal(data.usage.completion_tokens, rec.response.usage.completion_tokens);
      assert.equal(response.headers.get('x-tollgate-provider'), c.provider);
      if (c.provider === 'cohere') {
        assert.equal(rec.path, '/v2/chat');
        assert.equal(rec.headers.authorization, `Bearer ${COHERE_KEY}`);
        assert.equal(rec.json.model, c.upstream);
        assert.equal(rec.json.messages[0].role, 'system');
        assert.ok(!('stream_options' in rec.json), 'no OpenAI-only fields (Cohere answers 422 to unknown fields)');
      } else {
        assert.equal(decodeURIComponent(rec.path), `/model/${c.upstream}/converse`);
        assert.match(rec.headers.authorization, new RegExp(`^AWS4-HMAC-SHA256 Credential=${AWS_ID}/\\d{8}/us-east-1/bedrock/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$`));
        assert.match(rec.headers['x-amz-date'], /^\d{8}T\d{6}Z$/);
        assert.deepEqual(rec.json.system, [{ text: 'be brief' }]);
        assert.equal(rec.json.messages[0].content[0].text, 'hello there');
      }
      assertNoSecrets(JSON.stringify(data), 'response');
    });

    test('stream: deltas join to the text, one role chunk, usage only when asked', async () => {
      for (const includeUsage of [false, true]) {
        const stream = await client.chat.completions.create({
          model: c.model,
          stream: true,
          ...(includeUsage ? { stream_options: { include_usage: true } } : {}),
          messages: [{ role: 'user', content: 'stream me please' }],
        });
        let text = '';
        let roles = 0;
        let usage = null;
        for await (const chunk of stream) {
          if (chunk.choices[0]?.delta?.role) roles++;
          text += chunk.choices[0]?.delta?.content ?? '';
          if (chunk.usage) usage = chunk.usage;
        }
        assert.equal(text, `mock(${c.provider}) reply to: stream me please`);
        assert.equal(roles, 1);
        assert.equal(usage !== null, includeUsage, `usage present only when asked (${includeUsage})`);
      }
    });

    test('tool call with arguments that parse', async () => {
      const r = await client.chat.completions.create({
        model: c.model,
        messages: [{ role: 'user', content: 'weather in Paris' }],
        tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
        tool_choice: 'required',
      });
      const call = r.choices[0].message.tool_calls?.[0];
      assert.ok(call, JSON.stringify(r));
      assert.equal(call.function.name, 'get_weather');
      assert.equal(typeof JSON.parse(call.function.arguments), 'object');
      assert.equal(r.choices[0].finish_reason, 'tool_calls');
    });

    test('upstream errors come back in OpenAI shape without secrets', async () => {
      stack.mocks[c.provider].enqueue({ rateLimit: { retryAfter: '4' } });
      const err = await client.chat.completions.create({ model: c.model, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
      assert.equal(err.status, 429);
      assert.equal(err.headers.get('retry-after'), '4');
      assert.equal(err.code, 'upstream_rate_limited');
      stack.mocks[c.provider].enqueue({ status: 500 });
      const err2 = await client.chat.completions.create({ model: c.model, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
      assert.ok(err2.status >= 500, String(err2.status));
      assertNoSecrets(JSON.stringify(err2.error ?? {}), 'error');
    });
  });
}

test('Bedrock with a wrong secret: the mock rejects the signature, the client gets 502 upstream_auth_failed', async () => {
  const bad = await startStack({ providers: { bedrock: { apiKey: `${AWS_ID}:${AWS_SECRET}` } }, secrets: { AWS_SECRET_ACCESS_KEY: 'not-the-right-secret-0000000000' } });
  try {
    const key = await bad.createKey({ name: 'bad-sig' });
    const c = new OpenAI({ apiKey: key.key, baseURL: `${bad.url}/v1`, maxRetries: 0 });
    const err = await c.chat.completions.create({ model: CASES[1].model, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    assert.equal(err.status, 502);
    assert.equal(err.code, 'upstream_auth_failed');
    assert.equal(bad.mocks.bedrock.requests()[0].response.status, 403);
  } finally {
    await bad.stop();
  }
});

test('Cohere embeddings round-trip through the SDK (base64 default)', async () => {
  stack.mocks.cohere.reset();
  const e = await client.embeddings.create({ model: 'cohere/embed-v4.0', input: ['alpha beta', 'gamma'] });
  assert.equal(e.data.length, 2);
  assert.ok(e.data[0].embedding.length > 0);
  assert.equal(last('cohere').path, '/v2/embed');
  assert.equal(last('cohere').json.input_type, 'search_document');
});
