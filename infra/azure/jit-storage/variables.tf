variable "storage_account_name" {
  description = "Name of the storage account holding the pools' JIT configuration containers: 3-24 lowercase letters and digits, globally unique."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]{3,24}$", var.storage_account_name))
    error_message = "storage_account_name: 3-24 lowercase letters and digits."
  }
}

variable "resource_group_name" {
  description = "Existing resource group of the storage account (the runner modules define their read-and-delete role there)."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "pools" {
  description = "Names of the pools whose containers (jit-<pool>, created by infra/azure/runners) the account holds: each gets a lifecycle rule deleting what is left a day after its last change."
  type        = list(string)

  validation {
    condition     = length(var.pools) > 0 && alltrue([for p in var.pools : can(regex("^[a-z0-9-]{1,40}$", p))])
    error_message = "pools: at least one pool name, each as infra/azure/runners' pool (1-40 lower-case letters, digits or '-')."
  }
  validation {
    condition     = length(distinct(var.pools)) == length(var.pools)
    error_message = "pools: names must be unique."
  }
}

variable "tags" {
  description = "Tags added to the storage account."
  type        = map(string)
  default     = {}
}
