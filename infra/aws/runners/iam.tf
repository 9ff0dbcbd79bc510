# Two roles get permissions here, each for this pool only.
#
# The instance role: read and delete the instance's own JIT parameter, nothing else. IAM has no
# policy variable holding just the instance id; what it has for requests signed with an
# instance profile's credentials is `ec2:SourceInstanceARN` (the instance's ARN). scalehook tags
# each parameter with the ARN of the instance it is for, and the instance role may only touch
# parameters under the JIT path whose tag equals its own `${ec2:SourceInstanceARN}`. A Deny
# repeats the rule for every read and delete action, so a broader policy attached to the role
# later (ReadOnlyAccess, say) still cannot read another instance's configuration.
#
# scalehook's role: write (and tag) parameters under the JIT path, and complete this group's
# lifecycle actions.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region
  account_id = data.aws_caller_identity.current.account_id
  # The tag scalehook puts on each JIT parameter: the ARN of the one instance that may read it.
  instance_tag_key = "scalehook-instance-arn"
  jit_parameters   = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${var.jit_parameter_prefix}/*"
  jit_path         = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${var.jit_parameter_prefix}"
  group_arn        = "arn:${local.partition}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.name}"
}

# ---- The instance role --------------------------------------------------------------------

data "aws_iam_policy_document" "instance_assume" {
  statement {
    sid     = "Ec2Assume"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  name               = "${local.name}-instance"
  description        = "scalehook runner instances of pool ${var.pool}: read and delete their own JIT runner parameter only"
  assume_role_policy = data.aws_iam_policy_document.instance_assume.json
  tags               = var.tags
}

resource "aws_iam_instance_profile" "instance" {
  name = "${local.name}-instance"
  role = aws_iam_role.instance.name
  tags = var.tags
}

data "aws_iam_policy_document" "instance" {
  statement {
    sid       = "ReadAndDeleteOwnJitParameter"
    actions   = ["ssm:GetParameter", "ssm:DeleteParameter"]
    resources = [local.jit_parameters]
    condition {
      test     = "StringEquals"
      variable = "ssm:resourceTag/${local.instance_tag_key}"
      values   = ["$${ec2:SourceInstanceARN}"]
    }
  }

  statement {
    sid    = "DenyOtherInstancesJitParameters"
    effect = "Deny"
    actions = [
      "ssm:DeleteParameter",
      "ssm:DeleteParameters",
      "ssm:GetParameter",
      "ssm:GetParameterHistory",
      "ssm:GetParameters",
      "ssm:GetParametersByPath",
    ]
    resources = [local.jit_path, local.jit_parameters]
    condition {
      test     = "StringNotEqualsIfExists"
      variable = "ssm:resourceTag/${local.instance_tag_key}"
      values   = ["$${ec2:SourceInstanceARN}"]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptOwnJitParameter"
      actions   = ["kms:Decrypt"]
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

resource "aws_iam_role_policy" "instance" {
  name   = "own-jit-parameter"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.instance.json
}

# ---- scalehook's role: provisioning this pool ------------------------------------------------

data "aws_iam_policy_document" "provision" {
  statement {
    sid = "WriteJitParameters"
    # Tags on PutParameter need ssm:AddTagsToResource as well.
    actions   = ["ssm:PutParameter", "ssm:AddTagsToResource"]
    resources = [local.jit_parameters]
  }

  statement {
    sid = "FindJitParameters"
    # Metadata only (no values): a redelivered launch event finds the stored parameter and
    # mints nothing. DescribeParameters has no resource-level permissions.
    actions   = ["ssm:DescribeParameters"]
    resources = ["*"]
  }

  statement {
    sid       = "CompleteLaunchHooks"
    actions   = ["autoscaling:CompleteLifecycleAction"]
    resources = [local.group_arn]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "EncryptJitParameters"
      actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "provision" {
  name   = "provision-${var.pool}"
  role   = element(split("/", var.scalehook_role_arn), length(split("/", var.scalehook_role_arn)) - 1)
  policy = data.aws_iam_policy_document.provision.json
}
