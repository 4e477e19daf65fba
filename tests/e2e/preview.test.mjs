// E2E tests: what an editor sees in Chromium when real Astro dev servers are reached through the
// real router, in path mode and host mode, across edits, side-by-side sessions and restarts.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  Router, Site, launchBrowser, watchPage, hmrConnected, headingOf, waitHeading, waitFor, mark, marker,
  saveArtifact, scope, betweenEdits,
} from './harness.mjs';

const RED = 'rgb(200, 0, 0)';
const GREEN = 'rgb(0, 128, 0)';
const BLUE = 'rgb(0, 0, 200)';
const PURPLE = 'rgb(128, 0, 128)';
const WS_OK = 'session_router_websocket_upgrades_total{result="ok"}';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

function session(client, thread, container) {
  return { key: `${client}-${thread}`, container, client };
}

/** Starts each site's dev server and registers its stop and removal. */
async function startSites(defer, sites, env = {}) {
  for (const s of sites) {
    defer(() => s.remove(defer.label));
    defer(() => s.stop());
    await s.start(env);
  }
}

async function startRouter(defer, table) {
  const router = await Router.start(table);
  defer(() => router.remove(defer.label));
  defer(() => router.stop());
  return router;
}

/**
 * Starts one dev server per placement, a router whose table gives each placement's session
 * ({ site, client, thread }) its own container, and a fresh browser context.
 */
async function stage(defer, placements) {
  await startSites(defer, placements.map((p) => p.site));
  const router = await startRouter(defer, {
    sessions: placements.map((p) => session(p.client, p.thread, `c-${p.site.name}`)),
    containers: placements.map((p) => ({ id: `c-${p.site.name}`, port: p.site.port })),
  });
  const context = await browser.newContext();
  defer(() => context.close());
  return { router, context };
}

/** Threads t1 (red, site `one`) and t2 (green, site `two`) of client acme, staged as above. */
async function stageTwoThreads(defer) {
  const one = new Site('one', { heading: 'Thread one', color: RED });
  const two = new Site('two', { heading: 'Thread two', color: GREEN });
  const staged = await stage(defer, [
    { site: one, client: 'acme', thread: 't1' },
    { site: two, client: 'acme', thread: 't2' },
  ]);
  return { one, two, ...staged };
}

/** Opens a tab on `url` and waits until the page shows and its HMR socket is connected. */
async function openTab(context, url) {
  const page = await context.newPage();
  const seen = watchPage(page);
  const res = await page.goto(url, { timeout: 30000 });
  await hmrConnected(seen);
  return { page, seen, status: res.status() };
}

function hotUpdates(seen) {
  return seen.console.filter((l) => l.includes('[vite] hot updated')).length;
}

/**
 * Edits `site`'s style, then its text: its own `tab` shows both, while `other` gets no update of
 * any kind (same heading and colour, no hot update, no reload).
 */
async function editShowsOnlyIn(site, tab, edit, other) {
  await mark(other.page, 'untouched');
  const otherBefore = await headingOf(other.page);
  const otherUpdates = hotUpdates(other.seen);
  site.setColor(edit.color);
  await waitHeading(tab.page, { text: site.heading, color: edit.color });
  await betweenEdits();
  site.setHeading(edit.heading);
  await waitHeading(tab.page, { text: edit.heading, color: edit.color });
  assert.deepEqual(await headingOf(other.page), otherBefore);
  assert.equal(await marker(other.page), 'untouched');
  assert.equal(hotUpdates(other.seen), otherUpdates);
}

test('path mode: the page renders, HMR connects through the router, text and style edits show live', async (t) => {
  const defer = scope(t);
  const site = new Site('acme', { heading: 'Hello from acme', color: RED });
  const { router, context } = await stage(defer, [{ site, client: 'acme', thread: 't1' }]);

  const upgradesBefore = await router.metric(WS_OK);
  const { page, seen, status } = await openTab(context, router.url('edit.acme.localhost', '/session/t1/'));
  assert.equal(status, 200);
  assert.deepEqual(await headingOf(page), { text: 'Hello from acme', color: RED });
  const hmr = seen.sockets.filter((s) => !s.closed);
  assert.equal(hmr.length, 1, `one open HMR socket, saw ${JSON.stringify(seen.sockets)}`);
  assert.match(hmr[0].url, new RegExp(`^ws://edit\\.acme\\.localhost:${router.proxyPort}/\\?token=`));
  assert.ok(await router.metric(WS_OK) > upgradesBefore, 'the router counted the HMR upgrade');
  const cookies = await context.cookies();
  assert.deepEqual(cookies.map((c) => [c.name, c.value, c.domain, c.httpOnly]),
    [['sr_session', 't1', 'edit.acme.localhost', true]]);

  // A style edit is a hot update: the page is not reloaded, so the marker survives.
  await mark(page, 'style');
  const loads = seen.loads;
  site.setColor(BLUE);
  await waitHeading(page, { color: BLUE });
  assert.equal(await marker(page), 'style', 'a style edit must not reload the page');
  assert.equal(seen.loads, loads);
  assert.equal(page.url(), router.url('edit.acme.localhost', '/session/t1/'));

  // A template edit: Astro's dev server tells the client to reload the page, which it does itself.
  await betweenEdits();
  await mark(page, 'text');
  site.setHeading('Edited through the router');
  await waitHeading(page, { text: 'Edited through the router', color: BLUE });
  assert.equal(page.url(), router.url('edit.acme.localhost', '/session/t1/'));
  const reloaded = (await marker(page)) !== 'text';
  await page.waitForLoadState('load');
  t.diagnostic(`text edit: ${reloaded ? 'Vite full reload by the client itself' : 'hot update without reload'}; `
    + `style edit: hot update, no reload; page loads in all: ${seen.loads}`);
  await hmrConnected(seen);
});

test('two sessions of two clients side by side each see only their own edits', async (t) => {
  const defer = scope(t);
  const acme = new Site('acme', { heading: 'Acme home', color: RED });
  const globex = new Site('globex', { heading: 'Globex home', color: GREEN });
  // The same thread id under both clients: only the host's client tells them apart.
  const { router, context } = await stage(defer, [
    { site: acme, client: 'acme', thread: 't1' },
    { site: globex, client: 'globex', thread: 't1' },
  ]);
  const a = await openTab(context, router.url('edit.acme.localhost', '/session/t1/'));
  const g = await openTab(context, router.url('edit.globex.localhost', '/session/t1/'));
  assert.deepEqual(await headingOf(a.page), { text: 'Acme home', color: RED });
  assert.deepEqual(await headingOf(g.page), { text: 'Globex home', color: GREEN });
  await editShowsOnlyIn(acme, a, { color: BLUE, heading: 'Acme edited' }, g);
  await editShowsOnlyIn(globex, g, { color: PURPLE, heading: 'Globex edited' }, a);
});

test('host mode: two tabs on two threads of one client each update live, with no cookie', async (t) => {
  const defer = scope(t);
  const { one, two, router, context } = await stageTwoThreads(defer);
  const upgradesBefore = await router.metric(WS_OK);
  const tab1 = await openTab(context, router.url('t1.edit.acme.localhost', '/'));
  const tab2 = await openTab(context, router.url('t2.edit.acme.localhost', '/'));
  assert.deepEqual(await headingOf(tab1.page), { text: 'Thread one', color: RED });
  assert.deepEqual(await headingOf(tab2.page), { text: 'Thread two', color: GREEN });
  assert.match(tab1.seen.sockets[0].url, new RegExp(`^ws://t1\\.edit\\.acme\\.localhost:${router.proxyPort}/\\?token=`));
  assert.match(tab2.seen.sockets[0].url, new RegExp(`^ws://t2\\.edit\\.acme\\.localhost:${router.proxyPort}/\\?token=`));
  assert.ok(await router.metric(WS_OK) >= upgradesBefore + 2, 'both HMR sockets went through the router');
  assert.deepEqual(await context.cookies(), [], 'host mode sets no cookie');

  // Style edits on both threads, the older tab first: each tab takes its own, without reloading.
  await mark(tab1.page, 'one');
  await mark(tab2.page, 'two');
  one.setColor(BLUE);
  await waitHeading(tab1.page, { text: 'Thread one', color: BLUE });
  two.setColor(PURPLE);
  await waitHeading(tab2.page, { text: 'Thread two', color: PURPLE });
  assert.deepEqual(await headingOf(tab1.page), { text: 'Thread one', color: BLUE });
  assert.equal(await marker(tab1.page), 'one');
  assert.equal(await marker(tab2.page), 'two');

  await betweenEdits();
  one.setHeading('Thread one edited');
  await waitHeading(tab1.page, { text: 'Thread one edited', color: BLUE });
  two.setHeading('Thread two edited');
  await waitHeading(tab2.page, { text: 'Thread two edited', color: PURPLE });
  assert.deepEqual(await headingOf(tab1.page), { text: 'Thread one edited', color: BLUE });
});

test('path mode, two tabs on two threads of one client: the one cookie follows the last navigation (known limit)', async (t) => {
  const defer = scope(t);
  const { one, two, router, context } = await stageTwoThreads(defer);
  const cookie = async () => (await context.cookies()).map((c) => `${c.name}=${c.value}`);
  const tab1 = await openTab(context, router.url('edit.acme.localhost', '/session/t1/'));
  const tab2 = await openTab(context, router.url('edit.acme.localhost', '/session/t2/'));
  // Both pages load right: the page and its first assets are routed by the path and Referer.
  assert.deepEqual(await headingOf(tab1.page), { text: 'Thread one', color: RED });
  assert.deepEqual(await headingOf(tab2.page), { text: 'Thread two', color: GREEN });
  assert.deepEqual(await cookie(), ['sr_session=t2'], 'one cookie per host, naming the last tab opened');

  // A style edit on thread one: tab 1's socket (opened while the cookie said t1) gets the update,
  // but the CSS module is fetched with Referer /@vite/client, so the cookie routes it to thread
  // two's server: tab 1 shows thread two's style instead of its own edit.
  const before1 = hotUpdates(tab1.seen);
  one.setColor(BLUE);
  await waitFor('tab 1 to take a hot update', () => hotUpdates(tab1.seen) > before1);
  await waitHeading(tab1.page, { text: 'Thread one', color: GREEN }, 5000);
  assert.equal(hotUpdates(tab2.seen), 0);
  t.diagnostic('style edit on t1 while the cookie named t2: tab 1 showed t2\'s colour, not its own edit');

  // A template edit reloads tab 1 through /session/t1/, which shows it right and moves the cookie.
  await betweenEdits();
  one.setHeading('Thread one edited');
  await waitHeading(tab1.page, { text: 'Thread one edited', color: BLUE });
  assert.deepEqual(await cookie(), ['sr_session=t1']);

  // Now tab 2 is the one whose hot CSS comes from the other thread.
  const before2 = hotUpdates(tab2.seen);
  two.setColor(PURPLE);
  await waitFor('tab 2 to take a hot update', () => hotUpdates(tab2.seen) > before2);
  await waitHeading(tab2.page, { text: 'Thread two', color: BLUE }, 5000);
  t.diagnostic('after tab 1 reloaded (cookie t1), a style edit on t2 showed t1\'s colour in tab 2');
});

test('container restart: the open page reconnects to the new port and shows the next edit by itself', async (t) => {
  const defer = scope(t);
  const site = new Site('acme', { heading: 'Before restart', color: RED });
  await startSites(defer, [site]);
  const table = (container) => ({ sessions: [session('acme', 't1', 'c1')], containers: [container] });
  const router = await startRouter(defer, table({ id: 'c1', port: site.port }));
  const context = await browser.newContext();
  defer(() => context.close());
  // The same session in both modes at once, as both may be enabled together.
  const path = await openTab(context, router.url('edit.acme.localhost', '/session/t1/'));
  const host = await openTab(context, router.url('t1.edit.acme.localhost', '/'));
  const oldPort = site.port;
  for (const tab of [path, host]) tab.loadsBefore = tab.seen.loads;

  // The container goes away; the store says it is starting again, then where it now listens.
  await site.stop();
  await router.update(table({ id: 'c1', status: 'starting' }));
  await site.start();
  assert.notEqual(site.port, oldPort);
  await router.update(table({ id: 'c1', port: site.port }));

  for (const tab of [path, host]) {
    await waitFor('the tab to reload itself onto the new server', () => tab.seen.loads > tab.loadsBefore, 30000);
    await waitHeading(tab.page, { text: 'Before restart', color: RED });
    await waitFor('a new HMR connection', () => tab.seen.console.filter((l) => l.includes('[vite] connected')).length >= 2);
    await mark(tab.page, 'after restart');
  }
  site.setColor(BLUE);
  for (const tab of [path, host]) {
    await waitHeading(tab.page, { text: 'Before restart', color: BLUE });
    assert.equal(await marker(tab.page), 'after restart', 'the style edit after the restart was a hot update');
  }
  await betweenEdits();
  site.setHeading('After restart');
  await waitHeading(path.page, { text: 'After restart' });
  await waitHeading(host.page, { text: 'After restart' });
});

test('unknown session and starting container pages render, and a starting page turns into the preview', async (t) => {
  const defer = scope(t);
  const site = new Site('acme', { heading: 'Ready now', color: RED });
  await startSites(defer, [site]);
  const router = await startRouter(defer, {
    sessions: [session('acme', 'booting', 'c1')],
    containers: [{ id: 'c1', status: 'starting' }],
  });
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  defer(() => context.close());
  const page = await context.newPage();

  const unknown = await page.goto(router.url('edit.acme.localhost', '/session/nobody/'));
  assert.equal(unknown.status(), 404);
  assert.equal(await page.title(), 'Session not found');
  assert.match(await page.locator('p').innerText(), /does not exist or has ended/);
  await page.screenshot({ path: saveArtifact('unknown-session.png') });

  const starting = await page.goto(router.url('edit.acme.localhost', '/session/booting/'));
  assert.equal(starting.status(), 503);
  assert.equal(await page.title(), 'Starting your preview');
  assert.match(await page.locator('p').innerText(), /reloads by itself/);
  await page.screenshot({ path: saveArtifact('container-starting.png') });

  // The container comes up: the waiting page reloads itself into the preview.
  await router.update({
    sessions: [session('acme', 'booting', 'c1')],
    containers: [{ id: 'c1', port: site.port }],
  });
  await waitHeading(page, { text: 'Ready now', color: RED }, 15000);
  assert.equal(page.url(), router.url('edit.acme.localhost', '/session/booting/'));
  await page.screenshot({ path: saveArtifact('container-ready.png') });
});

test('a public host outside .localhost: the dev server must allow it, then both modes work', async (t) => {
  const defer = scope(t);
  // Vite always allows *.localhost, so only another domain shows what a container needs: here
  // the README's environment variable, one entry for both modes of the client.
  const allowed = new Site('acme', { heading: 'Acme public', color: RED });
  const blocked = new Site('globex', { heading: 'Globex public', color: GREEN });
  await startSites(defer, [allowed], { __VITE_ADDITIONAL_SERVER_ALLOWED_HOSTS: '.edit.acme.example.test' });
  await startSites(defer, [blocked]);
  const router = await startRouter(defer, {
    sessions: [session('acme', 't1', 'c-acme'), session('globex', 't1', 'c-globex')],
    containers: [{ id: 'c-acme', port: allowed.port }, { id: 'c-globex', port: blocked.port }],
  });
  const mapped = await launchBrowser(['--host-resolver-rules=MAP *.example.test 127.0.0.1']);
  defer(() => mapped.close());
  const context = await mapped.newContext();

  const path = await openTab(context, router.url('edit.acme.example.test', '/session/t1/'));
  const host = await openTab(context, router.url('t1.edit.acme.example.test', '/'));
  for (const tab of [path, host]) {
    assert.equal(tab.status, 200);
    assert.deepEqual(await headingOf(tab.page), { text: 'Acme public', color: RED });
    await mark(tab.page, 'kept');
  }
  allowed.setColor(BLUE);
  for (const tab of [path, host]) {
    await waitHeading(tab.page, { color: BLUE });
    assert.equal(await marker(tab.page), 'kept');
  }

  // Without the setting, the router delivers the request and Vite itself refuses the host.
  const page = await context.newPage();
  const res = await page.goto(router.url('edit.globex.example.test', '/session/t1/'));
  assert.equal(res.status(), 403);
  assert.match(await page.locator('body').innerText(), /Blocked request/);
  assert.equal(await headingOf(page), null);
});
