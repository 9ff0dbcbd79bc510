terraform {
  required_version = ">= 1.11"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # Pinned: the module is written against this release's schema (read in the provider's
      # source, internal/services/appservice and internal/services/storage at v4.81.0):
      # azurerm_service_plan FC1, storage_account_id on containers and tables,
      # azurerm_monitor_scheduled_query_rules_alert_v2. Its Flex Consumption resource is not
      # used (see main.tf): it has no identity-based host storage nor Key Vault reference
      # identity.
      version = "4.81.0"
    }
    azapi = {
      source = "Azure/azapi"
      # 2.x: body as an HCL object, response_export_values, replace_triggers_external_values.
      version = "~> 2.4"
    }
  }
}
