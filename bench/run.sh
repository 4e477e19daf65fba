#!/usr/bin/env bash
# bench/run.sh: `make bench-load` / `make bench-profile` — installs the load and profiling tools
# when missing, builds the release router and the bare Pingora baseline, then runs bench/load.py
# (or $BENCH_SCRIPT: bench/profile.py, bench/stalls.py) with the arguments passed through.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
missing=()
for tool in wrk nginx haproxy taskset; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
	pkgs=()
	for tool in "${missing[@]}"; do
		case "$tool" in taskset) pkgs+=(util-linux) ;; *) pkgs+=("$tool") ;; esac
	done
	had_nginx_pid=$([ -e /run/nginx.pid ] && echo yes || echo no)
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
	# Debian may start a system nginx on :80 on install; the bench runs its own instances only.
	if [ "$had_nginx_pid" = no ] && [ -e /run/nginx.pid ]; then
		$SUDO nginx -s stop || true
	fi
	for svc in haproxy; do
		command -v systemctl >/dev/null && $SUDO systemctl stop "$svc" 2>/dev/null || true
	done
fi

cargo build --release --bin session-router --example bare_proxy
for tool in strace perf valgrind; do
	needed=no
	case "${BENCH_SCRIPT:-}:$tool" in bench/profile.py:* | bench/stalls.py:perf) needed=yes ;; esac
	if [ "$needed" = yes ] && ! command -v "$tool" >/dev/null; then
		case "$tool" in perf) pkg=linux-perf ;; *) pkg=$tool ;; esac
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg"
	fi
done
exec python3 "${BENCH_SCRIPT:-bench/load.py}" "$@"
