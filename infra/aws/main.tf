data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region
  account_id = data.aws_caller_identity.current.account_id

  # Whether the secret's value was given. Any expression on a sensitive variable is
  # sensitive, and count cannot be: whether it is set is not the secret.
  secret_given = nonsensitive(var.webhook_secret != null)

  # Exactly one source of the webhook secret; the lambda's precondition enforces it.
  secret_sources = length(compact([
    local.secret_given ? "value" : "",
    var.webhook_secret_ssm_parameter_name == null ? "" : "ssm",
    var.webhook_secret_arn == null ? "" : "secretsmanager",
  ]))

  function_env = merge(
    {
      SCALEHOOK_CONFIG_TOML    = local.config_toml
      SCALEHOOK_DYNAMODB_TABLE = aws_dynamodb_table.ledger.name
      # The secret is read once per execution environment, at start. A new version here
      # changes the function's configuration, so Lambda starts new execution environments
      # and the warm ones (holding the old secret) are retired: a rotation reaches them.
      SCALEHOOK_WEBHOOK_SECRET_VERSION = tostring(var.webhook_secret_version)
    },
    local.secret_env,
    local.github_env,
  )

  function_name  = var.name
  log_group_name = "/aws/lambda/${var.name}"
}

resource "aws_cloudwatch_log_group" "function" {
  #checkov:skip=CKV_AWS_338:Retention is log_retention_days (30 by default): delivery lines matter for the 3-day redelivery window and incident review, not for a year; raise it where policy requires.
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

resource "aws_lambda_function" "scalehook" {
  #checkov:skip=CKV_AWS_50:X-Ray tracing would add xray:Put* permissions and a per-request cost; one delivery is one log line with its latency, which is what operators read.
  #checkov:skip=CKV_AWS_116:No dead-letter queue: the function URL is synchronous (GitHub sees the 5xx and the delivery is redelivered) and a lost scheduled reconcile is repaired by the next one.
  #checkov:skip=CKV_AWS_117:The function calls only public AWS APIs (Auto Scaling, DynamoDB, SSM); a VPC would need NAT or endpoints for no gain. Attach one with vpc_config in a fork if policy requires it.
  #checkov:skip=CKV_AWS_173:The environment holds no secret (only the pool configuration and resource names); the secret is read from SSM or Secrets Manager at start.
  #checkov:skip=CKV_AWS_272:Code signing needs a signing profile outside this module; the zip's SHA-256 is pinned through source_code_hash.
  #checkov:skip=CKV_AWS_115:Reserved concurrency is a variable (reserved_concurrency), unset by default because accounts with the default quota of 10 cannot reserve any; the README says how to size it.
  function_name    = local.function_name
  description      = "scalehook: GitHub workflow_job webhooks -> runner pool capacity"
  role             = aws_iam_role.function.arn
  filename         = var.lambda_zip_path
  source_code_hash = filebase64sha256(var.lambda_zip_path)
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  memory_size      = var.memory_mb
  timeout          = var.timeout_seconds

  reserved_concurrent_executions = var.reserved_concurrency == null ? -1 : var.reserved_concurrency
  # Each change publishes a version, which the `launch` alias follows (see below).
  publish = true

  environment {
    variables = local.function_env
  }

  logging_config {
    # Text: each stdout line reaches the log group as is, which EMF extraction needs.
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function.name
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.github == null ? local.app_key_sources == 0 : local.app_key_sources == 1
      error_message = "With github set exactly one of github_app_key_ssm_parameter_name and github_app_key_secret_arn; without github, neither."
    }
    precondition {
      condition     = local.secret_sources == 1
      error_message = "Set exactly one of webhook_secret, webhook_secret_ssm_parameter_name and webhook_secret_arn."
    }
    precondition {
      # Lambda limits the environment to 4 KB in all; about 25 pools fit (infra/tests renders
      # it, and the role's policy, for many pools).
      condition     = sum([for k, v in local.function_env : length(k) + length(v)]) <= 4096
      error_message = "The rendered configuration makes the Lambda environment larger than 4 KB: shorten labels or split pools across deployments."
    }
    precondition {
      # A released zip: its published SHA-256 (the release's SHA256SUMS) must match the file.
      condition     = var.lambda_zip_sha256 == null || try(filesha256(var.lambda_zip_path) == lower(var.lambda_zip_sha256), false)
      error_message = "lambda_zip_path does not match lambda_zip_sha256: download the release asset again and check it against the release's SHA256SUMS."
    }
    precondition {
      condition     = length(var.alarm_emails) == 0 || var.create_sns_topic
      error_message = "alarm_emails needs create_sns_topic = true."
    }
  }

  depends_on = [aws_iam_role_policy.function]
}

# ---- Scheduled reconcile ----------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "reconcile" {
  name                = "${var.name}-reconcile"
  description         = "scalehook reconcile pass: expire stale jobs, restore standby, repair capacity"
  schedule_expression = var.reconcile_interval_minutes == 1 ? "rate(1 minute)" : "rate(${var.reconcile_interval_minutes} minutes)"
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "reconcile" {
  rule = aws_cloudwatch_event_rule.reconcile.name
  arn  = aws_lambda_function.scalehook.arn

  retry_policy {
    # A reconcile older than one interval is superseded by the next one.
    maximum_event_age_in_seconds = var.reconcile_interval_minutes * 60
    maximum_retry_attempts       = 0
  }
}

# Scheduled events are asynchronous invocations, which Lambda would retry twice on failure;
# the next scheduled pass does the same work, so a failed pass is not retried. This setting
# is the unqualified function's: the schedule invokes that, the launch events do not.
resource "aws_lambda_function_event_invoke_config" "reconcile" {
  function_name                = aws_lambda_function.scalehook.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = var.reconcile_interval_minutes * 60
}

# ---- Launch lifecycle events (infra/aws/runners) ----------------------------------------
# The runner groups' launch events go to this alias, whose asynchronous invocations Lambda
# retries (twice, about one and three minutes later) when a mint fails or the function
# crashes, within the instance's wait in Pending:Wait. A retried event is safe: scalehook
# finds the stored parameter and mints nothing. Instances whose event never arrived (AWS
# delivers them best effort) are finished by reconcile.
resource "aws_lambda_alias" "launch" {
  name             = "launch"
  description      = "Launch lifecycle events of the runner groups: retried asynchronous invocations"
  function_name    = aws_lambda_function.scalehook.function_name
  function_version = aws_lambda_function.scalehook.version
}

resource "aws_lambda_function_event_invoke_config" "launch" {
  function_name                = aws_lambda_function.scalehook.function_name
  qualifier                    = aws_lambda_alias.launch.name
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = var.launch_event_max_age_seconds
}

resource "aws_lambda_permission" "reconcile" {
  statement_id  = "AllowReconcileSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.scalehook.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.reconcile.arn
}
