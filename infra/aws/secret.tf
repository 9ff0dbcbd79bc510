# The webhook secret. The function reads it once per execution environment, at start, from
# Secrets Manager (the module's own store, or `webhook_secret_arn`) or from an existing SSM
# SecureString (`webhook_secret_ssm_parameter_name`); the Lambda environment carries only the
# secret's ARN or the parameter's name. Several lines allow rotation, current first.
#
# Why Secrets Manager by default: a burst of deliveries starts many execution environments at
# once, each reading the secret. GetSecretValue is allowed 10,000 requests per second per
# account and region; SSM GetParameter shares 40 per second (standard throughput) across the
# whole account and region, and a burst past it answers ThrottlingException at start-up. See
# docs/aws.md ("Where the secret is read from").

resource "aws_secretsmanager_secret" "webhook_secret" {
  #checkov:skip=CKV2_AWS_57:Rotation cannot be automatic: the new webhook secret must be set in GitHub too; the module's rotation (a second line, webhook_secret_version) is the procedure.
  #checkov:skip=CKV_AWS_149:A customer-managed key is offered (secret_kms_key_arn); the default is the AWS managed key of Secrets Manager, which needs no key policy work.
  count                   = local.secret_given ? 1 : 0
  name                    = "${var.name}/webhook-secret"
  description             = "GitHub webhook secret(s) for scalehook, one per line, current first"
  kms_key_id              = var.secret_kms_key_arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "webhook_secret" {
  count     = local.secret_given ? 1 : 0
  secret_id = aws_secretsmanager_secret.webhook_secret[0].id
  # Write-only: the value is sent to Secrets Manager but never stored in the state or plan.
  secret_string_wo         = var.webhook_secret
  secret_string_wo_version = var.webhook_secret_version
}

locals {
  # A Secrets Manager secret is read when the module stores the value or an ARN is given.
  secret_in_secrets_manager = local.secret_given || var.webhook_secret_arn != null
  secret_arn = (
    local.secret_given ? aws_secretsmanager_secret.webhook_secret[0].arn : var.webhook_secret_arn
  )
  secret_ssm_parameter_name = var.webhook_secret_ssm_parameter_name
  # ARN of the parameter the function may read (names may or may not start with '/').
  secret_ssm_parameter_arn = local.secret_ssm_parameter_name == null ? null : (
    "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/${trimprefix(local.secret_ssm_parameter_name, "/")}"
  )

  secret_env = local.secret_in_secrets_manager ? {
    SCALEHOOK_WEBHOOK_SECRET_ARN = local.secret_arn
    } : {
    SCALEHOOK_WEBHOOK_SECRET_SSM_PARAMETER = local.secret_ssm_parameter_name
  }
}
