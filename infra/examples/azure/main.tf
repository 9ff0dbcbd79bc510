# A complete scalehook deployment on Azure: a runner scale set, the webhook secret in Key
# Vault, and the module.
#
#   terraform init && terraform apply \
#     -var package_url=https://github.com/<owner>/scalehook/releases/download/v<version>/scalehook-<version>-azure.zip \
#     -var package_sha256=<its line in the release's SHA256SUMS>
#   terraform output webhook_url                 # paste into GitHub with the secret
#
# Runner VMs must register with a runner name that contains the VM's computer name
# (e.g. `--name "$(hostname)"`) so scalehook can tell busy instances from idle ones.

terraform {
  required_version = ">= 1.11"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.40, < 5.0"
    }
  }
}

provider "azurerm" {
  features {}
  # The module's storage account disables shared keys: data-plane calls use Entra ID.
  storage_use_azuread = true
}

variable "location" {
  description = "Azure region."
  type        = string
  default     = "westeurope"
}

variable "package_url" {
  description = "URL of the released function app package (scalehook-<version>-azure.zip), published with One Deploy."
  type        = string
}

variable "package_sha256" {
  description = "SHA-256 of the package, from the release's SHA256SUMS."
  type        = string
}

variable "webhook_secret" {
  description = "GitHub webhook secret (set TF_VAR_webhook_secret); stored in Key Vault through a write-only argument."
  type        = string
  sensitive   = true
}

variable "runner_subnet_id" {
  description = "Subnet of the runner VMs."
  type        = string
}

variable "runner_ssh_public_key" {
  description = "SSH public key of the runner VMs' admin user."
  type        = string
}

data "azurerm_client_config" "current" {}

resource "azurerm_resource_group" "ci" {
  name     = "rg-github-runners"
  location = var.location
}

# ---- The webhook secret in Key Vault (RBAC mode) ----------------------------------------

resource "azurerm_key_vault" "ci" {
  #checkov:skip=CKV2_AZURE_32:The function app (Flex Consumption without VNet integration) resolves its Key Vault reference over the public endpoint; RBAC lets only its identity read the one secret.
  #checkov:skip=CKV_AZURE_189:Same reason: public network access stays on for the app's Key Vault reference; only Entra ID principals with RBAC on the secret can read it.
  #checkov:skip=CKV_AZURE_109:Same reason: the vault must accept the app's calls from the public network; access is by Entra ID and RBAC on the secret.
  name                       = "kv-gh-runners-example"
  resource_group_name        = azurerm_resource_group.ci.name
  location                   = azurerm_resource_group.ci.location
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 7

  # Key Vault references from an app without VNet integration need the public endpoint; with
  # VNet integration, set default_action = "Deny" and add a private endpoint.
  network_acls {
    bypass         = "AzureServices"
    default_action = "Allow"
  }
}

resource "azurerm_role_assignment" "deployer_secrets" {
  scope                = azurerm_key_vault.ci.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_key_vault_secret" "webhook" {
  name         = "scalehook-webhook-secret"
  key_vault_id = azurerm_key_vault.ci.id
  content_type = "text/plain"
  # Write-only: never stored in the state. Bump the version to rotate.
  value_wo         = var.webhook_secret
  value_wo_version = 1
  expiration_date  = "2027-12-31T00:00:00Z"

  depends_on = [azurerm_role_assignment.deployer_secrets]
}

# ---- The runner scale set -----------------------------------------------------------------
#
# WARNING: do not create a Microsoft.Insights/autoscalesettings (CPU autoscale) for this
# scale set. It would fight the webhook's capacity, and Azure Autoscale overrides manual
# capacity: scalehook and autoscale would undo each other.
#
# WARNING: ignore `instances` drift. scalehook changes the capacity all day; without
# ignore_changes every `terraform apply` would reset it and could delete VMs running jobs.
resource "azurerm_linux_virtual_machine_scale_set" "linux_x64" {
  name                = "vmss-github-runners-linux-x64"
  resource_group_name = azurerm_resource_group.ci.name
  location            = azurerm_resource_group.ci.location
  sku                 = "Standard_D4s_v5"
  instances           = 1
  admin_username      = "runner"
  upgrade_mode        = "Manual"

  disable_password_authentication = true
  # Needs the EncryptionAtHost feature registered on the subscription.
  encryption_at_host_enabled = true

  admin_ssh_key {
    username   = "runner"
    public_key = var.runner_ssh_public_key
  }

  source_image_reference {
    publisher = "Canonical"
    offer     = "ubuntu-24_04-lts"
    sku       = "server"
    version   = "latest"
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
      subnet_id = var.runner_subnet_id
    }
  }

  lifecycle {
    ignore_changes = [instances]
  }
}

module "scalehook" {
  source = "../../azure"

  name                 = "scalehook-example-ci"
  resource_group_name  = azurerm_resource_group.ci.name
  location             = azurerm_resource_group.ci.location
  storage_account_name = "stscalehookexampleci"
  package_url          = var.package_url
  package_sha256       = var.package_sha256

  # Mirrors scalehook's [[pools]].
  pools = [
    {
      name                 = "linux-x64"
      labels               = ["self-hosted", "linux", "x64"]
      min                  = 0
      max                  = 20
      standby              = 1
      runners_per_instance = 1
      azure_vmss           = azurerm_linux_virtual_machine_scale_set.linux_x64.id
    },
  ]
  allowed_organizations = ["my-org"]

  webhook_secret_key_vault_secret = {
    key_vault_id = azurerm_key_vault.ci.id
    secret_name  = azurerm_key_vault_secret.webhook.name
  }

  reconcile_schedule = "0 */5 * * * *"
  alert_emails       = ["platform-oncall@example.com"]

  tags = { service = "scalehook" }
}

output "webhook_url" {
  description = "Payload URL for the GitHub webhook."
  value       = module.scalehook.webhook_url
}
