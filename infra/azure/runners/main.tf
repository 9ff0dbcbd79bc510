# One pool's runners on Azure: a Uniform scale set whose custom data is runner/azure/boot.sh
# (after runner/lib.sh, one self-contained script as runner/render.sh azure prints it),
# a user-assigned identity, and the pool's private blob container for JIT configurations.
# scalehook finds new VMs in its describe of the scale set, mints `<pool>-<computer name>` and
# writes the blob `<container>/<computer name>`; the VM reads and deletes it at boot. Why a
# blob and what isolates one VM's configuration from another's: docs/azure.md, "Runner
# provisioning".

locals {
  name      = "vmss-github-runners-${var.pool}"
  container = "jit-${var.pool}"
  settings = {
    SCALEHOOK_JIT_CONTAINER_URL  = "${trimsuffix(var.storage_blob_endpoint, "/")}/${local.container}"
    SCALEHOOK_IDENTITY_CLIENT_ID = azurerm_user_assigned_identity.runners.client_id
    SCALEHOOK_JIT_WAIT_SECONDS   = tostring(var.runner_wait_seconds)
    SCALEHOOK_RUNNER_URL         = try(var.runner_package.url, "")
    SCALEHOOK_RUNNER_SHA256      = try(var.runner_package.sha256, "")
    # The consequence is in the variable's description.
    SCALEHOOK_ALLOW_PRIVILEGED_RUNNER_USER = var.allow_privileged_runner_user ? "1" : "0"
  }
  custom_data = join("\n", concat(
    ["#!/bin/bash", "# scalehook runner settings (infra/azure/runners); runner/lib.sh and runner/azure/boot.sh follow."],
    [for k in sort(keys(local.settings)) : "export ${k}='${replace(local.settings[k], "'", "'\\''")}'"],
    [file("${path.module}/../../../runner/lib.sh")],
    [file("${path.module}/../../../runner/azure/boot.sh")],
  ))
}

resource "azurerm_user_assigned_identity" "runners" {
  name                = "id-github-runners-${var.pool}"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

resource "azurerm_storage_container" "jit" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging is a diagnostic setting of the storage account, which the caller owns and configures; this module only adds a container to it.
  name                  = local.container
  storage_account_id    = var.storage_account_id
  container_access_type = "private"
}

# The VMs read and delete blobs of this container only, and never write: root on one VM
# must not be able to plant a configuration for the next VMs of the pool (scale set computer
# names are predictable). No built-in role has read and delete without write (Storage Blob
# Data Reader reads only, Contributor writes), so a custom role with exactly those two data
# actions, defined where custom roles may be (the account's resource group) and assigned on
# the container. Jobs cannot use it at all: the boot script blocks the runner user from IMDS,
# so they never get this identity's token.
locals {
  storage_account_path = split("/", var.storage_account_id)
  # /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Storage/storageAccounts/<name>
  storage_resource_group = join("/", slice(local.storage_account_path, 0, 5))
  storage_account_name   = element(local.storage_account_path, length(local.storage_account_path) - 1)
  jit_reader_data_actions = [
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
  ]
}

resource "azurerm_role_definition" "jit_reader" {
  # Custom role names are unique in the tenant: the account's name is globally unique.
  name        = "scalehook JIT reader ${local.storage_account_name} ${local.container}"
  scope       = local.storage_resource_group
  description = "scalehook runner VMs of pool ${var.pool}: read and delete their JIT runner configuration blob; no write."

  permissions {
    actions      = []
    data_actions = local.jit_reader_data_actions
  }

  assignable_scopes = [local.storage_resource_group]
}

resource "azurerm_role_assignment" "runners_read_delete" {
  scope              = azurerm_storage_container.jit.id
  role_definition_id = azurerm_role_definition.jit_reader.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.runners.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "scalehook_write" {
  scope                = azurerm_storage_container.jit.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = var.scalehook_principal_id
}

# WARNING: no Microsoft.Insights/autoscalesettings on this scale set: scalehook owns capacity.
resource "azurerm_linux_virtual_machine_scale_set" "runners" {
  name                = local.name
  resource_group_name = var.resource_group_name
  location            = var.location
  sku                 = var.sku
  instances           = 0
  admin_username      = "azureuser"
  upgrade_mode        = "Manual"
  overprovision       = false
  custom_data         = base64encode(local.custom_data)
  # Needs the EncryptionAtHost feature registered on the subscription.
  encryption_at_host_enabled      = true
  disable_password_authentication = true
  tags                            = var.tags
  # Spot: an evicted VM is deleted (nothing deallocated keeps counting against quota), at
  # up to the pay-as-you-go price (-1: never evicted for price).
  priority        = var.spot ? "Spot" : "Regular"
  eviction_policy = var.spot ? "Delete" : null
  max_bid_price   = var.spot ? -1 : null

  admin_ssh_key {
    username   = "azureuser"
    public_key = var.admin_ssh_public_key
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.runners.id]
  }

  source_image_reference {
    publisher = var.source_image.publisher
    offer     = var.source_image.offer
    sku       = var.source_image.sku
    version   = var.source_image.version
  }

  os_disk {
    storage_account_type = "Premium_LRS"
    caching              = "ReadWrite"
  }

  network_interface {
    name    = "runner"
    primary = true

    ip_configuration {
      name      = "internal"
      primary   = true
      subnet_id = var.subnet_id
    }
  }

  lifecycle {
    ignore_changes = [instances]
  }
}
