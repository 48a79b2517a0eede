// Google Gemini API (AI Studio, v1beta) wire flavor for the tollgate mock provider.
//
// Implements the flavor interface documented at the top of ./openai.mjs. Wire
// shapes follow recorded Gemini traffic (see tests/fixtures/gemini/README.md):
//
//   POST …/models/{model}:generateContent            GenerateContentResponse, pretty JSON
//   POST …/models/{model}:streamGenerateContent?alt=sse
//                                                    data: <GenerateContentResponse>\r\n\r\n per event;
//                                                    running usageMetadata in every frame; the last
//                                                    frame carries finishReason; no [DONE]
//   POST …/models/{model}:streamGenerateContent      (no alt=sse) one JSON array of those objects
//   POST …/models/{model}:batchEmbedContents         {"embeddings":[{"values":[…]}]}, no usage
//   POST …/models/{model}:embedContent               {"embedding":{"values":[…]}}
//   POST …/models/{model}:countTokens                {"totalTokens":n}
//   GET  …/models, …/models/{model}                  model resources
//
// Any path prefix works (…/v1beta/models/x:generateContent or /models/x:…).
// Auth: `x-goog-api-key` (or `?key=`). No key -> 403 PERMISSION_DENIED; a wrong
// key -> 400 INVALID_ARGUMENT with reason API_KEY_INVALID (Gemini's real, odd,
// status); `Authorization: Bearer` alone -> 401 UNAUTHENTICATED (Google reads
// it as an OAuth token). Errors are {"error":{"code","message","status"[,"details"]}}.
//
// Requests are validated the way Gemini rejects them, so a translation bug
// fails loudly: unknown fields anywhere the mock checks (top level, content,
// part, functionCall, functionResponse, generationConfig, thinkingConfig) ->
// 400 `Unknown name "x" at '…': Cannot find field.` (notably `id` in a request
// functionCall/functionResponse, which AI Studio rejects); roles other than
// user/model; empty `contents` or `parts`; empty text parts; a functionCall
// part for which the next turn has no functionResponse.
//
// Behaviour (deterministic):
//   text         "mock(<name>) reply to: <text of the last user turn>", one word per
//                stream frame; a user turn holding only function results is answered
//                "mock(<name>) reply to: <fn>=<response JSON> …".
//   max tokens   generationConfig.maxOutputTokens cuts the words -> MAX_TOKENS.
//   JSON mode    responseMimeType application/json -> the text is {"echo":"<last user text>"}.
//   tools        toolConfig.functionCallingConfig.mode ANY -> one functionCall per
//                allowedFunctionNames entry (parallel calls when several), else for the
//                first declared function; args {"echo": <last user text>}. The first
//                call carries a thoughtSignature, as Gemini 3 does. AUTO/NONE -> text.
//   thinking     thinkingConfig.includeThoughts -> a "thought": true part first
//                ("mock thinking about: …"), counted in thoughtsTokenCount.
//   usage        promptTokenCount = words of every text part (system included);
//                candidatesTokenCount = words emitted (for calls: words of the args JSON).
//                candidateCount is ignored: always one candidate.
//   embeddings   embeddingVector() from ./openai.mjs; 8 dimensions unless
//                outputDimensionality; vectors with an explicit outputDimensionality are
//                scaled by 0.5, because Gemini normalises only full-size vectors.
//   models       chat for ids starting gemini-/gemma- (not *embedding*), embeddings for
//                ids containing "embedding"; anything else -> 404 NOT_FOUND.
//
// Recording: `usage` is recorded in OpenAI terms (what the gateway should ledger):
// prompt_tokens = promptTokenCount, completion_tokens = candidates + thoughts.
//
// Faults: all transport faults apply. Stream frames are kind 'content' (thought,
// text, function-call frames) and 'finish' (the finishReason frame), so
// cutAfterChunks ends a stream without a finishReason. omitUsage drops
// usageMetadata everywhere. errorFrame -> 200 SSE whose only frame is
// {"error":{"code":500,…,"status":"INTERNAL"}}. rateLimit -> 429 RESOURCE_EXHAUSTED
// with RetryInfo.retryDelay (Gemini sends no Retry-After; the header is added only
// when the fault asks for it). Note: the loader's `match.model` / `match.stream`
// read the JSON body, where Gemini has neither (so `stream: true` never matches
// and `stream: false` matches every call); match on `path` instead
// (e.g. { path: ':streamGenerateContent' }), or have the loader ask this
// flavor's requestFacts().

import { createHash } from 'node:crypto';
import { embeddingVector } from './openai.mjs';

const DEFAULT_MODELS = [
  {
    name: 'models/gemini-2.5-flash',
    version: '001',
    displayName: 'Gemini 2.5 Flash',
    description: 'Stable version of Gemini 2.5 Flash, our mid-size multimodal model that supports up to 1 million tokens.',
    inputTokenLimit: 1048576,
    outputTokenLimit: 65536,
    supportedGenerationMethods: ['generateContent', 'countTokens', 'createCachedContent', 'batchGenerateContent'],
    temperature: 1,
    topP: 0.95,
    topK: 64,
    maxTemperature: 2,
    thinking: true,
  },
  {
    name: 'models/gemini-2.5-pro',
    version: '2.5',
    displayName: 'Gemini 2.5 Pro',
    description: 'Stable release of Gemini 2.5 Pro.',
    inputTokenLimit: 1048576,
    outputTokenLimit: 65536,
    supportedGenerationMethods: ['generateContent', 'countTokens', 'createCachedContent', 'batchGenerateContent'],
    temperature: 1,
    topP: 0.95,
    topK: 64,
    maxTemperature: 2,
    thinking: true,
  },
  {
    name: 'models/gemini-embedding-001',
    version: '001',
    displayName: 'Gemini Embedding 001',
    description: 'Obtain a distributed representation of a text.',
    inputTokenLimit: 2048,
    outputTokenLimit: 1,
    supportedGenerationMethods: ['embedContent', 'countTextTokens', 'countTokens', 'asyncBatchEmbedContent'],
  },
];

const GRPC_STATUS = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ABORTED',
  429: 'RESOURCE_EXHAUSTED',
  499: 'CANCELLED',
  500: 'INTERNAL',
  501: 'NOT_IMPLEMENTED',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

const DEFAULT_MESSAGES = {
  400: 'Request contains an invalid argument.',
  401:
    'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid ' +
    'authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
  403: 'The caller does not have permission',
  404: 'Requested entity was not found.',
  429: 'Resource has been exhausted (e.g. check quota).',
  500: 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting',
  503: 'The model is overloaded. Please try again later.',
  504: 'Deadline expired before operation could complete.',
};

const NO_KEY_MESSAGE =
  "Method doesn't allow unregistered callers (callers without established identity). " +
  'Please use API Key or other form of API consumer identity to call this API.';
const BAD_KEY_MESSAGE = 'API key not valid. Please pass a valid API key.';

const NOT_FOUND_HTML =
  '<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n' +
  '  <p><b>404.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>PATH</code> was not found on this server.  ' +
  '<ins>That’s all we know.</ins>\n';

// Accepted fields (camelCase; snake_case spellings are accepted too, as Google's JSON parser does).
const REQUEST_FIELDS = ['contents', 'systemInstruction', 'tools', 'toolConfig', 'safetySettings', 'generationConfig', 'cachedContent', 'labels'];
const CONTENT_FIELDS = ['role', 'parts'];
const PART_FIELDS = [
  'text',
  'thought',
  'thoughtSignature',
  'inlineData',
  'fileData',
  'functionCall',
  'functionResponse',
  'executableCode',
  'codeExecutionResult',
  'videoMetadata',
];
const FUNCTION_CALL_FIELDS = ['name', 'args'];
const FUNCTION_RESPONSE_FIELDS = ['name', 'response', 'willContinue', 'scheduling'];
const GENERATION_CONFIG_FIELDS = [
  'stopSequences',
  'responseMimeType',
  'responseSchema',
  'responseJsonSchema',
  'responseModalities',
  'candidateCount',
  'maxOutputTokens',
  'temperature',
  'topP',
  'topK',
  'seed',
  'presencePenalty',
  'frequencyPenalty',
  'responseLogprobs',
  'logprobs',
  'enableEnhancedCivicAnswers',
  'speechConfig',
  'thinkingConfig',
  'mediaResolution',
  'imageConfig',
];
const THINKING_CONFIG_FIELDS = ['thinkingBudget', 'includeThoughts', 'thinkingLevel'];
const MAX_EMBED_BATCH = 100;

function sha256(text) {
  return createHash('sha256').update(text).digest();
}

/** Deterministic URL-safe id of `len` characters. */
function token(seed, len) {
  return sha256(seed).toString('base64url').slice(0, len);
}

function words(text) {
  return String(text ?? '').split(/\s+/).filter(Boolean);
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

const snake = (k) => k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
const camel = (k) => k.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

/** Google's compact JSON as seen on the SSE wire: `": "` after keys, no space after commas. */
export function googleJson(v) {
  if (Array.isArray(v)) return '[' + v.map(googleJson).join(',') + ']';
  if (isObject(v)) {
    return (
      '{' +
      Object.entries(v)
        .filter(([, x]) => x !== undefined)
        .map(([k, x]) => JSON.stringify(k) + ': ' + googleJson(x))
        .join(',') +
      '}'
    );
  }
  return JSON.stringify(v);
}

function pretty(obj) {
  return JSON.stringify(obj, null, 2) + '\n';
}

function sseFrame(obj) {
  return 'data: ' + googleJson(obj) + '\r\n\r\n';
}

/** A 400 for a field Gemini does not know, in Google's words. */
class FieldError extends Error {
  constructor(name, at) {
    const where = at ? ` at '${at}'` : '';
    super(`Invalid JSON payload received. Unknown name "${name}"${where}: Cannot find field.`);
    this.field = at;
  }
}

class RequestError extends Error {
  constructor(message, status = 400) {
    super(message);
    this.status = status;
  }
}

/** Throws FieldError for the first key of `obj` not in `allowed` (either spelling). */
function checkFields(obj, allowed, at) {
  if (!isObject(obj)) return;
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(camel(key))) throw new FieldError(key, at);
  }
}

/** obj[field] under its camelCase or snake_case spelling. */
function get(obj, field) {
  if (!isObject(obj)) return undefined;
  return obj[field] !== undefined ? obj[field] : obj[snake(field)];
}

export function createFlavor({ name = 'gemini', models = DEFAULT_MODELS } = {}) {
  function commonHeaders(ctx) {
    return {
      vary: 'Origin, X-Origin, Referer',
      server: 'scaffolding on HTTPServer2',
      'server-timing': 'gfet4t7; dur=1',
      'x-xss-protection': '0',
      'x-frame-options': 'SAMEORIGIN',
      'x-content-type-options': 'nosniff',
      'x-mock-provider': name,
      ...(ctx ? { 'x-mock-request-seq': String(ctx.seq) } : {}),
    };
  }

  function jsonHeaders(ctx) {
    return { 'content-type': 'application/json; charset=UTF-8', ...commonHeaders(ctx) };
  }

  function errorBody(status, message, grpc, details) {
    const error = { code: status, message, status: grpc };
    if (details !== undefined) error.details = details;
    return { error };
  }

  /** `fields`: { message, status (gRPC name), details }. */
  function errorPlan(status, fields = {}, ctx = null) {
    const grpc = fields.status ?? GRPC_STATUS[status] ?? (status >= 500 ? 'UNKNOWN' : 'FAILED_PRECONDITION');
    const message = fields.message ?? DEFAULT_MESSAGES[status] ?? `Mock fault: HTTP ${status}.`;
    return { status, headers: jsonHeaders(ctx), body: pretty(errorBody(status, message, grpc, fields.details)), usage: null };
  }

  function fieldErrorPlan(err, ctx) {
    const violation = err.field ? { field: err.field, description: err.message } : { description: err.message };
    return errorPlan(
      400,
      {
        message: err.message,
        details: [{ '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [violation] }],
      },
      ctx,
    );
  }

  function rateLimitPlan(fault, ctx) {
    const rl = isObject(fault.rateLimit) ? fault.rateLimit : {};
    const headers = jsonHeaders(ctx);
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
    const model = routeOf(ctx)?.model ?? 'gemini-2.5-flash';
    const message =
      'You exceeded your current quota, please check your plan and billing details. For more information on this ' +
      'error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: ' +
      `https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: generativelanguage.googleapis.com/` +
      `generate_content_free_tier_requests, limit: 10, model: ${model}\nPlease retry in ${seconds}s.`;
    const details = [
      {
        '@type': 'type.googleapis.com/google.rpc.QuotaFailure',
        violations: [
          {
            quotaMetric: 'generativelanguage.googleapis.com/generate_content_free_tier_requests',
            quotaId: 'GenerateRequestsPerMinutePerProjectPerModel-FreeTier',
            quotaDimensions: { location: 'global', model },
            quotaValue: '10',
          },
        ],
      },
      { '@type': 'type.googleapis.com/google.rpc.Help', links: [{ description: 'Learn more about Gemini API quotas', url: 'https://ai.google.dev/gemini-api/docs/rate-limits' }] },
      { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${seconds}s` },
    ];
    return { status: 429, headers, body: pretty(errorBody(429, message, 'RESOURCE_EXHAUSTED', details)), usage: null };
  }

  function errorFramePlan(ctx) {
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream', ...commonHeaders(ctx) },
      frames: [{ kind: 'error', data: sseFrame(errorBody(500, DEFAULT_MESSAGES[500], 'INTERNAL')) }],
      usage: null,
    };
  }

  function internalErrorPlan(_err, ctx) {
    return errorPlan(500, {}, ctx);
  }

  function authenticate(ctx) {
    if (ctx.apiKey === null || ctx.apiKey === undefined) return null;
    const header = ctx.headers['x-goog-api-key'];
    const presented = typeof header === 'string' ? header : ctx.query?.key;
    if (presented === undefined || presented === '') {
      if (typeof ctx.headers.authorization === 'string') {
        return errorPlan(
          401,
          {
            details: [
              {
                '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
                reason: 'ACCESS_TOKEN_TYPE_UNSUPPORTED',
                metadata: { service: 'generativelanguage.googleapis.com', method: 'google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent' },
              },
            ],
          },
          ctx,
        );
      }
      return errorPlan(403, { message: NO_KEY_MESSAGE }, ctx);
    }
    if (presented === ctx.apiKey) return null;
    return errorPlan(
      400,
      {
        message: BAD_KEY_MESSAGE,
        details: [
          {
            '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
            reason: 'API_KEY_INVALID',
            domain: 'googleapis.com',
            metadata: { service: 'generativelanguage.googleapis.com' },
          },
          { '@type': 'type.googleapis.com/google.rpc.LocalizedMessage', locale: 'en-US', message: BAD_KEY_MESSAGE },
        ],
      },
      ctx,
    );
  }

  const ACTIONS = {
    generateContent: 'generate',
    streamGenerateContent: 'stream',
    batchEmbedContents: 'batchEmbed',
    embedContent: 'embed',
    countTokens: 'countTokens',
  };

  /** { kind, model?, action? } or null. */
  function route(method, pathname) {
    const p = pathname.length > 1 ? pathname.replace(/\/+$/, '') : pathname;
    let m = /\/models\/([^/:]+):([A-Za-z]+)$/.exec(p);
    if (m) {
      const kind = ACTIONS[m[2]];
      if (!kind || method !== 'POST') return null;
      return { kind, model: m[1], action: m[2] };
    }
    if (/\/models$/.test(p)) return method === 'GET' ? { kind: 'models' } : null;
    m = /\/models\/([^/:]+)$/.exec(p);
    if (m) return method === 'GET' ? { kind: 'model', model: m[1] } : null;
    return null;
  }

  function routeOf(ctx) {
    if (!ctx || !ctx.pathname) return null;
    const r = route(ctx.method, ctx.pathname);
    if (r && r.model !== undefined) {
      try {
        r.model = decodeURIComponent(r.model);
      } catch {
        /* keep it encoded */
      }
    }
    return r;
  }

  const isChatModel = (id) => /^(gemini|gemma)-/.test(id) && !id.includes('embedding');
  const isEmbedModel = (id) => id.includes('embedding');

  function notFoundModel(id, action, ctx) {
    return errorPlan(
      404,
      {
        message: `models/${id} is not found for API version v1beta, or is not supported for ${action}. Call ListModels to see the list of available models and their supported methods.`,
      },
      ctx,
    );
  }

  function handle(ctx) {
    const r = routeOf(ctx);
    if (!r) {
      return {
        status: 404,
        headers: { 'content-type': 'text/html; charset=UTF-8', ...commonHeaders(ctx) },
        body: NOT_FOUND_HTML.replace('PATH', ctx.pathname.replace(/[<>&]/g, '')),
        usage: null,
      };
    }
    if (r.kind === 'models') return { status: 200, headers: jsonHeaders(ctx), body: pretty({ models }), usage: null };
    if (r.kind === 'model') {
      const found = models.find((m) => m.name === `models/${r.model}`);
      if (!found) return errorPlan(404, { message: `models/${r.model} is not found for API version v1beta` }, ctx);
      return { status: 200, headers: jsonHeaders(ctx), body: pretty(found), usage: null };
    }
    if (ctx.jsonError) return errorPlan(400, { message: 'Invalid JSON payload received. Unexpected token.' }, ctx);
    if (!isObject(ctx.json)) {
      return errorPlan(400, { message: 'Invalid JSON payload received. Expected an object as the request body.' }, ctx);
    }
    try {
      if (r.kind === 'batchEmbed' || r.kind === 'embed') {
        if (!isEmbedModel(r.model)) return notFoundModel(r.model, r.action, ctx);
        return r.kind === 'batchEmbed' ? batchEmbed(ctx, r.model) : embedOne(ctx);
      }
      if (!isChatModel(r.model)) return notFoundModel(r.model, r.action, ctx);
      const req = validateGenerate(ctx.json);
      if (r.kind === 'countTokens') {
        return { status: 200, headers: jsonHeaders(ctx), body: pretty({ totalTokens: promptTokens(req), promptTokensDetails: [{ modality: 'TEXT', tokenCount: promptTokens(req) }] }), usage: null };
      }
      return generate(ctx, r, req);
    } catch (err) {
      if (err instanceof FieldError) return fieldErrorPlan(err, ctx);
      if (err instanceof RequestError) return errorPlan(err.status, { message: err.message }, ctx);
      throw err;
    }
  }

  // ---------------------------------------------------------- validation

  function validateGenerate(json) {
    checkFields(json, REQUEST_FIELDS, null);
    const contents = get(json, 'contents');
    if (!Array.isArray(contents) || contents.length === 0) {
      throw new RequestError('* GenerateContentRequest.contents: contents is not specified\n');
    }
    contents.forEach((c, i) => validateContent(c, `contents[${i}]`, true));
    const system = get(json, 'systemInstruction');
    if (system !== undefined) validateContent(system, 'system_instruction', false);
    const config = get(json, 'generationConfig');
    if (config !== undefined) {
      checkFields(config, GENERATION_CONFIG_FIELDS, 'generation_config');
      const thinking = get(config, 'thinkingConfig');
      if (thinking !== undefined) checkFields(thinking, THINKING_CONFIG_FIELDS, 'generation_config.thinking_config');
    }
    // Every function call must be answered by the next turn (Gemini: "Please ensure that the
    // number of function response parts is equal to the number of function call parts").
    contents.forEach((c, i) => {
      const calls = (get(c, 'parts') ?? []).filter((p) => get(p, 'functionCall') !== undefined).length;
      if (calls === 0 || i === contents.length - 1) return;
      const answers = (get(contents[i + 1], 'parts') ?? []).filter((p) => get(p, 'functionResponse') !== undefined).length;
      if (answers !== calls) {
        throw new RequestError(
          'Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.',
        );
      }
    });
    return json;
  }

  function validateContent(c, at, needsRole) {
    if (!isObject(c)) throw new RequestError(`* GenerateContentRequest.${at}: must be an object\n`);
    checkFields(c, CONTENT_FIELDS, at);
    const role = c.role;
    if (needsRole && role !== undefined && role !== 'user' && role !== 'model') {
      throw new RequestError('Please use a valid role: user, model.');
    }
    const parts = c.parts;
    if (!Array.isArray(parts) || parts.length === 0) {
      throw new RequestError(`* GenerateContentRequest.${at}.parts: contents.parts must not be empty.\n`);
    }
    parts.forEach((p, j) => {
      const pat = `${at}.parts[${j}]`;
      if (!isObject(p)) throw new RequestError(`* GenerateContentRequest.${pat}: must be an object\n`);
      checkFields(p, PART_FIELDS, pat);
      const fc = get(p, 'functionCall');
      if (fc !== undefined) checkFields(fc, FUNCTION_CALL_FIELDS, `${pat}.function_call`);
      const fr = get(p, 'functionResponse');
      if (fr !== undefined) checkFields(fr, FUNCTION_RESPONSE_FIELDS, `${pat}.function_response`);
      if (p.text === '' && Object.keys(p).length === 1) {
        throw new RequestError('Unable to submit request because it has an empty text parameter. Add a value to the parameter and try again.');
      }
    });
  }

  // --------------------------------------------------------------- chat

  function textOf(content) {
    return (get(content, 'parts') ?? [])
      .filter((p) => typeof p.text === 'string' && !p.thought)
      .map((p) => p.text)
      .join(' ');
  }

  function promptTokens(req) {
    const contents = get(req, 'contents') ?? [];
    const system = get(req, 'systemInstruction');
    return [...contents, ...(system ? [system] : [])].reduce((n, c) => n + words(textOf(c)).length, 0);
  }

  /** What the reply echoes: the last user turn's text, or its function results. */
  function lastUserInput(contents) {
    for (let i = contents.length - 1; i >= 0; i--) {
      const c = contents[i];
      if (c.role !== undefined && c.role !== 'user') continue;
      const text = textOf(c);
      if (text) return text;
      const results = (get(c, 'parts') ?? [])
        .map((p) => get(p, 'functionResponse'))
        .filter(Boolean)
        .map((r) => `${r.name}=${JSON.stringify(r.response ?? {})}`);
      if (results.length) return results.join(' ');
    }
    return '';
  }

  function functionNames(req) {
    const names = [];
    for (const t of get(req, 'tools') ?? []) {
      for (const d of get(t, 'functionDeclarations') ?? []) if (typeof d?.name === 'string') names.push(d.name);
    }
    return names;
  }

  function callsFor(req) {
    const fcc = get(get(req, 'toolConfig'), 'functionCallingConfig');
    if (get(fcc, 'mode') !== 'ANY') return [];
    const allowed = get(fcc, 'allowedFunctionNames');
    if (Array.isArray(allowed) && allowed.length) return allowed.map(String);
    const declared = functionNames(req);
    return declared.length ? [declared[0]] : [];
  }

  function generate(ctx, r, req) {
    const contents = get(req, 'contents');
    const config = get(req, 'generationConfig') ?? {};
    const input = lastUserInput(contents);
    const promptCount = promptTokens(req);
    const omitUsage = !!ctx.fault?.omitUsage;
    const responseId = token(`resp:${name}:${ctx.seq}`, 23);
    const model = r.model;

    const thinking = get(get(config, 'thinkingConfig'), 'includeThoughts') === true;
    const thought = thinking ? `mock thinking about: ${input}` : null;
    const thoughtsCount = thought ? words(thought).length : 0;

    // The model's output as a list of stream pieces: [{ parts, count }].
    const pieces = [];
    if (thought) pieces.push({ parts: [{ text: thought, thought: true }], count: 0 });
    const calls = callsFor(req);
    let finishReason = 'STOP';
    if (calls.length) {
      const parts = calls.map((fn, i) => {
        const part = { functionCall: { name: fn, args: { echo: input } } };
        if (i === 0) part.thoughtSignature = sha256(`sig:${name}:${ctx.seq}`).toString('base64');
        return part;
      });
      pieces.push({ parts, count: parts.reduce((n, p) => n + words(JSON.stringify(p.functionCall.args)).length, 0) });
    } else if (get(config, 'responseMimeType') === 'application/json') {
      const text = JSON.stringify({ echo: input });
      pieces.push({ parts: [{ text }], count: words(text).length });
    } else {
      const all = words(`mock(${name}) reply to: ${input}`);
      const limit = Number.isInteger(get(config, 'maxOutputTokens')) ? get(config, 'maxOutputTokens') : null;
      const emitted = limit !== null && limit < all.length ? all.slice(0, limit) : all;
      if (limit !== null && limit < all.length) finishReason = 'MAX_TOKENS';
      emitted.forEach((w, i) => pieces.push({ parts: [{ text: i < emitted.length - 1 ? w + ' ' : w }], count: 1 }));
    }

    const usageAt = (candidates) => {
      const u = { promptTokenCount: promptCount };
      if (candidates > 0) u.candidatesTokenCount = candidates;
      u.totalTokenCount = promptCount + candidates + thoughtsCount;
      u.promptTokensDetails = [{ modality: 'TEXT', tokenCount: promptCount }];
      if (thoughtsCount) u.thoughtsTokenCount = thoughtsCount;
      return u;
    };
    const candidatesTotal = pieces.reduce((n, p) => n + p.count, 0);
    const finalUsage = usageAt(candidatesTotal);
    const recorded = omitUsage
      ? null
      : {
          prompt_tokens: promptCount,
          completion_tokens: candidatesTotal + thoughtsCount,
          total_tokens: promptCount + candidatesTotal + thoughtsCount,
        };
    const response = (parts, finish, usage) => {
      const candidate = { content: { parts, role: 'model' } };
      if (finish) candidate.finishReason = finish;
      candidate.index = 0;
      const obj = { candidates: [candidate] };
      if (!omitUsage) obj.usageMetadata = usage;
      obj.modelVersion = model;
      obj.responseId = responseId;
      return obj;
    };

    if (r.kind === 'generate') {
      const parts = pieces.flatMap((p) => p.parts);
      const merged = [];
      for (const p of parts) {
        const last = merged.at(-1);
        if (last && typeof last.text === 'string' && typeof p.text === 'string' && !last.thought && !p.thought) last.text += p.text;
        else merged.push({ ...p });
      }
      return { status: 200, headers: jsonHeaders(ctx), body: pretty(response(merged, finishReason, finalUsage)), usage: recorded };
    }

    // Stream: one frame per piece (running usage), then a finish frame.
    let running = 0;
    const objects = pieces.map((p) => {
      running += p.count;
      return { kind: 'content', obj: response(p.parts, null, usageAt(running)) };
    });
    objects.push({ kind: 'finish', obj: response([{ text: '' }], finishReason, finalUsage) });
    if (ctx.query?.alt !== 'sse') {
      // Without alt=sse Gemini streams one JSON array.
      const body = '[' + objects.map((o) => JSON.stringify(o.obj, null, 2)).join(',\r\n') + ']';
      return { status: 200, headers: jsonHeaders(ctx), body, usage: recorded };
    }
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream', 'content-disposition': 'attachment', ...commonHeaders(ctx) },
      frames: objects.map((o) => ({ kind: o.kind, data: sseFrame(o.obj) })),
      usage: recorded,
    };
  }

  // ---------------------------------------------------------- embeddings

  function vector(text, dims, explicit) {
    const v = embeddingVector('text:' + text, dims);
    // Gemini normalises only full-size vectors; truncated ones come back as they are.
    return explicit ? v.map((x) => Number((x * 0.5).toPrecision(9))) : v.map((x) => Number(x.toPrecision(9)));
  }

  function dimsOf(req, at) {
    const d = get(req, 'outputDimensionality');
    if (d === undefined) return { dims: 8, explicit: false };
    if (!Number.isInteger(d) || d < 1 || d > 3072) {
      throw new RequestError(`* ${at}.output_dimensionality: must be between 1 and 3072\n`);
    }
    return { dims: d, explicit: true };
  }

  function contentText(content, at) {
    const parts = get(content, 'parts');
    if (!Array.isArray(parts) || parts.length === 0) throw new RequestError(`* ${at}.content: contents is not specified\n`);
    return parts.map((p) => (typeof p?.text === 'string' ? p.text : '')).join(' ');
  }

  function batchEmbed(ctx, urlModel) {
    checkFields(ctx.json, ['requests'], null);
    const requests = ctx.json.requests;
    if (!Array.isArray(requests) || requests.length === 0) {
      throw new RequestError('* BatchEmbedContentsRequest.requests: contents is not specified\n');
    }
    if (requests.length > MAX_EMBED_BATCH) {
      throw new RequestError('* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n');
    }
    const embeddings = requests.map((req, i) => {
      const at = `BatchEmbedContentsRequest.requests[${i}]`;
      checkFields(req, ['model', 'content', 'taskType', 'title', 'outputDimensionality'], `requests[${i}]`);
      if (req.model !== `models/${urlModel}`) {
        throw new RequestError(`* ${at}.model: model must be "models/${urlModel}", the model in the URL\n`);
      }
      const { dims, explicit } = dimsOf(req, at);
      return { values: vector(contentText(get(req, 'content'), at), dims, explicit) };
    });
    return { status: 200, headers: jsonHeaders(ctx), body: pretty({ embeddings }), usage: null };
  }

  function embedOne(ctx) {
    checkFields(ctx.json, ['model', 'content', 'taskType', 'title', 'outputDimensionality'], null);
    const { dims, explicit } = dimsOf(ctx.json, 'EmbedContentRequest');
    const text = contentText(get(ctx.json, 'content'), 'EmbedContentRequest');
    return { status: 200, headers: jsonHeaders(ctx), body: pretty({ embedding: { values: vector(text, dims, explicit) } }), usage: null };
  }

  /**
   * What fault matching needs to know about a request, for the fields Gemini keeps
   * in the URL: `{ model, stream }`. Not yet called by ../mock-provider.mjs, whose
   * `match.model` / `match.stream` read the JSON body (see the header).
   */
  function requestFacts({ method, pathname }) {
    const r = routeOf({ method, pathname });
    return { model: r?.model, stream: r?.kind === 'stream' };
  }

  return {
    name,
    flavor: 'gemini',
    authenticate,
    handle,
    errorPlan,
    rateLimitPlan,
    errorFramePlan,
    internalErrorPlan,
    route,
    requestFacts,
  };
}
