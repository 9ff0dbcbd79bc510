# AWS part (crates/scalehook-aws): moto for the tests, the Lambda zips, cold-start figures.
#
#   make aws-test-deps    moto[server] into .tools/moto-venv (part of `make test`)
#   make lambda-zip       static musl builds for x86_64 and arm64, zipped under target/lambda/
#   make aws-cold-start   process start -> first answered event, release build, median of 15

.PHONY: aws-test-deps lambda-zip aws-cold-start aws-zig

AWS_MOTO_VENV := $(CURDIR)/.tools/moto-venv
export SCALEHOOK_MOTO_PYTHON := $(AWS_MOTO_VENV)/bin/python
AWS_ZIG_VENV := $(CURDIR)/.tools/zig-venv
AWS_LAMBDA_TARGETS := x86_64-unknown-linux-musl aarch64-unknown-linux-musl
AWS_LAMBDA_DIR := target/lambda

TEST_DEPS += aws-test-deps

aws-test-deps: $(AWS_MOTO_VENV)/.installed-lock ## install moto (the AWS tests' server; mk/lock/moto.txt) into .tools/

$(AWS_MOTO_VENV)/.installed-lock: mk/lock/moto.txt
	rm -rf $(AWS_MOTO_VENV)
	python3 -m venv $(AWS_MOTO_VENV)
	$(AWS_MOTO_VENV)/bin/$(PIP_LOCKED) mk/lock/moto.txt
	$(AWS_MOTO_VENV)/bin/python -c 'import moto.server'
	@touch $@

# cargo-zigbuild and Zig from PyPI: Zig is the C compiler and linker for the musl targets
# (aws-lc-sys builds C), for both architectures, with no system cross toolchain.
# Both from mk/lock/zig.txt (hashes).
$(AWS_ZIG_VENV)/bin/cargo-zigbuild: mk/lock/zig.txt
	rm -rf $(AWS_ZIG_VENV)
	python3 -m venv $(AWS_ZIG_VENV)
	$(AWS_ZIG_VENV)/bin/$(PIP_LOCKED) mk/lock/zig.txt
	@test -x $@ && touch $@

aws-zig: $(AWS_ZIG_VENV)/bin/cargo-zigbuild

lambda-zip: aws-zig ## build the Lambda zips (x86_64 and arm64, static musl) under target/lambda/
	rustup target add $(AWS_LAMBDA_TARGETS)
	@mkdir -p $(AWS_LAMBDA_DIR)
	@set -e; for t in $(AWS_LAMBDA_TARGETS); do \
	  PATH="$(AWS_ZIG_VENV)/bin:$$PATH" $(CARGO) zigbuild --release --locked -p scalehook-aws --bin bootstrap --target $$t; \
	  arch=$${t%%-*}; [ $$arch = aarch64 ] && arch=arm64; \
	  python3 crates/scalehook-aws/scripts/lambda_zip.py pack target/$$t/release/bootstrap $(AWS_LAMBDA_DIR)/scalehook-$$arch.zip; \
	  python3 crates/scalehook-aws/scripts/lambda_zip.py check $(AWS_LAMBDA_DIR)/scalehook-$$arch.zip; \
	  echo "$(AWS_LAMBDA_DIR)/scalehook-$$arch.zip: $$(stat -c %s $(AWS_LAMBDA_DIR)/scalehook-$$arch.zip) bytes (bootstrap $$(stat -c %s target/$$t/release/bootstrap) bytes)"; \
	done

aws-cold-start: aws-test-deps ## median cold start of the release x86_64 bootstrap (needs `make lambda-zip` first)
	@test -x target/x86_64-unknown-linux-musl/release/bootstrap || { echo "run make lambda-zip first"; exit 1; }
	SCALEHOOK_BOOTSTRAP=$(CURDIR)/target/x86_64-unknown-linux-musl/release/bootstrap \
	  $(CARGO) test --locked -p scalehook-aws --test lambda_e2e -- --ignored --nocapture cold_start_measurement
