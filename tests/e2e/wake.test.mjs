// E2E test of waking a stopped session (contract section 1.7): a visit in Chromium asks a test
// orchestrator to start the container through the router's signed HTTP wake, the waiting page
// turns into the live preview by itself, and HMR works through the router afterwards.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  Router, Site, Orchestrator, launchBrowser, watchPage, hmrConnected, waitHeading, waitFor, mark, marker,
  saveArtifact, scope, betweenEdits, wakeSecret, shownTimes,
} from './harness.mjs';

const RED = 'rgb(200, 0, 0)';
const BLUE = 'rgb(0, 0, 200)';
const wakes = (result) => `session_router_wake_requests_total{result="${result}"}`;
const COLD_STARTS = 'session_router_cold_start_seconds_count';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const SESSION = { key: 'acme-t1', container: 'c1', client: 'acme' };

test('a visit to a stopped session wakes it once, and the waiting page turns into the live preview by itself', async (t) => {
  const defer = scope(t);
  const site = new Site('acme', { heading: 'Woken up', color: RED });
  defer(() => site.remove(defer.label));
  defer(() => site.stop());

  // The platform: on a wake, start the dev server, then write its container routable.
  const secret = wakeSecret();
  let router;
  const orchestrator = await Orchestrator.start({
    secret,
    onWake: async (body, wake) => {
      assert.equal(body.sessionId, SESSION.key);
      await site.start();
      wake.routableAt = router.writeSessions({ sessions: [SESSION], containers: [{ id: 'c1', port: site.port }] });
    },
  });
  defer(() => orchestrator.stop());
  // The default table refresh (5 s): only the router's watch of a waited-for session picks the
  // change up quickly.
  router = await Router.start({ sessions: [SESSION], containers: [{ id: 'c1', status: 'stopped' }] },
    { wake: { url: orchestrator.url, secret }, refreshInterval: '5s' });
  defer(() => router.remove(defer.label));
  defer(() => router.stop());
  const url = router.url('edit.acme.localhost', '/session/t1/');

  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  defer(() => context.close());
  const page = await context.newPage();
  const seen = watchPage(page);
  const visitedAt = Date.now();
  const waking = await page.goto(url);
  assert.equal(waking.status(), 503);
  assert.equal(waking.headers()['retry-after'], '2');
  assert.equal(await page.title(), 'Waking your preview');
  assert.match(await page.locator('p').innerText(), /shows here by itself/);
  await page.screenshot({ path: saveArtifact('container-waking.png') });

  // A second visitor while the container starts gets the same page and sends no second wake.
  const second = await browser.newContext();
  defer(() => second.close());
  const otherPage = await second.newPage();
  const otherWaking = await otherPage.goto(url);
  assert.equal(otherWaking.status(), 503, 'the container was not up yet when the second visitor came');
  assert.equal(await otherPage.title(), 'Waking your preview');

  // No reload from here: the page shows the preview by itself once the container is routable.
  await waitHeading(page, { text: 'Woken up', color: RED }, 60000);
  const shown = await shownTimes(page);
  await waitFor('the waking page to have reloaded itself', () => seen.loads >= 2);
  assert.equal(page.url(), url);
  await waitHeading(otherPage, { text: 'Woken up', color: RED }, 15000);
  await page.screenshot({ path: saveArtifact('container-woken.png') });

  assert.deepEqual(orchestrator.refused, []);
  assert.equal(orchestrator.wakes.length, 1, 'one wake POST for both visits');
  const [wake] = orchestrator.wakes;
  await wake.finished;
  assert.equal(wake.error, null);
  const { requestedAt, ...rest } = wake.body;
  assert.deepEqual(rest, { type: 'session.wake', sessionId: 'acme-t1', clientId: 'acme', threadId: 't1' });
  assert.ok(requestedAt >= visitedAt - 1000 && requestedAt <= wake.receivedAt + 1000,
    `requestedAt ${requestedAt} is the visit's time (visit ${visitedAt}, received ${wake.receivedAt})`);

  // Where the cold start's time went. From the container written routable to the reload that
  // shows it is the router's watch (every 250 ms) and the held request's answer; a router that
  // only saw the change at its next table refresh would take up to 5 s here.
  const paint = shown.firstPaint ?? shown.domContentLoaded;
  const routableToReload = shown.navigationStart - wake.routableAt;
  t.diagnostic(`cold start: asked→POST received ${wake.receivedAt - requestedAt} ms; `
    + `received→routable (platform: astro dev start) ${wake.routableAt - wake.receivedAt} ms; `
    + `routable→reload ${Math.round(routableToReload)} ms; reload→first byte ${Math.round(shown.responseStart - shown.navigationStart)} ms; `
    + `first byte→${shown.firstPaint ? 'first paint' : 'DOMContentLoaded'} ${Math.round(paint - shown.responseStart)} ms; `
    + `routable→preview shown ${Math.round(paint - wake.routableAt)} ms`);
  assert.ok(routableToReload >= 0 && routableToReload < 2000, `routable→reload ${routableToReload} ms`);

  // HMR through the router: a style edit is a hot update (no reload), a text edit shows too.
  await hmrConnected(seen);
  await mark(page, 'woken');
  site.setColor(BLUE);
  await waitHeading(page, { text: 'Woken up', color: BLUE });
  assert.equal(await marker(page), 'woken', 'a style edit must not reload the page');
  await betweenEdits();
  site.setHeading('Edited after the wake');
  await waitHeading(page, { text: 'Edited after the wake', color: BLUE });
  await waitHeading(otherPage, { text: 'Edited after the wake', color: BLUE });

  assert.equal(orchestrator.wakes.length, 1);
  assert.equal(await router.metric(wakes('sent')), 1);
  assert.ok(await router.metric(wakes('cooldown')) >= 1, 'the second visit was held back by the cooldown');
  assert.equal(await router.metric(COLD_STARTS), 1);
});
