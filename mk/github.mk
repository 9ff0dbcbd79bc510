# GitHub part (crates/scalehook-github): the GitHub API test double's dependencies.
#
#   make github-test-deps   GitHub's OpenAPI description (@octokit/openapi, npm, pinned) under
#                           .tools/github-openapi and jsonschema (PyPI, pinned) in
#                           .tools/github-venv (part of `make test`)
#   make github-test        the GitHub client's tests against the double
#
# The double itself is crates/scalehook-github-double (docs/github.md).

# Versions and hashes: mk/lock/npm/github-openapi/package-lock.json, mk/lock/github.txt.
GITHUB_OPENAPI_DIR := $(CURDIR)/.tools/github-openapi
GITHUB_VENV := $(CURDIR)/.tools/github-venv
# The tests find both through these variables (fallback: the same paths under .tools/).
export SCALEHOOK_GITHUB_OPENAPI ?= $(GITHUB_OPENAPI_DIR)/node_modules/@octokit/openapi/generated
export SCALEHOOK_GITHUB_DOUBLE_PYTHON ?= $(GITHUB_VENV)/bin/python

TEST_DEPS += github-test-deps

.PHONY: github-test-deps github-test

github-test-deps: $(GITHUB_OPENAPI_DIR)/.installed-lock $(GITHUB_VENV)/.installed-lock ## install the GitHub double's OpenAPI description and jsonschema under .tools/

$(GITHUB_OPENAPI_DIR)/.installed-lock: mk/lock/npm/github-openapi/package-lock.json
	@command -v npm >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "npm is needed for GitHub's OpenAPI description: apt-get install nodejs npm"; exit 1; fi; }
	$(call npm_locked,$(GITHUB_OPENAPI_DIR),github-openapi)
	@test -s $(GITHUB_OPENAPI_DIR)/node_modules/@octokit/openapi/generated/api.github.com.json || { echo "@octokit/openapi did not install its description"; exit 1; }
	@touch $@

$(GITHUB_VENV)/.installed-lock: mk/lock/github.txt
	rm -rf $(GITHUB_VENV)
	python3 -m venv $(GITHUB_VENV)
	$(GITHUB_VENV)/bin/$(PIP_LOCKED) mk/lock/github.txt
	$(GITHUB_VENV)/bin/python -c 'import jsonschema, referencing'
	@touch $@

github-test: github-test-deps ## the GitHub client's tests against the OpenAPI-checking double
	$(CARGO) test -p scalehook-github --locked
