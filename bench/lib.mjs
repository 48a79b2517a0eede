// Load generation, statistics and process accounting for bench/peers.mjs.
// Everything here is plain Node (node:http with keep-alive and TCP_NODELAY),
// so the load generator is the same for every gateway.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';

// ---- HTTP --------------------------------------------------------------------

const agents = new Map();
/** One keep-alive pool per origin, so no arm reuses another's connections. */
function agentFor(url) {
  const origin = new URL(url).origin;
  let a = agents.get(origin);
  if (!a) {
    a = new http.Agent({ keepAlive: true, maxSockets: 512, keepAliveMsecs: 30_000 });
    agents.set(origin, a);
  }
  return a;
}

/**
 * One POST; resolves to { status, ms, headers, body } once the whole body is
 * read. `ms` is hrtime around request start → last byte.
 */
export function post(url, headers, body, timeoutMs = 60_000) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const req = http.request(url, {
      method: 'POST',
      agent: agentFor(url),
      headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      timeout: timeoutMs,
    });
    req.on('socket', (s) => s.setNoDelay(true));
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        resolve({ status: res.statusCode, ms, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    req.end(body);
  });
}

/**
 * One streamed POST. Times every SSE frame whose `choices[0].delta.content` is
 * non-empty: `ttft` = request start → first such frame; `gaps` = time between
 * consecutive ones. `batched` counts content frames that arrived in the same
 * socket read as the previous content frame (a gateway that buffers and
 * flushes several chunks at once shows up here).
 */
export function postStream(url, headers, body, timeoutMs = 60_000) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const req = http.request(url, {
      method: 'POST',
      agent: agentFor(url),
      headers: { ...headers, 'content-type': 'application/json', accept: 'text/event-stream', 'content-length': Buffer.byteLength(body) },
      timeout: timeoutMs,
    });
    req.on('socket', (s) => s.setNoDelay(true));
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.on('response', (res) => {
      // Response headers: the request path, before any chunk is forwarded.
      const headersMs = Number(process.hrtime.bigint() - t0) / 1e6;
      // From the mock's stamps (bench/mock-upstream.mjs), when the frames
      // carry them through the gateway: request start → request at the mock,
      // and the first content chunk's mock write → its arrival here.
      let upstreamArrivalMs = null;
      let firstChunkTransitMs = null;
      let buf = '';
      let last = null;
      let ttft = null;
      let batched = 0;
      let frames = 0;
      let done = false;
      const gaps = [];
      const errors = [];
      res.setEncoding('utf8');
      res.on('data', (text) => {
        const nowNs = process.hrtime.bigint();
        const now = Number(nowNs - t0) / 1e6;
        buf += text;
        let inThisRead = 0;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = frame
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).trim())
            .join('\n');
          if (data === '[DONE]') {
            done = true;
            continue;
          }
          let ev;
          try {
            ev = JSON.parse(data);
          } catch {
            continue;
          }
          if (ev.error) errors.push(ev.error);
          if (upstreamArrivalMs === null && typeof ev.x_mock_arrived_ns === 'string') upstreamArrivalMs = Number(BigInt(ev.x_mock_arrived_ns) - t0) / 1e6;
          const content = ev.choices?.[0]?.delta?.content;
          if (typeof content !== 'string' || content === '') continue;
          frames++;
          if (ttft === null && typeof ev.x_mock_sent_ns === 'string') firstChunkTransitMs = Number(nowNs - BigInt(ev.x_mock_sent_ns)) / 1e6;
          if (ttft === null) ttft = now;
          else gaps.push(now - last);
          if (inThisRead > 0) batched++;
          inThisRead++;
          last = now;
        }
      });
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode, headers_ms: headersMs, upstream_arrival_ms: upstreamArrivalMs, first_chunk_transit_ms: firstChunkTransitMs, ttft, gaps, frames, batched, done, errors, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    });
    req.end(body);
  });
}

// ---- statistics ----------------------------------------------------------------

export function sorted(xs) {
  return Float64Array.from(xs).sort();
}
/** Linear interpolation between closest ranks (numpy's default). */
export function quantile(s, q) {
  if (s.length === 0) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}
export function summarize(xs) {
  const s = sorted(xs);
  return { n: s.length, p50: quantile(s, 0.5), p90: quantile(s, 0.9), p99: quantile(s, 0.99), mean: s.reduce((a, b) => a + b, 0) / (s.length || 1) };
}
export function round3(x) {
  return typeof x === 'number' && Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x;
}
export function roundAll(v) {
  if (typeof v === 'number') return round3(v);
  if (Array.isArray(v)) return v.map(roundAll);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, roundAll(x)]));
  return v;
}

// ---- measurements --------------------------------------------------------------

/**
 * Concurrency 1, interleaved (anchors-performance.md §5, measurement 1):
 * `rounds` rounds, each one block of `perRound` requests per arm, the arm order
 * alternating between rounds so machine noise lands on both arms alike.
 * Added latency = median of the per-round (gateway − direct) medians, with its
 * IQR; p99s come from the pooled samples. `check(response)` throws on a wrong
 * answer (the run aborts rather than measuring errors).
 */
export async function interleaved({ direct, gateway, rounds, perRound, warmup, check }) {
  // One arm: rotating [direct, gateway] is alternating them, round by round.
  const r = await interleavedMany({ direct, arms: { gateway }, rounds, perRound, warmup, check });
  const g = r.arms.gateway;
  return {
    direct: r.direct,
    gateway: g.gateway,
    added_median_ms: g.added_median_ms,
    added_median_iqr_ms: g.added_median_iqr_ms,
    added_p99_ms: g.added_p99_ms,
    ratio_median: g.gateway.p50 / r.direct.p50,
  };
}

/**
 * c=1 for several gateways running at once, interleaved with direct calls in
 * the same rounds: each round sends `perRound` requests to every arm in turn
 * (after `blockWarmup` unmeasured ones; the order rotates each round), so
 * drift on the machine reaches every arm alike — which measuring one gateway after another cannot give. Per arm:
 * added median (median over rounds of arm median − direct median, with its
 * IQR) and added p99 (pooled). The first arm against each other one: the
 * median over rounds of their difference, and in how many rounds the first
 * was lower.
 */
export async function interleavedMany({ direct, arms, rounds, perRound, warmup, blockWarmup = 0, check }) {
  const all = { direct, ...arms };
  const names = Object.keys(all);
  for (const a of Object.values(all)) for (let i = 0; i < warmup; i++) check(a, await post(a.url, a.headers, a.body()));
  const samples = Object.fromEntries(names.map((n) => [n, []]));
  const medians = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    const order = names.map((_, i) => names[(i + r) % names.length]);
    for (const name of order) {
      const a = all[name];
      const block = [];
      // Unmeasured first requests: the arm before this one ran on the same
      // core and left its caches cold for this one.
      for (let i = 0; i < blockWarmup; i++) check(a, await post(a.url, a.headers, a.body()));
      for (let i = 0; i < perRound; i++) {
        const res = await post(a.url, a.headers, a.body());
        check(a, res);
        block.push(res.ms);
      }
      samples[name].push(...block);
      medians[name].push(quantile(sorted(block), 0.5));
    }
  }
  const d = summarize(samples.direct);
  const out = { rounds, per_round: perRound, block_warmup: blockWarmup, direct: d, arms: {}, pairs: {} };
  for (const name of Object.keys(arms)) {
    const added = sorted(medians[name].map((m, i) => m - medians.direct[i]));
    const g = summarize(samples[name]);
    out.arms[name] = {
      gateway: g,
      added_median_ms: quantile(added, 0.5),
      added_median_iqr_ms: [quantile(added, 0.25), quantile(added, 0.75)],
      added_p99_ms: g.p99 - d.p99,
    };
  }
  const [first, ...others] = Object.keys(arms);
  for (const b of others) {
    const diff = medians[first].map((m, i) => m - medians[b][i]);
    out.pairs[`${first} − ${b}`] = { median_ms: quantile(sorted(diff), 0.5), first_lower_in: diff.filter((x) => x < 0).length, rounds };
  }
  return out;
}

/**
 * Streams side by side: one stream per arm per round, `direct` included, the
 * order rotating each round (as interleavedMany does for c=1), so the
 * machine's drift reaches every arm alike. Per arm: added TTFT = median over
 * rounds of (arm's TTFT − direct's in the same round), with its IQR, and the
 * same for the mock-stamped split (request's way, first chunk's way). Before
 * each measured stream, `blockWarmup` unmeasured plain requests go to the
 * same arm, as in interleavedMany: the arms before it ran on the same core,
 * so without them a stream measures the caches other gateways left cold
 * (and a core idle for the other arms' streams) more than the gateway. An arm
 * whose first stream does not answer 200 is left out and listed in `failed`.
 * The first arm is compared with each other one, round by round.
 */
export async function streamsMany({ direct, arms, rounds, blockWarmup = 0, check }) {
  const failed = {};
  const ok = {};
  for (const [name, a] of Object.entries(arms)) {
    const probe = await postStream(a.url, a.headers, a.streamBody());
    if (probe.status === 200 && probe.ttft !== null) ok[name] = a;
    else failed[name] = probe.status === 200 ? '200 without content' : probe.status;
  }
  await postStream(direct.url, direct.headers, direct.streamBody());
  const all = { direct, ...ok };
  const names = Object.keys(all);
  const runs = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    for (const name of names.map((_, i) => names[(i + r) % names.length])) {
      const a = all[name];
      for (let i = 0; i < blockWarmup; i++) check(a, await post(a.url, a.headers, a.body()));
      const res = await postStream(a.url, a.headers, a.streamBody());
      if (res.status !== 200 || res.ttft === null) throw new Error(`${name}: a stream answered ${res.status}${res.ttft === null ? ' without content' : ''} in round ${r + 1}`);
      runs[name].push(res);
    }
  }
  const perRound = (name, key) => runs[name].map((x, i) => (x[key] === null || runs.direct[i][key] === null ? null : x[key] - runs.direct[i][key]));
  const mid = (xs) => {
    if (xs.some((x) => x === null)) return null;
    const s = sorted(xs);
    return { median_ms: quantile(s, 0.5), iqr_ms: [quantile(s, 0.25), quantile(s, 0.75)] };
  };
  const out = { rounds, block_warmup: blockWarmup, arms: {}, pairs: {}, failed };
  for (const name of Object.keys(ok)) {
    out.arms[name] = {
      added_ttft: mid(perRound(name, 'ttft')),
      added_request_path: mid(perRound(name, 'upstream_arrival_ms')),
      added_chunk_path: mid(perRound(name, 'first_chunk_transit_ms')),
      batched_frames: runs[name].reduce((n, x) => n + x.batched, 0),
    };
  }
  const [first, ...others] = Object.keys(ok);
  for (const b of others) {
    const diff = runs[first].map((x, i) => x.ttft - runs[b][i].ttft);
    out.pairs[`${first} − ${b}`] = { median_ms: quantile(sorted(diff), 0.5), first_lower_in: diff.filter((x) => x < 0).length, rounds };
  }
  return out;
}

/**
 * Closed loop at concurrency `c` for `seconds` after `warmupSeconds`; counts
 * responses and errors, and latency of those completed inside the window.
 */
export async function closedLoop({ arm, c, seconds, warmupSeconds, check }) {
  const lat = [];
  let errors = 0;
  let firstError = null;
  let measuring = false;
  let stop = false;
  let count = 0;
  const worker = async () => {
    while (!stop) {
      try {
        const res = await post(arm.url, arm.headers, arm.body(), 30_000);
        check(arm, res);
        if (measuring && !stop) {
          lat.push(res.ms);
          count++;
        }
      } catch (e) {
        if (measuring && !stop) errors++;
        firstError ??= e.message;
        if (!measuring) await new Promise((r) => setTimeout(r, 10));
      }
    }
  };
  const workers = Array.from({ length: c }, worker);
  await new Promise((r) => setTimeout(r, warmupSeconds * 1000));
  measuring = true;
  const t0 = process.hrtime.bigint();
  const onWindow = arm.onWindow?.('start');
  await new Promise((r) => setTimeout(r, seconds * 1000));
  stop = true;
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const usage = arm.onWindow?.('end', onWindow);
  await Promise.all(workers);
  const s = summarize(lat);
  return { c, seconds: wall, requests: count, errors, first_error: errors ? firstError : null, rps: count / wall, p50: s.p50, p99: s.p99, usage };
}

/** Streams, alternating direct and gateway; TTFT and inter-chunk gaps. */
export async function streams({ direct, gateway, n, warmup }) {
  const out = { direct: [], gateway: [] };
  for (let i = 0; i < warmup; i++) for (const a of [direct, gateway]) await postStream(a.url, a.headers, a.streamBody());
  for (let i = 0; i < n; i++) {
    for (const name of i % 2 === 0 ? ['direct', 'gateway'] : ['gateway', 'direct']) {
      const a = name === 'direct' ? direct : gateway;
      out[name].push(await postStream(a.url, a.headers, a.streamBody()));
    }
  }
  const summary = (runs) => {
    const ok = runs.filter((r) => r.status === 200 && r.ttft !== null);
    return {
      streams: runs.length,
      ok: ok.length,
      failed_status: [...new Set(runs.filter((r) => r.status !== 200).map((r) => r.status))],
      content_frames_per_stream: ok.length ? ok.reduce((a, r) => a + r.frames, 0) / ok.length : 0,
      batched_frames: ok.reduce((a, r) => a + r.batched, 0),
      ttft: summarize(ok.map((r) => r.ttft)),
      headers: summarize(ok.map((r) => r.headers_ms)),
      // Present when every stream carried the mock's stamps through.
      upstream_arrival: ok.length && ok.every((r) => r.upstream_arrival_ms !== null) ? summarize(ok.map((r) => r.upstream_arrival_ms)) : null,
      first_chunk_transit: ok.length && ok.every((r) => r.first_chunk_transit_ms !== null) ? summarize(ok.map((r) => r.first_chunk_transit_ms)) : null,
      gap: summarize(ok.flatMap((r) => r.gaps)),
    };
  };
  const d = summary(out.direct);
  const g = summary(out.gateway);
  return {
    direct: d,
    gateway: g,
    added_ttft_median_ms: g.ttft.p50 - d.ttft.p50,
    // TTFT split: what the request path adds before response headers, and
    // what forwarding the first content chunk adds after them.
    added_headers_median_ms: g.headers.p50 - d.headers.p50,
    added_first_chunk_after_headers_median_ms: g.ttft.p50 - g.headers.p50 - (d.ttft.p50 - d.headers.p50),
    // TTFT split by the mock's clock: what the gateway adds on the request's
    // way to the upstream, and on the first content chunk's way back.
    added_request_path_median_ms: g.upstream_arrival && d.upstream_arrival ? g.upstream_arrival.p50 - d.upstream_arrival.p50 : null,
    added_chunk_path_median_ms: g.first_chunk_transit && d.first_chunk_transit ? g.first_chunk_transit.p50 - d.first_chunk_transit.p50 : null,
    added_ttft_p99_ms: g.ttft.p99 - d.ttft.p99,
    added_gap_p50_ms: g.gap.p50 - d.gap.p50,
    added_gap_p99_ms: g.gap.p99 - d.gap.p99,
  };
}

// ---- processes -------------------------------------------------------------------

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** `root` and every descendant, from /proc. */
export function processTree(root) {
  const children = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(d));
    } catch {}
  }
  const out = [];
  const stack = [root];
  while (stack.length) {
    const p = stack.pop();
    out.push(p);
    stack.push(...(children.get(p) ?? []));
  }
  return out;
}

export function comm(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** CPU seconds (user + system) used so far by `pids`. */
export function cpuSeconds(pids) {
  let ticks = 0;
  for (const p of pids) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime
    } catch {}
  }
  return ticks / CLK_TCK;
}

/** Peak resident set (VmHWM) of each pid, in MiB. */
export function peakRssMiB(pids) {
  const out = {};
  for (const p of pids) {
    try {
      const m = fs.readFileSync(`/proc/${p}/status`, 'utf8').match(/^VmHWM:\s+(\d+) kB/m);
      if (m) out[`${comm(p)}:${p}`] = Number(m[1]) / 1024;
    } catch {}
  }
  return out;
}

/** Pins every thread of every pid to `cpus` (taskset -a -p). */
export function pin(pids, cpus) {
  for (const p of pids) {
    try {
      execFileSync('taskset', ['-a', '-p', '-c', cpus, String(p)], { stdio: 'ignore' });
    } catch {}
  }
}

/** Listening TCP ports of `pid` on loopback (from `ss`). */
export function listeningPorts(pid) {
  const out = execFileSync('ss', ['-ltnpH'], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => l.match(/127\.0\.0\.1:(\d+)/)?.[1])
    .filter(Boolean)
    .map(Number);
}

/** Stops a child started in its own process group: SIGTERM, then SIGKILL after 5 s; resolves when `exited` does. */
export async function stopProcessGroup(pid, exited) {
  try {
    process.kill(-pid, 'SIGTERM');
  } catch {}
  const t = setTimeout(() => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {}
  }, 5000);
  await exited;
  clearTimeout(t);
}
