#!/usr/bin/env python3
# bench/flood.py: hostile clients against each proxy, behind `make bench-flood`.
"""Resident memory and other clients' latency while hostile clients hold connections open.

For each proxy in turn (the router on its own path, the router with every request on Pingora's
proxy, nginx; all with their default limits), three phases of `--seconds` each, with wrk
measuring an honest client's p99 throughout:
  quiet      no hostile clients;
  big-heads  `--big` connections, each sending a request head with one header of 1 MB and never
             finishing it; a connection the proxy closes is opened again (at most `--big` open);
  slowloris  `--slow` connections, each sending its head one byte a second, reopened likewise.
It records the proxy's peak resident size during each phase and its resident size a few seconds
after the hostile connections are closed. Hostile connections come from `--sources` loopback
addresses (127.0.1.x), so that a per-address limit does not hide how the proxy holds many.

Everything binds 127.0.0.1 (or 127.0.1.x as a source), and every loop is bounded in time.
"""

import argparse
import json
import os
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (the shared process, port and wrk helpers)

HEAD = f"GET {load.PATH} HTTP/1.1\r\nHost: {load.HOST}\r\nX-Fill: ".encode()
MB = 1 << 20


class Flood:
    """Hostile connections kept open on a thread of their own until stopped."""

    def __init__(self, port, count, sources, per_second, deadline):
        self.port, self.count, self.sources = port, count, sources
        # Bytes each connection sends per second after its head's first line; None: as fast as
        # the proxy takes them, up to 1 MB.
        self.per_second = per_second
        self.deadline = deadline
        self.opened = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def connect(self, sel, i, at=0.0):
        s = socket.socket()
        s.setblocking(False)
        s.bind((f"127.0.1.{1 + i % self.sources}", 0))
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        self.opened += 1
        sel.register(s, selectors.EVENT_WRITE, {"sent": 0, "i": i, "next": at})

    def reopen(self, sel, s, state):
        """A closed slot is opened again a second later, so that the flood stays at `count`
        connections without becoming a connection-rate test."""
        sel.unregister(s)
        s.close()
        self.pending.append((time.monotonic() + 1.0, state["i"]))

    def step(self, sel, key, mask, filler):
        s, state = key.fileobj, key.data
        if mask & selectors.EVENT_READ:
            try:
                if not s.recv(4096):
                    self.reopen(sel, s, state)
            except BlockingIOError:
                pass
            except OSError:
                self.reopen(sel, s, state)
            return
        now = time.monotonic()
        if now < state["next"]:
            return
        if state["sent"] == 0:
            data = HEAD
        elif self.per_second is None:
            data = filler[: max(0, min(len(filler), MB - state["sent"]))]
        else:
            data = b"a" * self.per_second
            state["next"] = now + 1.0
        if not data:
            # 1 MB sent and still open: only watch for the close from now on.
            sel.modify(s, selectors.EVENT_READ, state)
            return
        try:
            state["sent"] += s.send(data)
        except BlockingIOError:
            pass
        except OSError:
            self.reopen(sel, s, state)

    def run(self):
        # The load core is wrk's first: a hostile client that starves wrk would measure itself.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        sel = selectors.DefaultSelector()
        filler = b"a" * 65536
        self.pending = []
        for i in range(self.count):
            self.connect(sel, i)
        while not self.stop_flag.is_set() and time.monotonic() < self.deadline:
            now = time.monotonic()
            due = [i for at, i in self.pending if at <= now]
            self.pending = [(at, i) for at, i in self.pending if at > now]
            for i in due:
                self.connect(sel, i)
            for key, mask in sel.select(timeout=0.1):
                self.step(sel, key, mask, filler)
            # Slow senders have nothing to send most of the time: do not spin on writability.
            time.sleep(0.001 if self.per_second is None else 0.05)
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()

    def stop(self):
        self.stop_flag.set()
        self.thread.join()
        return self.opened


class Sampler:
    """Peak resident size of a process tree, sampled every 100 ms on a thread."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_flag.wait(0.1):
            rss, _ = load.memory_kib(load.process_tree(self.pid))
            self.peak = max(self.peak, rss)

    def stop(self):
        self.stop_flag.set()
        self.thread.join()
        return self.peak


def router_conf(tmp, name, port, admin, upstream, fast_path):
    (tmp / "sessions.toml").write_text(load.SESSIONS_TOML.format(upstream=upstream))
    return f"""
[listen]
proxy = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin}"
fast_path = {str(fast_path).lower()}

[routing]
path_hosts = ["edit.{{client}}.localhost"]

[access]
default = "public"

[store]
kind = "file"

[store.file]
path = "{tmp}/sessions.toml"

[upstream]
allowed_cidrs = ["127.0.0.0/8"]
"""


def start(kind, args, procs, tmp, upstream):
    port = load.free_port()
    log = tmp / f"{kind}.log"
    if kind == "nginx":
        conf = tmp / "nginx-proxy.conf"
        conf.write_text(load.nginx_proxy_conf(tmp, port, upstream, False))
        p = procs.start(kind, ["nginx", "-c", str(conf), "-p", str(tmp)], args.proxy_cpu, log)
    else:
        conf = tmp / f"{kind}.toml"
        fast = kind == "router"
        conf.write_text(router_conf(tmp, kind, port, load.free_port(), upstream, fast))
        yaml = tmp / f"{kind}.yaml"
        yaml.write_text(load.pingora_yaml(tmp, kind, {}))
        binary = str(load.ROOT / "target/release/session-router")
        argv = [binary, "--config", str(conf), "-c", str(yaml)]
        env = {"RUST_LOG": "warn", "PATH": "/usr/bin:/bin"}
        p = procs.start(kind, argv, args.proxy_cpu, log, env=env)
    load.wait_ready(port, p, kind)
    return p, port


def phase(name, args, p, port):
    """One phase: hostile clients (or none) for `--seconds` with wrk alongside."""
    sampler = Sampler(p.pid)
    flood = None
    deadline = time.monotonic() + args.seconds + 5
    if name == "big-heads":
        flood = Flood(port, args.big, args.sources, None, deadline)
    elif name == "slowloris":
        flood = Flood(port, args.slow, args.sources, 1, deadline)
    time.sleep(1 if flood else 0)
    out = load.wrk(args, port, args.seconds, latency=True)
    opened = flood.stop() if flood else 0
    peak = sampler.stop()
    time.sleep(args.settle)
    after, _ = load.memory_kib(load.process_tree(p.pid))
    result = load.parse_wrk(out)
    return {
        "phase": name,
        "p99_ms": result["p99_ms"],
        "rps": result["rps"],
        "non_2xx": result["non_2xx"],
        "peak_rss_kib": peak,
        "rss_after_kib": after,
        "hostile_connections_opened": opened,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--proxy", action="append", choices=["router", "router-pingora", "nginx"])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big", type=int, default=1000)
    ap.add_argument("--slow", type=int, default=200)
    ap.add_argument("--sources", type=int, default=10)
    ap.add_argument("--settle", type=float, default=6.0)
    ap.add_argument("--connections", type=int, default=8, help="wrk's honest connections")
    ap.add_argument("--out", default=str(load.ROOT / "target/bench"))
    args = ap.parse_args()
    args.headers, args.pace_ms = "plain", 0
    args.proxy_cpu, args.load_cpu = 0, 1
    # The hostile clients run beside wrk and the upstream, never on the proxy's core.
    os.sched_setaffinity(0, {args.load_cpu})
    proxies = args.proxy or ["router", "router-pingora", "nginx"]
    procs = load.Procs()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="sr-flood-") as tmp:
            tmp = Path(tmp)
            upstream = load.start_upstream(procs, tmp, args.load_cpu)
            for kind in proxies:
                p, port = start(kind, args, procs, tmp, upstream.pid_port)
                for round_ in range(args.rounds):
                    for name in ["quiet", "big-heads", "slowloris"]:
                        row = {"proxy": kind, "round": round_, **phase(name, args, p, port)}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                procs.stop(p)
    finally:
        procs.stop_all()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "flood.json").write_text(json.dumps(rows, indent=1))
    print_table(rows)


def print_table(rows):
    """Per proxy and phase: the median of same-round p99 ratios to quiet (min-max), the highest
    peak resident size, and the resident size after the last round's hostile clients left."""
    quiet = {(r["proxy"], r["round"]): r["p99_ms"] for r in rows if r["phase"] == "quiet"}
    print(f"\n{'proxy':<16}{'phase':<11}{'p99 ms':>8}{'x quiet (min-max)':>20}{'peak MiB':>10}"
          f"{'after MiB':>10}{'non-2xx':>8}")
    keys = dict.fromkeys((r["proxy"], r["phase"]) for r in rows)
    for proxy, name in keys:
        mine = [r for r in rows if (r["proxy"], r["phase"]) == (proxy, name)]
        ratios = sorted(r["p99_ms"] / quiet[(proxy, r["round"])] for r in mine)
        p99 = statistics.median(r["p99_ms"] for r in mine)
        spread = f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"
        print(f"{proxy:<16}{name:<11}{p99:>8.2f}{spread:>20}"
              f"{max(r['peak_rss_kib'] for r in mine) / 1024:>10.1f}"
              f"{mine[-1]['rss_after_kib'] / 1024:>10.1f}{sum(r['non_2xx'] for r in mine):>8}")


if __name__ == "__main__":
    main()
