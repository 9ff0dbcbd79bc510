output "webhook_url" {
  description = "The webhook's Payload URL (content type application/json, event \"Workflow jobs\", the secret in Key Vault). With github: the GitHub App's own webhook (App settings > Webhook), the recommended setup, whose deliveries redelivery reads with the App's JWT; or an organization or repository webhook (Settings > Webhooks) with github.hook_id set to its id (and github.hook_repository for a repository's webhook), whose deliveries redelivery then reads (the App needs the Webhooks permission docs/github.md names). Without github (webhook-only mode): an organization or repository webhook, and nothing redelivers lost deliveries."
  value       = local.webhook_url
}

output "function_app_name" {
  description = "Name of the function app."
  value       = azapi_resource.app.name
}

output "function_app_id" {
  description = "Resource id of the function app."
  value       = azapi_resource.app.id
}

output "identity_client_id" {
  description = "Client id of the app's user-assigned identity (AZURE_CLIENT_ID)."
  value       = azurerm_user_assigned_identity.app.client_id
}

output "identity_principal_id" {
  description = "Principal (object) id of the app's user-assigned identity, for audits of its role assignments."
  value       = azurerm_user_assigned_identity.app.principal_id
}

output "storage_account_name" {
  description = "Storage account holding host state, the package container and the ledger table."
  value       = azurerm_storage_account.app.name
}

output "ledger_table_name" {
  description = "Name of the ledger table."
  value       = azapi_resource.ledger_table.name
}

output "application_insights_name" {
  description = "Application Insights resource receiving the delivery log lines (table traces)."
  value       = azurerm_application_insights.app.name
}

output "role_definition_id" {
  description = "Resource id of the custom scale set role."
  value       = azurerm_role_definition.scale_set_scaler.role_definition_resource_id
}

output "alert_names" {
  description = "Names of the log alert rules created."
  value = [
    azurerm_monitor_scheduled_query_rules_alert_v2.signature_failures.name,
    azurerm_monitor_scheduled_query_rules_alert_v2.cloud_errors.name,
    azurerm_monitor_scheduled_query_rules_alert_v2.function_failures.name,
    azurerm_monitor_scheduled_query_rules_alert_v2.reconcile_failures.name,
    azurerm_monitor_scheduled_query_rules_alert_v2.reconcile_not_running.name,
    azurerm_monitor_scheduled_query_rules_alert_v2.pool_at_max.name,
  ]
}

output "config_toml" {
  description = "The scalehook configuration given to the app (SCALEHOOK_CONFIG_TOML); holds no secret."
  value       = local.config_toml
}
