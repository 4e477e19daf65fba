// E2E tests of private previews (issue 16): what an editor and a stranger see in Chromium when a
// private session is opened through a signed preview link, framed by an editor on another site,
// asked for without a link, and revoked while open.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Router, Site, LinkKeys, TlsFront, launchBrowser, watchPage, hmrConnected, headingOf, waitHeading, waitFor,
  mark, marker, scope, betweenEdits, grantSecret, selfSignedCert, servePages, saveArtifact,
} from './harness.mjs';

const RED = 'rgb(200, 0, 0)';
const BLUE = 'rgb(0, 0, 200)';
const WS_OK = 'session_router_websocket_upgrades_total{result="ok"}';
const REVOKED_CLOSES = 'session_router_websocket_closed_on_revoke_total';
const access = (result) => `session_router_access_total{result="${result}"}`;

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

/**
 * Runs in every document of a context (frames too): records each WebSocket the document opens,
 * whether it opened, and the close code and reason it saw. Playwright's own events say that a
 * socket closed, not how.
 */
function recordSockets() {
  const sockets = [];
  Object.defineProperty(window, '__e2eSockets', { value: sockets });
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      const entry = { url: String(args[0]), protocol: args[1] ?? null, opened: false, closed: null };
      sockets.push(entry);
      this.addEventListener('open', () => { entry.opened = true; });
      this.addEventListener('close', (e) => { entry.closed = { code: e.code, reason: e.reason }; });
    }
  };
}

async function socketsOf(frame) {
  return frame.evaluate(() => window.__e2eSockets ?? []);
}

/** A fresh browser context whose pages record their WebSockets; `options` as for newContext. */
async function newContext(defer, options = {}) {
  const context = await browser.newContext(options);
  defer(() => context.close());
  await context.addInitScript(recordSockets);
  return context;
}

/**
 * One private session, acme/t1, on a real dev server behind a router with `[access] default =
 * "private"`, the editing app's JWKS and a grant secret. 127.0.0.1, where the TLS front of the
 * framing test runs, is in `trusted_proxies`, as a balancer would be.
 */
async function stagePrivate(defer, heading) {
  const site = new Site('acme', { heading, color: RED });
  defer(() => site.remove(defer.label));
  defer(() => site.stop());
  const keys = await LinkKeys.create('k1');
  defer(() => keys.remove());
  await site.start();
  const table = (accessGeneration) => ({
    sessions: [{ key: 'acme-t1', container: 'c1', client: 'acme', accessGeneration }],
    containers: [{ id: 'c1', port: site.port }],
  });
  const router = await Router.start(table(), {
    access: { default: 'private', jwksPath: keys.jwksPath, grantSecret: grantSecret(), trustedProxies: ['127.0.0.1/32'] },
  });
  defer(() => router.remove(defer.label));
  defer(() => router.stop());
  return { site, keys, router, table };
}

const PREVIEW = ['edit.acme.localhost', '/session/t1/'];

/** What a refused navigation shows: the router's 401 page, nothing of the site. */
async function assertPrivatePage(page, response) {
  assert.equal(response.status(), 401);
  assert.equal(await page.title(), 'This preview is private');
  assert.equal(await page.locator('h1').innerText(), 'This preview is private');
  assert.match(await page.locator('p').innerText(), /Open the preview from your editor/);
  assert.equal(await headingOf(page), null, 'nothing of the site shows');
}

/** Opens a preview link in a new tab of `context`; waits until the page's HMR socket is connected. */
async function openLink(context, link) {
  const page = await context.newPage();
  const seen = watchPage(page);
  const res = await page.goto(link, { timeout: 30000 });
  await hmrConnected(seen);
  return { page, seen, res };
}

/** The page's Vite HMR socket as the page saw it, once it has one. */
async function hmrSocket(frame) {
  return (await socketsOf(frame)).find((s) => s.protocol === 'vite-hmr');
}

test('private preview: the link lands on the clean URL, the site shows and edits show live', async (t) => {
  const defer = scope(t);
  const { site, keys, router } = await stagePrivate(defer, 'Private acme');
  const context = await newContext(defer);
  const clean = router.url(...PREVIEW);
  const link = await keys.link(clean, { client: 'acme', thread: 't1' });

  const tokensBefore = await router.metric(access('token'));
  const { page, res } = await openLink(context, link);
  assert.equal(res.status(), 200);
  assert.equal(page.url(), clean, 'the token is gone from the address bar');
  assert.equal((await res.request().redirectedFrom()?.response())?.status(), 303);
  assert.deepEqual(await headingOf(page), { text: 'Private acme', color: RED });
  assert.equal(await router.metric(access('token')), tokensBefore + 1);
  assert.ok(await router.metric(access('grant')) > 0, 'the page, its assets and its socket came in on the grant');
  const grant = (await context.cookies()).find((c) => c.name === 'sr_grant_t1');
  assert.ok(grant, 'the grant cookie is set');
  assert.deepEqual([grant.domain, grant.path, grant.httpOnly, grant.secure, grant.sameSite],
    ['edit.acme.localhost', '/', true, false, 'Lax'], 'over plain HTTP: host-only, HttpOnly, SameSite=Lax');
  const hmr = await hmrSocket(page);
  assert.ok(hmr?.opened && !hmr.closed, `the HMR socket is open: ${JSON.stringify(await socketsOf(page))}`);

  // A style edit is a hot update through the grant: no reload, so the marker survives.
  await mark(page, 'style');
  site.setColor(BLUE);
  await waitHeading(page, { text: 'Private acme', color: BLUE });
  assert.equal(await marker(page), 'style', 'a style edit must not reload the page');
  // A template edit: the client reloads the clean URL itself, which the grant still opens.
  await betweenEdits();
  site.setHeading('Private acme edited');
  await waitHeading(page, { text: 'Private acme edited', color: BLUE });
  assert.equal(page.url(), clean);
  assert.equal(await router.metric(access('missing')), 0, 'no request of the session went without the grant');
});

test('private preview framed by an editor on another site, behind TLS: the partitioned grant opens it and edits show live', async (t) => {
  // What this proves: an editor page on https://127.0.0.1 (another site than edit.acme.localhost)
  // frames the preview link. The frame's 303 and everything after it (page, root-absolute dev
  // assets, the wss:// HMR socket) get through only on cookies set in a cross-site frame, which
  // Chromium keeps only when they are `Secure; SameSite=None; Partitioned` (this Chromium drops
  // an unpartitioned `SameSite=None` cookie there too, and `SameSite=Lax` always). The router sets
  // those attributes only when it sees TLS, so a real TLS front (a self-signed certificate,
  // accepted by the context) stands before it, as a balancer does, adding
  // `X-Forwarded-Proto: https`. The same link over plain HTTP is the control: there the frame
  // gets the private page.
  const defer = scope(t);
  const { site, keys, router } = await stagePrivate(defer, 'Framed acme');
  const cert = await selfSignedCert();
  const front = await TlsFront.start(cert, router.proxyPort);
  defer(() => front.stop());
  const claims = { client: 'acme', thread: 't1' };
  const frameOf = (link) => `<!doctype html><title>Editor</title><h1>Editor</h1>
<iframe id="preview" src="${link}" width="900" height="500"></iframe>`;
  const editor = await servePages(cert, {
    '/plain': frameOf(await keys.link(router.url(...PREVIEW), claims)),
    '/': frameOf(await keys.link(front.url(...PREVIEW), claims)),
  });
  defer(() => editor.stop());
  const context = await newContext(defer, { ignoreHTTPSErrors: true });
  const previewFrame = (page) => page.frames().find((f) => f !== page.mainFrame());

  // Control, over plain HTTP: the link is exchanged, but the SameSite=Lax grant set in a
  // cross-site frame is dropped, so the clean URL is refused.
  const control = await context.newPage();
  await control.goto(editor.url('127.0.0.1', '/plain'));
  const refused = previewFrame(control);
  await waitFor('the plain-HTTP frame to reach the clean URL',
    async () => refused.url() === router.url(...PREVIEW) && (await refused.title()) === 'This preview is private');
  assert.match(await refused.locator('p').innerText(), /Open the preview from your editor/);
  assert.deepEqual(await context.cookies(), [], 'no cookie was kept');
  assert.equal(await router.metric(access('missing')), 1);
  await control.close();

  // Behind TLS: the frame lands on the clean https URL and shows the site, HMR over wss.
  const page = await context.newPage();
  const seen = watchPage(page);
  await page.goto(editor.url('127.0.0.1', '/'));
  await hmrConnected(seen);
  const frame = previewFrame(page);
  assert.equal(frame.url(), front.url(...PREVIEW), 'the token is gone from the frame\'s URL');
  assert.deepEqual(await headingOf(frame), { text: 'Framed acme', color: RED });
  assert.equal(await page.locator('h1').innerText(), 'Editor');
  const hmr = await hmrSocket(frame);
  assert.match(hmr?.url ?? '', new RegExp(`^wss://edit\\.acme\\.localhost:${front.port}/\\?token=`));
  assert.ok(hmr.opened && !hmr.closed, 'the framed HMR socket is open');
  assert.ok(front.upgrades >= 1, 'the socket went through the TLS front');
  // Both of the router's cookies are kept, in the editor's partition only.
  const cookies = (await context.cookies()).map((c) => [c.name, c.domain, c.secure, c.sameSite, c.partitionKey]).sort();
  assert.deepEqual(cookies, [
    ['sr_grant_t1', 'edit.acme.localhost', true, 'None', 'https://127.0.0.1'],
    ['sr_session', 'edit.acme.localhost', true, 'None', 'https://127.0.0.1'],
  ]);

  // A style edit reaches the frame as a hot update (its CSS module is routed by the affinity
  // cookie, its Referer being /@vite/client); a template edit reloads the frame by itself.
  await mark(frame, 'style');
  site.setColor(BLUE);
  await waitHeading(frame, { text: 'Framed acme', color: BLUE });
  assert.equal(await marker(frame), 'style', 'a style edit must not reload the frame');
  await betweenEdits();
  site.setHeading('Framed acme edited');
  await waitHeading(frame, { text: 'Framed acme edited', color: BLUE });
  assert.equal(frame.url(), front.url(...PREVIEW));
  assert.equal(await router.metric(access('missing')), 1, 'nothing behind TLS went without the grant');
  assert.equal(await router.metric('session_router_requests_total{outcome="no_session"}'), 0);
  await page.screenshot({ path: saveArtifact('framed-private-preview.png') });
});

test('private preview: a browser without the link gets the private page and no HMR socket', async (t) => {
  const defer = scope(t);
  const { keys, router } = await stagePrivate(defer, 'Secret acme');
  const clean = router.url(...PREVIEW);
  // The editor's own browser has the preview open, so the session and its dev server are live.
  const editorContext = await newContext(defer);
  const { page: editorPage } = await openLink(editorContext, await keys.link(clean, { client: 'acme', thread: 't1' }));
  const hmrUrl = (await hmrSocket(editorPage)).url;
  const upgrades = await router.metric(WS_OK);
  const denied = await router.metric('session_router_requests_total{outcome="access_denied"}');

  const stranger = await newContext(defer);
  const page = await stranger.newPage();
  const seen = watchPage(page);
  await assertPrivatePage(page, await page.goto(clean));
  await page.screenshot({ path: saveArtifact('private-preview-refused.png') });
  assert.deepEqual(await stranger.cookies(), [], 'the refused page sets no cookie');
  // The refused page loads no Vite client. Even the editor's own HMR URL, tried from this origin
  // with the affinity cookie naming the thread (a WebSocket handshake carries no Referer, so
  // only that cookie routes it), is refused by the router before the dev server sees it.
  await stranger.addCookies([{ name: 'sr_session', value: 't1', domain: 'edit.acme.localhost', path: '/' }]);
  const tried = await page.evaluate((url) => new Promise((resolve) => {
    const ws = new WebSocket(url, 'vite-hmr');
    ws.onopen = () => resolve('open');
    ws.onclose = (e) => resolve(`closed ${e.code}`);
  }), hmrUrl);
  assert.equal(tried, 'closed 1006', 'the upgrade never opened');
  assert.equal(seen.sockets.length, 1, 'only the socket tried by hand');
  assert.equal(await router.metric(WS_OK), upgrades, 'no WebSocket upgrade went through');
  // The page and the socket were denied (a favicon fetch, if Chromium makes one, would be too).
  assert.ok(await router.metric('session_router_requests_total{outcome="access_denied"}') >= denied + 2);
  await waitFor('the access log to show the refused upgrade',
    () => /outcome=access_denied status=401 method=GET \S+ path=\/ /.test(router.log()), 5000);
  assert.ok(await router.metric(access('missing')) >= 2);
  assert.deepEqual(await headingOf(editorPage), { text: 'Secret acme', color: RED }, 'the editor still sees it');
});

test('private preview revoked while open: the HMR socket is closed (1008), edits stop, a reload is refused', async (t) => {
  const defer = scope(t);
  const { site, keys, router, table } = await stagePrivate(defer, 'Shared acme');
  const clean = router.url(...PREVIEW);
  const context = await newContext(defer);
  const oldLink = await keys.link(clean, { client: 'acme', thread: 't1' });
  const { page, seen } = await openLink(context, oldLink);
  assert.deepEqual(await headingOf(page), { text: 'Shared acme', color: RED });
  assert.equal((await hmrSocket(page))?.closed, null);
  assert.equal(await router.metric(REVOKED_CLOSES), 0);
  await mark(page, 'before revoke');

  // The editing app raises the session's access generation; the router takes it at its next refresh.
  await router.update(table(1));
  const closed = await waitFor('the page\'s HMR socket to be closed', async () => (await hmrSocket(page))?.closed, 5000);
  assert.equal(closed.code, 1008, 'policy violation');
  t.diagnostic(`HMR socket closed by revocation: code ${closed.code}, reason ${JSON.stringify(closed.reason)}`);
  await waitFor('the Vite client to notice', () => seen.console.some((l) => l.includes('[vite] server connection lost')), 5000);
  assert.equal(await router.metric(REVOKED_CLOSES), 1);
  assert.equal(seen.sockets.filter((s) => !s.closed).length, 0, 'no socket of the page is open');

  // The page keeps what it showed but takes no more edits, and does not reload by itself (its
  // Vite client keeps asking to reconnect and is refused).
  site.setColor(BLUE);
  await sleep(2000);
  assert.deepEqual(await headingOf(page), { text: 'Shared acme', color: RED });
  assert.equal(await marker(page), 'before revoke');
  assert.ok(await router.metric(access('revoked')) >= 1);

  // A reload is refused, and so is the old link.
  await assertPrivatePage(page, await page.reload());
  await assertPrivatePage(page, await page.goto(oldLink));
  assert.equal(page.url(), oldLink, 'a revoked link is not exchanged');
  // A link minted for the new generation lets the editor back in, with the edit made meanwhile.
  const again = await openLink(context, await keys.link(clean, { client: 'acme', thread: 't1', gen: 1 }));
  assert.equal(again.page.url(), clean);
  assert.deepEqual(await headingOf(again.page), { text: 'Shared acme', color: BLUE });
});
