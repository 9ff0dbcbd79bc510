# Reliability (issue 8): fuzzing, model tests, fault injection, load test. docs/threat-model.md
# says which test backs which security claim.
#
#   make fuzz-deps     cargo-fuzz (pinned) into .tools/cargo-fuzz (part of `make test`)
#   make fuzz-corpus   seed corpus from fixtures/ into fuzz/corpus/<target>/
#   make fuzz-smoke    every target for FUZZ_SMOKE_SECONDS over seeds + fuzz/regressions (in `make test`)
#   make fuzz          every target for FUZZ_SECONDS (default 60), then executions per target
#   make load-test     the 10 000-delivery load test of `scalehook serve` (also in cargo test)
#
# On the stable toolchain (the only one installable here): with `--sanitizer none`
# cargo-fuzz 0.13.2 passes rustc no -Z flag (checked: it builds on stable as is).
# AddressSanitizer would need nightly's runtime; the code under test is safe Rust, so
# libFuzzer's coverage guidance plus Rust's own checks (debug assertions and overflow checks,
# `--debug-assertions`) find what ASan would. The plain-test side of the targets runs in
# `cargo test` (crates/scalehook-core/tests/fuzz_corpus.rs) with no extra tool.
# Cost on a fresh machine: the install takes about 3 min, the instrumented build about 3 min
# (2 cores, measured here), then FUZZ_SMOKE_SECONDS per target.

CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TOOLS := $(CURDIR)/.tools/cargo-fuzz
export SCALEHOOK_CARGO_FUZZ := $(FUZZ_TOOLS)/bin/cargo-fuzz
FUZZ_TARGETS := signature event config trace service
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
# The largest fixture payload (19 KB capture) plus headers, and over the service target's
# 32 KiB body limit so 413 is reachable.
FUZZ_MAX_LEN ?= 40000
FUZZ_CARGO := $(SCALEHOOK_CARGO_FUZZ)
FUZZ_BUILD_FLAGS := --sanitizer none --debug-assertions --fuzz-dir fuzz
FUZZ_LOGS := fuzz/target/logs

TEST_DEPS += fuzz-deps
TEST_STEPS += fuzz-smoke

.PHONY: fuzz-deps fuzz-corpus fuzz-build fuzz-smoke fuzz load-test

fuzz-deps: $(SCALEHOOK_CARGO_FUZZ) ## install cargo-fuzz (pinned) under .tools/cargo-fuzz

$(SCALEHOOK_CARGO_FUZZ):
	$(CARGO) install --quiet --root $(FUZZ_TOOLS) cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked
	@test -x $@ || { echo "cargo-fuzz was not installed at $@"; exit 1; }

fuzz-corpus: ## write the seed corpus (from fixtures/) into fuzz/corpus/<target>/
	$(CARGO) test --quiet --locked -p scalehook-core --test fuzz_corpus -- --ignored write_seed_corpus --nocapture

fuzz-build: fuzz-deps
	$(FUZZ_CARGO) build $(FUZZ_BUILD_FLAGS)

# Runs each target for $(1) seconds over its corpus and kept regression inputs; fails on the
# first crash (libFuzzer writes the input to fuzz/artifacts/<target>/). Prints executions.
define fuzz_each
	@mkdir -p $(FUZZ_LOGS)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  extra=""; [ -d fuzz/regressions/$$t ] && extra=fuzz/regressions/$$t; \
	  if ! $(FUZZ_CARGO) run $(FUZZ_BUILD_FLAGS) $$t fuzz/corpus/$$t $$extra -- \
	       -max_total_time=$(1) -max_len=$(FUZZ_MAX_LEN) -print_final_stats=1 \
	       > $(FUZZ_LOGS)/$$t.log 2>&1; then \
	    tail -40 $(FUZZ_LOGS)/$$t.log; echo "fuzz target $$t failed: see $(FUZZ_LOGS)/$$t.log and fuzz/artifacts/$$t/"; exit 1; \
	  fi; \
	  printf 'fuzz %-10s %s executions in %s s, corpus %s inputs\n' $$t \
	    "$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_LOGS)/$$t.log)" $(1) \
	    "$$(ls fuzz/corpus/$$t | wc -l)"; \
	done
endef

fuzz-smoke: fuzz-build fuzz-corpus ## libFuzzer for FUZZ_SMOKE_SECONDS (10) per target (in make test)
	$(call fuzz_each,$(FUZZ_SMOKE_SECONDS))

fuzz: fuzz-build fuzz-corpus ## libFuzzer for FUZZ_SECONDS (60) per target; prints executions per target
	$(call fuzz_each,$(FUZZ_SECONDS))

load-test: ## the load and soak test of `scalehook serve` (10 000+ signed deliveries on loopback)
	$(CARGO) test --locked -p scalehook-e2e --test load -- --nocapture
