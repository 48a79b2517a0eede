// tollgate usage dashboard. Bundled with uPlot (npm, pinned) by
// scripts/build.sh; it talks only to this gateway's /admin/usage API, with
// the HttpOnly session cookie the login form set (same origin only).
import uPlot from 'uplot';
import './app.css';

const $ = (id) => document.getElementById(id);
const RANGES = { '24h': [86400000, 'hour'], '7d': [7 * 86400000, 'hour'], '30d': [30 * 86400000, 'day'] };
const GROUPS = [
  ['key', 'Keys'], ['model', 'Models'], ['provider', 'Providers'],
  ['team', 'Teams'], ['feature', 'Features'],
];
// Per-user totals read single ledger rows (users are too many to aggregate):
// slower over long ranges, so that table fills in after the rest.
const USERS = ['user', 'Users'];
const charts = {};

const usd = (micros) => {
  const v = (micros ?? 0) / 1e6;
  return '$' + (v >= 100 ? v.toFixed(2) : v >= 1 ? v.toFixed(3) : v.toFixed(6));
};
const pct = (r) => (r == null ? '–' : (r * 100).toFixed(1) + ' %');
const ms = (v) => (v == null ? '–' : Math.round(v) + ' ms');
const num = (v) => (v ?? 0).toLocaleString('en-US');
const text = (id, value) => { $(id).textContent = value; };

function params(extra = {}) {
  const f = new FormData($('filters'));
  const [span] = RANGES[f.get('range')] ?? RANGES['24h'];
  // Whole minutes, so repeated loads ask the same question.
  const to = Math.ceil(Date.now() / 60000) * 60000;
  const p = new URLSearchParams({ from: String(to - span), to: String(to) });
  for (const k of ['key_id', 'model', 'feature']) if (f.get(k)) p.set(k, f.get(k));
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  return p;
}

async function api(path, p) {
  const r = await fetch(`/admin/usage${path}?${p}`, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  if (r.status === 401) { location.assign('/dashboard'); throw new Error('signed out'); }
  const body = await r.json();
  if (!r.ok) throw new Error(body?.error?.message ?? `HTTP ${r.status}`);
  return body;
}

function renderTotals(t, lat, ttft) {
  text('c-spend', usd(t.cost_micros));
  text('c-unpriced', t.unpriced ? `${num(t.unpriced)} unpriced` : 'all priced');
  text('c-requests', num(t.requests));
  text('c-tokens', `${num(t.total_tokens)} tokens`);
  text('c-saved', usd(t.saved_micros));
  text('c-hits', `${num(t.cache_hits + t.semantic_hits)} cache hits`);
  text('c-hit-rate', pct(t.cache_hit_rate));
  text('c-semantic', `semantic ${pct(t.semantic_hit_rate)}`);
  text('c-error-rate', pct(t.error_rate));
  text('c-errors', `${num(t.errors)} errors · ${num(t.upstream_error)} upstream · ${num(t.rejected)} rejected · ${num(t.rate_limited)} rate-limited`);
  text('c-fallback-rate', pct(t.fallback_rate));
  text('c-fallbacks', `${num(t.fallbacks)} of ${num(t.upstream)} upstream`);
  text('c-latency', [lat.p50, lat.p95, lat.p99].map((v) => (v == null ? '–' : v)).join(' / ') + (lat.p50 == null ? '' : ' ms'));
  text('c-latency-avg', `avg ${ms(t.latency_ms_avg)}`);
  text('c-ttft', [ttft.p50, ttft.p95, ttft.p99].map((v) => (v == null ? '–' : v)).join(' / ') + (ttft.p50 == null ? '' : ' ms'));
}

function chart(id, series, data, range, yFormat) {
  const el = $(id);
  const width = Math.max(260, el.clientWidth);
  charts[id]?.destroy();
  const opts = {
    width, height: 220,
    series: [{}, ...series],
    axes: [
      { stroke: '#5b6475' },
      { stroke: '#5b6475', size: 64, values: (u, vals) => vals.map(yFormat) },
    ],
    // The whole selected range, even where there was no traffic.
    scales: { x: { time: true, range: () => range } },
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
  };
  charts[id] = new uPlot(opts, data, el);
  // What was drawn, for people and for the browser test.
  el.dataset.points = String(data[0].length);
  el.dataset.sum = series.map((_, i) => data[i + 1].reduce((a, b) => a + (b ?? 0), 0)).join(',');
}

function renderSeries(s, from, to) {
  // One x per bucket of the range; buckets without traffic are 0 (latency: a gap).
  const step = s.bucket_ms;
  const byT = new Map(s.points.map((p) => [p.t, p]));
  const xs = [];
  for (let t = Math.floor(from / step) * step; t < to; t += step) xs.push(t);
  for (const t of byT.keys()) if (!xs.includes(t)) xs.push(t);
  xs.sort((a, b) => a - b);
  const pts = xs.map((t) => byT.get(t) ?? { requests: 0, errors: 0, cache_hits: 0, semantic_hits: 0, cost_micros: 0, latency_ms_avg: null });
  const x = xs.map((t) => t / 1000);
  const range = [from / 1000, to / 1000];
  const count = (v) => (Number.isInteger(v) ? String(v) : '');
  const dollars = (v) => (v === 0 ? '$0' : '$' + Number(v.toPrecision(2)));
  chart('ch-spend', [{ label: 'USD', stroke: '#2f5bea', fill: 'rgba(47,91,234,.12)', width: 2, value: (u, v) => (v == null ? '–' : '$' + v.toFixed(6)) }], [x, pts.map((p) => p.cost_micros / 1e6)], range, dollars);
  chart('ch-requests', [
    { label: 'requests', stroke: '#1c2230', width: 2 },
    { label: 'errors', stroke: '#d33a2c', width: 2 },
    { label: 'cache hits', stroke: '#1a9c6b', width: 2 },
  ], [x, pts.map((p) => p.requests), pts.map((p) => p.errors), pts.map((p) => p.cache_hits + p.semantic_hits)], range, count);
  chart('ch-latency', [{ label: 'ms', stroke: '#a35bd6', width: 2, spanGaps: false }], [x, pts.map((p) => (p.latency_ms_avg == null ? null : Math.round(p.latency_ms_avg)))], range, (v) => String(v));
}

function row(cells, cls = []) {
  const tr = document.createElement('tr');
  cells.forEach((c, i) => {
    const td = document.createElement('td');
    td.textContent = c;
    if (cls[i]) td.className = cls[i];
    tr.append(td);
  });
  return tr;
}

function renderGroup(by, title, g) {
  let wrap = $(`g-${by}`);
  if (!wrap) {
    wrap = document.createElement('div');
    wrap.className = 'table-wrap';
    wrap.id = `g-${by}`;
    wrap.innerHTML = `<h2></h2><table><thead><tr><th></th><th>Requests</th><th>Tokens</th><th>Spend</th><th>Saved</th><th>Hit rate</th><th>Errors</th><th>Fallbacks</th><th>Avg latency</th></tr></thead><tbody></tbody></table>`;
    wrap.querySelector('h2').textContent = `By ${title.toLowerCase()}`;
    wrap.querySelector('th').textContent = by;
    $('groups').append(wrap);
  }
  const body = wrap.querySelector('tbody');
  body.replaceChildren();
  for (const r of g.groups) {
    const label = r.key === '' ? '(none)' : r.name ? `${r.name} (${r.key})` : r.key;
    const tr = row([label, num(r.requests), num(r.total_tokens), usd(r.cost_micros), usd(r.saved_micros), pct(r.cache_hit_rate), pct(r.error_rate), pct(r.fallback_rate), ms(r.latency_ms_avg)]);
    tr.dataset.key = r.key;
    body.append(tr);
  }
  if (!g.groups.length) body.append(row(['No requests in this range'], ['empty']));
}

function renderTop(top) {
  const body = $('t-top').querySelector('tbody');
  body.replaceChildren();
  for (const r of top.data) {
    const tr = row([
      new Date(r.created_at).toISOString().replace('T', ' ').slice(0, 19),
      r.key_id, r.provider ? `${r.provider}/${r.model_used ?? ''}` : '—', String(r.status), num(r.total_tokens), usd(r.cost_micros), ms(r.latency_ms),
      r.metadata ? Object.entries(r.metadata).map(([k, v]) => `${k}=${v}`).join(' ') : '',
    ], [null, null, null, null, null, null, null, 'meta']);
    tr.dataset.requestId = r.request_id;
    body.append(tr);
  }
  if (!top.data.length) body.append(row(['No priced requests in this range'], ['empty']));
}

// Quality sampling (issue 12): mean agreement per answering model over time,
// and per model/reference pair. Only keys, models and time filter it.
function renderQuality(q, from, to) {
  const body = $('t-quality').querySelector('tbody');
  body.replaceChildren();
  for (const m of q.models) {
    const tr = row([m.model, m.reference, num(m.samples), m.mean_agreement == null ? '–' : m.mean_agreement.toFixed(3), num(m.agreeing), num(m.errors), usd(m.reference_cost_micros)]);
    tr.dataset.model = m.model;
    body.append(tr);
  }
  if (!q.models.length) body.append(row(['No quality samples in this range'], ['empty']));
  const models = [...new Set(q.points.map((p) => p.model))].slice(0, 6);
  const step = q.bucket_ms;
  const xs = [];
  for (let t = Math.floor(from / step) * step; t < to; t += step) xs.push(t);
  for (const p of q.points) if (!xs.includes(p.t)) xs.push(p.t);
  xs.sort((a, b) => a - b);
  const at = new Map(q.points.map((p) => [`${p.t} ${p.model}`, p.mean_agreement]));
  const colors = ['#2f5bea', '#1a9c6b', '#d33a2c', '#a35bd6', '#e38a1c', '#1c2230'];
  chart('ch-quality', models.map((m, i) => ({ label: m, stroke: colors[i], width: 2, spanGaps: true, points: { show: true } })),
    [xs.map((t) => t / 1000), ...models.map((m) => xs.map((t) => at.get(`${t} ${m}`) ?? null))],
    [from / 1000, to / 1000], (v) => v.toFixed(2));
}

function fillSelect(id, groups, current, label) {
  const sel = $(id);
  const keep = current ?? sel.value;
  sel.replaceChildren(new Option(label, ''));
  for (const g of groups) if (g.key !== '') sel.append(new Option(g.name ? `${g.name} (${g.key})` : g.key, g.key));
  if (keep && ![...sel.options].some((o) => o.value === keep)) sel.append(new Option(keep, keep));
  sel.value = keep;
}

let loading = 0;
async function load() {
  const my = ++loading;
  const status = $('status');
  status.className = 'status';
  status.textContent = 'Loading…';
  try {
    const [, bucket] = RANGES[$('f-range').value] ?? RANGES['24h'];
    const unfiltered = new URLSearchParams(params());
    for (const k of ['key_id', 'model', 'feature']) unfiltered.delete(k);
    const [totals, series, top, ...rest] = await Promise.all([
      api('', params()),
      api('/series', params({ bucket })),
      api('/top', params({ limit: '10' })),
      ...GROUPS.map(([by]) => api('/groups', params({ by, limit: '20' }))),
      // Filter choices come from the whole range, whatever is selected.
      ...['key', 'model', 'feature'].map((by) => { const p = new URLSearchParams(unfiltered); p.set('by', by); p.set('limit', '100'); return api('/groups', p); }),
    ]);
    if (my !== loading) return;
    renderTotals(totals.totals, totals.latency_ms, totals.ttft_ms);
    renderSeries(series, totals.from, totals.to);
    renderTop(top);
    GROUPS.forEach(([by, title], i) => renderGroup(by, title, rest[i]));
    const [keys, models, features] = rest.slice(GROUPS.length);
    fillSelect('f-key', keys.groups, null, 'All keys');
    fillSelect('f-model', models.groups, null, 'All models');
    fillSelect('f-feature', features.groups, null, 'All features');
    const [users, quality] = await Promise.all([
      api('/groups', params({ by: 'user', limit: '20' })),
      api('/quality', params({ bucket, limit: '1' })),
    ]);
    if (my !== loading) return;
    renderGroup(USERS[0], USERS[1], users);
    renderQuality(quality, totals.from, totals.to);
    status.textContent = `Updated ${new Date().toLocaleTimeString()} · ${new Date(totals.from).toISOString().slice(0, 16).replace('T', ' ')} – ${new Date(totals.to).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
    document.body.dataset.loaded = String(my);
  } catch (e) {
    status.className = 'status error';
    status.textContent = `Could not load usage: ${e.message}`;
  }
}

$('filters').addEventListener('change', load);
// A new width only redraws the charts; it does not ask the API again.
let resize;
window.addEventListener('resize', () => {
  clearTimeout(resize);
  resize = setTimeout(() => {
    for (const [id, c] of Object.entries(charts)) c.setSize({ width: Math.max(260, $(id).clientWidth), height: 220 });
  }, 100);
});
load();
