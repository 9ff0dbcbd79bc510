# SLO alarms and the CloudWatch dashboard, over scalehook's EMF metrics (namespace
# "Scalehook"; the metrics, units and dimensions are listed in infra/tests/emf-catalog.json,
# which a core test keeps equal to what the code writes). Runbook sections:
# #job-queue-wait-above-slo and #delivery-5xx-error-budget-burn.

variable "runner_boot_seconds" {
  description = "Typical seconds from a scale-out to a runner taking a job (instance launch, boot, runner registration). The queue wait SLO defaults to this plus 60 s."
  type        = number
  default     = 120

  validation {
    condition     = var.runner_boot_seconds >= 0
    error_message = "runner_boot_seconds: a number of seconds, 0 or more."
  }
}

variable "queue_wait_slo_seconds" {
  description = "Bound of the job queue wait SLO: the p95 of a pool's queued -> in_progress wait above it for 15 minutes raises the queue-wait alarm. Null: runner_boot_seconds + 60."
  type        = number
  default     = null

  validation {
    condition     = var.queue_wait_slo_seconds == null || try(var.queue_wait_slo_seconds > 0, false)
    error_message = "queue_wait_slo_seconds: null or a positive number of seconds."
  }
}

locals {
  queue_wait_bound = coalesce(var.queue_wait_slo_seconds, var.runner_boot_seconds + 60)
  # 99.9 % of deliveries answered without a 5xx: the budget is 0.1 %.
  delivery_error_budget = 0.001
  # Multi-window burn rate: each alert needs its long and its short window above the rate.
  burn_windows = {
    "1h"  = { period = 3600, burn = 14.4 }
    "5m"  = { period = 300, burn = 14.4 }
    "6h"  = { period = 21600, burn = 6 }
    "30m" = { period = 1800, burn = 6 }
  }
  # The core's outcomes, for the deliveries widget.
  outcomes   = ["handled", "pong", "ignored", "bad_request", "unauthorized", "method_not_allowed", "payload_too_large", "unsupported_media_type", "ledger_error", "fleet_error", "timeout"]
  pool_names = [for p in var.pools : p.name]
}

# ---- Job queue wait SLO -------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "queue_wait_p95" {
  for_each            = toset(local.pool_names)
  alarm_name          = "${var.name}-pool-${each.key}-queue-wait-p95"
  alarm_description   = "The p95 of pool ${each.key}'s job queue wait (queued -> in_progress) has been above ${local.queue_wait_bound} s for 15 minutes: jobs wait longer for a runner than the SLO allows. Runbook: ${local.runbook}#job-queue-wait-above-slo"
  namespace           = local.emf_namespace
  metric_name         = "QueueWaitSeconds"
  dimensions          = { Pool = each.key }
  extended_statistic  = "p95"
  period              = 300
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.queue_wait_bound
  # A value is written only when a job starts: no starts, no wait to judge.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = var.tags
}

# ---- Delivery 5xx error budget (99.9 %) -----------------------------------------------------
# One alarm per window (no actions of their own) and two composite alarms that notify:
# fast burn = 1 h and 5 m both above 14.4x, slow burn = 6 h and 30 m both above 6x.

resource "aws_cloudwatch_metric_alarm" "delivery_5xx_burn" {
  for_each            = local.burn_windows
  alarm_name          = "${var.name}-delivery-5xx-burn-${each.key}"
  alarm_description   = "Deliveries answered 5xx over ${each.key} burn the 99.9 % error budget more than ${each.value.burn} times too fast (part of a composite alarm). Runbook: ${local.runbook}#delivery-5xx-error-budget-burn"
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.burn
  # No deliveries, no errors.
  treat_missing_data = "notBreaching"
  tags               = var.tags

  metric_query {
    id          = "burn"
    expression  = "IF(total > 0, errors / total, 0) / ${local.delivery_error_budget}"
    label       = "5xx burn rate over ${each.key}"
    return_data = true
  }

  metric_query {
    id = "errors"
    metric {
      namespace   = local.emf_namespace
      metric_name = "CloudApiErrors"
      stat        = "Sum"
      period      = each.value.period
    }
  }

  metric_query {
    id = "total"
    metric {
      namespace   = local.emf_namespace
      metric_name = "Deliveries"
      stat        = "Sum"
      period      = each.value.period
    }
  }
}

resource "aws_cloudwatch_composite_alarm" "delivery_5xx_budget_fast" {
  alarm_name        = "${var.name}-delivery-5xx-budget-fast-burn"
  alarm_description = "More than 1.44 % of deliveries were answered 5xx over the last hour and the last 5 minutes: the 30-day 99.9 % budget goes in 2 days at this rate. Runbook: ${local.runbook}#delivery-5xx-error-budget-burn"
  alarm_rule        = "ALARM(\"${aws_cloudwatch_metric_alarm.delivery_5xx_burn["1h"].alarm_name}\") AND ALARM(\"${aws_cloudwatch_metric_alarm.delivery_5xx_burn["5m"].alarm_name}\")"
  alarm_actions     = local.alarm_actions
  ok_actions        = local.alarm_actions
  tags              = var.tags
}

resource "aws_cloudwatch_composite_alarm" "delivery_5xx_budget_slow" {
  alarm_name        = "${var.name}-delivery-5xx-budget-slow-burn"
  alarm_description = "More than 0.6 % of deliveries were answered 5xx over the last 6 hours and the last 30 minutes: the 30-day 99.9 % budget goes in 5 days at this rate. Runbook: ${local.runbook}#delivery-5xx-error-budget-burn"
  alarm_rule        = "ALARM(\"${aws_cloudwatch_metric_alarm.delivery_5xx_burn["6h"].alarm_name}\") AND ALARM(\"${aws_cloudwatch_metric_alarm.delivery_5xx_burn["30m"].alarm_name}\")"
  alarm_actions     = local.alarm_actions
  ok_actions        = local.alarm_actions
  tags              = var.tags
}

# ---- Dashboard ----------------------------------------------------------------------------

locals {
  dashboard_region = data.aws_region.current.region
  dashboard_widgets = [
    {
      type = "metric", x = 0, y = 0, width = 12, height = 6
      properties = {
        title  = "Job queue wait p50 / p95 / p99 (s) vs SLO bound"
        region = local.dashboard_region
        view   = "timeSeries"
        period = 300
        metrics = flatten([for p in local.pool_names : [
          [local.emf_namespace, "QueueWaitSeconds", "Pool", p, { stat = "p50", label = "${p} p50" }],
          [local.emf_namespace, "QueueWaitSeconds", "Pool", p, { stat = "p95", label = "${p} p95" }],
          [local.emf_namespace, "QueueWaitSeconds", "Pool", p, { stat = "p99", label = "${p} p99" }],
        ]])
        annotations = { horizontal = [{ label = "SLO bound", value = local.queue_wait_bound }] }
      }
    },
    {
      type = "metric", x = 12, y = 0, width = 12, height = 6
      properties = {
        title   = "Queued jobs waiting past the bound (reconcile)"
        region  = local.dashboard_region
        view    = "timeSeries"
        period  = local.reconcile_period
        metrics = [for p in local.pool_names : [local.emf_namespace, "JobsWaitingOverThreshold", "Pool", p, { stat = "Maximum", label = p }]]
      }
    },
    {
      type = "metric", x = 0, y = 6, width = 12, height = 6
      properties = {
        title  = "Job run time p50 / p95 (s)"
        region = local.dashboard_region
        view   = "timeSeries"
        period = 900
        metrics = flatten([for p in local.pool_names : [
          [local.emf_namespace, "RunSeconds", "Pool", p, { stat = "p50", label = "${p} p50" }],
          [local.emf_namespace, "RunSeconds", "Pool", p, { stat = "p95", label = "${p} p95" }],
        ]])
      }
    },
    {
      type = "metric", x = 12, y = 6, width = 12, height = 6
      properties = {
        title   = "Deliveries by outcome"
        region  = local.dashboard_region
        view    = "timeSeries"
        stacked = true
        period  = 300
        metrics = [for o in local.outcomes : [local.emf_namespace, "Deliveries", "Outcome", o, { stat = "Sum", label = o }]]
      }
    },
    {
      type = "metric", x = 0, y = 12, width = 12, height = 6
      properties = {
        title  = "Delivery latency p50 / p95 / p99 (ms)"
        region = local.dashboard_region
        view   = "timeSeries"
        period = 300
        metrics = [
          [local.emf_namespace, "LatencyMs", { stat = "p50", label = "p50" }],
          [local.emf_namespace, "LatencyMs", { stat = "p95", label = "p95" }],
          [local.emf_namespace, "LatencyMs", { stat = "p99", label = "p99" }],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 12, width = 12, height = 6
      properties = {
        title  = "5xx error-budget burn rate (1 h window; 14.4 pages, 6 tickets)"
        region = local.dashboard_region
        view   = "timeSeries"
        period = 3600
        metrics = [
          [{ expression = "IF(total > 0, errors / total, 0) / ${local.delivery_error_budget}", label = "burn rate", id = "burn" }],
          [local.emf_namespace, "CloudApiErrors", { stat = "Sum", id = "errors", visible = false }],
          [local.emf_namespace, "Deliveries", { stat = "Sum", id = "total", visible = false }],
        ]
        annotations = { horizontal = [{ label = "fast burn", value = 14.4 }, { label = "slow burn", value = 6 }] }
      }
    },
    {
      type = "metric", x = 0, y = 18, width = 12, height = 6
      properties = {
        title  = "Desired capacity, queued and running jobs"
        region = local.dashboard_region
        view   = "timeSeries"
        period = 60
        metrics = flatten([for p in local.pool_names : [
          [local.emf_namespace, "DesiredCapacity", "Pool", p, { stat = "Maximum", label = "${p} desired" }],
          [local.emf_namespace, "QueuedJobs", "Pool", p, { stat = "Maximum", label = "${p} queued" }],
          [local.emf_namespace, "RunningJobs", "Pool", p, { stat = "Maximum", label = "${p} running" }],
        ]])
      }
    },
    {
      type = "metric", x = 12, y = 18, width = 12, height = 6
      properties = {
        title  = "Fleet census (reconcile)"
        region = local.dashboard_region
        view   = "timeSeries"
        period = local.reconcile_period
        metrics = flatten([for p in local.pool_names : [
          for m in ["LiveInstances", "LaunchingInstances", "BusyInstances", "IdleInstances", "WarmInstances", "UnregisteredInstances"] :
          [local.emf_namespace, m, "Pool", p, { stat = "Maximum", label = "${p} ${m}" }]
        ]])
      }
    },
    {
      type = "metric", x = 0, y = 24, width = 12, height = 6
      properties = {
        title  = "Reconcile passes, failures, expired jobs, redeliveries, re-checks, refused removals"
        region = local.dashboard_region
        view   = "timeSeries"
        period = 3600
        metrics = concat([
          [local.emf_namespace, "ReconcileRuns", { stat = "Sum", label = "passes" }],
          [local.emf_namespace, "ReconcileFailures", { stat = "Sum", label = "failed passes" }],
          [local.emf_namespace, "ExpiredJobs", { stat = "Sum", label = "expired jobs" }],
          [local.emf_namespace, "RedeliveredDeliveries", { stat = "Sum", label = "redelivered" }],
          [local.emf_namespace, "RedeliveryFailures", { stat = "Sum", label = "redeliveries failed (retried)" }],
          [local.emf_namespace, "RedeliveriesAbandoned", { stat = "Sum", label = "redeliveries given up" }],
          [local.emf_namespace, "RecheckedJobs", { stat = "Sum", label = "jobs re-checked" }],
          ], [for p in local.pool_names :
          [local.emf_namespace, "RunnerRemovalsRefused", "Pool", p, { stat = "Sum", label = "${p} removals refused (busy)" }]
        ])
      }
    },
    {
      type = "metric", x = 12, y = 24, width = 12, height = 6
      properties = {
        title  = "GitHub API rate limit remaining and requests"
        region = local.dashboard_region
        view   = "timeSeries"
        period = local.reconcile_period
        metrics = [
          [local.emf_namespace, "GitHubRateLimitRemaining", { stat = "Minimum", label = "remaining" }],
          [local.emf_namespace, "GitHubRequests", { stat = "Sum", label = "requests", yAxis = "right" }],
        ]
      }
    },
    {
      type = "metric", x = 0, y = 30, width = 12, height = 6
      properties = {
        title  = "Lambda errors, throttles and duration p99 (ms)"
        region = local.dashboard_region
        view   = "timeSeries"
        period = 300
        metrics = [
          ["AWS/Lambda", "Errors", "FunctionName", aws_lambda_function.scalehook.function_name, { stat = "Sum" }],
          ["AWS/Lambda", "Throttles", "FunctionName", aws_lambda_function.scalehook.function_name, { stat = "Sum" }],
          ["AWS/Lambda", "Duration", "FunctionName", aws_lambda_function.scalehook.function_name, { stat = "p99", yAxis = "right" }],
        ]
      }
    },
    {
      type = "alarm", x = 12, y = 30, width = 12, height = 6
      properties = {
        title = "scalehook alarms"
        alarms = concat(
          [for a in aws_cloudwatch_metric_alarm.queue_wait_p95 : a.arn],
          [aws_cloudwatch_composite_alarm.delivery_5xx_budget_fast.arn, aws_cloudwatch_composite_alarm.delivery_5xx_budget_slow.arn],
          [aws_cloudwatch_metric_alarm.cloud_api_errors.arn, aws_cloudwatch_metric_alarm.reconcile_failures.arn],
          [for a in aws_cloudwatch_metric_alarm.pool_at_max : a.arn],
        )
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "scalehook" {
  dashboard_name = var.name
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}
