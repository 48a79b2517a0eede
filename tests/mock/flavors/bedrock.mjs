// Amazon Bedrock Runtime (Converse / ConverseStream) wire flavor for the tollgate mock provider.
//
// Implements the flavor interface documented at the top of ./openai.mjs. Wire shapes follow
// recorded Bedrock traffic (see tests/fixtures/bedrock/README.md):
//
//   POST …/model/{modelId}/converse          compact JSON {"metrics","output":{"message"},"stopReason","usage"}
//   POST …/model/{modelId}/converse-stream   application/vnd.amazon.eventstream: binary messages
//                                            (prelude: total length, headers length, prelude CRC32;
//                                            headers :event-type, :content-type, :message-type;
//                                            JSON payload with a random-length "p" padding field;
//                                            message CRC32). Events: messageStart, contentBlockStart
//                                            (tool use only), contentBlockDelta, contentBlockStop,
//                                            messageStop, metadata (usage) — in that order.
//
// Any path prefix works; the model id is the percent-decoded path segment (so `v1%3A0` and ARNs
// with `%2F` work). Other paths answer 404 with Coral's UnknownOperationException body.
//
// Auth: AWS Signature Version 4, verified for real. The mock's `apiKey` option holds the
// credentials: an object { accessKeyId, secretAccessKey, sessionToken? } or the string
// "ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]"; null disables auth. The mock recomputes the
// canonical request from what arrived (method; the wire path with every segment URI-encoded once
// more, as AWS does for non-S3 services; the sorted query; the headers named in SignedHeaders,
// trimmed; the SHA-256 of the body) and the signature from the known secret, and answers like AWS:
//   no Authorization                   403 MissingAuthenticationTokenException "Missing Authentication Token"
//   malformed Authorization            403 IncompleteSignatureException
//   unknown access key id / bad token  403 UnrecognizedClientException "The security token included in the request is invalid."
//   wrong service in the scope         403 InvalidSignatureException "Credential should be scoped to correct service: 'bedrock'. "
//   x-amz-date missing / not signed    403 IncompleteSignatureException / InvalidSignatureException
//   clock skew over 5 minutes          403 InvalidSignatureException "Signature expired: …" / "Signature not yet current: …"
//   signature mismatch                 403 InvalidSignatureException "The request signature we calculated does not
//                                      match the signature you provided. …" plus the canonical string and the
//                                      string-to-sign AWS would have used (as AWS does)
// Errors are {"message": "…"} with `x-amzn-errortype: <Type>:http://internal.amazon.com/coral/…` and an
// `x-amzn-requestid` header.
//
// Requests are validated the way Converse rejects them (400 ValidationException), so a translation
// bug fails loudly: unknown top-level / inferenceConfig / toolConfig / block fields; empty or
// non-alternating messages; a first message that is not from the user; empty content; blank text;
// content blocks with other than exactly one member; images other than png/jpeg/gif/webp bytes;
// toolUse/toolResult blocks without toolConfig; toolUse blocks not answered by toolResult blocks in
// the next turn; toolResult `json` that is not an object; a toolChoice naming an undeclared tool;
// invalid tool names or tool-use ids. Unknown model ids → 400 "The provided model identifier is
// invalid."; well-formed ids of an unknown family → 404 ResourceNotFoundException.
//
// Behaviour (deterministic):
//   text         "mock(<name>) reply to: <text of the last user turn>", one word per contentBlockDelta;
//                a user turn holding only tool results is answered "mock(<name>) reply to: <id>=<result> …".
//   max tokens   inferenceConfig.maxTokens cuts the words -> stopReason max_tokens.
//   stop         the first stopSequence found in the reply cuts it there -> stop_sequence.
//   tools        toolChoice {any} -> a call of the first tool, {tool:{name}} -> of that tool; input
//                {"echo": <last user text>}, streamed as two input fragments; auto / none -> text.
//   reasoning    additionalModelRequestFields.thinking.type "enabled" (Claude) or
//                reasoningConfig.type "enabled" (Nova) -> a reasoningContent block first.
//   usage        inputTokens = words of every text (system, messages, tool results);
//                outputTokens = words emitted (calls: words of the input JSON; reasoning counted).
//
// Recording: `usage` is recorded in OpenAI terms (prompt_tokens = inputTokens, completion_tokens =
// outputTokens).
//
// Faults: all transport faults apply (frames are binary; sliceBytes splits them anywhere). Frame
// kinds: messageStart 'role', block starts/deltas/stops 'content', messageStop 'finish', metadata
// 'usage', so cutAfterChunks ends a stream without messageStop/metadata. omitUsage drops `usage`
// (the metadata event is still sent). errorFrame -> 200 event stream whose only message is a
// modelStreamErrorException (the recorded one). rateLimit -> 429 ThrottlingException (Bedrock sends
// no Retry-After; the header is added only when the fault asks). Note: the loader's match.model /
// match.stream read the JSON body, where Converse has neither; match on `path` (e.g.
// { path: '/converse-stream' }) or use requestFacts().

import { createHash, createHmac } from 'node:crypto';
import zlib from 'node:zlib';

const CORAL_BEDROCK = 'http://internal.amazon.com/coral/com.amazon.bedrock/';
const CORAL_SERVICE = 'http://internal.amazon.com/coral/com.amazon.coral.service/';
const PADDING = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const MAX_SKEW_MS = 5 * 60 * 1000;

export const SIGNATURE_MISMATCH =
  'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key ' +
  'and signing method. Consult the service documentation for details.';
export const INVALID_TOKEN = 'The security token included in the request is invalid.';

const ERROR_TYPES = {
  400: ['ValidationException', 'The request failed validation. Check your request and try again.'],
  403: ['AccessDeniedException', "You don't have access to the model with the specified model ID."],
  404: ['ResourceNotFoundException', 'Could not resolve the foundation model from the provided model identifier.'],
  408: ['ModelTimeoutException', 'Model has timed out in processing the request. Try your request again.'],
  424: ['ModelErrorException', 'The model returned an error while processing the request.'],
  429: ['ThrottlingException', 'Too many requests, please wait before trying again.'],
  500: ['InternalServerException', 'The system encountered an unexpected error during processing. Try your request again.'],
  503: ['ServiceUnavailableException', 'Bedrock is unable to process your request.'],
};

// Recorded (vercel/ai packages/amazon-bedrock/src/__fixtures__/model-stream-error-exception.eventstream.base64.txt).
export const MODEL_STREAM_ERROR = {
  message: 'Model Stream Error',
  originalStatusCode: 500,
  originalMessage: 'The model stream failed.',
};

const REQUEST_FIELDS = [
  'messages',
  'system',
  'inferenceConfig',
  'toolConfig',
  'guardrailConfig',
  'additionalModelRequestFields',
  'additionalModelResponseFieldPaths',
  'promptVariables',
  'requestMetadata',
  'performanceConfig',
  'serviceTier',
  'outputConfig',
];
const INFERENCE_FIELDS = ['maxTokens', 'temperature', 'topP', 'stopSequences'];
const BLOCK_KINDS = ['text', 'image', 'document', 'video', 'toolUse', 'toolResult', 'guardContent', 'cachePoint', 'reasoningContent', 'citationsContent'];
const IMAGE_FORMATS = ['png', 'jpeg', 'gif', 'webp'];
const FAMILIES = /^(?:(?:us|eu|apac|us-gov|global|jp|au|ca)\.)?(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|openai|qwen|writer)\.[a-z0-9-]+(?:[.:][a-z0-9-]+)*$/;
const WELL_FORMED = /^(?:[a-z0-9-]{1,63}\.){0,2}[a-z0-9-]{1,63}(?::[a-z0-9-]{1,63}){0,2}$/;
const ARN = /^arn:aws(?:-[a-z-]+)?:bedrock:[a-z0-9-]+:\d{0,12}:(?:foundation-model|inference-profile|application-inference-profile|provisioned-model|custom-model)\/[A-Za-z0-9.:/_-]+$/;

function sha256Hex(data) {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key, data) {
  return createHmac('sha256', key).update(data).digest();
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function words(text) {
  return String(text ?? '').split(/\s+/).filter(Boolean);
}

/** Deterministic id-safe string of `len` characters. */
function token(seed, len) {
  return createHash('sha256').update(seed).digest('base64url').replace(/[-_]/g, 'x').slice(0, len);
}

function requestId(seed) {
  const h = sha256Hex(`request:${seed}`);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

// ------------------------------------------------------------ event stream

/** CRC-32 (IEEE), from zlib. */
export function crc32(buf) {
  return zlib.crc32(buf) >>> 0;
}

/**
 * One event-stream message. `headers`: [[name, value]] string headers (type 7), in order.
 * `payload`: Buffer, string, or an object (compact JSON).
 */
export function encodeMessage(headers, payload) {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload));
  const headerBufs = headers.map(([name, value]) => {
    const n = Buffer.from(name);
    const v = Buffer.from(String(value));
    const h = Buffer.alloc(1 + n.length + 1 + 2 + v.length);
    h.writeUInt8(n.length, 0);
    n.copy(h, 1);
    h.writeUInt8(7, 1 + n.length);
    h.writeUInt16BE(v.length, 2 + n.length);
    v.copy(h, 4 + n.length);
    return h;
  });
  const hdr = Buffer.concat(headerBufs);
  const total = 12 + hdr.length + body.length + 4;
  const out = Buffer.alloc(total);
  out.writeUInt32BE(total, 0);
  out.writeUInt32BE(hdr.length, 4);
  out.writeUInt32BE(crc32(out.subarray(0, 8)), 8);
  hdr.copy(out, 12);
  body.copy(out, 12 + hdr.length);
  out.writeUInt32BE(crc32(out.subarray(0, total - 4)), total - 4);
  return out;
}

/** An event message, headers in the order Bedrock sends them. */
export function eventMessage(eventType, payload) {
  return encodeMessage(
    [
      [':event-type', eventType],
      [':content-type', 'application/json'],
      [':message-type', 'event'],
    ],
    payload,
  );
}

/** An exception message, headers in the order Bedrock sends them. */
export function exceptionMessage(exceptionType, payload) {
  return encodeMessage(
    [
      [':message-type', 'exception'],
      [':exception-type', exceptionType],
      [':content-type', 'application/json'],
    ],
    payload,
  );
}

/**
 * Lines of the fixtures' `.jsonl` form — `{"<eventType>": payload}` per line, exception
 * messages keyed by their exception type (ending in "Exception") — as event-stream bytes.
 */
export function encodeJsonLines(text) {
  const frames = text
    .split('\n')
    .filter((l) => l.trim().length > 0)
    .map((line) => {
      const obj = JSON.parse(line);
      const [[kind, payload]] = Object.entries(obj);
      return kind.endsWith('Exception') ? exceptionMessage(kind, payload) : eventMessage(kind, payload);
    });
  return Buffer.concat(frames);
}

/** Event-stream bytes -> [{ headers: {name: value}, payload: Buffer }]; throws on a bad CRC or length. */
export function decodeEventStream(buf) {
  const out = [];
  let at = 0;
  while (at < buf.length) {
    if (buf.length - at < 12) throw new Error('truncated prelude');
    const total = buf.readUInt32BE(at);
    const hlen = buf.readUInt32BE(at + 4);
    if (crc32(buf.subarray(at, at + 8)) !== buf.readUInt32BE(at + 8)) throw new Error('prelude CRC mismatch');
    if (total < 16 || hlen + 16 > total || at + total > buf.length) throw new Error('bad lengths');
    const msg = buf.subarray(at, at + total);
    if (crc32(msg.subarray(0, total - 4)) !== msg.readUInt32BE(total - 4)) throw new Error('message CRC mismatch');
    const headers = {};
    let h = 12;
    while (h < 12 + hlen) {
      const nlen = msg.readUInt8(h);
      const name = msg.subarray(h + 1, h + 1 + nlen).toString();
      const type = msg.readUInt8(h + 1 + nlen);
      if (type !== 7) throw new Error(`unsupported header type ${type}`);
      const vlen = msg.readUInt16BE(h + 2 + nlen);
      headers[name] = msg.subarray(h + 4 + nlen, h + 4 + nlen + vlen).toString();
      h += 4 + nlen + vlen;
    }
    out.push({ headers, payload: msg.subarray(12 + hlen, total - 4) });
    at += total;
  }
  return out;
}

// ------------------------------------------------------------------- SigV4

/** RFC 3986 encoding of everything but unreserved characters (SigV4's UriEncode). */
export function uriEncode(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

function decodeLoose(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The canonical URI for a non-S3 service: the wire path, each segment encoded once more. */
export function canonicalUri(wirePath) {
  if (!wirePath) return '/';
  return wirePath
    .split('/')
    .map((seg) => uriEncode(seg))
    .join('/');
}

export function canonicalQuery(rawQuery) {
  if (!rawQuery) return '';
  return rawQuery
    .split('&')
    .filter(Boolean)
    .map((p) => {
      const i = p.indexOf('=');
      const k = i < 0 ? p : p.slice(0, i);
      const v = i < 0 ? '' : p.slice(i + 1);
      return [uriEncode(decodeLoose(k)), uriEncode(decodeLoose(v))];
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

function canonicalHeaderValue(v) {
  return (Array.isArray(v) ? v.join(',') : String(v)).trim().replace(/\s+/g, ' ');
}

/**
 * The canonical request, string-to-sign and signature for a request as it arrived.
 * `headers`: lower-case name -> value; `signedHeaders`: the names, in order.
 */
export function computeSignature({ method, path, query = '', headers, signedHeaders, body, secretAccessKey, amzDate, region, service }) {
  const canonicalHeaders = signedHeaders.map((n) => `${n}:${canonicalHeaderValue(headers[n] ?? '')}\n`).join('');
  const canonicalRequest = [
    method.toUpperCase(),
    canonicalUri(path),
    canonicalQuery(query),
    canonicalHeaders,
    signedHeaders.join(';'),
    sha256Hex(body ?? ''),
  ].join('\n');
  const date = amzDate.slice(0, 8);
  const scope = `${date}/${region}/${service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date), region), service), 'aws4_request');
  return { canonicalRequest, stringToSign, signature: hmac(key, stringToSign).toString('hex') };
}

/**
 * Signs a request the way an AWS SDK does (for tests): returns the headers to add.
 * `url` is the wire URL; `headers` the other headers to sign.
 */
export function signRequest({ method, url, headers = {}, body = '', credentials, region, service = 'bedrock', amzDate, contentSha256 = true }) {
  const u = new URL(url);
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  lower.host ??= u.host;
  lower['x-amz-date'] = amzDate;
  if (contentSha256) lower['x-amz-content-sha256'] = sha256Hex(body);
  if (credentials.sessionToken) lower['x-amz-security-token'] = credentials.sessionToken;
  const signedHeaders = Object.keys(lower).sort();
  const { signature } = computeSignature({
    method,
    path: u.pathname,
    query: u.search.slice(1),
    headers: lower,
    signedHeaders,
    body,
    secretAccessKey: credentials.secretAccessKey,
    amzDate,
    region,
    service,
  });
  const scope = `${amzDate.slice(0, 8)}/${region}/${service}/aws4_request`;
  const out = { ...lower };
  delete out.host;
  out.authorization = `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders.join(';')}, Signature=${signature}`;
  return out;
}

export function amzDate(ms) {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

function parseAmzDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s ?? '');
  if (!m) return null;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
}

/** `apiKey` option -> { accessKeyId, secretAccessKey, sessionToken } or null. */
export function parseCredentials(apiKey) {
  if (apiKey === null || apiKey === undefined) return null;
  if (isObject(apiKey)) return { sessionToken: null, ...apiKey };
  const [accessKeyId, secretAccessKey, sessionToken = null] = String(apiKey).split(':');
  return { accessKeyId, secretAccessKey, sessionToken };
}

// ----------------------------------------------------------------- flavor

class ValidationError extends Error {}

export function createFlavor({ name = 'bedrock', now = () => Date.now() } = {}) {
  function headersFor(ctx, extra = {}) {
    return {
      'x-amzn-requestid': requestId(`${name}:${ctx?.seq ?? 0}`),
      'x-mock-provider': name,
      ...(ctx?.seq !== undefined ? { 'x-mock-request-seq': String(ctx.seq) } : {}),
      ...extra,
    };
  }

  function awsError(status, type, message, ctx, namespace = CORAL_BEDROCK) {
    return {
      status,
      headers: headersFor(ctx, { 'content-type': 'application/json', 'x-amzn-errortype': `${type}:${namespace}` }),
      body: JSON.stringify({ message }),
      usage: null,
    };
  }

  /** `fields`: { type, message }. */
  function errorPlan(status, fields = {}, ctx = null) {
    const [type, message] = ERROR_TYPES[status] ?? [status >= 500 ? 'InternalServerException' : 'ValidationException', `Mock fault: HTTP ${status}.`];
    return awsError(status, fields.type ?? type, fields.message ?? message, ctx);
  }

  function rateLimitPlan(fault, ctx) {
    const plan = errorPlan(429, {}, ctx);
    const rl = isObject(fault.rateLimit) ? fault.rateLimit : {};
    if (rl.retryAfter !== undefined && rl.retryAfter !== null) plan.headers['retry-after'] = String(rl.retryAfter);
    if (rl.retryAfterMs !== undefined && rl.retryAfterMs !== null) plan.headers['retry-after-ms'] = String(rl.retryAfterMs);
    return plan;
  }

  function errorFramePlan(ctx) {
    return {
      status: 200,
      headers: headersFor(ctx, { 'content-type': 'application/vnd.amazon.eventstream' }),
      frames: [{ kind: 'error', data: exceptionMessage('modelStreamErrorException', MODEL_STREAM_ERROR) }],
      usage: null,
    };
  }

  function internalErrorPlan(_err, ctx) {
    return errorPlan(500, {}, ctx);
  }

  // ------------------------------------------------------------ auth

  function authenticate(ctx) {
    const creds = parseCredentials(ctx.apiKey);
    if (!creds) return null;
    const deny = (type, message, namespace = CORAL_SERVICE) => awsError(403, type, message, ctx, namespace);
    const h = ctx.headers;
    const auth = h.authorization;
    if (typeof auth !== 'string' || auth === '') return deny('MissingAuthenticationTokenException', 'Missing Authentication Token');
    const m = /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$/.exec(auth);
    if (!m) {
      return deny(
        'IncompleteSignatureException',
        `Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. ` +
          `Authorization header requires 'SignedHeaders' parameter. Authorization=${auth.split(' ')[0]}`,
      );
    }
    const [, credential, signedList, presented] = m;
    const parts = credential.split('/');
    if (parts.length !== 5 || parts[4] !== 'aws4_request') {
      return deny('IncompleteSignatureException', `Credential should be scoped to a valid region. `);
    }
    const [accessKeyId, scopeDate, region, service] = parts;
    if (accessKeyId !== creds.accessKeyId) return deny('UnrecognizedClientException', INVALID_TOKEN);
    const token = h['x-amz-security-token'];
    if ((creds.sessionToken ?? null) !== (token ?? null)) return deny('UnrecognizedClientException', INVALID_TOKEN);
    if (service !== 'bedrock') return deny('InvalidSignatureException', `Credential should be scoped to correct service: 'bedrock'. `);
    if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(region)) return deny('InvalidSignatureException', 'Credential should be scoped to a valid region. ');
    const signed = signedList.split(';');
    if (!signed.includes('host')) return deny('InvalidSignatureException', "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
    const date = h['x-amz-date'];
    const when = parseAmzDate(date);
    if (when === null) return deny('IncompleteSignatureException', "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
    if (!signed.includes('x-amz-date')) return deny('InvalidSignatureException', SIGNATURE_MISMATCH);
    if (token !== undefined && !signed.includes('x-amz-security-token')) return deny('InvalidSignatureException', SIGNATURE_MISMATCH);
    if (scopeDate !== date.slice(0, 8)) {
      return deny(
        'InvalidSignatureException',
        `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${scopeDate}' != '${date.slice(0, 8)}', from '${date}'.`,
      );
    }
    const t = now();
    if (when < t - MAX_SKEW_MS) {
      return deny('InvalidSignatureException', `Signature expired: ${date} is now earlier than ${amzDate(t - MAX_SKEW_MS)} (${amzDate(t)} - 5 min.)`);
    }
    if (when > t + MAX_SKEW_MS) {
      return deny('InvalidSignatureException', `Signature not yet current: ${date} is still later than ${amzDate(t + MAX_SKEW_MS)} (${amzDate(t)} + 5 min.)`);
    }
    const query = Object.entries(ctx.query ?? {})
      .map(([k, v]) => `${uriEncode(k)}=${uriEncode(v)}`)
      .join('&');
    const { canonicalRequest, stringToSign, signature } = computeSignature({
      method: ctx.method,
      path: ctx.pathname,
      query,
      headers: h,
      signedHeaders: signed,
      body: ctx.body ?? '',
      secretAccessKey: creds.secretAccessKey,
      amzDate: date,
      region,
      service,
    });
    if (signature !== presented) {
      return deny(
        'InvalidSignatureException',
        `${SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n'${canonicalRequest}'\n\n` +
          `The String-to-Sign should have been\n'${stringToSign}'\n`,
      );
    }
    return null;
  }

  // --------------------------------------------------------- routing

  /** { model, stream } or null. */
  function route(method, pathname) {
    const m = /\/model\/([^/]+)\/(converse|converse-stream)\/?$/.exec(pathname);
    if (!m || method !== 'POST') return null;
    let model = m[1];
    try {
      model = decodeURIComponent(model);
    } catch {
      /* keep it encoded */
    }
    return { model, stream: m[2] === 'converse-stream' };
  }

  function requestFacts({ method, pathname }) {
    const r = route(method, pathname);
    return { model: r?.model, stream: r?.stream ?? false };
  }

  function handle(ctx) {
    const r = route(ctx.method, ctx.pathname);
    if (!r) {
      return {
        status: 404,
        headers: headersFor(ctx, { 'content-type': 'application/json', 'x-amzn-errortype': `UnknownOperationException:${CORAL_SERVICE}` }),
        body: JSON.stringify({ Output: { __type: 'com.amazon.coral.service#UnknownOperationException' }, Version: '1.0' }),
        usage: null,
      };
    }
    if (!(ARN.test(r.model) || WELL_FORMED.test(r.model))) return errorPlan(400, { message: 'The provided model identifier is invalid.' }, ctx);
    if (!(ARN.test(r.model) || FAMILIES.test(r.model))) return errorPlan(404, {}, ctx);
    if (ctx.jsonError || !isObject(ctx.json)) return errorPlan(400, { message: 'Malformed input request, please reformat your input and try again.' }, ctx);
    try {
      validate(ctx.json);
    } catch (err) {
      if (err instanceof ValidationError) return errorPlan(400, { message: err.message }, ctx);
      throw err;
    }
    return converse(ctx, r);
  }

  // ------------------------------------------------------ validation

  function fail(message) {
    throw new ValidationError(message);
  }

  function checkFields(obj, allowed, at) {
    for (const key of Object.keys(obj)) {
      if (!allowed.includes(key)) fail(`Malformed input request: #${at}: extraneous key [${key}] is not permitted, please reformat your input and try again.`);
    }
  }

  function validate(body) {
    checkFields(body, REQUEST_FIELDS, '');
    const { messages, system, inferenceConfig, toolConfig } = body;
    if (!Array.isArray(messages) || messages.length === 0) fail('A conversation must start with a user message. Try again with a conversation that starts with a user message.');
    if (system !== undefined) {
      if (!Array.isArray(system)) fail('The system field must be a list of SystemContentBlock objects.');
      system.forEach((b, i) => {
        if (!isObject(b) || Object.keys(b).length !== 1) fail(`The SystemContentBlock at system.${i} must have exactly one member.`);
        if (b.text !== undefined && (typeof b.text !== 'string' || b.text.trim() === '')) {
          fail(`The text field in the SystemContentBlock object at system.${i} is blank. Add text to the text field, and try again.`);
        }
      });
    }
    if (inferenceConfig !== undefined) {
      if (!isObject(inferenceConfig)) fail('The inferenceConfig field must be an object.');
      checkFields(inferenceConfig, INFERENCE_FIELDS, '/inferenceConfig');
    }
    const toolNames = new Set();
    if (toolConfig !== undefined) {
      if (!isObject(toolConfig)) fail('The toolConfig field must be an object.');
      checkFields(toolConfig, ['tools', 'toolChoice'], '/toolConfig');
      if (!Array.isArray(toolConfig.tools) || toolConfig.tools.length === 0) fail('The toolConfig field must contain at least one tool.');
      toolConfig.tools.forEach((t, i) => {
        const spec = t?.toolSpec;
        if (!isObject(spec)) fail(`The tool at toolConfig.tools.${i} must have a toolSpec.`);
        checkFields(spec, ['name', 'description', 'inputSchema', 'strict'], `/toolConfig/tools/${i}/toolSpec`);
        if (typeof spec.name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(spec.name)) {
          fail(`1 validation error detected: Value at 'toolConfig.tools.${i + 1}.member.toolSpec.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+`);
        }
        if (!isObject(spec.inputSchema) || !isObject(spec.inputSchema.json)) fail(`The inputSchema at toolConfig.tools.${i} must contain a json schema.`);
        if (toolNames.has(spec.name)) fail(`The tool name ${spec.name} is duplicated. Provide unique names and try again.`);
        toolNames.add(spec.name);
      });
      const choice = toolConfig.toolChoice;
      if (choice !== undefined) {
        if (!isObject(choice) || Object.keys(choice).length !== 1 || !['auto', 'any', 'tool'].includes(Object.keys(choice)[0])) fail('The toolChoice field must have exactly one of auto, any or tool.');
        if (choice.tool !== undefined && !toolNames.has(choice.tool?.name)) fail(`The tool ${choice.tool?.name} specified in toolChoice is not defined in toolConfig.tools.`);
      }
    }
    let pendingToolUses = null;
    messages.forEach((msg, i) => {
      if (!isObject(msg)) fail(`The message at messages.${i} must be an object.`);
      checkFields(msg, ['role', 'content'], `/messages/${i}`);
      if (msg.role !== 'user' && msg.role !== 'assistant') fail(`1 validation error detected: Value '${msg.role}' at 'messages.${i + 1}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]`);
      if (i === 0 && msg.role !== 'user') fail('A conversation must start with a user message. Try again with a conversation that starts with a user message.');
      if (i > 0 && messages[i - 1].role === msg.role) fail('A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.');
      if (!Array.isArray(msg.content) || msg.content.length === 0) fail(`The content field in the Message object at messages.${i} is empty. Add a ContentBlock object to the content field and try again.`);
      const results = [];
      const uses = [];
      msg.content.forEach((b, j) => {
        const at = `messages.${i}.content.${j}`;
        if (!isObject(b) || Object.keys(b).length !== 1) fail(`The ContentBlock object at ${at} must set exactly one of the following keys: ${BLOCK_KINDS.join(', ')}.`);
        const [kind] = Object.keys(b);
        if (!BLOCK_KINDS.includes(kind)) fail(`Malformed input request: #/messages/${i}/content/${j}: extraneous key [${kind}] is not permitted, please reformat your input and try again.`);
        const v = b[kind];
        if (kind === 'text' && (typeof v !== 'string' || v.trim() === '')) fail(`The text field in the ContentBlock object at ${at} is blank. Add text to the text field, and try again.`);
        if (kind === 'image') {
          if (!isObject(v) || !IMAGE_FORMATS.includes(v.format)) fail(`The image format at ${at} is not supported. Supported formats: png, jpeg, gif, webp.`);
          if (!isObject(v.source) || typeof v.source.bytes !== 'string' || v.source.bytes.length === 0) fail(`The image source at ${at} must contain bytes.`);
          if (!/^[A-Za-z0-9+/]+={0,2}$/.test(v.source.bytes)) fail(`The image bytes at ${at} are not valid base64.`);
        }
        if (kind === 'toolUse' || kind === 'toolResult') {
          if (!toolConfig) fail('The toolConfig field must be defined when using toolUse and toolResult content blocks.');
          if (typeof v?.toolUseId !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(v.toolUseId)) {
            fail(`1 validation error detected: Value at 'messages.${i + 1}.member.content.${j + 1}.member.${kind}.toolUseId' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+`);
          }
        }
        if (kind === 'toolUse') {
          if (msg.role !== 'assistant') fail(`The toolUse block at ${at} must be in an assistant message.`);
          if (!isObject(v.input)) fail(`The input of the toolUse block at ${at} must be a json object.`);
          if (typeof v.name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(v.name)) {
            fail(`1 validation error detected: Value at 'messages.${i + 1}.member.content.${j + 1}.member.toolUse.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+`);
          }
          uses.push(v.toolUseId);
        }
        if (kind === 'toolResult') {
          if (msg.role !== 'user') fail(`The toolResult block at ${at} must be in a user message.`);
          if (!Array.isArray(v.content) || v.content.length === 0) fail(`The content field of the toolResult block at ${at} is empty.`);
          v.content.forEach((c, k) => {
            if (!isObject(c) || Object.keys(c).length !== 1) fail(`The ToolResultContentBlock at ${at}.toolResult.content.${k} must have exactly one member.`);
            if (c.json !== undefined && !isObject(c.json)) fail(`The format of the value at ${at}.toolResult.content.${k}.json is invalid. Provide a json object for the field and try again.`);
            if (c.text !== undefined && (typeof c.text !== 'string' || c.text.trim() === '')) fail(`The text field in the ToolResultContentBlock at ${at}.toolResult.content.${k} is blank.`);
          });
          results.push(v.toolUseId);
        }
      });
      if (pendingToolUses) {
        const missing = pendingToolUses.filter((id) => !results.includes(id));
        if (missing.length) fail(`Expected toolResult blocks at messages.${i}.content for the following Ids: ${missing.join(', ')}`);
        const extra = results.filter((id) => !pendingToolUses.includes(id));
        if (extra.length) fail(`The number of toolResult blocks at messages.${i}.content exceeds the number of toolUse blocks of previous turn.`);
      } else if (results.length) {
        fail(`The number of toolResult blocks at messages.${i}.content exceeds the number of toolUse blocks of previous turn.`);
      }
      pendingToolUses = uses.length ? uses : null;
    });
  }

  // ------------------------------------------------------------ chat

  function blockText(b) {
    if (typeof b.text === 'string') return b.text;
    if (b.toolResult) return b.toolResult.content.map((c) => (typeof c.text === 'string' ? c.text : JSON.stringify(c.json ?? {}))).join(' ');
    if (b.toolUse) return JSON.stringify(b.toolUse.input ?? {});
    return '';
  }

  function promptTokens(body) {
    const texts = [...(body.system ?? []).map((b) => b.text ?? ''), ...body.messages.flatMap((m) => m.content.map(blockText))];
    return texts.reduce((n, t) => n + words(t).length, 0);
  }

  function lastUserInput(messages) {
    for (let i = messages.length - 1; i >= 0; i--) {
      const m = messages[i];
      if (m.role !== 'user') continue;
      const text = m.content
        .filter((b) => typeof b.text === 'string')
        .map((b) => b.text)
        .join(' ');
      if (text) return text;
      const results = m.content.filter((b) => b.toolResult).map((b) => `${b.toolResult.toolUseId}=${blockText(b)}`);
      if (results.length) return results.join(' ');
    }
    return '';
  }

  function converse(ctx, r) {
    const body = ctx.json;
    const input = lastUserInput(body.messages);
    const inputTokens = promptTokens(body);
    const omitUsage = !!ctx.fault?.omitUsage;
    const cfg = body.inferenceConfig ?? {};
    const extra = body.additionalModelRequestFields ?? {};
    const thinking = extra?.thinking?.type === 'enabled' || extra?.reasoningConfig?.type === 'enabled';

    // Content blocks: [{ kind: 'reasoning'|'text'|'tool', ... }]
    const blocks = [];
    let outputTokens = 0;
    if (thinking) {
      const thought = `mock thinking about: ${input}`;
      blocks.push({ kind: 'reasoning', text: thought, signature: token(`sig:${name}:${ctx.seq}`, 40) });
      outputTokens += words(thought).length;
    }
    const choice = body.toolConfig?.toolChoice;
    const tools = body.toolConfig?.tools ?? [];
    let callName = null;
    if (choice?.any && tools.length) callName = tools[0].toolSpec.name;
    if (choice?.tool) callName = choice.tool.name;
    let stopReason = 'end_turn';
    if (callName) {
      const callInput = { echo: input };
      blocks.push({ kind: 'tool', name: callName, id: `tooluse_${token(`tool:${name}:${ctx.seq}`, 22)}`, input: callInput });
      outputTokens += words(JSON.stringify(callInput)).length;
      stopReason = 'tool_use';
    } else {
      let text = `mock(${name}) reply to: ${input}`;
      for (const s of cfg.stopSequences ?? []) {
        const at = s ? text.indexOf(s) : -1;
        if (at >= 0) {
          text = text.slice(0, at);
          stopReason = 'stop_sequence';
        }
      }
      let all = words(text);
      if (Number.isInteger(cfg.maxTokens) && cfg.maxTokens < all.length) {
        all = all.slice(0, cfg.maxTokens);
        stopReason = 'max_tokens';
      }
      if (all.length) blocks.push({ kind: 'text', words: all });
      outputTokens += all.length;
    }
    const usage = { inputTokens, outputTokens, totalTokens: inputTokens + outputTokens };
    const recorded = omitUsage ? null : { prompt_tokens: inputTokens, completion_tokens: outputTokens, total_tokens: inputTokens + outputTokens };
    const latencyMs = 100 + (ctx.seq % 900);

    if (!r.stream) {
      const content = blocks.map((b) => {
        if (b.kind === 'reasoning') return { reasoningContent: { reasoningText: { signature: b.signature, text: b.text } } };
        if (b.kind === 'tool') return { toolUse: { input: b.input, name: b.name, toolUseId: b.id } };
        return { text: b.words.join(' ') };
      });
      const out = { metrics: { latencyMs }, output: { message: { content, role: 'assistant' } }, stopReason };
      if (!omitUsage) out.usage = usage;
      return { status: 200, headers: headersFor(ctx, { 'content-type': 'application/json' }), body: JSON.stringify(out), usage: recorded };
    }

    let n = 0;
    const pad = (payload) => ({ ...payload, p: PADDING.slice(0, 1 + (parseInt(sha256Hex(`pad:${ctx.seq}:${n++}`).slice(0, 4), 16) % PADDING.length)) });
    const frames = [{ kind: 'role', data: eventMessage('messageStart', pad({ role: 'assistant' })) }];
    blocks.forEach((b, contentBlockIndex) => {
      const delta = (d) => frames.push({ kind: 'content', data: eventMessage('contentBlockDelta', pad({ contentBlockIndex, delta: d })) });
      if (b.kind === 'reasoning') {
        words(b.text).forEach((w, i, all) => delta({ reasoningContent: { text: i < all.length - 1 ? w + ' ' : w } }));
        delta({ reasoningContent: { signature: b.signature } });
      } else if (b.kind === 'tool') {
        frames.push({ kind: 'content', data: eventMessage('contentBlockStart', pad({ contentBlockIndex, start: { toolUse: { name: b.name, toolUseId: b.id } } })) });
        const json = JSON.stringify(b.input);
        const half = Math.ceil(json.length / 2);
        delta({ toolUse: { input: json.slice(0, half) } });
        delta({ toolUse: { input: json.slice(half) } });
      } else {
        b.words.forEach((w, i) => delta({ text: i < b.words.length - 1 ? w + ' ' : w }));
      }
      frames.push({ kind: 'content', data: eventMessage('contentBlockStop', pad({ contentBlockIndex })) });
    });
    frames.push({ kind: 'finish', data: eventMessage('messageStop', pad({ stopReason })) });
    const metadata = omitUsage ? { metrics: { latencyMs } } : { metrics: { latencyMs }, usage };
    frames.push({ kind: 'usage', data: eventMessage('metadata', pad(metadata)) });
    return {
      status: 200,
      headers: headersFor(ctx, { 'content-type': 'application/vnd.amazon.eventstream' }),
      frames,
      usage: recorded,
    };
  }

  return {
    name,
    flavor: 'bedrock',
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
