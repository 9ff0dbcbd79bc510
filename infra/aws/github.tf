# The GitHub App's private key and JIT provisioning. The key reaches the function by
# reference only (an SSM SecureString parameter name or a Secrets Manager secret ARN), read
# once at start like the webhook secret; the role may read that one parameter or secret (iam.tf).
# The JIT parameter prefix is the runner modules' (infra/aws/runners `jit_parameter_prefix`):
# scalehook writes `<prefix>/<instance id>` there, encrypted with jit_kms_key_arn when given
# (iam.tf grants the writes, the housekeeping deletes and the launch hooks' completion).

locals {
  app_key_sources = length(compact([
    var.github_app_key_ssm_parameter_name == null ? "" : "ssm",
    var.github_app_key_secret_arn == null ? "" : "secretsmanager",
  ]))
  app_key_ssm_parameter_arn = var.github_app_key_ssm_parameter_name == null ? null : (
    "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/${trimprefix(var.github_app_key_ssm_parameter_name, "/")}"
  )

  github_env = merge(
    var.github_app_key_ssm_parameter_name == null ? {} : { SCALEHOOK_GITHUB_APP_KEY_SSM_PARAMETER = var.github_app_key_ssm_parameter_name },
    var.github_app_key_secret_arn == null ? {} : { SCALEHOOK_GITHUB_APP_KEY_ARN = var.github_app_key_secret_arn },
    var.github == null ? {} : { SCALEHOOK_JIT_PARAMETER_PREFIX = var.jit_parameter_prefix },
    var.github == null || var.jit_kms_key_arn == null ? {} : { SCALEHOOK_JIT_KMS_KEY_ID = var.jit_kms_key_arn },
  )
}
