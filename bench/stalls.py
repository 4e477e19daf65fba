#!/usr/bin/env python3
# bench/stalls.py: how long the router's background work holds the proxy thread off its core.
"""Saturates a router whose 100k-session table is rewritten every 2 s, records the scheduler on
the proxy's core with `perf sched record`, and reports every time the proxy thread was
preempted while it still had work (switched out runnable) and a background thread of the router
had the core until it came back: how often, for how long in all, on average and at most.

While the proxy thread is off its core, every request in flight waits, so the length of these
stalls is what a table load adds to request latency at saturation; p99 figures from wrk move
by more than that between rounds on a shared machine. Loads are forced through with
`max_staleness = 6s` (a load waits at most 3 s for idle CPU, then runs at nice 19), so that one
is running for most of the window (`--max-staleness ''` measures the default instead, where loads
run in the idle class and finish in the moments the proxy waits on the network).

Needs `perf` (with permission to trace the scheduler) and wrk. Each binary gets its own router,
upstream and window, in turn; every process is stopped at the end.

Example: bench/stalls.py target/release/session-router /tmp/session-router-before
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402

PROXY_THREAD = "session proxy"
# Threads of the router that do background work; anything else (kernel threads, the timer
# thread) is reported separately.
BACKGROUND = re.compile(r"^(table |dynamodb |BG )")
LINE = re.compile(r"^\s*[\d.]+\s+\[\d+\]\s+(?P<task>.+?)\[\d+(?:/\d+)?\]\s+(?P<wait>[\d.]+)\s+"
                  r"(?P<delay>[\d.]+)\s+(?P<run>[\d.]+)\s+(?P<state>\S+)\s*$")


def stalls(perf_data):
    """(stalls by background threads, stalls by anything else) from a recording: each a list of
    (ms, the thread held responsible).

    `perf sched timehist` prints one line per switch-out: the task, how long it waited before
    this run, and how long the run was. A stall starts where the proxy thread is switched out
    runnable (state R) and lasts its next line's wait; it is put down to whichever task ran
    longest in between."""
    out = subprocess.run(["perf", "sched", "timehist", "-i", str(perf_data), "--state"],
                         capture_output=True, text=True, check=True).stdout
    background, other = [], []
    preempted, ran = False, {}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        task = m["task"]
        if task == PROXY_THREAD:
            if preempted and ran:
                culprit = max(ran, key=ran.get)
                stall = (float(m["wait"]), culprit)
                (background if BACKGROUND.match(culprit) else other).append(stall)
            preempted, ran = m["state"] == "R", {}
        elif preempted:
            ran[task] = ran.get(task, 0.0) + float(m["run"])
    return background, other


def describe(label, stalls):
    if not stalls:
        return f"{label}: none"
    stalls = sorted(stalls)
    ms = [stall for stall, _ in stalls]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    longest, by = stalls[-1]
    return (f"{label}: {len(ms)} stalls, {sum(ms):.1f} ms in all, mean {sum(ms) / len(ms) * 1000:.0f} µs, "
            f"p99 {p99 * 1000:.0f} µs, max {longest * 1000:.0f} µs ({by})")


def run_one(binary, args, tmp):
    procs = load.Procs()
    try:
        upstream = load.start_upstream(procs, tmp, args.load_cpu)
        port, admin = load.free_port(), load.free_port()
        demo = load.SESSIONS_TOML.format(upstream=upstream.pid_port)
        table = demo + load.more_sessions(args.sessions)
        versions = [demo + load.more_sessions(args.sessions, net=11), table]
        (tmp / "sessions.toml").write_text(table)
        (tmp / "router.toml").write_text(load.router_toml(tmp, port, admin, upstream.pid_port, "500ms"))
        (tmp / "router.yaml").write_text(load.pingora_yaml(tmp, "router", {}))
        env = {"RUST_LOG": "info,access=off"}
        if args.max_staleness:
            env["SESSION_ROUTER__STORE__MAX_STALENESS"] = args.max_staleness
        argv = [binary, "--config", str(tmp / "router.toml"), "-c", str(tmp / "router.yaml")]
        router = procs.start("router", argv, args.proxy_cpu, tmp / "router.log",
                             env={**os.environ, **env})
        load.wait_ready(port, router, "router")
        wrk_s = args.seconds + 4
        wrk = ["taskset", "-c", str(args.load_cpu), "wrk", "-t1", "-c64", f"-d{wrk_s}s",
               "-H", f"Host: {load.HOST}", f"http://127.0.0.1:{port}{load.PATH}"]
        with open(tmp / "wrk.out", "w") as wrk_out:
            driving = subprocess.Popen(wrk, stdout=wrk_out, stderr=subprocess.STDOUT)
            try:
                time.sleep(2)
                swapper = load.TableSwapper(tmp / "sessions.toml", versions, 2, args.load_cpu)
                perf = ["perf", "sched", "record", "-C", str(args.proxy_cpu), "-o",
                        str(tmp / "perf.data"), "--", "sleep", str(args.seconds)]
                subprocess.run(perf, capture_output=True, check=True, timeout=args.seconds + 30)
                swapper.stop()
            finally:
                driving.wait(timeout=wrk_s + 15)
        log = (tmp / "router.log").read_text()
        took = [int(ms) for ms in re.findall(r"route table loaded: .* took_ms=(\d+)", log)][1:]
        fallbacks = log.count("no idle CPU for the table load")
        rps = re.search(r"Requests/sec:\s+([\d.]+)", (tmp / "wrk.out").read_text())
        background, other = stalls(tmp / "perf.data")
        print(f"{binary}: {float(rps[1]) if rps else 0:,.0f} req/s; reloads finished: {len(took)}, "
              f"taking {', '.join(f'{ms / 1000:.1f}' for ms in took) or '-'} s; "
              f"redone at nice 19: {fallbacks}")
        print("  " + describe("by the router's background threads", background))
        print("  " + describe("by anything else", other))
    finally:
        procs.stop_all()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", nargs="+", help="router binaries to compare, in turn")
    parser.add_argument("--seconds", type=int, default=10, help="recorded window per binary")
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--max-staleness", default="6s",
                        help="the routers' store.max_staleness; '' keeps the default (2 min)")
    args = parser.parse_args()
    args.proxy_cpu, args.load_cpu = 0, 1
    for binary in args.binary:
        with tempfile.TemporaryDirectory(prefix="sr-stalls-", dir="/dev/shm") as tmp:
            run_one(binary, args, Path(tmp))


if __name__ == "__main__":
    main()
