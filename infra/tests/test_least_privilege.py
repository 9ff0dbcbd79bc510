"""The permissions the modules grant are exactly what scalehook calls, on the narrowest
resources each cloud allows."""

import re

# What the Lambda calls (crates/scalehook-aws, the contract in docs and the module README).
AWS_STATEMENTS = {
    "DescribeGroups": {"autoscaling:DescribeAutoScalingGroups"},
    "ScalePoolGroups": {
        "autoscaling:SetDesiredCapacity",
        "autoscaling:SetInstanceProtection",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
    },
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
}

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
        assert set(statements[sid]["actions"]) == actions, sid
        assert len(statements[sid]["actions"]) == len(actions), f"{sid}: duplicate action"


def test_aws_only_describe_is_on_star(aws):
    for sid, s in function_statements(aws).items():
        resources = s["resources"]
        on_star = resources == ["*"]
        assert on_star == (sid == "DescribeGroups"), f"{sid}: resources {resources}"
        for action in s["actions"]:
            assert "*" not in action, f"{sid}: wildcard action {action}"


def test_aws_mutating_autoscaling_actions_are_on_the_pool_groups(aws):
    s = function_statements(aws)["ScalePoolGroups"]
    assert s["resources"] == "${local.asg_arns}"
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
    public = {name: p for name, p in perms.items() if p["principal"] == "*"}
    assert set(public) == {"url_invoke_url", "url_invoke_function"}
    assert public["url_invoke_url"]["action"] == "lambda:InvokeFunctionUrl"
    assert public["url_invoke_url"]["function_url_auth_type"] == "NONE"
    assert public["url_invoke_function"]["action"] == "lambda:InvokeFunction"
    assert public["url_invoke_function"]["invoked_via_function_url"] is True
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
    assert assignments["ledger_table"]["scope"] == "${azurerm_storage_table.ledger.resource_manager_id}"
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
    }
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
    assert "var.grant_operation_status_read" in a["for_each"]
    # Only custom roles are these two; the scale set role never gains the subscription.
    assert set(azure.resources["azurerm_role_definition"]) == {"scale_set_scaler", "operation_status_reader"}
