// End-to-end harness: the built Worker under a real `wrangler dev` (workerd +
// Miniflare's local D1), in front of project-owned mock providers, on free
// loopback ports.
//
//   const stack = await startStack({ providers: { openai: { apiKey: 'sk-…' } } });
//   stack.url            gateway origin, e.g. http://127.0.0.1:PORT
//   stack.mocks.openai   the mock provider (requests(), enqueue(fault), reset())
//   await stack.createKey({ name: 't' })   → admin API response (incl. the key)
//   await stack.ledger({ count, ids })     → ledger rows via GET /admin/requests (waits for `ids`)
//   stack.logs()         everything wrangler/workerd printed (worker console included)
//   await stack.stop()
//
// The Worker must already be built (`make build`); the harness writes its own
// wrangler config from wrangler.toml with provider base URLs pointed at the
// mocks, and its own .dev.vars with the test's secrets, in a temp directory.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';

import { startMockProvider } from '../mock/mock-provider.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ADMIN_TOKEN = 'e2e-admin-token-0123456789abcdef';
const WRANGLER = path.join(ROOT, 'node_modules', 'wrangler', 'bin', 'wrangler.js');

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function run(args, { cwd, env }) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRANGLER, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`wrangler ${args.join(' ')} exited ${code}:\n${out}`))));
  });
}

/**
 * Where each mock-backed provider's base URL path lives (as the real
 * providers document it), so the gateway's URL building is exercised too.
 */
const BASE_PATHS = {
  openai: '/v1',
  groq: '/openai/v1',
  mistral: '/v1',
  deepseek: '/v1',
  openrouter: '/api/v1',
  together: '/v1',
  anthropic: '/v1',
  gemini: '/v1beta',
  azure: '/openai',
  cohere: '/v2',
  bedrock: '',
};

/** The Worker secret each provider kind reads its key from (config.rs / openai_compat.rs). */
const SECRET_NAMES = { azure: 'AZURE_OPENAI_API_KEY' };

/** Which mock wire flavor speaks each provider kind. */
const FLAVORS = { anthropic: 'anthropic', gemini: 'gemini', azure: 'azure', cohere: 'cohere', bedrock: 'bedrock', 'workers-ai-binding': 'workers-ai' };

/** The MOCK of the Workers AI binding: a Worker whose `MockAi.run()` forwards to a `workers-ai` flavor mock. */
const MOCK_AI_WORKER = path.join(ROOT, 'tests', 'mock', 'workers-ai-binding', 'index.mjs');

/**
 * Wires a `workers-ai-binding` provider: a service binding (named like the
 * real `[ai]` binding) from the gateway to a mock Worker's `MockAi`
 * entrypoint, whose config is returned for `wrangler dev -c … -c …`.
 */
function wireAiBinding(toml, dir, n, binding, mock, apiKey) {
  const service = `tollgate-mock-ai-${n}`;
  const mockDir = path.join(dir, service);
  fs.mkdirSync(mockDir);
  const config = {
    name: service,
    main: MOCK_AI_WORKER,
    compatibility_date: toml.compatibility_date,
    vars: { MOCK_URL: mock.url, ACCOUNT_ID: 'mock-account', API_TOKEN: apiKey ?? 'unused' },
  };
  const configPath = path.join(mockDir, 'wrangler.json');
  fs.writeFileSync(configPath, JSON.stringify(config, null, 2));
  toml.services = [...(toml.services ?? []), { binding, service, entrypoint: 'MockAi' }];
  return configPath;
}

/**
 * @param {object} [opts]
 * @param {Record<string, {apiKey?: string|null, kind?: string, flavor?: string, binding?: string, wired?: boolean}>} [opts.providers] mock providers to start, by config name (kind defaults to the name; the mock's wire flavor follows the kind; kind `workers-ai-binding` gets its binding — `binding`, default AI — wired to the binding mock unless `wired: false`)
 * @param {Record<string, string|null>} [opts.secrets] extra .dev.vars entries (null removes a default such as ADMIN_TOKEN)
 * @param {(gateway: object) => void} [opts.editConfig] change the GATEWAY config before start
 * @param {(toml: object) => void} [opts.editWrangler] change the Worker's wrangler config (e.g. add a service binding)
 * @param {object[]} [opts.extraWorkers] wrangler configs of stand-in Workers run alongside (`wrangler dev -c main -c extra…`); `main` is resolved against the repo root
 * @param {string} [opts.logLevel] wrangler's --log-level (bench/ uses 'warn': at 'info' every request is also logged through Node; `log` shows the Worker's console.log lines)
 * @param {string[]} [opts.devArgs] extra `wrangler dev` flags (e.g. --test-scheduled)
 * @param {string} [opts.seedSqlFile] SQL run against the local D1 after the migrations, before the Worker starts
 * @param {Record<string, string>} [opts.env] extra environment for wrangler (e.g. bench/ sets MINIFLARE_WORKERD_CONFIG_DEBUG to get the generated workerd config)
 */
export async function startStack({ providers = { openai: { apiKey: 'sk-test-openai-0000000000000000' } }, secrets = {}, editConfig, editWrangler, extraWorkers = [], devArgs = [], logLevel = 'info', seedSqlFile, env: extraEnv = {} } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-e2e-'));
  const mocks = {};
  for (const [name, p] of Object.entries(providers)) {
    const kind = p.kind ?? name;
    mocks[name] = await startMockProvider({ name, flavor: p.flavor ?? FLAVORS[kind] ?? 'openai', apiKey: p.apiKey ?? null });
  }

  const toml = parseToml(fs.readFileSync(path.join(ROOT, 'wrangler.toml'), 'utf8'));
  delete toml.env;
  delete toml.build;
  toml.main = path.join(ROOT, toml.main);
  for (const db of toml.d1_databases) db.migrations_dir = path.join(ROOT, db.migrations_dir);
  if (toml.assets) toml.assets.directory = path.join(ROOT, toml.assets.directory);
  const gateway = toml.vars.GATEWAY;
  const extraConfigs = [];
  for (const [name, p] of Object.entries(providers)) {
    const kind = p.kind ?? name;
    if (kind === 'workers-ai-binding') {
      gateway.providers[name] = { kind, ...(p.binding ? { binding: p.binding } : {}) };
      if (p.wired !== false) extraConfigs.push(wireAiBinding(toml, dir, extraConfigs.length, p.binding ?? 'AI', mocks[name], p.apiKey));
      continue;
    }
    gateway.providers[name] = { ...(gateway.providers[name] ?? {}), kind, base_url: mocks[name].url + (BASE_PATHS[kind] ?? '/v1') };
    if (kind === 'bedrock') gateway.providers[name].region = 'us-east-1';
  }
  // Suites that provoke upstream failures on purpose would otherwise open the
  // circuit breaker for the next test; routing tests turn it back on. Likewise
  // a provoked 429 carries the mock's "0 requests left for 20 s" headers, which
  // would make the next test's requests wait in the saturation queue; the
  // queue's own suite turns it back on.
  gateway.resilience = { circuit_failures: 0, queue_timeout_ms: 0, ...(gateway.resilience ?? {}) };
  if (editConfig) editConfig(gateway);
  if (editWrangler) editWrangler(toml);
  const configPath = path.join(dir, 'wrangler.json');
  fs.writeFileSync(configPath, JSON.stringify(toml, null, 2));
  const extraArgs = extraWorkers.flatMap((w, i) => {
    const p = path.join(dir, `extra-${i}.json`);
    fs.writeFileSync(p, JSON.stringify({ ...w, main: path.join(ROOT, w.main) }, null, 2));
    return ['-c', p];
  });

  const vars = { ADMIN_TOKEN };
  for (const [name, p] of Object.entries(providers)) {
    const kind = p.kind ?? name;
    if (kind === 'workers-ai-binding') continue; // no secret: the binding is the credential
    if (p.apiKey && kind === 'bedrock') {
      // SigV4 key pair, given as "ACCESS_KEY_ID:SECRET_ACCESS_KEY" (the mock accepts the same form).
      const [id, secret] = p.apiKey.split(':');
      vars.AWS_ACCESS_KEY_ID = id;
      vars.AWS_SECRET_ACCESS_KEY = secret;
    } else if (p.apiKey) vars[SECRET_NAMES[kind] ?? `${kind.toUpperCase()}_API_KEY`] = p.apiKey;
  }
  Object.assign(vars, secrets);
  const devVars = Object.entries(vars)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${v}`)
    .join('\n');
  fs.writeFileSync(path.join(dir, '.dev.vars'), devVars + '\n');

  const persist = path.join(dir, 'state');
  const env = { ...process.env, WRANGLER_SEND_METRICS: 'false', NO_COLOR: '1', CI: 'true', ...extraEnv };
  await run(['d1', 'migrations', 'apply', 'DB', '--local', '--persist-to', persist, '-c', configPath], { cwd: dir, env });
  if (seedSqlFile) await run(['d1', 'execute', 'DB', '--local', '--persist-to', persist, '-c', configPath, '--file', seedSqlFile], { cwd: dir, env });

  let logs = '';
  /** Starts `wrangler dev` on fresh ports over the persisted state; resolves once /healthz answers. */
  async function launch() {
    const port = await freePort();
    const inspectorPort = await freePort();
    const child = spawn(
      process.execPath,
      [WRANGLER, 'dev', '-c', configPath, ...extraArgs, ...extraConfigs.flatMap((c) => ['-c', c]), '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspectorPort), '--persist-to', persist, '--log-level', logLevel, '--show-interactive-dev-session=false', ...devArgs],
      { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    child.stdout.on('data', (d) => (logs += d));
    child.stderr.on('data', (d) => (logs += d));
    const exited = new Promise((resolve) => child.on('exit', resolve));
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`wrangler dev exited early:\n${logs}`);
      try {
        const r = await fetch(`${url}/healthz`);
        await r.arrayBuffer();
        break;
      } catch {
        if (Date.now() > deadline) throw new Error(`wrangler dev did not start in time:\n${logs}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    return { child, exited, url, inspectorPort };
  }
  /** Ends the running `wrangler dev` (and workerd under it): SIGTERM, or SIGKILL at once when `hard`. */
  async function kill(running, { hard = false } = {}) {
    try {
      process.kill(-running.child.pid, hard ? 'SIGKILL' : 'SIGTERM');
    } catch {}
    const timer = setTimeout(() => {
      try {
        process.kill(-running.child.pid, 'SIGKILL');
      } catch {}
    }, 5000);
    await running.exited;
    clearTimeout(timer);
  }
  let running = await launch();

  const adminHeaders = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
  const stack = {
    url: running.url,
    dir,
    configPath,
    persist,
    mocks,
    /** The running `wrangler dev`'s pid (its process group: workerd runs under it) and inspector port. */
    get pid() {
      return running.child.pid;
    },
    get inspectorPort() {
      return running.inspectorPort;
    },
    adminToken: ADMIN_TOKEN,
    logs: () => logs,
    /** Waits until wrangler's output (which lags the responses) matches `re`; returns whether it did. */
    async waitForLog(re, timeoutMs = 5000) {
      const until = Date.now() + timeoutMs;
      while (!re.test(logs)) {
        if (Date.now() > until) return false;
        await new Promise((r) => setTimeout(r, 100));
      }
      return true;
    },
    /**
     * Kills the Worker runtime mid-flight (SIGKILL: no graceful shutdown, every
     * in-flight request and Durable Object dies) and starts it again over the
     * same persisted D1/KV/Durable Object state; `stack.url` changes.
     */
    async restart({ hard = true } = {}) {
      await kill(running, { hard });
      running = await launch();
      stack.url = running.url;
    },
    async admin(method, p, body) {
      const send = () => fetch(stack.url + p, { method, headers: adminHeaders, body: body === undefined ? undefined : JSON.stringify(body) });
      // A connection reset (never an HTTP status) is wrangler dev's, not the
      // Worker's: its dev proxy drops a connection now and then (seen once in
      // a CI run, right after start). Setup calls try once more.
      const r = await send().catch(async (e) => {
        if (e?.cause?.code !== 'ECONNRESET') throw e;
        await new Promise((res) => setTimeout(res, 500));
        return send();
      });
      const text = await r.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {}
      return { status: r.status, json, text, headers: r.headers };
    },
    async createKey(body = { name: 'e2e' }) {
      const r = await stack.admin('POST', '/admin/keys', body);
      if (r.status !== 201) throw new Error(`key creation failed: ${r.status} ${r.text}`);
      return r.json;
    },
    /** Ledger rows (newest first), waiting until at least `count` exist: they are written after the response. */
    async ledger({ count = 1, keyId, ids = [], timeoutMs = 10_000 } = {}) {
      const q = keyId ? `?limit=1000&key_id=${keyId}` : '?limit=1000';
      const until = Date.now() + timeoutMs;
      for (;;) {
        const r = await stack.admin('GET', `/admin/requests${q}`);
        if (r.status !== 200) throw new Error(`ledger query failed: ${r.status} ${r.text}`);
        // Rows are written after the response (group commit: up to ~25 ms
        // later), so wait for the ones asked for by id, not just a count.
        const present = new Set(r.json.data.map((row) => row.request_id));
        const complete = r.json.data.length >= count && ids.every((id) => present.has(id));
        if (complete || Date.now() > until) return r.json.data;
        await new Promise((res) => setTimeout(res, 100));
      }
    },
    /**
     * Ends `wrangler dev` (SIGTERM: workerd flushes its SQLite files) but keeps
     * the temp dir — the persisted D1/KV/Durable Object state — and the mocks,
     * so another runtime can open that state; `stop()` still cleans up.
     */
    async halt() {
      await kill(running);
    },
    async stop() {
      await kill(running);
      await Promise.all(Object.values(mocks).map((m) => m.close()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return stack;
}

/** Reads an SSE response body as it arrives: resolves to { frames, events } where events are parsed data payloads. */
export async function readSse(response, onFrame) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  const frames = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      frames.push(frame);
      if (onFrame) onFrame(frame);
    }
  }
  return { frames, rest: buf };
}
