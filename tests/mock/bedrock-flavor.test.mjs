// Tests for the mock provider's Amazon Bedrock flavor (tests/mock/flavors/bedrock.mjs), over raw HTTP
// with real SigV4 signatures.
// Run: node --test tests/mock/bedrock-flavor.test.mjs
import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startMockProvider } from './mock-provider.mjs';
import {
  createFlavor,
  crc32,
  encodeJsonLines,
  decodeEventStream,
  computeSignature,
  canonicalUri,
  signRequest,
  amzDate,
  SIGNATURE_MISMATCH,
  INVALID_TOKEN,
} from './flavors/bedrock.mjs';

const FIXTURES = fileURLToPath(new URL('../fixtures/bedrock/', import.meta.url));
const fixture = (name) => readFileSync(FIXTURES + name, 'utf8');

const CREDS = { accessKeyId: 'AKIDMOCKBEDROCK00001', secretAccessKey: 'mock/Secret+Key0123456789abcdefghijklmnop' };
const REGION = 'us-east-1';
const MODEL = 'anthropic.claude-3-5-sonnet-20240620-v1:0';
const modelPath = (model = MODEL, stream = false) => `/model/${encodeURIComponent(model)}/${stream ? 'converse-stream' : 'converse'}`;

let mock;

before(async () => {
  mock = await startMockProvider({ name: 'bedrock', flavor: 'bedrock', apiKey: CREDS });
});
after(async () => {
  await mock.close();
});
beforeEach(() => mock.reset());

// ------------------------------------------------------------ helpers

/** A signed POST, the way the gateway sends it (content-type signed, x-amz-content-sha256 sent). */
function post(path, body, { creds = CREDS, date = amzDate(Date.now()), tamper = null, headers = {}, target = mock } = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const url = target.url + path;
  const signed = creds
    ? signRequest({ method: 'POST', url, headers: { 'content-type': 'application/json' }, body: text, credentials: creds, region: REGION, amzDate: date })
    : { 'content-type': 'application/json' };
  return fetch(url, { method: 'POST', headers: { ...signed, ...headers }, body: tamper ?? text });
}

const converse = (body, opts) => post(modelPath(), body, opts);
const converseStream = (body, opts) => post(modelPath(MODEL, true), body, opts);

const ask = (text = 'Say hello to the gateway', extra = {}) => ({ messages: [{ role: 'user', content: [{ text }] }], ...extra });
const REPLY = 'mock(bedrock) reply to: Say hello to the gateway';

async function json(res, status = 200) {
  const text = await res.text();
  assert.equal(res.status, status, text);
  assert.match(res.headers.get('content-type'), /^application\/json/);
  assert.match(res.headers.get('x-amzn-requestid'), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-a[0-9a-f]{3}-[0-9a-f]{12}$/);
  return JSON.parse(text);
}

async function awsError(res, status, type) {
  const body = await json(res, status);
  assert.deepEqual(Object.keys(body), ['message']);
  assert.match(res.headers.get('x-amzn-errortype'), new RegExp(`^${type}:http://internal\\.amazon\\.com/coral/`));
  return body.message;
}

/** Decoded stream messages: [{ type, kind, payload }]. */
async function streamEvents(res) {
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/vnd.amazon.eventstream');
  const buf = Buffer.from(await res.arrayBuffer());
  return decodeEventStream(buf).map(({ headers, payload }) => {
    if (headers[':message-type'] === 'exception') {
      return { type: 'exception', kind: headers[':exception-type'], payload: JSON.parse(payload) };
    }
    assert.deepEqual(Object.keys(headers), [':event-type', ':content-type', ':message-type'], 'header order as Bedrock sends it');
    assert.equal(headers[':content-type'], 'application/json');
    return { type: headers[':message-type'], kind: headers[':event-type'], payload: JSON.parse(payload) };
  });
}

// ---------------------------------------------------------- framing

describe('event-stream framing', () => {
  test('CRC-32 check value', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  });

  test('the encoder reproduces the recorded AWS frame byte for byte', () => {
    const recorded = Buffer.from(fixture('stream.model_stream_error.b64').trim(), 'base64');
    assert.deepEqual(encodeJsonLines(fixture('stream.model_stream_error.jsonl')), recorded);
    const [m] = decodeEventStream(recorded);
    assert.deepEqual(m.headers, { ':message-type': 'exception', ':exception-type': 'modelStreamErrorException', ':content-type': 'application/json' });
  });

  test('every .b64 stream fixture is its .jsonl encoded', () => {
    const names = readdirSync(FIXTURES).filter((f) => f.startsWith('stream.') && f.endsWith('.jsonl'));
    assert.ok(names.length >= 10);
    for (const name of names) {
      const b64 = name.replace(/\.jsonl$/, '.b64');
      assert.equal(encodeJsonLines(fixture(name)).toString('base64'), fixture(b64).trim(), b64);
      const lines = fixture(name).split('\n').filter((l) => l.trim());
      assert.equal(decodeEventStream(Buffer.from(fixture(b64).trim(), 'base64')).length, lines.length, b64);
    }
  });

  test('a corrupted byte fails the CRC', () => {
    const buf = encodeJsonLines(fixture('stream.max_tokens.jsonl'));
    buf[buf.length - 10] ^= 1;
    assert.throws(() => decodeEventStream(buf), /CRC/);
  });
});

// ------------------------------------------------------------ SigV4

describe('SigV4', () => {
  const SUITE = { secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', amzDate: '20150830T123600Z', region: 'us-east-1', service: 'service' };
  const suite = (method, headers, signedHeaders, body = '') =>
    computeSignature({ method, path: '/', headers: { host: 'example.amazonaws.com', 'x-amz-date': SUITE.amzDate, ...headers }, signedHeaders, body, ...SUITE }).signature;

  test('the verifier reproduces AWS test-suite signatures', () => {
    assert.equal(suite('GET', {}, ['host', 'x-amz-date']), '5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31');
    assert.equal(suite('POST', {}, ['host', 'x-amz-date']), '5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b');
    assert.equal(
      suite('POST', { 'content-type': 'application/x-www-form-urlencoded' }, ['content-type', 'host', 'x-amz-date'], 'Param1=value1'),
      'ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a',
    );
    const token =
      'AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==';
    assert.equal(
      suite('POST', { 'x-amz-security-token': token }, ['host', 'x-amz-date', 'x-amz-security-token']),
      '85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead',
    );
    assert.equal(canonicalUri('/model/a-v1%3A0/converse'), '/model/a-v1%253A0/converse');
  });

  test('the Rust signer\'s requests (sigv4.bedrock.json) verify', () => {
    for (const c of JSON.parse(fixture('sigv4.bedrock.json'))) {
      const u = new URL(c.url);
      const flavor = createFlavor({ now: () => Date.UTC(+c.amz_date.slice(0, 4), +c.amz_date.slice(4, 6) - 1, +c.amz_date.slice(6, 8), +c.amz_date.slice(9, 11), +c.amz_date.slice(11, 13)) });
      const ctx = (body, headers = {}) => ({
        seq: 1,
        method: c.method,
        pathname: u.pathname,
        query: {},
        headers: { host: u.host, 'content-type': 'application/json', 'user-agent': 'tollgate/x', ...c.signed, ...headers },
        body,
        apiKey: { accessKeyId: c.access_key_id, secretAccessKey: c.secret_access_key, sessionToken: c.session_token },
      });
      assert.equal(flavor.authenticate(ctx(c.body)), null, c.name);
      const bad = flavor.authenticate(ctx(c.body + ' '));
      assert.equal(bad.status, 403, c.name);
      const message = JSON.parse(bad.body).message;
      assert.ok(message.startsWith(SIGNATURE_MISMATCH), message);
      assert.ok(message.includes(c.canonical_request.split('\n')[1]), 'AWS prints the canonical request');
    }
  });
});

// ------------------------------------------------------------- auth

describe('authentication', () => {
  test('a correctly signed request is served', async () => {
    const body = await json(await converse(ask()));
    assert.equal(body.output.message.content[0].text, REPLY);
  });

  test('signature mismatches, tampering and missing auth answer like AWS', async () => {
    let m = await awsError(await converse(ask(), { creds: { ...CREDS, secretAccessKey: 'wrong' } }), 403, 'InvalidSignatureException');
    assert.ok(m.startsWith(SIGNATURE_MISMATCH), m);
    assert.match(m, /The Canonical String for this request should have been\n'POST\n\/model\/anthropic\.claude-3-5-sonnet-20240620-v1%253A0\/converse\n/);
    m = await awsError(await converse(ask(), { tamper: JSON.stringify(ask('something else')) }), 403, 'InvalidSignatureException');
    assert.ok(m.startsWith(SIGNATURE_MISMATCH));
    m = await awsError(await converse(ask(), { creds: null }), 403, 'MissingAuthenticationTokenException');
    assert.equal(m, 'Missing Authentication Token');
    m = await awsError(await converse(ask(), { creds: { ...CREDS, accessKeyId: 'AKIDSOMEONEELSE00000' } }), 403, 'UnrecognizedClientException');
    assert.equal(m, INVALID_TOKEN);
    m = await awsError(await converse(ask(), { headers: { authorization: 'Bearer abc' } }), 403, 'IncompleteSignatureException');
    m = await awsError(await converse(ask(), { date: amzDate(Date.now() - 20 * 60 * 1000) }), 403, 'InvalidSignatureException');
    assert.match(m, /^Signature expired: \d{8}T\d{6}Z is now earlier than/);
    m = await awsError(await converse(ask(), { date: amzDate(Date.now() + 20 * 60 * 1000) }), 403, 'InvalidSignatureException');
    assert.match(m, /^Signature not yet current/);
    assert.equal(mock.requests().length, 7, 'every attempt is recorded');
  });

  test('temporary credentials need their session token, signed', async () => {
    const temp = { ...CREDS, sessionToken: 'IQoJb3JpZ2luX2VjEMOCK//token==' };
    const tokenMock = await startMockProvider({ name: 'bedrock', flavor: 'bedrock', apiKey: `${temp.accessKeyId}:${temp.secretAccessKey}:${temp.sessionToken}` });
    try {
      await json(await post(modelPath(), ask(), { creds: temp, target: tokenMock }));
      const m = await awsError(await post(modelPath(), ask(), { target: tokenMock }), 403, 'UnrecognizedClientException');
      assert.equal(m, INVALID_TOKEN);
      // A token sent but not signed.
      await awsError(await post(modelPath(), ask(), { target: tokenMock, headers: { 'x-amz-security-token': temp.sessionToken } }), 403, 'InvalidSignatureException');
    } finally {
      await tokenMock.close();
    }
  });
});

// ---------------------------------------------------------- converse

describe('Converse', () => {
  test('text answer: compact JSON, alphabetical keys, usage', async () => {
    const res = await converse(ask(undefined, { system: [{ text: 'You are terse.' }], inferenceConfig: { temperature: 0.2 } }));
    const text = await res.clone().text();
    assert.ok(!text.includes('\n'), 'compact JSON');
    const body = await json(res);
    assert.deepEqual(Object.keys(body), ['metrics', 'output', 'stopReason', 'usage']);
    assert.deepEqual(body.output, { message: { content: [{ text: REPLY }], role: 'assistant' } });
    assert.equal(body.stopReason, 'end_turn');
    const out = REPLY.split(' ').length;
    assert.deepEqual(body.usage, { inputTokens: 8, outputTokens: out, totalTokens: 8 + out });
    assert.deepEqual(mock.requests()[0].response.usage, { prompt_tokens: 8, completion_tokens: out, total_tokens: 8 + out });
  });

  test('maxTokens and stop sequences', async () => {
    let body = await json(await converse(ask(undefined, { inferenceConfig: { maxTokens: 2 } })));
    assert.deepEqual([body.output.message.content[0].text, body.stopReason], ['mock(bedrock) reply', 'max_tokens']);
    body = await json(await converse(ask(undefined, { inferenceConfig: { stopSequences: [' to the'] } })));
    assert.deepEqual([body.output.message.content[0].text, body.stopReason], ['mock(bedrock) reply to: Say hello', 'stop_sequence']);
  });

  test('tool choice any / tool calls a tool; auto answers text; reasoning when enabled', async () => {
    const toolConfig = (toolChoice) => ({
      tools: [
        { toolSpec: { name: 'get_weather', inputSchema: { json: { type: 'object', properties: { city: { type: 'string' } } } } } },
        { toolSpec: { name: 'get_time', inputSchema: { json: { type: 'object' } } } },
      ],
      ...(toolChoice ? { toolChoice } : {}),
    });
    let body = await json(await converse(ask('Paris', { toolConfig: toolConfig({ any: {} }) })));
    const [call] = body.output.message.content;
    assert.equal(call.toolUse.name, 'get_weather');
    assert.deepEqual(call.toolUse.input, { echo: 'Paris' });
    assert.match(call.toolUse.toolUseId, /^tooluse_[A-Za-z0-9]{22}$/);
    assert.equal(body.stopReason, 'tool_use');
    body = await json(await converse(ask('Paris', { toolConfig: toolConfig({ tool: { name: 'get_time' } }) })));
    assert.equal(body.output.message.content[0].toolUse.name, 'get_time');
    body = await json(await converse(ask('Paris', { toolConfig: toolConfig({ auto: {} }) })));
    assert.equal(body.output.message.content[0].text, 'mock(bedrock) reply to: Paris');
    body = await json(await converse(ask('hi', { additionalModelRequestFields: { thinking: { type: 'enabled', budget_tokens: 1024 } } })));
    assert.equal(body.output.message.content[0].reasoningContent.reasoningText.text, 'mock thinking about: hi');
    assert.equal(body.output.message.content[1].text, 'mock(bedrock) reply to: hi');
  });

  test('tool results are answered', async () => {
    const body = await json(
      await converse({
        messages: [
          { role: 'user', content: [{ text: 'weather?' }] },
          { role: 'assistant', content: [{ toolUse: { toolUseId: 'tooluse_1', name: 'get_weather', input: {} } }] },
          { role: 'user', content: [{ toolResult: { toolUseId: 'tooluse_1', content: [{ json: { temp: 15 } }] } }] },
        ],
        toolConfig: { tools: [{ toolSpec: { name: 'get_weather', inputSchema: { json: { type: 'object' } } } }] },
      }),
    );
    assert.equal(body.output.message.content[0].text, 'mock(bedrock) reply to: tooluse_1={"temp":15}');
  });

  test('the translator\'s golden request bodies are accepted', async () => {
    for (const name of ['request.text.json', 'request.tools.json', 'request.image.json', 'request.json_schema.json']) {
      const res = await converse(JSON.parse(fixture(name)));
      const body = await json(res);
      assert.ok(body.output.message.content.length > 0, name);
    }
    const forced = await json(await converse(JSON.parse(fixture('request.json_schema.json'))));
    assert.equal(forced.output.message.content[0].toolUse.name, 'tollgate_json_response');
  });

  test('model ids: encoded colons and ARNs route; bad ids do not', async () => {
    const arn = 'arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0';
    await json(await post(modelPath(arn), ask()));
    await json(await post(modelPath('us.amazon.nova-lite-v1:0'), ask()));
    let m = await awsError(await post(modelPath('Not A Model!'), ask()), 400, 'ValidationException');
    assert.equal(m, 'The provided model identifier is invalid.');
    await awsError(await post(modelPath('acme.unknown-model-v1:0'), ask()), 404, 'ResourceNotFoundException');
    const res = await post('/foundation-models', ask());
    assert.equal(res.status, 404);
    assert.deepEqual(await res.json(), { Output: { __type: 'com.amazon.coral.service#UnknownOperationException' }, Version: '1.0' });
  });

  test('request validation mirrors Converse', async () => {
    const cases = [
      [{ model: MODEL, ...ask() }, /extraneous key \[model\] is not permitted/],
      [{ messages: [] }, /^A conversation must start with a user message/],
      [{ messages: [{ role: 'assistant', content: [{ text: 'x' }] }] }, /^A conversation must start with a user message/],
      [{ messages: [{ role: 'user', content: [{ text: 'a' }] }, { role: 'user', content: [{ text: 'b' }] }] }, /must alternate between user and assistant roles/],
      [{ messages: [{ role: 'user', content: [] }] }, /^The content field in the Message object at messages\.0 is empty/],
      [{ messages: [{ role: 'user', content: [{ text: '  ' }] }] }, /is blank/],
      [{ messages: [{ role: 'user', content: [{ text: 'a', image: {} }] }] }, /must set exactly one of the following keys/],
      [{ messages: [{ role: 'user', content: [{ image: { format: 'tiff', source: { bytes: 'AA==' } } }] }] }, /image format/],
      [ask('x', { inferenceConfig: { max_tokens: 5 } }), /extraneous key \[max_tokens\]/],
      [
        { messages: [{ role: 'user', content: [{ text: 'a' }] }, { role: 'assistant', content: [{ toolUse: { toolUseId: 't1', name: 'f', input: {} } }] }] },
        /^The toolConfig field must be defined when using toolUse and toolResult content blocks\.$/,
      ],
      [
        {
          messages: [
            { role: 'user', content: [{ text: 'a' }] },
            { role: 'assistant', content: [{ toolUse: { toolUseId: 't1', name: 'f', input: {} } }] },
            { role: 'user', content: [{ text: 'no result' }] },
          ],
          toolConfig: { tools: [{ toolSpec: { name: 'f', inputSchema: { json: {} } } }] },
        },
        /^Expected toolResult blocks at messages\.2\.content for the following Ids: t1$/,
      ],
      [
        {
          messages: [
            { role: 'user', content: [{ text: 'a' }] },
            { role: 'assistant', content: [{ toolUse: { toolUseId: 't1', name: 'f', input: {} } }] },
            { role: 'user', content: [{ toolResult: { toolUseId: 't1', content: [{ json: [1, 2] }] } }] },
          ],
          toolConfig: { tools: [{ toolSpec: { name: 'f', inputSchema: { json: {} } } }] },
        },
        /Provide a json object for the field/,
      ],
      [
        {
          messages: [
            { role: 'user', content: [{ text: 'a' }] },
            { role: 'assistant', content: [{ toolUse: { toolUseId: 'bad id!', name: 'f', input: {} } }] },
          ],
          toolConfig: { tools: [{ toolSpec: { name: 'f', inputSchema: { json: {} } } }] },
        },
        /toolUseId' failed to satisfy constraint/,
      ],
      [ask('x', { toolConfig: { tools: [{ toolSpec: { name: 'my tool', inputSchema: { json: {} } } }] } }), /toolSpec\.name' failed to satisfy constraint/],
      [ask('x', { toolConfig: { tools: [{ toolSpec: { name: 'f', inputSchema: { json: {} } } }], toolChoice: { tool: { name: 'g' } } } }), /specified in toolChoice is not defined/],
      ['{"messages": [', /^Malformed input request/],
    ];
    for (const [body, pattern] of cases) {
      const m = await awsError(await converse(body), 400, 'ValidationException');
      assert.match(m, pattern, JSON.stringify(body));
    }
  });
});

// ----------------------------------------------------- ConverseStream

describe('ConverseStream', () => {
  test('binary events in order, padded, with usage in metadata', async () => {
    const events = await streamEvents(await converseStream(ask()));
    assert.ok(events.every((e) => e.type === 'event'));
    const kinds = events.map((e) => e.kind);
    const words = REPLY.split(' ');
    assert.deepEqual(kinds, ['messageStart', ...words.map(() => 'contentBlockDelta'), 'contentBlockStop', 'messageStop', 'metadata']);
    assert.ok(events.every((e) => /^[A-Za-z0-9]+$/.test(e.payload.p)), 'every payload is padded');
    assert.equal(events[0].payload.role, 'assistant');
    assert.equal(events.filter((e) => e.kind === 'contentBlockDelta').map((e) => e.payload.delta.text).join(''), REPLY);
    assert.equal(events.at(-2).payload.stopReason, 'end_turn');
    assert.deepEqual(events.at(-1).payload.usage, { inputTokens: 5, outputTokens: words.length, totalTokens: 5 + words.length });
  });

  test('a tool call streams its input as fragments after contentBlockStart', async () => {
    const events = await streamEvents(
      await converseStream(ask('Paris', { toolConfig: { tools: [{ toolSpec: { name: 'get_weather', inputSchema: { json: { type: 'object' } } } }], toolChoice: { any: {} } } })),
    );
    const start = events.find((e) => e.kind === 'contentBlockStart');
    assert.equal(start.payload.start.toolUse.name, 'get_weather');
    const input = events
      .filter((e) => e.kind === 'contentBlockDelta')
      .map((e) => e.payload.delta.toolUse.input)
      .join('');
    assert.deepEqual(JSON.parse(input), { echo: 'Paris' });
    assert.equal(events.find((e) => e.kind === 'messageStop').payload.stopReason, 'tool_use');
  });

  test('faults: error frame, throttling, unavailable, cut stream, sliced bytes', async () => {
    mock.enqueue({ errorFrame: true });
    let events = await streamEvents(await converseStream(ask()));
    assert.deepEqual(events, [
      { type: 'exception', kind: 'modelStreamErrorException', payload: { message: 'Model Stream Error', originalStatusCode: 500, originalMessage: 'The model stream failed.' } },
    ]);
    mock.enqueue({ rateLimit: { retryAfter: '2' } });
    let res = await converseStream(ask());
    assert.equal(res.headers.get('retry-after'), '2');
    assert.equal(await awsError(res, 429, 'ThrottlingException'), 'Too many requests, please wait before trying again.');
    mock.enqueue({ status: 503 });
    await awsError(await converse(ask()), 503, 'ServiceUnavailableException');
    mock.enqueue({ cutAfterChunks: 2 });
    events = await streamEvents(await converseStream(ask()));
    assert.deepEqual(events.map((e) => e.kind), ['messageStart', 'contentBlockDelta', 'contentBlockDelta']);
    mock.enqueue({ sliceBytes: 7 });
    events = await streamEvents(await converseStream(ask()));
    assert.equal(events.at(-1).kind, 'metadata');
    mock.enqueue({ omitUsage: true, match: { path: '/converse-stream' } });
    events = await streamEvents(await converseStream(ask()));
    assert.equal(events.at(-1).payload.usage, undefined);
    assert.equal(mock.requests().at(-1).response.usage, null);
  });
});
