variable "pool" {
  description = "Name of the scalehook pool these runners serve; runners are named `<pool>-<computer name>`."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]{1,40}$", var.pool))
    error_message = "pool: 1-40 lower-case letters, digits or '-' (it names the scale set and the blob container)."
  }
}

variable "resource_group_name" {
  description = "Resource group of the scale set and its identity."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "sku" {
  description = "VM size: x86_64 for x64 pools (e.g. Standard_D4s_v5), a GPU size (e.g. Standard_NC4as_T4_v3) with a GPU image for GPU pools."
  type        = string
}

variable "subnet_id" {
  description = "Subnet of the runner VMs (outbound HTTPS to GitHub and the storage account)."
  type        = string
}

variable "admin_ssh_public_key" {
  description = "SSH public key of the VMs' admin user (password login is disabled)."
  type        = string
}

variable "source_image" {
  description = "Marketplace image of the VMs (x86_64 Ubuntu by default)."
  type = object({
    publisher = string
    offer     = string
    sku       = string
    version   = string
  })
  default = {
    publisher = "Canonical"
    offer     = "ubuntu-24_04-lts"
    sku       = "server"
    version   = "latest"
  }
}

variable "storage_account_id" {
  description = "Storage account (shared keys disabled) holding one private container per pool for the JIT configurations: infra/azure/jit-storage's storage_account_id, which also expires what is left after a day. The module defines a custom role (read and delete blobs) in the account's resource group: the deployer needs Microsoft.Authorization/roleDefinitions/write there."
  type        = string
}

variable "storage_blob_endpoint" {
  description = "Primary blob endpoint of that account, e.g. https://<account>.blob.core.windows.net/."
  type        = string
}

variable "scalehook_principal_id" {
  description = "Principal id of scalehook's managed identity: it gets Storage Blob Data Contributor on this pool's container only, to write configurations."
  type        = string
}

variable "runner_package" {
  description = "Download the runner at boot (pinned release url and its sha256), or null if the image has it in /opt/actions-runner."
  type = object({
    url    = string
    sha256 = string
  })
  default = null
}

variable "runner_wait_seconds" {
  description = "How long a new VM waits for its configuration before it powers off."
  type        = number
  default     = 900
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

variable "allow_privileged_runner_user" {
  description = "Start the runner even if its user (an image's existing user) is root, in sudo/wheel/admin/docker/lxd/adm, or has sudo rights. Off, the boot script refuses such a user and the instance powers off. On, a job can become root (or run a root container on the host network) and remove the metadata-service block, so it can use the instance's credentials (the scale set identity's token: read the pool's pending JIT blobs) and the wireserver. Turn on only for pools whose jobs are trusted with that."
  type        = bool
  default     = false
}

variable "spot" {
  description = "Run the pool's VMs as Azure Spot VMs (priority Spot, eviction policy Delete, max price -1: evicted for capacity, never for price). Name an on-demand `overflow` pool in scalehook's configuration for when Spot capacity cannot be had. false: regular VMs."
  type        = bool
  default     = false
}
