# Infrastructure checks: terraform fmt, a checkov security scan, and the pytest suite that
# parses the Terraform modules (least privilege, variables, rendered config, alarms, the
# providers' schemas: infra/tests/schemas/README.md).
# Tools live in two venvs under .tools/infra-venv/ (checkov pins dependencies that pytest's
# cannot share). Terraform itself comes from PATH (1.11+; providers are never downloaded).

INFRA_VENV := $(CURDIR)/.tools/infra-venv
# Versions and hashes: mk/lock/checkov.txt, mk/lock/infra-pytest.txt.
INFRA_CHECKOV_STAMP := $(INFRA_VENV)/checkov/.installed-lock
INFRA_PYTEST_STAMP := $(INFRA_VENV)/pytest/.installed-lock
# The tests find their tools through these (fallback: the same paths under .tools/).
export SCALEHOOK_INFRA_PYTHON := $(INFRA_VENV)/pytest/bin/python
export SCALEHOOK_CHECKOV := $(INFRA_VENV)/checkov/bin/checkov
export SCALEHOOK_TERRAFORM ?= terraform

TEST_DEPS += infra-deps
TEST_STEPS += infra-test

.PHONY: infra-deps infra-test infra-fmt infra-checkov infra-pytest

infra-deps: $(INFRA_CHECKOV_STAMP) $(INFRA_PYTEST_STAMP) ## install checkov, pytest and python-hcl2 (pinned) under .tools/infra-venv

$(INFRA_CHECKOV_STAMP): mk/lock/checkov.txt
	rm -rf $(INFRA_VENV)/checkov
	python3 -m venv $(INFRA_VENV)/checkov
	$(INFRA_VENV)/checkov/bin/$(PIP_LOCKED) mk/lock/checkov.txt
	touch $@

$(INFRA_PYTEST_STAMP): mk/lock/infra-pytest.txt
	rm -rf $(INFRA_VENV)/pytest
	python3 -m venv $(INFRA_VENV)/pytest
	$(INFRA_VENV)/pytest/bin/$(PIP_LOCKED) mk/lock/infra-pytest.txt
	touch $@

infra-test: infra-fmt infra-checkov infra-pytest ## all infra checks (fmt, checkov, HCL tests)

infra-fmt: ## terraform fmt -check over infra/
	@command -v $(SCALEHOOK_TERRAFORM) >/dev/null || { echo "terraform (1.11+) is needed on PATH, or set SCALEHOOK_TERRAFORM"; exit 1; }
	TF_CLI_CONFIG_FILE=/dev/null $(SCALEHOOK_TERRAFORM) fmt -check -recursive -diff infra

# --skip-download: no calls to the Prisma Cloud API (unreachable here, and not needed).
infra-checkov: infra-deps ## checkov static security scan of infra/ (fails on any failed check)
	$(SCALEHOOK_CHECKOV) --directory infra --framework terraform --compact --quiet --skip-download

# No .pytest_cache or __pycache__ left in the tree.
infra-pytest: infra-deps ## the HCL tests under infra/tests
	PYTHONDONTWRITEBYTECODE=1 $(SCALEHOOK_INFRA_PYTHON) -m pytest -q -p no:cacheprovider infra/tests

# Not part of `make test`: rewrites the committed extracts under infra/tests/schemas/ (see its
# README.md) from the provider bindings (npm, PyPI), cached under .tools/provider-schemas.
# AZAPI_REPO=<clone of Azure/terraform-provider-azapi, with tags> rewrites the azapi type data too;
# TYPES="resource:aws_x data:aws_y" extracts types infra/ does not use yet.
.PHONY: infra-schema-extract
infra-schema-extract: $(INFRA_PYTEST_STAMP) ## rewrite infra/tests/schemas from the provider bindings (npm, PyPI)
	PYTHONDONTWRITEBYTECODE=1 $(SCALEHOOK_INFRA_PYTHON) infra/tests/schema_extract.py $(if $(AZAPI_REPO),--azapi-repo $(AZAPI_REPO)) $(foreach t,$(TYPES),--type $(t))
