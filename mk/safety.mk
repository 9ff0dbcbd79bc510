# Scale-in safety (issue 20): the interleaving harness and mutation testing of the code that
# takes instances out. docs/quality.md has the figures and the surviving mutants.
#
#   make interleavings  every injection point and pair of both passes
#                       (crates/scalehook-core/tests/interleave.rs; `cargo test` runs all but
#                       the reconcile pass's pairs)
#   make mutants        cargo-mutants (pinned, from crates.io, into .tools/cargo-mutants) over
#                       the removal, deregistration, orphan and provisioning code, against the
#                       unit tests and every test of the core but the interleaving harness
#                       (25 s a mutant) and the fuzz corpus. Slow on 2 cores
#                       (about a minute a mutant), so outside `make test`; narrow it with
#                       MUTANTS_SCOPE, e.g.
#                       MUTANTS_SCOPE="--file crates/scalehook-core/src/service/removal.rs".
#                       --in-place: mutates the work tree (and restores it), reusing target/;
#                       do not edit while it runs. Results in target/mutants/mutants.out.

CARGO_MUTANTS_VERSION := 27.1.0
MUTANTS_TESTS := --lib --test removal --test github_service --test service --test properties \
	--test model --test interruption --test overflow --test hand_on --test housekeeping \
	--test fixtures --test refusals
MUTANTS_TOOLS := $(CURDIR)/.tools/cargo-mutants
CARGO_MUTANTS := $(MUTANTS_TOOLS)/bin/cargo-mutants
MUTANTS_SCOPE ?= --file crates/scalehook-core/src/service/removal.rs \
	--file crates/scalehook-core/src/policy.rs \
	--file crates/scalehook-core/src/provision.rs

.PHONY: interleavings mutants mutants-deps

interleavings: ## every interleaving of both passes with GitHub's world (tests/interleave.rs)
	$(CARGO) test -p scalehook-core --locked --test interleave -- --include-ignored --nocapture

mutants-deps: $(CARGO_MUTANTS) ## install cargo-mutants (pinned) under .tools/cargo-mutants

$(CARGO_MUTANTS):
	$(CARGO) install --quiet --root $(MUTANTS_TOOLS) cargo-mutants --version $(CARGO_MUTANTS_VERSION) --locked

mutants: mutants-deps ## mutation testing of scale-in, deregistration, orphans, provisioning
	$(CARGO_MUTANTS) mutants --in-place $(MUTANTS_SCOPE) --package scalehook-core \
		--timeout 120 --output target/mutants -- $(MUTANTS_TESTS)
