# TFLint over infra/ (the `terraform` job of .github/workflows/ci.yml, where the rulesets
# download): `tflint --init`, then from infra/: tflint --recursive --config "$(realpath ../.tflint.hcl)".
# Versions pinned; bump them together with the workflow's TFLint version.

config {
  # Local modules (infra/aws/runners, the examples' calls) are inspected with their callers' values.
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "recommended"
}

plugin "aws" {
  enabled = true
  version = "0.48.0"
  source  = "github.com/terraform-linters/tflint-ruleset-aws"
}

plugin "azurerm" {
  enabled = true
  version = "0.32.0"
  source  = "github.com/terraform-linters/tflint-ruleset-azurerm"
}
