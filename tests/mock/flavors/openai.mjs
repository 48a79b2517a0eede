// OpenAI wire flavor for the tollgate mock provider.
//
// A flavor module owns everything that is specific to one provider's wire
// format: routing (by path suffix), authentication, request validation, the
// success bodies / SSE frames, and the error bodies used by faults. The server
// machinery in ../mock-provider.mjs owns sockets, recording, fault queueing
// and the byte-level transport faults, and talks to flavors only through the
// interface below, so an Anthropic Messages or Gemini generateContent flavor
// can be added later as another module in this directory.
//
// Flavor interface (module exports `createFlavor(options)` returning):
//   name                         'openai'
//   authenticate(ctx)            -> Plan | null   (null = authorised)
//   handle(ctx)                  -> Plan          (route + respond; may throw -> 500)
//   errorPlan(status, fields)    -> Plan          (generic error body for `status`)
//   rateLimitPlan(fault, ctx)    -> Plan          (429 body + retry headers)
//   errorFramePlan(ctx)          -> Plan          (200 SSE whose first frame is an error)
//   internalErrorPlan(err, ctx)  -> Plan          (500 for a handler exception)
//
// ctx = { name, seq, method, pathname, query, headers, body (raw string),
//         json (parsed or null), jsonError (bool), apiKey, fault (or null) }
//
// Plan = { status, headers: {lower-case: value}, usage: object|null,
//          body?: string|Buffer|object  (non-streaming; exact bytes; object -> compact JSON)
//          frames?: [{ kind, data }] }  (streaming; data is the exact bytes of
//                                        one SSE frame; kind is one of
//                                        'role' | 'content' | 'finish' |
//                                        'usage' | 'done' | 'error')
// The transport layer treats frames with kind 'content' as the "content
// chunks" counted by the cutAfterChunks fault.
//
// Wire shapes follow real OpenAI traffic (see tests/fixtures/openai/README.md):
//   chat.completion        id, object, created, model, choices, usage, service_tier, system_fingerprint
//   chat.completion.chunk  id, object, created, model, service_tier, system_fingerprint, choices,
//                          [usage], obfuscation
// `obfuscation` is the random padding field OpenAI adds to every stream chunk
// unless the request sets stream_options.include_obfuscation=false; here it is
// derived deterministically from the chunk content so output is reproducible.

import { createHash } from 'node:crypto';

const MODEL_CREATED = 1_715_367_049;
const DEFAULT_MODELS = [
  { id: 'gpt-4o-mini', object: 'model', created: 1_721_172_741, owned_by: 'system' },
  { id: 'gpt-4o', object: 'model', created: MODEL_CREATED, owned_by: 'system' },
  { id: 'text-embedding-3-small', object: 'model', created: 1_705_948_997, owned_by: 'system' },
];

const KEY_HELP = 'You can find your API key at https://platform.openai.com/account/api-keys.';
const NO_KEY_MESSAGE =
  "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth " +
  '(i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you\'re accessing the API ' +
  'from your browser and are prompted for a username and password. You can obtain an API key from ' +
  'https://platform.openai.com/account/api-keys.';
const BAD_JSON_MESSAGE =
  "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library " +
  "correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring " +
  'out how to fix this, please contact us through our help center at help.openai.com.)';
const SERVER_ERROR_MESSAGE = 'The server had an error while processing your request. Sorry about that!';
const STREAM_ERROR_MESSAGE = 'The server had an error while processing your request.';

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function sha256(text) {
  return createHash('sha256').update(text).digest();
}

/** Deterministic base62 string of `len` characters derived from `seed`. */
function token(seed, len) {
  let out = '';
  let block = 0;
  while (out.length < len) {
    const bytes = sha256(`${seed}#${block++}`);
    for (const b of bytes) {
      if (out.length >= len) break;
      out += ALNUM[b % 62];
    }
  }
  return out;
}

function words(text) {
  return String(text ?? '').split(/\s+/).filter(Boolean);
}

/** OpenAI masks a presented key: first 8 and last 4 characters kept, the rest replaced by '*'. */
export function maskKey(key) {
  const k = String(key);
  if (k.length > 12) return k.slice(0, 8) + '*'.repeat(k.length - 12) + k.slice(-4);
  if (k.length > 4) return k.slice(0, 2) + '*'.repeat(k.length - 4) + k.slice(-2);
  return '*'.repeat(k.length);
}

export function errorBody(message, { type = 'invalid_request_error', param = null, code = null } = {}) {
  return { error: { message, type, param, code } };
}

/** Text of a message's `content`: a string, or the `text` parts of an array, joined by a space. */
function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => {
        if (typeof part === 'string') return part;
        if (part && typeof part === 'object' && typeof part.text === 'string') return part.text;
        return '';
      })
      .filter((s) => s.length > 0)
      .join(' ');
  }
  return '';
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function usageObject(promptTokens, completionTokens) {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

// OpenAI pretty-prints non-streaming bodies: success objects with a 2-space
// indent, error envelopes with a 4-space indent, both newline-terminated.
function prettyJson(obj) {
  return JSON.stringify(obj, null, 2) + '\n';
}

function errorJson(obj) {
  return JSON.stringify(obj, null, 4) + '\n';
}

function sseFrame(obj) {
  return `data: ${JSON.stringify(obj)}\n\n`;
}

function jsonHeaders(extra = {}) {
  return { 'content-type': 'application/json', ...extra };
}

export function createFlavor({ name = 'openai', models = DEFAULT_MODELS } = {}) {
  const fingerprint = 'fp_' + sha256(`fingerprint:${name}`).toString('hex').slice(0, 10);

  function commonHeaders(ctx) {
    return {
      'x-request-id': 'req_' + sha256(`req:${name}:${ctx.seq}`).toString('hex').slice(0, 32),
      'openai-version': '2020-10-01',
      'openai-processing-ms': '1',
      'openai-organization': 'mock-org',
      'x-mock-provider': name,
    };
  }

  function rateLimitHeaders() {
    return {
      'x-ratelimit-limit-requests': '10000',
      'x-ratelimit-limit-tokens': '30000000',
      'x-ratelimit-remaining-requests': '9999',
      'x-ratelimit-remaining-tokens': '29999990',
      'x-ratelimit-reset-requests': '6ms',
      'x-ratelimit-reset-tokens': '0s',
    };
  }

  function errorPlan(status, fields = {}, ctx = null) {
    // With an explicit message the caller owns the whole error; otherwise use the status' default.
    const base =
      fields.message !== undefined
        ? { message: fields.message, type: status >= 500 ? 'server_error' : 'invalid_request_error' }
        : defaultError(status, ctx);
    const e = { ...base, ...fields };
    return {
      status,
      headers: jsonHeaders(ctx ? commonHeaders(ctx) : { 'x-mock-provider': name }),
      body: errorJson(errorBody(e.message, { type: e.type, param: e.param ?? null, code: e.code ?? null })),
      usage: null,
    };
  }

  function defaultError(status, ctx) {
    const model = ctx?.json && typeof ctx.json.model === 'string' ? ctx.json.model : 'gpt-4o-mini';
    switch (status) {
      case 400:
        return { message: 'Invalid request (mock fault).', type: 'invalid_request_error' };
      case 401:
        return { message: NO_KEY_MESSAGE, type: 'invalid_request_error' };
      case 403:
        return { message: 'You are not allowed to sample from this model', type: 'invalid_request_error' };
      case 404:
        return {
          message: `The model \`${model}\` does not exist or you do not have access to it.`,
          type: 'invalid_request_error',
          code: 'model_not_found',
        };
      case 429:
        return {
          message: rateLimitMessage(model, 20),
          type: 'requests',
          code: 'rate_limit_exceeded',
        };
      case 500:
        return { message: SERVER_ERROR_MESSAGE, type: 'server_error' };
      case 503:
        return { message: 'The server is overloaded or not ready yet.', type: 'server_error' };
      default:
        return {
          message: `Mock fault: HTTP ${status}.`,
          type: status >= 500 ? 'server_error' : 'invalid_request_error',
        };
    }
  }

  function rateLimitMessage(model, seconds) {
    return (
      `Rate limit reached for ${model} in organization org-mock on requests per min (RPM): ` +
      `Limit 3, Used 3, Requested 1. Please try again in ${seconds}s. ` +
      'Visit https://platform.openai.com/account/rate-limits to learn more.'
    );
  }

  function rateLimitPlan(fault, ctx) {
    const rl = isObject(fault.rateLimit) ? fault.rateLimit : {};
    const model = ctx.json && typeof ctx.json.model === 'string' ? ctx.json.model : 'gpt-4o-mini';
    const headers = jsonHeaders({
      ...commonHeaders(ctx),
      'x-ratelimit-limit-requests': '3',
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': '20s',
    });
    let seconds = 20;
    if (rl.retryAfter !== undefined && rl.retryAfter !== null) {
      headers['retry-after'] = String(rl.retryAfter);
      const n = Number(rl.retryAfter);
      if (Number.isFinite(n)) seconds = n;
    }
    if (rl.retryAfterMs !== undefined && rl.retryAfterMs !== null) {
      headers['retry-after-ms'] = String(rl.retryAfterMs);
      const n = Number(rl.retryAfterMs);
      if (Number.isFinite(n)) seconds = n / 1000;
    }
    return {
      status: 429,
      headers,
      body: errorJson(errorBody(rateLimitMessage(model, seconds), { type: 'requests', code: 'rate_limit_exceeded' })),
      usage: null,
    };
  }

  function errorFramePlan(ctx) {
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream; charset=utf-8', ...commonHeaders(ctx) },
      frames: [{ kind: 'error', data: sseFrame(errorBody(STREAM_ERROR_MESSAGE, { type: 'server_error' })) }],
      usage: null,
    };
  }

  function internalErrorPlan(_err, ctx) {
    return errorPlan(500, { message: SERVER_ERROR_MESSAGE, type: 'server_error' }, ctx);
  }

  function authenticate(ctx) {
    if (ctx.apiKey === null || ctx.apiKey === undefined) return null;
    const auth = ctx.headers.authorization;
    if (typeof auth !== 'string' || auth.trim() === '') return errorPlan(401, { message: NO_KEY_MESSAGE }, ctx);
    const m = /^Bearer\s+(.*)$/i.exec(auth.trim());
    const presented = m ? m[1].trim() : auth.trim();
    if (m && presented === ctx.apiKey) return null;
    return errorPlan(
      401,
      {
        message: `Incorrect API key provided: ${maskKey(presented)}. ${KEY_HELP}`,
        type: 'invalid_request_error',
        code: 'invalid_api_key',
      },
      ctx,
    );
  }

  function route(method, pathname) {
    const p = pathname.length > 1 ? pathname.replace(/\/+$/, '') : pathname;
    if (p.endsWith('/chat/completions')) return method === 'POST' ? 'chat' : null;
    if (p.endsWith('/embeddings')) return method === 'POST' ? 'embeddings' : null;
    if (p.endsWith('/models')) return method === 'GET' ? 'models' : null;
    const mm = /\/models\/([^/]+)$/.exec(p);
    if (mm) return method === 'GET' ? 'model' : null;
    return null;
  }

  function handle(ctx) {
    const kind = route(ctx.method, ctx.pathname);
    if (!kind) {
      return errorPlan(404, { message: `Invalid URL (${ctx.method} ${ctx.pathname})`, type: 'invalid_request_error' }, ctx);
    }
    if (kind === 'models') {
      return { status: 200, headers: jsonHeaders(commonHeaders(ctx)), body: prettyJson({ object: 'list', data: models }), usage: null };
    }
    if (kind === 'model') {
      const id = decodeURIComponent(/\/models\/([^/]+)\/*$/.exec(ctx.pathname)[1]);
      const found = models.find((m) => m.id === id);
      if (!found) {
        return errorPlan(
          404,
          { message: `The model '${id}' does not exist`, type: 'invalid_request_error', param: 'model', code: 'model_not_found' },
          ctx,
        );
      }
      return { status: 200, headers: jsonHeaders(commonHeaders(ctx)), body: prettyJson(found), usage: null };
    }
    if (ctx.jsonError) return errorPlan(400, { message: BAD_JSON_MESSAGE, type: 'invalid_request_error' }, ctx);
    if (!isObject(ctx.json)) {
      return errorPlan(
        400,
        { message: "Invalid type for request body: expected an object.", type: 'invalid_request_error', code: 'invalid_type' },
        ctx,
      );
    }
    if (typeof ctx.json.model !== 'string' || ctx.json.model === '') {
      return errorPlan(400, { message: 'you must provide a model parameter', type: 'invalid_request_error' }, ctx);
    }
    return kind === 'chat' ? chat(ctx) : embeddings(ctx);
  }

  // ---------------------------------------------------------------- chat

  function chat(ctx) {
    const req = ctx.json;
    if (req.messages === undefined) {
      return errorPlan(
        400,
        { message: "Missing required parameter: 'messages'.", param: 'messages', code: 'missing_required_parameter' },
        ctx,
      );
    }
    if (!Array.isArray(req.messages)) {
      return errorPlan(
        400,
        {
          message: `Invalid type for 'messages': expected an array of objects, but got ${typeof req.messages} instead.`,
          param: 'messages',
          code: 'invalid_type',
        },
        ctx,
      );
    }
    const messages = req.messages.filter(isObject);
    const promptTokens = messages.reduce((n, m) => n + words(contentText(m.content)).length, 0);
    let lastUser = '';
    for (let i = messages.length - 1; i >= 0; i--) {
      if (messages[i].role === 'user') {
        lastUser = contentText(messages[i].content);
        break;
      }
    }

    const stream = req.stream === true;
    const streamOptions = isObject(req.stream_options) ? req.stream_options : {};
    const includeUsage = stream && streamOptions.include_usage === true;
    const obfuscate = stream && streamOptions.include_obfuscation !== false;
    const omitUsage = !!ctx.fault?.omitUsage;

    const id = 'chatcmpl-mock' + token(`chatcmpl:${name}:${ctx.seq}`, 25);
    const created = Math.floor(Date.now() / 1000);
    const model = req.model;

    // n > 1 is ignored: the mock always returns exactly one choice (index 0).
    const toolName = pickTool(req);
    let reply; // { content, toolCall, pieces, finishReason, completionTokens }
    if (toolName !== null) {
      const args = JSON.stringify({ echo: lastUser });
      // Argument fragments the way OpenAI's tokenizer tends to split a small JSON object.
      const pieces = ['{"', 'echo', '":', JSON.stringify(lastUser), '}'];
      reply = {
        content: null,
        toolCall: {
          id: 'call_' + token(`call:${name}:${ctx.seq}`, 24),
          type: 'function',
          function: { name: toolName, arguments: args },
        },
        pieces,
        finishReason: 'tool_calls',
        // completion_tokens for a tool call = number of argument fragments streamed.
        completionTokens: pieces.length,
      };
    } else {
      const all = words(`mock(${name}) reply to: ${lastUser}`);
      const limit = maxTokens(req);
      const emitted = limit !== null && limit < all.length ? all.slice(0, limit) : all;
      reply = {
        content: emitted.join(' '),
        toolCall: null,
        pieces: emitted.map((w, i) => (i < emitted.length - 1 ? w + ' ' : w)),
        finishReason: limit !== null && limit < all.length ? 'length' : 'stop',
        completionTokens: emitted.length,
      };
    }
    const usage = usageObject(promptTokens, reply.completionTokens);

    if (!stream) {
      const message = reply.toolCall
        ? { role: 'assistant', content: null, tool_calls: [reply.toolCall], refusal: null, annotations: [] }
        : { role: 'assistant', content: reply.content, refusal: null, annotations: [] };
      const body = {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message, logprobs: null, finish_reason: reply.finishReason }],
        ...(omitUsage ? {} : { usage }),
        service_tier: 'default',
        system_fingerprint: fingerprint,
      };
      return {
        status: 200,
        headers: jsonHeaders({ ...commonHeaders(ctx), ...rateLimitHeaders() }),
        body: prettyJson(body),
        usage: omitUsage ? null : usage,
      };
    }

    const withUsageField = includeUsage && !omitUsage;
    const chunk = (choices, usageValue) => {
      const obj = {
        id,
        object: 'chat.completion.chunk',
        created,
        model,
        service_tier: 'default',
        system_fingerprint: fingerprint,
        choices,
      };
      if (withUsageField) obj.usage = usageValue;
      if (obfuscate) obj.obfuscation = obfuscation(JSON.stringify(choices) + JSON.stringify(usageValue ?? null));
      return sseFrame(obj);
    };
    const choice = (delta, finishReason = null) => [{ index: 0, delta, logprobs: null, finish_reason: finishReason }];

    const frames = [];
    if (reply.toolCall) {
      frames.push({
        kind: 'role',
        data: chunk(
          choice({
            role: 'assistant',
            content: null,
            tool_calls: [
              { index: 0, id: reply.toolCall.id, type: 'function', function: { name: reply.toolCall.function.name, arguments: '' } },
            ],
            refusal: null,
          }),
          null,
        ),
      });
      for (const piece of reply.pieces) {
        frames.push({ kind: 'content', data: chunk(choice({ tool_calls: [{ index: 0, function: { arguments: piece } }] }), null) });
      }
    } else {
      frames.push({ kind: 'role', data: chunk(choice({ role: 'assistant', content: '', refusal: null }), null) });
      for (const piece of reply.pieces) {
        frames.push({ kind: 'content', data: chunk(choice({ content: piece }), null) });
      }
    }
    frames.push({ kind: 'finish', data: chunk(choice({}, reply.finishReason), null) });
    if (withUsageField) frames.push({ kind: 'usage', data: chunk([], usage) });
    frames.push({ kind: 'done', data: 'data: [DONE]\n\n' });

    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream; charset=utf-8', ...commonHeaders(ctx), ...rateLimitHeaders() },
      frames,
      usage: withUsageField ? usage : null,
    };
  }

  function obfuscation(seed) {
    const len = 1 + (sha256('obf:' + seed)[0] % 15);
    return token('obf:' + seed, len);
  }

  function maxTokens(req) {
    for (const key of ['max_completion_tokens', 'max_tokens']) {
      const v = req[key];
      if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return Math.floor(v);
    }
    return null;
  }

  /** Name of the function to call, or null for a plain text answer. */
  function pickTool(req) {
    if (!Array.isArray(req.tools) || req.tools.length === 0) return null;
    const tc = req.tool_choice;
    if (tc === 'required') {
      const first = req.tools.find((t) => isObject(t) && isObject(t.function) && typeof t.function.name === 'string');
      return first ? first.function.name : null;
    }
    if (isObject(tc) && isObject(tc.function) && typeof tc.function.name === 'string') return tc.function.name;
    return null;
  }

  // ----------------------------------------------------------- embeddings

  function embeddings(ctx) {
    const req = ctx.json;
    const inputs = normaliseInputs(req.input);
    if (inputs === null) {
      if (req.input === undefined) {
        return errorPlan(
          400,
          { message: "Missing required parameter: 'input'.", param: 'input', code: 'missing_required_parameter' },
          ctx,
        );
      }
      return errorPlan(400, { message: "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", param: null }, ctx);
    }
    let dims = 8;
    if (req.dimensions !== undefined) {
      if (!Number.isInteger(req.dimensions) || req.dimensions < 1 || req.dimensions > 4096) {
        return errorPlan(
          400,
          { message: `Invalid value for 'dimensions': expected an integer between 1 and 4096.`, param: 'dimensions', code: 'invalid_value' },
          ctx,
        );
      }
      dims = req.dimensions;
    }
    const base64 = req.encoding_format === 'base64';
    let promptTokens = 0;
    const data = inputs.map((input, index) => {
      promptTokens += input.tokens;
      const vec = embeddingVector(input.key, dims);
      let embedding;
      if (base64) {
        const buf = Buffer.alloc(dims * 4);
        vec.forEach((v, i) => buf.writeFloatLE(v, i * 4));
        embedding = buf.toString('base64');
      } else {
        // 9 significant digits identify a float32 exactly, so Math.fround(x) of a
        // printed value equals the float32 sent in base64 mode.
        embedding = vec.map((v) => Number(v.toPrecision(9)));
      }
      return { object: 'embedding', index, embedding };
    });
    const usage = { prompt_tokens: promptTokens, total_tokens: promptTokens };
    const omitUsage = !!ctx.fault?.omitUsage;
    return {
      status: 200,
      headers: jsonHeaders({ ...commonHeaders(ctx), ...rateLimitHeaders() }),
      body: prettyJson({ object: 'list', data, model: req.model, ...(omitUsage ? {} : { usage }) }),
      usage: omitUsage ? null : usage,
    };
  }

  /** [{ key, tokens }] for each input, or null when `input` has an unsupported shape. */
  function normaliseInputs(input) {
    const isTokenArray = (a) => Array.isArray(a) && a.length > 0 && a.every((x) => Number.isInteger(x));
    if (typeof input === 'string') return [{ key: 'text:' + input, tokens: words(input).length }];
    if (!Array.isArray(input) || input.length === 0) return null;
    if (input.every((x) => typeof x === 'string')) return input.map((s) => ({ key: 'text:' + s, tokens: words(s).length }));
    if (isTokenArray(input)) return [{ key: 'tokens:' + input.join(','), tokens: input.length }];
    if (input.every(isTokenArray)) return input.map((a) => ({ key: 'tokens:' + a.join(','), tokens: a.length }));
    return null;
  }

  return { name, flavor: 'openai', authenticate, handle, errorPlan, rateLimitPlan, errorFramePlan, internalErrorPlan, route };
}

/**
 * Deterministic unit vector for `key`: a SHA-256 counter-mode stream supplies
 * uniform values in [-1, 1), the vector is L2-normalised and rounded to float32.
 */
export function embeddingVector(key, dims) {
  const raw = new Array(dims);
  let block = Buffer.alloc(0);
  let counter = 0;
  for (let i = 0; i < dims; i++) {
    const off = (i * 4) % 32;
    if (off === 0) block = sha256(`${key}|${counter++}`);
    raw[i] = block.readUInt32LE(off) / 2 ** 31 - 1;
  }
  let norm = Math.sqrt(raw.reduce((s, v) => s + v * v, 0));
  if (norm === 0) {
    raw[0] = 1;
    norm = 1;
  }
  return raw.map((v) => Math.fround(v / norm));
}
