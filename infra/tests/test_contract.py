"""What the modules give the functions matches what the adapters read, and the alarms
watch metrics and outcomes the core actually emits."""

import re

from conftest import MODULES, ROOT, core_module, core_source, plain
from test_observability import SLO_ALARMS, SLO_RULES


def core_outcomes():
    return set(re.findall(r'Outcome::\w+ => "(\w+)"', core_source("report.rs")))


def core_emf_metrics():
    src = core_module("metrics")
    # The reconcile state lines' figures are (name, unit, value) tuples (state_values).
    state = set(re.findall(r'\(\s*"([A-Z]\w+)",\s*"Count",', src))
    return set(re.findall(r'\{"Name": "(\w+)"', src)) | set(re.findall(r'put\("(\w+)"', src)) | state


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
    # The only use of the secret's value is the write-only argument of the secret's version;
    # every other mention only tests it for null or validates its length. The module stores
    # it in Secrets Manager (10,000 reads per second, not SSM's shared 40: cold-start bursts).
    assert "aws_ssm_parameter" not in aws.resources
    version = aws.resource("aws_secretsmanager_secret_version", "webhook_secret")
    assert version["secret_string_wo"] == "${var.webhook_secret}"
    assert "secret_string" not in version
    assert version["secret_id"] == "${aws_secretsmanager_secret.webhook_secret[0].id}"
    # (Any expression on a sensitive variable is sensitive, and count, for_each and
    # unmarked outputs refuse sensitive values: null checks go through nonsensitive().)
    harmless = re.sub(
        r"nonsensitive\(var\.webhook_secret != null\)"
        r"|secret_string_wo\s*= var\.webhook_secret\n"
        r"|condition\s*= var\.webhook_secret == null \|\| try\(length\(trimspace\(var\.webhook_secret\)\)",
        "",
        aws.text,
    )
    assert not re.findall(r"var\.webhook_secret\b(?!_)", harmless)


def test_dynamodb_ledger_shape(aws):
    t = aws.resource("aws_dynamodb_table", "ledger")
    assert t["billing_mode"] == "PAY_PER_REQUEST"
    # The layout crates/scalehook-aws/src/ledger.rs (and tests/common/mod.rs) expects.
    assert t["hash_key"] == "pk"
    assert t["range_key"] == "sk"
    assert t["attribute"] == [
        {"name": "pk", "type": "S"},
        {"name": "sk", "type": "S"},
        {"name": "due", "type": "S"},
        {"name": "updated_at", "type": "N"},
    ]
    assert t["global_secondary_index"] == [
        {"name": "due", "hash_key": "due", "range_key": "updated_at", "projection_type": "ALL"}
    ]
    ledger = (ROOT / "crates" / "scalehook-aws" / "src" / "ledger.rs").read_text()
    assert 'DUE_INDEX: &str = "due"' in ledger
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
    assert "qualifier" not in retry, "the schedule invokes the unqualified function"


def test_launch_events_are_retried_and_reconcile_is_not(aws):
    """Lifecycle launch events reach the `launch` alias, whose asynchronous invocations
    Lambda retries; the function-wide config (0 retries) stays the schedule's."""
    fn = aws.resource("aws_lambda_function", "scalehook")
    assert fn["publish"] is True, "an alias needs a published version"
    alias = aws.resource("aws_lambda_alias", "launch")
    assert alias["function_version"] == "${aws_lambda_function.scalehook.version}"
    launch = aws.resource("aws_lambda_function_event_invoke_config", "launch")
    assert launch["qualifier"] == "${aws_lambda_alias.launch.name}"
    assert launch["maximum_retry_attempts"] == 2
    assert launch["maximum_event_age_in_seconds"] == "${var.launch_event_max_age_seconds}"
    assert aws.outputs["launch_alias_name"]["value"] == "${aws_lambda_alias.launch.name}"


def test_function_url_has_no_aws_auth(aws):
    url = aws.resource("aws_lambda_function_url", "webhook")
    assert url["authorization_type"] == "NONE"


def test_aws_alarms_watch_emitted_metrics(aws):
    emitted = core_emf_metrics()
    namespace = re.search(r'EMF_NAMESPACE: &str = "(\w+)"', core_module("metrics")).group(1)
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
        "launch_failures": ("AWS/Events", "MatchedEvents", "notBreaching"),
        "below_desired": (None, None, "missing"),
        "github_rate_limit_low": ("${local.emf_namespace}", "GitHubRateLimitRemaining", "ignore"),
        "runner_removals_refused": ("${local.emf_namespace}", "RunnerRemovalsRefused", "ignore"),
        "redeliveries_abandoned": ("${local.emf_namespace}", "RedeliveriesAbandoned", "notBreaching"),
    }
    # The SLO alarms (observability.tf) are checked by test_observability.
    assert set(alarms) - SLO_ALARMS == set(expected)
    for name, (ns, metric, missing) in expected.items():
        a = alarms[name]
        assert (a.get("namespace"), a.get("metric_name"), a["treat_missing_data"]) == (ns, metric, missing), name
        if ns == "${local.emf_namespace}":
            assert metric in emitted, f"{metric} is not emitted by the core"
        assert a["alarm_actions"] == "${local.alarm_actions}", name
        assert aws.locals["runbook"] == "${var.runbook_url}"
        assert "Runbook: ${local.runbook}#" in a["alarm_description"], name
    # Metrics the core emits without dimensions must be alarmed without dimensions.
    for name in ("signature_failures", "cloud_api_errors", "reconcile_failures", "reconcile_not_running"):
        assert "dimensions" not in alarms[name], name
    assert alarms["pool_at_max"]["dimensions"] == {"Pool": "${each.key}"}
    assert alarms["signature_failures"]["threshold"] == "${var.signature_failure_threshold}"


def test_azure_webhook_secret_is_a_key_vault_reference_only(azure):
    """No plain app setting for the webhook secret: its value would sit in the Terraform state
    and be readable by anyone allowed to list the app's settings. Only Key Vault references,
    resolved with the app's identity, which may read those secrets alone."""
    assert not {"webhook_secret", "webhook_secret_previous"} & set(azure.variables)
    assert "default" not in azure.variables["webhook_secret_key_vault_secret"]
    settings = azure.locals["secret_settings"]
    assert "@Microsoft.KeyVault(SecretUri=${data.azurerm_key_vault.webhook_secret.vault_uri}secrets/${secret})" in settings
    assert re.search(r"for setting, secret in local\.kv_secret", settings)
    kv = azure.locals["kv_secret"]
    assert "SCALEHOOK_WEBHOOK_SECRET = local.kv.secret_name" in kv
    assert "SCALEHOOK_WEBHOOK_SECRET_PREVIOUS = local.kv.previous_secret_name" in kv
    # Nothing secret is an input of the module at all.
    assert not [n for n, v in azure.variables.items() if v.get("sensitive")]


def test_azure_app_settings(azure):
    app = azure.resource("azapi_resource", "app")
    assert app["type"].startswith("Microsoft.Web/sites@")
    props = app["body"]["properties"]
    # The runtime lives in functionAppConfig.runtime on Flex Consumption.
    assert props["functionAppConfig"]["runtime"] == {"name": "custom", "version": "1.0"}
    scale = props["functionAppConfig"]["scaleAndConcurrency"]
    assert scale == {"instanceMemoryMB": "${var.instance_memory_mb}", "maximumInstanceCount": "${var.maximum_instance_count}"}
    assert props["keyVaultReferenceIdentity"] == "${azurerm_user_assigned_identity.app.id}"
    assert props["httpsOnly"] is True
    settings = azure.locals["app_settings"]
    for name in (
        "SCALEHOOK_CONFIG_TOML",
        "SCALEHOOK_TABLE_ENDPOINT",
        "SCALEHOOK_TABLE_NAME",
        "AZURE_CLIENT_ID",
        "SCALEHOOK_RECONCILE_SCHEDULE",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
    ):
        assert name in settings, name
    # Sampling off, so the count-based alerts see every line and invocation.
    assert re.search(
        r'AzureFunctionsJobHost__logging__applicationInsights__samplingSettings__isEnabled\s*=\s*"false"', settings
    )
    assert "local.secret_settings" in settings
    # Rejected or unsupported on Flex Consumption, and the arguments azurerm 4.81.0 lacks.
    for absent in (
        "FUNCTIONS_WORKER_RUNTIME",
        "WEBSITE_RUN_FROM_PACKAGE",
        "zip_deploy_file",
        "function_app_storage_account_name",
        "function_app_storage_uses_managed_identity",
        "key_vault_reference_identity_id",
        "azurerm_function_app_flex_consumption",
    ):
        code = "\n".join(l for l in azure.text.splitlines() if not l.strip().startswith("#"))
        assert absent not in code, absent
    secret = azure.locals["secret_settings"]
    assert "local.kv_secret" in secret and "@Microsoft.KeyVault(SecretUri=" in secret
    # The ledger table through the management plane (azapi): azurerm_storage_table always
    # uses Shared Key, which the account refuses.
    assert "azurerm_storage_table" not in azure.resources
    table = azure.resource("azapi_resource", "ledger_table")
    assert table["type"].startswith("Microsoft.Storage/storageAccounts/tableServices/tables@")
    assert table["parent_id"] == "${azurerm_storage_account.app.id}/tableServices/default"
    assert table["name"] == "${var.table_name}"
    assert re.search(r"SCALEHOOK_TABLE_NAME\s*=\s*azapi_resource\.ledger_table\.name", settings)
    assert azure.variables["table_name"]["default"] == "scalehookledger"
    assert azure.variables["reconcile_schedule"]["default"] == "0 */5 * * * *"
    assert azure.locals["webhook_url"].endswith("/api/webhook")


def test_azure_publishes_a_release_with_one_deploy(azure):
    pkg = azure.resource("azapi_resource", "package")
    assert pkg["type"].startswith("Microsoft.Web/sites/extensions@")
    assert pkg["name"] == "onedeploy"
    assert pkg["parent_id"] == "${azapi_resource.app.id}"
    assert pkg["body"]["properties"]["packageUri"] == "${var.package_url}"
    assert pkg["replace_triggers_external_values"] == ["${var.package_url}", "${var.package_sha256}"]
    assert "function_zip_path" not in azure.variables
    assert {"package_url", "package_sha256"} <= set(azure.variables)


def test_azure_providers_are_pinned(azure):
    (tf,) = [b for b in __import__("hcl2").loads((MODULES["azure"] / "versions.tf").read_text())["terraform"]]
    req = plain(tf["required_providers"])[0]
    assert req["azurerm"]["version"] == "4.81.0"
    assert req["azapi"]["source"] == "Azure/azapi"


def test_azure_alerts_query_real_outcomes(azure):
    outcomes = core_outcomes()
    assert {"unauthorized", "ledger_error", "fleet_error", "timeout"} <= outcomes
    rules = azure.resources["azurerm_monitor_scheduled_query_rules_alert_v2"]
    assert set(rules) - SLO_RULES == {
        "signature_failures",
        "cloud_errors",
        "function_failures",
        "reconcile_failures",
        "reconcile_not_running",
        "pool_at_max",
        "github_rate_limit_low",
        "runner_removals_refused",
        "redeliveries_abandoned",
    }
    queried = set()
    for r in rules.values():
        query = r["criteria"][0]["query"]
        queried |= set(re.findall(r'\\?"(\w+)\\?"', query)) & outcomes
        assert "Runbook: ${local.runbook}#" in r["description"]
    assert queried == {"unauthorized", "ledger_error", "fleet_error", "timeout"}
    # The lines are found by the core's log targets, and read by its field names.
    service = core_module("service")
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


def test_aws_secret_rotation_reaches_warm_instances(aws):
    """A new webhook_secret_version changes the function's configuration (so Lambda retires
    the warm execution environments that read the old secret at start), for every source."""
    env = aws.locals["function_env"]
    assert re.search(r"SCALEHOOK_WEBHOOK_SECRET_VERSION\s*=\s*tostring\(var\.webhook_secret_version\)", env)
    version = aws.resource("aws_secretsmanager_secret_version", "webhook_secret")
    assert version["secret_string_wo_version"] == "${var.webhook_secret_version}"
    # In the map the function gets, not behind the secret source's conditional.
    assert "SCALEHOOK_WEBHOOK_SECRET_VERSION" not in aws.locals["secret_env"]


def test_aws_group_alarms(aws):
    alarms = aws.resources["aws_cloudwatch_metric_alarm"]
    rule = aws.resource("aws_cloudwatch_event_rule", "launch_failures")
    assert "EC2 Instance Launch Unsuccessful" in rule["event_pattern"]
    assert "aws.autoscaling" in rule["event_pattern"]
    assert "local.pool_groups" in rule["event_pattern"]
    assert alarms["launch_failures"]["dimensions"] == {"RuleName": "${aws_cloudwatch_event_rule.launch_failures.name}"}
    below = alarms["below_desired"]
    assert below["for_each"] == "${local.pool_groups}"
    queries = {q["id"]: q for q in below["metric_query"]}
    assert queries["missing"]["expression"] == "desired - inservice"
    assert queries["missing"]["return_data"] is True
    assert queries["desired"]["metric"][0]["metric_name"] == "GroupDesiredCapacity"
    assert queries["inservice"]["metric"][0]["metric_name"] == "GroupInServiceInstances"
    for q in ("desired", "inservice"):
        m = queries[q]["metric"][0]
        assert m["namespace"] == "AWS/AutoScaling"
        assert m["dimensions"] == {"AutoScalingGroupName": "${each.key}"}
    assert below["evaluation_periods"] == "${var.below_desired_alarm_minutes}"
    assert (below["comparison_operator"], below["threshold"]) == ("GreaterThanThreshold", 0)
    # AtMaxWithQueue: the core compares with the effective max (the group's own when lower);
    # the behaviour itself is asserted by the core test named here.
    service = core_module("service")
    assert re.search(r"\.max\s*\.map_or\(pool\.max,", service)
    assert "fn at_max_with_queue_uses_the_groups_own_max_when_lower" in (
        ROOT / "crates/scalehook-core/tests/service.rs"
    ).read_text()
    assert "effective max" in alarms["pool_at_max"]["alarm_description"]


def test_aws_edge_protection_is_cloudfront_with_waf(aws):
    """AWS WAF does not attach to HTTP APIs or function URLs: the option is CloudFront with
    the user's web ACL, and the webhook URL follows it."""
    cf = aws.resource("aws_cloudfront_distribution", "edge")
    assert cf["web_acl_id"] == "${var.cloudfront_web_acl_arn}"
    assert cf["count"] == "${local.edge ? 1 : 0}"
    assert "POST" in cf["default_cache_behavior"][0]["allowed_methods"]
    assert "aws_wafv2_web_acl_association" not in aws.resources
    assert "local.edge" in aws.locals["webhook_url"]
    assert aws.outputs["webhook_url"]["value"] == "${local.webhook_url}"
    from conftest import ROOT

    for doc in (ROOT / "README.md", ROOT / "docs" / "runbook.md", MODULES["aws"] / "README.md"):
        assert "WAF-able" not in doc.read_text(), doc


def test_github_app_alarms(aws, azure):
    """The GitHub App alarms (rate limit low, removals refused, redeliveries abandoned) exist
    only with an App, read catalog metrics with the dimensions the core writes them with,
    and the Azure ones read the same names from the state line."""
    import json

    catalog = json.loads((ROOT / "infra" / "tests" / "emf-catalog.json").read_text())["metrics"]
    alarms = aws.resources["aws_cloudwatch_metric_alarm"]
    assert aws.locals["github_alarms"] == '${var.github == null ? toset([]) : toset(["app"])}'
    rate = alarms["github_rate_limit_low"]
    assert rate["for_each"] == "${local.github_alarms}"
    assert "dimensions" not in rate and [] in catalog["GitHubRateLimitRemaining"]["dimensions"]
    assert (rate["statistic"], rate["comparison_operator"], rate["threshold"]) == (
        "Maximum",
        "LessThanThreshold",
        "${var.github_rate_limit_alarm_threshold}",
    )
    assert aws.variables["github_rate_limit_alarm_threshold"]["default"] == 500
    assert aws.locals["rate_limit_alarm_periods"] == "${max(2, ceil(10 / var.reconcile_interval_minutes))}"
    assert rate["evaluation_periods"] == rate["datapoints_to_alarm"] == "${local.rate_limit_alarm_periods}"
    refused = alarms["runner_removals_refused"]
    assert refused["for_each"] == "${var.github == null ? toset([]) : toset(local.pool_names)}"
    assert refused["dimensions"] == {"Pool": "${each.key}"} and ["Pool"] in catalog["RunnerRemovalsRefused"]["dimensions"]
    assert aws.locals["removals_refused_alarm_periods"] == "${max(3, ceil(60 / var.reconcile_interval_minutes))}"
    assert refused["evaluation_periods"] == refused["datapoints_to_alarm"] == "${local.removals_refused_alarm_periods}"
    assert (refused["statistic"], refused["comparison_operator"], refused["threshold"]) == ("Sum", "GreaterThanThreshold", 0)
    abandoned = alarms["redeliveries_abandoned"]
    assert "dimensions" not in abandoned and [] in catalog["RedeliveriesAbandoned"]["dimensions"]
    assert (abandoned["statistic"], abandoned["threshold"], abandoned["evaluation_periods"]) == ("Sum", 0, 1)
    for a in (rate, refused, abandoned):
        assert a["period"] == "${local.reconcile_period}"

    rules = azure.resources["azurerm_monitor_scheduled_query_rules_alert_v2"]
    assert azure.variables["github_rate_limit_alarm_threshold"]["default"] == 500
    for name, metric, scope in (
        ("github_rate_limit_low", "GitHubRateLimitRemaining", "state"),
        ("runner_removals_refused", "RunnerRemovalsRefused", "p"),
        ("redeliveries_abandoned", "RedeliveriesAbandoned", "state"),
    ):
        r = rules[name]
        assert r["count"] == "${var.github == null ? 0 : 1}", name
        query = r["criteria"][0]["query"]
        assert f"{scope}.{metric}" in query, name
        assert (["Pool"] if scope == "p" else []) in catalog[metric]["dimensions"], name
        assert query.startswith("${local.state_pools_kql}" if scope == "p" else "${local.state_kql}"), name
    rate = rules["github_rate_limit_low"]["criteria"][0]
    assert (rate["operator"], rate["threshold"], rate["time_aggregation_method"]) == (
        "LessThan",
        "${var.github_rate_limit_alarm_threshold}",
        "Maximum",
    )
    assert rate["failing_periods"][0]["minimum_failing_periods_to_trigger_alert"] == 2
    refused = rules["runner_removals_refused"]
    assert refused["window_duration"] == "PT1H" and "passes >= 3" in refused["criteria"][0]["query"]
    assert refused["criteria"][0]["dimension"][0]["name"] == "pool"


def test_spot_interruptions_reach_the_function_only_with_a_spot_pool(aws):
    """The EC2 events the Lambda's dispatch classifies (lambda.rs) are the rule's, sent to
    an alias of their own whose invocations are retried within the two-minute warning."""
    rule = aws.resource("aws_cloudwatch_event_rule", "spot_interruptions")
    assert rule["count"] == "${local.any_spot ? 1 : 0}"
    assert aws.locals["any_spot"] == "${length(local.spot_pools) > 0}"
    pattern = rule["event_pattern"]
    lambda_rs = (ROOT / "crates/scalehook-aws/src/lambda.rs").read_text()
    for detail_type in (
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
    ):
        assert detail_type in pattern
        assert f'"{detail_type}"' in lambda_rs
    assert "aws.ec2" in pattern
    target = aws.resource("aws_cloudwatch_event_target", "spot_interruptions")
    assert target["arn"] == "${aws_lambda_alias.interruption[0].arn}"
    invoke = aws.resource("aws_lambda_function_event_invoke_config", "interruption")
    assert invoke["qualifier"] == "${aws_lambda_alias.interruption[0].name}"
    assert invoke["maximum_retry_attempts"] == 2
    perm = aws.resource("aws_lambda_permission", "spot_interruptions")
    assert perm["qualifier"] == "${aws_lambda_alias.interruption[0].name}"
    assert perm["source_arn"] == "${aws_cloudwatch_event_rule.spot_interruptions[0].arn}"
    assert perm["principal"] == "events.amazonaws.com"
