#!/usr/bin/env python3
# bench/propagation.py: how fast a store change reaches a fleet of routers following the streams.
"""Starts moto (DynamoDB and DynamoDB Streams on one port), both tables with NEW_AND_OLD_IMAGES
streams, two upstreams that answer with their name, and N router processes on those tables. Then
makes `--changes` changes in turn, cycling through the three kinds the platform makes: a container
moved to another address, a session repointed to another container, a container's status set to
stopped and back to running. After each change it polls every router (every 5 ms) until each
answers as the change says, and records, per router, the time from the write's acknowledgement to
the first request answered the new way. Prints p50/p90/p99/max per kind and over all, and each
router's full-Scan count before and after the changes (they must not move between reconciles).

Read units per hour, from the Scan counts: `--sessions` extra sessions are put in the table so
that the scan volume is realistic; their bytes are summed as DynamoDB prices a Scan (0.5 read
unit per 4 KB, eventually consistent) and multiplied by the full loads each mode makes per hour.

All processes bind 127.0.0.1 on free ports and are stopped when the run ends, however it ends.
Run with moto's Python: `.venv-moto/bin/python bench/propagation.py --bin target/release/session-router`.
"""

import argparse
import http.server
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import Procs, free_port  # noqa: E402

import boto3  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SESSIONS, CONTAINERS = "webordinary-edit-sessions", "webordinary-containers"
HOST = "edit.acme.localhost"
ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def named_upstream(name):
    """An HTTP server on a free port answering every GET with `name`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def answer(port, thread):
    """(status, body) of the router on `port` for the session's page."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/session/{thread}/", headers={"Host": HOST})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def metric(admin, series):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
    return 0.0


def wait_ready(admin, deadline_s=60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"router on admin port {admin} never became ready")


def router_toml(tmp, i, port, admin, endpoint, args):
    return f"""
[listen]
proxy = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin}"

[routing]
path_hosts = ["edit.{{client}}.localhost"]

[access]
default = "public"

[store]
kind = "dynamodb"
refresh_interval = "{args.refresh}"
reconcile_interval = "{args.reconcile}"
max_staleness = "1h"

[store.dynamodb]
endpoint_url = "{endpoint}"
streams = {"true" if args.streams else "false"}
stream_poll_interval = "{args.poll}"
request_timeout = "30s"

[upstream]
allowed_cidrs = ["127.0.0.0/8"]
"""


def create_tables(ddb):
    for name, key in ((SESSIONS, "sessionId"), (CONTAINERS, "containerId")):
        ddb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )


def put_session(ddb, key, container):
    ddb.put_item(
        TableName=SESSIONS,
        Item={"sessionId": {"S": key}, "containerId": {"S": container}, "clientId": {"S": "acme"}},
    )


def put_container(ddb, cid, port, status="running"):
    ddb.put_item(
        TableName=CONTAINERS,
        Item={
            "containerId": {"S": cid},
            "containerIp": {"S": "127.0.0.1"},
            "containerPort": {"N": str(port)},
            "status": {"S": status},
        },
    )


def seed_bulk(ddb, count):
    """`count` more sessions, each on its own container, as the platform's tables would hold."""
    for start in range(0, count, 25):
        batch = range(start, min(start + 25, count))
        ddb.batch_write_item(
            RequestItems={
                SESSIONS: [
                    {"PutRequest": {"Item": {
                        "sessionId": {"S": f"bulk{i % 1000}-t{i:07}"},
                        "containerId": {"S": f"bulk-c{i:07}"},
                        "clientId": {"S": f"bulk{i % 1000}"},
                    }}}
                    for i in batch
                ],
                CONTAINERS: [
                    {"PutRequest": {"Item": {
                        "containerId": {"S": f"bulk-c{i:07}"},
                        "containerIp": {"S": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"},
                        "containerPort": {"N": "4321"},
                        "status": {"S": "running"},
                    }}}
                    for i in batch
                ],
            }
        )


def scan_read_units(ddb):
    """Read units of one full load: both tables' item bytes, 0.5 unit per 4 KB per page."""
    total = 0.0
    for table in (SESSIONS, CONTAINERS):
        pages = ddb.get_paginator("scan").paginate(TableName=table)
        for page in pages:
            size = sum(
                sum(len(k) + len(json.dumps(v)) - 8 for k, v in item.items())
                for item in page["Items"]
            )
            total += 0.5 * max(1, -(-size // 4096))
    return total


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target/release/session-router"))
    ap.add_argument("--routers", type=int, default=3)
    ap.add_argument("--changes", type=int, default=90)
    ap.add_argument("--sessions", type=int, default=1000, help="extra sessions in the tables")
    ap.add_argument("--poll", default="500ms", help="stream_poll_interval")
    ap.add_argument("--refresh", default="5s")
    ap.add_argument("--reconcile", default="10m")
    ap.add_argument("--no-streams", dest="streams", action="store_false")
    ap.add_argument("--limit", type=float, default=10.0, help="seconds a change may take")
    args = ap.parse_args()

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="propagation-"))
    try:
        run(args, procs, tmp)
    finally:
        procs.stop_all()


def run(args, procs, tmp):
    moto_port = free_port()
    moto = str(ROOT / ".venv-moto/bin/moto_server")
    procs.start("moto", [moto, "-H", "127.0.0.1", "-p", str(moto_port)], None, tmp / "moto.log")
    endpoint = f"http://127.0.0.1:{moto_port}"
    os.environ.update(ENV)
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    for _ in range(100):
        try:
            ddb.list_tables()
            break
        except Exception:
            time.sleep(0.1)
    create_tables(ddb)
    a, b = named_upstream("a"), named_upstream("b")
    ports = {"a": a.server_address[1], "b": b.server_address[1]}
    put_container(ddb, "c1", ports["a"])
    put_container(ddb, "c2", ports["b"])
    put_container(ddb, "c3", ports["a"])
    put_session(ddb, "acme-moved", "c1")
    put_session(ddb, "acme-repointed", "c1")
    put_session(ddb, "acme-status", "c3")
    seed_bulk(ddb, args.sessions)
    units = scan_read_units(ddb)

    routers = []
    for i in range(args.routers):
        port, admin = free_port(), free_port()
        (tmp / f"r{i}").mkdir()
        (tmp / f"r{i}/router.toml").write_text(router_toml(tmp, i, port, admin, endpoint, args))
        (tmp / f"r{i}/pingora.yaml").write_text(
            f"---\nversion: 1\nthreads: 1\npid_file: {tmp}/r{i}/pid\n"
            f"upgrade_sock: {tmp}/r{i}/upgrade.sock\ngrace_period_seconds: 0\n"
            "graceful_shutdown_timeout_seconds: 0\n"
        )
        argv = [args.bin, "--config", f"{tmp}/r{i}/router.toml", "-c", f"{tmp}/r{i}/pingora.yaml"]
        env = dict(os.environ, RUST_LOG="info")
        procs.start(f"router{i}", argv, None, tmp / f"r{i}/router.log", env=env)
        routers.append((port, admin))
    for _, admin in routers:
        wait_ready(admin)
    time.sleep(2)  # past the first positioning and its load
    loads = 'session_router_store_requests_total{op="load_all",result="ok"}'
    scans_before = [metric(admin, loads) for _, admin in routers]

    kinds = {"container moved": [], "session repointed": [], "status changed": []}
    state = {"moved": "a", "repointed": "c1", "status": "running"}
    started_all = time.monotonic()
    for n in range(args.changes):
        kind = list(kinds)[n % 3]
        if kind == "container moved":
            state["moved"] = "b" if state["moved"] == "a" else "a"
            put_container(ddb, "c1", ports[state["moved"]])
            # c1 also serves the repointed session while it points there.
            thread, want = "moved", (200, state["moved"])
        elif kind == "session repointed":
            state["repointed"] = "c2" if state["repointed"] == "c1" else "c1"
            put_session(ddb, "acme-repointed", state["repointed"])
            target = "b" if state["repointed"] == "c2" else state["moved"]
            thread, want = "repointed", (200, target)
        else:
            state["status"] = "stopped" if state["status"] == "running" else "running"
            put_container(ddb, "c3", ports["a"], state["status"])
            thread, want = "status", (200, "a") if state["status"] == "running" else (503, "")
        written = time.monotonic()
        pending = set(range(len(routers)))
        while pending:
            for i in list(pending):
                status, body = answer(routers[i][0], thread)
                if (status, body if status == 200 else "") == want:
                    kinds[kind].append(time.monotonic() - written)
                    pending.discard(i)
            if time.monotonic() - written > args.limit:
                raise SystemExit(f"change {n} ({kind}) not seen by routers {sorted(pending)}")
            time.sleep(0.005)
        # Changes far enough apart that one shows its own latency, not its queue's.
        time.sleep(0.2)
    elapsed = time.monotonic() - started_all
    scans_after = [metric(admin, loads) for _, admin in routers]

    print(f"{args.routers} routers, {args.changes} changes over {elapsed:.0f} s, "
          f"stream_poll_interval {args.poll}, streams {'on' if args.streams else 'off'}")
    print(f"{'kind':<20}{'n':>5}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    every = [t for ts in kinds.values() for t in ts]
    for kind, ts in [*kinds.items(), ("all", every)]:
        row = [percentile(ts, p) * 1000 for p in (0.5, 0.9, 0.99)] + [max(ts) * 1000]
        print(f"{kind:<20}{len(ts):>5}" + "".join(f"{v:>9.0f}" for v in row))
    print(f"full loads per router: before {scans_before}, after {scans_after}")
    per_hour_scanning = 3600 / parse_seconds(args.refresh)
    per_hour_streams = 3600 / parse_seconds(args.reconcile)
    # Scanning (before streams) read eventually consistently; the reconcile reads consistently,
    # at twice the units, so that nothing falls between positioning and load.
    print(f"one full load of {args.sessions + 3} sessions: {units:.0f} read units "
          f"({2 * units:.0f} consistent); per router per hour: scanning every {args.refresh} "
          f"{units * per_hour_scanning:,.0f}, streams with a consistent reconcile every "
          f"{args.reconcile} {2 * units * per_hour_streams:,.0f}")
    if args.streams and scans_after != scans_before:
        raise SystemExit("full loads happened between reconciles")


def parse_seconds(text):
    for suffix, scale in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "").isdigit():
            return float(text[: -len(suffix)]) * scale
    raise SystemExit(f"cannot read the duration {text!r}")


if __name__ == "__main__":
    main()
