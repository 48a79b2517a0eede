// Azure OpenAI wire flavor for the mock provider: OpenAI's bodies and streams
// (reused from openai.mjs) at Azure's deployment URLs
// (`/openai/deployments/{deployment}/chat/completions?api-version=…`), with
// the key in an `api-key` header and Azure's own auth and missing-version
// errors. Source: https://learn.microsoft.com/azure/ai-services/openai/reference

import { createFlavor as createOpenAiFlavor } from './openai.mjs';

const ACCESS_DENIED =
  'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key ' +
  'for an active subscription and use a correct regional API endpoint for your resource.';

export function createFlavor(opts = {}) {
  const base = createOpenAiFlavor({ name: 'azure', ...opts });

  function azureError(status, code, message) {
    return { status, headers: { 'content-type': 'application/json' }, usage: null, body: JSON.stringify({ error: { code, message } }) };
  }

  function authenticate(ctx) {
    if (!/\/deployments\/[^/]+\//.test(ctx.pathname)) return azureError(404, '404', 'Resource not found');
    if (!ctx.query?.['api-version']) return azureError(404, '404', 'Resource not found');
    if (ctx.apiKey === null || ctx.apiKey === undefined) return null;
    if (ctx.headers['api-key'] === ctx.apiKey) return null;
    return azureError(401, '401', ACCESS_DENIED);
  }

  return { ...base, flavor: 'azure', authenticate };
}
