#!/usr/bin/env python3
# bench/load.py: the side-by-side load run behind `make bench-load` (bench/run.sh builds first).
"""Drives one upstream through each proxy in turn with wrk and prints one comparison table.

Every proxy routes `edit.demo.localhost` + `/session/hello/x` to the same upstream (an nginx
returning a 1 KiB body), strips the prefix, and sets X-Forwarded-*. Per run it records requests/s,
wrk's p50/p99, the proxy's CPU time per request (utime+stime deltas of its processes from
/proc/PID/stat over the measured window) and its resident memory. Rounds repeat the whole set
with the order rotated, so machine noise shows up as spread instead of as a bias.

All processes bind 127.0.0.1 on free ports, live in their own process groups, and are killed
when the run ends, however it ends.
"""

import argparse
import csv
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "edit.demo.localhost"
PATH = "/session/hello/x"
# 1 KiB of body, newline included, so a response is one small write for every server.
BODY = "x" * 1023 + "\n"
DEFAULT_PROXIES = ["direct", "router", "bare", "nginx", "haproxy"]
# `--headers browser`: what a browser sends for a dev-server asset, so header handling is
# measured at a realistic size too (wrk alone sends only Host).
BROWSER_HEADERS = [
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Accept: */*",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Accept-Language: en-US,en;q=0.9",
    f"Referer: http://{HOST}/session/hello/",
    "Sec-Fetch-Dest: script",
    "Sec-Fetch-Mode: no-cors",
    "Sec-Fetch-Site: same-origin",
    'Sec-Ch-Ua: "Chromium";v="126", "Not.A/Brand";v="24"',
    "Sec-Ch-Ua-Platform: \"Linux\"",
    "Cookie: theme=dark; editor_tab=preview",
]


def wrk_headers(args, cookie=None):
    """wrk's header flags; `cookie` (`name=value`, a private session's grant) joins the Cookie
    header, as a browser sends one Cookie header with all its cookies."""
    headers = [f"Host: {HOST}"] + (BROWSER_HEADERS if args.headers == "browser" else [])
    if cookie:
        sent = [h.removeprefix("Cookie: ") for h in headers if h.startswith("Cookie: ")]
        headers = [h for h in headers if not h.startswith("Cookie: ")]
        headers.append("Cookie: " + "; ".join(sent + [cookie]))
    return sum((["-H", h] for h in headers), [])


class RunError(Exception):
    pass


def _fixed_port_range():
    """Ports below the kernel's ephemeral range, down to half its start."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            start = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        start = 32768
    start = start if start >= 4096 else 32768
    return start // 2, start


_PORTS_LOW, _PORTS_HIGH = _fixed_port_range()
_next_port = itertools.count(os.getpid() * 7919)


def free_port():
    """A port free now and handed out once per run. Not one from binding port 0: once let go, the
    kernel may give that port to one of wrk's outgoing connections before the server binds it."""
    span = _PORTS_HIGH - _PORTS_LOW
    for _ in range(span):
        port = _PORTS_LOW + next(_next_port) % span
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RunError(f"no free port in {_PORTS_LOW}..{_PORTS_HIGH}")


class Procs:
    """Every process this run starts, each the leader of its own group, killed on exit."""

    def __init__(self):
        self.live = []

    def start(self, name, argv, cpu, log, env=None):
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        out = open(log, "ab")
        p = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        out.close()
        p.bench_name = name
        self.live.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            except ProcessLookupError:
                pass
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in list(self.live):
            try:
                self.stop(p)
            except Exception as e:  # cleanup must go on for the others
                print(f"bench: could not stop {p.bench_name}: {e}", file=sys.stderr)


def process_tree(pid):
    """The pid and its children (nginx's master and worker)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total


def memory_kib(pids):
    rss = hwm = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
    return rss, hwm


def get(port, host=HOST, path=PATH, timeout=1.0, cookie=None):
    headers = {"Host": host} | ({"Cookie": cookie} if cookie else {})
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return None, b""


def wait_ready(port, proc, name, deadline_s=20.0, cookie=None, status_ok=200):
    """Until a proxied request answers 200 with the upstream's exact body (or, with another
    `status_ok`, until it answers that status)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunError(f"{name} exited with {proc.returncode} while starting")
        status, body = get(port, cookie=cookie)
        if status == status_ok and (status != 200 or body == BODY.encode()):
            return
        time.sleep(0.1)
    raise RunError(f"{name} did not answer {status_ok} within {deadline_s} s")


# ---- private previews -----------------------------------------------------------------------


class PrivateKeys:
    """What a run with private previews needs once: a signing key pair made by the router's own
    `keys` subcommand (the public half in a JWKS file) and a grant secret."""

    def __init__(self, binary, tmp):
        import secrets

        made = subprocess.run(
            [binary, "keys", "--kid", "bench"], capture_output=True, text=True, timeout=10
        )
        if made.returncode != 0:
            raise RunError(f"session-router keys failed: {made.stderr}")
        key = json.loads(made.stdout)
        self.private_key = key["private_key"]
        self.jwks = tmp / "bench-jwks.json"
        self.jwks.write_text(json.dumps({"keys": [key["jwk"]]}))
        self.grant_secret = secrets.token_hex(32)

    def token(self, binary):
        """A preview-link token for the demo session, minted as the editing app does."""
        env = dict(os.environ, SESSION_ROUTER_SIGNING_KEY=self.private_key)
        made = subprocess.run(
            [binary, "token", "--client", "demo", "--thread", "hello", "--kid", "bench"],
            capture_output=True, text=True, timeout=10, env=env,
        )
        if made.returncode != 0:
            raise RunError(f"session-router token failed: {made.stderr}")
        return made.stdout.strip()


def exchange_token(port, token):
    """Opens the preview link once, as a browser does, and returns the grant cookie
    (`name=value`) of the router's 303."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"{PATH}?sr_token={token}", headers={"Host": HOST})
        r = conn.getresponse()
        r.read()
        cookies = r.headers.get_all("Set-Cookie") or []
    finally:
        conn.close()
    grants = [c.split(";", 1)[0] for c in cookies if c.startswith("sr_grant_hello=")]
    if r.status != 303 or not grants:
        raise RunError(f"link exchange answered {r.status}, Set-Cookie {cookies}")
    return grants[0]


def access_toml(spec, keys):
    if spec.access != "private":
        return '[access]\ndefault = "public"\n'
    return (
        f'[access]\ndefault = "public"\njwks_path = "{keys.jwks}"\n'
        f'grant_secret = "{keys.grant_secret}"\n'
    )


def demo_session(upstream, access=None):
    """The session under load, private when `access` says so."""
    text = SESSIONS_TOML.format(upstream=upstream)
    if access:
        text = text.replace('client_id = "demo"\n', f'client_id = "demo"\naccess = "{access}"\n')
    return text


# ---- configurations -------------------------------------------------------------------------


def nginx_http_common(tmp, prefix):
    """What both nginx configs set in `http`: temp dirs of their own, and connections kept open."""
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    lines = [f"{kind}_temp_path {tmp}/{prefix}-{kind};" for kind in kinds]
    lines += ["keepalive_timeout 75s;", "keepalive_requests 10000000;"]
    return "\n    ".join(lines)


def upstream_conf(tmp, port):
    return f"""
worker_processes 1;
daemon off;
pid {tmp}/upstream.pid;
error_log {tmp}/upstream.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {nginx_http_common(tmp, "up")}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "{BODY.strip()}\\n";
        }}
        # Requests served so far: profiling counts the proxied requests of a window with it.
        location = /__bench_status {{
            stub_status;
        }}
    }}
}}
"""


def nginx_proxy_conf(tmp, port, upstream, access_log):
    log = (
        f"access_log {tmp}/nginx-proxy.access.log combined buffer=64k flush=1s;"
        if access_log
        else "access_log off;"
    )
    # The same URL scheme as the router: client from the host, thread from the path, a lookup of
    # "{client}-{thread}" in a table, prefix stripped, X-Forwarded-* set, pooled upstream.
    return f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx-proxy.pid;
error_log {tmp}/nginx-proxy.error.log warn;
events {{ worker_connections 4096; }}
http {{
    {log}
    {nginx_http_common(tmp, "px")}
    map $host $sr_client {{
        "~^edit\\.(?<c>[A-Za-z0-9_-]{{1,63}})\\.localhost$" $c;
        default "";
    }}
    map "$sr_client-$sr_thread" $sr_backend {{
        "demo-hello" session_demo_hello;
        default "";
    }}
    upstream session_demo_hello {{
        server 127.0.0.1:{upstream};
        keepalive 128;
        keepalive_requests 10000000;
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location ~ "^/session/(?<sr_thread>[A-Za-z0-9_-]{{1,128}})(?<sr_rest>/.*)$" {{
            if ($sr_backend = "") {{ return 404; }}
            proxy_pass http://$sr_backend$sr_rest$is_args$args;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Prefix /session/$sr_thread;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
        }}
        location / {{ return 404; }}
    }}
}}
"""


def haproxy_conf(tmp, port, upstream, access_log):
    log = "log stdout format raw local0\n    option httplog" if access_log else ""
    return f"""
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    {log}
    timeout connect 2s
    timeout client 75s
    timeout server 60s
    timeout http-keep-alive 75s
frontend preview
    bind 127.0.0.1:{port}
    http-request return status 404 unless {{ req.hdr(host),field(1,:) -m reg -i ^edit\\.[a-z0-9_-]{{1,63}}\\.localhost$ }}
    http-request set-var(txn.client) req.hdr(host),field(1,:),field(2,.),lower
    http-request set-var(txn.thread) path,field(3,/) if {{ path_beg /session/ }}
    http-request return status 404 unless {{ var(txn.thread) -m reg ^[A-Za-z0-9_-]{{1,128}}$ }}
    http-request set-var(txn.key) var(txn.client),concat(-,txn.thread)
    http-request set-header X-Forwarded-Prefix /session/%[var(txn.thread)]
    http-request replace-path ^/session/[^/]+(/.*)$ \\1
    http-request set-header X-Forwarded-For %[src]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    use_backend %[var(txn.key),map({tmp}/haproxy-sessions.map)]
    default_backend no_session
backend session_demo_hello
    http-reuse always
    server container 127.0.0.1:{upstream}
backend no_session
    http-request return status 404
"""


def router_toml(tmp, port, admin, upstream, refresh="5s", access='[access]\ndefault = "public"\n'):
    return f"""
[listen]
proxy = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin}"

[routing]
path_hosts = ["edit.{{client}}.localhost"]

{access}
[store]
kind = "file"
refresh_interval = "{refresh}"

[store.file]
path = "{tmp}/sessions.toml"

[upstream]
allowed_cidrs = ["127.0.0.0/8"]
"""


def more_sessions(n, net=10):
    """`n` sessions beyond the one under load, each on its own container, as the platform has them;
    the containers' addresses are in `net`.0.0.0/8."""
    lines = []
    for i in range(n):
        lines.append(
            f'[sessions."client{i % 1000}-thread{i:07}"]\ncontainer_id = "c{i:07}"\n'
            f'client_id = "client{i % 1000}"\n[containers."c{i:07}"]\n'
            f'ip = "{net}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"\nport = 4321\n'
        )
    return "".join(lines)


class TableSwapper:
    """Rewrites the router's table file every `every` seconds with the next of `versions` (texts)
    until stopped, so that every rewrite is a full table of changed records; counts the rewrites.

    Writing the file stands in for the platform updating its store, which in production happens
    on other machines: the texts are encoded up front, and the writing thread runs on the load's
    core (`cpu`) in the idle scheduling class, so that neither its CPU time nor the 14 MB it
    streams through the proxy core's caches shows up as the proxies' latency."""

    def __init__(self, path, versions, every, cpu=None):
        import threading

        self.path, self.every, self.cpu = path, every, cpu
        self.versions = [v.encode() for v in versions]
        self.stop_flag = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})  # this thread only
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        while not self.stop_flag.wait(self.every):
            tmp = self.path.with_suffix(".swap")
            version = memoryview(self.versions[self.count % len(self.versions)])
            with open(tmp, "wb") as f:
                # In small writes, offering the core back after each: the kernel does not preempt a
                # long write, and a saturated proxy thread never sleeps, so it would not take the
                # core back from an idle-class thread before the next scheduler tick.
                for at in range(0, len(version), 256 * 1024):
                    f.write(version[at : at + 256 * 1024])
                    os.sched_yield()
            tmp.replace(self.path)
            self.count += 1

    def stop(self):
        self.stop_flag.set()
        self.thread.join()
        return self.count


SESSIONS_TOML = """
[sessions."demo-hello"]
container_id = "demo-container"
client_id = "demo"

[containers."demo-container"]
ip = "127.0.0.1"
port = {upstream}
status = "running"
"""


def pingora_yaml(tmp, name, extra):
    lines = [
        "---",
        "version: 1",
        "threads: 1",
        f"pid_file: {tmp}/{name}.pid",
        f"upgrade_sock: {tmp}/{name}-upgrade.sock",
        "grace_period_seconds: 0",
        "graceful_shutdown_timeout_seconds: 0",
    ]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


# ---- proxies --------------------------------------------------------------------------------


class Spec:
    """`kind[@name][,key=value...]`: keys `bin=PATH`, `yaml.KEY=VALUE` (Pingora YAML), `env.KEY=VALUE`;
    for the router also `sessions=N` (that many more sessions in its table), `swap=SECONDS`
    (the table file rewritten that often while measuring, every container moved each time, so the
    router reloads and corrects every record), `same=1` with `swap` (the file rewritten unchanged:
    a reconcile that finds the table current, as one after the streams kept it so) and
    `access=private` (the session under load is private: the router gets a JWKS and a grant
    secret, a preview link is exchanged once per start, and wrk sends the grant cookie);
    `cpus=LIST` pins this proxy to those cores instead of the proxy core."""

    def __init__(self, text):
        head, *opts = text.split(",")
        self.kind, _, name = head.partition("@")
        self.name = name or self.kind
        if self.kind not in ("direct", "router", "bare", "nginx", "haproxy"):
            raise RunError(f"unknown proxy kind {self.kind!r} in {text!r}")
        self.bin = None
        self.yaml = {}
        self.env = {}
        self.sessions = 0
        self.swap = None
        self.same = False
        self.table_versions = None
        self.cpus = None
        self.access = None
        # The grant cookie (`name=value`) of the running router, when private.
        self.cookie = None
        for opt in opts:
            key, _, value = opt.partition("=")
            if key == "bin":
                self.bin = value
            elif key.startswith("yaml."):
                self.yaml[key[5:]] = value
            elif key.startswith("env."):
                self.env[key[4:]] = value
            elif key == "sessions":
                self.sessions = int(value)
            elif key == "swap":
                self.swap = float(value)
            elif key == "same":
                self.same = value == "1"
            elif key == "cpus":
                self.cpus = value
            elif key == "access" and self.kind == "router" and value in ("private", "public"):
                self.access = value
            else:
                raise RunError(f"unknown option {key!r} in {text!r}")


def start_proxy(spec, args, procs, tmp, upstream_port, wrap=(), ready_s=20.0):
    """Starts one proxy (under `wrap`, e.g. valgrind); returns (process or None, port, pid)."""
    if spec.kind == "direct":
        return None, upstream_port, None
    port = free_port()
    log = tmp / f"{spec.name}.log"
    cpu = spec.cpus or args.proxy_cpu
    if spec.kind == "nginx":
        conf = tmp / "nginx-proxy.conf"
        conf.write_text(nginx_proxy_conf(tmp, port, upstream_port, args.access_log == "on"))
        argv = ["nginx", "-c", str(conf), "-p", str(tmp)]
        if wrap:
            # Under valgrind: one process, so the work is not in an unprivileged forked worker.
            argv += ["-g", "master_process off;"]
        p = procs.start(spec.name, [*wrap, *argv], cpu, log)
    elif spec.kind == "haproxy":
        (tmp / "haproxy-sessions.map").write_text("demo-hello session_demo_hello\n")
        conf = tmp / "haproxy.cfg"
        conf.write_text(haproxy_conf(tmp, port, upstream_port, args.access_log == "on"))
        argv = ["haproxy", "-db", "-f", str(conf)]
        p = procs.start(spec.name, [*wrap, *argv], cpu, log)
    else:
        yaml = tmp / f"{spec.name}.yaml"
        yaml.write_text(pingora_yaml(tmp, spec.name, spec.yaml))
        env = dict(os.environ)
        if spec.kind == "router":
            binary = spec.bin or str(ROOT / "target/release/session-router")
            if spec.access == "private" and getattr(args, "private_keys", None) is None:
                args.private_keys = PrivateKeys(binary, tmp)
            keys = getattr(args, "private_keys", None)
            demo = demo_session(upstream_port, spec.access)
            sessions = demo + more_sessions(spec.sessions)
            (tmp / "sessions.toml").write_text(sessions)
            if spec.swap and spec.same:
                spec.table_versions = [sessions]
            elif spec.swap:
                # Every other container's address changes on each swap; the demo session stays.
                spec.table_versions = [demo + more_sessions(spec.sessions, net=11), sessions]
            toml = tmp / f"{spec.name}.toml"
            spec.admin = free_port()
            refresh = "500ms" if spec.swap else "5s"
            toml.write_text(
                router_toml(tmp, port, spec.admin, upstream_port, refresh, access_toml(spec, keys))
            )
            argv = [binary, "--config", str(toml), "-c", str(yaml)]
            env["RUST_LOG"] = "info" if args.access_log == "on" else "info,access=off"
        else:
            binary = spec.bin or str(ROOT / "target/release/examples/bare_proxy")
            argv = [binary, "-c", str(yaml)]
            env["BARE_LISTEN"] = f"127.0.0.1:{port}"
            env["BARE_UPSTREAM"] = f"127.0.0.1:{upstream_port}"
            env["RUST_LOG"] = "warn"
        env.update(spec.env)
        p = procs.start(spec.name, [*wrap, *argv], cpu, log, env=env)
    if spec.access == "private":
        # Refused without a grant; let in with the one a preview link is exchanged for.
        wait_ready(port, p, spec.name, ready_s, status_ok=401)
        spec.cookie = exchange_token(port, args.private_keys.token(binary))
    wait_ready(port, p, spec.name, ready_s, cookie=spec.cookie)
    return p, port, p.pid


def table_loads(tmp, spec):
    """Tables the router has loaded and swapped in so far, from its log."""
    try:
        return (tmp / f"{spec.name}.log").read_text().count("route table loaded")
    except OSError:
        return 0


def router_counters(spec):
    """The router's store call count and requests let in on a grant so far, from its own
    counters (admin /metrics); (None, None) for other proxies."""
    if spec.kind != "router":
        return None, None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{spec.admin}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None, None
    lines = text.splitlines()
    calls = sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("session_router_store_requests_total{")
        and 'op="load_all"' not in line
    )
    grants = sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith('session_router_access_total{result="grant"}')
    )
    return calls, grants


def store_calls(spec):
    """The router's store call count so far, from its own counters (admin /metrics)."""
    return router_counters(spec)[0]


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out):
    def latency(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RunError(f"no {pct}% latency in wrk output:\n{out}")
        return float(m.group(1)) * UNITS[m.group(2)]

    m = re.search(r"^\s+(\d+) requests in", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not m or not rps:
        raise RunError(f"unreadable wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": int(m.group(1)),
        "rps": float(rps.group(1)),
        "p50_ms": latency(50),
        "p99_ms": latency(99),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def pacing(args):
    """wrk's script hook for a pause before each request, so the proxy runs below saturation."""
    if not args.pace_ms:
        return []
    script = Path(args.out) / f"pace-{args.pace_ms}ms.lua"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"-- Pause before each request of a connection.\nfunction delay()\n  return {args.pace_ms}\nend\n")
    return ["-s", str(script)]


def wrk(args, port, seconds, latency, cookie=None):
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "2s"]
    if latency:
        argv.append("--latency")
    argv += wrk_headers(args, cookie) + pacing(args) + [f"http://127.0.0.1:{port}{PATH}"]
    if args.load_cpu is not None:
        argv = ["taskset", "-c", str(args.load_cpu)] + argv
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 15)
    if done.returncode != 0:
        raise RunError(f"wrk failed ({done.returncode}): {done.stderr}")
    return done.stdout


def start_upstream(procs, tmp, cpu):
    """The nginx every proxy forwards to; its port is kept on the process as `pid_port`."""
    port = free_port()
    (tmp / "upstream.conf").write_text(upstream_conf(tmp, port))
    argv = ["nginx", "-c", str(tmp / "upstream.conf"), "-p", str(tmp)]
    upstream = procs.start("upstream", argv, cpu, tmp / "upstream.log")
    upstream.pid_port = port
    wait_ready(port, upstream, "upstream")
    return upstream


def upstream_requests(upstream):
    """Requests the upstream has served (nginx stub_status), this query included."""
    with urllib.request.urlopen(
        f"http://127.0.0.1:{upstream.pid_port}/__bench_status", timeout=2
    ) as r:
        text = r.read().decode()
    m = re.search(r"^\s*\d+\s+\d+\s+(\d+)\s*$", text, re.M)
    if not m:
        raise RunError(f"unreadable stub_status: {text}")
    return int(m.group(1))


def measure(spec, args, procs, tmp, upstream):
    proc, port, pid = start_proxy(spec, args, procs, tmp, upstream.pid_port)
    try:
        wrk(args, port, args.warmup, latency=False, cookie=spec.cookie)
        pids = process_tree(pid) if pid else []
        up_pids = process_tree(upstream.pid)
        before = cpu_ticks(pids), cpu_ticks(up_pids), router_counters(spec)
        swapper = (
            TableSwapper(tmp / "sessions.toml", spec.table_versions, spec.swap, args.load_cpu)
            if spec.swap
            else None
        )
        loads_before = table_loads(tmp, spec)
        out = wrk(args, port, args.duration, latency=True, cookie=spec.cookie)
        if swapper:
            swapper.stop()
        swaps = table_loads(tmp, spec) - loads_before if swapper else None
        after = cpu_ticks(pids), cpu_ticks(up_pids), router_counters(spec)
        rss, hwm = memory_kib(pids) if pids else memory_kib(up_pids)
        result = parse_wrk(out)
        if result["non_2xx"] or result["socket_errors"]:
            raise RunError(
                f"{spec.name}: {result['non_2xx']} non-2xx responses, socket errors "
                f"{result['socket_errors'] or 'none'}\n{out}"
            )
        us_per_tick = 1e6 / CLK_TCK
        n = result["requests"]
        grants = None if before[2][1] is None else after[2][1] - before[2][1]
        if spec.access == "private" and not (grants is not None and grants >= n):
            raise RunError(
                f"{spec.name}: {grants} requests let in on a grant, wrk completed {n}\n{out}"
            )
        proxy_ticks = (after[0] - before[0]) if pids else (after[1] - before[1])
        result.update(
            {
                "proxy": spec.name,
                "cpu_us_per_req": proxy_ticks * us_per_tick / n,
                "upstream_cpu_us_per_req": (after[1] - before[1]) * us_per_tick / n,
                "rss_kib": rss,
                "hwm_kib": hwm,
                "store_calls": None if before[2][0] is None else after[2][0] - before[2][0],
                "access_grants": grants,
                "table_swaps": swaps,
            }
        )
        return result
    finally:
        if proc is not None:
            procs.stop(proc)


class EchoUpstream:
    """A one-thread HTTP/1.1 server that answers the bench body and remembers each request head."""

    def __init__(self):
        import http.server
        import threading

        heads = self.heads = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                heads.append((self.requestline, sorted(self.headers.items())))
                body = BODY.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.pid_port = self.server.server_address[1]
        self.pid = os.getpid()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def check_forwarding(specs, args, procs, tmp):
    """Sends one request through each proxy to an echo upstream and prints what arrived, so the
    configurations can be seen doing the same work."""
    echo = EchoUpstream()
    try:
        for spec in specs:
            if spec.kind == "direct":
                continue
            proc, port, _ = start_proxy(spec, args, procs, tmp, echo.pid_port)
            try:
                echo.heads.clear()
                get(port, path=PATH + "?q=1", cookie=spec.cookie)
                for line, headers in echo.heads[-1:]:
                    print(f"{spec.name}: {line}")
                    for k, v in headers:
                        print(f"    {k}: {v}")
            finally:
                procs.stop(proc)
    finally:
        echo.close()


# ---- report ---------------------------------------------------------------------------------


def summarize(rows, names, baseline):
    """Per proxy: the median of each figure, and of its same-round ratio to the baseline."""
    by_round = {}
    for r in rows:
        by_round.setdefault(r["round"], {})[r["proxy"]] = r
    summary = {}
    for name in names:
        mine = [r for r in rows if r["proxy"] == name]
        entry = {}
        for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "hwm_kib"):
            values = [r[key] for r in mine]
            ratios = [
                rnd[name][key] / rnd[baseline][key]
                for rnd in by_round.values()
                if name in rnd and baseline in rnd and rnd[baseline][key]
            ]
            entry[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "ratio": statistics.median(ratios) if ratios else None,
                "ratio_min": min(ratios) if ratios else None,
                "ratio_max": max(ratios) if ratios else None,
            }
        calls = [r["store_calls"] for r in mine if r["store_calls"] is not None]
        entry["store_calls"] = sum(calls) if calls else None
        swaps = [r["table_swaps"] for r in mine if r.get("table_swaps") is not None]
        entry["table_swaps"] = sum(swaps) if swaps else None
        if any(r.get("access_grants") for r in mine):
            entry["access_grants"] = sum(r["access_grants"] for r in mine)
            entry["requests"] = sum(r["requests"] for r in mine)
        summary[name] = entry
    return summary


def print_table(summary, baseline, args):
    cols = [
        ("req/s", "rps", "{:,.0f}"),
        ("p50 ms", "p50_ms", "{:.3f}"),
        ("p99 ms", "p99_ms", "{:.3f}"),
        ("CPU µs/req", "cpu_us_per_req", "{:.2f}"),
        ("peak RSS MiB", "hwm_kib", "{:.1f}"),
    ]
    print()
    print(
        f"{args.connections} connections, 1 wrk thread, {args.duration} s per run after {args.warmup} s "
        f"warm-up, {args.rounds} round(s), access logs {args.access_log}, "
        f"{args.headers} request headers, "
        f"{f'{args.pace_ms} ms pause before each request' if args.pace_ms else 'no pause between requests'}; "
        f"medians, (×{baseline}: median ratio [min–max] of same-round ratios)"
    )
    header = f"{'proxy':<16}" + "".join(f"{c[0]:>30}" for c in cols)
    print(header)
    print("-" * len(header))
    for name, e in summary.items():
        cells = []
        for _, key, fmt in cols:
            v = e[key]["median"]
            if key == "hwm_kib":
                v /= 1024
            cell = fmt.format(v)
            if e[key]["ratio"] is not None:
                cell += f" (×{e[key]['ratio']:.2f} [{e[key]['ratio_min']:.2f}–{e[key]['ratio_max']:.2f}])"
            cells.append(f"{cell:>30}")
        print(f"{name:<16}" + "".join(cells))
    for name, e in summary.items():
        if e["store_calls"] is not None:
            print(f"{name}: store calls during measured runs: {e['store_calls']:.0f}")
        if e["table_swaps"] is not None:
            print(f"{name}: tables loaded and swapped in during measured runs: {e['table_swaps']}")
        if e.get("access_grants") is not None:
            print(
                f"{name}: requests let in on a grant (access_total{{result=\"grant\"}}) during "
                f"measured runs: {e['access_grants']:.0f}, wrk completed {e['requests']}"
            )
    print("direct: CPU and memory are the upstream's own (wrk talks to it with no proxy).")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--proxy", action="append", help=Spec.__doc__ + f" (default: {DEFAULT_PROXIES})")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6, help="measured seconds per run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--access-log", choices=["off", "on"], default="off")
    ap.add_argument(
        "--headers",
        choices=["minimal", "browser"],
        default="minimal",
        help="request headers: Host only (wrk's default), or a browser's dozen",
    )
    ap.add_argument(
        "--pace-ms",
        type=int,
        default=0,
        help="pause this long before each request on a connection: load below saturation, "
        "where p99 shows queueing behind background work instead of lost throughput",
    )
    ap.add_argument("--baseline", default="nginx")
    ap.add_argument("--out", default=str(ROOT / "target/bench"))
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    ap.add_argument(
        "--check-forwarding",
        action="store_true",
        help="print the request each proxy forwards (to an echo upstream) and exit",
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin the proxy and load to cores")
    args = ap.parse_args()

    specs = [Spec(s) for s in (args.proxy or DEFAULT_PROXIES)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RunError("proxy names must be unique; name variants with kind@name")
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            raise RunError(f"{tool} not found (bench/run.sh installs it)")
    # Two cores: the proxy alone on core 0; wrk and the upstream share core 1.
    pin = not args.no_pin and os.cpu_count() >= 2
    args.proxy_cpu = 0 if pin else None
    args.load_cpu = 1 if pin else None

    procs = Procs()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # In memory where there is a tmpfs: table rewrites then cost no journal or disk work.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = Path(tempfile.mkdtemp(prefix="sr-bench-", dir=shm))
    rows = []
    try:
        if args.check_forwarding:
            check_forwarding(specs, args, procs, tmp)
            return 0
        upstream = start_upstream(procs, tmp, args.load_cpu)
        for rnd in range(args.rounds):
            order = specs[rnd % len(specs) :] + specs[: rnd % len(specs)]
            for spec in order:
                r = measure(spec, args, procs, tmp, upstream)
                r["round"] = rnd
                rows.append(r)
                print(
                    f"round {rnd + 1}/{args.rounds} {spec.name:<14} {r['rps']:>10,.0f} req/s  "
                    f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                    f"{r['cpu_us_per_req']:.2f} µs/req  upstream {r['upstream_cpu_us_per_req']:.2f} µs/req",
                    flush=True,
                )
    except RunError as e:
        print(f"bench: FAILED: {e}\n(logs in {tmp})", file=sys.stderr)
        procs.stop_all()
        return 1
    finally:
        procs.stop_all()

    baseline = args.baseline if args.baseline in names else names[0]
    summary = summarize(rows, names, baseline)
    print_table(summary, baseline, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (out / f"load{tag}.csv", out / f"load{tag}-{stamp}.csv"):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
    # The signing key of a private run stays out of the results.
    meta = {k: v for k, v in vars(args).items() if k != "private_keys"}
    for path in (out / f"load{tag}.json", out / f"load{tag}-{stamp}.json"):
        path.write_text(json.dumps({"settings": meta, "summary": summary, "rows": rows}, indent=1))
    print(f"raw data: {out / f'load{tag}.csv'}, summary: {out / f'load{tag}.json'}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RunError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
