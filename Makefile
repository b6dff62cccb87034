# Lathe — the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= /var/tmp/lathe-target
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

# Debian packages the build and the tests need. librocksdb-dev + clang let the rocksdb crate link
# the system RocksDB instead of compiling it (see .cargo/config.toml); zookeeper is started by the
# tests themselves on free loopback ports.
DEB_PACKAGES := zookeeper librocksdb-dev clang libclang-dev pkg-config

.PHONY: deps build test run clean lint

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(CARGO) build --workspace --bins

# Every test: unit tests, then integration tests that start a real ZooKeeper and real lathe-node
# processes on free loopback ports and stop them when they finish.
test: build
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=2

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# One node with the embedded registry store (no ZooKeeper needed). Ctrl-C stops it.
run: build
	$(CARGO_TARGET_DIR)/debug/lathe-node --name local-1 --http 127.0.0.1:7500 --data-dir ./lathe-data/local-1

clean:
	$(CARGO) clean
