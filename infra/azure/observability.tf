# SLO alerts and the Application Insights workbook, over the handler's JSON log lines
# (`traces`: target scalehook::delivery carries outcome, pool, latency_us, and on the one
# delivery that moved a job, queue_wait_secs or run_secs; target scalehook::reconcile the
# pass's report; target scalehook::state, once per reconcile pass, the census and GitHub
# figures under the EMF metric names, as the AWS dashboard shows them). Runbook sections:
# #job-queue-wait-above-slo, #delivery-5xx-error-budget-burn.

variable "runner_boot_seconds" {
  description = "Typical seconds from a scale-out to a runner taking a job (VM creation, boot, runner registration). The queue wait SLO defaults to this plus 60 s."
  type        = number
  default     = 120

  validation {
    condition     = var.runner_boot_seconds >= 0
    error_message = "runner_boot_seconds: a number of seconds, 0 or more."
  }
}

variable "queue_wait_slo_seconds" {
  description = "Bound of the job queue wait SLO: the p95 of a pool's queued -> in_progress wait above it for 15 minutes raises the queue-wait alert. Null: runner_boot_seconds + 60."
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
  server_errors_kql     = "outcome in (\"ledger_error\", \"fleet_error\", \"timeout\")"

  # The queue wait of each job that started, from its in_progress delivery.
  queue_wait_kql = <<-KQL
    ${local.deliveries_kql}| extend wait = todouble(fields.queue_wait_secs)
    | where isnotnull(wait)
  KQL

  # Burn rate of the 5xx budget over a long and a short window: the smaller of the two, so
  # the alert needs both above the rate (multi-window burn rate).
  burn_kql = {
    for name, w in {
      fast = { long = "1h", short = "5m" }
      slow = { long = "6h", short = "30m" }
    } : name => <<-KQL
      ${local.deliveries_kql}| where timestamp > ago(${w.long})
      | summarize total_long = count(), bad_long = countif(${local.server_errors_kql}),
          total_short = countif(timestamp > ago(${w.short})),
          bad_short = countif(timestamp > ago(${w.short}) and ${local.server_errors_kql})
      | extend burn = min_of(iff(total_long == 0, 0.0, todouble(bad_long) / total_long),
          iff(total_short == 0, 0.0, todouble(bad_short) / total_short)) / ${local.delivery_error_budget}
    KQL
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "queue_wait_p95" {
  name                 = "${var.name}-queue-wait-p95"
  display_name         = "scalehook: job queue wait above SLO"
  description          = "For 15 minutes, the p95 of a pool's job queue wait (queued -> in_progress) was above ${local.queue_wait_bound} s: jobs wait longer for a runner than the SLO allows. Runbook: ${local.runbook}#job-queue-wait-above-slo"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 2
  evaluation_frequency = "PT5M"
  window_duration      = "PT5M"
  tags                 = var.tags

  criteria {
    query                   = "${local.queue_wait_kql}| summarize p95 = percentile(wait, 95) by pool"
    time_aggregation_method = "Maximum"
    metric_measure_column   = "p95"
    operator                = "GreaterThan"
    threshold               = local.queue_wait_bound

    dimension {
      name     = "pool"
      operator = "Include"
      values   = ["*"]
    }

    # Three 5-minute windows in a row: 15 minutes.
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

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "delivery_5xx_budget_fast" {
  name                 = "${var.name}-delivery-5xx-budget-fast-burn"
  display_name         = "scalehook: 5xx error budget burning fast"
  description          = "More than 1.44 % of deliveries were answered 5xx over the last hour and the last 5 minutes: the 30-day 99.9 % budget goes in 2 days at this rate. Runbook: ${local.runbook}#delivery-5xx-error-budget-burn"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 1
  evaluation_frequency = "PT5M"
  window_duration      = "PT1H"
  tags                 = var.tags

  criteria {
    query                   = local.burn_kql["fast"]
    time_aggregation_method = "Maximum"
    metric_measure_column   = "burn"
    operator                = "GreaterThan"
    threshold               = 14.4

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

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "delivery_5xx_budget_slow" {
  name                 = "${var.name}-delivery-5xx-budget-slow-burn"
  display_name         = "scalehook: 5xx error budget burning"
  description          = "More than 0.6 % of deliveries were answered 5xx over the last 6 hours and the last 30 minutes: the 30-day 99.9 % budget goes in 5 days at this rate. Runbook: ${local.runbook}#delivery-5xx-error-budget-burn"
  resource_group_name  = var.resource_group_name
  location             = var.location
  scopes               = [azurerm_application_insights.app.id]
  severity             = 3
  evaluation_frequency = "PT15M"
  window_duration      = "PT6H"
  tags                 = var.tags

  criteria {
    query                   = local.burn_kql["slow"]
    time_aggregation_method = "Maximum"
    metric_measure_column   = "burn"
    operator                = "GreaterThan"
    threshold               = 6

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

# ---- Workbook -------------------------------------------------------------------------------

locals {
  # The core's state line (metrics::state_json, once per reconcile pass): `state` is a JSON
  # string {"pools": [{"Pool", "LiveInstances", ...}], "GitHubRequests", ...}; counters are
  # the increase since the previous line, so a sum over time is the count.
  state_kql = <<-KQL
    traces
    | where message has "scalehook::state"
    | extend line = parse_json(message)
    | extend fields = iff(isnull(line.fields), line, line.fields)
    | extend state = parse_json(tostring(fields.state))
  KQL

  # The state line's per-pool figures, one row per pool.
  state_pools_kql = "${local.state_kql}| mv-expand p = state.pools | extend pool = tostring(p.Pool)\n"

  # The reconcile report's GitHub steps (`github` is null in webhook-only mode).
  reconcile_github_kql = "${local.reconcile_kql}| extend github = parse_json(tostring(fields.report)).github | where isnotnull(github)\n"

  # The workbook's KQL query items, one per panel.
  workbook_items = [
    for i, item in [
      {
        title = "Job queue wait p50 / p95 / p99 (s) by pool"
        viz   = "timechart"
        query = "${local.queue_wait_kql}| summarize p50 = percentile(wait, 50), p95 = percentile(wait, 95), p99 = percentile(wait, 99) by pool, bin(timestamp, 5m)"
      },
      {
        title = "Jobs started past the SLO bound (${local.queue_wait_bound} s), by pool"
        viz   = "barchart"
        query = "${local.queue_wait_kql}| summarize started = count(), late = countif(wait > ${local.queue_wait_bound}) by pool"
      },
      {
        title = "Job run time p50 / p95 (s) by pool"
        viz   = "timechart"
        query = "${local.deliveries_kql}| extend run = todouble(fields.run_secs) | where isnotnull(run) | summarize p50 = percentile(run, 50), p95 = percentile(run, 95) by pool, bin(timestamp, 15m)"
      },
      {
        title = "Deliveries by outcome"
        viz   = "areachart"
        query = "${local.deliveries_kql}| summarize deliveries = count() by outcome, bin(timestamp, 5m)"
      },
      {
        title = "Delivery latency p50 / p95 / p99 (ms)"
        viz   = "timechart"
        query = "${local.deliveries_kql}| extend ms = todouble(fields.latency_us) / 1000 | summarize p50 = percentile(ms, 50), p95 = percentile(ms, 95), p99 = percentile(ms, 99) by bin(timestamp, 5m)"
      },
      {
        title = "5xx error-budget burn rate per hour (14.4 pages, 6 tickets)"
        viz   = "timechart"
        query = "${local.deliveries_kql}| summarize burn = todouble(countif(${local.server_errors_kql})) / count() / ${local.delivery_error_budget} by bin(timestamp, 1h)"
      },
      {
        title = "Desired capacity, queued and running jobs by pool"
        viz   = "timechart"
        query = "${local.deliveries_kql}| where isnotempty(pool) | extend desired = tolong(fields.capacity_after), queued = tolong(fields.queued), running = tolong(fields.running) | summarize desired = max(desired), queued = max(queued), running = max(running) by pool, bin(timestamp, 5m)"
      },
      {
        title = "Reconcile passes (ok / failed)"
        viz   = "columnchart"
        query = "${local.reconcile_kql}| summarize passes = count() by ok, bin(timestamp, 1h)"
      },
      {
        title = "Fleet census by pool: live, launching, busy, idle, unregistered instances (reconcile)"
        viz   = "timechart"
        query = "${local.state_pools_kql}| summarize LiveInstances = max(tolong(p.LiveInstances)), LaunchingInstances = max(tolong(p.LaunchingInstances)), BusyInstances = max(tolong(p.BusyInstances)), IdleInstances = max(tolong(p.IdleInstances)), UnregisteredInstances = max(tolong(p.UnregisteredInstances)) by pool, bin(timestamp, 5m)"
      },
      {
        title = "GitHub API rate limit remaining"
        viz   = "timechart"
        query = "${local.state_kql}| summarize GitHubRateLimitRemaining = min(tolong(state.GitHubRateLimitRemaining)) by bin(timestamp, 5m)"
      },
      {
        title = "GitHub API requests per hour"
        viz   = "columnchart"
        query = "${local.state_kql}| summarize GitHubRequests = sum(tolong(state.GitHubRequests)) by bin(timestamp, 1h)"
      },
      {
        title = "GitHub errors: reconcile passes with a GitHub failure, failed GitHub calls (warnings)"
        viz   = "columnchart"
        query = "union (${local.reconcile_github_kql}| where isnotempty(tostring(github.error)) | extend series = \"reconcile passes with a GitHub error\"), (traces | where message has \"scalehook::github\" | extend line = parse_json(message) | where tostring(line.level) == \"WARN\" | extend series = \"failed GitHub calls\") | summarize n = count() by series, bin(timestamp, 1h)"
      },
      {
        title = "Redeliveries: asked, failed (retried), given up"
        viz   = "columnchart"
        query = "${local.state_kql}| summarize RedeliveredDeliveries = sum(tolong(state.RedeliveredDeliveries)), RedeliveryFailures = sum(tolong(state.RedeliveryFailures)), RedeliveriesAbandoned = sum(tolong(state.RedeliveriesAbandoned)) by bin(timestamp, 1h)"
      },
      {
        title = "Stale jobs re-checked with the jobs API, and moved"
        viz   = "columnchart"
        query = "union (${local.state_kql}| summarize n = sum(tolong(state.RecheckedJobs)) by bin(timestamp, 1h) | extend series = \"RecheckedJobs\"), (${local.reconcile_github_kql}| summarize n = sum(tolong(github.advanced)) by bin(timestamp, 1h) | extend series = \"moved (advanced)\")"
      },
      {
        title = "Runner registrations removed (reconcile) and removals GitHub refused (busy, 422) by pool"
        viz   = "columnchart"
        query = "union (${local.state_pools_kql}| summarize n = sum(tolong(p.RunnerRemovalsRefused)) by pool, bin(timestamp, 1h) | extend series = strcat(pool, \" RunnerRemovalsRefused\")), (${local.reconcile_github_kql}| summarize n = sum(tolong(github.runners_removed)) by bin(timestamp, 1h) | extend series = \"removed (reconcile)\")"
      },
      ] : {
      type = 3
      name = "query-${i}"
      content = {
        version       = "KqlItem/1.0"
        title         = item.title
        query         = item.query
        size          = 0
        timeContext   = { durationMs = 86400000 }
        queryType     = 0
        resourceType  = "microsoft.insights/components"
        visualization = item.viz
      }
    }
  ]
}

resource "azurerm_application_insights_workbook" "scalehook" {
  name                = uuidv5("url", "urn:scalehook:${var.name}:workbook")
  resource_group_name = var.resource_group_name
  location            = var.location
  display_name        = "scalehook (${var.name})"
  source_id           = lower(azurerm_application_insights.app.id)
  tags                = var.tags
  data_json = jsonencode({
    version = "Notebook/1.0"
    items = concat([{
      type = 1
      name = "intro"
      content = {
        json = "## scalehook\nJob SLIs (queue wait, run time), deliveries (outcomes, latency, 5xx budget), capacity and reconcile, the fleet census and the GitHub App (API requests, errors and rate limit, redeliveries, job re-checks, runner removals and refusals), from the handler's log lines. Queue wait SLO: p95 under ${local.queue_wait_bound} s. Runbook: ${local.runbook}"
      }
    }], local.workbook_items)
  })
}
