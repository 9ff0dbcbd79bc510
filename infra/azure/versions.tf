terraform {
  required_version = ">= 1.11"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.x: azurerm_function_app_flex_consumption with the `custom` runtime (custom handlers),
      # storage_account_id on containers and tables, azurerm_monitor_scheduled_query_rules_alert_v2.
      version = ">= 4.40, < 5.0"
    }
  }
}
