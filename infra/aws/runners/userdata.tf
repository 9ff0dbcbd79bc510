# The instance's user data, one self-contained script: the settings below, then runner/lib.sh
# and runner/aws/boot.sh unchanged (what runner/render.sh aws prints; shipped in this
# repository and tested there as rendered). Kept apart from the resources so the tests can
# render it with `terraform console`, without providers.

locals {
  boot_settings = {
    SCALEHOOK_JIT_PARAMETER_PREFIX         = var.jit_parameter_prefix
    SCALEHOOK_JIT_WAIT_SECONDS             = tostring(var.runner_wait_seconds)
    SCALEHOOK_RUNNER_DIR                   = var.runner_dir
    SCALEHOOK_RUNNER_USER                  = var.runner_user
    SCALEHOOK_RUNNER_URL                   = try(var.runner_package.url, "")
    SCALEHOOK_RUNNER_SHA256                = try(var.runner_package.sha256, "")
    SCALEHOOK_BLOCK_IMDS_FOR_RUNNER        = var.block_imds_for_runner ? "1" : "0"
    SCALEHOOK_ALLOW_PRIVILEGED_RUNNER_USER = var.allow_privileged_runner_user ? "1" : "0"
  }

  # Single-quoted for bash: a quote inside a value becomes '\''.
  user_data = join("\n", concat(
    ["#!/bin/bash", "# scalehook runner settings (infra/aws/runners); runner/lib.sh and runner/aws/boot.sh follow."],
    [for k in sort(keys(local.boot_settings)) : "export ${k}='${replace(local.boot_settings[k], "'", "'\\''")}'"],
    [file("${path.module}/../../../runner/lib.sh")],
    [file("${path.module}/../../../runner/aws/boot.sh")],
  ))
}
