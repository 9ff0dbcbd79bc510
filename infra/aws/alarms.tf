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
  alarm_description   = "Pool ${each.key} has been at its effective max (the smaller of the pool's max, ${each.value.max}, and its group's max_size) with jobs queued for ${var.at_max_alarm_periods} reconcile intervals: jobs are waiting for capacity. Runbook: ${local.runbook}#queue-building-at-max-capacity"
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

# ---- The groups themselves: launches that fail, capacity that does not arrive -----------
# scalehook sets desired capacity; whether instances come is the group's business. These
# alarms watch what users feel: a desired instance that never starts.

locals {
  # Each group once (several pools may share one).
  pool_groups = toset([for p in var.pools : p.aws_asg])
}

# Auto Scaling sends "EC2 Instance Launch Unsuccessful" to EventBridge for every failed
# launch (capacity, quotas, a bad launch template). The rule needs no target: its
# AWS/Events MatchedEvents metric is what the alarm counts.
resource "aws_cloudwatch_event_rule" "launch_failures" {
  name        = "${var.name}-launch-failures"
  description = "scalehook: failed instance launches in the runner pools' Auto Scaling groups"
  event_pattern = jsonencode({
    source        = ["aws.autoscaling"]
    "detail-type" = ["EC2 Instance Launch Unsuccessful"]
    detail        = { AutoScalingGroupName = sort(tolist(local.pool_groups)) }
  })
  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "launch_failures" {
  alarm_name          = "${var.name}-launch-failures"
  alarm_description   = "An Auto Scaling group of a runner pool failed to launch an instance (see the group's activity history): jobs wait while desired capacity is not met. Runbook: ${local.runbook}#instances-not-launching"
  namespace           = "AWS/Events"
  metric_name         = "MatchedEvents"
  dimensions          = { RuleName = aws_cloudwatch_event_rule.launch_failures.name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  # No failed launch, no event.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = var.tags
}

# Desired minus in service, per group, from the group metrics GroupDesiredCapacity and
# GroupInServiceInstances at 1Minute: infra/aws/runners enables them on its groups; a group
# of your own needs them too (enabled_metrics, metrics_granularity = "1Minute").
resource "aws_cloudwatch_metric_alarm" "below_desired" {
  for_each            = local.pool_groups
  alarm_name          = "${var.name}-group-${each.key}-below-desired"
  alarm_description   = "Group ${each.key} has had fewer instances in service than desired for ${var.below_desired_alarm_minutes} minutes: launches fail or take too long, and queued jobs wait. Runbook: ${local.runbook}#instances-not-launching"
  evaluation_periods  = var.below_desired_alarm_minutes
  datapoints_to_alarm = var.below_desired_alarm_minutes
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  # Without group metrics there is no data: the alarm stays in INSUFFICIENT_DATA (never
  # fires). infra/aws/README.md ("After the first apply") says to check it left that state.
  treat_missing_data = "missing"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = var.tags

  metric_query {
    id          = "missing"
    expression  = "desired - inservice"
    label       = "Instances desired but not in service"
    return_data = true
  }

  metric_query {
    id = "desired"
    metric {
      namespace   = "AWS/AutoScaling"
      metric_name = "GroupDesiredCapacity"
      dimensions  = { AutoScalingGroupName = each.key }
      stat        = "Minimum"
      period      = 60
    }
  }

  metric_query {
    id = "inservice"
    metric {
      namespace   = "AWS/AutoScaling"
      metric_name = "GroupInServiceInstances"
      dimensions  = { AutoScalingGroupName = each.key }
      stat        = "Maximum"
      period      = 60
    }
  }
}

# ---- The GitHub App (only with var.github: in webhook-only mode there are no figures) ----
# Written once per reconcile pass (the state lines); a gap means reconcile is not running,
# which has its own alarm, so gaps keep these alarms' state (treat_missing_data "ignore").

locals {
  github_alarms = var.github == null ? toset([]) : toset(["app"])
  # 10 minutes of passes, at least two (one low reading just before the hourly reset is not
  # a trend).
  rate_limit_alarm_periods = max(2, ceil(10 / var.reconcile_interval_minutes))
  # An hour of passes (12 at the default 5 minutes), at least three.
  removals_refused_alarm_periods = max(3, ceil(60 / var.reconcile_interval_minutes))
}

resource "aws_cloudwatch_metric_alarm" "github_rate_limit_low" {
  for_each          = local.github_alarms
  alarm_name        = "${var.name}-github-rate-limit-low"
  alarm_description = "The GitHub App installation's x-ratelimit-remaining has been below ${var.github_rate_limit_alarm_threshold} for ${local.rate_limit_alarm_periods} reconcile passes: once spent, scale-in, redelivery, job re-checks and JIT runner minting stop until the hourly reset. Runbook: ${local.runbook}#github-rate-limit-low"
  namespace         = local.emf_namespace
  metric_name       = "GitHubRateLimitRemaining"
  # Maximum: every reading of the period was below the threshold.
  statistic           = "Maximum"
  period              = local.reconcile_period
  evaluation_periods  = local.rate_limit_alarm_periods
  datapoints_to_alarm = local.rate_limit_alarm_periods
  comparison_operator = "LessThanThreshold"
  threshold           = var.github_rate_limit_alarm_threshold
  treat_missing_data  = "ignore"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# GitHub's 422 on a runner listed idle is a race a job wins now and then; refused on every
# pass for an hour is a runner GitHub holds as busy while listing it idle (hung, or offline
# with a stale job), which keeps its instance or registration indefinitely.
resource "aws_cloudwatch_metric_alarm" "runner_removals_refused" {
  for_each            = var.github == null ? toset([]) : toset(local.pool_names)
  alarm_name          = "${var.name}-pool-${each.key}-runner-removals-refused"
  alarm_description   = "GitHub refused (422, runner busy) deregistrations of pool ${each.key} on every reconcile pass for an hour: a runner stuck busy holds an instance. Runbook: ${local.runbook}#runner-deregistration-refused-repeatedly"
  namespace           = local.emf_namespace
  metric_name         = "RunnerRemovalsRefused"
  dimensions          = { Pool = each.key }
  statistic           = "Sum"
  period              = local.reconcile_period
  evaluation_periods  = local.removals_refused_alarm_periods
  datapoints_to_alarm = local.removals_refused_alarm_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "ignore"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# Any: each is a failed delivery reconcile stopped redelivering (5 attempts or GitHub's
# 3-day window spent), whose job's events stay missing until redelivered by hand.
resource "aws_cloudwatch_metric_alarm" "redeliveries_abandoned" {
  for_each            = local.github_alarms
  alarm_name          = "${var.name}-redeliveries-abandoned"
  alarm_description   = "Reconcile gave up redelivering failed deliveries (attempts or GitHub's 3-day window spent): redeliver them by hand while GitHub keeps them. Runbook: ${local.runbook}#redeliveries-abandoned"
  namespace           = local.emf_namespace
  metric_name         = "RedeliveriesAbandoned"
  statistic           = "Sum"
  period              = local.reconcile_period
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  # Written 0 on every pass; a gap is reconcile not running (its own alarm).
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = var.tags
}
