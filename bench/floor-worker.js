// The "workerd floor" arm of bench/peers.mjs: the least a gateway Worker can
// do — read the JSON body, rewrite the model name, forward it with the
// provider's key, hand the answer (or the stream) back untouched. What this
// adds over direct calls is the runtime's own cost (two HTTP hops through
// workerd and one JS isolate), below which no Worker, tollgate included, can go.
export default {
  async fetch(request, env) {
    if (request.method !== 'POST') return new Response('ok'); // the bench's readiness check
    const body = await request.json();
    body.model = String(body.model ?? '').replace(/^openai\//, '');
    const upstream = await fetch(`${env.UPSTREAM}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${env.KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return new Response(upstream.body, { status: upstream.status, headers: { 'content-type': upstream.headers.get('content-type') ?? 'application/json' } });
  },
};
