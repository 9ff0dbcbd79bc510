"""The permissions the modules grant are exactly what scalehook calls, on the narrowest
resources each cloud allows."""

import re

from conftest import ROOT

# What the Lambda calls (crates/scalehook-aws, the contract in docs and the module README).
AWS_STATEMENTS = {
    "DescribeGroups": {
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeScalingActivities",
        "autoscaling:DescribeWarmPool",
    },
    # Actions from local.pool_group_actions (CompleteLifecycleAction only with github).
    "ScalePoolGroups": {"${local.pool_group_actions}"},
    # No Scan: the ledger reads only a pool's partition and the due index.
    "Ledger": {
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    },
    "Logs": {"logs:CreateLogStream", "logs:PutLogEvents"},
    "WebhookSecretParameter": {"ssm:GetParameter"},
    "WebhookSecretValue": {"secretsmanager:GetSecretValue"},
    "DecryptWebhookSecret": {"kms:Decrypt"},
    # The GitHub App key, by reference (an SSM parameter or a Secrets Manager secret).
    "GitHubAppKeyParameter": {"ssm:GetParameter"},
    "GitHubAppKeyValue": {"secretsmanager:GetSecretValue"},
    "DecryptGitHubAppKey": {"kms:Decrypt"},
    "LedgerKey": {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"},
    # With github: the runner groups' launch path (JIT parameters and the launch hooks).
    "JitParameters": {"ssm:AddTagsToResource", "ssm:DeleteParameter", "ssm:PutParameter"},
    "FindJitParameters": {"ssm:DescribeParameters"},
    "EncryptJitParameters": {"kms:Encrypt", "kms:GenerateDataKey"},
}
POOL_GROUP_ACTIONS = [
    "autoscaling:SetDesiredCapacity",
    "autoscaling:SetInstanceProtection",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
]

AZURE_SCALE_SET_ACTIONS = [
    "Microsoft.Compute/virtualMachineScaleSets/read",
    "Microsoft.Compute/virtualMachineScaleSets/write",
    "Microsoft.Compute/virtualMachineScaleSets/delete/action",
    "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
]


def function_statements(aws):
    """Every statement of the function's policy document, static and dynamic, by sid."""
    doc = aws.data["aws_iam_policy_document"]["function"]
    statements = list(doc.get("statement", []))
    for dyn in doc.get("dynamic", []):
        assert list(dyn) == ["statement"], dyn
        statements.extend(dyn["statement"]["content"])
    by_sid = {}
    for s in statements:
        assert s["sid"] not in by_sid, f"duplicate sid {s['sid']}"
        by_sid[s["sid"]] = s
    return by_sid


def test_aws_policy_has_exactly_the_expected_statements(aws):
    statements = function_statements(aws)
    assert set(statements) == set(AWS_STATEMENTS)
    for sid, actions in AWS_STATEMENTS.items():
        got = statements[sid]["actions"]
        got = [got] if isinstance(got, str) else got
        assert set(got) == actions, sid
        assert len(got) == len(actions), f"{sid}: duplicate action"


def test_aws_only_describe_is_on_star(aws):
    for sid, s in function_statements(aws).items():
        resources = s["resources"]
        on_star = resources == ["*"]
        # Neither action has resource-level permissions.
        assert on_star == (sid in ("DescribeGroups", "FindJitParameters")), f"{sid}: resources {resources}"
        for action in s["actions"]:
            assert "*" not in action, f"{sid}: wildcard action {action}"


def test_aws_mutating_autoscaling_actions_are_on_the_pool_groups(aws):
    s = function_statements(aws)["ScalePoolGroups"]
    assert s["resources"] == "${local.asg_arns}"
    actions = aws.locals["pool_group_actions"]
    for a in POOL_GROUP_ACTIONS:
        assert f'"{a}"' in actions, a
    # Completing launch hooks (launch events, and reconcile finishing instances stuck in
    # Pending:Wait) only with the GitHub App, on the same groups.
    assert 'var.github == null ? [] : ["autoscaling:CompleteLifecycleAction"]' in actions
    arns = aws.locals["asg_arns"]
    # One ARN per configured pool, by exact group name: the group id is the only wildcard.
    assert re.fullmatch(
        r"\$\{\[for p in var\.pools : "
        r'"arn:\$\{local\.partition\}:autoscaling:\$\{local\.region\}:\$\{local\.account_id\}:'
        r'autoScalingGroup:\*:autoScalingGroupName/\$\{p\.aws_asg\}"\]\}',
        arns,
    ), arns


def test_aws_ledger_secret_and_logs_are_scoped(aws):
    s = function_statements(aws)
    assert s["Ledger"]["resources"] == [
        "${aws_dynamodb_table.ledger.arn}",
        "${aws_dynamodb_table.ledger.arn}/index/due",
    ]
    assert s["Logs"]["resources"] == ["${aws_cloudwatch_log_group.function.arn}:*"]
    assert s["WebhookSecretParameter"]["resources"] == ["${statement.value}"]
    assert s["WebhookSecretValue"]["resources"] == ["${statement.value}"]
    assert s["DecryptWebhookSecret"]["resources"] == ["${statement.value}"]
    # The parameter ARN names the one parameter, built from its name.
    arn = aws.locals["secret_ssm_parameter_arn"]
    assert ":parameter/${trimprefix(local.secret_ssm_parameter_name" in arn


def test_aws_jit_permissions_are_on_the_jit_path_with_github_only(aws):
    s = function_statements(aws)
    assert aws.locals["jit_parameters"] == (
        "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${var.jit_parameter_prefix}/*"
    )
    dynamic = {
        d["statement"]["content"][0]["sid"]: d["statement"]["for_each"]
        for d in aws.data["aws_iam_policy_document"]["function"]["dynamic"]
    }
    assert dynamic["JitParameters"] == "${var.github == null ? [] : [local.jit_parameters]}"
    assert s["JitParameters"]["resources"] == ["${statement.value}"]
    assert "var.github == null" in dynamic["FindJitParameters"]
    assert dynamic["EncryptJitParameters"] == "${var.github == null || var.jit_kms_key_arn == null ? [] : [var.jit_kms_key_arn]}"
    # Read never: scalehook does not read configurations back.
    for sid in ("JitParameters", "FindJitParameters"):
        assert not any(a.startswith("ssm:GetParameter") for a in s[sid]["actions"]), sid


def conditions(statement) -> dict:
    return {c["variable"]: (c["test"], c["values"]) for c in statement.get("condition", [])}


def test_aws_kms_grants_go_through_their_service_and_value(aws):
    """Every KMS statement names the service it is used through (kms:ViaService) and, where
    the service puts it in the encryption context, the one secret or parameter."""
    s = function_statements(aws)
    kms = {sid: st for sid, st in s.items() if any(a.startswith("kms:") for a in st["actions"])}
    assert set(kms) == {"DecryptWebhookSecret", "DecryptGitHubAppKey", "LedgerKey", "EncryptJitParameters"}
    for sid, st in kms.items():
        assert "kms:ViaService" in conditions(st) or any(
            c["variable"] == "kms:ViaService" for c in st.get("condition", [])
        ), f"{sid}: no kms:ViaService"
    assert conditions(s["LedgerKey"])["kms:ViaService"] == ("StringEquals", ["dynamodb.${local.region}.amazonaws.com"])
    assert conditions(s["LedgerKey"])["kms:CallerAccount"] == ("StringEquals", ["${local.account_id}"])
    assert conditions(s["EncryptJitParameters"]) == {
        "kms:ViaService": ("StringEquals", ["ssm.${local.region}.amazonaws.com"]),
        "kms:EncryptionContext:PARAMETER_ARN": ("StringLike", ["${local.jit_parameters}"]),
    }
    for sid, via, ctx in (
        ("DecryptWebhookSecret", "secret_kms_via", "secret_kms_context"),
        ("DecryptGitHubAppKey", "app_key_kms_via", "app_key_kms_context"),
    ):
        c = conditions(s[sid])
        assert c["kms:ViaService"] == ("StringEquals", [f"${{local.{via}}}"]), sid
        assert c[f"${{local.{ctx}.key}}"] == ("StringEquals", [f"${{local.{ctx}.value}}"]), sid
        # Secrets Manager names the secret (SecretARN), Parameter Store the parameter.
        text = aws.locals[ctx]
        assert '"kms:EncryptionContext:SecretARN"' in text and '"kms:EncryptionContext:PARAMETER_ARN"' in text
        assert "secretsmanager.${local.region}.amazonaws.com" in aws.locals[via]
        assert "ssm.${local.region}.amazonaws.com" in aws.locals[via]


def test_aws_no_ec2_and_no_managed_policies(aws):
    assert "ec2:" not in aws.text
    assert "aws_iam_role_policy_attachment" not in aws.resources
    assert "aws_iam_policy_attachment" not in aws.resources
    # Exactly one inline policy, on the function's role.
    assert list(aws.resources["aws_iam_role_policy"]) == ["function"]
    assume = aws.data["aws_iam_policy_document"]["assume"]["statement"]
    assert len(assume) == 1
    assert assume[0]["principals"][0]["identifiers"] == ["lambda.amazonaws.com"]


def test_aws_public_invoke_is_limited_to_the_function_url(aws):
    perms = aws.resources["aws_lambda_permission"]
    # The function URL's two public statements are the provider's own (added on create since
    # aws 6.28.0, FunctionURLAllowPublicAccess and FunctionURLAllowInvokeAction): the module
    # adds no public permission of its own, which would only duplicate them.
    assert not [name for name, p in perms.items() if p["principal"] == "*"]
    url = aws.resource("aws_lambda_function_url", "webhook")
    assert url["authorization_type"] == "NONE"
    versions = (aws.path / "versions.tf").read_text()
    assert re.search(r'version\s*=\s*">= 6\.28, < 7\.0"', versions)
    # The schedule and API Gateway may invoke only from their own rule or API.
    assert perms["reconcile"]["source_arn"] == "${aws_cloudwatch_event_rule.reconcile.arn}"
    assert perms["api_gateway"]["source_arn"].endswith("/*/*/webhook")


def test_azure_custom_role_has_exactly_the_scale_set_actions(azure):
    assert azure.locals["scale_set_actions"] == AZURE_SCALE_SET_ACTIONS
    role = azure.resource("azurerm_role_definition", "scale_set_scaler")
    perms = role["permissions"]
    assert len(perms) == 1
    assert perms[0]["actions"] == "${local.scale_set_actions}"
    assert perms[0].get("data_actions") is None
    assert role["assignable_scopes"] == "${local.scale_set_resource_groups}"


def test_azure_scale_set_role_is_assigned_on_each_scale_set_only(azure):
    a = azure.resource("azurerm_role_assignment", "scale_set")
    assert a["for_each"] == "${local.scale_sets}"
    # Keyed by pool name, known at plan time: a scale set id from a runner module in the same
    # apply is not, and for_each keys must be ("Invalid for_each argument").
    assert azure.locals["scale_sets"] == "${{for p in var.pools : p.name => p.azure_vmss}}"
    assert a["scope"] == "${each.value}"
    assert a["role_definition_id"] == (
        "${azurerm_role_definition.scale_set_scaler.role_definition_resource_id}"
    )
    assert a["principal_id"] == "${azurerm_user_assigned_identity.app.principal_id}"
    # The scale sets are exactly the pools' azure_vmss ids.
    assert "p.azure_vmss" in azure.locals["scale_sets"]


def test_azure_data_roles_are_narrow(azure):
    assignments = azure.resources["azurerm_role_assignment"]
    assert set(assignments) == {
        "host_storage",
        "ledger_table",
        "webhook_secret",
        "github_app_key",
        "scale_set",
        "operation_status",
    }
    for name, a in assignments.items():
        assert a.get("role_definition_name") not in ("Owner", "Contributor", "Virtual Machine Contributor"), name
        assert a["principal_id"] == "${azurerm_user_assigned_identity.app.principal_id}", name
    assert assignments["ledger_table"]["role_definition_name"] == "Storage Table Data Contributor"
    assert assignments["ledger_table"]["scope"] == "${azapi_resource.ledger_table.id}"
    assert assignments["webhook_secret"]["role_definition_name"] == "Key Vault Secrets User"
    # On the secret itself, not on the vault.
    assert assignments["webhook_secret"]["scope"].endswith("/secrets/${each.value}")
    # The App key: read through a Key Vault reference, on that one secret.
    key = assignments["github_app_key"]
    assert key["role_definition_name"] == "Key Vault Secrets User"
    assert key["scope"] == "${local.app_key.key_vault_id}/secrets/${local.app_key.secret_name}"
    assert key["count"] == "${local.app_key == null ? 0 : 1}"
    # The only blob role here is the host storage's (deployment package); each runner
    # module grants the JIT writes on its pool's container only.
    blob = [n for n, a in assignments.items() if "Blob" in a.get("role_definition_name", "")]
    assert blob == ["host_storage"]


def test_azure_github_settings_are_references(azure):
    settings = azure.locals["github_settings"]
    assert "SCALEHOOK_GITHUB_APP_KEY" in settings and "@Microsoft.KeyVault(SecretUri=" in settings
    assert "SCALEHOOK_JIT_BLOB_ENDPOINT = var.jit_blob_endpoint" in settings
    assert "local.github_settings" in azure.locals["app_settings"]
    app = azure.resource("azapi_resource", "app")
    conditions = [p["condition"] for p in app["lifecycle"][0]["precondition"]]
    assert any("var.github_app_key_key_vault_secret == null" in c for c in conditions)
    assert any("var.jit_blob_endpoint == null || var.github != null" in c for c in conditions)


def test_aws_github_app_key_is_read_by_reference_only(aws):
    s = function_statements(aws)
    for sid in ("GitHubAppKeyParameter", "GitHubAppKeyValue", "DecryptGitHubAppKey"):
        assert s[sid]["resources"] == ["${statement.value}"], sid
    env = aws.locals["github_env"]
    assert set(re.findall(r"SCALEHOOK_\w+", env)) == {
        "SCALEHOOK_GITHUB_APP_KEY_SSM_PARAMETER",
        "SCALEHOOK_GITHUB_APP_KEY_ARN",
        "SCALEHOOK_JIT_PARAMETER_PREFIX",
        "SCALEHOOK_JIT_KMS_KEY_ID",
    }
    # jit_kms_key_arn reaches the variable the AWS crate reads.
    provision = (ROOT / "crates/scalehook-aws/src/provision.rs").read_text()
    assert 'JIT_KMS_KEY_ENV: &str = "SCALEHOOK_JIT_KMS_KEY_ID"' in provision
    assert "SCALEHOOK_JIT_KMS_KEY_ID = var.jit_kms_key_arn" in env
    assert "local.github_env" in aws.locals["function_env"]
    assert aws.variables["jit_parameter_prefix"]["default"] == "/scalehook/jit"
    fn = aws.resource("aws_lambda_function", "scalehook")
    conditions = [p["condition"] for p in fn["lifecycle"][0]["precondition"]]
    assert any("local.app_key_sources == 1" in c for c in conditions)


def test_azure_storage_has_no_shared_keys(azure):
    sa = azure.resource("azurerm_storage_account", "app")
    assert sa["shared_access_key_enabled"] is False
    assert sa["allow_nested_items_to_be_public"] is False
    app = azure.resource("azapi_resource", "app")
    storage = app["body"]["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert storage["authentication"]["userAssignedIdentityResourceId"] == "${azurerm_user_assigned_identity.app.id}"
    assert "storageAccountConnectionStringName" not in storage["authentication"]
    # Host storage by identity: the account name and the identity, never a connection string.
    settings = azure.locals["app_settings"]
    assert re.search(r"AzureWebJobsStorage__accountName\s*=\s*azurerm_storage_account\.app\.name", settings)
    assert re.search(r'AzureWebJobsStorage__credential\s*=\s*"managedidentity"', settings)
    assert "AzureWebJobsStorage__clientId" in settings
    assert not re.search(r"\bAzureWebJobsStorage\s*=", settings)
    assert "primary_access_key" not in azure.text and "primary_connection_string" not in azure.text


def test_azure_operation_status_read_is_opt_in_and_read_only(azure):
    role = azure.resource("azurerm_role_definition", "operation_status_reader")
    assert role["count"] == "${var.grant_operation_status_read ? 1 : 0}"
    assert role["permissions"][0]["actions"] == ["Microsoft.Compute/locations/operations/read"]
    assert azure.variables["grant_operation_status_read"]["default"] is False
    a = azure.resource("azurerm_role_assignment", "operation_status")
    # One, on the deployment's subscription (known at plan time), not keyed by scale set ids.
    assert a["count"] == "${var.grant_operation_status_read ? 1 : 0}"
    assert a["scope"] == "${local.deployment_subscription}"
    assert "data.azurerm_client_config.current.subscription_id" in azure.locals["deployment_subscription"]
    (pre,) = a["lifecycle"][0]["precondition"]
    assert "local.scale_sets" in pre["condition"]
    # Only custom roles are these two; the scale set role never gains the subscription.
    assert set(azure.resources["azurerm_role_definition"]) == {"scale_set_scaler", "operation_status_reader"}


# ---- The role's inline policy at many pools --------------------------------------------------
# IAM caps the inline policies of a role at 10,240 characters in all, white space not counted
# (IAM and STS quotas). The module's one policy is rendered here from its own statements with
# every optional statement on and long names, the way aws_iam_policy_document writes it.

INLINE_POLICY_BUDGET = 10240


def render_function_policy(aws, pools: int) -> str:
    import json

    account, region, partition = "123456789012", "ap-southeast-2", "aws"
    name = "scalehook-production-eu"
    values = {
        "${local.asg_arns}": [
            f"arn:{partition}:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/"
            f"github-runners-pool-{i:02d}-with-a-long-descriptive-name"
            for i in range(pools)
        ],
        "${local.pool_group_actions}": POOL_GROUP_ACTIONS + ["autoscaling:CompleteLifecycleAction"],
        "${aws_dynamodb_table.ledger.arn}": f"arn:{partition}:dynamodb:{region}:{account}:table/{name}-ledger",
        "${aws_cloudwatch_log_group.function.arn}": f"arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{name}",
        "${statement.value}": f"arn:{partition}:secretsmanager:{region}:{account}:secret:{name}/webhook-secret-AbCdEf",
        "${local.jit_parameters}": f"arn:{partition}:ssm:{region}:{account}:parameter/scalehook/jit/*",
        "${local.secret_kms_via}": f"secretsmanager.{region}.amazonaws.com",
        "${local.app_key_kms_via}": f"secretsmanager.{region}.amazonaws.com",
        "${local.secret_kms_context.key}": "kms:EncryptionContext:SecretARN",
        "${local.app_key_kms_context.key}": "kms:EncryptionContext:SecretARN",
        "${local.secret_kms_context.value}": f"arn:{partition}:secretsmanager:{region}:{account}:secret:{name}/webhook-secret-AbCdEf",
        "${local.app_key_kms_context.value}": f"arn:{partition}:secretsmanager:{region}:{account}:secret:{name}/github-app-key-AbCdEf",
        "${local.region}": region,
        "${local.account_id}": account,
    }

    def sub(v):
        if isinstance(v, list):
            out = []
            for x in v:
                r = sub(x)
                out.extend(r if isinstance(r, list) else [r])
            return out
        if v in values:
            return values[v]
        text = v
        for key, value in values.items():
            if isinstance(value, str):
                text = text.replace(key, value)
        assert "${" not in text, f"unmodelled expression {v}"
        return text

    rendered = []
    for sid, st in function_statements(aws).items():
        as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
        out = {"Sid": sid, "Effect": "Allow", "Action": sub(as_list(st["actions"])), "Resource": sub(as_list(st["resources"]))}
        cond = {}
        for c in st.get("condition", []):
            cond.setdefault(c["test"], {})[sub(c["variable"])] = sub(c["values"])
        if cond:
            out["Condition"] = cond
        rendered.append(out)
    return json.dumps({"Version": "2012-10-17", "Statement": rendered}, separators=(",", ":"))


def test_aws_role_policy_fits_iams_inline_budget_at_40_pools(aws):
    """40 pools (group names of 50 characters) is past what the Lambda environment holds (its
    4 KB precondition: about 25 pools of rendered configuration); the policy still fits."""
    size = len(render_function_policy(aws, 40))
    assert size < INLINE_POLICY_BUDGET, size
    # It grows by one group ARN per pool (plus quotes and a comma), nothing else.
    per_pool = len(render_function_policy(aws, 41)) - size
    assert per_pool == len(render_function_policy(aws, 2)) - len(render_function_policy(aws, 1)), per_pool
    assert per_pool < 150, per_pool


def test_azure_for_each_keys_are_known_at_plan_time(azure):
    """No for_each of the module is keyed by anything the example creates in the same apply
    (scale set ids, storage ids): only pool names, variables and fixed settings."""
    for rtype, named in azure.resources.items():
        for name, r in named.items():
            fe = r.get("for_each")
            if fe is None:
                continue
            assert fe in ("${local.scale_sets}", "${local.kv_secret}"), f"{rtype}.{name}: {fe}"
    assert "azure_vmss =>" not in azure.locals["scale_sets"]
