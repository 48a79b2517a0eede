// The "bare workerd" runtime for bench/peers.mjs: the built Worker under the
// same workerd binary wrangler ships, with Miniflare's own local KV, D1 and
// Durable Object simulations, but without what only `wrangler dev` adds:
// Miniflare's entry worker in front of every request, its outbound
// interceptor behind every `fetch()` the Worker makes, and wrangler's dev
// middleware wrapped around the Worker's own fetch (the script run is the one
// `wrangler deploy` would upload). Production has none of them.
//
// How: `wrangler dev` runs with MINIFLARE_WORKERD_CONFIG_DEBUG set, so
// Miniflare writes the workerd config it generated as JSON, and with
// MINIFLARE_WORKERD_PATH pointing at a wrapper that keeps a copy of the binary
// config each workerd it starts reads on stdin. After wrangler stops (the
// persisted D1/KV/DO files are then free), the JSON is revived (what
// JSON.stringify flattened: bytes, Miniflare's `kVoid` symbol) and checked:
// serialised, it must be byte-identical to the binary wrangler's workerd ran
// — so the bare runtime differs from wrangler's only by the patch. It is then patched
// (a socket straight to the user worker, its globalOutbound straight to the
// `internet` network service, the Node loopback replaced by a stub) and
// serialised back to capnp with Miniflare's own `serializeConfig`, then given
// to `workerd serve --binary --experimental -` on stdin, as Miniflare does.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

import { parse as parseToml } from 'smol-toml';

import { ROOT } from '../tests/e2e/harness.mjs';
import { stopProcessGroup } from './lib.mjs';

// The project's own installs (package.json): the miniflare and workerd that wrangler uses.
const require = createRequire(path.join(ROOT, 'package.json'));

/**
 * The environment that makes Miniflare (inside `wrangler dev`) write the
 * workerd config it generates as JSON to `<dir>/workerd-config.json`, and
 * start workerd through a wrapper that keeps each binary config it is given
 * in `<dir>/binary.<pid>` (Miniflare spawns several workerds: wrangler's
 * dev proxy, the D1 migrations, the Worker's).
 */
export function captureEnv(dir) {
  const wrapper = path.join(dir, 'workerd-tee.sh');
  const q = (s) => `'${s.replaceAll("'", "'\\''")}'`;
  // Miniflare writes the config and closes stdin, so the copy is complete
  // before workerd starts; `exec` keeps the pid Miniflare kills workerd's
  // (a pipeline would leave workerd orphaned when Miniflare kills the shell).
  fs.writeFileSync(wrapper, `#!/bin/sh\n# bench/bare-workerd.mjs: keep a copy of the binary config on stdin, then run workerd on it.\ncat > ${q(dir)}/binary.$$ && exec ${q(workerdBinary().bin)} "$@" < ${q(dir)}/binary.$$\n`, { mode: 0o755 });
  return { MINIFLARE_WORKERD_CONFIG_DEBUG: path.join(dir, 'workerd-config.json'), MINIFLARE_WORKERD_PATH: wrapper };
}

/** The workerd binary Miniflare spawns (its `getRuntimeCommand()`), and the versions involved. */
export function workerdBinary() {
  const w = require('workerd');
  return { bin: process.env.MINIFLARE_WORKERD_PATH ?? w.default, version: w.version, miniflare: require('miniflare/package.json').version };
}

/**
 * Turns the JSON Miniflare wrote back into the config object it serialised.
 * JSON.stringify flattened two kinds of values:
 * - bytes: a Buffer became `{type: 'Buffer', data: [...]}`, a Uint8Array an
 *   object with keys "0".."n-1" (the wasm module, `data` bindings);
 * - Miniflare's `kVoid` symbol (capnp Void: "this union member, no payload")
 *   was dropped, leaving `durableObjectStorage: {}` (was `{inMemory: kVoid}`),
 *   the binding DEV_REGISTRY_DEBUG_PORT with only a name (was
 *   `workerdDebugPort: kVoid`), and Durable Object namespaces with neither
 *   `uniqueKey` nor `ephemeralLocal` (was `ephemeralLocal: kVoid`).
 * Anything else empty is unexpected: it throws, naming the path, rather than
 * starting a runtime whose config silently differs from wrangler's.
 */
export function reviveConfig(json, kVoid) {
  const walk = (v, p) => {
    if (Array.isArray(v)) return v.map((x, i) => walk(x, `${p}[${i}]`));
    if (v === null || typeof v !== 'object') return v;
    if (v.type === 'Buffer' && Array.isArray(v.data) && Object.keys(v).length === 2) return Uint8Array.from(v.data);
    const keys = Object.keys(v);
    if (keys.length > 0 && keys.every((k, i) => k === String(i)) && keys.every((k) => Number.isInteger(v[k]) && v[k] >= 0 && v[k] < 256)) {
      return Uint8Array.from(keys.map((k) => v[k]));
    }
    if (keys.length === 0) {
      if (p.endsWith('.durableObjectStorage')) return { inMemory: kVoid };
      // An HTTP socket's options struct is legitimately empty.
      if (/^\.sockets\[\d+\]\.http$/.test(p)) return {};
      throw new Error(`workerd config: unexpected empty object at ${p} (a flattened kVoid or empty bytes Miniflare added?)`);
    }
    if (/\.bindings\[\d+\]$/.test(p) && keys.length === 1 && keys[0] === 'name') {
      if (v.name === 'DEV_REGISTRY_DEBUG_PORT') return { name: v.name, workerdDebugPort: kVoid };
      throw new Error(`workerd config: binding ${v.name} at ${p} has no type (a flattened kVoid Miniflare added?)`);
    }
    const out = {};
    for (const k of keys) out[k] = walk(v[k], `${p}.${k}`);
    if (/\.durableObjectNamespaces\[\d+\]$/.test(p) && !('uniqueKey' in out) && !('ephemeralLocal' in out)) out.ephemeralLocal = kVoid;
    return out;
  };
  return walk(json, '');
}

/**
 * Patches a revived config for the bare runtime; returns what it changed.
 * - the one socket: `address` → the user worker `userService` (not
 *   Miniflare's `core:entry`), HTTP; Miniflare's sockets (entry) are dropped
 *   — they take their address from wrangler's command line;
 * - the user worker's `globalOutbound` → the config's network service
 *   (`internet`), skipping Miniflare's outbound interceptor worker;
 * - the `loopback` external service (Miniflare's Node server, which its
 *   storage workers post logs and errors to) → `loopbackAddress`;
 * - with `productionBundle`, the Worker's script → that bundle (see
 *   useProductionBundle): wrangler's dev middleware off the request path.
 */
export function patchConfig(config, { address, loopbackAddress, workerName, productionBundle = null }) {
  const byName = new Map(config.services.map((s) => [s.name, s]));
  const userService = `core:user:${workerName}`;
  const user = byName.get(userService);
  if (!user?.worker) throw new Error(`workerd config: no service ${userService} (services: ${[...byName.keys()].join(', ')})`);
  const network = config.services.find((s) => s.network);
  if (!network) throw new Error('workerd config: no network service to route the Worker\'s fetch() to');
  const loopback = byName.get('loopback');
  if (!loopback?.external) throw new Error('workerd config: no external `loopback` service');
  const changes = {
    dropped_sockets: (config.sockets ?? []).map((s) => `${s.name} → ${s.service?.name}`),
    global_outbound: `${user.worker.globalOutbound?.name ?? '(default)'} → ${network.name}`,
    socket: `${address} → ${userService}`,
    // Miniflare's dev-time observability: a streaming tail worker (JS, in
    // this process, on the Worker's thread) that receives an event for every
    // request, subrequest and span. Production runs no JS tail unless the
    // operator adds one (Workers Logs are collected outside the isolate).
    dropped_streaming_tails: (user.worker.streamingTails ?? []).map((t) => t.name),
  };
  if (productionBundle !== null) changes.user_module = useProductionBundle(user.worker, productionBundle);
  user.worker.globalOutbound = { name: network.name };
  user.worker.streamingTails = [];
  loopback.external.address = loopbackAddress;
  config.sockets = [{ name: 'bench', address, http: {}, service: { name: userService } }];
  // Miniflare creates this directory per run and removes it when wrangler exits.
  for (const s of config.services) if (s.disk?.writable && s.disk.path) fs.mkdirSync(s.disk.path, { recursive: true });
  return changes;
}

/**
 * Swaps the Worker's script in `worker` (the bundle `wrangler dev` built,
 * which wraps the Worker's fetch in wrangler's dev-only middleware: a
 * request-body drain and a JSON error page, two async layers and a facade on
 * every request) for `bundle`, the one `wrangler deploy --dry-run --outdir`
 * builds from the same `main` — what production runs. Both import the same
 * wasm module; anything else that differs is an error.
 */
export function useProductionBundle(worker, bundle) {
  const script = worker.modules.find((m) => m.name === 'index.js' && typeof m.esModule === 'string');
  if (!script) throw new Error(`workerd config: the user worker has no index.js module (modules: ${worker.modules.map((m) => m.name).join(', ')})`);
  const wasm = (text) => [...text.matchAll(/^import \w+ from "\.\/([^"]+\.wasm)";$/gm)].map((m) => m[1]).join(',');
  if (wasm(script.esModule) !== wasm(bundle)) throw new Error(`the production bundle imports wasm ${wasm(bundle) || '(none)'}, the dev bundle ${wasm(script.esModule) || '(none)'}`);
  if (!script.esModule.includes('__facade_invoke__')) throw new Error('the dev bundle has no wrangler middleware facade: the swap would change nothing (wrangler changed?)');
  if (bundle.includes('__facade_invoke__')) throw new Error('the production bundle has wrangler\'s middleware facade');
  const devBytes = script.esModule.length;
  script.esModule = bundle;
  return `index.js: wrangler dev bundle (${devBytes} B, with dev middleware) → wrangler deploy --dry-run bundle (${bundle.length} B)`;
}

/**
 * The script `wrangler deploy --dry-run` bundles from `main` (the Worker's
 * build/index.js by default). Under a copy of wrangler.toml without its
 * `[build]` command, as the e2e harness runs `wrangler dev`: the build given
 * is bundled as it is, not rebuilt from the working tree (an A/B run compares
 * a copied build with the current one).
 */
export function productionBundle(main = path.join(ROOT, 'build', 'index.js')) {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-deploy-'));
  try {
    const toml = parseToml(fs.readFileSync(path.join(ROOT, 'wrangler.toml'), 'utf8'));
    delete toml.build;
    delete toml.env;
    for (const db of toml.d1_databases ?? []) db.migrations_dir = path.join(ROOT, db.migrations_dir);
    if (toml.assets) toml.assets.directory = path.join(ROOT, toml.assets.directory);
    const config = path.join(out, 'wrangler.json');
    fs.writeFileSync(config, JSON.stringify({ ...toml, main }));
    execFileSync(path.join(ROOT, 'node_modules', '.bin', 'wrangler'), ['deploy', '--config', config, '--dry-run', '--outdir', path.join(out, 'bundle')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    return fs.readFileSync(path.join(out, 'bundle', 'index.js'), 'utf8');
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/**
 * A stand-in for Miniflare's Node loopback server: its storage workers POST
 * `/core/log` and `/core/error` to it (nothing on the request path otherwise).
 * Answers 200 and counts by path, so the run can show it stayed idle.
 */
export async function startLoopbackStub(log) {
  const counts = {};
  const server = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    counts[p] = (counts[p] ?? 0) + 1;
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (p === '/core/error' || (p === '/core/log' && counts[p] <= 20)) log(`  bare workerd loopback ${p}: ${body.slice(0, 300)}`);
      res.writeHead(p.startsWith('/core/') ? 200 : 404, { 'content-type': 'application/json' });
      res.end('null');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    address: `127.0.0.1:${server.address().port}`,
    counts: () => ({ ...counts }),
    close: () => new Promise((r) => server.close(r)),
  };
}

/**
 * Reads the JSON captured in `dir` (captureEnv), revives it, checks it
 * against the binary configs wrangler's workerds ran, patches it, and returns
 * the capnp binary for `workerd serve --binary` plus a description of the
 * changes.
 */
export function buildBinaryConfig(dir, opts) {
  const { serializeConfig, kVoid } = require('miniflare');
  if (typeof serializeConfig !== 'function' || typeof kVoid !== 'symbol') throw new Error('miniflare no longer exports serializeConfig/kVoid');
  const file = path.join(dir, 'workerd-config.json');
  if (!fs.existsSync(file)) throw new Error(`Miniflare wrote no workerd config to ${file} (MINIFLARE_WORKERD_CONFIG_DEBUG ignored?)`);
  const config = reviveConfig(JSON.parse(fs.readFileSync(file, 'utf8')), kVoid);
  const unpatched = serializeConfig(config);
  const ran = fs.readdirSync(dir).filter((f) => f.startsWith('binary.'));
  if (ran.length === 0) throw new Error('no binary config captured from wrangler\'s workerd (MINIFLARE_WORKERD_PATH ignored?)');
  if (!ran.some((f) => fs.readFileSync(path.join(dir, f)).equals(unpatched))) {
    throw new Error(`the config revived from Miniflare's JSON (${unpatched.length} bytes) matches none of the ${ran.length} binary configs wrangler's workerds ran: something JSON.stringify dropped is not restored`);
  }
  const changes = { ...patchConfig(config, opts), revived_config_identical_to_wranglers: true };
  // serializeConfig writes the JSON again when the variable is set; it is not, in this process.
  const binary = serializeConfig(config);
  return { binary, changes };
}

/** The argv Miniflare uses (getRuntimeArgs), minus its command-line socket addresses and control fd. */
export const WORKERD_ARGS = ['serve', '--binary', '--experimental', '-'];

/** Spawns workerd in its own process group with `binary` on stdin; same handle shape as peers.mjs's startChild. */
export function spawnWorkerd(binary) {
  const { bin } = workerdBinary();
  const child = spawn(bin, WORKERD_ARGS, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  let out = '';
  const onData = (d) => {
    out += d;
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  child.stdin.on('error', () => {}); // an early exit is reported by waitHttp with the output
  child.stdin.end(binary);
  const exited = new Promise((r) => child.on('exit', r));
  return {
    pid: child.pid,
    output: () => out,
    exited: () => child.exitCode !== null || child.signalCode !== null,
    stop: () => stopProcessGroup(child.pid, exited),
  };
}
