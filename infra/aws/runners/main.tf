# One pool's runners on EC2: a launch template whose user data is runner/aws/boot.sh, an
# instance role limited to the instance's own JIT parameter, the Auto Scaling group with a
# launch lifecycle hook, and the EventBridge rule that hands each launch to scalehook.
#
# The path of a new instance: scalehook raises desired capacity -> the group launches an
# instance, which waits in Pending:Wait -> EventBridge delivers "EC2 Instance-launch Lifecycle
# Action" to scalehook's Lambda (its launch alias, retried on failure; reconcile finishes
# instances whose event never came) -> scalehook mints a JIT runner `<pool>-<instance id>`, writes it
# to the SSM SecureString <jit_parameter_prefix>/<instance id> (tagged with the instance's ARN)
# and completes the action with CONTINUE (ABANDON when minting fails) -> the boot script reads
# and deletes the parameter and runs the ephemeral runner -> after its one job the instance
# powers off, which terminates it.
#
# With `warm_pool`, the hook fires twice: as an instance launches into the warm pool (scalehook
# CONTINUEs it without a runner; the boot script installs the runner and waits) and as
# scale-out takes it into service (scalehook mints its runner then). With `spot`, a mixed
# instances policy replaces the single launch template reference.

locals {
  name = "${var.name_prefix}-${var.pool}"
}

resource "aws_launch_template" "runner" {
  name_prefix            = "${local.name}-"
  description            = "scalehook runners of pool ${var.pool}"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  user_data              = base64encode(local.user_data)
  update_default_version = true
  ebs_optimized          = true
  vpc_security_group_ids = var.security_group_ids
  # The boot script powers off after the runner's one job: that ends the instance.
  instance_initiated_shutdown_behavior = "terminate"

  iam_instance_profile {
    arn = aws_iam_instance_profile.instance.arn
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # 1: containers started by jobs (one hop further) cannot reach the metadata service.
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  dynamic "hibernation_options" {
    for_each = try(var.warm_pool.pool_state, null) == "Hibernated" ? [1] : []
    content {
      configured = true
    }
  }

  block_device_mappings {
    device_name = var.root_device_name
    ebs {
      volume_size           = var.root_volume_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = local.name, scalehook-pool = var.pool })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { scalehook-pool = var.pool })
  }

  tags = var.tags
}

# scalehook owns desired_capacity from the first apply on.
#
# WARNING: do not attach CPU or target-tracking scaling policies to this group: they would
# fight scalehook's capacity. No group-level protect_from_scale_in: scalehook protects busy
# instances itself and removes chosen idle ones.
resource "aws_autoscaling_group" "runners" {
  name                = local.name
  min_size            = var.min_size
  max_size            = var.max_size
  desired_capacity    = var.min_size
  vpc_zone_identifier = var.subnet_ids
  health_check_type   = "EC2"
  # Instances wait in Pending:Wait for scalehook; an apply must not wait for them.
  wait_for_capacity_timeout = "0"
  # Rebalancing across zones would terminate instances, maybe busy ones.
  suspended_processes = ["AZRebalance"]
  # The scalehook module's below-desired alarm reads these two, per minute (group metrics
  # at 1-minute granularity are free).
  enabled_metrics     = ["GroupDesiredCapacity", "GroupInServiceInstances"]
  metrics_granularity = "1Minute"

  dynamic "launch_template" {
    for_each = var.spot == null ? [1] : []
    content {
      id      = aws_launch_template.runner.id
      version = aws_launch_template.runner.latest_version
    }
  }

  dynamic "mixed_instances_policy" {
    for_each = var.spot == null ? [] : [var.spot]
    content {
      instances_distribution {
        on_demand_base_capacity                  = mixed_instances_policy.value.on_demand_base
        on_demand_percentage_above_base_capacity = mixed_instances_policy.value.on_demand_percentage_above_base
        spot_allocation_strategy                 = "price-capacity-optimized"
      }
      launch_template {
        launch_template_specification {
          launch_template_id = aws_launch_template.runner.id
          version            = aws_launch_template.runner.latest_version
        }
        dynamic "override" {
          for_each = distinct(concat([var.instance_type], mixed_instances_policy.value.instance_types))
          content {
            instance_type = override.value
          }
        }
      }
    }
  }

  # Exactly `size` warm: the pool holds max(min_size, max_group_prepared_capacity - desired).
  dynamic "warm_pool" {
    for_each = var.warm_pool == null ? [] : [var.warm_pool]
    content {
      pool_state                  = warm_pool.value.pool_state
      min_size                    = warm_pool.value.size
      max_group_prepared_capacity = warm_pool.value.size
      # A used instance is not clean: it never goes back to the pool.
      instance_reuse_policy {
        reuse_on_scale_in = false
      }
    }
  }

  # Created with the group, so no instance ever launches before the hook exists.
  initial_lifecycle_hook {
    name                 = "scalehook-provision"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
    # No answer from scalehook within the heartbeat: the instance is terminated and the group
    # launches another; it never runs without a runner configuration.
    default_result    = "ABANDON"
    heartbeat_timeout = var.lifecycle_heartbeat_seconds
  }

  tag {
    key                 = "scalehook-pool"
    value               = var.pool
    propagate_at_launch = true
  }

  dynamic "tag" {
    for_each = var.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

# ---- Launch events to scalehook -------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "launch" {
  name        = "${local.name}-launch"
  description = "Launch lifecycle actions of ${local.name}, for scalehook to provision a JIT runner"
  event_pattern = jsonencode({
    source        = ["aws.autoscaling"]
    "detail-type" = ["EC2 Instance-launch Lifecycle Action"]
    detail = {
      AutoScalingGroupName = [local.name]
      LifecycleHookName    = ["scalehook-provision"]
    }
  })
  tags = var.tags
}

# To the function's launch alias, whose asynchronous invocations Lambda retries when a mint
# fails (the unqualified function keeps 0 retries, for the scheduled reconcile).
resource "aws_cloudwatch_event_target" "launch" {
  rule = aws_cloudwatch_event_rule.launch.name
  arn  = "${var.scalehook_function_arn}:${var.scalehook_launch_alias}"

  # The instance waits at most the heartbeat: an older event is of no use.
  retry_policy {
    maximum_event_age_in_seconds = max(60, var.lifecycle_heartbeat_seconds)
    maximum_retry_attempts       = 3
  }
}

resource "aws_lambda_permission" "launch" {
  statement_id  = "scalehook-launch-${var.pool}"
  action        = "lambda:InvokeFunction"
  function_name = var.scalehook_function_arn
  qualifier     = var.scalehook_launch_alias
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.launch.arn
}
