# session-router: `make run` serves the embedded demo config; `make test` runs every check.
# Both install what they need on a fresh Debian machine (cmake for Pingora's zlib-ng).

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps build-deps lint check-config bench bench-load bench-profile bench-chart fuzz-smoke fuzz

run: deps
	$(CARGO) run --release --

# Benches run once each as smoke tests first, so the test harness has the last word.
test: deps lint check-config fuzz-smoke
	$(CARGO) test --bench route_lookup
	$(CARGO) test

MOTO_VENV := .venv-moto
export MOTO_SERVER := $(CURDIR)/$(MOTO_VENV)/bin/moto_server

# What the build and tests need, installed only when missing: cmake (Pingora's zlib-ng) and
# moto in server mode (the DynamoDB-compatible server the store tests start on 127.0.0.1).
deps: build-deps
	@[ -x $(MOTO_SERVER) ] || python3 -m venv $(MOTO_VENV) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && python3 -m venv $(MOTO_VENV); }
	@[ -x $(MOTO_SERVER) ] || $(MOTO_VENV)/bin/pip install -q 'moto[server]'

# What a release build needs: cmake for Pingora's zlib-ng.
build-deps:
	@command -v cmake >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# `-t` on every router config shipped in conf/, with the shipped Pingora config.
check-config:
	$(CARGO) build --quiet
	@for f in conf/router*.toml; do \
		./target/debug/session-router --config $$f -c conf/pingora.yaml -t || exit 1; \
	done

# The request parser under libFuzzer: 20 s in `make test`; `make fuzz` runs until stopped.
# New inputs go to fuzz/corpus (ignored by git); fuzz/seeds is only read.
FUZZ_RUN = $(CARGO) fuzz run route_request --dev --sanitizer none fuzz/corpus/route_request fuzz/seeds

fuzz-smoke: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@mkdir -p fuzz/corpus/route_request
	$(FUZZ_RUN) -- -max_total_time=20

fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@mkdir -p fuzz/corpus/route_request
	$(FUZZ_RUN) -- -max_total_time=$${FUZZ_SECONDS:-3600}

bench: deps
	$(CARGO) bench --bench route_lookup

# Side by side under load: direct, the router, a bare Pingora proxy, nginx and HAProxy, one
# table (bench/run.sh; BENCH_ARGS passes options, e.g. BENCH_ARGS="--access-log on").
bench-load: build-deps
	bench/run.sh $(BENCH_ARGS)

# Where one proxy's time goes per request: syscalls, allocations, perf symbols, instructions.
PROFILE_ARGS ?= --proxy router --proxy bare --proxy nginx --proxy haproxy --tool syscalls --tool callgrind
bench-profile: build-deps
	BENCH_SCRIPT=bench/profile.py bench/run.sh $(PROFILE_ARGS)

# The last load run (target/bench/load.json) as a PNG; matplotlib lives in .venv-bench.
BENCH_VENV := .venv-bench
bench-chart:
	@[ -x $(BENCH_VENV)/bin/python ] || python3 -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/python -c 'import matplotlib' 2>/dev/null || $(BENCH_VENV)/bin/pip install -q matplotlib
	$(BENCH_VENV)/bin/python bench/chart.py $(CHART_ARGS)
