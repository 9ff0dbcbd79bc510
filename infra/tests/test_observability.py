"""The SLO alerts and dashboards (issue 16) watch what the code emits: CloudWatch alarms
and dashboard widgets name EMF metrics, units and dimensions from emf-catalog.json (which a
core test, crates/scalehook-core/tests/slis.rs, keeps equal to the code's output); Azure
queries read the fields the core logs; the Prometheus rules and the Grafana dashboard use
series the core renders on /metrics."""

import json
import re

from conftest import CORE, ROOT, core_module, core_source

# Alarms and rules of this file; test_contract leaves them to it.
SLO_ALARMS = {"queue_wait_p95", "delivery_5xx_burn"}
SLO_RULES = {"queue_wait_p95", "delivery_5xx_budget_fast", "delivery_5xx_budget_slow"}

CATALOG = json.loads((ROOT / "infra" / "tests" / "emf-catalog.json").read_text())
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana" / "scalehook.json"


def emf(metric):
    assert metric in CATALOG["metrics"], f"{metric} is not an EMF metric the core writes"
    return CATALOG["metrics"][metric]


def runbook_anchors():
    text = (ROOT / "docs" / "runbook.md").read_text()
    return {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^##+ (.+)$", text, re.M)
    }


def test_catalog_namespace_is_the_cores(aws):
    ns = re.search(r'EMF_NAMESPACE: &str = "(\w+)"', core_module("metrics")).group(1)
    assert CATALOG["namespace"] == ns == aws.locals["emf_namespace"]
    assert emf("QueueWaitSeconds")["unit"] == "Seconds"
    assert emf("LatencyMs")["unit"] == "Milliseconds"


def test_cloud_api_errors_are_exactly_the_5xx_outcomes():
    """The burn-rate alarms divide CloudApiErrors by Deliveries: CloudApiErrors must count
    exactly the deliveries answered 5xx."""
    report = core_source("report.rs")
    statuses = dict(re.findall(r"Outcome::(\w+) => (\d{3}),", report))
    fivexx = {o for o, s in statuses.items() if s.startswith("5")}
    m = re.search(r"fn is_cloud_error\(self\) -> bool \{\s*matches!\(\s*self,([^)]*)\)", report, re.S)
    assert set(re.findall(r"Outcome::(\w+)", m.group(1))) == fivexx == {"LedgerError", "FleetError", "Timeout"}
    src = core_module("metrics")
    assert re.search(r'"CloudApiErrors".into\(\),\s*u32::from\(report\.outcome\.is_cloud_error\(\)\)', src)


def test_queue_wait_alarm(aws):
    a = aws.resource("aws_cloudwatch_metric_alarm", "queue_wait_p95")
    assert a["for_each"] == "${toset(local.pool_names)}"
    assert (a["namespace"], a["metric_name"]) == ("${local.emf_namespace}", "QueueWaitSeconds")
    assert a["dimensions"] == {"Pool": "${each.key}"}
    assert ["Pool"] in emf("QueueWaitSeconds")["dimensions"]
    assert a["extended_statistic"] == "p95" and "statistic" not in a
    # 15 minutes: three 5-minute periods, all breaching.
    assert (a["period"], a["evaluation_periods"], a["datapoints_to_alarm"]) == (300, 3, 3)
    assert (a["comparison_operator"], a["threshold"]) == ("GreaterThanThreshold", "${local.queue_wait_bound}")
    assert aws.locals["queue_wait_bound"] == "${coalesce(var.queue_wait_slo_seconds, var.runner_boot_seconds + 60)}"
    assert aws.variables["queue_wait_slo_seconds"]["default"] is None
    assert a["treat_missing_data"] == "notBreaching"
    assert a["alarm_actions"] == "${local.alarm_actions}"
    assert "Runbook: ${local.runbook}#job-queue-wait-above-slo" in a["alarm_description"]


def test_burn_rate_alarms_are_multi_window(aws):
    windows = aws.locals["burn_windows"]
    assert {k: (w["period"], w["burn"]) for k, w in windows.items()} == {
        "1h": (3600, 14.4),
        "5m": (300, 14.4),
        "6h": (21600, 6),
        "30m": (1800, 6),
    }
    assert aws.locals["delivery_error_budget"] == 0.001
    a = aws.resource("aws_cloudwatch_metric_alarm", "delivery_5xx_burn")
    assert a["for_each"] == "${local.burn_windows}"
    assert a["threshold"] == "${each.value.burn}"
    queries = {q["id"]: q for q in a["metric_query"]}
    assert queries["burn"]["expression"] == "IF(total > 0, errors / total, 0) / ${local.delivery_error_budget}"
    for qid, metric in (("errors", "CloudApiErrors"), ("total", "Deliveries")):
        m = queries[qid]["metric"][0]
        assert (m["namespace"], m["metric_name"], m["stat"]) == ("${local.emf_namespace}", metric, "Sum")
        assert "dimensions" not in m and [] in emf(metric)["dimensions"]
        assert m["period"] == "${each.value.period}"
    # The parts do not notify; the composites do.
    assert "alarm_actions" not in a
    composites = aws.resources["aws_cloudwatch_composite_alarm"]
    for name, (long, short) in {"delivery_5xx_budget_fast": ("1h", "5m"), "delivery_5xx_budget_slow": ("6h", "30m")}.items():
        c = composites[name]
        rule = c["alarm_rule"]
        assert f'delivery_5xx_burn["{long}"]' in rule and f'delivery_5xx_burn["{short}"]' in rule and " AND " in rule
        assert c["alarm_actions"] == "${local.alarm_actions}"
        assert "Runbook: ${local.runbook}#delivery-5xx-error-budget-burn" in c["alarm_description"]


def test_dashboard_widgets_name_emitted_metrics(aws):
    d = aws.resource("aws_cloudwatch_dashboard", "scalehook")
    assert d["dashboard_body"] == "${jsonencode({widgets = local.dashboard_widgets})}"
    text = (aws.path / "observability.tf").read_text()
    widgets = text[text.index("dashboard_widgets = [") :]
    # [local.emf_namespace, "Metric", "Dimension", value, {...}] or [local.emf_namespace, "Metric", {...}]
    used = re.findall(r'\[local\.emf_namespace, (?:"(\w+)"|(m)), (?:"(\w+)", [\w.]+, )?\{', widgets)
    assert len(used) >= 15, used
    census = re.search(r"for m in (\[[^\]]*\])", widgets).group(1)
    named = set()
    for metric, loop, dim in used:
        for name in json.loads(census) if loop else [metric]:
            dims = [dim] if dim else []
            assert dims in emf(name)["dimensions"], f"{name} is not written with dimensions {dims}"
            named.add(name)
    # Every SLI and census metric is on the dashboard.
    for needed in (
        "QueueWaitSeconds",
        "RunSeconds",
        "LatencyMs",
        "Deliveries",
        "JobsWaitingOverThreshold",
        "LiveInstances",
        "LaunchingInstances",
        "BusyInstances",
        "IdleInstances",
        "UnregisteredInstances",
        "GitHubRateLimitRemaining",
        "RedeliveredDeliveries",
    ):
        assert needed in named, needed
    outcomes = set(re.findall(r'Outcome::\w+ => "(\w+)"', core_source("report.rs")))
    assert set(aws.locals["outcomes"]) == outcomes


def test_azure_slo_alerts_read_logged_fields(azure):
    rules = azure.resources["azurerm_monitor_scheduled_query_rules_alert_v2"]
    assert SLO_RULES <= set(rules)
    service = core_module("service")
    report_fields = set(re.findall(r"pub (\w+):", core_source("report.rs")))
    text = (azure.path / "observability.tf").read_text()
    # The state line's `state` and the reconcile line's `report`: the workbook test below.
    assert re.search(r"\breport = %serde_json::to_string\(&report\)", service)
    for field in set(re.findall(r"fields\.(\w+)", text)) - {"state", "report"}:
        assert field in report_fields, field
        assert re.search(rf"\b{field} = report\.{field}\b", service), f"{field} is not in the delivery log line"
    wait = rules["queue_wait_p95"]["criteria"][0]
    assert "percentile(wait, 95) by pool" in wait["query"]
    assert wait["threshold"] == "${local.queue_wait_bound}"
    assert wait["failing_periods"][0]["minimum_failing_periods_to_trigger_alert"] == 3
    assert rules["queue_wait_p95"]["window_duration"] == "PT5M"
    for name, window, burn in (("delivery_5xx_budget_fast", "PT1H", 14.4), ("delivery_5xx_budget_slow", "PT6H", 6)):
        r = rules[name]
        c = r["criteria"][0]
        assert (r["window_duration"], c["threshold"], c["metric_measure_column"]) == (window, burn, "burn")
        assert "Runbook: ${local.runbook}#delivery-5xx-error-budget-burn" in r["description"]
    assert "min_of(" in text and 'outcome in (\\"ledger_error\\", \\"fleet_error\\", \\"timeout\\")' in text
    wb = azure.resource("azurerm_application_insights_workbook", "scalehook")
    assert wb["source_id"] == "${lower(azurerm_application_insights.app.id)}"
    assert "local.workbook_items" in wb["data_json"]


def test_azure_workbook_panels_name_emitted_metrics(azure):
    """The workbook's census and GitHub App panels read the core's state line (target
    scalehook::state, `state` = metrics::state_json) by the EMF metric names: each name is in
    the catalog with the dimensions it is read with (per pool under `state.pools`, else none),
    and the reconcile report fields it reads are GitHubReconcile's. Every census and GitHub
    metric the AWS dashboard shows is on the workbook too."""
    service = core_module("service")
    assert 'target: "scalehook::state"' in service
    assert re.search(r"state = %crate::metrics::state_json\(&self\.metrics\)", service)
    assert "state_values(&mut metrics.lock())" in core_module("metrics"), "EMF and state line share the figures"
    text = (azure.path / "observability.tf").read_text()
    assert 'message has "scalehook::state"' in text
    items = text[text.index("workbook_items = [") :]
    pooled = set(re.findall(r"\bp\.([A-Z]\w+)", items)) - {"Pool"}
    unpooled = set(re.findall(r"\bstate\.([A-Z]\w+)", items))
    for name in pooled:
        assert ["Pool"] in emf(name)["dimensions"], f"{name} is not written per pool"
    for name in unpooled:
        assert [] in emf(name)["dimensions"], f"{name} is not written without dimensions"
    struct = re.search(r"pub struct GitHubReconcile \{(.*?)\n\}", core_source("report.rs"), re.S).group(1)
    github_fields = set(re.findall(r"^\s+pub (\w+):", struct, re.M))
    for field in set(re.findall(r"\bgithub\.(\w+)", items)):
        assert field in github_fields, f"{field} is not in the reconcile report's github steps"
    census = {"LiveInstances", "LaunchingInstances", "BusyInstances", "IdleInstances", "UnregisteredInstances"}
    github = {
        "GitHubRateLimitRemaining",
        "GitHubRequests",
        "RedeliveredDeliveries",
        "RedeliveryFailures",
        "RedeliveriesAbandoned",
        "RecheckedJobs",
    }
    assert census | {"RunnerRemovalsRefused"} <= pooled, pooled
    assert github <= unpooled, unpooled
    assert {"error", "advanced", "runners_removed"} <= set(re.findall(r"\bgithub\.(\w+)", items))
    titles = " ".join(re.findall(r'title = "([^"]*)"', items)).lower()
    for needed in ("census", "rate limit", "requests", "errors", "redeliveries", "re-checked", "refused"):
        assert needed in titles, needed
    aws_text = (ROOT / "infra" / "aws" / "observability.tf").read_text()
    aws_named = set(re.findall(r'"((?:\w+Instances)|GitHub\w+|Redeliver\w+|RecheckedJobs|RunnerRemovalsRefused)"', aws_text))
    # A warm pool is AWS's alone (an Azure scale set has none here): not on the workbook.
    aws_named -= {"WarmInstances"}
    assert aws_named <= pooled | unpooled, aws_named - (pooled | unpooled)


def prometheus_series():
    """Series names the core renders on /metrics (histograms as _bucket/_sum/_count)."""
    src = core_module("metrics")
    names = set(re.findall(r'"(scalehook_[a-z0-9_]+)"', src))
    histograms = set(re.findall(r'"(scalehook_[a-z0-9_]+)",\s*"histogram"', src))
    for h in histograms:
        names |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
    return names


def test_prometheus_rules_and_grafana_use_rendered_series():
    rules = (PROMETHEUS / "scalehook.rules.yml").read_text()
    recorded = set(re.findall(r"record: (\S+)", rules))
    series = prometheus_series()
    assert {"scalehook_job_queue_wait_seconds_bucket", "scalehook_delivery_duration_seconds_bucket"} <= series
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for text in [rules] + exprs:
        for name in re.findall(r"\b(scalehook_[a-z0-9_]+)", text):
            assert name in series, f"{name} is not rendered by the core"
        for name in re.findall(r"\b([a-z]+:scalehook_[a-z0-9_:]+|scalehook:[a-z0-9_:]+)", text):
            assert name in recorded, f"{name} is not a recording rule"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for needed in ("queue wait", "run time", "latency", "burn rate", "census", "rate limit"):
        assert needed in titles.lower(), needed
    # Each alert links to an existing runbook section.
    anchors = runbook_anchors()
    links = set(re.findall(r"runbook\.md#([a-z0-9-]+)", rules))
    assert links == {
        "job-queue-wait-above-slo",
        "delivery-5xx-error-budget-burn",
        "github-rate-limit-low",
        "reconcile-failing",
        "runner-deregistration-refused-repeatedly",
        "redeliveries-abandoned",
    }
    assert links <= anchors
    assert len(re.findall(r"^\s+- alert: ", rules, re.M)) == 7


def test_slo_bound_defaults_agree():
    """boot time (120 s) + 60 s everywhere: the core's gauge, the rules, both modules."""
    src = core_module("metrics")
    assert "DEFAULT_WAIT_THRESHOLD_SECS: u64 = 180" in src
    assert "p95_5m > 180" in (PROMETHEUS / "scalehook.rules.yml").read_text()
    from conftest import MODULES, Module

    for cloud in ("aws", "azure"):
        module = Module(MODULES[cloud])
        assert module.variables["runner_boot_seconds"]["default"] == 120, cloud
