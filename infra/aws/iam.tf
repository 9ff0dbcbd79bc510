# The function's role: exactly the calls scalehook makes, each on the narrowest resource
# AWS allows. No EC2 permissions: instances are only ever removed through their group.

locals {
  # Mutating Auto Scaling calls are allowed on these groups only (any group id, exact name).
  asg_arns = [
    for p in var.pools :
    "arn:${local.partition}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${p.aws_asg}"
  ]
}

data "aws_iam_policy_document" "assume" {
  statement {
    sid     = "LambdaAssume"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  name               = "${var.name}-function"
  description        = "scalehook Lambda: read its ASGs, set their capacity, write its ledger"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "function" {
  statement {
    sid = "DescribeGroups"
    # Describe* actions do not support resource-level permissions: "*" is the only option.
    actions   = ["autoscaling:DescribeAutoScalingGroups"]
    resources = ["*"]
  }

  statement {
    sid = "ScalePoolGroups"
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:SetInstanceProtection",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = local.asg_arns
  }

  statement {
    sid = "Ledger"
    # TransactWriteItems has no action of its own: each Put/Update/Delete in it is checked.
    # Query reads a pool's partition (table) and the due records (index).
    actions = [
      "dynamodb:DeleteItem",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:UpdateItem",
    ]
    resources = [
      aws_dynamodb_table.ledger.arn,
      "${aws_dynamodb_table.ledger.arn}/index/due",
    ]
  }

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function.arn}:*"]
  }

  dynamic "statement" {
    for_each = local.secret_ssm_parameter_arn == null ? [] : [local.secret_ssm_parameter_arn]
    content {
      sid       = "WebhookSecretParameter"
      actions   = ["ssm:GetParameter"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    # The list's length is known at plan time; the module's own secret's ARN may not be.
    for_each = local.secret_in_secrets_manager ? [local.secret_arn] : []
    content {
      sid       = "WebhookSecretValue"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.secret_kms_key_arn == null ? [] : [var.secret_kms_key_arn]
    content {
      sid       = "DecryptWebhookSecret"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = local.app_key_ssm_parameter_arn == null ? [] : [local.app_key_ssm_parameter_arn]
    content {
      sid       = "GitHubAppKeyParameter"
      actions   = ["ssm:GetParameter"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.github_app_key_secret_arn == null ? [] : [var.github_app_key_secret_arn]
    content {
      sid       = "GitHubAppKeyValue"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.github_app_key_kms_key_arn == null ? [] : [var.github_app_key_kms_key_arn]
    content {
      sid       = "DecryptGitHubAppKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.table_kms_key_arn == null ? [] : [var.table_kms_key_arn]
    content {
      sid       = "LedgerKey"
      actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "function" {
  name   = "scalehook"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.function.json
}
