locals {
  # Each scale set once, keyed by its lower-cased id (ARM ids are case-insensitive), with
  # the id as first written.
  scale_sets = { for key, ids in { for p in var.pools : lower(p.azure_vmss) => p.azure_vmss... } : key => ids[0] }
  # The resource groups of the scale sets: where the custom role may be assigned.
  scale_set_resource_groups = distinct([
    for id in values(local.scale_sets) : join("/", slice(split("/", id), 0, 5))
  ])

  webhook_url = "https://${azurerm_function_app_flex_consumption.scalehook.default_hostname}/api/webhook"
}

resource "azurerm_user_assigned_identity" "app" {
  name                = "${var.name}-identity"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

# ---- Storage: host state, the deployment package, the ledger table ------------------------

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

resource "azurerm_storage_table" "ledger" {
  #checkov:skip=CKV2_AZURE_20:Every delivery reads the ledger; logging each read costs more than it tells. The delivery log line in Application Insights records each job's ledger outcome.
  name               = var.table_name
  storage_account_id = azurerm_storage_account.app.id
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
  scope                = azurerm_storage_table.ledger.resource_manager_id
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

resource "azurerm_function_app_flex_consumption" "scalehook" {
  #checkov:skip=CKV_AZURE_221:GitHub delivers from the internet; the HMAC signature of each delivery is the authentication.
  #checkov:skip=CKV_AZURE_56:App Service Authentication cannot be used: GitHub cannot obtain Entra tokens, the HMAC signature authenticates deliveries.
  #checkov:skip=CKV_AZURE_17:GitHub webhooks do not present client certificates.
  name                = var.name
  resource_group_name = var.resource_group_name
  location            = var.location
  service_plan_id     = azurerm_service_plan.app.id

  runtime_name           = "custom"
  runtime_version        = "1.0"
  instance_memory_in_mb  = var.instance_memory_mb
  maximum_instance_count = var.maximum_instance_count

  # The package lives in a blob container the platform reads with the app's identity.
  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.app.primary_blob_endpoint}${azurerm_storage_container.package.name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.app.id

  # Host storage (AzureWebJobsStorage) through the identity too: no account key anywhere.
  function_app_storage_account_name          = azurerm_storage_account.app.name
  function_app_storage_uses_managed_identity = true

  # Terraform publishes the zip when this path changes (not when the file at the same path
  # is rebuilt): deploy each release from its own file name, see the README.
  zip_deploy_file = var.function_zip_path

  https_only                      = true
  key_vault_reference_identity_id = azurerm_user_assigned_identity.app.id

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  site_config {
    application_insights_connection_string = azurerm_application_insights.app.connection_string
    minimum_tls_version                    = "1.2"
    http2_enabled                          = true
  }

  app_settings = merge(
    {
      FUNCTIONS_WORKER_RUNTIME        = "custom"
      AzureWebJobsStorage__credential = "managedidentity"
      AzureWebJobsStorage__clientId   = azurerm_user_assigned_identity.app.client_id
      AZURE_CLIENT_ID                 = azurerm_user_assigned_identity.app.client_id
      SCALEHOOK_CONFIG_TOML           = local.config_toml
      SCALEHOOK_TABLE_ENDPOINT        = azurerm_storage_account.app.primary_table_endpoint
      SCALEHOOK_TABLE_NAME            = azurerm_storage_table.ledger.name
      SCALEHOOK_RECONCILE_SCHEDULE    = var.reconcile_schedule
    },
    local.secret_settings,
  )

  tags = var.tags

  lifecycle {
    precondition {
      condition     = nonsensitive(var.webhook_secret == null) != (var.webhook_secret_key_vault_secret == null)
      error_message = "Set exactly one of webhook_secret and webhook_secret_key_vault_secret."
    }
    precondition {
      condition     = nonsensitive(var.webhook_secret_previous == null || var.webhook_secret != null)
      error_message = "webhook_secret_previous goes with webhook_secret; with Key Vault use webhook_secret_key_vault_secret.previous_secret_name."
    }
  }

  depends_on = [
    azurerm_role_assignment.host_storage,
    azurerm_role_assignment.ledger_table,
    azurerm_role_assignment.webhook_secret,
  ]
}
