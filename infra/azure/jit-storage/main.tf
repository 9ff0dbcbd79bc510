# The storage account of the runners' JIT configurations (one private container per pool,
# created by infra/azure/runners) and its housekeeping: a configuration no VM read (its VM was
# deleted before it booted) and scalehook's record of each minted runner
# (jit-<pool>/minted/<computer name>) are deleted a day after their last change. Identity
# access only: no shared key, no SAS, no public blob.

resource "azurerm_storage_account" "jit" {
  #checkov:skip=CKV_AZURE_206:LRS is enough: a JIT configuration lives minutes and is minted again for a new VM if lost.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys: each blob is a single-use runner configuration deleted on read.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need VNet integration of the function app and a private DNS zone; shared keys are disabled and only the app's and the pools' identities are authorized, each on its containers.
  #checkov:skip=CKV_AZURE_59:The function app (no VNet integration) writes over the public endpoint; shared keys are off and access is by Entra ID only.
  #checkov:skip=CKV_AZURE_33:Queue service logging does not apply: no queues.
  #checkov:skip=CKV2_AZURE_38:Soft delete would keep read-and-deleted runner configurations around: the opposite of what is wanted.
  #checkov:skip=CKV2_AZURE_41:No SAS is issued (shared keys disabled).
  #checkov:skip=CKV_AZURE_244:Local users (SFTP) are not enabled on this account.
  name                            = var.storage_account_name
  resource_group_name             = var.resource_group_name
  location                        = var.location
  account_kind                    = "StorageV2"
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  tags                            = var.tags
}

# One rule per pool (a rule takes at most 10 prefixes; an account up to 100 rules). The
# policy is the account's only one: another azurerm_storage_management_policy on this account
# would replace it.
resource "azurerm_storage_management_policy" "jit" {
  storage_account_id = azurerm_storage_account.jit.id

  dynamic "rule" {
    for_each = var.pools
    content {
      name    = "expire-jit-${rule.value}"
      enabled = true
      filters {
        blob_types   = ["blockBlob"]
        prefix_match = ["jit-${rule.value}/"]
      }
      actions {
        base_blob {
          delete_after_days_since_modification_greater_than = 1
        }
      }
    }
  }
}
