# Lathe — the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= /var/tmp/lathe-target
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

# Debian packages the build and the tests need. librocksdb-dev + clang let the rocksdb crate link
# the system RocksDB instead of compiling it (see .cargo/config.toml); zookeeper is started by the
# tests themselves on free loopback ports; so is prometheus (tests/tests/prometheus.rs, and
# `make run` starts one beside the cluster when it is installed). chromium + chromium-driver run
# the dashboard's browser test (tests/tests/ui_browser.rs).
DEB_PACKAGES := zookeeper librocksdb-dev clang libclang-dev pkg-config haproxy varnish socat wrk prometheus chromium chromium-driver
# A single-binary Kafka-protocol broker for the Kafka tests (tests/src/kafka.rs runs the binary
# inside the package on a free loopback port), pinned.
PIP_PACKAGES := noida-db==0.2.3

.PHONY: deps build test run clean lint bench

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@for p in $(PIP_PACKAGES); do \
	  python3 -m pip show "$${p%%==*}" 2>/dev/null | grep -qx "Version: $${p##*==}" || \
	    { echo "installing: $$p"; python3 -m pip install -q --disable-pip-version-check "$$p" || \
      python3 -m pip install -q --disable-pip-version-check --break-system-packages "$$p"; }; \
	done

build: deps
	$(CARGO) build --workspace --bins

# Every test: unit tests, then integration tests that start a real ZooKeeper and real lathe-node
# processes on free loopback ports and stop them when they finish.
test: build
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=2

lint: deps
	$(CARGO) fmt --all -- --check
	git ls-files '*.rs' | xargs python3 .ci/line_width.py --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# A local cluster: `lathe up` starts three lathe-node processes with the embedded registry store (no
# ZooKeeper needed; data and node logs in ./lathe-data/local-<i>), restarts any that dies, deploys
# config/my_topology.toml and prints where the REST API, the metrics and the load balancer answer;
# with Debian's prometheus installed, also a Prometheus scraping the nodes (config/prometheus/).
# Ctrl-C stops everything it started.
run: build
	exec $(CARGO_TARGET_DIR)/debug/lathe up --nodes 3 --topology config/my_topology.toml \
	  $$(command -v prometheus >/dev/null && echo --prometheus)

# The benchmarks (registry, load balancer vs HAProxy, placement, failover, crash restarts,
# lathe-agent): release lathe-node and lathe-agent processes, a real ZooKeeper and HAProxy on
# loopback; prints a markdown table with the goals beside the numbers.
# BENCH_ARGS="--json bench.json", "--quick" or "--only lb,placement" (phases: lathe-bench --help).
bench: deps
	$(CARGO) build --release --bins -p lathe-node-examples -p lathe-agent -p lathe-bench
	LATHE_NODE_BIN=$(CARGO_TARGET_DIR)/release/lathe-node \
	LATHE_AGENT_BIN=$(CARGO_TARGET_DIR)/release/lathe-agent \
	$(CARGO_TARGET_DIR)/release/lathe-bench $(BENCH_ARGS)

clean:
	$(CARGO) clean
