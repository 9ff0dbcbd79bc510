"""What the modules give the functions matches what the adapters read, and the alarms
watch metrics and outcomes the core actually emits."""

import re

from conftest import core_source


def core_outcomes():
    return set(re.findall(r'Outcome::\w+ => "(\w+)"', core_source("report.rs")))


def core_emf_metrics():
    src = core_source("metrics.rs")
    return set(re.findall(r'\{"Name": "(\w+)"', src)) | set(re.findall(r'put\("(\w+)"', src))


def test_lambda_runtime_and_environment(aws):
    fn = aws.resource("aws_lambda_function", "scalehook")
    assert fn["runtime"] == "provided.al2023"
    assert fn["handler"] == "bootstrap"
    assert fn["architectures"] == ["${var.architecture}"]
    assert fn["source_code_hash"] == "${filebase64sha256(var.lambda_zip_path)}"
    assert fn["environment"][0]["variables"] == "${local.function_env}"
    env = aws.locals["function_env"]
    for name in ("SCALEHOOK_CONFIG_TOML", "SCALEHOOK_DYNAMODB_TABLE"):
        assert name in env
    # The secret reaches the function by reference only: a parameter name or a secret ARN.
    secret_env = aws.locals["secret_env"]
    assert set(re.findall(r"SCALEHOOK_\w+", secret_env)) == {
        "SCALEHOOK_WEBHOOK_SECRET_ARN",
        "SCALEHOOK_WEBHOOK_SECRET_SSM_PARAMETER",
    }
    assert "var.webhook_secret " not in secret_env and "var.webhook_secret}" not in secret_env
    # The only use of the secret's value is the write-only argument of the parameter;
    # every other mention only tests it for null or validates its length.
    param = aws.resource("aws_ssm_parameter", "webhook_secret")
    assert param["type"] == "SecureString"
    assert param["value_wo"] == "${var.webhook_secret}"
    assert "value" not in param
    # (Any expression on a sensitive variable is sensitive, and count, for_each and
    # unmarked outputs refuse sensitive values: null checks go through nonsensitive().)
    harmless = re.sub(
        r"nonsensitive\(var\.webhook_secret != null\)"
        r"|value_wo\s*= var\.webhook_secret\n"
        r"|condition\s*= var\.webhook_secret == null \|\| try\(length\(trimspace\(var\.webhook_secret\)\)",
        "",
        aws.text,
    )
    assert not re.findall(r"var\.webhook_secret\b(?!_)", harmless)


def test_dynamodb_ledger_shape(aws):
    t = aws.resource("aws_dynamodb_table", "ledger")
    assert t["billing_mode"] == "PAY_PER_REQUEST"
    assert t["hash_key"] == "pk"
    assert "range_key" not in t
    assert t["attribute"] == [{"name": "pk", "type": "S"}]
    assert t["ttl"] == [{"attribute_name": "expires_at", "enabled": True}]
    assert t["point_in_time_recovery"] == [{"enabled": "${var.point_in_time_recovery}"}]


def test_reconcile_schedule_targets_the_function(aws):
    rule = aws.resource("aws_cloudwatch_event_rule", "reconcile")
    assert "rate(" in rule["schedule_expression"]
    target = aws.resource("aws_cloudwatch_event_target", "reconcile")
    assert target["arn"] == "${aws_lambda_function.scalehook.arn}"
    # The adapter recognises the rule's own event (source aws.events, detail-type
    # "Scheduled Event"): no input or transformer may replace it.
    assert not {"input", "input_path", "input_transformer"} & set(target)
    assert "aws_scheduler_schedule" not in aws.resources
    retry = aws.resource("aws_lambda_function_event_invoke_config", "reconcile")
    assert retry["maximum_retry_attempts"] == 0


def test_function_url_has_no_aws_auth(aws):
    url = aws.resource("aws_lambda_function_url", "webhook")
    assert url["authorization_type"] == "NONE"


def test_aws_alarms_watch_emitted_metrics(aws):
    emitted = core_emf_metrics()
    namespace = re.search(r'EMF_NAMESPACE: &str = "(\w+)"', core_source("metrics.rs")).group(1)
    assert aws.locals["emf_namespace"] == namespace
    alarms = aws.resources["aws_cloudwatch_metric_alarm"]
    expected = {
        "errors": ("AWS/Lambda", "Errors", "notBreaching"),
        "throttles": ("AWS/Lambda", "Throttles", "notBreaching"),
        "signature_failures": ("${local.emf_namespace}", "SignatureFailures", "notBreaching"),
        "cloud_api_errors": ("${local.emf_namespace}", "CloudApiErrors", "notBreaching"),
        "reconcile_failures": ("${local.emf_namespace}", "ReconcileFailures", "notBreaching"),
        "reconcile_not_running": ("${local.emf_namespace}", "ReconcileRuns", "breaching"),
        "pool_at_max": ("${local.emf_namespace}", "AtMaxWithQueue", "ignore"),
    }
    assert set(alarms) == set(expected)
    for name, (ns, metric, missing) in expected.items():
        a = alarms[name]
        assert (a["namespace"], a["metric_name"], a["treat_missing_data"]) == (ns, metric, missing), name
        if ns != "AWS/Lambda":
            assert metric in emitted, f"{metric} is not emitted by the core"
        assert a["alarm_actions"] == "${local.alarm_actions}", name
        assert aws.locals["runbook"] == "${var.runbook_url}"
        assert "Runbook: ${local.runbook}#" in a["alarm_description"], name
    # Metrics the core emits without dimensions must be alarmed without dimensions.
    for name in ("signature_failures", "cloud_api_errors", "reconcile_failures", "reconcile_not_running"):
        assert "dimensions" not in alarms[name], name
    assert alarms["pool_at_max"]["dimensions"] == {"Pool": "${each.key}"}
    assert alarms["signature_failures"]["threshold"] == "${var.signature_failure_threshold}"


def test_azure_secret_values_only_reach_app_settings(azure):
    """The sensitive variables are only tested for null through nonsensitive() and copied
    into the app settings; nothing else (count, for_each, outputs) sees them."""
    harmless = re.sub(
        r"nonsensitive\(var\.webhook_secret(_previous)? [=!]= null( \|\| var\.webhook_secret != null)?\)"
        r"|SCALEHOOK_WEBHOOK_SECRET(_PREVIOUS)? = var\.webhook_secret(_previous)?\b"
        r"|condition\s*= var\.webhook_secret == null \|\| try\(length\(trimspace\(var\.webhook_secret\)\)",
        "",
        azure.text,
    )
    assert not re.findall(r"var\.webhook_secret(_previous)?\b(?!_)", harmless)


def test_azure_app_settings(azure):
    app = azure.resource("azurerm_function_app_flex_consumption", "scalehook")
    assert app["runtime_name"] == "custom"
    settings = app["app_settings"]
    for name in (
        "FUNCTIONS_WORKER_RUNTIME",
        "SCALEHOOK_CONFIG_TOML",
        "SCALEHOOK_TABLE_ENDPOINT",
        "SCALEHOOK_TABLE_NAME",
        "AZURE_CLIENT_ID",
        "SCALEHOOK_RECONCILE_SCHEDULE",
    ):
        assert name in settings, name
    assert "local.secret_settings" in settings
    secret = azure.locals["secret_settings"]
    assert "SCALEHOOK_WEBHOOK_SECRET" in secret
    assert "@Microsoft.KeyVault(SecretUri=" in secret
    assert azure.variables["table_name"]["default"] == "scalehookledger"
    assert azure.variables["reconcile_schedule"]["default"] == "0 */5 * * * *"
    assert azure.locals["webhook_url"].endswith("/api/webhook")
    assert app["key_vault_reference_identity_id"] == "${azurerm_user_assigned_identity.app.id}"


def test_azure_alerts_query_real_outcomes(azure):
    outcomes = core_outcomes()
    assert {"unauthorized", "ledger_error", "fleet_error", "timeout"} <= outcomes
    rules = azure.resources["azurerm_monitor_scheduled_query_rules_alert_v2"]
    assert set(rules) == {
        "signature_failures",
        "cloud_errors",
        "function_failures",
        "reconcile_failures",
        "reconcile_not_running",
        "pool_at_max",
    }
    queried = set()
    for r in rules.values():
        query = r["criteria"][0]["query"]
        queried |= set(re.findall(r'\\?"(\w+)\\?"', query)) & outcomes
        assert "Runbook: ${local.runbook}#" in r["description"]
    assert queried == {"unauthorized", "ledger_error", "fleet_error", "timeout"}
    # The lines are found by the core's log targets, and read by its field names.
    service = core_source("service.rs")
    for target in ("scalehook::delivery", "scalehook::reconcile"):
        assert f'target: "{target}"' in service
    assert "scalehook::delivery" in azure.locals["deliveries_kql"]
    assert "scalehook::reconcile" in azure.locals["reconcile_kql"]
    assert re.search(r"\bok = report\.ok\(\)", service)
    report_fields = set(re.findall(r"pub (\w+):", core_source("report.rs")))
    assert {"outcome", "pool", "capacity_after", "queued"} <= report_fields
    at_max = rules["pool_at_max"]["criteria"][0]
    assert "after >= max" in at_max["query"] and "queued > 0" in at_max["query"]
    assert at_max["failing_periods"][0]["minimum_failing_periods_to_trigger_alert"] == 3
    silent = rules["reconcile_not_running"]["criteria"][0]
    assert (silent["operator"], silent["threshold"]) == ("LessThan", 1)


def test_alert_descriptions_link_to_runbook_sections(aws, azure):
    """Each alert names a runbook section; the section must exist (GitHub's anchor rules)."""
    from conftest import ROOT

    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^##+ (.+)$", runbook, re.M)
    }
    linked = set()
    for module in (aws, azure):
        linked |= set(re.findall(r"\$\{local\.runbook\}#([a-z0-9-]+)", module.text))
    assert linked, "no alert links to the runbook"
    assert linked <= anchors, linked - anchors
    for needed in ("redeliver-failed-deliveries", "roll-back-the-zip", "ledger-errors"):
        assert needed in anchors
