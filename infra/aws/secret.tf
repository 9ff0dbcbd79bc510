# The webhook secret. The function reads it at start from SSM (a SecureString, several lines
# for rotation, current first) or Secrets Manager; the Lambda environment carries only the
# parameter's name or the secret's ARN.

resource "aws_ssm_parameter" "webhook_secret" {
  count       = local.secret_given ? 1 : 0
  name        = "/${var.name}/webhook-secret"
  description = "GitHub webhook secret(s) for scalehook, one per line, current first"
  type        = "SecureString"
  key_id      = var.secret_kms_key_arn
  # Write-only: the value is sent to SSM but never stored in the Terraform state or plan.
  value_wo         = var.webhook_secret
  value_wo_version = var.webhook_secret_version
  tags             = var.tags
}

locals {
  secret_ssm_parameter_name = (
    local.secret_given ? aws_ssm_parameter.webhook_secret[0].name : var.webhook_secret_ssm_parameter_name
  )
  # ARN of the parameter the function may read (names may or may not start with '/').
  secret_ssm_parameter_arn = local.secret_ssm_parameter_name == null ? null : (
    "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/${trimprefix(local.secret_ssm_parameter_name, "/")}"
  )

  secret_env = var.webhook_secret_arn != null ? {
    SCALEHOOK_WEBHOOK_SECRET_ARN = var.webhook_secret_arn
    } : {
    SCALEHOOK_WEBHOOK_SECRET_SSM_PARAMETER = local.secret_ssm_parameter_name
  }
}
