# scalehook's entry points. `make test` is what CI runs (.ci/run, and .github/workflows/ci.yml);
# it installs what it needs itself, idempotently: each mk/*.mk fragment lists its own tools
# (docs/development.md has the table).
#
# Each part of the project owns a fragment in mk/*.mk that adds to TEST_DEPS (things to
# install before the tests) and TEST_STEPS (checks to run after cargo's tests).

SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
TEST_DEPS :=
TEST_STEPS :=

# CI builds once from a clean clone: incremental caches would only take disk.
ifdef CI
export CARGO_INCREMENTAL := 0
endif

include $(sort $(wildcard mk/*.mk))

.PHONY: help test test-rust lint fmt run build clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

test: $(TEST_DEPS) lint test-rust $(TEST_STEPS) ## install test dependencies, lint, run every test
	@echo "make test: all checks passed"

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test-rust: $(TEST_DEPS) ## cargo test over the workspace
	$(CARGO) test --workspace --locked

fmt: ## format the code
	$(CARGO) fmt --all

build: ## build every binary (debug)
	$(CARGO) build --workspace --locked

clean: ## remove build output and installed test tools
	$(CARGO) clean
	rm -rf .venv node_modules .tools
