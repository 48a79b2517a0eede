// Guardrails end to end under wrangler dev: with `redact` on, the mock
// provider (which records every request it receives) never sees the matched
// values, and in reversible mode the client gets its own data back — streamed
// and not, also when a placeholder arrives split over two deltas. `block`
// is a 400 naming the detector, without the value; output guardrails redact
// or block what the model says; limits come from the key and the route; every
// decision is in the ledger (GET /admin/requests/{id}).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { readSse, startStack } from './harness.mjs';

const EMAIL = 'jane.doe@example.com';
const PHONE = '+44 20 7946 0958';
const CARD = '4111 1111 1111 1111';

let stack;
let mock;
let key;

before(async () => {
  stack = await startStack({
    providers: { openai: { apiKey: 'sk-test-guard-0000000000000000' } },
    editConfig(g) {
      g.guardrails = {
        input: { email: 'redact', phone: 'redact', card: 'block', codenames: 'redact' },
        output: { card: 'redact', api_key: 'block' },
        words: { codenames: ['Project Falcon'] },
        reversible: true,
      };
      g.routes = {
        strict: {
          strategy: 'fallback',
          targets: [{ model: 'openai/gpt-4o-mini' }],
          guardrails: { input: { email: 'block' } },
        },
      };
    },
  });
  mock = stack.mocks.openai;
  key = await stack.createKey({ name: 'guard' });
});

after(async () => {
  await stack?.stop();
});

function chat(k, body, headers = {}) {
  return fetch(`${stack.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

function contentOf(frames) {
  let text = '';
  for (const f of frames) {
    if (!f.startsWith('data: ') || f === 'data: [DONE]') continue;
    const c = JSON.parse(f.slice(6)).choices?.[0]?.delta?.content;
    if (typeof c === 'string') text += c;
  }
  return text;
}

/** The ledger row of a request, once written (after the response). */
async function ledgerRow(id) {
  for (let i = 0; i < 100; i++) {
    const r = await stack.admin('GET', `/admin/requests/${id}`);
    if (r.status === 200) return r.json;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no ledger row for ${id}`);
}

function sseBody(pieces) {
  const chunk = (delta, finish = null) =>
    `data: ${JSON.stringify({ id: 'chatcmpl-x', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-mini', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
  return (
    chunk({ role: 'assistant', content: '' }) +
    pieces.map((p) => chunk({ content: p })).join('') +
    chunk({}, 'stop') +
    `data: ${JSON.stringify({ id: 'chatcmpl-x', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-mini', choices: [], usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } })}\n\n` +
    'data: [DONE]\n\n'
  );
}

test('redact: the provider never sees the values; reversible: the JSON answer has them back', async () => {
  mock.reset();
  const prompt = `Mail ${EMAIL} or call ${PHONE} about Project Falcon.`;
  const r = await chat(key, { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: prompt }] });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  const seen = mock.requests();
  assert.equal(seen.length, 1);
  const sent = seen[0].body;
  for (const secret of [EMAIL, PHONE, 'Project Falcon', 'jane.doe']) assert.ok(!sent.includes(secret), `provider saw ${secret}: ${sent}`);
  assert.equal(seen[0].json.messages[0].content, 'Mail <EMAIL_1> or call <PHONE_1> about <CODENAMES_1>.');
  // The mock echoes the prompt it received; the gateway restores it.
  const answer = body.choices[0].message.content;
  assert.ok(answer.includes(EMAIL) && answer.includes(PHONE) && answer.includes('Project Falcon'), answer);
  assert.ok(!answer.includes('<EMAIL_1>'), answer);

  const row = await ledgerRow(r.headers.get('x-tollgate-request-id'));
  const decisions = row.guardrails.map((g) => `${g.stage}:${g.detector}:${g.action}:${g.count}`).sort();
  assert.deepEqual(decisions, ['input:codenames:redact:1', 'input:email:redact:1', 'input:phone:redact:1']);
  assert.ok(!JSON.stringify(row).includes(EMAIL), 'the ledger never holds the value');
});

test('reversible in a stream: values restored, the provider saw placeholders', async () => {
  mock.reset();
  const r = await chat(key, { model: 'openai/gpt-4o-mini', stream: true, messages: [{ role: 'user', content: `I am ${EMAIL}, phone ${PHONE}` }] });
  assert.equal(r.status, 200);
  const { frames } = await readSse(r);
  assert.equal(frames.at(-1), 'data: [DONE]');
  const text = contentOf(frames);
  assert.ok(text.includes(EMAIL) && text.includes(PHONE), text);
  assert.ok(!mock.requests()[0].body.includes(EMAIL));
});

test('a placeholder split over two deltas (and over TCP writes) is restored', async () => {
  mock.reset();
  mock.enqueue({ body: sseBody(['Hello <EMA', 'IL_1>, your number <PH', 'ONE_1', '> is noted.']), headers: { 'content-type': 'text/event-stream' }, sliceBytes: 7 });
  const r = await chat(key, { model: 'openai/gpt-4o-mini', stream: true, messages: [{ role: 'user', content: `I am ${EMAIL}, phone ${PHONE}` }] });
  assert.equal(r.status, 200);
  const { frames } = await readSse(r);
  assert.equal(contentOf(frames), `Hello ${EMAIL}, your number ${PHONE} is noted.`);
  assert.equal(frames.at(-1), 'data: [DONE]');
});

test('block: 400 naming the detector, never the value; nothing reaches the provider', async () => {
  mock.reset();
  const r = await chat(key, { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: `charge ${CARD} please` }] });
  const body = await r.json();
  assert.equal(r.status, 400);
  assert.equal(body.error.code, 'guardrail_blocked');
  assert.equal(body.error.type, 'invalid_request_error');
  assert.match(body.error.message, /'card'/);
  assert.ok(!JSON.stringify(body).includes('4111'));
  assert.equal(mock.requests().length, 0);
  const row = await ledgerRow(r.headers.get('x-tollgate-request-id'));
  assert.equal(row.outcome, 'rejected');
  assert.deepEqual(row.guardrails.map((g) => [g.detector, g.action]), [['card', 'block']]);
  assert.ok(!JSON.stringify(row).includes('4111'));
});

test('output guardrails: a card in the answer is redacted (JSON and stream); an API key blocks', async () => {
  mock.reset();
  const completion = {
    id: 'chatcmpl-y', object: 'chat.completion', created: 1, model: 'gpt-4o-mini',
    choices: [{ index: 0, message: { role: 'assistant', content: `Use card ${CARD}.` }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 },
  };
  mock.enqueue({ body: completion });
  let r = await chat(key, { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'card?' }] });
  let body = await r.json();
  assert.equal(r.status, 200);
  assert.equal(body.choices[0].message.content, 'Use card <CARD_REDACTED>.');
  let row = await ledgerRow(r.headers.get('x-tollgate-request-id'));
  assert.deepEqual(row.guardrails.map((g) => `${g.stage}:${g.detector}:${g.action}`), ['output:card:redact']);

  // The card number split over deltas is still caught (the holdback).
  mock.enqueue({ body: sseBody(['Use card 4111 11', '11 1111 1111', ' now.']), headers: { 'content-type': 'text/event-stream' } });
  r = await chat(key, { model: 'openai/gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'card?' }] });
  let { frames } = await readSse(r);
  assert.equal(contentOf(frames), 'Use card <CARD_REDACTED> now.');
  row = await ledgerRow(r.headers.get('x-tollgate-request-id'));
  assert.deepEqual(row.guardrails.map((g) => `${g.stage}:${g.detector}:${g.action}`), ['output:card:redact']);

  const leaked = structuredClone(completion);
  leaked.choices[0].message.content = 'my key is sk-proj-abc123DEF456ghi789JKL0';
  mock.enqueue({ body: leaked });
  r = await chat(key, { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'key?' }] });
  body = await r.json();
  assert.equal(r.status, 400);
  assert.equal(body.error.code, 'guardrail_blocked');
  assert.match(body.error.message, /'api_key'/);
  assert.ok(!JSON.stringify(body).includes('sk-proj'));

  mock.enqueue({ body: sseBody(['here: sk-proj-abc12', '3DEF456ghi789JKL0 ok']), headers: { 'content-type': 'text/event-stream' } });
  r = await chat(key, { model: 'openai/gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'key?' }] });
  ({ frames } = await readSse(r));
  const all = frames.join('\n');
  assert.ok(!all.includes('sk-proj'), all);
  assert.ok(all.includes('guardrail_blocked'));
  assert.notEqual(frames.at(-1), 'data: [DONE]');
});

test('per key and per route: limits, a stricter route, and a non-reversible key', async () => {
  const limited = await stack.createKey({ name: 'limited', guardrails: { max_messages: 1, max_tokens: 50, reversible: false } });
  assert.deepEqual(limited.guardrails, { max_messages: 1, max_tokens: 50, reversible: false });
  const two = [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }];
  let r = await chat(limited, { model: 'openai/gpt-4o-mini', messages: two });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error.code, 'too_many_messages');
  r = await chat(limited, { model: 'openai/gpt-4o-mini', max_tokens: 51, messages: [{ role: 'user', content: 'a' }] });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error.param, 'max_tokens');
  // Not reversible for this key: the answer keeps the placeholder.
  r = await chat(limited, { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: `I am ${EMAIL}` }] });
  const body = await r.json();
  assert.equal(r.status, 200);
  assert.ok(body.choices[0].message.content.includes('<EMAIL_1>'));
  assert.ok(!body.choices[0].message.content.includes(EMAIL));
  // The route blocks what the global policy only redacts.
  r = await chat(key, { model: 'strict', messages: [{ role: 'user', content: `I am ${EMAIL}` }] });
  assert.equal(r.status, 400);
  assert.match((await r.json()).error.message, /'email'/);
  // Strict validation on the admin API.
  const bad = await stack.admin('POST', '/admin/keys', { name: 'bad', guardrails: { input: { emial: 'redact' } } });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.param, 'guardrails');
  const badPattern = await stack.admin('PATCH', `/admin/keys/${limited.id}`, { guardrails: { patterns: { x: '(' }, input: { x: 'block' } } });
  assert.equal(badPattern.status, 400);
  // A key may use the global operator detector by name.
  const ok = await stack.admin('PATCH', `/admin/keys/${limited.id}`, { guardrails: { input: { codenames: 'block' } } });
  assert.equal(ok.status, 200, ok.text);
});

test('/v1/messages with output guardrails in force → 400 guardrails_unsupported_endpoint (fails closed), nothing upstream', async () => {
  mock.reset();
  const r = await fetch(`${stack.url}/v1/messages`, {
    method: 'POST',
    headers: { 'x-api-key': key.key, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'openai/gpt-4o-mini', max_tokens: 20, messages: [{ role: 'user', content: 'hello' }] }),
  });
  const body = await r.json();
  assert.equal(r.status, 400, JSON.stringify(body));
  assert.equal(body.type, 'error', 'Anthropic error shape on /v1/messages');
  assert.match(body.error.message, /not supported on \/v1\/messages/);
  assert.equal(mock.requests().length, 0);
});
