# The webhook secret reaches the handler as SCALEHOOK_WEBHOOK_SECRET (and, during a rotation,
# SCALEHOOK_WEBHOOK_SECRET_PREVIOUS): Key Vault references the platform resolves with the
# app's identity, which may read those secrets and nothing else. No plain app setting: its
# value would be in the Terraform state and readable by anyone who may list the app's
# settings (Microsoft.Web/sites/config/list/action, e.g. Website Contributor), while a
# reference shows only the secret's URI.

locals {
  kv    = var.webhook_secret_key_vault_secret
  kv_id = split("/", local.kv.key_vault_id)
  kv_secret = merge(
    { SCALEHOOK_WEBHOOK_SECRET = local.kv.secret_name },
    local.kv.previous_secret_name == null ? {} : { SCALEHOOK_WEBHOOK_SECRET_PREVIOUS = local.kv.previous_secret_name },
  )

  # Versionless references follow the latest version of each secret (picked up within 24 h,
  # or at once on restart).
  secret_settings = {
    for setting, secret in local.kv_secret :
    setting => "@Microsoft.KeyVault(SecretUri=${data.azurerm_key_vault.webhook_secret.vault_uri}secrets/${secret})"
  }
}

data "azurerm_key_vault" "webhook_secret" {
  # .../resourceGroups/<rg>/providers/Microsoft.KeyVault/vaults/<name>
  name                = local.kv_id[8]
  resource_group_name = local.kv_id[4]
}

resource "azurerm_role_assignment" "webhook_secret" {
  for_each             = local.kv_secret
  scope                = "${local.kv.key_vault_id}/secrets/${each.value}"
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}
