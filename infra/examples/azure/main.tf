# A complete scalehook deployment on Azure: the webhook secret and the GitHub App's private
# key in Key Vault, the runners' JIT storage (infra/azure/jit-storage), one pool of runners on
# infra/azure/runners, and the module. infra/azure/README.md walks through it, with the
# permissions the deployer needs.
#
#   export TF_VAR_webhook_secret=$(openssl rand -hex 32)
#   export TF_VAR_github_app_key="$(cat my-app.private-key.pem)"
#   terraform init && terraform apply \
#     -var github_app_id=<App id> -var github_installation_id=<installation id> \
#     -var runner_sha256=<sha256> -var runner_subnet_id=<subnet id> \
#     -var runner_ssh_public_key="$(cat ~/.ssh/id_ed25519.pub)"
#   # The package: a release asset (add -var package_url=<its https URL> -var
#   # package_sha256=<its SHA256SUMS line> above), or a local `make azure-zip` build published
#   # after the apply:
#   az functionapp deploy -g rg-github-runners -n scalehook-example-ci \
#     --src-path target/azure/scalehook-azure.zip --type zip     # One Deploy
#   terraform output webhook_url                 # the App's webhook URL, with the secret
#                                                # (or an org/repo webhook's: then set hook_id)
#
# scalehook finds each new VM in its describe of the scale set, mints the JIT runner
# `<pool>-<computer name>` and writes it to jit-<pool>/<computer name>; the VM's boot script
# (runner/azure/boot.sh, the module's custom data) reads and deletes it and runs the runner.

terraform {
  required_version = ">= 1.11"
  required_providers {
    # The module's pins (infra/azure/versions.tf).
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "4.81.0"
    }
    azapi = {
      source  = "Azure/azapi"
      version = "~> 2.4"
    }
  }
}

provider "azurerm" {
  features {
    # The storage accounts disable shared keys and everything in them is created through
    # ARM: no storage data-plane call at all (azurerm_storage_account would otherwise read
    # queue and static-website properties through it on every refresh, which needs the
    # deployer to hold data-plane roles).
    storage {
      data_plane_available = false
    }
  }
  storage_use_azuread = true
}

provider "azapi" {}

variable "location" {
  description = "Azure region."
  type        = string
  default     = "westeurope"
}

variable "package_url" {
  description = "HTTPS URL of a released function app package (scalehook-<version>-azure.zip), published with One Deploy; null: publish a local build after apply (the header's az command)."
  type        = string
  default     = null
}

variable "package_sha256" {
  description = "SHA-256 of the package at package_url, from the release's SHA256SUMS (check the download against it yourself); null with no package_url."
  type        = string
  default     = null
}

variable "webhook_secret" {
  description = "GitHub webhook secret (set TF_VAR_webhook_secret); stored in Key Vault through a write-only argument."
  type        = string
  sensitive   = true
}

variable "github_app_key" {
  description = "The GitHub App's private key, PEM (set TF_VAR_github_app_key); stored in Key Vault through a write-only argument."
  type        = string
  sensitive   = true
}

variable "github_app_id" {
  description = "The GitHub App's id."
  type        = number
}

variable "github_installation_id" {
  description = "The App's installation id on the organization."
  type        = number
}

variable "runner_version" {
  description = "GitHub Actions runner version downloaded at boot (pinned)."
  type        = string
  default     = "2.329.0"
}

variable "runner_sha256" {
  description = "SHA-256 of actions-runner-linux-x64-<runner_version>.tar.gz, from the runner release notes."
  type        = string
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

resource "azurerm_key_vault_secret" "github_app_key" {
  name         = "scalehook-github-app-key"
  key_vault_id = azurerm_key_vault.ci.id
  content_type = "application/x-pem-file"
  # Write-only: never stored in the state. Bump the version after generating a new key.
  value_wo         = var.github_app_key
  value_wo_version = 1
  expiration_date  = "2027-12-31T00:00:00Z"

  depends_on = [azurerm_role_assignment.deployer_secrets]
}

# ---- The runners' JIT configurations -----------------------------------------------------
# infra/azure/jit-storage: the account (identity access only) and the rules that delete what
# is left under each pool's container after a day. The containers are the runner modules'.

module "jit_storage" {
  source = "../../azure/jit-storage"

  storage_account_name = "stscalehookjitexample"
  resource_group_name  = azurerm_resource_group.ci.name
  location             = azurerm_resource_group.ci.location
  pools                = ["linux-x64"]
}

# The account and its policy were this file's own resources before jit-storage existed.
moved {
  from = azurerm_storage_account.jit
  to   = module.jit_storage.azurerm_storage_account.jit
}

moved {
  from = azurerm_storage_management_policy.jit
  to   = module.jit_storage.azurerm_storage_management_policy.jit
}

# ---- The runners ----------------------------------------------------------------------------
# infra/azure/runners: a Uniform scale set, the boot script as custom data, the pool's
# identity and its JIT container, and scalehook's write role on that container only.
#
# WARNING: do not create a Microsoft.Insights/autoscalesettings (CPU autoscale) for these
# scale sets. It would fight the webhook's capacity, and Azure Autoscale overrides manual
# capacity: scalehook and autoscale would undo each other.
#
# WARNING: ignore `instances` drift (the module does: lifecycle { ignore_changes =
# [instances] }); scalehook changes the capacity all day, and a reset by `terraform apply`
# could delete VMs running jobs.
module "runners_linux_x64" {
  source = "../../azure/runners"

  pool                   = "linux-x64"
  resource_group_name    = azurerm_resource_group.ci.name
  location               = azurerm_resource_group.ci.location
  sku                    = "Standard_D4s_v5"
  subnet_id              = var.runner_subnet_id
  admin_ssh_public_key   = var.runner_ssh_public_key
  storage_account_id     = module.jit_storage.storage_account_id
  storage_blob_endpoint  = module.jit_storage.storage_blob_endpoint
  scalehook_principal_id = module.scalehook.identity_principal_id
  runner_package = {
    url    = "https://github.com/actions/runner/releases/download/v${var.runner_version}/actions-runner-linux-x64-${var.runner_version}.tar.gz"
    sha256 = var.runner_sha256
  }
  tags = { service = "scalehook" }
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
      azure_vmss           = module.runners_linux_x64.scale_set_id
      # One job per VM: the runner exits after it and scalehook replaces the VM.
      ephemeral = true
    },
  ]
  allowed_organizations = ["my-org"]

  github = {
    app_id          = var.github_app_id
    installation_id = var.github_installation_id
    organization    = "my-org"
    # The App's own webhook (App settings > Webhook) is the one redelivery reads, with the
    # App's JWT. Only if GitHub sends to an organization or repository webhook instead: its
    # id here (and hook_repository = "owner/name" for a repository's), and the App's
    # Webhooks permission (docs/github.md, "Which webhook").
    # hook_id = 412345678
  }
  github_app_key_key_vault_secret = {
    key_vault_id = azurerm_key_vault.ci.id
    secret_name  = azurerm_key_vault_secret.github_app_key.name
  }
  jit_blob_endpoint = module.jit_storage.storage_blob_endpoint

  webhook_secret_key_vault_secret = {
    key_vault_id = azurerm_key_vault.ci.id
    secret_name  = azurerm_key_vault_secret.webhook.name
  }

  reconcile_schedule = "0 */5 * * * *"
  alert_emails       = ["platform-oncall@example.com"]

  tags = { service = "scalehook" }
}

output "webhook_url" {
  description = "Payload URL of the GitHub App's webhook (App settings > Webhook), whose deliveries redelivery reads; or of the organization or repository webhook github.hook_id names."
  value       = module.scalehook.webhook_url
}
