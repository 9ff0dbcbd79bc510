locals {
  # Each pool's scale set, keyed by the pool's name: known at plan time, while a scale set id
  # from a runner module in the same apply is not (for_each keys must be known). One scale
  # set per pool (variables.tf).
  scale_sets = { for p in var.pools : p.name => p.azure_vmss }
  # The resource groups of the scale sets: where the custom role may be assigned.
  scale_set_resource_groups = distinct([
    for id in values(local.scale_sets) : join("/", slice(split("/", id), 0, 5))
  ])

  webhook_url = "https://${azapi_resource.app.output.properties.defaultHostName}/api/webhook"

  resource_group_id = "/subscriptions/${data.azurerm_client_config.current.subscription_id}/resourceGroups/${var.resource_group_name}"
}

data "azurerm_client_config" "current" {}

resource "azurerm_user_assigned_identity" "app" {
  name                = "${var.name}-identity"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

# ---- Storage: host state, the deployment package, the ledger table ------------------------
# The account takes Entra ID only (no shared key). Everything in it is created through the
# management plane (ARM), which needs no data-plane role: the containers (azurerm with
# storage_account_id) and the ledger table (azapi: azurerm_storage_table always uses Shared
# Key, for its access policies on create and on every refresh, and would get 403 here).

resource "azurerm_storage_account" "app" {
  #checkov:skip=CKV_AZURE_206:LRS is enough: the ledger is rebuilt by deliveries and reconcile, and the package is rebuilt from the zip.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys: the account holds job ids, counters and the public package, no secret.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need VNet integration of the app and a private DNS zone, out of this module's scope; shared keys are disabled and access is by the app's identity only.
  #checkov:skip=CKV_AZURE_59:Public network access stays on because Flex Consumption without VNet integration reaches its storage over the public endpoint; shared keys are off and only the app's identity is authorized.
  #checkov:skip=CKV_AZURE_33:Queue service logging does not apply: the app uses no queues.
  #checkov:skip=CKV2_AZURE_38:Soft delete is not needed for host state and a package rebuilt from the zip.
  #checkov:skip=CKV2_AZURE_41:No SAS is issued (shared keys disabled), so there is no SAS expiration policy to set.
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
  # Identity-based access only; the azurerm provider needs storage_use_azuread = true.
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  tags                            = var.tags
}

resource "azurerm_storage_container" "package" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging of the deployment container adds cost for no operational value.
  name                  = "app-package"
  storage_account_id    = azurerm_storage_account.app.id
  container_access_type = "private"
}

resource "azapi_resource" "ledger_table" {
  type      = "Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01"
  name      = var.table_name
  parent_id = "${azurerm_storage_account.app.id}/tableServices/default"
  body      = {}
}

# The Functions host keeps its state (timer locks, keys) in blobs of the account.
resource "azurerm_role_assignment" "host_storage" {
  scope                = azurerm_storage_account.app.id
  role_definition_name = "Storage Blob Data Owner"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}

# The ledger: entity reads and conditional writes on that one table.
resource "azurerm_role_assignment" "ledger_table" {
  scope                = azapi_resource.ledger_table.id
  role_definition_name = "Storage Table Data Contributor"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}

# ---- Application Insights ---------------------------------------------------------------

resource "azurerm_log_analytics_workspace" "app" {
  name                = "${var.name}-logs"
  resource_group_name = var.resource_group_name
  location            = var.location
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = var.tags
}

resource "azurerm_application_insights" "app" {
  name                = "${var.name}-insights"
  resource_group_name = var.resource_group_name
  location            = var.location
  application_type    = "other"
  workspace_id        = azurerm_log_analytics_workspace.app.id
  tags                = var.tags
}

# ---- The function app (Flex Consumption, Linux, custom handler) ---------------------------

resource "azurerm_service_plan" "app" {
  #checkov:skip=CKV_AZURE_211:Flex Consumption (FC1) is serverless; the premium-plan check does not apply.
  #checkov:skip=CKV_AZURE_212:Flex Consumption scales instances itself; a minimum worker count does not apply.
  #checkov:skip=CKV_AZURE_225:Zone redundancy is not offered for this plan's purpose: GitHub redelivery and reconcile recover from an outage.
  name                = "${var.name}-plan"
  resource_group_name = var.resource_group_name
  location            = var.location
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = var.tags
}

# The app is an azapi resource: azurerm 4.81.0's azurerm_function_app_flex_consumption has
# no argument for identity-based host storage (it always writes an AzureWebJobsStorage
# connection string, with an empty key when the storage authentication is an identity) nor
# for the Key Vault reference identity. Here the ARM body says exactly what the platform
# documents for Flex Consumption: the runtime in functionAppConfig.runtime (no
# FUNCTIONS_WORKER_RUNTIME), the package container read with the identity, host storage
# through AzureWebJobsStorage__accountName/__credential/__clientId.
resource "azapi_resource" "app" {
  type      = "Microsoft.Web/sites@2024-04-01"
  name      = var.name
  parent_id = local.resource_group_id
  location  = var.location
  tags      = var.tags

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  body = {
    kind = "functionapp,linux"
    properties = {
      serverFarmId              = azurerm_service_plan.app.id
      httpsOnly                 = true
      keyVaultReferenceIdentity = azurerm_user_assigned_identity.app.id
      siteConfig = {
        minTlsVersion = "1.2"
        http20Enabled = true
        ftpsState     = "Disabled"
        appSettings   = [for k, v in local.app_settings : { name = k, value = v }]
      }
      functionAppConfig = {
        deployment = {
          storage = {
            type  = "blobContainer"
            value = "${azurerm_storage_account.app.primary_blob_endpoint}${azurerm_storage_container.package.name}"
            authentication = {
              type                           = "UserAssignedIdentity"
              userAssignedIdentityResourceId = azurerm_user_assigned_identity.app.id
            }
          }
        }
        runtime = {
          name    = "custom"
          version = "1.0"
        }
        scaleAndConcurrency = {
          instanceMemoryMB     = var.instance_memory_mb
          maximumInstanceCount = var.maximum_instance_count
        }
      }
    }
  }

  response_export_values = ["properties.defaultHostName"]

  lifecycle {
    precondition {
      condition     = (var.github == null) == (var.github_app_key_key_vault_secret == null)
      error_message = "github and github_app_key_key_vault_secret go together: the App needs its key, and a key without github is unused."
    }
    precondition {
      condition     = var.jit_blob_endpoint == null || var.github != null
      error_message = "jit_blob_endpoint needs github: minting JIT runners needs the GitHub App."
    }
  }

  depends_on = [
    azurerm_role_assignment.host_storage,
    azurerm_role_assignment.ledger_table,
    azurerm_role_assignment.webhook_secret,
    azurerm_role_assignment.github_app_key,
  ]
}

locals {
  app_settings = merge(
    {
      # Host storage (timer locks, keys) through the identity: no AzureWebJobsStorage
      # connection string anywhere.
      AzureWebJobsStorage__accountName      = azurerm_storage_account.app.name
      AzureWebJobsStorage__credential       = "managedidentity"
      AzureWebJobsStorage__clientId         = azurerm_user_assigned_identity.app.client_id
      APPLICATIONINSIGHTS_CONNECTION_STRING = azurerm_application_insights.app.connection_string
      # Application Insights samples by default; the alerts count the handler's log lines
      # (traces) and its invocations (requests), so nothing may be sampled away.
      AzureFunctionsJobHost__logging__applicationInsights__samplingSettings__isEnabled = "false"
      AZURE_CLIENT_ID                                                                  = azurerm_user_assigned_identity.app.client_id
      SCALEHOOK_CONFIG_TOML                                                            = local.config_toml
      SCALEHOOK_TABLE_ENDPOINT                                                         = azurerm_storage_account.app.primary_table_endpoint
      SCALEHOOK_TABLE_NAME                                                             = azapi_resource.ledger_table.name
      SCALEHOOK_RECONCILE_SCHEDULE                                                     = var.reconcile_schedule
    },
    local.secret_settings,
    local.github_settings,
  )
}

# ---- Publishing: One Deploy -------------------------------------------------------------
# Flex Consumption takes packages through One Deploy only (not zip deploy, not
# WEBSITE_RUN_FROM_PACKAGE). The onedeploy extension fetches package_url (a release asset)
# into the deployment container and restarts the app on it. A new URL or checksum publishes
# again; nothing here compares the download with package_sha256 (One Deploy takes no
# checksum, and Terraform cannot hash a remote binary): check the asset against the release's
# SHA256SUMS before passing its URL. A local build is published after apply instead
# (README.md, "Publish the package").
resource "azapi_resource" "package" {
  count     = var.package_url == null ? 0 : 1
  type      = "Microsoft.Web/sites/extensions@2024-04-01"
  name      = "onedeploy"
  parent_id = azapi_resource.app.id

  body = {
    properties = {
      packageUri  = var.package_url
      remoteBuild = false
    }
  }

  # The extension is an action more than a resource: azapi's type data lists
  # Microsoft.Web/sites/extensions, but its onedeploy variant has no `properties`, so validation
  # would refuse the body.
  schema_validation_enabled        = false
  replace_triggers_external_values = [var.package_url, var.package_sha256]
}
