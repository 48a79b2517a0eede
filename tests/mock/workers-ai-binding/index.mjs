// MOCK of the Workers AI binding (`[ai] binding = "AI"`), for `wrangler dev`.
//
// The real binding cannot run locally (it always calls Cloudflare), so the e2e
// harness gives the gateway a service binding `AI` to this Worker's `MockAi`
// entrypoint instead. Its `run(model, inputs, options)` RPC method behaves like
// the real binding's (cloudflare/workerd src/cloudflare/internal/ai-api.ts):
//
//   - it resolves to the parsed JSON answer when the answer is
//     `application/json`, and to the body `ReadableStream` (SSE bytes)
//     otherwise — so `stream: true` gives a stream;
//   - a failed call throws `InferenceUpstreamError` whose message is
//     "<code>: <message>" from the first entry of the answer's `errors`.
//
// Each call is forwarded to the project's node mock provider (flavor
// `workers-ai`, tests/mock/flavors/workers-ai.mjs) at its REST path
// `/client/v4/accounts/{ACCOUNT_ID}/ai/run/{model}`, whose `result` is exactly
// what the binding returns. The mock records every call and applies the fault
// modes, so tests assert what reached the "provider" and make it fail on cue.
//
// Configuration (vars, written by tests/e2e/harness.mjs): MOCK_URL, ACCOUNT_ID,
// API_TOKEN. `options` is accepted and not forwarded (Workers RPC cannot carry
// an AbortSignal; a cancelled stream is cancelled here through the RPC stream).

import { WorkerEntrypoint } from 'cloudflare:workers';

export class InferenceUpstreamError extends Error {
  constructor(message, name = 'InferenceUpstreamError') {
    super(message);
    this.name = name;
  }
}

/** The real binding's `_parseError`: `internalCode: description`, else `errors[0]`, else the text. */
async function parseError(res) {
  const content = await res.text();
  try {
    const parsed = JSON.parse(content);
    if (parsed.internalCode) return new InferenceUpstreamError(`${parsed.internalCode}: ${parsed.description}`, parsed.name);
    if (Array.isArray(parsed.errors) && parsed.errors[0]) {
      return new InferenceUpstreamError(`${parsed.errors[0].code}: ${parsed.errors[0].message}`);
    }
    return new InferenceUpstreamError(content);
  } catch {
    return new InferenceUpstreamError(content);
  }
}

export class MockAi extends WorkerEntrypoint {
  async run(model, inputs, _options = {}) {
    const url = `${this.env.MOCK_URL}/client/v4/accounts/${this.env.ACCOUNT_ID}/ai/run/${model}`;
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${this.env.API_TOKEN}`,
        'content-type': 'application/json',
        'cf-consn-model-id': model,
      },
      body: JSON.stringify(inputs),
    });
    if (!res.ok || !res.body) throw await parseError(res);
    if (res.headers.get('content-type') === 'application/json') {
      const envelope = await res.json();
      return envelope.result;
    }
    return res.body;
  }
}

export default {
  fetch() {
    return new Response('tollgate mock of the Workers AI binding; call MockAi.run() over RPC', { status: 404 });
  },
};
