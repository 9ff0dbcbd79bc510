# Log alerts over Application Insights. The handler writes one JSON line per delivery on
# stdout (target scalehook::delivery); the Functions host stores each as a row of `traces`.
# The queries accept the fields at the top level or under "fields" (tracing's JSON layout).

locals {
  runbook = var.runbook_url

  deliveries_kql = <<-KQL
    traces
    | where message has "scalehook::delivery"
    | extend line = parse_json(message)
    | extend fields = iff(isnull(line.fields), line, line.fields)
    | extend outcome = tostring(fields.outcome), pool = tostring(fields.pool)
  KQL

  # The core's reconcile line: target scalehook::reconcile, field `ok`.
  reconcile_kql = <<-KQL
    traces
    | where message has "scalehook::reconcile"
    | extend line = parse_json(message)
    | extend fields = iff(isnull(line.fields), line, line.fields)
    | extend ok = tostring(fields.ok)
  KQL

  # Each pool's max, for the at-max query (pool names are [A-Za-z0-9._-], safe in KQL).
  pool_max_kql = join(", ", [for p in var.pools : "${jsonencode(p.name)}, ${p.max}"])

  action_group_ids = concat(var.action_group_ids, [for g in azurerm_monitor_action_group.alerts : g.id])
}

resource "azurerm_monitor_action_group" "alerts" {
  count               = length(var.alert_emails) > 0 ? 1 : 0
  name                = "${var.name}-alerts"
  resource_group_name = var.resource_group_name
  short_name          = substr(replace(var.name, "-", ""), 0, 12)
  tags                = var.tags

  dynamic "email_receiver" {
    for_each = var.alert_emails
    content {
      name                    = "email-${email_receiver.key}"
      email_address           = email_receiver.value
      use_common_alert_schema = true
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "signature_failures" {
  name                 = "${var.name}-signature-failures"
  display_name         = "scalehook: signature failures"
  description          = "More than ${var.signature_failure_threshold} deliveries in 5 minutes had a missing or wrong X-Hub-Signature-256 (answered 401). Runbook: ${local.runbook}#signature-failures"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 2
  evaluation_frequency = "PT5M"
  window_duration      = "PT5M"
  tags                 = var.tags

  criteria {
    query                   = "${local.deliveries_kql}| where outcome == \"unauthorized\""
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = var.signature_failure_threshold

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  auto_mitigation_enabled = true
  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "cloud_errors" {
  name                 = "${var.name}-cloud-errors"
  display_name         = "scalehook: ledger or fleet errors (5xx)"
  description          = "Deliveries failed on a Table Storage (ledger) or scale set (fleet) call or timed out, answered 5xx: redeliver them once the cause is fixed. Runbook: ${local.runbook}#throttles-and-cloud-api-errors"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 1
  evaluation_frequency = "PT5M"
  window_duration      = "PT5M"
  tags                 = var.tags

  criteria {
    query                   = "${local.deliveries_kql}| where outcome in (\"ledger_error\", \"fleet_error\", \"timeout\")"
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    dimension {
      name     = "pool"
      operator = "Include"
      values   = ["*"]
    }

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  auto_mitigation_enabled = true
  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "function_failures" {
  name                 = "${var.name}-function-failures"
  display_name         = "scalehook: function invocations failed"
  description          = "Invocations of webhook (5xx, crash, timeout) or reconcile failed. Runbook: ${local.runbook}#function-errors"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 1
  evaluation_frequency = "PT5M"
  window_duration      = "PT15M"
  tags                 = var.tags

  criteria {
    # 4xx answers (bad signature, bad request) are the caller's fault, not the function's.
    query                   = <<-KQL
      requests
      | where success == false
      | where operation_Name in ("webhook", "reconcile")
      | where not(resultCode startswith "4")
    KQL
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    dimension {
      name     = "operation_Name"
      operator = "Include"
      values   = ["*"]
    }

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  auto_mitigation_enabled = true
  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "reconcile_failures" {
  name                 = "${var.name}-reconcile-failures"
  display_name         = "scalehook: reconcile failing"
  description          = "A reconcile pass failed for at least one pool (ok = false). Runbook: ${local.runbook}#reconcile-failing"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 2
  evaluation_frequency = "PT5M"
  window_duration      = "PT15M"
  tags                 = var.tags

  criteria {
    query                   = "${local.reconcile_kql}| where ok == \"false\""
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  auto_mitigation_enabled = true
  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "reconcile_not_running" {
  name                 = "${var.name}-reconcile-not-running"
  display_name         = "scalehook: reconcile not running"
  description          = "No reconcile pass has logged for 30 minutes (timer not firing, handler failing at start, or host storage unreachable). Runbook: ${local.runbook}#reconcile-failing"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 2
  evaluation_frequency = "PT10M"
  window_duration      = "PT30M"
  tags                 = var.tags

  criteria {
    # Here silence is the failure: zero rows is a count of 0, below 1.
    query                   = local.reconcile_kql
    time_aggregation_method = "Count"
    operator                = "LessThan"
    threshold               = 1

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  auto_mitigation_enabled = true
  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "pool_at_max" {
  name                 = "${var.name}-pool-at-max"
  display_name         = "scalehook: jobs queued at max capacity"
  description          = "For 15 minutes, deliveries found a pool at its max with jobs queued: jobs wait for capacity. Runbook: ${local.runbook}#queue-building-at-max-capacity"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 3
  evaluation_frequency = "PT5M"
  window_duration      = "PT5M"
  tags                 = var.tags

  criteria {
    query                   = <<-KQL
      let maxes = datatable(pool: string, max: long) [${local.pool_max_kql}];
      ${local.deliveries_kql}| extend after = tolong(fields.capacity_after), queued = tolong(fields.queued)
      | join kind=inner maxes on pool
      | where queued > 0 and after >= max
    KQL
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    dimension {
      name     = "pool"
      operator = "Include"
      values   = ["*"]
    }

    # Three 5-minute windows in a row, so a short burst at max does not page anyone.
    failing_periods {
      minimum_failing_periods_to_trigger_alert = 3
      number_of_evaluation_periods             = 3
    }
  }

  auto_mitigation_enabled = true
  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }
}

# ---- The GitHub App (only with var.github: in webhook-only mode there are no figures) ----
# Over the core's state line (local.state_kql, target scalehook::state, once per reconcile
# pass), read by the EMF metric names the AWS alarms use. A GitHub step that fails fails
# the pass, so GitHub App failures raise reconcile_failures above.

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "github_rate_limit_low" {
  count                = var.github == null ? 0 : 1
  name                 = "${var.name}-github-rate-limit-low"
  display_name         = "scalehook: GitHub App rate limit low"
  description          = "The GitHub App installation's x-ratelimit-remaining has been below ${var.github_rate_limit_alarm_threshold} for 10 minutes: once spent, scale-in, redelivery, job re-checks and JIT runner minting stop until the hourly reset. Runbook: ${local.runbook}#github-rate-limit-low"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 2
  evaluation_frequency = "PT5M"
  window_duration      = "PT5M"
  tags                 = var.tags

  criteria {
    query                   = "${local.state_kql}| extend remaining = tolong(state.GitHubRateLimitRemaining) | where isnotnull(remaining)"
    time_aggregation_method = "Maximum"
    metric_measure_column   = "remaining"
    operator                = "LessThan"
    threshold               = var.github_rate_limit_alarm_threshold

    # Two 5-minute windows (two passes) in a row: a single low reading just before the
    # hourly reset does not page.
    failing_periods {
      minimum_failing_periods_to_trigger_alert = 2
      number_of_evaluation_periods             = 2
    }
  }

  auto_mitigation_enabled = true
  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "runner_removals_refused" {
  count                = var.github == null ? 0 : 1
  name                 = "${var.name}-runner-removals-refused"
  display_name         = "scalehook: runner deregistrations refused for an hour"
  description          = "GitHub refused (422, runner busy) deregistrations of a pool on every reconcile pass for an hour: a runner stuck busy holds an instance. Runbook: ${local.runbook}#runner-deregistration-refused-repeatedly"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 3
  evaluation_frequency = "PT15M"
  window_duration      = "PT1H"
  tags                 = var.tags

  criteria {
    # The race (a job lands on the runner between the list and the delete) refuses one pass
    # now and then; every pass of the hour (at least 3 of them) refusing is a stuck runner.
    query                   = "${local.state_pools_kql}| summarize refused = min(tolong(p.RunnerRemovalsRefused)), passes = count() by pool | where passes >= 3"
    time_aggregation_method = "Minimum"
    metric_measure_column   = "refused"
    operator                = "GreaterThan"
    threshold               = 0

    dimension {
      name     = "pool"
      operator = "Include"
      values   = ["*"]
    }

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  auto_mitigation_enabled = true
  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "redeliveries_abandoned" {
  count                = var.github == null ? 0 : 1
  name                 = "${var.name}-redeliveries-abandoned"
  display_name         = "scalehook: redeliveries abandoned"
  description          = "Reconcile gave up redelivering failed deliveries (attempts or GitHub's 3-day window spent): redeliver them by hand while GitHub keeps them. Runbook: ${local.runbook}#redeliveries-abandoned"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 3
  evaluation_frequency = "PT5M"
  window_duration      = "PT15M"
  tags                 = var.tags

  criteria {
    # Any: the state line's counters are the increase since the previous line.
    query                   = "${local.state_kql}| where tolong(state.RedeliveriesAbandoned) > 0"
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  auto_mitigation_enabled = true
  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }
}
