# Alarms on the Lambda's own metrics and on scalehook's EMF metrics (namespace "Scalehook").
# Each says in its description which runbook section to open (docs/runbook.md).

locals {
  emf_namespace    = "Scalehook"
  reconcile_period = var.reconcile_interval_minutes * 60
  alarm_actions = concat(
    var.alarm_actions,
    [for t in aws_sns_topic.alarms : t.arn],
  )
  runbook = var.runbook_url
}

resource "aws_sns_topic" "alarms" {
  #checkov:skip=CKV_AWS_26:Encryption is the sns_kms_key_arn variable: CloudWatch alarms cannot publish to a topic under the AWS managed alias/aws/sns key, and a CMK needs a key policy this module cannot write for you. Alarm messages carry no secret.
  count             = var.create_sns_topic ? 1 : 0
  name              = "${var.name}-alarms"
  kms_master_key_id = var.sns_kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "alarms_topic" {
  count = var.create_sns_topic ? 1 : 0
  statement {
    sid       = "CloudWatchAlarmsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms[0].arn]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_sns_topic_policy" "alarms" {
  count  = var.create_sns_topic ? 1 : 0
  arn    = aws_sns_topic.alarms[0].arn
  policy = data.aws_iam_policy_document.alarms_topic[0].json
}

resource "aws_sns_topic_subscription" "alarm_emails" {
  for_each  = var.create_sns_topic ? toset(var.alarm_emails) : toset([])
  topic_arn = aws_sns_topic.alarms[0].arn
  protocol  = "email"
  endpoint  = each.value
}

# ---- The function itself ----------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "errors" {
  alarm_name          = "${var.name}-function-errors"
  alarm_description   = "scalehook Lambda invocations failed (crash, timeout, bad start-up configuration). Runbook: ${local.runbook}#function-errors"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.scalehook.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  # No invocations means no errors.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = var.tags
}

resource "aws_cloudwatch_metric_alarm" "throttles" {
  alarm_name          = "${var.name}-function-throttles"
  alarm_description   = "scalehook Lambda invocations were throttled: those deliveries got a 429 and are lost until redelivered. Runbook: ${local.runbook}#throttles-and-cloud-api-errors"
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  dimensions          = { FunctionName = aws_lambda_function.scalehook.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# ---- scalehook's EMF metrics ------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "signature_failures" {
  alarm_name          = "${var.name}-signature-failures"
  alarm_description   = "More than ${var.signature_failure_threshold} deliveries in 5 minutes had a missing or wrong X-Hub-Signature-256 (answered 401). Runbook: ${local.runbook}#signature-failures"
  namespace           = local.emf_namespace
  metric_name         = "SignatureFailures"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.signature_failure_threshold
  # The dimensionless series only has data when deliveries arrive.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = var.tags
}

resource "aws_cloudwatch_metric_alarm" "cloud_api_errors" {
  alarm_name          = "${var.name}-cloud-api-errors"
  alarm_description   = "Deliveries failed on a ledger (DynamoDB) or fleet (Auto Scaling) call or timed out, answered 5xx: redeliver them once the cause is fixed. Runbook: ${local.runbook}#throttles-and-cloud-api-errors"
  namespace           = local.emf_namespace
  metric_name         = "CloudApiErrors"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "reconcile_failures" {
  alarm_name          = "${var.name}-reconcile-failures"
  alarm_description   = "A reconcile pass failed for at least one pool. Runbook: ${local.runbook}#reconcile-failing"
  namespace           = local.emf_namespace
  metric_name         = "ReconcileFailures"
  statistic           = "Sum"
  period              = local.reconcile_period
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  # Missing data is covered by the reconcile-not-running alarm below.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = var.tags
}

resource "aws_cloudwatch_metric_alarm" "reconcile_not_running" {
  alarm_name          = "${var.name}-reconcile-not-running"
  alarm_description   = "No reconcile pass has reported for 3 schedule intervals (schedule disabled, function failing at start, or throttled). Runbook: ${local.runbook}#reconcile-failing"
  namespace           = local.emf_namespace
  metric_name         = "ReconcileRuns"
  statistic           = "Sum"
  period              = local.reconcile_period
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  # Here silence is the failure.
  treat_missing_data = "breaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = var.tags
}

resource "aws_cloudwatch_metric_alarm" "pool_at_max" {
  for_each            = { for p in var.pools : p.name => p }
  alarm_name          = "${var.name}-pool-${each.key}-at-max"
  alarm_description   = "Pool ${each.key} has been at its max (${each.value.max}) with jobs queued for ${var.at_max_alarm_periods} reconcile intervals: jobs are waiting for capacity. Runbook: ${local.runbook}#queue-building-at-max-capacity"
  namespace           = local.emf_namespace
  metric_name         = "AtMaxWithQueue"
  dimensions          = { Pool = each.key }
  statistic           = "Maximum"
  period              = local.reconcile_period
  evaluation_periods  = var.at_max_alarm_periods
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  # Written on every reconcile; a gap means reconcile is not running, which has its own
  # alarm, so a gap keeps this alarm's state rather than clearing or raising it.
  treat_missing_data = "ignore"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = var.tags
}
