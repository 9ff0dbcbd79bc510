# The instance role: read and delete the instance's own JIT parameter, nothing else. IAM has no
# policy variable holding just the instance id. Requests signed with an instance profile's
# credentials carry the condition key `ec2:SourceInstanceARN` (the instance's ARN; a
# cross-service global key, "AWS global condition context keys" in the IAM User Guide).
# scalehook tags each parameter with the ARN of the instance it is for, and a parameter under
# the JIT path may be read or deleted only when the caller's `ec2:SourceInstanceARN` equals
# that tag, `${aws:ResourceTag/scalehook-instance-arn}`: the tag is the policy variable, a
# global key, which the IAM User Guide ("IAM policy elements: Variables and tags") documents
# as usable as a variable. Deny statements repeat the rule for every read and delete action,
# and deny untagged parameters outright, so a broader policy attached to the role later
# (ReadOnlyAccess, say) still cannot read another instance's configuration.
#
# scalehook's own permissions for this path and this group (write, tag, delete parameters,
# complete the launch hooks) are in the scalehook module's policy (infra/aws/iam.tf), one
# statement for all pools: a policy per pool would exhaust the role's inline policy budget.

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
      variable = "ec2:SourceInstanceARN"
      values   = ["$${aws:ResourceTag/${local.instance_tag_key}}"]
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
      variable = "ec2:SourceInstanceARN"
      values   = ["$${aws:ResourceTag/${local.instance_tag_key}}"]
    }
  }

  statement {
    # A variable that does not resolve (no such tag) leaves its statement out; this Deny
    # needs none, so untagged parameters and the path itself stay refused.
    sid    = "DenyUntaggedJitParameters"
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
      test     = "Null"
      variable = "aws:ResourceTag/${local.instance_tag_key}"
      values   = ["true"]
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
