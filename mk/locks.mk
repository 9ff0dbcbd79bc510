# Test and build tools from PyPI and npm are installed from lock files with hashes, never by
# name alone: mk/lock/<venv>.txt (pip, every package of the venv pinned with its sha256, from
# mk/lock/<venv>.in) and mk/lock/npm/<tool>/package-lock.json (npm, with integrity hashes).
# A changed or substituted package fails the install. Each fragment's stamp depends on its
# lock file, so a new lock reinstalls. Each lock holds the hashes of every file PyPI has for
# each pinned version (all platforms), and no environment markers: the same packages install
# on any Linux and Python 3.11+ (resolved on 3.11; CI's ubuntu-latest has 3.12).
#
#   make tool-locks   regenerate every lock from its pins (needs PyPI and npm; review the diff)

PIP_TOOLS_VERSION := 7.7.0
LOCK_VENV := $(CURDIR)/.tools/lock-venv
# pip install from a lock: --require-hashes refuses anything unpinned or unhashed.
PIP_LOCKED := pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r
# npm_locked DIR LOCKDIR: installs exactly LOCKDIR's package-lock.json into DIR (npm ci checks
# every package's integrity hash and refuses a lock that does not match package.json).
npm_locked = rm -rf $(1) && mkdir -p $(1) && cp mk/lock/npm/$(2)/package.json mk/lock/npm/$(2)/package-lock.json $(1)/ \
  && npm ci --silent --no-audit --no-fund --prefix $(1)

.PHONY: tool-locks

tool-locks: ## regenerate mk/lock/*.txt (pip, hashes) and mk/lock/npm/*/package-lock.json from their pins
	rm -rf $(LOCK_VENV)
	python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --disable-pip-version-check pip-tools==$(PIP_TOOLS_VERSION)
	set -e; cd mk/lock; for in in *.in; do \
	  $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --no-header \
	    --no-emit-find-links --no-emit-index-url --output-file "$${in%.in}.txt" "$$in"; \
	done
	set -e; for d in mk/lock/npm/*/; do \
	  (cd "$$d" && rm -f package-lock.json && npm install --package-lock-only --silent --no-audit --no-fund); \
	done
