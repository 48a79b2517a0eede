// Workers AI REST wire flavor for the tollgate mock provider.
//
// Implements the flavor interface documented at the top of ./openai.mjs for
// Workers AI's native REST endpoint, the one whose `result` is exactly what the
// in-Worker binding's `env.AI.run(model, inputs)` returns:
//
//   POST …/accounts/{account_id}/ai/run/{model}   body = the run() inputs
//     JSON   -> 200 {"result": <run() value>, "success": true, "errors": [], "messages": []}
//     stream -> 200 text/event-stream (the bytes run() returns as a ReadableStream)
//     error  -> {"result": null, "success": false, "errors": [{"code", "message"}], "messages": []}
//
// Any path prefix works; the model is everything after `/ai/run/`
// (`@cf/meta/llama-3.3-70b-instruct-fp8-fast`). The binding stand-in
// (tests/mock/workers-ai-binding/) forwards each run() call here and turns an
// error envelope into the `InferenceUpstreamError: <code>: <message>` the real
// binding throws (cloudflare/workerd src/cloudflare/internal/ai-api.ts).
//
// Auth: `Authorization: Bearer <token>`; anything else -> 401 code 10000
// "Authentication error" (Cloudflare's API envelope).
//
// Models (schemas from cloudflare/cloudflare-docs src/content/workers-ai-models/):
//   @cf/meta/llama-3.3-70b-instruct-fp8-fast, @cf/meta/llama-3.1-8b-instruct
//       native shape: {response, tool_calls: [{name, arguments: {…}}], usage};
//       streams of {"response": "<piece>", "p": "<padding>"} frames, then
//       {"response": "", "usage": {…}} and `data: [DONE]`.
//   @cf/openai/gpt-oss-20b
//       OpenAI shape: {id, object: "chat.completion", choices: [{message, finish_reason}], usage};
//       streams of chat.completion.chunk frames with per-chunk usage, then the
//       cumulative {"response": "", "usage": {…}} frame and `data: [DONE]`.
//   @cf/baai/bge-small-en-v1.5 (384 dims), @cf/baai/bge-base-en-v1.5 (768 dims)
//       {text: string | string[≤100]} -> {shape: [n, dims], data: [[…]], pooling: "mean"}.
// Unknown models -> 400 code 5007 "No such model <model> or task" (errors page).
//
// Input validation follows the schemas (JSON Schema: unknown properties are
// accepted, known ones are type- and range-checked) and answers 400 code 5006
// with the validator's wording seen in the wild ("Error: oneOf at '/' not met,
// …, Type mismatch of '/messages/1/content', 'array' not in 'string'"); range
// messages are mock wording in the same style. Checked: `prompt` or `messages`
// required; each message needs a string role and string content (no null, no
// arrays: these models have no vision); max_tokens ≥ 1 (integer), temperature
// 0–5, top_p 0.001–1, top_k 1–50, seed 1–9999999999, frequency/presence
// penalty −2–2, repetition_penalty 0–2; tools need name, description and
// parameters {type, properties} (flat or under `function`); response_format
// type json_object or json_schema; stream boolean.
//
// Answers are deterministic:
//   text       "mock(<name>) reply to: <prompt>", one word per stream frame (later
//              words with their leading space); <prompt> is the last user message,
//              or, when tool messages follow it, their contents joined by spaces.
//   max_tokens cuts the words (default 256, Workers AI's); a native answer has no
//              finish_reason, the OpenAI-shaped one says "length".
//   JSON mode  response_format -> the JSON {"echo": "<prompt>"}: as an object in a
//              native `response` (how native models return JSON mode), as text in
//              streams and in OpenAI-shaped content.
//   tools      tools present, tool_choice not "none", and the last message from the
//              user -> one call of the named tool (tool_choice {type: function}) or
//              the first tool, arguments {"echo": "<prompt>"}; native non-stream:
//              {"response": null, "tool_calls": [{name, arguments: {…}}]}; native
//              stream: a tool_calls item with id, type, index and name, argument
//              fragments by index, then the all-null "finalization" item.
//   usage      prompt_tokens = words of every message content, completion_tokens =
//              words / argument fragments emitted. `stop` is not a Workers AI
//              parameter: it is accepted and ignored, as unknown properties are.
//
// Faults: all transport faults apply. status -> that status with Cloudflare's
// envelope and the documented code for it (400 3003, 401 10000, 403 3023, 404
// 3042, 405 5019, 408 3007, 413 3006, 429 3040, 5xx 3043); body -> as given;
// rateLimit -> 429 code 3040 "Capacity temporarily exceeded, please try again."
// (`rateLimit: {code: 3036}` for the daily allocation), with retry-after only
// when asked; errorFrame -> 200 SSE whose only frame is {"errors": [{code 3043}]};
// omitUsage -> no usage anywhere. Stream frame kinds: 'role' (a tool call's
// first item), 'content' (text pieces and argument fragments: what cutAfterChunks
// counts), 'finish' (the finalization item / finish chunk), 'usage', 'done'.

import { createHash } from 'node:crypto';
import { embeddingVector } from './openai.mjs';

const DEFAULT_MODELS = [
  { name: '@cf/meta/llama-3.3-70b-instruct-fp8-fast', task: 'text', shape: 'native' },
  { name: '@cf/meta/llama-3.1-8b-instruct', task: 'text', shape: 'native' },
  { name: '@cf/openai/gpt-oss-20b', task: 'text', shape: 'openai' },
  { name: '@cf/baai/bge-small-en-v1.5', task: 'embed', dims: 384 },
  { name: '@cf/baai/bge-base-en-v1.5', task: 'embed', dims: 768 },
];

const DEFAULT_MAX_TOKENS = 256;

/** Documented internal code and description per HTTP status, for status faults. */
const STATUS_ERRORS = {
  400: [3003, 'Request is missing headers or body: mock fault'],
  401: [10000, 'Authentication error'],
  403: [3023, 'Service unavailable for account'],
  404: [3042, 'The model name is invalid'],
  405: [5019, 'Request trying to use deprecated SDK version'],
  408: [3007, 'Request timeout'],
  413: [3006, 'Request is too large'],
  429: [3040, 'Capacity temporarily exceeded, please try again.'],
};
const SERVER_ERROR = [3043, 'Internal server error'];
export const CAPACITY_MESSAGE = 'Capacity temporarily exceeded, please try again.';
export const DAILY_LIMIT_MESSAGE =
  "You have used up your daily free allocation of 10,000 neurons. Please upgrade to Cloudflare's Workers Paid plan if you would like to continue usage.";

function sha256(text) {
  return createHash('sha256').update(text).digest();
}

function words(text) {
  return String(text ?? '').split(/\s+/).filter(Boolean);
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function typeName(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** The `p` padding field Workers AI adds to stream frames: random letters of random length. */
function padding(seed) {
  const len = 1 + (sha256('p:' + seed)[0] % 40);
  return 'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(2).slice(0, len);
}

function envelope(result) {
  return { result, success: true, errors: [], messages: [] };
}

function errorEnvelope(code, message) {
  return { result: null, success: false, errors: [{ code, message }], messages: [] };
}

function sse(obj) {
  return `data: ${JSON.stringify(obj)}\n\n`;
}

export function createFlavor({ name = 'workers-ai', models = DEFAULT_MODELS } = {}) {
  function headers(extra = {}) {
    return { 'x-mock-provider': name, 'cf-ai-req-id': 'mock-req', ...extra };
  }

  function errorPlan(status, fields = {}, ctx = null) {
    const [code, message] = STATUS_ERRORS[status] ?? (status >= 500 ? SERVER_ERROR : [3003, `Mock fault: HTTP ${status}`]);
    return {
      status,
      headers: headers({ 'content-type': 'application/json' }),
      body: errorEnvelope(fields.code ?? code, fields.message ?? message),
      usage: null,
    };
  }

  function invalidInput(detail) {
    return errorPlan(400, { code: 5006, message: `Error: oneOf at '/' not met, ${detail}` });
  }

  function rateLimitPlan(fault, _ctx) {
    const rl = isObject(fault.rateLimit) ? fault.rateLimit : {};
    const daily = rl.code === 3036;
    const plan = errorPlan(429, daily ? { code: 3036, message: DAILY_LIMIT_MESSAGE } : { code: 3040, message: CAPACITY_MESSAGE });
    if (rl.retryAfter !== undefined && rl.retryAfter !== null) plan.headers['retry-after'] = String(rl.retryAfter);
    return plan;
  }

  function errorFramePlan(_ctx) {
    return {
      status: 200,
      headers: headers({ 'content-type': 'text/event-stream' }),
      frames: [{ kind: 'error', data: sse({ errors: [{ code: SERVER_ERROR[0], message: SERVER_ERROR[1] }] }) }],
      usage: null,
    };
  }

  function internalErrorPlan(_err, _ctx) {
    return errorPlan(500);
  }

  function authenticate(ctx) {
    if (ctx.apiKey === null || ctx.apiKey === undefined) return null;
    const m = /^Bearer\s+(.*)$/i.exec(String(ctx.headers.authorization ?? '').trim());
    if (m && m[1].trim() === ctx.apiKey) return null;
    return errorPlan(401);
  }

  function handle(ctx) {
    const m = /\/ai\/run\/(.+)$/.exec(ctx.pathname);
    if (!m || ctx.method !== 'POST') return errorPlan(404, { code: 7003, message: 'Could not route to ' + ctx.pathname + ', perhaps your object identifier is invalid?' });
    const modelName = decodeURIComponent(m[1]);
    const model = models.find((x) => x.name === modelName);
    if (!model) return errorPlan(400, { code: 5007, message: `No such model ${modelName} or task` });
    if (ctx.jsonError || !isObject(ctx.json)) return errorPlan(400, { code: 3003, message: 'Request is missing headers or body: body is not JSON' });
    return model.task === 'embed' ? embed(ctx, model) : text(ctx, model);
  }

  // ------------------------------------------------------------ validation

  function checkRange(req, key, lo, hi, integer = false) {
    const v = req[key];
    if (v === undefined) return null;
    if (typeof v !== 'number' || (integer && !Number.isInteger(v))) return `Type mismatch of '/${key}', '${typeName(v)}' not in '${integer ? 'integer' : 'number'}'`;
    if (v < lo || v > hi) return `Value of '/${key}' must be between ${lo} and ${hi}`;
    return null;
  }

  function checkTool(t, i) {
    const f = isObject(t) && isObject(t.function) ? t.function : t;
    if (!isObject(f)) return `Type mismatch of '/tools/${i}', '${typeName(t)}' not in 'object'`;
    for (const key of ['name', 'description', 'parameters']) {
      if (f[key] === undefined) return `required properties at '/tools/${i}' are '${key}'`;
    }
    if (typeof f.name !== 'string' || typeof f.description !== 'string') return `Type mismatch of '/tools/${i}/name', 'string' expected`;
    if (!isObject(f.parameters) || f.parameters.type === undefined || f.parameters.properties === undefined) {
      return `required properties at '/tools/${i}/parameters' are 'type', 'properties'`;
    }
    return null;
  }

  function validateText(req) {
    if (req.messages === undefined && req.prompt === undefined) {
      return "0 matches: required properties at '/' are 'prompt', required properties at '/' are 'messages'";
    }
    if (req.messages !== undefined) {
      if (!Array.isArray(req.messages)) return `Type mismatch of '/messages', '${typeName(req.messages)}' not in 'array'`;
      for (const [i, msg] of req.messages.entries()) {
        if (!isObject(msg)) return `Type mismatch of '/messages/${i}', '${typeName(msg)}' not in 'object'`;
        if (typeof msg.role !== 'string') return `required properties at '/messages/${i}' are 'role'`;
        if (typeof msg.content !== 'string') return `Type mismatch of '/messages/${i}/content', '${typeName(msg.content)}' not in 'string'`;
      }
    } else if (typeof req.prompt !== 'string' || req.prompt.length === 0) {
      return `Type mismatch of '/prompt', '${typeName(req.prompt)}' not in 'string'`;
    }
    const ranges = [
      checkRange(req, 'max_tokens', 1, 1e9, true),
      checkRange(req, 'temperature', 0, 5),
      checkRange(req, 'top_p', 0.001, 1),
      checkRange(req, 'top_k', 1, 50, true),
      checkRange(req, 'seed', 1, 9999999999, true),
      checkRange(req, 'frequency_penalty', -2, 2),
      checkRange(req, 'presence_penalty', -2, 2),
      checkRange(req, 'repetition_penalty', 0, 2),
    ];
    const bad = ranges.find((r) => r !== null);
    if (bad) return bad;
    if (req.stream !== undefined && typeof req.stream !== 'boolean') return `Type mismatch of '/stream', '${typeName(req.stream)}' not in 'boolean'`;
    if (req.tools !== undefined) {
      if (!Array.isArray(req.tools)) return `Type mismatch of '/tools', '${typeName(req.tools)}' not in 'array'`;
      for (const [i, t] of req.tools.entries()) {
        const e = checkTool(t, i);
        if (e) return e;
      }
    }
    if (req.response_format !== undefined) {
      const rf = req.response_format;
      if (!isObject(rf) || !['json_object', 'json_schema'].includes(rf.type)) return "Value of '/response_format/type' must be one of 'json_object', 'json_schema'";
    }
    return null;
  }

  // ------------------------------------------------------------------ text

  function promptOf(req) {
    if (req.messages === undefined) return req.prompt;
    const msgs = req.messages;
    const tools = [];
    for (let i = msgs.length - 1; i >= 0; i--) {
      if (msgs[i].role === 'tool') tools.unshift(msgs[i].content);
      else if (msgs[i].role === 'user') return tools.length ? tools.join(' ') : msgs[i].content;
      else if (tools.length) return tools.join(' ');
    }
    return tools.join(' ');
  }

  function pickTool(req) {
    if (!Array.isArray(req.tools) || req.tools.length === 0 || req.tool_choice === 'none') return null;
    const msgs = req.messages ?? [];
    if (msgs.length === 0 || msgs[msgs.length - 1].role !== 'user') return null;
    const nameOf = (t) => (isObject(t.function) ? t.function.name : t.name);
    if (isObject(req.tool_choice) && isObject(req.tool_choice.function)) return req.tool_choice.function.name;
    return nameOf(req.tools[0]);
  }

  function text(ctx, model) {
    const req = ctx.json;
    const invalid = validateText(req);
    if (invalid) return invalidInput(invalid);
    const prompt = promptOf(req);
    const promptTokens = (req.messages ?? [{ content: req.prompt }]).reduce((n, m) => n + words(m.content).length, 0);
    const limit = req.max_tokens ?? DEFAULT_MAX_TOKENS;
    const stream = req.stream === true;
    const omitUsage = !!ctx.fault?.omitUsage;
    const toolName = pickTool(req);
    const json = isObject(req.response_format);

    let reply; // { text, pieces, toolCall, completionTokens, cut }
    if (toolName !== null) {
      const args = { echo: prompt };
      const pieces = ['{"echo": ', JSON.stringify(prompt), '}'];
      reply = { text: null, pieces, toolCall: { name: toolName, arguments: args }, completionTokens: pieces.length, cut: false };
    } else {
      const full = json ? JSON.stringify({ echo: prompt }) : `mock(${name}) reply to: ${prompt}`;
      const all = json ? [full] : words(full);
      const emitted = all.slice(0, limit);
      reply = {
        text: json ? full : emitted.join(' '),
        pieces: emitted.map((w, i) => (i === 0 ? w : ' ' + w)),
        toolCall: null,
        completionTokens: json ? words(full).length : emitted.length,
        cut: emitted.length < all.length,
      };
    }
    const usage = { prompt_tokens: promptTokens, completion_tokens: reply.completionTokens, total_tokens: promptTokens + reply.completionTokens };
    const recorded = omitUsage ? null : usage;
    const callId = 'chatcmpl-tool-' + sha256(`tool:${name}:${ctx.seq}`).toString('hex').slice(0, 32);

    if (model.shape === 'openai') return openaiShaped(ctx, model, req, reply, usage, omitUsage, callId, stream);

    if (!stream) {
      const result = reply.toolCall
        ? { response: null, tool_calls: [reply.toolCall] }
        : { response: json ? JSON.parse(reply.text) : reply.text, tool_calls: [] };
      if (!omitUsage) result.usage = usage;
      return { status: 200, headers: headers({ 'content-type': 'application/json' }), body: envelope(result), usage: recorded };
    }
    const frames = [];
    if (reply.toolCall) {
      frames.push({
        kind: 'role',
        data: sse({ response: '', tool_calls: [{ id: callId, type: 'function', index: 0, function: { name: reply.toolCall.name, arguments: '' } }], p: padding(callId) }),
      });
      for (const [i, piece] of reply.pieces.entries()) {
        frames.push({ kind: 'content', data: sse({ response: '', tool_calls: [{ index: 0, function: { arguments: piece } }], p: padding(`${ctx.seq}:${i}`) }) });
      }
      frames.push({ kind: 'finish', data: sse({ response: '', tool_calls: [{ id: null, type: null, index: 0, function: { name: null, arguments: null } }] }) });
    } else {
      for (const [i, piece] of reply.pieces.entries()) {
        frames.push({ kind: 'content', data: sse({ response: piece, p: padding(`${ctx.seq}:${i}`) }) });
      }
    }
    if (!omitUsage) frames.push({ kind: 'usage', data: sse({ response: '', usage }) });
    frames.push({ kind: 'done', data: 'data: [DONE]\n\n' });
    return { status: 200, headers: headers({ 'content-type': 'text/event-stream' }), frames, usage: recorded };
  }

  function openaiShaped(ctx, model, req, reply, usage, omitUsage, callId, stream) {
    const id = sha256(`id:${name}:${ctx.seq}`).toString('hex').slice(0, 32);
    const created = Math.floor(Date.now() / 1000);
    const finish = reply.toolCall ? 'tool_calls' : reply.cut ? 'length' : 'stop';
    const toolCall = reply.toolCall && {
      id: callId,
      type: 'function',
      function: { name: reply.toolCall.name, arguments: JSON.stringify(reply.toolCall.arguments) },
    };
    if (!stream) {
      const result = {
        id,
        object: 'chat.completion',
        created,
        model: model.name,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: reply.text, reasoning_content: null, tool_calls: toolCall ? [toolCall] : [] },
            logprobs: null,
            finish_reason: finish,
            stop_reason: null,
          },
        ],
        ...(omitUsage ? {} : { usage: { ...usage, prompt_tokens_details: { cached_tokens: 0 } } }),
      };
      return { status: 200, headers: headers({ 'content-type': 'application/json' }), body: envelope(result), usage: omitUsage ? null : usage };
    }
    const chunk = (delta, finishReason, chunkUsage) =>
      sse({
        choices: [{ delta, finish_reason: finishReason, index: 0, logprobs: null }],
        created,
        id,
        model: model.name,
        object: 'chat.completion.chunk',
        p: padding(JSON.stringify(delta)),
        ...(omitUsage ? {} : { usage: chunkUsage }),
      });
    const inc = (prompt, completion) => ({ prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion });
    const frames = [{ kind: 'role', data: chunk({ role: 'assistant', content: '' }, null, inc(usage.prompt_tokens, 0)) }];
    if (toolCall) {
      frames.push({ kind: 'content', data: chunk({ tool_calls: [{ index: 0, id: callId, type: 'function', function: { name: toolCall.function.name, arguments: '' } }] }, null, inc(0, 0)) });
      for (const piece of reply.pieces) frames.push({ kind: 'content', data: chunk({ tool_calls: [{ index: 0, function: { arguments: piece } }] }, null, inc(0, 1)) });
    } else {
      for (const piece of reply.pieces) frames.push({ kind: 'content', data: chunk({ content: piece }, null, inc(0, 1)) });
    }
    frames.push({ kind: 'finish', data: chunk({}, finish, inc(0, 0)) });
    if (!omitUsage) frames.push({ kind: 'usage', data: sse({ response: '', usage }) });
    frames.push({ kind: 'done', data: 'data: [DONE]\n\n' });
    return { status: 200, headers: headers({ 'content-type': 'text/event-stream' }), frames, usage: omitUsage ? null : usage };
  }

  // ------------------------------------------------------------ embeddings

  function embed(ctx, model) {
    const req = ctx.json;
    const texts = typeof req.text === 'string' ? [req.text] : req.text;
    if (!Array.isArray(texts) || texts.length === 0) return invalidInput(`Type mismatch of '/text', '${typeName(req.text)}' not in 'string'`);
    if (texts.length > 100) return invalidInput("Array at '/text' has more than 100 items");
    for (const [i, t] of texts.entries()) {
      if (typeof t !== 'string' || t.length === 0) return invalidInput(`Type mismatch of '/text/${i}', '${typeName(t)}' not in 'string'`);
    }
    const pooling = req.pooling ?? 'mean';
    if (!['mean', 'cls'].includes(pooling)) return invalidInput("Value of '/pooling' must be one of 'mean', 'cls'");
    const data = texts.map((t) => embeddingVector(`${model.name}|${pooling}|${t}`, model.dims).map((v) => Number(v.toPrecision(9))));
    // Workers AI reports no usage for embeddings.
    return {
      status: 200,
      headers: headers({ 'content-type': 'application/json' }),
      body: envelope({ shape: [texts.length, model.dims], data, pooling }),
      usage: null,
    };
  }

  return { name, flavor: 'workers-ai', authenticate, handle, errorPlan, rateLimitPlan, errorFramePlan, internalErrorPlan };
}
