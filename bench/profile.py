#!/usr/bin/env python3
# bench/profile.py: per-request cost breakdown of one proxy under the bench load (`make bench-profile`).
"""Runs one proxy of bench/load.py under load and attributes its work to requests.

Tools (each measures only the window after warm-up, then divides by the requests wrk completed):
  syscalls   perf stat on the syscalls:sys_enter_* tracepoints: syscall counts per request
  allocs     uprobes on libc malloc/calloc/realloc/posix_memalign/free (perf probe + perf stat);
             blind to a statically linked allocator (e.g. a build with mimalloc as the global
             allocator): callgrind's allocator count covers both
  perf       perf record (cpu-clock sampling, no hardware counters needed): top symbols
  callgrind  valgrind --tool=callgrind, instrumentation switched on after warm-up: instructions
             per request, reproducible whatever the machine's noise (the proxy runs ~50x slower)

Example: bench/profile.py --proxy router --tool syscalls --tool allocs
"""

import argparse
import glob
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402

LIBC_ALLOC = ["malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "free"]
# Entry points counted under callgrind: libc's, and mimalloc's for builds that link it.
ALLOCATOR_FNS = set(LIBC_ALLOC) | {
    "mi_malloc", "mi_malloc_aligned", "mi_zalloc", "mi_zalloc_aligned", "mi_realloc",
    "mi_realloc_aligned", "mi_free",
}


class Window:
    """One long wrk run; the measured window is counted by the upstream's own request counter,
    so connection set-up and tool start-up stay outside it."""

    def __init__(self, args, port, upstream, cookie=None):
        self.upstream = upstream
        total = args.warmup + args.seconds + 4
        argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{total}s", "--timeout", "5s",
                *load.wrk_headers(args, cookie), f"http://127.0.0.1:{port}{load.PATH}"]
        if args.load_cpu is not None:
            argv = ["taskset", "-c", str(args.load_cpu)] + argv
        self.wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
        time.sleep(args.warmup)

    def begin(self):
        self.t0 = time.monotonic()
        self.n0 = load.upstream_requests(self.upstream)

    def end(self):
        self.n1 = load.upstream_requests(self.upstream)
        self.t1 = time.monotonic()
        # The status query at the start counts as one request.
        self.requests = self.n1 - self.n0 - 1
        self.rps = self.requests / (self.t1 - self.t0)

    def finish(self):
        out, _ = self.wrk.communicate(timeout=60)
        if "Non-2xx" in out or "Socket errors" in out:
            raise load.RunError(f"errors under load:\n{out}")


def with_perf(argv, window, seconds, tmp):
    """Runs `perf stat|record ARGS` with its events switched on exactly for the window, through
    perf's control FIFOs; returns what perf printed."""
    ctl, ack = tmp / "perf-ctl.fifo", tmp / "perf-ack.fifo"
    for f in (ctl, ack):
        f.unlink(missing_ok=True)
        os.mkfifo(f)
    argv = [argv[0], argv[1], "--delay=-1", f"--control=fifo:{ctl},{ack}", *argv[2:]]
    tool = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # O_RDWR: opening a FIFO this way never blocks, whichever side perf opens first.
    ctl_fd, ack_fd = os.open(ctl, os.O_RDWR), os.open(ack, os.O_RDWR)

    def command(word):
        os.write(ctl_fd, f"{word}\n".encode())
        ready, _, _ = select.select([ack_fd], [], [], 30)
        if not ready:
            raise load.RunError(f"perf did not acknowledge {word!r}")
        os.read(ack_fd, 64)

    try:
        time.sleep(1.0)  # attach to every thread before the window opens
        command("enable")
        window.begin()
        time.sleep(seconds)
        window.end()
        command("disable")
    finally:
        tool.send_signal(signal.SIGINT)
        try:
            text, _ = tool.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            tool.kill()
            text, _ = tool.communicate()
        os.close(ctl_fd)
        os.close(ack_fd)
    return text


def per_request_syscalls(text, requests):
    rows = []
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+syscalls:sys_enter_(\w+)", line)
        if m:
            rows.append((m.group(2), int(m.group(1).replace(",", "")) / requests))
    rows.sort(key=lambda r: -r[1])
    lines = [f"  {'syscall':<20}{'per req':>10}"]
    lines += [f"  {n:<20}{c:>10.3f}" for n, c in rows if c >= 0.005]
    lines.append(f"  {'total':<20}{sum(r[1] for r in rows):>10.3f}")
    return "\n".join(lines)


def libc_path():
    for path in glob.glob("/lib/x86_64-linux-gnu/libc.so.6") + glob.glob("/lib*/libc.so.6"):
        return path
    raise load.RunError("libc.so.6 not found")


def ensure_probes():
    libc = libc_path()
    have = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    for fn in LIBC_ALLOC:
        if f"probe_libc:{fn} " not in have and f"probe_libc:{fn}\n" not in have:
            subprocess.run(["perf", "probe", "-q", "-x", libc, fn], check=False)
    return [f"probe_libc:{fn}" for fn in LIBC_ALLOC]


def per_request_counts(text, requests):
    lines = []
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(probe_libc:\w+)", line)
        if m:
            n = int(m.group(1).replace(",", ""))
            lines.append(f"  {m.group(2):<28}{n / requests:>10.2f} per request")
    return "\n".join(lines)


def callgrind_totals(files):
    total = 0
    calls = {}
    for f in files:
        text = Path(f).read_text(errors="replace")
        m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
        if m:
            total += int(m.group(1))
        # Calls into the allocator: "cfn=(id) name" defines a callee, "calls=N ..." follows.
        names = {}
        callee = None
        for line in text.splitlines():
            if line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line)
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    callee = names.get(m.group(1))
            elif line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line)
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
            elif line.startswith("calls=") and callee:
                if callee in ALLOCATOR_FNS:
                    calls[callee] = calls.get(callee, 0) + int(line.split("=")[1].split()[0])
    return total, calls


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--proxy", action="append", required=True, help=load.Spec.__doc__)
    ap.add_argument("--tool", action="append", required=True,
                    choices=["syscalls", "allocs", "perf", "callgrind"])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--access-log", choices=["off", "on"], default="off")
    ap.add_argument("--headers", choices=["minimal", "browser"], default="minimal")
    ap.add_argument("--out", default=str(load.ROOT / "target/bench/profile"))
    args = ap.parse_args()
    args.proxy_cpu, args.load_cpu = (0, 1)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    procs = load.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="sr-profile-"))
    report = []
    try:
        upstream = load.start_upstream(procs, tmp, args.load_cpu)
        for text in args.proxy:
            spec = load.Spec(text)
            for tool in args.tool:
                report.append(run_one(spec, tool, args, procs, tmp, upstream, out_dir))
                print(report[-1], flush=True)
    except load.RunError as e:
        print(f"profile: FAILED: {e}\n(logs in {tmp})", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
    (out_dir / "last-report.txt").write_text("\n\n".join(report) + "\n")
    # Kept after a failure for its logs; the outputs worth keeping are already in out_dir.
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def callgrind_window(spec, pids, window, args, tmp, out_dir):
    vg_pids = [str(p) for p in pids]

    def control(*a):
        # Per pid: nginx's master is not always reachable by vgdb; its worker is what counts.
        return [subprocess.run(["callgrind_control", *a, p], capture_output=True, text=True,
                               timeout=60).stdout for p in vg_pids]

    control("-i", "on")
    control("-z")
    window.begin()
    time.sleep(args.seconds)
    window.end()
    control("-i", "off")
    dumped = control("-d")
    if not any("OK" in d for d in dumped):
        raise load.RunError(f"callgrind_control -d: {dumped}")
    time.sleep(1.0)
    files = []
    for f in glob.glob(str(tmp / f"callgrind.{spec.name}.*")):
        dest = out_dir / Path(f).name
        Path(f).rename(dest)
        files.append(str(dest))
    total, calls = callgrind_totals(files)
    n = window.requests
    call_text = ", ".join(f"{k} {v / n:.1f}" for k, v in sorted(calls.items()))
    return (f"  instructions per request: {total / n:,.0f}\n"
            f"  allocator calls per request: {call_text or 'n/a'}\n"
            f"  files: {' '.join(files)}")


def run_one(spec, tool, args, procs, tmp, upstream, out_dir):
    wrap = ()
    ready_s = 20.0
    if tool == "callgrind":
        cg_out = tmp / f"callgrind.{spec.name}.%p"
        wrap = ("valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={cg_out}", "--trace-children=no")
        ready_s = 120.0
    proc, port, pid = load.start_proxy(spec, args, procs, tmp, upstream.pid_port, wrap, ready_s)
    window = None
    try:
        if pid is None:
            raise load.RunError("profile needs a proxy process (not direct)")
        pids = load.process_tree(pid)
        head = f"== {spec.name}: {tool} =="
        window = Window(args, port, upstream, spec.cookie)
        if tool == "syscalls":
            argv = ["perf", "stat", "-e", "syscalls:sys_enter_*", "-p", ",".join(map(str, pids))]
            text = with_perf(argv, window, args.seconds, tmp)
            (out_dir / f"syscalls-{spec.name}.txt").write_text(text)
            body = per_request_syscalls(text, window.requests)
        elif tool == "allocs":
            events = ",".join(ensure_probes())
            argv = ["perf", "stat", "-e", events, "-p", ",".join(map(str, pids))]
            text = with_perf(argv, window, args.seconds, tmp)
            (out_dir / f"allocs-{spec.name}.txt").write_text(text)
            body = per_request_counts(text, window.requests)
        elif tool == "perf":
            data = out_dir / f"perf-{spec.name}.data"
            argv = ["perf", "record", "-F", "1999", "-o", str(data),
                    "-p", ",".join(map(str, pids))]
            with_perf(argv, window, args.seconds, tmp)
            rep = subprocess.run(
                ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso,symbol",
                 "--stdio", "-g", "none", "--percent-limit", "0.7"],
                capture_output=True, text=True).stdout
            (out_dir / f"perf-{spec.name}.txt").write_text(rep)
            top = [l for l in rep.splitlines() if l.strip() and not l.startswith("#")][:45]
            dso = subprocess.run(
                ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso",
                 "--stdio", "-g", "none"], capture_output=True, text=True).stdout
            dso_lines = [l for l in dso.splitlines() if l.strip() and not l.startswith("#")][:8]
            body = "  by object:\n" + "\n".join(dso_lines) + "\n  top symbols:\n" + "\n".join(top)
        else:
            body = callgrind_window(spec, pids, window, args, tmp, out_dir)
        window.finish()
        return f"{head}\n{window.requests} requests in the window ({window.rps:.0f}/s)\n{body}"
    finally:
        if window is not None and window.wrk.poll() is None:
            window.wrk.kill()
            window.wrk.wait()
        if proc is not None:
            procs.stop(proc)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except load.RunError as e:
        print(f"profile: {e}", file=sys.stderr)
        sys.exit(1)
