// CPU profile of tollgate's request path under workerd, for finding what to
// make faster. Not a test.
//
//   node bench/profile.mjs [--requests 2000] [--c 1] [--profile pass-through|budget|cache-hit]
//
// Starts the built Worker like bench/peers.mjs does (wrangler dev, provider
// `openai` → bench/mock-upstream.mjs, circuit breaker at its default), attaches
// to the Worker's isolate through wrangler's inspector (Chrome DevTools
// protocol, `Profiler.*`), sends the requests, and prints the functions with
// the most self time plus the share of the isolate's samples that were idle.
// The raw profile goes to bench/results/raw/<profile>.cpuprofile (open it in
// Chrome DevTools → Performance). It also prints the CPU seconds each process
// of the wrangler tree spent, since D1 and KV run in other isolates (and
// their SQLite in workerd's native code), which the isolate profile cannot see.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { ROOT, startStack } from '../tests/e2e/harness.mjs';
import { comm, cpuSeconds, post, processTree } from './lib.mjs';

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: '2000' },
    c: { type: 'string', default: '1' },
    profile: { type: 'string', default: 'pass-through' },
  },
});
const N = Number(args.requests);
const C = Number(args.c);
const MOCK_KEY = 'sk-bench-mock-upstream-0000000000000000';

const mockChild = spawn(path.join(ROOT, 'node_modules', '.bin', 'node'), [path.join(ROOT, 'bench', 'mock-upstream.mjs'), '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
const mockPort = await new Promise((resolve) => mockChild.stdout.once('data', (d) => resolve(JSON.parse(String(d)).port)));
const MOCK = `http://127.0.0.1:${mockPort}`;

const stack = await startStack({
  providers: { openai: { apiKey: MOCK_KEY } },
  editConfig: (gw) => {
    gw.providers.openai.base_url = `${MOCK}/v1`;
    delete gw.resilience.circuit_failures;
    delete gw.resilience.queue_timeout_ms;
  },
  logLevel: 'warn',
});
try {
  const limits = args.profile === 'budget' ? { micro_usd_per_day: 1_000_000_000_000, rpm: 1_000_000 } : undefined;
  const key = await stack.createKey(limits ? { name: 'profile', limits } : { name: 'profile' });
  const headers = { authorization: `Bearer ${key.key}` };
  if (args.profile === 'cache-hit') headers['x-tollgate-cache'] = 'exact';
  const body = JSON.stringify({
    model: 'openai/gpt-4o-mini',
    messages: [
      { role: 'system', content: 'You are a terse assistant.' },
      { role: 'user', content: 'Give me one short sentence about caching.' },
    ],
    max_tokens: 32,
    temperature: 0,
  });
  const url = `${stack.url}/v1/chat/completions`;
  const send = async () => {
    const r = await post(url, headers, body);
    if (r.status !== 200) throw new Error(`${r.status} ${r.body.slice(0, 200)}`);
    return r;
  };
  for (let i = 0; i < 200; i++) await send(); // warm-up (and the cache entry)

  const targets = await (await fetch(`http://127.0.0.1:${stack.inspectorPort}/json`)).json();
  const target = targets.find((t) => t.webSocketDebuggerUrl) ?? null;
  if (!target) throw new Error(`no inspector target: ${JSON.stringify(targets)}`);
  const cdp = await connect(target.webSocketDebuggerUrl);
  await cdp('Profiler.enable');
  await cdp('Profiler.setSamplingInterval', { interval: 100 });
  const tree = processTree(stack.pid);
  const cpu0 = Object.fromEntries(tree.map((p) => [p, cpuSeconds([p])]));
  await cdp('Profiler.start');
  const t0 = performance.now();
  let sent = 0;
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (sent < N) {
        sent++;
        await send();
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const { profile } = await cdp('Profiler.stop');
  const cpu = tree.map((p) => [`${comm(p)}:${p}`, cpuSeconds([p]) - cpu0[p]]);

  const outDir = path.join(ROOT, 'bench', 'results', 'raw');
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, `${args.profile}.cpuprofile`), JSON.stringify(profile));

  // Self time per function from the samples.
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = profile.timeDeltas;
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const n = byId.get(profile.samples[i]);
    const us = dt[i + 1] ?? 0;
    total += us;
    const f = n.callFrame;
    const name = `${f.functionName || '(anonymous)'} ${f.url ? path.basename(f.url) : ''}`.trim();
    self.set(name, (self.get(name) ?? 0) + us);
  }
  // Where the isolate's time went, by kind of frame.
  const kinds = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const f = byId.get(profile.samples[i]).callFrame;
    const us = dt[i + 1] ?? 0;
    const kind = ['(idle)', '(program)', '(garbage collector)'].includes(f.functionName)
      ? f.functionName
      : /\.wasm/.test(f.url)
        ? 'tollgate wasm (Rust)'
        : /cloudflare-internal/.test(f.url)
          ? 'runtime JS APIs (D1, KV, tracing)'
          : f.url
            ? 'JS glue (wasm-bindgen, Miniflare)'
            : 'native calls (fetch, storage, Response, …)';
    kinds.set(kind, (kinds.get(kind) ?? 0) + us);
  }
  const idle = (self.get('(idle)') ?? 0) + (self.get('(program)') ?? 0);
  console.log(`\n${args.profile}: ${N} requests at c=${C} in ${wall.toFixed(2)} s (${(N / wall).toFixed(0)} req/s)`);
  console.log('\nCPU seconds per process during the run (per request):');
  for (const [name, s] of cpu) if (s > 0) console.log(`  ${name.padEnd(20)} ${s.toFixed(2)} s  (${((s * 1000) / N).toFixed(3)} ms/request)`);
  console.log(`\nWorker isolate samples: ${(total / 1e6).toFixed(2)} s, of which (idle)+(program) ${((idle / total) * 100).toFixed(1)} %`);
  console.log('by kind of frame (µs per request):');
  for (const [k, us] of [...kinds.entries()].sort((a, b) => b[1] - a[1])) console.log(`  ${(us / N).toFixed(1).padStart(8)}  ${k}`);
  console.log('top self time (µs per request):');
  for (const [name, us] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 30)) {
    console.log(`  ${(us / N).toFixed(1).padStart(8)}  ${name.slice(0, 110)}`);
  }
  // JS glue frames by source line: worker-build's bundle is minified, so an
  // "(anonymous) index.js" frame only means something with its line's text.
  const glue = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const f = byId.get(profile.samples[i]).callFrame;
    if (!f.url || /\.wasm|cloudflare-internal/.test(f.url)) continue;
    const k = `${f.scriptId}:${f.lineNumber}:${f.columnNumber}`;
    glue.set(k, (glue.get(k) ?? 0) + (dt[i + 1] ?? 0));
  }
  const sources = new Map();
  try {
    await cdp('Debugger.enable');
    console.log('JS glue by source line (µs per request):');
    for (const [k, us] of [...glue.entries()].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
      const [scriptId, line, col] = k.split(':');
      if (!sources.has(scriptId)) sources.set(scriptId, (await cdp('Debugger.getScriptSource', { scriptId })).scriptSource.split('\n'));
      const src = sources.get(scriptId);
      // The import shim's name sits just before its column; its body is on the next line.
      const name = (src[Number(line)] ?? '').slice(0, Number(col)).match(/(__wbg_[\w$]+|[\w$]+)\s*(?::|=)?\s*(?:\/\*[^*]*\*\/\s*)?(?:__name\()?(?:async\s+)?(?:function)?\s*$/)?.[1] ?? '';
      const text = `${name} ${(src[Number(line) + 1] ?? '').trim().slice(0, 90)}`;
      console.log(`  ${(us / N).toFixed(1).padStart(8)}  ${line}:${col}  ${text}`);
    }
  } catch (e) {
    console.log(`(no script sources: ${e.message})`);
  }
  console.log(`\nwrote bench/results/raw/${args.profile}.cpuprofile`);
} finally {
  await stack.stop();
  mockChild.kill();
}

/** A minimal Chrome DevTools protocol client over Node's WebSocket. */
async function connect(wsUrl) {
  // wrangler's inspector proxy only accepts DevTools' origin.
  const ws = new WebSocket(wsUrl, { headers: { origin: 'https://devtools.devprod.cloudflare.dev' } });
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let id = 0;
  const pending = new Map();
  ws.onmessage = (ev) => {
    const msg = JSON.parse(String(ev.data));
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(JSON.stringify(msg.error)));
      else resolve(msg.result);
    }
  };
  return (method, params = {}) =>
    new Promise((resolve, reject) => {
      const n = ++id;
      pending.set(n, { resolve, reject });
      ws.send(JSON.stringify({ id: n, method, params }));
    });
}
