// `make demo`: the router on its embedded default config in front of a real Astro dev server
// (Node 22) serving the demo session, checked end to end (page and HMR upgrade) before the URL
// is printed, and stopped with both processes on Ctrl-C or SIGTERM.
//
// `--check` runs the same on free ports (or `--ports PROXY,ADMIN,SITE`), with a throwaway site
// and a sessions file pointing the demo session at that site's port, and ends its output with
// one `demo-check {json}` line (URL, file, ports, process ids) for tests/e2e/demo.test.mjs.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  Site, freePort, keepLog, listens, onStopSignal, routerBin, sessionsToml, startProcess, stopProcess,
  tempDir, waitFor,
} from './harness.mjs';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// The demo session of conf/sessions.toml, as the embedded router.toml routes it (path mode).
const HOST = 'edit.demo.localhost';
const THREAD = 'hello';
const DEFAULT_PORTS = { proxy: 8080, admin: 9091, site: 4321 };

/** The demo's page: what it is and what to do with it, in words a newcomer reads first. */
function demoPage({ heading, color, ports, file }) {
  return `---
// The page of the demo session. Edit it and save: the preview tab follows.
const file = ${JSON.stringify(file)};
---
<html lang="en">
  <head><meta charset="utf-8"><title>session-router demo</title></head>
  <body>
    <h1 id="heading">${heading}</h1>
    <p>This is the live preview of session <code>${THREAD}</code> of client <code>demo</code>:
      an Astro dev server on 127.0.0.1:${ports.site}, reached through session-router on port ${ports.proxy}.</p>
    <p>Open <code>{file}</code> in your editor.
      Change the heading's colour in the <code>&lt;style&gt;</code> block and save: this tab changes in place,
      without a reload. Change the heading's text and save: the page refreshes itself.</p>
  </body>
</html>
<style>
  body { font-family: system-ui, sans-serif; max-width: 42rem; margin: 3rem auto; line-height: 1.5; }
  h1 { color: ${color}; }
</style>
`;
}

/**
 * `--ports PROXY,ADMIN,SITE` or, in --check mode, free ones; the demo's own otherwise. Given
 * ports must be free now: Astro would move to another one by itself, and the router would fail
 * with a less helpful message.
 */
async function choosePorts(check, given) {
  if (check && !given) return { proxy: await freePort(), admin: await freePort(), site: await freePort() };
  const ports = given ? parsePorts(given) : DEFAULT_PORTS;
  for (const [what, port] of Object.entries(ports)) {
    if (!(await listens(port))) throw new Error(`port ${port} (${what}) is already in use: stop whatever holds it and run the demo again`);
  }
  return ports;
}

function parsePorts(list) {
  const [proxy, admin, site] = list.split(',').map(Number);
  if (![proxy, admin, site].every((p) => Number.isInteger(p) && p > 0 && p < 65536)) {
    throw new Error(`--ports wants PROXY,ADMIN,SITE port numbers, got ${JSON.stringify(list)}`);
  }
  return { proxy, admin, site };
}

/**
 * The router binary with no --config, as `session-router` runs out of the box: the embedded
 * router.toml (conf/sessions.toml, relative to the repository) and pingora.yaml. The environment
 * binds its listeners to loopback, and on other ports than the demo's moves them and the
 * sessions file.
 */
function startRouter({ ports, sessionsPath, logPath }) {
  if (!fs.existsSync(routerBin)) throw new Error(`router binary missing: ${routerBin} (run cargo build --bin session-router)`);
  const env = {
    ...process.env,
    RUST_LOG: process.env.RUST_LOG ?? 'info',
    SESSION_ROUTER__LISTEN__PROXY: `127.0.0.1:${ports.proxy}`,
    SESSION_ROUTER__LISTEN__ADMIN: `127.0.0.1:${ports.admin}`,
  };
  if (sessionsPath) env.SESSION_ROUTER__STORE__FILE__PATH = sessionsPath;
  return startProcess(routerBin, [], { cwd: repo, env }, logPath);
}

/** One request to the router as a browser on `HOST` makes it; resolves with status, headers, body. */
function viaRouter(ports, pathname, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: ports.proxy, path: pathname, headers: { Host: HOST, ...headers }, timeout: 5000 },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      });
    req.on('timeout', () => req.destroy(new Error(`no answer to ${pathname} within 5 s`)));
    req.on('error', reject);
  });
}

/**
 * The Vite client's HMR socket, opened through the router the way the page opens it: the token
 * from /@vite/client, subprotocol vite-hmr, routed by the page's Referer. Resolves on the 101.
 */
async function checkHmrUpgrade(ports, pageUrl) {
  const client = await viaRouter(ports, '/@vite/client', { Referer: pageUrl });
  const token = /wsToken\s*=\s*"([^"]+)"/.exec(client.body)?.[1];
  if (client.status !== 200 || !token) throw new Error(`/@vite/client through the router: ${client.status}, no HMR token`);
  await new Promise((resolve, reject) => {
    const req = http.get({
      host: '127.0.0.1', port: ports.proxy, path: `/?token=${token}`, timeout: 5000,
      headers: {
        Host: HOST, Referer: pageUrl, Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'), 'Sec-WebSocket-Protocol': 'vite-hmr',
      },
    });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(); });
    req.on('response', (res) => { res.resume(); reject(new Error(`HMR upgrade through the router: ${res.statusCode}, not 101`)); });
    req.on('timeout', () => req.destroy(new Error('HMR upgrade through the router: no answer within 5 s')));
    req.on('error', reject);
  });
}

function banner({ url, ports, file, logs }) {
  const rel = (p) => shortPath(p);
  return `
  session-router demo: running.

  Open in a browser   ${url}
  or with curl        curl -H 'Host: ${HOST}' http://127.0.0.1:${ports.proxy}/session/${THREAD}/

  Edit ${rel(file)} and save: the open page follows by itself.
  A colour in its <style> block changes in place, without a reload;
  new text makes the page refresh itself.

  Route: ${HOST} -> session demo-${THREAD} -> astro dev on 127.0.0.1:${ports.site}
  Metrics: http://127.0.0.1:${ports.admin}/metrics   Logs: ${logs.map(rel).join(', ')}
  Stop: Ctrl-C
`;
}

/**
 * Everything the demo started, stopped once: Astro first (it holds the router's upstream
 * sockets). A --check run keeps both logs as e2e artifacts, then deletes its temp dir.
 */
function stopper(state) {
  let stopping;
  return () => {
    state.stopping = true;
    stopping ??= (async () => {
      if (state.site) await state.site.stop();
      // SIGINT is Pingora's fast shutdown: nothing of a local demo needs a grace period.
      if (state.router) await stopProcess(state.router, 5000, 'SIGINT');
      if (state.tmp) {
        keepLog(state.routerLog, 'demo-check-router.log');
        state.site?.remove('demo-check');
        fs.rmSync(state.tmp, { recursive: true, force: true });
      }
    })();
    return stopping;
  };
}

async function start({ check, ports: given }, state) {
  const ports = await choosePorts(check, given);
  const dir = check ? (state.tmp = tempDir('demo')) : path.join(repo, 'target', 'demo');
  const root = path.join(dir, 'site');
  const file = path.join(root, 'src', 'pages', 'index.astro');
  state.site = new Site('demo', {
    root, heading: 'Hello from session-router', color: 'rgb(200, 0, 0)',
    page: (s) => demoPage({ ...s, ports, file: shortPath(file, repo) }),
  });
  console.log(`demo: starting astro dev (Node 22) on 127.0.0.1:${ports.site} in ${shortPath(root)}`);
  await state.site.start({}, { port: ports.site });
  const sessionsPath = ports.site === DEFAULT_PORTS.site ? undefined : writeSessions(dir, ports);
  state.routerLog = path.join(dir, 'router.log');
  console.log(`demo: starting ${shortPath(routerBin)} on 127.0.0.1:${ports.proxy} (admin ${ports.admin})`);
  state.router = startRouter({ ports, sessionsPath, logPath: state.routerLog });
  const url = `http://${HOST}:${ports.proxy}/session/${THREAD}/`;
  await waitFor('the preview to answer 200 through the router',
    async () => (await viaRouter(ports, `/session/${THREAD}/`)).status === 200, 20000, 200);
  await checkHmrUpgrade(ports, url);
  return { url, ports, file, logs: [state.routerLog, state.site.logPath] };
}

/** The demo session of conf/sessions.toml, its container moved to the site's port. */
function writeSessions(dir, ports) {
  const sessionsPath = path.join(dir, 'sessions.toml');
  fs.writeFileSync(sessionsPath, sessionsToml({
    sessions: [{ key: `demo-${THREAD}`, container: 'demo-container', client: 'demo', access: 'public' }],
    containers: [{ id: 'demo-container', port: ports.site }],
  }));
  return sessionsPath;
}

/** `p` relative to `from` when it lies under it, else absolute. */
function shortPath(p, from = process.cwd()) {
  const rel = path.relative(from, p);
  return rel && !rel.startsWith('..') ? rel : p;
}

/** Resolves with a message when Astro or the router ends by itself. */
function unexpectedExit(state) {
  const ended = (name, child, log) => child.exited.then(({ code, signal }) =>
    `${name} exited (${signal ?? `code ${code}`}); see ${shortPath(log)}`);
  return Promise.race([ended('astro dev', state.site.child, state.site.logPath), ended('the router', state.router, state.routerLog)]);
}

async function main() {
  const { values: options } = parseArgs({ options: { check: { type: 'boolean' }, ports: { type: 'string' } } });
  const state = {};
  const stop = stopper(state);
  onStopSignal(async (signal) => {
    console.log(`\ndemo: ${signal}: stopping astro dev and the router`);
    await stop();
    console.log('demo: stopped');
    process.exit(0);
  });
  try {
    const shown = await start(options, state);
    console.log(banner(shown));
    if (options.check) {
      const pids = [state.site.child.pid, state.router.pid];
      console.log(`demo-check ${JSON.stringify({ url: shown.url, file: shown.file, ports: shown.ports, pids })}`);
    }
  } catch (e) {
    console.error(`demo: ${e.message}`);
    for (const log of [state.routerLog, state.site?.logPath]) if (log && fs.existsSync(log)) console.error(`demo: log: ${shortPath(log)}`);
    if (!options.check && state.site) console.error('demo: the site keeps your edits across runs; rm -rf target/demo starts afresh');
    await stop();
    process.exit(1);
  }
  const why = await unexpectedExit(state);
  if (state.stopping) return; // a signal's stop ended it; that handler exits
  console.error(`demo: ${why}`);
  await stop();
  process.exit(1);
}

await main();
