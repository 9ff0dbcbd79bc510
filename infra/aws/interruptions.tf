# ---- Spot interruptions (pools with capacity = "spot") ------------------------------------
# EC2 sends a spot instance's two-minute interruption warning and its rebalance
# recommendation to EventBridge (EC2 user guide: "Spot Instance interruption notices",
# "EC2 instance rebalance recommendations"). The events name the instance only, not its
# Auto Scaling group, so the rule takes every such event of the account and region and
# scalehook finds the spot pool whose group has the instance (one of another group is
# acknowledged and ignored). Only created when some pool is on spot.

locals {
  spot_pools = [for p in var.pools : p.name if p.capacity == "spot"]
  any_spot   = length(local.spot_pools) > 0
}

resource "aws_cloudwatch_event_rule" "spot_interruptions" {
  count       = local.any_spot ? 1 : 0
  name        = "${var.name}-spot-interruptions"
  description = "Spot interruption warnings and rebalance recommendations, for scalehook to replace the instance early and record the job it interrupts"
  event_pattern = jsonencode({
    source        = ["aws.ec2"]
    "detail-type" = ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"]
  })
  tags = var.tags
}

# Its own alias, so that a failed pass is retried (the unqualified function keeps 0 retries
# for the scheduled reconcile) and an event older than the two-minute warning is dropped.
resource "aws_lambda_alias" "interruption" {
  count            = local.any_spot ? 1 : 0
  name             = "interruption"
  description      = "Spot interruption warnings and rebalance recommendations: retried asynchronous invocations"
  function_name    = aws_lambda_function.scalehook.function_name
  function_version = aws_lambda_function.scalehook.version
}

resource "aws_lambda_function_event_invoke_config" "interruption" {
  count                        = local.any_spot ? 1 : 0
  function_name                = aws_lambda_function.scalehook.function_name
  qualifier                    = aws_lambda_alias.interruption[0].name
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = 120
}

resource "aws_cloudwatch_event_target" "spot_interruptions" {
  count = local.any_spot ? 1 : 0
  rule  = aws_cloudwatch_event_rule.spot_interruptions[0].name
  arn   = aws_lambda_alias.interruption[0].arn

  retry_policy {
    # Past the two-minute warning the instance is gone: the notice is of no use.
    maximum_event_age_in_seconds = 120
    maximum_retry_attempts       = 3
  }
}

resource "aws_lambda_permission" "spot_interruptions" {
  count         = local.any_spot ? 1 : 0
  statement_id  = "AllowSpotInterruptions"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.scalehook.function_name
  qualifier     = aws_lambda_alias.interruption[0].name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.spot_interruptions[0].arn
}
