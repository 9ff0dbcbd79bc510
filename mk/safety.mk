# Scale-in safety (issue 20): the interleaving harness and mutation testing of the code that
# takes instances out. docs/quality.md has the figures and the surviving mutants.
#
#   make interleavings  every injection point and pair of both passes
#                       (crates/scalehook-core/tests/interleave.rs; `make test` runs all but
#                       the reconcile pass's pairs)
#   make mutants        cargo-mutants (pinned, from crates.io, into .tools/cargo-mutants) over
#                       the removal, deregistration, orphan and provisioning code; slow on 2
#                       cores, so outside `make test`. Results in mutants.out/.

CARGO_MUTANTS_VERSION := 25.3.1
MUTANTS_TOOLS := $(CURDIR)/.tools/cargo-mutants
CARGO_MUTANTS := $(MUTANTS_TOOLS)/bin/cargo-mutants
# The scale-in, deregistration, orphan and provisioning code, and the tests that guard it.
MUTANTS_FILES := --file crates/scalehook-core/src/service/removal.rs \
	--file crates/scalehook-core/src/policy.rs \
	--file crates/scalehook-core/src/provision.rs

.PHONY: interleavings mutants mutants-deps

interleavings: ## every interleaving of both passes with GitHub's world (tests/interleave.rs)
	$(CARGO) test -p scalehook-core --locked --test interleave -- --include-ignored --nocapture

mutants-deps: $(CARGO_MUTANTS) ## install cargo-mutants (pinned) under .tools/cargo-mutants

$(CARGO_MUTANTS):
	$(CARGO) install --quiet --root $(MUTANTS_TOOLS) cargo-mutants --version $(CARGO_MUTANTS_VERSION) --locked

mutants: mutants-deps ## mutation testing of scale-in, deregistration, orphans, provisioning
	$(CARGO_MUTANTS) mutants --no-shuffle $(MUTANTS_FILES) -j 1 --timeout 300 \
		--package scalehook-core -- --lib --test removal --test github_service --test interleave
