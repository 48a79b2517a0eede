// What one call into the runtime costs a Worker: a JS Worker under the
// project's workerd (the binary wrangler ships) repeats one operation N times
// per request; this script sends requests one at a time and reads the
// workerd process's CPU time from /proc, and prints CPU µs per operation
// minus the per-request baseline ("none": the same request doing nothing).
// It backs the per-call figures in docs/decisions.md and bench/README.md
// (why futures are polled from promise jobs, why followers' ledger rows need
// no waitUntil). Not a test; nothing asserts a timing.
//
//   node bench/runtime-calls.mjs [--n 500] [--requests 200] [mode ...]

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { freePort } from '../tests/e2e/harness.mjs';
import { workerdBinary } from './bare-workerd.mjs';
import { cpuSeconds, pin, stopProcessGroup } from './lib.mjs';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: { n: { type: 'string', default: '500' }, requests: { type: 'string', default: '200' } },
});

// Each mode: the body of a loop run n times (`f` a no-op function, `p` a
// resolved promise, `h` the request's headers, `ctx` the execution context).
const MODES = {
  none: '',
  queueMicrotask: 'queueMicrotask(f);',
  promiseThen: 'p.then(f);',
  waitUntil: 'ctx.waitUntil(p);',
  setClearTimeout: 'clearTimeout(setTimeout(f, 10000));',
  abortController: 'new AbortController().signal;',
  dateNow: 'sink += Date.now() & 1;',
  textDecode: 'sink += dec.decode(bytes).length;',
  headersGet: "sink += (h.get('authorization') ?? '').length;",
  headersSet: "new Headers().set('content-type', 'application/json');",
  responseFromBytes: 'new Response(bytes, { status: 200 });',
};
const chosen = positionals.length ? positionals : Object.keys(MODES);
for (const m of chosen) if (!(m in MODES)) throw new Error(`unknown mode ${m}; one of ${Object.keys(MODES).join(', ')}`);

const worker = `const p = Promise.resolve();
const f = () => {};
const dec = new TextDecoder('utf-8', { ignoreBOM: true });
const bytes = new TextEncoder().encode('x-tollgate-request-id');
const MODES = {
${Object.entries(MODES).map(([k, body]) => `  ${JSON.stringify(k)}: (n, h, ctx) => { let sink = 0; for (let i = 0; i < n; i++) { ${body} } return sink; },`).join('\n')}
};
export default {
  async fetch(request, env, ctx) {
    const u = new URL(request.url);
    const sink = MODES[u.searchParams.get('mode')](Number(u.searchParams.get('n')), request.headers, ctx);
    await p;
    return new Response(String(sink));
  },
};
`;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-runtime-calls-'));
const port = await freePort();
fs.writeFileSync(path.join(dir, 'worker.js'), worker);
fs.writeFileSync(path.join(dir, 'config.capnp'), `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "calls", worker = .calls) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "calls") ],
);
const calls :Workerd.Worker = ( modules = [ (name = "worker", esModule = embed "worker.js") ], compatibilityDate = "2026-11-01" );
`);
const wd = workerdBinary();
const child = spawn(wd.bin, ['serve', path.join(dir, 'config.capnp'), '--experimental'], { stdio: 'ignore', detached: true });
const exited = new Promise((r) => child.on('exit', r));
const pinned = os.cpus().length >= 2;
if (pinned) {
  pin([process.pid], '0');
  pin([child.pid], '1');
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const get = (q) =>
  new Promise((resolve, reject) => {
    http
      .get(`http://127.0.0.1:${port}/?${q}`, { agent, headers: { authorization: 'Bearer tg-0123456789abcdef' } }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`${q}: HTTP ${res.statusCode}`))));
      })
      .on('error', reject);
  });

try {
  for (let i = 0; ; i++) {
    try {
      await get('mode=none&n=1');
      break;
    } catch (e) {
      if (i > 100) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const n = Number(args.n);
  const requests = Number(args.requests);
  const perOp = async (mode) => {
    for (let i = 0; i < 20; i++) await get(`mode=${mode}&n=${n}`); // JIT warm-up
    const before = cpuSeconds([child.pid]);
    for (let i = 0; i < requests; i++) await get(`mode=${mode}&n=${n}`);
    return ((cpuSeconds([child.pid]) - before) * 1e6) / (requests * n);
  };
  console.log(`workerd ${wd.version}, ${n} operations per request, ${requests} requests per mode${pinned ? ', workerd on CPU 1, this script on CPU 0' : ''}`);
  const base = await perOp('none');
  for (const mode of chosen.filter((m) => m !== 'none')) {
    console.log(`${mode.padEnd(18)} ${((await perOp(mode)) - base).toFixed(2).padStart(6)} µs of CPU per call`);
  }
} finally {
  await stopProcessGroup(child.pid, exited);
  fs.rmSync(dir, { recursive: true, force: true });
}
