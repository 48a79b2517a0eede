// Quick look at one build (not part of `make bench`): per-process CPU per
// request at c=16 against the Worker's own socket, and c=1 added latency.
//   node bench/ab-quick.mjs [--seconds 5]
import { spawn } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, startStack } from '../tests/e2e/harness.mjs';
import { closedLoop, comm, cpuSeconds, interleaved, listeningPorts, pin, processTree } from './lib.mjs';

const { values: args } = parseArgs({ options: { seconds: { type: 'string', default: '5' }, c: { type: 'string', default: '16' } } });
pin([process.pid], '0');
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node');
const MOCK_KEY = 'sk-bench-mock-upstream-0000000000000000';
const child = spawn(NODE, [path.join(ROOT, 'bench', 'mock-upstream.mjs'), '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise((r) => child.stdout.on('data', (d) => { const m = String(d).match(/"port":(\d+)/); if (m) r(Number(m[1])); }));
const MOCK = `http://127.0.0.1:${port}`;
const MESSAGES = [{ role: 'system', content: 'You are a terse assistant.' }, { role: 'user', content: 'Give me one short sentence about caching.' }];
const stack = await startStack({
  providers: { openai: { apiKey: MOCK_KEY } },
  editConfig: (gw) => { gw.providers.openai.base_url = `${MOCK}/v1`; delete gw.resilience.circuit_failures; delete gw.resilience.queue_timeout_ms; },
  logLevel: 'warn',
});
const proxyPort = Number(new URL(stack.url).port);
let entry = null;
for (const p of processTree(stack.pid).filter((p) => comm(p) === 'workerd')) {
  for (const port of listeningPorts(p)) {
    if (port === proxyPort) continue;
    try { const r = await fetch(`http://127.0.0.1:${port}/healthz`); if ((await r.text()).includes('"status":"ok"')) entry = `http://127.0.0.1:${port}`; } catch {}
  }
}
const key = await stack.createKey({ name: 'ab' });
const body = () => JSON.stringify({ model: 'openai/gpt-4o-mini', messages: MESSAGES, max_tokens: 32, temperature: 0 });
const check = (arm, res) => { if (res.status !== 200) throw new Error(`${arm.name} ${res.status} ${res.body.slice(0, 200)}`); };
const gw = { name: 'gw', url: `${entry}/v1/chat/completions`, headers: { authorization: `Bearer ${key.key}` }, body };
const direct = { name: 'direct', url: `${MOCK}/v1/chat/completions`, headers: { authorization: `Bearer ${MOCK_KEY}` }, body: () => JSON.stringify({ model: 'gpt-4o-mini', messages: MESSAGES, max_tokens: 32, temperature: 0 }) };
const tree = processTree(stack.pid);
pin(tree, '1');
const c1 = await interleaved({ direct, gateway: gw, rounds: 6, perRound: 25, warmup: 50, check });
console.log(`c=1 added median ${c1.added_median_ms.toFixed(2)} ms p99 ${c1.added_p99_ms.toFixed(2)} ms`);
const per = (before, after, n) => Object.fromEntries(tree.map((p) => [`${comm(p)}:${p}`, (((after[p] ?? 0) - (before[p] ?? 0)) * 1000 / n).toFixed(3)]));
const snap = () => Object.fromEntries(tree.map((p) => [p, cpuSeconds([p])]));
const s0 = snap();
const x = await closedLoop({ arm: gw, c: Number(args.c), seconds: Number(args.seconds), warmupSeconds: 1, check });
const s1 = snap();
console.log(`c=${args.c}: ${x.rps.toFixed(0)} req/s p50 ${x.p50.toFixed(1)} p99 ${x.p99.toFixed(1)} errors ${x.errors}`);
console.log('CPU ms/request by process (incl. warm-up):', per(s0, s1, x.requests));
await stack.stop();
child.kill();
process.exit(0);
