// The benchmark's upstream: a project-owned, OpenAI-wire mock with fixed
// answers, for measuring gateways rather than a model. Not the e2e suite's
// mock (tests/mock/), which records every request and injects faults; this one
// does as little as possible so that it is never the bottleneck.
//
//   node bench/mock-upstream.mjs --port 0 [--latency-ms 0] [--chunk-ms 10] [--chunks 64]
//
// Prints one line `{"port": N}` on stdout once listening.
//
//   POST /v1/chat/completions   stream false: a fixed ~300 B `chat.completion` with usage, after
//                               --latency-ms. stream true: SSE — a role chunk, --chunks content
//                               deltas every --chunk-ms, a finish chunk, a usage chunk when
//                               `stream_options.include_usage`, then `data: [DONE]`. The role
//                               chunk carries `x_mock_arrived_ns` (when the request reached
//                               the mock), each delta `x_mock_sent_ns` (when it was written):
//                               CLOCK_MONOTONIC ns, for the client's TTFT split.
//   GET  /health                200
//   GET  /stats                 {"chat": N, "stream": N} requests served so far
//
// Every connection has TCP_NODELAY (the ~40 ms Nagle/delayed-ACK plateau is a
// classic rig artifact, anchors-performance.md §1 †). Requests must carry
// `Authorization: Bearer <MOCK_KEY>`, so a gateway that did not forward its
// upstream key fails loudly instead of being measured.

import http from 'node:http';
import { parseArgs } from 'node:util';

export const MOCK_KEY = 'sk-bench-mock-upstream-0000000000000000';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'latency-ms': { type: 'string', default: '0' },
    'chunk-ms': { type: 'string', default: '10' },
    chunks: { type: 'string', default: '64' },
  },
});
const LATENCY_MS = Number(args['latency-ms']);
const CHUNK_MS = Number(args['chunk-ms']);
const CHUNKS = Number(args.chunks);

const CREATED = 1767225600;
const COMPLETION = Buffer.from(
  JSON.stringify({
    id: 'chatcmpl-bench0000000000000000000001',
    object: 'chat.completion',
    created: CREATED,
    model: 'gpt-4o-mini-2024-07-18',
    choices: [{ index: 0, message: { role: 'assistant', content: 'A cache keeps answers so repeats are cheap.', refusal: null }, logprobs: null, finish_reason: 'stop' }],
    usage: { prompt_tokens: 24, completion_tokens: 10, total_tokens: 34 },
    system_fingerprint: 'fp_bench',
  }),
);

function chunk(delta, finish = null, usage = undefined) {
  const c = {
    id: 'chatcmpl-bench0000000000000000000002',
    object: 'chat.completion.chunk',
    created: CREATED,
    model: 'gpt-4o-mini-2024-07-18',
    system_fingerprint: 'fp_bench',
    choices: delta === null ? [] : [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  };
  if (usage !== undefined) c.usage = usage;
  return `data: ${JSON.stringify(c)}\n\n`;
}
const ROLE = chunk({ role: 'assistant', content: '' });
const DELTAS = Array.from({ length: CHUNKS }, (_, i) => chunk({ content: `tok${i} ` }));
const FINISH = chunk({}, 'stop');
const USAGE = chunk(null, null, { prompt_tokens: 24, completion_tokens: CHUNKS, total_tokens: 24 + CHUNKS });

const stats = { chat: 0, stream: 0 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A frame with one more field: a CLOCK_MONOTONIC time in ns
 * (`process.hrtime.bigint()`, the same clock in every process on the
 * machine), so the client can split a stream's time to first token into
 * the request's way here and the chunk's way back (bench/lib.mjs postStream).
 */
function stamped(frame, field, ns) {
  const end = frame.lastIndexOf('}');
  return `${frame.slice(0, end)},"${field}":"${ns}"${frame.slice(end)}`;
}

async function chat(req, res, body, arrivedNs) {
  let parsed;
  try {
    parsed = JSON.parse(body);
  } catch {
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end('{"error":{"message":"bad json","type":"invalid_request_error","param":null,"code":null}}');
    return;
  }
  if (LATENCY_MS > 0) await sleep(LATENCY_MS);
  if (parsed.stream !== true) {
    stats.chat++;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': COMPLETION.length });
    res.end(COMPLETION);
    return;
  }
  stats.stream++;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.write(stamped(ROLE, 'x_mock_arrived_ns', arrivedNs));
  for (const d of DELTAS) {
    await sleep(CHUNK_MS);
    if (res.destroyed) return;
    res.write(stamped(d, 'x_mock_sent_ns', process.hrtime.bigint()));
  }
  res.write(FINISH);
  if (parsed.stream_options?.include_usage === true) res.write(USAGE);
  res.end('data: [DONE]\n\n');
}

const server = http.createServer({ noDelay: true, keepAliveTimeout: 120_000 }, (req, res) => {
  if (req.method === 'GET' && req.url === '/health') return res.end('ok');
  if (req.method === 'GET' && req.url === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(stats));
  }
  const arrivedNs = process.hrtime.bigint();
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.headers.authorization !== `Bearer ${MOCK_KEY}`) {
      res.writeHead(401, { 'content-type': 'application/json' });
      return res.end('{"error":{"message":"mock: wrong or missing key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}');
    }
    if (req.method === 'POST' && req.url.endsWith('/chat/completions')) return void chat(req, res, Buffer.concat(chunks).toString('utf8'), arrivedNs);
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":{"message":"mock: no such route","type":"invalid_request_error","param":null,"code":null}}');
  });
});
server.on('connection', (s) => s.setNoDelay(true));
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
