// Mock LLM provider server for tollgate's end-to-end tests and benchmarks.
//
// In-process:
//   import { startMockProvider } from './mock-provider.mjs';
//   const mock = await startMockProvider({ name: 'openai', apiKey: 'sk-test' });
//   // base URL for an OpenAI client: mock.url + '/v1'  (any path prefix works)
//   mock.enqueue({ rateLimit: { retryAfter: '1' } });
//   ...; mock.requests(); mock.reset(); await mock.close();
//
// Standalone (prints one JSON line {"name","url","port"} and serves until killed):
//   node tests/mock/mock-provider.mjs --port 0 --name openai [--api-key sk-...]
//        [--flavor openai] [--host 127.0.0.1] [--chunk-delay-ms 0]
//
// Out-of-process control plane (never recorded, never authenticated):
//   POST /__mock/faults    body = one fault object or an array of them -> {"queued":[ids],"pending":n}
//   GET  /__mock/faults    -> pending faults
//   GET  /__mock/requests  -> recordings (same objects as requests())
//   POST /__mock/reset     -> clears recordings and queued faults
//
// Faults (enqueue(fault)); each applies to the next matching request, FIFO among
// the faults whose `match` fits; `times` (default 1; -1 or Infinity = forever)
// counts uses. Fields, combinable where sensible:
//   match:            { model, path (suffix of the URL path), method, stream, <any other top-level body key> }
//   status, body, headers
//                     fixed response instead of the normal one (status only ->
//                     the flavor's error body for that status; body only -> 200).
//                     `headers` alone is merged into the normal response.
//   rateLimit:        { retryAfter: '1' } and/or { retryAfterMs: 1500 } -> 429 + retry-after / retry-after-ms
//   redirectTo:       url -> 302 (or `status`) with location
//   errorFrame:       true -> 200 text/event-stream whose only frame is an error object
//   delayHeadersMs:   wait before sending status + headers
//   chunkDelayMs:     delay between stream frames (between slices with sliceBytes)
//   resetAfterBytes:  write k body bytes, then TCP-reset the connection (RST via socket.resetAndDestroy);
//                     a body shorter than k is written whole and then reset (a content-length
//                     response may then already look complete to the client)
//   cutAfterChunks:   stream: end cleanly after k content chunks (no finish chunk, usage or [DONE])
//   sliceBytes:       write the body in n-byte writes (slices span frame boundaries)
//   omitUsage:        no usage anywhere in the response
//
// Recording (requests()): every non-control request, recorded before any fault is applied:
//   { seq, method, path, url, query, headers, body, json, receivedAt,
//     response: { status, faults, usage, outcome, completedAt } }
//   outcome: 'complete' | 'cut' | 'reset' | 'client-closed' | 'error'

import http from 'node:http';
import { pathToFileURL } from 'node:url';

const FLAVOR_NAME = /^[a-z0-9][a-z0-9-]*$/;

/**
 * @param {{ name?: string, flavor?: string, apiKey?: string|null, host?: string, port?: number,
 *           chunkDelayMs?: number, models?: object[] }} [opts]
 */
export async function startMockProvider(opts = {}) {
  const {
    name = 'openai',
    flavor: flavorName = 'openai',
    apiKey = null,
    host = '127.0.0.1',
    port = 0,
    chunkDelayMs = 0,
    models,
  } = opts;
  if (!FLAVOR_NAME.test(flavorName)) throw new Error(`invalid flavor name: ${flavorName}`);
  const mod = await import(new URL(`./flavors/${flavorName}.mjs`, import.meta.url).href);
  const flavor = mod.createFlavor({ name, ...(models ? { models } : {}) });

  let recordings = [];
  let faults = []; // { id, spec, remaining }
  let nextSeq = 1;
  let nextFaultId = 1;
  let closed = false;
  const sleepers = new Set();

  function sleep(ms) {
    return new Promise((resolve) => {
      if (closed || !(ms > 0)) return resolve();
      const entry = { resolve, timer: null };
      entry.timer = setTimeout(() => {
        sleepers.delete(entry);
        resolve();
      }, ms);
      sleepers.add(entry);
    });
  }

  function enqueue(fault) {
    if (Array.isArray(fault)) return fault.map((f) => enqueue(f));
    if (fault === null || typeof fault !== 'object') throw new TypeError('fault must be an object');
    const spec = { ...fault };
    const times = spec.times === undefined ? 1 : Number(spec.times);
    const remaining = times === Infinity || times < 0 ? Infinity : Math.max(1, Math.floor(times) || 1);
    const id = nextFaultId++;
    faults.push({ id, spec, remaining });
    return id;
  }

  function faultMatches(spec, req) {
    const m = spec.match;
    if (m === undefined || m === null) return true;
    if (typeof m !== 'object') return false;
    for (const [key, want] of Object.entries(m)) {
      if (key === 'path') {
        if (!(req.pathname === want || req.pathname.endsWith(String(want)))) return false;
      } else if (key === 'method') {
        if (String(want).toUpperCase() !== req.method) return false;
      } else if (key === 'stream') {
        if (Boolean(want) !== (req.json?.stream === true)) return false;
      } else {
        const have = req.json && typeof req.json === 'object' ? req.json[key] : undefined;
        if (have !== want) return false;
      }
    }
    return true;
  }

  function takeFault(req) {
    const idx = faults.findIndex((f) => faultMatches(f.spec, req));
    if (idx < 0) return null;
    const f = faults[idx];
    f.remaining -= 1;
    if (f.remaining <= 0) faults.splice(idx, 1);
    return { id: f.id, ...f.spec };
  }

  function reset() {
    recordings = [];
    faults = [];
  }

  function publicFaults() {
    return faults.map((f) => ({ id: f.id, remaining: f.remaining === Infinity ? -1 : f.remaining, ...f.spec }));
  }

  // -------------------------------------------------------------- server

  const server = http.createServer({ keepAlive: true, noDelay: true }, (req, res) => {
    onRequest(req, res).catch(() => {
      try {
        res.destroy();
      } catch {
        /* ignore */
      }
    });
  });
  server.keepAliveTimeout = 65_000;
  server.on('connection', (socket) => {
    socket.setNoDelay(true);
    socket.setKeepAlive(true);
  });
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });

  async function onRequest(req, res) {
    const receivedAt = Date.now();
    let url;
    try {
      url = new URL(req.url, 'http://mock.invalid');
    } catch {
      url = new URL('http://mock.invalid/');
    }
    const pathname = url.pathname;
    if (pathname === '/__mock' || pathname.startsWith('/__mock/')) return control(req, res, pathname);

    let rec = null;
    try {
      const body = await readBody(req);
      let json = null;
      let jsonError = false;
      if (body.length > 0) {
        try {
          json = JSON.parse(body);
        } catch {
          jsonError = true;
        }
      }
      rec = {
        seq: nextSeq++,
        method: req.method,
        path: pathname,
        url: req.url,
        query: Object.fromEntries(url.searchParams),
        headers: { ...req.headers },
        body,
        json,
        receivedAt,
        response: { status: null, faults: [], usage: null, outcome: null, completedAt: null },
      };
      recordings.push(rec);

      const fault = takeFault({ method: req.method, pathname, json });
      if (fault) rec.response.faults.push(fault);
      const ctx = {
        name,
        seq: rec.seq,
        method: req.method,
        pathname,
        query: rec.query,
        headers: req.headers,
        body,
        json,
        jsonError,
        apiKey,
        fault,
      };

      let plan;
      try {
        plan = (fault && fixedPlan(fault, ctx)) || flavor.authenticate(ctx) || flavor.handle(ctx);
      } catch (err) {
        plan = flavor.internalErrorPlan(err, ctx);
      }
      if (fault && fault.headers && typeof fault.headers === 'object') {
        plan.headers = { ...plan.headers };
        for (const [k, v] of Object.entries(fault.headers)) plan.headers[k.toLowerCase()] = v;
      }
      rec.response.usage = plan.usage ?? null;
      await writePlan(res, plan, fault, rec);
    } catch (err) {
      if (rec) {
        rec.response.outcome = 'error';
        rec.response.completedAt = Date.now();
      }
      if (!res.headersSent && !res.destroyed) {
        const plan = flavor.internalErrorPlan(err, { seq: rec?.seq ?? 0, json: null });
        const buf = Buffer.from(typeof plan.body === 'string' ? plan.body : JSON.stringify(plan.body));
        if (rec) rec.response.status = plan.status;
        res.writeHead(plan.status, { ...stringHeaders(plan.headers), 'content-length': buf.length });
        res.end(buf);
      } else {
        res.destroy();
      }
    }
  }

  /** A plan replacing the normal response, or null when the fault only shapes transport. */
  function fixedPlan(fault, ctx) {
    let plan = null;
    if (fault.redirectTo) {
      plan = { status: 302, headers: { location: String(fault.redirectTo) }, body: '', usage: null };
    } else if (fault.errorFrame) {
      plan = flavor.errorFramePlan(ctx);
    } else if (fault.rateLimit) {
      plan = flavor.rateLimitPlan(fault, ctx);
    } else if (fault.status !== undefined && fault.body === undefined) {
      const status = Number(fault.status);
      plan = status >= 400 ? flavor.errorPlan(status, {}, ctx) : { status, headers: {}, body: '', usage: null };
    } else if (fault.body !== undefined) {
      plan = { status: 200, headers: {}, body: '', usage: null };
    }
    if (!plan) return null;
    if (fault.status !== undefined) plan.status = Number(fault.status);
    if (fault.body !== undefined) {
      delete plan.frames;
      const b = fault.body;
      if (typeof b === 'string') {
        plan.body = b;
        let isJson = true;
        try {
          JSON.parse(b);
        } catch {
          isJson = false;
        }
        plan.headers = { ...plan.headers, 'content-type': isJson ? 'application/json' : 'text/plain; charset=utf-8' };
      } else if (b instanceof Uint8Array) {
        plan.body = Buffer.from(b);
        plan.headers = { ...plan.headers, 'content-type': 'application/octet-stream' };
      } else {
        plan.body = b;
        plan.headers = { ...plan.headers, 'content-type': 'application/json' };
      }
      plan.usage = null;
    }
    return plan;
  }

  async function writePlan(res, plan, fault, rec) {
    const f = fault || {};
    const headers = stringHeaders(plan.headers);
    const streaming = Array.isArray(plan.frames);
    let units;
    let cut = false;
    if (streaming) {
      let frames = plan.frames;
      if (f.cutAfterChunks !== undefined && f.cutAfterChunks !== null) {
        frames = cutFrames(frames, Math.max(0, Math.floor(Number(f.cutAfterChunks)) || 0));
        cut = true;
      }
      units = frames.map((fr) => Buffer.from(fr.data));
      if (cut) rec.response.usage = null;
    } else {
      const b = plan.body;
      const buf = Buffer.isBuffer(b) ? b : Buffer.from(typeof b === 'string' ? b : b === undefined ? '' : JSON.stringify(b));
      headers['content-length'] = String(buf.length);
      units = buf.length ? [buf] : [];
    }
    const slice = Number(f.sliceBytes) > 0 ? Math.floor(Number(f.sliceBytes)) : 0;
    if (slice) {
      const all = Buffer.concat(units);
      units = [];
      for (let i = 0; i < all.length; i += slice) units.push(all.subarray(i, i + slice));
    }
    const delay = f.chunkDelayMs !== undefined ? Number(f.chunkDelayMs) : chunkDelayMs;
    const resetAt =
      f.resetAfterBytes !== undefined && f.resetAfterBytes !== null ? Math.max(0, Math.floor(Number(f.resetAfterBytes)) || 0) : null;

    if (Number(f.delayHeadersMs) > 0) await sleep(Number(f.delayHeadersMs));
    if (res.destroyed || closed) return finish(rec, 'client-closed');

    res.writeHead(plan.status, headers);
    rec.response.status = plan.status;

    if (resetAt === 0) {
      res.flushHeaders();
      await resetConnection(res);
      return finish(rec, 'reset');
    }
    let written = 0;
    for (let i = 0; i < units.length; i++) {
      if (i > 0) {
        if (delay > 0) await sleep(delay);
        else if (slice) await new Promise((r) => setImmediate(r));
      }
      if (res.destroyed || closed) return finish(rec, 'client-closed');
      let unit = units[i];
      if (resetAt !== null && written + unit.length >= resetAt) {
        unit = unit.subarray(0, resetAt - written);
        if (unit.length) await writeAsync(res, unit);
        await resetConnection(res);
        return finish(rec, 'reset');
      }
      if (!(await writeAsync(res, unit))) return finish(rec, 'client-closed');
      written += unit.length;
    }
    if (resetAt !== null) {
      // The whole body was shorter than resetAfterBytes: still never finish it cleanly.
      if (!units.length) res.flushHeaders();
      await resetConnection(res);
      return finish(rec, 'reset');
    }
    await new Promise((resolve) => res.end(resolve));
    return finish(rec, cut ? 'cut' : 'complete');
  }

  async function resetConnection(res) {
    const socket = res.socket;
    // Let the bytes already handed to the kernel reach the peer before the RST.
    await new Promise((r) => setTimeout(r, 10));
    if (socket && !socket.destroyed) {
      if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
      else socket.destroy();
    }
    res.destroy();
  }

  function finish(rec, outcome) {
    rec.response.outcome = outcome;
    rec.response.completedAt = Date.now();
  }

  // --------------------------------------------------------- control plane

  async function control(req, res, pathname) {
    const send = (status, obj) => {
      const buf = Buffer.from(JSON.stringify(obj));
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': buf.length });
      res.end(buf);
    };
    try {
      const body = await readBody(req);
      const route = `${req.method} ${pathname.replace(/\/+$/, '')}`;
      if (route === 'POST /__mock/faults') {
        let spec;
        try {
          spec = JSON.parse(body);
        } catch {
          return send(400, { error: 'fault body must be JSON' });
        }
        let ids;
        try {
          ids = [].concat(enqueue(spec));
        } catch (err) {
          return send(400, { error: String(err.message || err) });
        }
        return send(200, { queued: ids, pending: faults.length });
      }
      if (route === 'GET /__mock/faults') return send(200, publicFaults());
      if (route === 'GET /__mock/requests') return send(200, recordings);
      if (route === 'POST /__mock/reset' || route === 'DELETE /__mock/requests') {
        reset();
        return send(200, { ok: true });
      }
      return send(404, { error: `unknown control route ${route}` });
    } catch (err) {
      if (!res.headersSent) send(500, { error: String(err?.message || err) });
      else res.destroy();
    }
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actualPort = server.address().port;
  const urlHost = host.includes(':') ? `[${host}]` : host;

  return {
    name,
    flavor: flavorName,
    url: `http://${urlHost}:${actualPort}`,
    port: actualPort,
    server,
    requests: () => structuredClone(recordings),
    reset,
    enqueue,
    pendingFaults: publicFaults,
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      for (const s of sleepers) {
        clearTimeout(s.timer);
        s.resolve();
      }
      sleepers.clear();
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

function cutFrames(frames, k) {
  const contentIdx = [];
  frames.forEach((fr, i) => {
    if (fr.kind === 'content') contentIdx.push(i);
  });
  if (contentIdx.length === 0) return frames.filter((fr) => fr.kind === 'role');
  if (k === 0) return frames.slice(0, contentIdx[0]);
  const last = contentIdx[Math.min(k, contentIdx.length) - 1];
  return frames.slice(0, last + 1);
}

function stringHeaders(h) {
  const out = {};
  for (const [k, v] of Object.entries(h || {})) {
    if (v === undefined || v === null) continue;
    out[k.toLowerCase()] = Array.isArray(v) ? v.map(String) : String(v);
  }
  return out;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
    req.on('aborted', () => reject(new Error('request aborted')));
  });
}

/** Resolves true once `buf` is handed to the socket, false if the response closed first. */
function writeAsync(res, buf) {
  return new Promise((resolve) => {
    if (res.destroyed || res.writableEnded) return resolve(false);
    const onClose = () => resolve(false);
    res.once('close', onClose);
    res.write(buf, (err) => {
      res.off('close', onClose);
      resolve(!err);
    });
  });
}

// ------------------------------------------------------------------ CLI

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    const key = (eq > 0 ? a.slice(2, eq) : a.slice(2)).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const value = eq > 0 ? a.slice(eq + 1) : argv[i + 1] !== undefined && !argv[i + 1].startsWith('--') ? argv[++i] : 'true';
    out[key] = value;
  }
  return out;
}

const isMain = process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const args = parseArgs(process.argv.slice(2));
  const mock = await startMockProvider({
    name: args.name ?? 'openai',
    flavor: args.flavor ?? 'openai',
    apiKey: args.apiKey ?? null,
    host: args.host ?? '127.0.0.1',
    port: args.port !== undefined ? Number(args.port) : 0,
    chunkDelayMs: args.chunkDelayMs !== undefined ? Number(args.chunkDelayMs) : 0,
  });
  process.stdout.write(JSON.stringify({ name: mock.name, url: mock.url, port: mock.port }) + '\n');
  const stop = () => mock.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
