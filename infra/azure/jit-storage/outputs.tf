output "storage_account_id" {
  description = "Resource id of the account: infra/azure/runners' storage_account_id."
  value       = azurerm_storage_account.jit.id
}

output "storage_blob_endpoint" {
  description = "Primary blob endpoint of the account: infra/azure/runners' storage_blob_endpoint and infra/azure's jit_blob_endpoint."
  value       = azurerm_storage_account.jit.primary_blob_endpoint
}
