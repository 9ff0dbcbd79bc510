# Azure: Azurite (Table Storage emulator) for the ledger tests, the function app zip, and a
# start-up measurement of the custom handler. See docs/azure.md.

# Version and integrity hashes: mk/lock/npm/azurite/package-lock.json.
AZURITE_DIR := $(CURDIR)/.tools/azurite
AZURE_MUSL_TARGET := x86_64-unknown-linux-musl
AZURE_ZIP := target/azure/scalehook-azure.zip
# Its own target dir: the musl release build shares nothing with the debug/test builds, and
# does not wait on their lock.
AZURE_TARGET_DIR := target/azure-musl
# The tests find azurite-table through this variable (fallback: the same path under .tools/).
SCALEHOOK_AZURITE_TABLE ?= $(AZURITE_DIR)/node_modules/.bin/azurite-table
export SCALEHOOK_AZURITE_TABLE

TEST_DEPS += azure-deps
# The packager and the function app files are checked on every `make test` with the debug
# handler (cheap); the static musl release build is `make azure-zip`, which checks itself.
TEST_STEPS += azure-package-check

.PHONY: azure-deps azure-zip azure-package-check azure-test azure-startup

azure-deps: $(SCALEHOOK_AZURITE_TABLE) ## install Azurite (npm, pinned) under .tools/azurite

$(SCALEHOOK_AZURITE_TABLE): mk/lock/npm/azurite/package-lock.json
	@command -v npm >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "npm is needed for Azurite: apt-get install nodejs npm"; exit 1; fi; }
	$(call npm_locked,$(AZURITE_DIR),azurite)
	@test -x $@ || { echo "azurite-table was not installed at $@"; exit 1; }
	@touch $@

azure-test: azure-deps ## the Azure crate's tests (Azurite ledger, ARM double, handler end to end)
	$(CARGO) test -p scalehook-azure --locked

# A static musl build needs a musl C compiler for ring (reqwest's rustls): Debian's musl-tools.
# Installed as root, or through password-less sudo (GitHub's hosted runners run as a user
# with it); otherwise the target says what to install.
azure-zip: ## build the static x86_64 musl handler and zip the function app under target/azure/
	@rustup target list --installed | grep -qx $(AZURE_MUSL_TARGET) || rustup target add $(AZURE_MUSL_TARGET)
	@command -v musl-gcc >/dev/null || { \
	  if ! command -v apt-get >/dev/null; then echo "musl-gcc is needed: install musl-tools (Debian/Ubuntu) or your system's musl-gcc"; exit 1; \
	  elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq musl-tools >/dev/null; \
	  else echo "musl-gcc is needed: sudo apt-get install musl-tools"; exit 1; fi; }
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --locked --release -p scalehook-azure \
	  --bin handler --target $(AZURE_MUSL_TARGET) --target-dir $(AZURE_TARGET_DIR)
	python3 crates/scalehook-azure/package.py \
	  --handler $(AZURE_TARGET_DIR)/$(AZURE_MUSL_TARGET)/release/handler \
	  --app crates/scalehook-azure/function-app --out $(AZURE_ZIP)
	python3 crates/scalehook-azure/package.py --check $(AZURE_ZIP)

azure-package-check: ## zip the function app with the debug handler and check the layout
	$(CARGO) build --locked -p scalehook-azure --bin handler
	python3 crates/scalehook-azure/package.py --handler target/debug/handler \
	  --app crates/scalehook-azure/function-app --out target/azure/check/dev.zip
	python3 crates/scalehook-azure/package.py --check target/azure/check/dev.zip --allow-dynamic

azure-startup: azure-zip ## measure the zipped (musl) handler's start-up: process start to first answer, median
	python3 crates/scalehook-azure/startup.py $(AZURE_TARGET_DIR)/$(AZURE_MUSL_TARGET)/release/handler
