// Cohere v2 API wire flavor for the tollgate mock provider.
//
// Implements the flavor interface documented at the top of ./openai.mjs for
// Cohere's v2 API. Wire shapes follow recorded Cohere traffic (see
// tests/fixtures/cohere/README.md) and Cohere's OpenAPI spec:
//
//   POST …/chat     Chat API v2: JSON, or SSE when `stream: true`
//   POST …/embed    Embed API v2 ({"id","texts","embeddings":{<type>:[…]},"meta","response_type"})
//   GET  …/models, …/models/{name}   model list / one model
//
// Any path prefix works (…/v2/chat, /chat); point the gateway's Cohere base
// URL at `mock.url + '/v2'`.
//
// Auth: `Authorization: Bearer <key>` (the scheme is case-insensitive, as
// Cohere's SDKs send both). No key -> 401 "no api key supplied", a wrong key ->
// 401 "invalid api token" (both messages from Cohere's errors page). Every
// error body is Cohere's {"id":"<uuid>","message":"…"}, compact JSON.
//
// Requests are validated the way Cohere rejects them, so a translation bug
// fails loudly. Messages quoted from https://docs.cohere.com/reference/errors
// (or, for 422 and tool_plan, from public reports) are used verbatim; the rest
// follow the same `invalid request: …` style and are marked "mock wording":
//   - an unknown field at the top level, in a message, a content block, a tool,
//     a tool function or a tool call -> 422 "unknown field: parameter 'x' is not
//     a valid field. For proper usage, please refer to
//     https://docs.cohere.com/reference/chat" (e.g. OpenAI's per-tool `strict`,
//     or `top_p`, `n`, `stream_options` leaking through a translator);
//   - `model` missing -> 400 "a model parameter is required for this endpoint.";
//     unknown model, or one without that endpoint -> 404 "model 'x' not found, …";
//   - roles other than system/user/assistant/tool (mock wording); a system
//     message after the first position -> 400 "system turn must be the first in
//     the list"; image blocks for a model without vision (mock wording);
//   - an assistant message with text content and tool_calls -> 400 "text content
//     is not allowed when tool_calls are provided. If you wish to pass a tool
//     plan, either pass thinking content (with thinking enabled) or use
//     'tool_plan': 'messages[i].content[0]'" (vercel/ai#5794); a tool call of
//     another type than function -> "tool call must be of type function";
//     repeated ids -> "cannot have duplicate tool ids"; a tool message without
//     tool_call_id -> "tool call id must be provided with tool message", or with
//     one no earlier assistant message made -> "tool call id not found in
//     previous tool calls";
//   - tools: a name outside [A-Za-z_][A-Za-z0-9_]* -> the errors page's "tool
//     names can only contain certain characters …"; `parameters` not an object
//     -> "schema must be an object"; missing (mock wording);
//   - ranges: temperature 0–1 (errors page wording), p 0.01–0.99, k 0–500,
//     frequency/presence_penalty 0–1 (errors page wording), max_tokens >= 1,
//     at most 5 stop_sequences, seed >= 0; tool_choice REQUIRED/NONE and only
//     with tools; response_format text/json_object (json_schema only with
//     json_object, and not together with tools, as the spec documents);
//     thinking enabled/disabled (enabled only on reasoning models).
//
// Answers are deterministic:
//   text       "mock(<name>) reply to: <prompt>", one word per content-delta (later
//              words with their leading space, as Cohere streams); <prompt> is the
//              text of the last user message, or, when tool messages follow it, the
//              text of those tool results joined by spaces.
//   max_tokens cuts the words -> MAX_TOKENS; a stop_sequences entry found in the
//              reply cuts it there -> STOP_SEQUENCE.
//   JSON mode  response_format json_object -> {"echo":"<prompt>"} as the text.
//   tools      tool_choice REQUIRED -> a tool_plan ("I will use the <names> tool(s).")
//              and one call per declared tool (parallel calls when several; the
//              gateway's named tool_choice sends one tool), arguments
//              {"echo":"<prompt>"}, ids `<name>_<12 chars>` -> TOOL_CALL.
//              Otherwise (NONE, absent) a text answer.
//   thinking   reasoning models (id containing "reasoning") think unless
//              thinking.type is "disabled": a thinking block "mock thinking about:
//              <prompt>" before the answer.
//   usage      tokens.input_tokens = words of every message text (tool results
//              included), tokens.output_tokens = words / argument fragments emitted
//              (plan and thinking included); billed_units the same, cached_tokens 0.
//              Recorded in OpenAI terms: {prompt_tokens, completion_tokens,
//              total_tokens} (what the gateway should ledger).
//   embed      embeddingVector() from ./openai.mjs over model, input_type and text
//              (so search_query and search_document vectors differ), unit length;
//              embed-v4.0 has 1536 dimensions unless output_dimension (256, 512,
//              1024, 1536), embed-english-v3.0 1024. Types float, int8, uint8,
//              binary, ubinary and base64 (little-endian f32). billed input_tokens
//              = words of the texts; recorded as {prompt_tokens, total_tokens}.
//
// Streams are `event: <type>\ndata: <compact JSON>\n\n`: message-start,
// [content-start, content-delta…, content-end] per thinking/text block, or
// tool-plan-delta… then [tool-call-start, tool-call-delta…, tool-call-end] per
// call, then message-end with finish_reason and usage. No [DONE] (recorded
// streams end with message-end). Frame kinds: 'role' (message-start), 'content'
// (content-delta, tool-plan-delta, tool-call-delta: what cutAfterChunks counts),
// 'block' (content-start/-end, tool-call-start/-end), 'finish' (message-end).
//
// Faults: all transport faults apply. status -> that status with Cohere's body
// and a typical message for it; rateLimit -> 429 with the trial-key message
// (retry-after only when the fault asks: Cohere documents none); errorFrame ->
// 200 SSE whose only event is a message-end with finish_reason ERROR and its
// `error` text (how Cohere's spec reports a failed generation in a stream);
// omitUsage -> no `usage` in the body or message-end.

import { createHash } from 'node:crypto';
import { embeddingVector } from './openai.mjs';

const DEFAULT_MODELS = [
  { name: 'command-a-03-2025', endpoints: ['chat'], context_length: 256000 },
  { name: 'command-r7b-12-2024', endpoints: ['chat'], context_length: 128000 },
  { name: 'command-a-vision-07-2025', endpoints: ['chat'], context_length: 128000, vision: true },
  { name: 'command-a-reasoning-08-2025', endpoints: ['chat'], context_length: 256000, reasoning: true },
  { name: 'embed-v4.0', endpoints: ['embed'], context_length: 128000, dimensions: 1536, outputDimensions: [256, 512, 1024, 1536] },
  { name: 'embed-english-v3.0', endpoints: ['embed'], context_length: 512, dimensions: 1024 },
];

const CHAT_FIELDS = new Set([
  'stream', 'model', 'messages', 'tools', 'strict_tools', 'documents', 'citation_options', 'response_format',
  'safety_mode', 'max_tokens', 'stop_sequences', 'temperature', 'seed', 'frequency_penalty', 'presence_penalty',
  'k', 'p', 'logprobs', 'tool_choice', 'thinking', 'priority',
]);
const EMBED_FIELDS = new Set([
  'texts', 'images', 'model', 'input_type', 'inputs', 'max_tokens', 'output_dimension', 'embedding_types', 'truncate', 'priority',
]);
const MESSAGE_FIELDS = {
  system: ['role', 'content'],
  user: ['role', 'content'],
  assistant: ['role', 'content', 'tool_calls', 'tool_plan', 'citations'],
  tool: ['role', 'tool_call_id', 'content'],
};
const INPUT_TYPES = ['search_document', 'search_query', 'classification', 'clustering', 'image'];
const EMBEDDING_TYPES = ['float', 'int8', 'uint8', 'binary', 'ubinary', 'base64'];
const MAX_TEXTS = 96;

export const RATE_LIMIT_MESSAGE =
  "You are using a Trial key, which is limited to 40 API calls / minute. You can continue to use the Trial key for free or upgrade to a Production key with higher rate limits at 'https://dashboard.cohere.com/api-keys'. Contact us on 'https://discord.gg/XW44jPfYJu' or email us at support@cohere.com with any questions";

const DEFAULT_MESSAGES = {
  400: 'invalid request: mock fault.',
  401: 'invalid api token',
  402: 'Please add or update your payment method at https://dashboard.cohere.com/billing?tab=payment to continue',
  403: 'Forbidden',
  404: '404 page not found',
  422: 'unknown field: mock fault.',
  429: 'You are past the per minute request limit, please wait and try again later.',
  498: 'blocked input: please adjust your prompt and try again, as it may be a potential violation of our Usage Policy',
  499: 'request cancelled',
  500: 'internal server error, this has been reported to our developers',
  503: 'service unavailable, please try again later',
  504: 'request timed out',
};

function sha256(text) {
  return createHash('sha256').update(text).digest();
}

/** A deterministic v4-shaped UUID from `seed` (Cohere ids are UUIDs). */
function uuid(seed) {
  const h = sha256(seed).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${'89ab'[parseInt(h[16], 16) % 4]}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** Deterministic lowercase base-36 string of `len` characters. */
function token36(seed, len) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let out = '';
  let block = 0;
  while (out.length < len) {
    for (const b of sha256(`${seed}#${block++}`)) {
      if (out.length >= len) break;
      out += alphabet[b % 36];
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

/** Pieces of a reply as Cohere streams them: "The", " capital", " of", … */
function pieces(ws) {
  return ws.map((w, i) => (i === 0 ? w : ' ' + w));
}

class CohereError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const invalid = (message) => new CohereError(400, message);
const unknownField = (name) =>
  new CohereError(
    422,
    `unknown field: parameter '${name}' is not a valid field. For proper usage, please refer to https://docs.cohere.com/reference/chat`,
  );

function checkFields(obj, allowed) {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) throw unknownField(key);
  }
}

/** Text of a Cohere `content` (string or text/thinking/document blocks). */
function contentText(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((b) => (isObject(b) && typeof b.text === 'string' ? b.text : ''))
    .filter((t) => t.length > 0)
    .join(' ');
}

export function createFlavor({ name = 'cohere', models = DEFAULT_MODELS } = {}) {
  const modelList = models.map((m) => ({
    name: m.name,
    endpoints: m.endpoints ?? ['chat'],
    finetuned: false,
    context_length: m.context_length ?? 128000,
    ...m,
  }));
  const findModel = (id) => modelList.find((m) => m.name === id);

  function commonHeaders(ctx) {
    return { 'x-debug-trace-id': token36(`trace:${name}:${ctx?.seq ?? 0}`, 32), 'x-mock-provider': name };
  }

  function errorPlan(status, fields = {}, ctx = null) {
    const message = fields.message ?? DEFAULT_MESSAGES[status] ?? `mock fault: HTTP ${status}`;
    return {
      status,
      headers: { 'content-type': 'application/json', ...commonHeaders(ctx) },
      body: JSON.stringify({ id: uuid(`err:${name}:${ctx?.seq ?? 0}`), message }),
      usage: null,
    };
  }

  function rateLimitPlan(fault, ctx) {
    const plan = errorPlan(429, { message: RATE_LIMIT_MESSAGE }, ctx);
    const rl = isObject(fault.rateLimit) ? fault.rateLimit : {};
    if (rl.retryAfter !== undefined && rl.retryAfter !== null) plan.headers['retry-after'] = String(rl.retryAfter);
    if (rl.retryAfterMs !== undefined && rl.retryAfterMs !== null) plan.headers['retry-after-ms'] = String(rl.retryAfterMs);
    return plan;
  }

  function errorFramePlan(ctx) {
    const event = { type: 'message-end', delta: { error: 'internal server error', finish_reason: 'ERROR' } };
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...commonHeaders(ctx) },
      frames: [{ kind: 'error', data: sse(event) }],
      usage: null,
    };
  }

  function internalErrorPlan(_err, ctx) {
    return errorPlan(500, {}, ctx);
  }

  function authenticate(ctx) {
    if (ctx.apiKey === null || ctx.apiKey === undefined) return null;
    const m = /^bearer\s+(.+)$/i.exec(String(ctx.headers.authorization ?? '').trim());
    if (!m) return errorPlan(401, { message: 'no api key supplied' }, ctx);
    return m[1].trim() === ctx.apiKey ? null : errorPlan(401, { message: 'invalid api token' }, ctx);
  }

  function route(method, pathname) {
    const p = pathname.length > 1 ? pathname.replace(/\/+$/, '') : pathname;
    if (p.endsWith('/chat')) return method === 'POST' ? 'chat' : null;
    if (p.endsWith('/embed')) return method === 'POST' ? 'embed' : null;
    if (p.endsWith('/models')) return method === 'GET' ? 'models' : null;
    if (/\/models\/[^/]+$/.test(p)) return method === 'GET' ? 'model' : null;
    return null;
  }

  function publicModel(m) {
    return { name: m.name, endpoints: m.endpoints, finetuned: m.finetuned, context_length: m.context_length };
  }

  function handle(ctx) {
    const kind = route(ctx.method, ctx.pathname);
    if (!kind) return errorPlan(404, { message: '404 page not found' }, ctx);
    const ok = (body, usage = null) => ({
      status: 200,
      headers: { 'content-type': 'application/json', ...commonHeaders(ctx) },
      body: JSON.stringify(body),
      usage,
    });
    if (kind === 'models') return ok({ models: modelList.map(publicModel) });
    if (kind === 'model') {
      const id = decodeURIComponent(/\/models\/([^/]+)\/*$/.exec(ctx.pathname)[1]);
      const found = findModel(id);
      if (!found) return errorPlan(404, { message: notFound(id) }, ctx);
      return ok(publicModel(found));
    }
    try {
      if (ctx.jsonError) throw invalid('invalid json syntax: invalid character in request body');
      if (!isObject(ctx.json)) throw invalid('invalid request: the request body must be a JSON object');
      return kind === 'chat' ? chat(ctx) : embed(ctx, ok);
    } catch (err) {
      if (err instanceof CohereError) return errorPlan(err.status, { message: err.message }, ctx);
      throw err;
    }
  }

  const notFound = (id) => `model '${id}' not found, make sure the correct model ID was used and that you have access to the model.`;

  function modelFor(req, endpoint) {
    if (typeof req.model !== 'string' || req.model === '') throw invalid('a model parameter is required for this endpoint.');
    const m = findModel(req.model);
    if (!m || !m.endpoints.includes(endpoint)) throw new CohereError(404, notFound(req.model));
    return m;
  }

  // ------------------------------------------------------------ chat

  function validateChat(req, model) {
    for (const key of Object.keys(req)) if (!CHAT_FIELDS.has(key)) throw unknownField(key);
    if (!Array.isArray(req.messages) || req.messages.length === 0) throw invalid('invalid request: messages must not be empty');
    const range = (key, lo, hi, message) => {
      const v = req[key];
      if (v === undefined || v === null) return;
      if (typeof v !== 'number' || v < lo || v > hi) throw invalid(message ?? `invalid request: ${key} must be between ${lo} and ${hi} inclusive.`);
    };
    range('temperature', 0, 1, 'invalid request: temperature must be between 0 and 1.0 inclusive.');
    range('p', 0.01, 0.99);
    range('frequency_penalty', 0, 1, 'invalid request: frequency_penalty must be between 0 and 1 inclusive.');
    range('presence_penalty', 0, 1, 'invalid request: presence_penalty must be between 0 and 1 inclusive.');
    if (req.k !== undefined && !(Number.isInteger(req.k) && req.k >= 0 && req.k <= 500)) throw invalid('invalid request: k must be between 0 and 500 inclusive.');
    if (req.max_tokens !== undefined && !(Number.isInteger(req.max_tokens) && req.max_tokens >= 1)) {
      throw invalid('invalid request: max_tokens must be a positive integer.');
    }
    if (req.seed !== undefined && !(Number.isInteger(req.seed) && req.seed >= 0)) throw invalid('invalid request: seed must be a non-negative integer.');
    if (req.stop_sequences !== undefined) {
      if (!Array.isArray(req.stop_sequences) || !req.stop_sequences.every((s) => typeof s === 'string')) {
        throw invalid('invalid request: stop_sequences must be a list of strings.');
      }
      if (req.stop_sequences.length > 5) throw invalid('invalid request: stop_sequences can have at most 5 entries.');
    }

    // Tools.
    const tools = req.tools ?? [];
    if (!Array.isArray(tools)) throw invalid('invalid request: tools must be a list.');
    for (const t of tools) {
      if (!isObject(t)) throw invalid('invalid request: tools must be objects.');
      checkFields(t, ['type', 'function']);
      if (t.type !== 'function') throw invalid('invalid request: tool type must be function.');
      if (!isObject(t.function)) throw invalid('invalid request: tool function is required.');
      checkFields(t.function, ['name', 'description', 'parameters']);
      const tname = t.function.name;
      if (typeof tname !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(tname)) {
        throw invalid(
          `invalid request: tool names can only contain certain characters (A-Za-z0-9_) and can't begin with a digit (provided name: '${tname}').`,
        );
      }
      if (t.function.parameters === undefined) throw invalid(`invalid request: tool '${tname}' must have parameters.`);
      if (!isObject(t.function.parameters)) throw invalid('schema must be an object');
    }
    if (req.tool_choice !== undefined) {
      if (!['REQUIRED', 'NONE'].includes(req.tool_choice)) throw invalid("invalid request: tool_choice must be one of 'REQUIRED' or 'NONE'.");
      if (tools.length === 0) throw invalid('invalid request: tool_choice can only be used together with tools.');
    }
    const rf = req.response_format;
    if (rf !== undefined) {
      if (!isObject(rf)) throw invalid('invalid request: response_format must be an object.');
      checkFields(rf, ['type', 'json_schema']);
      if (!['text', 'json_object'].includes(rf.type)) throw invalid("invalid request: response_format type must be one of 'text' or 'json_object'.");
      if (rf.json_schema !== undefined && (rf.type !== 'json_object' || !isObject(rf.json_schema))) {
        throw invalid('invalid request: json_schema can only be an object used with type json_object.');
      }
      if (rf.type === 'json_object' && tools.length > 0) throw invalid('invalid request: response_format is not supported with tools.');
    }
    const th = req.thinking;
    if (th !== undefined) {
      if (!isObject(th)) throw invalid('invalid request: thinking must be an object.');
      checkFields(th, ['type', 'token_budget']);
      if (!['enabled', 'disabled'].includes(th.type)) throw invalid("invalid request: thinking type must be one of 'enabled' or 'disabled'.");
      if (th.token_budget !== undefined && !(Number.isInteger(th.token_budget) && th.token_budget >= 1)) {
        throw invalid('invalid request: thinking token_budget must be a positive integer.');
      }
      if (th.type === 'enabled' && !model.reasoning) throw invalid(`invalid request: thinking is not supported by model '${model.name}'.`);
    }

    // Messages.
    const callIds = new Set();
    req.messages.forEach((m, i) => {
      if (!isObject(m)) throw invalid(`invalid request: messages[${i}] must be an object.`);
      const allowed = MESSAGE_FIELDS[m.role];
      if (!allowed) throw invalid(`invalid request: invalid role '${m.role}' at messages[${i}]; role must be one of system, user, assistant, tool.`);
      checkFields(m, allowed);
      if (m.role === 'system' && i > 0) throw invalid('system turn must be the first in the list');
      checkContent(m, i, model);
      if (m.role === 'assistant') {
        const calls = m.tool_calls ?? [];
        if (!Array.isArray(calls)) throw invalid(`invalid request: messages[${i}].tool_calls must be a list.`);
        if (calls.length > 0 && contentText(m.content) !== '' && (typeof m.content === 'string' || m.content.some((b) => b.type === 'text'))) {
          throw invalid(
            `text content is not allowed when tool_calls are provided. If you wish to pass a tool plan, either pass thinking content (with thinking enabled) or use 'tool_plan': 'messages[${i}].content[0]'`,
          );
        }
        if (calls.length === 0 && m.content === undefined) throw invalid('message must not be empty in a turn');
        for (const c of calls) {
          if (!isObject(c)) throw invalid(`invalid request: messages[${i}].tool_calls must hold objects.`);
          checkFields(c, ['id', 'type', 'function']);
          if (c.type !== 'function') throw invalid('tool call must be of type function');
          if (!isObject(c.function)) throw invalid(`invalid request: messages[${i}].tool_calls function is required.`);
          checkFields(c.function, ['name', 'arguments']);
          if (typeof c.function.arguments !== 'string') throw invalid(`invalid request: messages[${i}].tool_calls arguments must be a string.`);
          if (callIds.has(c.id)) throw invalid('cannot have duplicate tool ids');
          callIds.add(c.id);
        }
      }
      if (m.role === 'tool') {
        if (typeof m.tool_call_id !== 'string' || m.tool_call_id === '') throw invalid('tool call id must be provided with tool message');
        if (!callIds.has(m.tool_call_id)) throw invalid('tool call id not found in previous tool calls');
      }
    });
  }

  function checkContent(m, i, model) {
    const c = m.content;
    if (c === undefined && (m.role === 'assistant')) return;
    if (typeof c === 'string') return;
    if (!Array.isArray(c)) throw invalid(`invalid request: messages[${i}].content must be a string or a list of content blocks.`);
    const allowedTypes = { system: ['text'], user: ['text', 'image_url'], assistant: ['text', 'thinking'], tool: ['text', 'document'] }[m.role];
    c.forEach((b, j) => {
      if (!isObject(b) || !allowedTypes.includes(b.type)) {
        throw invalid(`invalid request: messages[${i}].content[${j}] must be one of the types ${allowedTypes.join(', ')}.`);
      }
      if (b.type === 'text') {
        checkFields(b, ['type', 'text']);
        if (typeof b.text !== 'string') throw invalid(`invalid request: messages[${i}].content[${j}].text must be a string.`);
      } else if (b.type === 'thinking') {
        checkFields(b, ['type', 'thinking']);
      } else if (b.type === 'document') {
        checkFields(b, ['type', 'document']);
      } else if (b.type === 'image_url') {
        checkFields(b, ['type', 'image_url']);
        if (!isObject(b.image_url) || typeof b.image_url.url !== 'string') throw invalid(`invalid request: messages[${i}].content[${j}].image_url.url is required.`);
        checkFields(b.image_url, ['url', 'detail']);
        if (b.image_url.detail !== undefined && !['auto', 'low', 'high'].includes(b.image_url.detail)) {
          throw invalid("invalid request: image detail must be one of 'auto', 'low' or 'high'.");
        }
        if (!model.vision) throw invalid(`invalid request: model '${model.name}' does not support image inputs.`);
      }
    });
  }

  /** What the reply answers: the last user text, or the tool results after it. */
  function promptOf(messages) {
    const tail = [];
    for (let i = messages.length - 1; i >= 0; i--) {
      const m = messages[i];
      if (m.role === 'tool') tail.unshift(contentText(m.content));
      else if (m.role === 'user') return tail.length ? tail.join(' ') : contentText(m.content);
      else if (tail.length) return tail.join(' ');
    }
    return tail.join(' ');
  }

  function sse(event) {
    return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
  }

  function chat(ctx) {
    const req = ctx.json;
    const model = modelFor(req, 'chat');
    validateChat(req, model);
    const stream = req.stream === true;
    const omitUsage = !!ctx.fault?.omitUsage;
    const id = uuid(`chat:${name}:${ctx.seq}`);
    const prompt = promptOf(req.messages);
    const inputTokens = req.messages.reduce(
      (n, m) => n + words(contentText(m.content)).length + words(m.tool_plan).length,
      0,
    );
    const thinks = !!model.reasoning && req.thinking?.type !== 'disabled';
    const thinking = thinks ? `mock thinking about: ${prompt}` : null;
    const tools = Array.isArray(req.tools) ? req.tools : [];

    let answer; // { text?, plan?, calls?, finish }
    if (req.tool_choice === 'REQUIRED' && tools.length > 0) {
      const names = tools.map((t) => t.function.name);
      const args = JSON.stringify({ echo: prompt });
      answer = {
        plan: `I will use the ${names.join(' and ')} tool${names.length > 1 ? 's' : ''}.`,
        calls: names.map((n, i) => ({
          id: `${n}_${token36(`call:${name}:${ctx.seq}:${i}`, 12)}`,
          name: n,
          arguments: args,
          pieces: ['{"echo"', ': ', JSON.stringify(prompt), '}'],
        })),
        finish: 'TOOL_CALL',
      };
    } else {
      const json = isObject(req.response_format) && req.response_format.type === 'json_object';
      let ws = json ? [JSON.stringify({ echo: prompt })] : words(`mock(${name}) reply to: ${prompt}`);
      let finish = 'COMPLETE';
      const full = ws.join(' ');
      for (const seq of Array.isArray(req.stop_sequences) ? req.stop_sequences : []) {
        const at = seq !== '' ? full.indexOf(seq) : -1;
        if (at >= 0) {
          ws = words(full.slice(0, at));
          finish = 'STOP_SEQUENCE';
          break;
        }
      }
      if (Number.isInteger(req.max_tokens) && ws.length > req.max_tokens) {
        ws = ws.slice(0, req.max_tokens);
        finish = 'MAX_TOKENS';
      }
      answer = { text: ws.join(' '), pieces: pieces(ws), finish };
    }
    const outputTokens =
      (answer.calls ? words(answer.plan).length + answer.calls.reduce((n, c) => n + c.pieces.length, 0) : answer.pieces.length) +
      (thinks ? words(thinking).length : 0);
    const usage = {
      billed_units: { input_tokens: inputTokens, output_tokens: outputTokens },
      tokens: { input_tokens: inputTokens, output_tokens: outputTokens },
      cached_tokens: 0,
    };
    const recorded = omitUsage
      ? null
      : { prompt_tokens: inputTokens, completion_tokens: outputTokens, total_tokens: inputTokens + outputTokens };

    if (!stream) {
      const message = { role: 'assistant' };
      if (answer.calls) {
        if (thinks) message.content = [{ type: 'thinking', thinking }];
        message.tool_plan = answer.plan;
        message.tool_calls = answer.calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } }));
      } else {
        message.content = [...(thinks ? [{ type: 'thinking', thinking }] : []), { type: 'text', text: answer.text }];
      }
      const body = { id, message, finish_reason: answer.finish, ...(omitUsage ? {} : { usage }) };
      return {
        status: 200,
        headers: { 'content-type': 'application/json', ...commonHeaders(ctx) },
        body: JSON.stringify(body),
        usage: recorded,
      };
    }

    const frames = [];
    const push = (kind, event) => frames.push({ kind, data: sse(event) });
    push('role', {
      id,
      type: 'message-start',
      delta: { message: { role: 'assistant', content: [], tool_plan: '', tool_calls: [], citations: [] } },
    });
    let index = 0;
    const block = (type, texts) => {
      push('block', { type: 'content-start', index, delta: { message: { content: { type, [type]: '' } } } });
      for (const t of texts) push('content', { type: 'content-delta', index, delta: { message: { content: { [type]: t } } } });
      push('block', { type: 'content-end', index });
      index++;
    };
    if (thinks) block('thinking', pieces(words(thinking)));
    if (answer.calls) {
      for (const t of pieces(words(answer.plan))) push('content', { type: 'tool-plan-delta', delta: { message: { tool_plan: t } } });
      answer.calls.forEach((c, i) => {
        const at = index + i;
        push('block', {
          type: 'tool-call-start',
          index: at,
          delta: { message: { tool_calls: { id: c.id, type: 'function', function: { name: c.name, arguments: '' } } } },
        });
        for (const p of c.pieces) {
          push('content', { type: 'tool-call-delta', index: at, delta: { message: { tool_calls: { function: { arguments: p } } } } });
        }
        push('block', { type: 'tool-call-end', index: at });
      });
    } else {
      block('text', answer.pieces);
    }
    push('finish', { type: 'message-end', delta: { finish_reason: answer.finish, ...(omitUsage ? {} : { usage }) } });
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...commonHeaders(ctx) },
      frames,
      usage: recorded,
    };
  }

  // ----------------------------------------------------------- embed

  function embed(ctx, ok) {
    const req = ctx.json;
    for (const key of Object.keys(req)) if (!EMBED_FIELDS.has(key)) throw unknownField(key);
    const model = modelFor(req, 'embed');
    if (req.input_type === undefined || !INPUT_TYPES.includes(req.input_type)) {
      throw invalid('invalid request: valid input_type must be provided with the provided model');
    }
    if (!Array.isArray(req.embedding_types) || req.embedding_types.length === 0) throw invalid('embedding_types parameter is required');
    for (const t of req.embedding_types) {
      if (!EMBEDDING_TYPES.includes(t)) throw invalid(`invalid request: embedding type '${t}' is not supported.`);
    }
    const texts = req.texts;
    if (!Array.isArray(texts) || texts.length === 0) throw invalid('invalid request: texts must not be empty');
    if (texts.length > MAX_TEXTS) throw invalid(`invalid request: total number of texts must be at most ${MAX_TEXTS} - received ${texts.length}`);
    texts.forEach((t, i) => {
      if (typeof t !== 'string') throw invalid(`invalid request: texts[${i}] must be a string.`);
      if (t === '') throw invalid(`invalid request: inputs contains an element that is the empty string at index ${i}`);
    });
    let dims = model.dimensions ?? 1024;
    if (req.output_dimension !== undefined) {
      if (!model.outputDimensions) throw invalid(`invalid request: output_dimension is not supported by model '${model.name}'.`);
      if (!model.outputDimensions.includes(req.output_dimension)) {
        throw invalid(`invalid request: output_dimension must be one of ${model.outputDimensions.join(', ')}.`);
      }
      dims = req.output_dimension;
    }
    const vectors = texts.map((t) => embeddingVector(`${model.name}|${req.input_type}|${t}`, dims));
    const embeddings = {};
    for (const type of req.embedding_types) embeddings[type] = vectors.map((v) => encode(v, type));
    const tokens = texts.reduce((n, t) => n + words(t).length, 0);
    const body = {
      id: uuid(`embed:${name}:${ctx.seq}`),
      texts,
      embeddings,
      meta: { api_version: { version: '2' }, billed_units: { input_tokens: tokens } },
      response_type: 'embeddings_by_type',
    };
    return ok(body, ctx.fault?.omitUsage ? null : { prompt_tokens: tokens, total_tokens: tokens });
  }

  function encode(v, type) {
    switch (type) {
      case 'float':
        return v.map((x) => Number(x.toPrecision(8)));
      case 'int8':
        return v.map((x) => Math.max(-128, Math.min(127, Math.round(x * 127))));
      case 'uint8':
        return v.map((x) => Math.max(0, Math.min(255, Math.round(x * 127) + 128)));
      case 'base64': {
        const buf = Buffer.alloc(v.length * 4);
        v.forEach((x, i) => buf.writeFloatLE(x, i * 4));
        return buf.toString('base64');
      }
      default: {
        // binary / ubinary: one bit per dimension (1 when positive), 8 per byte.
        const bytes = [];
        for (let i = 0; i < v.length; i += 8) {
          let b = 0;
          for (let j = 0; j < 8; j++) b = (b << 1) | (v[i + j] > 0 ? 1 : 0);
          bytes.push(type === 'binary' ? b - 128 : b);
        }
        return bytes;
      }
    }
  }

  return { name, flavor: 'cohere', authenticate, handle, errorPlan, rateLimitPlan, errorFramePlan, internalErrorPlan, route };
}
