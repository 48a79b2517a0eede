// Anthropic Messages API wire flavor for the tollgate mock provider.
//
// Implements the flavor interface documented at the top of ./openai.mjs
// (createFlavor(options) -> { name, authenticate, handle, errorPlan,
// rateLimitPlan, errorFramePlan, internalErrorPlan }) for Anthropic's API:
//
//   POST …/messages                 Messages API, JSON or SSE (`stream: true`)
//   POST …/messages/count_tokens    {"input_tokens": n}
//   GET  …/models, …/models/{id}    Anthropic's model list / model object
//
// Start it with startMockProvider({ flavor: 'anthropic', apiKey }) and point an
// Anthropic client (or the gateway's Anthropic provider) at `mock.url` (the SDK
// appends `/v1/messages`; a gateway base URL of `mock.url + '/v1'` works too).
//
// What the mock checks, as Anthropic does (each failure is a 400 or 401 in
// Anthropic's error shape {"type":"error","error":{type,message},"request_id"}):
//   - the key (when the mock has an apiKey): `x-api-key: <key>` (what the
//     gateway sends, the documented form under anthropic-version 2023-06-01)
//     or, when there is no x-api-key, `Authorization: Bearer <key>` (what
//     @anthropic-ai/sdk >= 1.x sends for an apiKey). Missing -> 401 "x-api-key
//     header is required", wrong -> 401 "invalid x-api-key" (or "Invalid bearer
//     token"), in Anthropic's error shape.
//   - `anthropic-version`: required, one of 2023-01-01, 2023-06-01, 2026-10-21.
//     Under 2026-10-21 `temperature`, `top_p` and `top_k` are rejected (that
//     version removed them).
//   - Body: required `model`, `max_tokens`, `messages`; unknown top-level fields
//     are "Extra inputs are not permitted" (catches OpenAI-only fields such as
//     `stream_options`, `n` or `response_format` leaking through a translator);
//     roles only `user` / `assistant`; non-empty content (except a final
//     assistant message) and non-empty text blocks; every `tool_use` answered by
//     a `tool_result` in the next message and every `tool_result` matching a
//     `tool_use` of the previous one; `temperature` within 0..1; `tool_choice`
//     naming a declared tool; thinking `budget_tokens` >= 1024 and < max_tokens;
//     no thinking with a forced tool choice.
//
// Answers are deterministic:
//   - text: `mock(<name>) reply to: <last user text>`, one word per text_delta;
//     `max_tokens` cuts it by words (stop_reason max_tokens) and a
//     `stop_sequences` entry found in it cuts there (stop_reason stop_sequence);
//   - `tool_choice` `{type:"tool",name}` or `{type:"any"}` (first tool): one
//     tool_use block with input {"echo": <last user text>} (stop_reason tool_use);
//   - `thinking` enabled/adaptive: a thinking block ("mock thinking about: …")
//     with a signature before the answer.
//   - usage: input_tokens = words in system + messages, output_tokens = words /
//     argument fragments emitted.
//
// Wire shapes follow recorded traffic (see tests/fixtures/anthropic/README.md):
// compact JSON bodies in Anthropic's key order; SSE frames are
// `event: <type>\ndata: <json>\n\n` with the JSON padded by spaces before its
// final `}` as production streams are; `ping` after the first block start;
// cumulative usage (input and cache counters repeated) in `message_delta`.
//
// Frame kinds for the transport layer: 'role' (message_start), 'content'
// (text/thinking/input_json deltas that carry data — what cutAfterChunks
// counts), 'block' (content_block_start/stop, ping, signature_delta, empty
// input_json_delta), 'finish' (message_delta), 'done' (message_stop), 'error'.
// Fault mapping: status -> that status with Anthropic's error type for it
// (529 overloaded_error, 500 api_error, 429 rate_limit_error, …); rateLimit ->
// 429 rate_limit_error + retry-after / retry-after-ms + anthropic-ratelimit-*
// headers; errorFrame -> 200 SSE whose only event is `event: error` with
// overloaded_error; omitUsage -> no `usage` in the body, message_start or
// message_delta (real Anthropic always sends it; the official SDK then fails,
// which is the point of the fault).

import { createHash } from 'node:crypto';

export const API_VERSIONS = ['2023-01-01', '2023-06-01', '2026-10-21'];

const DEFAULT_MODELS = [
  { id: 'claude-sonnet-4-6', display_name: 'Claude Sonnet 4.6', created_at: '2026-02-17T00:00:00Z' },
  { id: 'claude-haiku-4-5-20251001', display_name: 'Claude Haiku 4.5', created_at: '2025-10-15T00:00:00Z' },
  { id: 'claude-opus-4-7', display_name: 'Claude Opus 4.7', created_at: '2026-04-16T00:00:00Z' },
];

/** Top-level Messages API request fields Anthropic accepts (anything else is "Extra inputs"). */
const KNOWN_FIELDS = new Set([
  'model', 'messages', 'max_tokens', 'system', 'metadata', 'stop_sequences', 'stream', 'temperature',
  'top_p', 'top_k', 'tools', 'tool_choice', 'thinking', 'output_config', 'service_tier', 'container',
  'mcp_servers', 'context_management', 'inference_geo',
]);

const ERROR_TYPES = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  402: 'billing_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  504: 'timeout_error',
  529: 'overloaded_error',
};

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function sha256(text) {
  return createHash('sha256').update(text).digest();
}

/** Deterministic base62 string of `len` characters derived from `seed`. */
function token(seed, len) {
  let out = '';
  let block = 0;
  while (out.length < len) {
    for (const b of sha256(`${seed}#${block++}`)) {
      if (out.length >= len) break;
      out += ALNUM[b % 62];
    }
  }
  return out;
}

function words(text) {
  return String(text ?? '').split(/\s+/).filter(Boolean);
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Text of an Anthropic `content` (string or blocks): text blocks, then tool_result contents. */
function contentText(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  const texts = [];
  for (const block of content) {
    if (!isObject(block)) continue;
    if (block.type === 'text' && typeof block.text === 'string') texts.push(block.text);
    if (block.type === 'tool_result') texts.push(contentText(block.content));
  }
  return texts.filter((t) => t.length > 0).join(' ');
}

/** Anthropic's default error message for a status. */
function defaultMessage(status, ctx) {
  const model = ctx?.json && typeof ctx.json.model === 'string' ? ctx.json.model : 'claude-sonnet-4-6';
  switch (status) {
    case 400:
      return 'Invalid request (mock fault).';
    case 401:
      return 'invalid x-api-key';
    case 402:
      return 'Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.';
    case 403:
      return 'Your API key does not have permission to use the specified resource.';
    case 404:
      return `model: ${model}`;
    case 413:
      return 'Request exceeds the maximum allowed number of bytes.';
    case 429:
      return rateLimitMessage(model);
    case 500:
      return 'Internal server error';
    case 529:
      return 'Overloaded';
    default:
      return `Mock fault: HTTP ${status}.`;
  }
}

function rateLimitMessage(model) {
  return (
    'This request would exceed the rate limit for your organization (00000000-0000-4000-8000-000000000000) ' +
    `of 50 requests per minute for ${model}. For details, refer to: https://docs.claude.com/en/api/rate-limits. ` +
    'You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens ' +
    'requested, or try again later.'
  );
}

/** Compact JSON padded with spaces before its final `}`, as production streams are. */
function padded(obj, seed) {
  const json = JSON.stringify(obj);
  const pad = sha256('pad:' + seed + json)[0] % 16;
  return pad === 0 ? json : json.slice(0, -1) + ' '.repeat(pad) + '}';
}

function eventFrame(type, obj, seed) {
  return `event: ${type}\ndata: ${padded(obj, seed)}\n\n`;
}

export function createFlavor({ name = 'anthropic', models = DEFAULT_MODELS } = {}) {
  const modelList = models.map((m) => ({
    type: 'model',
    id: m.id,
    display_name: m.display_name ?? m.id,
    created_at: m.created_at ?? new Date((m.created ?? 1_700_000_000) * 1000).toISOString().replace('.000Z', 'Z'),
  }));

  function requestId(ctx) {
    return 'req_011' + token(`req:${name}:${ctx?.seq ?? 0}`, 21);
  }

  function commonHeaders(ctx) {
    return {
      'request-id': requestId(ctx),
      'anthropic-organization-id': '00000000-0000-4000-8000-000000000000',
      'x-mock-provider': name,
    };
  }

  function rateLimitHeaders(remaining = 3999) {
    const reset = new Date(Date.now() + 60_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    return {
      'anthropic-ratelimit-requests-limit': '4000',
      'anthropic-ratelimit-requests-remaining': String(remaining),
      'anthropic-ratelimit-requests-reset': reset,
      'anthropic-ratelimit-input-tokens-limit': '2000000',
      'anthropic-ratelimit-input-tokens-remaining': '2000000',
      'anthropic-ratelimit-input-tokens-reset': reset,
      'anthropic-ratelimit-output-tokens-limit': '400000',
      'anthropic-ratelimit-output-tokens-remaining': '400000',
      'anthropic-ratelimit-output-tokens-reset': reset,
    };
  }

  function errorBody(type, message, ctx, details) {
    const error = { type, message };
    if (details !== undefined) error.details = details;
    return JSON.stringify({ type: 'error', error, request_id: requestId(ctx) });
  }

  /** fields: { message?, type?, details? }. */
  function errorPlan(status, fields = {}, ctx = null) {
    const type = fields.type ?? ERROR_TYPES[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
    const message = fields.message ?? defaultMessage(status, ctx);
    return {
      status,
      headers: { 'content-type': 'application/json', ...(ctx ? commonHeaders(ctx) : { 'x-mock-provider': name }) },
      body: errorBody(type, message, ctx, fields.details),
      usage: null,
    };
  }

  const invalid = (message, ctx) => errorPlan(400, { message, type: 'invalid_request_error' }, ctx);

  function rateLimitPlan(fault, ctx) {
    const rl = isObject(fault.rateLimit) ? fault.rateLimit : {};
    const model = ctx.json && typeof ctx.json.model === 'string' ? ctx.json.model : 'claude-sonnet-4-6';
    const headers = { 'content-type': 'application/json', ...commonHeaders(ctx), ...rateLimitHeaders(0) };
    if (rl.retryAfter !== undefined && rl.retryAfter !== null) headers['retry-after'] = String(rl.retryAfter);
    if (rl.retryAfterMs !== undefined && rl.retryAfterMs !== null) headers['retry-after-ms'] = String(rl.retryAfterMs);
    return { status: 429, headers, body: errorBody('rate_limit_error', rateLimitMessage(model), ctx), usage: null };
  }

  function errorFramePlan(ctx) {
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...commonHeaders(ctx) },
      frames: [
        {
          kind: 'error',
          data: `event: error\ndata: ${JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } })}\n\n`,
        },
      ],
      usage: null,
    };
  }

  function internalErrorPlan(_err, ctx) {
    return errorPlan(500, { message: 'Internal server error', type: 'api_error' }, ctx);
  }

  function authenticate(ctx) {
    if (ctx.apiKey === null || ctx.apiKey === undefined) return null;
    const presented = ctx.headers['x-api-key'];
    if (typeof presented === 'string' && presented !== '') {
      return presented === ctx.apiKey ? null : errorPlan(401, { message: 'invalid x-api-key' }, ctx);
    }
    const bearer = /^Bearer\s+(.+)$/i.exec(String(ctx.headers.authorization ?? '').trim());
    if (bearer) {
      return bearer[1].trim() === ctx.apiKey ? null : errorPlan(401, { message: 'Invalid bearer token' }, ctx);
    }
    return errorPlan(401, { message: 'x-api-key header is required' }, ctx);
  }

  function route(method, pathname) {
    const p = pathname.length > 1 ? pathname.replace(/\/+$/, '') : pathname;
    if (p.endsWith('/messages/count_tokens')) return method === 'POST' ? 'count_tokens' : null;
    if (p.endsWith('/messages')) return method === 'POST' ? 'messages' : null;
    if (p.endsWith('/models')) return method === 'GET' ? 'models' : null;
    if (/\/models\/[^/]+$/.test(p)) return method === 'GET' ? 'model' : null;
    return null;
  }

  function handle(ctx) {
    const kind = route(ctx.method, ctx.pathname);
    if (!kind) return errorPlan(404, { message: 'Not Found', type: 'not_found_error' }, ctx);
    const version = ctx.headers['anthropic-version'];
    if (typeof version !== 'string' || version === '') return invalid('anthropic-version: header is required', ctx);
    if (!API_VERSIONS.includes(version)) return invalid(`anthropic-version: invalid version '${version}'`, ctx);

    if (kind === 'models') {
      const body = {
        data: modelList,
        has_more: false,
        first_id: modelList[0]?.id ?? null,
        last_id: modelList.at(-1)?.id ?? null,
      };
      return { status: 200, headers: { 'content-type': 'application/json', ...commonHeaders(ctx) }, body: JSON.stringify(body), usage: null };
    }
    if (kind === 'model') {
      const id = decodeURIComponent(/\/models\/([^/]+)\/*$/.exec(ctx.pathname)[1]);
      const found = modelList.find((m) => m.id === id);
      if (!found) return errorPlan(404, { message: `model: ${id}`, type: 'not_found_error' }, ctx);
      return { status: 200, headers: { 'content-type': 'application/json', ...commonHeaders(ctx) }, body: JSON.stringify(found), usage: null };
    }

    if (ctx.jsonError) return invalid('There was an error parsing the body of your request as JSON.', ctx);
    if (!isObject(ctx.json)) return invalid('Input should be a valid dictionary', ctx);
    const problem = validate(ctx.json, version, kind === 'count_tokens');
    if (problem) return invalid(problem, ctx);
    if (kind === 'count_tokens') {
      return {
        status: 200,
        headers: { 'content-type': 'application/json', ...commonHeaders(ctx) },
        body: JSON.stringify({ input_tokens: promptTokens(ctx.json) }),
        usage: null,
      };
    }
    return messages(ctx);
  }

  // --------------------------------------------------------- validation

  /** The first problem with a request body, as Anthropic words it, or null. */
  function validate(req, version, countTokens) {
    for (const key of Object.keys(req)) {
      if (!KNOWN_FIELDS.has(key)) return `${key}: Extra inputs are not permitted`;
    }
    if (typeof req.model !== 'string' || req.model === '') return 'model: Field required';
    if (!countTokens) {
      if (req.max_tokens === undefined) return 'max_tokens: Field required';
      if (!Number.isInteger(req.max_tokens) || req.max_tokens < 1) return 'max_tokens: Input should be a valid integer greater than or equal to 1';
    }
    if (req.messages === undefined) return 'messages: Field required';
    if (!Array.isArray(req.messages)) return 'messages: Input should be a valid list';
    if (version === '2026-10-21') {
      for (const key of ['temperature', 'top_p', 'top_k']) {
        if (req[key] !== undefined) return `${key}: Extra inputs are not permitted`;
      }
    }
    if (req.temperature !== undefined && !(typeof req.temperature === 'number' && req.temperature >= 0 && req.temperature <= 1)) {
      return 'temperature: range: 0..1';
    }
    if (req.system !== undefined && typeof req.system !== 'string') {
      if (!Array.isArray(req.system) || !req.system.every((b) => isObject(b) && b.type === 'text' && typeof b.text === 'string')) {
        return 'system: Input should be a valid string or a list of text blocks';
      }
    }
    const last = req.messages.length - 1;
    for (let i = 0; i < req.messages.length; i++) {
      const m = req.messages[i];
      if (!isObject(m)) return `messages.${i}: Input should be a valid dictionary`;
      if (m.role !== 'user' && m.role !== 'assistant') return `messages.${i}.role: Input should be 'user' or 'assistant'`;
      const blocks = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : m.content;
      if (!Array.isArray(blocks)) return `messages.${i}.content: Input should be a valid string or list`;
      const empty = blocks.length === 0 || (typeof m.content === 'string' && m.content === '');
      if (empty && !(i === last && m.role === 'assistant')) {
        return `messages.${i}: all messages must have non-empty content except for the optional final assistant message`;
      }
      for (let j = 0; j < blocks.length; j++) {
        const b = blocks[j];
        if (!isObject(b) || typeof b.type !== 'string') return `messages.${i}.content.${j}: Input should be a valid dictionary`;
        if (b.type === 'text' && typeof m.content !== 'string' && (typeof b.text !== 'string' || b.text === '')) {
          return 'messages: text content blocks must be non-empty';
        }
        if ((b.type === 'tool_use' || b.type === 'tool_result') && m.role !== (b.type === 'tool_use' ? 'assistant' : 'user')) {
          return `messages.${i}.content.${j}: ${b.type} blocks are not allowed in ${m.role} messages`;
        }
        if (b.type === 'tool_use' && !isObject(b.input)) return `messages.${i}.content.${j}.tool_use.input: Input should be a valid dictionary`;
      }
      // Tool pairing, both directions.
      const uses = blocks.filter((b) => b.type === 'tool_use').map((b) => b.id);
      if (uses.length) {
        const next = req.messages[i + 1];
        const nextBlocks = next && Array.isArray(next.content) ? next.content : [];
        const answered = new Set(nextBlocks.filter((b) => isObject(b) && b.type === 'tool_result').map((b) => b.tool_use_id));
        const missing = uses.filter((id) => !answered.has(id));
        if (missing.length) {
          return (
            `messages.${i}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: ${missing.join(', ')}. ` +
            'Each `tool_use` block must have a corresponding `tool_result` block in the next message.'
          );
        }
      }
      const results = blocks.filter((b) => b.type === 'tool_result').map((b) => b.tool_use_id);
      if (results.length) {
        const prev = req.messages[i - 1];
        const prevBlocks = prev && Array.isArray(prev.content) ? prev.content : [];
        const used = new Set(prevBlocks.filter((b) => isObject(b) && b.type === 'tool_use').map((b) => b.id));
        const unexpected = results.filter((id) => !used.has(id));
        if (unexpected.length) {
          return (
            `messages.${i}.content.0: unexpected \`tool_use_id\` found in \`tool_result\` blocks: ${unexpected.join(', ')}. ` +
            'Each `tool_result` block must have a corresponding `tool_use` block in the previous message.'
          );
        }
      }
    }
    if (req.tools !== undefined) {
      if (!Array.isArray(req.tools)) return 'tools: Input should be a valid list';
      for (let i = 0; i < req.tools.length; i++) {
        const t = req.tools[i];
        if (!isObject(t) || typeof t.name !== 'string' || !/^[a-zA-Z0-9_-]{1,128}$/.test(t.name)) {
          return `tools.${i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'`;
        }
        if (!isObject(t.input_schema)) return `tools.${i}.custom.input_schema: Field required`;
      }
    }
    const tc = req.tool_choice;
    if (tc !== undefined) {
      if (!isObject(tc) || !['auto', 'any', 'tool', 'none'].includes(tc.type)) {
        return "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'";
      }
      const names = (req.tools ?? []).map((t) => t.name);
      if ((tc.type === 'any' || tc.type === 'tool') && names.length === 0) return 'tool_choice: tool_choice may only be specified while providing tools.';
      if (tc.type === 'tool' && !names.includes(tc.name)) return `tool_choice.name: Tool '${tc.name}' not found in tools`;
    }
    const thinking = req.thinking;
    if (thinking !== undefined && thinking !== null) {
      if (!isObject(thinking) || !['enabled', 'disabled', 'adaptive'].includes(thinking.type)) {
        return "thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'";
      }
      if (thinking.type === 'enabled') {
        if (!Number.isInteger(thinking.budget_tokens) || thinking.budget_tokens < 1024) {
          return 'thinking.enabled.budget_tokens: Input should be greater than or equal to 1024';
        }
        if (!countTokens && thinking.budget_tokens >= req.max_tokens) {
          return '`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size';
        }
      }
      if (thinking.type !== 'disabled' && tc && (tc.type === 'any' || tc.type === 'tool')) {
        return 'Thinking may not be enabled when tool_choice forces tool use.';
      }
    }
    return null;
  }

  function promptTokens(req) {
    const system = typeof req.system === 'string' ? req.system : Array.isArray(req.system) ? contentText(req.system) : '';
    return req.messages.reduce((n, m) => n + words(contentText(m.content)).length, words(system).length);
  }

  // ----------------------------------------------------------- messages

  function messages(ctx) {
    const req = ctx.json;
    let lastUser = '';
    for (let i = req.messages.length - 1; i >= 0; i--) {
      if (req.messages[i].role === 'user') {
        lastUser = contentText(req.messages[i].content);
        break;
      }
    }
    const stream = req.stream === true;
    const omitUsage = !!ctx.fault?.omitUsage;
    const id = 'msg_01' + token(`msg:${name}:${ctx.seq}`, 22);
    const model = req.model;
    const inputTokens = promptTokens(req);
    const thinks = isObject(req.thinking) && (req.thinking.type === 'enabled' || req.thinking.type === 'adaptive');
    const thinkingText = thinks ? `mock thinking about: ${lastUser}` : null;
    const signature = thinks ? token(`sig:${name}:${ctx.seq}`, 48) : null;

    // The answer: a tool call when one is forced, else text.
    const toolName = pickTool(req);
    let answer; // { text?, tool?, pieces, stopReason, stopSequence, outputTokens }
    if (toolName !== null) {
      const quoted = JSON.stringify(lastUser);
      answer = {
        tool: { id: 'toolu_01' + token(`toolu:${name}:${ctx.seq}`, 22), name: toolName, input: { echo: lastUser } },
        pieces: ['{"echo"', ': ', quoted, '}'],
        stopReason: 'tool_use',
        stopSequence: null,
      };
      answer.outputTokens = answer.pieces.length;
    } else {
      let all = words(`mock(${name}) reply to: ${lastUser}`);
      let stopReason = 'end_turn';
      let stopSequence = null;
      const full = all.join(' ');
      for (const seq of Array.isArray(req.stop_sequences) ? req.stop_sequences : []) {
        const at = typeof seq === 'string' && seq !== '' ? full.indexOf(seq) : -1;
        if (at >= 0) {
          all = words(full.slice(0, at));
          stopReason = 'stop_sequence';
          stopSequence = seq;
          break;
        }
      }
      if (all.length > req.max_tokens) {
        all = all.slice(0, req.max_tokens);
        stopReason = 'max_tokens';
        stopSequence = null;
      }
      answer = {
        text: all.join(' '),
        pieces: all.map((w, i) => (i < all.length - 1 ? w + ' ' : w)),
        stopReason,
        stopSequence,
        outputTokens: all.length,
      };
    }
    const outputTokens = answer.outputTokens + (thinks ? words(thinkingText).length : 0);
    const usage = {
      input_tokens: inputTokens,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
      output_tokens: outputTokens,
      service_tier: 'standard',
    };

    const content = [];
    if (thinks) content.push({ type: 'thinking', thinking: thinkingText, signature });
    if (answer.tool) content.push({ type: 'tool_use', id: answer.tool.id, name: answer.tool.name, input: answer.tool.input });
    else content.push({ type: 'text', text: answer.text });

    if (!stream) {
      const body = {
        model,
        id,
        type: 'message',
        role: 'assistant',
        content,
        stop_reason: answer.stopReason,
        stop_sequence: answer.stopSequence,
        ...(omitUsage ? {} : { usage }),
      };
      return {
        status: 200,
        headers: { 'content-type': 'application/json', ...commonHeaders(ctx), ...rateLimitHeaders() },
        body: JSON.stringify(body),
        usage: omitUsage ? null : usage,
      };
    }

    const seed = `${name}:${ctx.seq}`;
    let n = 0;
    const frame = (kind, type, obj) => ({ kind, data: eventFrame(type, obj, `${seed}:${n++}`) });
    const startUsage = { ...usage, output_tokens: 1 };
    const frames = [
      frame('role', 'message_start', {
        type: 'message_start',
        message: {
          model, id, type: 'message', role: 'assistant', content: [], stop_reason: null, stop_sequence: null,
          ...(omitUsage ? {} : { usage: startUsage }),
        },
      }),
    ];
    let index = 0;
    const delta = (kind, d) => frame(kind, 'content_block_delta', { type: 'content_block_delta', index, delta: d });
    const startBlock = (block) => frame('block', 'content_block_start', { type: 'content_block_start', index, content_block: block });
    const stopBlock = () => frame('block', 'content_block_stop', { type: 'content_block_stop', index });
    let pinged = false;
    const ping = () => {
      if (pinged) return [];
      pinged = true;
      return [{ kind: 'block', data: 'event: ping\ndata: {"type": "ping"}\n\n' }];
    };

    if (thinks) {
      frames.push(startBlock({ type: 'thinking', thinking: '', signature: '' }), ...ping());
      const ws = words(thinkingText);
      ws.forEach((w, i) => frames.push(delta('content', { type: 'thinking_delta', thinking: i < ws.length - 1 ? w + ' ' : w })));
      frames.push(delta('block', { type: 'signature_delta', signature }), stopBlock());
      index++;
    }
    if (answer.tool) {
      frames.push(startBlock({ type: 'tool_use', id: answer.tool.id, name: answer.tool.name, input: {} }), ...ping());
      frames.push(delta('block', { type: 'input_json_delta', partial_json: '' }));
      for (const piece of answer.pieces) frames.push(delta('content', { type: 'input_json_delta', partial_json: piece }));
    } else {
      frames.push(startBlock({ type: 'text', text: '' }), ...ping());
      for (const piece of answer.pieces) frames.push(delta('content', { type: 'text_delta', text: piece }));
    }
    frames.push(stopBlock());
    const { cache_creation: _c, service_tier: _s, ...deltaUsage } = usage;
    frames.push(
      frame('finish', 'message_delta', {
        type: 'message_delta',
        delta: { stop_reason: answer.stopReason, stop_sequence: answer.stopSequence },
        ...(omitUsage ? {} : { usage: deltaUsage }),
      }),
      frame('done', 'message_stop', { type: 'message_stop' }),
    );
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...commonHeaders(ctx), ...rateLimitHeaders() },
      frames,
      usage: omitUsage ? null : usage,
    };
  }

  /** Name of the tool to call, or null for a text answer. */
  function pickTool(req) {
    const tools = Array.isArray(req.tools) ? req.tools : [];
    const tc = req.tool_choice;
    if (!isObject(tc) || tools.length === 0) return null;
    if (tc.type === 'tool') return tc.name;
    if (tc.type === 'any') return tools[0].name;
    return null;
  }

  return { name, flavor: 'anthropic', authenticate, handle, errorPlan, rateLimitPlan, errorFramePlan, internalErrorPlan, route };
}
