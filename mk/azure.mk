# Azure: Azurite (Table Storage emulator) for the ledger tests, the function app zip, and a
# start-up measurement of the custom handler. See docs/azure.md.

AZURITE_VERSION := 3.37.0
AZURITE_DIR := $(CURDIR)/.tools/azurite
AZURE_MUSL_TARGET := x86_64-unknown-linux-musl
AZURE_ZIP := target/azure/scalehook-azure.zip
# The tests find azurite-table through this variable (fallback: the same path under .tools/).
export SCALEHOOK_AZURITE_TABLE := $(AZURITE_DIR)/node_modules/.bin/azurite-table

TEST_DEPS += azure-deps
TEST_STEPS += azure-zip-check

.PHONY: azure-deps azure-zip azure-zip-check azure-test azure-startup

azure-deps: $(SCALEHOOK_AZURITE_TABLE) ## install Azurite (npm, pinned) under .tools/azurite

$(SCALEHOOK_AZURITE_TABLE):
	@command -v npm >/dev/null || { echo "npm is needed for Azurite: apt-get install npm"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix $(AZURITE_DIR) azurite@$(AZURITE_VERSION)
	@test -x $@ || { echo "azurite-table was not installed at $@"; exit 1; }

azure-test: azure-deps ## the Azure crate's tests (Azurite ledger, ARM double, handler end to end)
	$(CARGO) test -p scalehook-azure --locked

# A static musl build needs a musl C compiler for ring (reqwest's rustls): Debian's musl-tools.
azure-zip: ## build the static x86_64 musl handler and zip the function app under target/azure/
	@rustup target list --installed | grep -qx $(AZURE_MUSL_TARGET) || rustup target add $(AZURE_MUSL_TARGET)
	@command -v musl-gcc >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get install -y -qq musl-tools >/dev/null; \
	  else echo "musl-gcc is needed: apt-get install musl-tools"; exit 1; fi; }
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --locked --release -p scalehook-azure \
	  --bin handler --target $(AZURE_MUSL_TARGET)
	python3 crates/scalehook-azure/package.py \
	  --handler target/$(AZURE_MUSL_TARGET)/release/handler \
	  --app crates/scalehook-azure/function-app --out $(AZURE_ZIP)

azure-zip-check: azure-zip ## build the zip and check its layout (host.json at root, handler 0755, static)
	python3 crates/scalehook-azure/package.py --check $(AZURE_ZIP)

azure-startup: azure-deps ## measure the handler's start-up (process start to first answer), median of runs
	$(CARGO) build --locked --release -p scalehook-azure --bin handler
	python3 crates/scalehook-azure/startup.py target/release/handler
