output "webhook_url" {
  description = "The webhook's Payload URL (content type application/json, event \"Workflow jobs\", the same secret). With github: the GitHub App's own webhook (App settings > Webhook), the recommended setup, whose deliveries redelivery reads with the App's JWT; or an organization or repository webhook (Settings > Webhooks) with github.hook_id set to its id (and github.hook_repository for a repository's webhook), whose deliveries redelivery then reads (the App needs the Webhooks permission docs/github.md names). Without github (webhook-only mode): an organization or repository webhook, and nothing redelivers lost deliveries. With cloudfront_web_acl_arn, the CloudFront address."
  value       = local.webhook_url
}

output "origin_url" {
  description = "The function URL or HTTP API address itself. With CloudFront in front, it still answers: the HMAC signature, not the web ACL, is what authenticates deliveries."
  value       = local.origin_url
}

output "function_name" {
  description = "Name of the Lambda function (logs in /aws/lambda/<name>)."
  value       = aws_lambda_function.scalehook.function_name
}

output "function_arn" {
  description = "ARN of the Lambda function."
  value       = aws_lambda_function.scalehook.arn
}

output "launch_alias_name" {
  description = "Name of the function's alias that receives the runner groups' launch lifecycle events with retries: infra/aws/runners' scalehook_launch_alias."
  value       = aws_lambda_alias.launch.name
}

output "role_arn" {
  description = "ARN of the function's IAM role."
  value       = aws_iam_role.function.arn
}

output "ledger_table_name" {
  description = "Name of the DynamoDB ledger table."
  value       = aws_dynamodb_table.ledger.name
}

output "log_group_name" {
  description = "CloudWatch log group of the function: one JSON line per delivery, and the EMF metrics' source."
  value       = aws_cloudwatch_log_group.function.name
}

output "webhook_secret_parameter_name" {
  description = "SSM parameter holding the webhook secret(s) (webhook_secret_ssm_parameter_name), or null when a Secrets Manager secret is used."
  value       = local.secret_ssm_parameter_name
}

output "webhook_secret_arn" {
  description = "Secrets Manager secret holding the webhook secret(s): the module's own (when webhook_secret is given) or webhook_secret_arn; null with an SSM parameter."
  value       = local.secret_in_secrets_manager ? local.secret_arn : null
}

output "reconcile_rule_name" {
  description = "EventBridge rule that runs reconcile."
  value       = aws_cloudwatch_event_rule.reconcile.name
}

output "alarm_topic_arn" {
  description = "ARN of the created alarm SNS topic, or null."
  value       = var.create_sns_topic ? aws_sns_topic.alarms[0].arn : null
}

output "alarm_names" {
  description = "Names of the CloudWatch alarms created."
  value = concat(
    [
      aws_cloudwatch_metric_alarm.errors.alarm_name,
      aws_cloudwatch_metric_alarm.throttles.alarm_name,
      aws_cloudwatch_metric_alarm.signature_failures.alarm_name,
      aws_cloudwatch_metric_alarm.cloud_api_errors.alarm_name,
      aws_cloudwatch_metric_alarm.reconcile_failures.alarm_name,
      aws_cloudwatch_metric_alarm.reconcile_not_running.alarm_name,
    ],
    [aws_cloudwatch_metric_alarm.launch_failures.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.pool_at_max : a.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.below_desired : a.alarm_name],
  )
}

output "config_toml" {
  description = "The scalehook configuration given to the function (SCALEHOOK_CONFIG_TOML); holds no secret."
  value       = local.config_toml
}
