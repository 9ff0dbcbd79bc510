# The function's role: exactly the calls scalehook makes, each on the narrowest resource
# AWS allows. No EC2 permissions: instances are only ever removed through their group.
#
# One inline policy holds everything, the runner groups' provisioning included: it grows by
# one group ARN per pool (~110 characters), so the role's 10,240-character budget for inline
# policies is far from the Lambda environment's own bound (the rendered configuration of
# ~25 pools fills its 4 KB). infra/tests measures the rendered policy at 40 pools.

locals {
  # Mutating Auto Scaling calls are allowed on these groups only (any group id, exact name).
  asg_arns = [
    for p in var.pools :
    "arn:${local.partition}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${p.aws_asg}"
  ]
  # With the GitHub App, scalehook also answers the groups' launch lifecycle hooks (the launch
  # event, and reconcile for instances whose event never came).
  pool_group_actions = concat(
    [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:SetInstanceProtection",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ],
    var.github == null ? [] : ["autoscaling:CompleteLifecycleAction"],
  )
  # The JIT runner parameters, `<jit_parameter_prefix>/<instance id>`.
  jit_parameters = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${var.jit_parameter_prefix}/*"

  # KMS is used through the service that holds the value, on that value only: each service
  # puts what it encrypts in the encryption context (Secrets Manager: SecretARN; Parameter
  # Store: PARAMETER_ARN).
  secret_kms_via = local.secret_in_secrets_manager ? "secretsmanager.${local.region}.amazonaws.com" : "ssm.${local.region}.amazonaws.com"
  secret_kms_context = (
    local.secret_in_secrets_manager
    ? { key = "kms:EncryptionContext:SecretARN", value = local.secret_arn }
    : { key = "kms:EncryptionContext:PARAMETER_ARN", value = local.secret_ssm_parameter_arn }
  )
  app_key_kms_via = var.github_app_key_secret_arn != null ? "secretsmanager.${local.region}.amazonaws.com" : "ssm.${local.region}.amazonaws.com"
  app_key_kms_context = (
    var.github_app_key_secret_arn != null
    ? { key = "kms:EncryptionContext:SecretARN", value = var.github_app_key_secret_arn }
    : { key = "kms:EncryptionContext:PARAMETER_ARN", value = local.app_key_ssm_parameter_arn }
  )
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
    # DescribeScalingActivities: a spot pool with an overflow reads its failed launches;
    # DescribeWarmPool: a warm pool's instances, counted apart from capacity.
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeWarmPool",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "ScalePoolGroups"
    actions   = local.pool_group_actions
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
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = [local.secret_kms_via]
      }
      condition {
        test     = "StringEquals"
        variable = local.secret_kms_context.key
        values   = [local.secret_kms_context.value]
      }
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
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = [local.app_key_kms_via]
      }
      condition {
        test     = "StringEquals"
        variable = local.app_key_kms_context.key
        values   = [local.app_key_kms_context.value]
      }
    }
  }

  dynamic "statement" {
    for_each = var.table_kms_key_arn == null ? [] : [var.table_kms_key_arn]
    content {
      sid       = "LedgerKey"
      actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
      # DynamoDB's own pattern for a table's customer managed key: through DynamoDB, from
      # this account.
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["dynamodb.${local.region}.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "kms:CallerAccount"
        values   = [local.account_id]
      }
    }
  }

  # ---- JIT runners (with the GitHub App): the runner groups' launch path -----------------

  dynamic "statement" {
    # Write (and tag) each new instance's configuration; delete the ones no instance read
    # (housekeeping of abandoned launches). Never read: scalehook does not read them back.
    for_each = var.github == null ? [] : [local.jit_parameters]
    content {
      sid = "JitParameters"
      # Tags on PutParameter need ssm:AddTagsToResource as well.
      actions   = ["ssm:AddTagsToResource", "ssm:DeleteParameter", "ssm:PutParameter"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    # Metadata only (no values): a redelivered launch event finds the stored parameter and
    # mints nothing, and housekeeping lists what is left. No resource-level permissions.
    for_each = var.github == null ? [] : ["github"]
    content {
      sid       = "FindJitParameters"
      actions   = ["ssm:DescribeParameters"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = var.github == null || var.jit_kms_key_arn == null ? [] : [var.jit_kms_key_arn]
    content {
      sid = "EncryptJitParameters"
      # Standard SecureStrings are encrypted with Encrypt, advanced ones with a data key.
      actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${local.region}.amazonaws.com"]
      }
      condition {
        test     = "StringLike"
        variable = "kms:EncryptionContext:PARAMETER_ARN"
        values   = [local.jit_parameters]
      }
    }
  }
}

resource "aws_iam_role_policy" "function" {
  name   = "scalehook"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.function.json
}
