# The webhook secret reaches the handler as SCALEHOOK_WEBHOOK_SECRET (and, during a rotation,
# SCALEHOOK_WEBHOOK_SECRET_PREVIOUS). With Key Vault the settings are references the
# platform resolves with the app's identity, which may read those secrets and nothing else.

locals {
  kv    = var.webhook_secret_key_vault_secret
  kv_id = local.kv == null ? [] : split("/", local.kv.key_vault_id)
  kv_secret = local.kv == null ? {} : merge(
    { SCALEHOOK_WEBHOOK_SECRET = local.kv.secret_name },
    local.kv.previous_secret_name == null ? {} : { SCALEHOOK_WEBHOOK_SECRET_PREVIOUS = local.kv.previous_secret_name },
  )

  secret_settings = local.kv == null ? merge(
    { SCALEHOOK_WEBHOOK_SECRET = var.webhook_secret },
    # nonsensitive: whether a previous secret is set is not secret, and keeps the settings'
    # names visible in plans (their values stay sensitive).
    nonsensitive(var.webhook_secret_previous == null) ? {} : { SCALEHOOK_WEBHOOK_SECRET_PREVIOUS = var.webhook_secret_previous },
    ) : {
    # Versionless references follow the latest version of each secret (picked up within 24 h,
    # or at once on restart).
    for setting, secret in local.kv_secret :
    setting => "@Microsoft.KeyVault(SecretUri=${data.azurerm_key_vault.webhook_secret[0].vault_uri}secrets/${secret})"
  }
}

data "azurerm_key_vault" "webhook_secret" {
  count = local.kv == null ? 0 : 1
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
