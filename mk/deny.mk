# The dependency graph against deny.toml with cargo-deny (crates.io, pinned, `cargo install
# --locked`) under .tools/cargo-deny, installed once:
#
#   make deny              licenses, bans and sources (no network needed)
#   make deny-advisories   RustSec advisories: fetches the advisory database
#
# Both run in the GitHub workflows (.github/workflows/deny.yml on every push, pull request and
# daily; release.yml before building). Not in `make test`: the first install of cargo-deny
# builds it from source, 10 min of wall clock here on a loaded 2-core machine (190 s of CPU).

CARGO_DENY_VERSION := 0.20.2
CARGO_DENY_ROOT := $(CURDIR)/.tools/cargo-deny
CARGO_DENY := $(CARGO_DENY_ROOT)/bin/cargo-deny
CARGO_DENY_STAMP := $(CARGO_DENY_ROOT)/.installed-$(CARGO_DENY_VERSION)

.PHONY: deny-deps deny deny-advisories

deny-deps: $(CARGO_DENY_STAMP) ## install cargo-deny (pinned, --locked) under .tools/cargo-deny

$(CARGO_DENY_STAMP):
	rm -rf $(CARGO_DENY_ROOT)
	$(CARGO) install --locked --quiet --root $(CARGO_DENY_ROOT) cargo-deny --version $(CARGO_DENY_VERSION)
	touch $@

deny: deny-deps ## licenses, bans and sources of every dependency (deny.toml)
	$(CARGO_DENY) --locked check --hide-inclusion-graph licenses bans sources

deny-advisories: deny-deps ## RustSec advisories for every dependency (fetches the database)
	$(CARGO_DENY) --locked check --hide-inclusion-graph advisories
