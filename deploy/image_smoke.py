#!/usr/bin/env python3
"""Runs the router the way deploy/Dockerfile's runtime stage would, where no Docker engine is.

Reads the final stage of the Dockerfile (WORKDIR, USER, the COPY destinations, ENTRYPOINT, CMD
and HEALTHCHECK), lays the binary and conf/ out under a temporary root at the same paths, and
starts ENTRYPOINT + CMD from WORKDIR as the image's user. It passes when the image's own
HEALTHCHECK command, run as that user, reports ready, and the router exits on SIGTERM within
ECS's 30 s stop timeout. Listen addresses are moved to free 127.0.0.1 ports by environment
overrides, as a deployment would set them.

Usage: image_smoke.py DOCKERFILE BINARY
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

STOP_TIMEOUT = 30  # seconds ECS (and Docker) wait between SIGTERM and SIGKILL
NONROOT_IDS = {"nonroot": 65532, "65532": 65532}


def instructions(path):
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, pending = [], ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line = pending + line
            pending = ""
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def exec_form(text):
    """The argv of an exec-form (JSON array) instruction; shell form is refused."""
    try:
        argv = json.loads(text)
    except json.JSONDecodeError:
        sys.exit(f"not exec form (a JSON array): {text}")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        sys.exit(f"not a list of strings: {text}")
    return argv


def final_stage(path):
    steps = instructions(path)
    froms = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    if len(froms) < 2:
        sys.exit("the Dockerfile must be multi-stage (build, then runtime)")
    stage = {"copies": [], "workdir": "/", "expose": []}
    for word, rest in steps[froms[-1] + 1:]:
        if word == "WORKDIR":
            stage["workdir"] = os.path.join(stage["workdir"], rest)
        elif word == "USER":
            stage["user"] = rest
        elif word == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--chown")]
            from_stage = next((a for a in args if a.startswith("--from=")), None)
            paths = [a for a in args if not a.startswith("--")]
            stage["copies"].append((from_stage, paths[:-1], paths[-1]))
        elif word == "ENTRYPOINT":
            stage["entrypoint"] = exec_form(rest)
        elif word == "CMD":
            stage["cmd"] = exec_form(rest)
        elif word == "EXPOSE":
            stage["expose"] += rest.split()
        elif word == "HEALTHCHECK":
            stage["healthcheck"] = exec_form(re.sub(r"^(--\S+\s+)*CMD\s+", "", rest))
    for key in ("user", "entrypoint", "healthcheck"):
        if key not in stage:
            sys.exit(f"the runtime stage has no {key.upper()}")
    return stage


def user_ids(user):
    name, _, group = user.partition(":")
    if name in ("root", "0") or group in ("root", "0"):
        sys.exit(f"the runtime stage runs as root ({user})")
    uid = NONROOT_IDS.get(name) or (int(name) if name.isdigit() else None)
    if uid is None:
        sys.exit(f"unknown user {name}: use a numeric id")
    gid = NONROOT_IDS.get(group) or (int(group) if group.isdigit() else uid)
    return uid, gid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lay_out(stage, root, repo, binary):
    """Copies what the runtime stage copies to the same paths under `root`."""
    for from_stage, sources, dest in stage["copies"]:
        for src in sources:
            if from_stage:
                # The build stage's product is the release binary; here, the one just built.
                local = binary
            else:
                local = os.path.join(repo, src)
            target = root + (dest if dest.startswith("/") else os.path.join(stage["workdir"], dest))
            if os.path.isdir(local):
                shutil.copytree(local, target, dirs_exist_ok=True)
            else:
                if target.endswith("/"):
                    target = os.path.join(target, os.path.basename(local))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(local, target)
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)
    os.makedirs(root + stage["workdir"], exist_ok=True)


def in_root(root, argv):
    """Absolute image paths of an argv's program, mapped under the temporary root."""
    return [root + argv[0] if argv[0].startswith("/") else argv[0]] + argv[1:]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    dockerfile, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(dockerfile)))
    stage = final_stage(dockerfile)
    uid, gid = user_ids(stage["user"])
    for port in ("8080", "9091"):
        if port not in stage["expose"]:
            sys.exit(f"the runtime stage does not EXPOSE {port}")
    if "--probe" not in stage["healthcheck"]:
        sys.exit("the HEALTHCHECK does not use --probe")

    as_user = []
    if os.geteuid() == 0:
        as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    else:
        print(f"image-smoke: not root, so running as uid {os.geteuid()} instead of {uid}")

    root = tempfile.mkdtemp(prefix="session-router-image-")
    os.chmod(root, 0o755)
    proc = None
    try:
        lay_out(stage, root, repo, binary)
        proxy, admin = free_port(), free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            "RUST_LOG": "info",
            "SESSION_ROUTER__LISTEN__PROXY": f"127.0.0.1:{proxy}",
            "SESSION_ROUTER__LISTEN__ADMIN": f"127.0.0.1:{admin}",
        }
        argv = in_root(root, stage["entrypoint"]) + stage.get("cmd", [])
        log = open(os.path.join(root, "router.log"), "wb")
        proc = subprocess.Popen(as_user + argv, cwd=root + stage["workdir"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        probe = in_root(root, stage["healthcheck"])
        probe = [a.replace("127.0.0.1:9091", f"127.0.0.1:{admin}") for a in probe]
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                sys.exit(f"the router exited with {proc.returncode}:\n{read(root)}")
            if subprocess.run(as_user + probe, env=env, capture_output=True).returncode == 0:
                break
            if time.monotonic() > deadline:
                sys.exit(f"HEALTHCHECK never passed:\n{read(root)}")
            time.sleep(0.2)
        print(f"image-smoke: uid {uid if as_user else os.geteuid()} in {stage['workdir']}: "
              f"HEALTHCHECK {' '.join(stage['healthcheck'][1:])} passed")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            sys.exit(f"still running {STOP_TIMEOUT} s after SIGTERM")
        took = time.monotonic() - started
        if code != 0:
            sys.exit(f"exit {code} after SIGTERM:\n{read(root)}")
        print(f"image-smoke: SIGTERM -> exit 0 after {took:.1f} s (limit {STOP_TIMEOUT} s)")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def read(root):
    try:
        with open(os.path.join(root, "router.log"), encoding="utf-8", errors="replace") as f:
            return f.read()[-4000:]
    except OSError:
        return ""


if __name__ == "__main__":
    main()
