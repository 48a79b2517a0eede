// The usage dashboard (issue 8) in a real headless Chromium (Debian
// `chromium`, driven by npm `playwright-core`): sign in through the login
// form, check that the cards, charts and tables show the scripted traffic's
// numbers (usage-traffic.mjs), exercise the filters, check the phone layout,
// save screenshots under tests/artifacts/, and check that the page made no
// request outside the Worker's origin.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';

import { ROOT, startStack } from './harness.mjs';
import { STACK_OPTIONS, runTraffic, sum } from './usage-traffic.mjs';

const ARTIFACTS = path.join(ROOT, 'tests', 'artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
let stack;
let traffic;
let context;
let page;
let profile;
const requests = [];

before(async () => {
  stack = await startStack(STACK_OPTIONS);
  traffic = await runTraffic(stack);
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1366, height: 900 },
  });
  context.on('request', (r) => requests.push(r.url()));
  page = context.pages()[0] ?? (await context.newPage());
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await context?.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  await stack?.stop();
});

const usd = (micros) => {
  const v = (micros ?? 0) / 1e6;
  return '$' + (v >= 100 ? v.toFixed(2) : v >= 1 ? v.toFixed(3) : v.toFixed(6));
};
const text = (sel) => page.locator(sel).innerText();

/** Waits until the page has finished load number `n` (each filter change is one). */
async function loaded(n) {
  await page.waitForFunction((k) => Number(document.body.dataset.loaded ?? 0) >= k, n, { timeout: 15_000 });
}

test('the dashboard is behind the login; a wrong token is refused', async () => {
  const anon = await fetch(`${stack.url}/dashboard`);
  assert.equal(anon.status, 401);
  assert.match(await anon.text(), /<form method="post" action="\/dashboard\/login"/);
  for (const f of ['app.js', 'app.css', 'index.html']) {
    assert.equal((await fetch(`${stack.url}/dashboard/${f}`)).status, f === 'index.html' ? 404 : 401, f);
  }
  const resp = await page.goto(`${stack.url}/dashboard`);
  assert.equal(resp.status(), 401);
  await page.fill('#token', 'wrong-token-0123456789');
  const [bad] = await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  assert.equal(bad.status(), 401);
  assert.equal(await bad.headerValue('x-tollgate-login'), 'failed');
  // A cross-site form cannot log anyone in.
  const cross = await fetch(`${stack.url}/dashboard/login`, {
    method: 'POST',
    headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
    body: `token=${stack.adminToken}`,
    redirect: 'manual',
  });
  assert.equal(cross.status, 403);
});

test('after sign-in the cards, charts and tables show the traffic', async () => {
  const { rows, expected, keys } = traffic;
  await page.fill('#token', stack.adminToken);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  assert.equal(new URL(page.url()).pathname, '/dashboard');
  assert.ok(!page.url().includes(stack.adminToken), 'the token is never in a URL');
  await loaded(1);
  // The session cookie is HttpOnly: no script can read it.
  assert.equal(await page.evaluate(() => document.cookie), '');
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'tollgate_session');
  assert.ok(session?.httpOnly && session.sameSite === 'Strict', JSON.stringify(cookies));

  assert.equal(await text('#c-requests'), String(expected.requests));
  assert.equal(await text('#c-spend'), usd(sum(rows, (r) => r.cost_micros)));
  assert.equal(await text('#c-saved'), usd(sum(rows, (r) => r.saved_micros)));
  assert.equal(await text('#c-error-rate'), `${((expected.errors / expected.requests) * 100).toFixed(1)} %`);
  assert.equal(await text('#c-fallback-rate'), `${((expected.fallbacks / expected.upstream) * 100).toFixed(1)} %`);
  assert.equal(await text('#c-hit-rate'), `${((expected.cache_hits / expected.requests) * 100).toFixed(1)} %`);
  assert.match(await text('#c-errors'), /^2 errors · 1 upstream · 1 rejected/);
  assert.match(await text('#c-latency'), /^\d+ \/ \d+ \/ \d+ ms$/);

  // Charts: uPlot drew into canvases, with the traffic's sums.
  const chart = (id) => page.locator(`#${id}`).evaluate((el) => ({
    sum: el.dataset.sum,
    canvas: !!el.querySelector('canvas'),
    inked: (() => {
      const c = el.querySelector('canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n;
    })(),
  }));
  const req = await chart('ch-requests');
  assert.ok(req.canvas && req.inked > 200, JSON.stringify(req));
  assert.equal(req.sum, `${expected.requests},${expected.errors},${expected.cache_hits}`);
  const spend = await chart('ch-spend');
  assert.ok(Math.abs(Number(spend.sum) - sum(rows, (r) => r.cost_micros) / 1e6) < 1e-9, spend.sum);
  assert.ok(spend.inked > 200);

  // Tables.
  const keyRows = await page.locator('#g-key tbody tr').evaluateAll((trs) => trs.map((tr) => [tr.dataset.key, tr.children[1].textContent, tr.children[0].textContent]));
  assert.deepEqual(Object.fromEntries(keyRows.map(([k, n]) => [k, Number(n)])), expected.byKey);
  assert.ok(keyRows.some(([k, , label]) => k === keys.alpha.id && label === `alpha (${keys.alpha.id})`));
  const featureRows = await page.locator('#g-feature tbody tr').evaluateAll((trs) => trs.map((tr) => [tr.dataset.key, Number(tr.children[1].textContent)]));
  assert.deepEqual(Object.fromEntries(featureRows), expected.byFeature);
  const top = await page.locator('#t-top tbody tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.requestId));
  const priced = rows.filter((r) => r.cost_micros !== null).sort((a, b) => b.cost_micros - a.cost_micros);
  assert.equal(top[0], priced[0].request_id);
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
});

test('filters narrow every view', async () => {
  const { keys, rows } = traffic;
  const n = Number(await page.evaluate(() => document.body.dataset.loaded));
  await page.selectOption('#f-key', keys.alpha.id);
  await loaded(n + 1);
  assert.equal(await text('#c-requests'), '5');
  assert.equal(await text('#c-spend'), usd(sum(rows.filter((r) => r.key_id === keys.alpha.id), (r) => r.cost_micros)));
  assert.equal(await page.locator('#g-key tbody tr').count(), 1);
  // The choices still list every key.
  assert.equal(await page.locator('#f-key option').count(), 4);
  await page.selectOption('#f-feature', 'search');
  await loaded(n + 2);
  assert.equal(await text('#c-requests'), '3');
  const req = await page.locator('#ch-requests').evaluate((el) => el.dataset.sum);
  assert.equal(req, '3,0,0');
  await page.selectOption('#f-key', '');
  await loaded(n + 3);
  assert.equal(await text('#c-requests'), '5', 'search across keys');
  const model = rows.find((r) => r.model_requested === 'openai/gpt-4o');
  await page.selectOption('#f-feature', '');
  await loaded(n + 4);
  await page.selectOption('#f-model', `openai/${model.model_used}`);
  await loaded(n + 5);
  assert.equal(await text('#c-requests'), '1');
  assert.match(await text('#c-ttft'), /^\d+ \/ \d+ \/ \d+ ms$/, 'the stream has a time to first token');
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-filtered.png'), fullPage: true });
});

test('readable on a phone: no horizontal scrolling, cards two a row', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.selectOption('#f-model', '');
  await page.waitForFunction(() => document.getElementById('c-requests').textContent === '11', null, { timeout: 15_000 });
  const layout = await page.evaluate(() => {
    const cards = [...document.querySelectorAll('.card')].map((c) => c.getBoundingClientRect());
    return { scroll: document.documentElement.scrollWidth, width: window.innerWidth, firstRow: cards.filter((r) => Math.abs(r.top - cards[0].top) < 2).length, chart: document.querySelector('#ch-spend canvas').getBoundingClientRect().width };
  });
  assert.ok(layout.scroll <= layout.width, JSON.stringify(layout));
  assert.equal(layout.firstRow, 2);
  assert.ok(layout.chart <= layout.width, JSON.stringify(layout));
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-phone.png'), fullPage: true });
});

test('the page made no request outside the Worker', async () => {
  const origin = new URL(stack.url).origin;
  const outside = requests.filter((u) => !u.startsWith('data:') && new URL(u).origin !== origin);
  assert.deepEqual(outside, []);
  assert.ok(requests.some((u) => u.endsWith('/dashboard/app.js')));
  assert.ok(requests.some((u) => u.includes('/admin/usage/series?')));
  for (const f of ['dashboard.png', 'dashboard-filtered.png', 'dashboard-phone.png']) {
    assert.ok(fs.statSync(path.join(ARTIFACTS, f)).size > 10_000, f);
  }
});
