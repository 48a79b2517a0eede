// Exact-cache latency benchmark (not a test: run by hand, never by `node --test`
// or scripts/test.sh).
//
//   export PATH=/work/main/node_modules/.bin:$PATH
//   sh scripts/build.sh                       # the Worker must be built first
//   node bench/cache-latency.mjs [--n 1000] [--warmup 50] [--rounds 20]
//
// Starts the built Worker under `wrangler dev` in front of one in-process
// OpenAI-wire mock (0 ms delay, TCP_NODELAY) via tests/e2e/harness.mjs, then
// measures three arms at concurrency 1, `performance.now()` around `fetch` plus
// reading the whole body:
//   direct  the chat request sent straight to the mock (baseline)
//   miss    via tollgate, `x-tollgate-cache: exact`, a new `seed` every time:
//           every request is a MISS that goes upstream and writes a KV entry
//   hit     via tollgate, `x-tollgate-cache: exact`, one fixed body primed once:
//           every request must answer HIT (the run aborts otherwise)
// Arms are interleaved in rounds (anchors-performance.md §5, measurement 1):
// each round runs a block of every arm, the arm order rotating between rounds,
// so machine noise lands on all arms alike. Warm-up requests (default 50 per
// arm) are discarded.
//
// Each arm uses its own virtual key (warm-up uses a third), so that the ledger
// check — `GET /admin/requests?limit=1000&key_id=…`, which returns at most the
// newest 1,000 rows — sees every measured request of an arm for N ≤ 999 (for
// N = 1000 the hit key's priming MISS row is the one left out).
//
// Prints a table and writes the summary to bench/results/cache-latency.json.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { ROOT, startStack } from '../tests/e2e/harness.mjs';

const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '1000' },
    warmup: { type: 'string', default: '50' },
    rounds: { type: 'string', default: '20' },
  },
});
const N = positiveInt(args.n, '--n');
const WARMUP = nonNegativeInt(args.warmup, '--warmup');
const ROUNDS = Math.min(positiveInt(args.rounds, '--rounds'), N);

const MOCK_KEY = 'sk-bench-openai-cache-000000000000000';
const CHAT = '/v1/chat/completions';
const ARMS = ['direct', 'miss', 'hit'];
const MESSAGES = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: 'Give me one short sentence about caching.' },
];
const FIXED_SEED = 42;
// Miss seeds start from the clock so no two runs (or requests) share a body.
let nextSeed = Date.now();

function positiveInt(v, name) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`);
  return n;
}
function nonNegativeInt(v, name) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer`);
  return n;
}

function body(model, seed) {
  return JSON.stringify({ model, messages: MESSAGES, temperature: 0, seed, max_tokens: 32 });
}

class Abort extends Error {}

function git(...a) {
  try {
    return execFileSync('git', a, { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
}

const wranglerVersion = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'wrangler', 'package.json'), 'utf8')).version;

console.log(`cache-latency: N=${N} per arm, warm-up ${WARMUP} per arm, ${ROUNDS} interleaved rounds`);
console.log(`node ${process.version}, wrangler ${wranglerVersion}, ${os.cpus()[0]?.model} × ${os.cpus().length}`);

const stack = await startStack({ providers: { openai: { apiKey: MOCK_KEY } } });
let exitCode = 0;
try {
  exitCode = await run(stack);
} catch (e) {
  if (/restarted mid-request/i.test(stack.logs())) console.error('\nwrangler reports "restarted mid-request" (the Worker was rebuilt during the run): rerun.');
  console.error(`\n${e instanceof Abort ? 'aborted' : 'failed'}: ${e.message}`);
  exitCode = 1;
} finally {
  await stack.stop();
}
process.exit(exitCode);

async function run(stack) {
  const mock = stack.mocks.openai;
  const [warmKey, missKey, hitKey] = await Promise.all(
    ['bench-warmup', 'bench-miss', 'bench-hit'].map((name) => stack.createKey({ name })),
  );
  const directUrl = mock.url + '/v1' + CHAT;
  const gatewayUrl = stack.url + CHAT;
  const directHeaders = { authorization: `Bearer ${MOCK_KEY}`, 'content-type': 'application/json' };
  const gwHeaders = (k) => ({ authorization: `Bearer ${k.key}`, 'content-type': 'application/json', 'x-tollgate-cache': 'exact' });
  const directBody = body('gpt-4o-mini', FIXED_SEED);
  const hitBody = body('openai/gpt-4o-mini', FIXED_SEED);

  /** One timed request; returns { ms, cache, requestId }; aborts on a non-200 or a wrong cache status. */
  async function timed(url, headers, payload, expectCache) {
    const t0 = performance.now();
    let r;
    let buf;
    try {
      r = await fetch(url, { method: 'POST', headers, body: payload });
      buf = await r.arrayBuffer();
    } catch (e) {
      throw new Abort(`request to ${url} failed: ${e.cause?.message ?? e.message}`);
    }
    const ms = performance.now() - t0;
    if (r.status !== 200) throw new Abort(`${url} answered ${r.status}: ${Buffer.from(buf).toString('utf8').slice(0, 300)}`);
    const cache = r.headers.get('x-tollgate-cache');
    if (expectCache && cache !== expectCache) {
      throw new Abort(`expected x-tollgate-cache: ${expectCache}, got ${cache ?? '(none)'} (request ${r.headers.get('x-tollgate-request-id')})`);
    }
    return { ms, cache, requestId: r.headers.get('x-tollgate-request-id') };
  }

  const sent = { [warmKey.id]: [], [missKey.id]: [], [hitKey.id]: [] }; // request ids per key, in order
  let upstreamExpected = 0;
  function request(arm, key) {
    if (arm === 'direct') {
      upstreamExpected++;
      return timed(directUrl, directHeaders, directBody, null);
    }
    if (arm === 'miss') {
      upstreamExpected++;
      return timed(gatewayUrl, gwHeaders(key), body('openai/gpt-4o-mini', nextSeed++), 'MISS').then((r) => (sent[key.id].push(r.requestId), r));
    }
    return timed(gatewayUrl, gwHeaders(key), hitBody, 'HIT').then((r) => (sent[key.id].push(r.requestId), r));
  }

  /** Sends the fixed body once (a MISS), then repeats until the entry (written after the response) answers HIT. */
  async function prime(key) {
    upstreamExpected++;
    const first = await timed(gatewayUrl, gwHeaders(key), hitBody, 'MISS');
    sent[key.id].push(first.requestId);
    const until = Date.now() + 5000;
    for (;;) {
      await new Promise((res) => setTimeout(res, 50));
      const r = await timed(gatewayUrl, gwHeaders(key), hitBody, null);
      sent[key.id].push(r.requestId);
      if (r.cache === 'HIT') return;
      if (r.cache !== 'MISS') throw new Abort(`priming: unexpected x-tollgate-cache ${r.cache}`);
      upstreamExpected++;
      if (Date.now() > until) throw new Abort('priming: the fixed body never answered HIT within 5 s');
    }
  }

  // Warm-up (discarded): interleaved blocks of 10, on the warm-up key.
  await prime(warmKey);
  for (let done = 0; done < WARMUP; done += 10) {
    for (const arm of ARMS) for (let i = 0; i < Math.min(10, WARMUP - done); i++) await request(arm, warmKey);
  }

  // Measured rounds.
  await prime(hitKey);
  const samples = { direct: [], miss: [], hit: [] };
  const roundMedians = { direct: [], miss: [], hit: [] };
  const t0 = performance.now();
  for (let round = 0; round < ROUNDS; round++) {
    const size = Math.floor((N * (round + 1)) / ROUNDS) - Math.floor((N * round) / ROUNDS);
    const order = ARMS.map((_, i) => ARMS[(i + round) % ARMS.length]);
    for (const arm of order) {
      const key = arm === 'miss' ? missKey : hitKey;
      const block = [];
      for (let i = 0; i < size; i++) block.push((await request(arm, key)).ms);
      samples[arm].push(...block);
      roundMedians[arm].push(quantile(sorted(block), 0.5));
    }
  }
  const wallS = (performance.now() - t0) / 1000;

  // Upstream check: hits must never reach the mock.
  const upstreamSeen = mock.requests().length;
  if (upstreamSeen !== upstreamExpected) {
    throw new Abort(`the mock saw ${upstreamSeen} requests, expected ${upstreamExpected} (direct + misses + priming); a hit went upstream?`);
  }

  // Summary.
  const stats = Object.fromEntries(ARMS.map((a) => [a, summarize(samples[a])]));
  const delta = (arm) => {
    const per = roundMedians[arm].map((m, i) => m - roundMedians.direct[i]);
    const s = sorted(per);
    return { median_of_round_medians_ms: quantile(s, 0.5), iqr_ms: [quantile(s, 0.25), quantile(s, 0.75)] };
  };
  const derived = {
    hit_minus_direct_median_ms: stats.hit.median_ms - stats.direct.median_ms,
    miss_minus_direct_median_ms: stats.miss.median_ms - stats.direct.median_ms,
    hit_over_miss_median_ratio: stats.hit.median_ms / stats.miss.median_ms,
    paired_by_round: { hit_minus_direct: delta('hit'), miss_minus_direct: delta('miss') },
  };

  // Ledger view: rows are written after the response, so wait for the last one.
  const ledger = {};
  for (const [label, key] of [['miss', missKey], ['hit', hitKey]]) ledger[label] = await ledgerView(stack, key, sent[key.id]);

  const reloaded = /Reloading local server|restarted mid-request/i.test(stack.logs());

  printTable(stats, derived, ledger, wallS);
  if (reloaded) console.log('\nWARNING: wrangler reloaded the Worker during the run (someone rebuilt it); the numbers mix builds: rerun.');

  const result = {
    benchmark: 'cache-latency',
    date: new Date().toISOString(),
    node: process.version,
    wrangler: wranglerVersion,
    machine: { cpu: os.cpus()[0]?.model ?? null, cores: os.cpus().length, platform: `${os.platform()} ${os.release()}` },
    commit: git('rev-parse', 'HEAD'),
    worktree_dirty: (git('status', '--porcelain', '--untracked-files=no') ?? '') !== '',
    n: N,
    warmup: WARMUP,
    rounds: ROUNDS,
    concurrency: 1,
    mock: { delay_ms: 0, in_process: true, tcp_nodelay: true },
    timing: 'performance.now() around fetch + full body read (Node global fetch, keep-alive)',
    wall_seconds: round3(wallS),
    arms: Object.fromEntries(ARMS.map((a) => [a, roundAll(stats[a])])),
    derived: roundAll(derived),
    upstream_requests: { seen: upstreamSeen, expected: upstreamExpected },
    ledger,
    worker_reloaded_during_run: reloaded,
  };
  const outDir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const outFile = path.join(outDir, 'cache-latency.json');
  fs.writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n');
  console.log(`\nwrote ${path.relative(process.cwd(), outFile) || outFile}`);
  return reloaded ? 2 : 0;
}

/**
 * Counts cache_status for a key's newest ≤ 1000 ledger rows, once the row of
 * the key's last request has been written, and checks each row against the
 * status the client saw.
 */
async function ledgerView(stack, key, ids) {
  const last = ids[ids.length - 1];
  const until = Date.now() + 20_000;
  let rows;
  for (;;) {
    const r = await stack.admin('GET', `/admin/requests?limit=1000&key_id=${encodeURIComponent(key.id)}`);
    if (r.status !== 200) throw new Error(`ledger query failed: ${r.status} ${r.text}`);
    rows = r.json.data;
    const have = new Set(rows.map((row) => row.request_id));
    const want = ids.slice(-1000);
    if ((have.has(last) && want.every((id) => have.has(id))) || Date.now() > until) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  const counts = {};
  for (const row of rows) counts[row.cache_status ?? 'null'] = (counts[row.cache_status ?? 'null'] ?? 0) + 1;
  const have = new Set(rows.map((row) => row.request_id));
  const expectedInWindow = ids.slice(-1000);
  return {
    key_id: key.id,
    requests_sent: ids.length,
    rows_returned: rows.length,
    hit: counts.hit ?? 0,
    miss: counts.miss ?? 0,
    other: Object.fromEntries(Object.entries(counts).filter(([k]) => k !== 'hit' && k !== 'miss')),
    newest_requests_missing_from_ledger: expectedInWindow.filter((id) => !have.has(id)).length,
  };
}

// ---- statistics -------------------------------------------------------------

function sorted(xs) {
  return Float64Array.from(xs).sort();
}
/** Linear interpolation between closest ranks (same as numpy's default). */
function quantile(s, q) {
  if (s.length === 0) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}
function summarize(xs) {
  const s = sorted(xs);
  return {
    count: s.length,
    median_ms: quantile(s, 0.5),
    p90_ms: quantile(s, 0.9),
    p99_ms: quantile(s, 0.99),
    mean_ms: s.reduce((a, b) => a + b, 0) / s.length,
    min_ms: s[0],
    max_ms: s[s.length - 1],
  };
}
function round3(x) {
  return Math.round(x * 1000) / 1000;
}
function roundAll(v) {
  if (typeof v === 'number') return round3(v);
  if (Array.isArray(v)) return v.map(roundAll);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, roundAll(x)]));
  return v;
}

function printTable(stats, d, ledger, wallS) {
  const f = (x) => x.toFixed(3).padStart(9);
  console.log(`\n${'arm'.padEnd(8)}${'n'.padStart(6)}${'median'.padStart(9)}${'p90'.padStart(9)}${'p99'.padStart(9)}${'mean'.padStart(9)}   (ms)`);
  for (const a of ARMS) {
    const s = stats[a];
    console.log(`${a.padEnd(8)}${String(s.count).padStart(6)}${f(s.median_ms)}${f(s.p90_ms)}${f(s.p99_ms)}${f(s.mean_ms)}`);
  }
  const p = d.paired_by_round;
  const iqr = (x) => `IQR ${x.iqr_ms[0].toFixed(3)}–${x.iqr_ms[1].toFixed(3)}`;
  console.log(`\nhit − direct  (medians): ${d.hit_minus_direct_median_ms.toFixed(3)} ms   per-round paired: ${p.hit_minus_direct.median_of_round_medians_ms.toFixed(3)} ms (${iqr(p.hit_minus_direct)})`);
  console.log(`miss − direct (medians): ${d.miss_minus_direct_median_ms.toFixed(3)} ms   per-round paired: ${p.miss_minus_direct.median_of_round_medians_ms.toFixed(3)} ms (${iqr(p.miss_minus_direct)})`);
  console.log(`hit / miss (medians):    ${d.hit_over_miss_median_ratio.toFixed(3)}`);
  console.log(`measured wall time:      ${wallS.toFixed(1)} s`);
  console.log('\nledger (GET /admin/requests?limit=1000&key_id=…, newest rows of each key):');
  for (const [label, l] of Object.entries(ledger)) {
    const other = Object.entries(l.other).map(([k, v]) => `${k} ${v}`).join(', ');
    console.log(
      `  ${label.padEnd(5)} key: ${l.requests_sent} requests sent, ${l.rows_returned} rows returned: hit ${l.hit}, miss ${l.miss}${other ? `, ${other}` : ''}` +
        (l.newest_requests_missing_from_ledger ? `; ${l.newest_requests_missing_from_ledger} of the newest requests have no row yet` : ''),
    );
  }
}
