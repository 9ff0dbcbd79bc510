# The GitHub App's private key and JIT provisioning. The key reaches the handler as the app
# setting SCALEHOOK_GITHUB_APP_KEY, a Key Vault reference the platform resolves with the
# app's identity, which may read that one secret. New VMs' JIT configurations are written to
# the pools' containers under SCALEHOOK_JIT_BLOB_ENDPOINT (`jit-<pool>/<computer name>`); the
# write role is on each pool's container only, granted by infra/azure/runners
# (scalehook_principal_id = this module's identity_principal_id).

locals {
  app_key    = var.github_app_key_key_vault_secret
  app_key_id = local.app_key == null ? [] : split("/", local.app_key.key_vault_id)

  github_settings = merge(
    local.app_key == null ? {} : {
      SCALEHOOK_GITHUB_APP_KEY = "@Microsoft.KeyVault(SecretUri=${data.azurerm_key_vault.github_app_key[0].vault_uri}secrets/${local.app_key.secret_name})"
    },
    var.jit_blob_endpoint == null ? {} : { SCALEHOOK_JIT_BLOB_ENDPOINT = var.jit_blob_endpoint },
  )
}

data "azurerm_key_vault" "github_app_key" {
  count = local.app_key == null ? 0 : 1
  # .../resourceGroups/<rg>/providers/Microsoft.KeyVault/vaults/<name>
  name                = local.app_key_id[8]
  resource_group_name = local.app_key_id[4]
}

resource "azurerm_role_assignment" "github_app_key" {
  count                = local.app_key == null ? 0 : 1
  scope                = "${local.app_key.key_vault_id}/secrets/${local.app_key.secret_name}"
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}
