# session-router: `make run` serves the embedded demo config; `make test` runs every check.
# Both install what they need on a fresh Debian machine (cmake for Pingora's zlib-ng).

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps lint check-config bench clean-bench

run: deps
	$(CARGO) run --release --

# Benches run once each as smoke tests first, so the test harness has the last word.
test: deps lint check-config
	$(CARGO) test --benches
	$(CARGO) test

# System packages the build needs; installed only when missing.
deps:
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

bench: deps
	$(CARGO) bench --bench route_lookup
