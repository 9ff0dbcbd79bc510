terraform {
  required_version = ">= 1.11"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.x: azurerm_function_app_flex_consumption with the `custom` runtime (custom handlers)
      # and identity-based host storage (function_app_storage_uses_managed_identity, in the
      # newest 4.x releases: use the latest), storage_account_id on containers and tables,
      # azurerm_monitor_scheduled_query_rules_alert_v2.
      version = ">= 4.40, < 5.0"
    }
  }
}
