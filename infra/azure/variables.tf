# ---- Placement and naming ---------------------------------------------------------------

variable "name" {
  description = "Name of the deployment: the function app (<name>.azurewebsites.net, so globally unique), plan, identity, insights and alerts are named after it."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$", var.name))
    error_message = "name: 2-32 lowercase letters, digits or '-', not starting or ending with '-' (it is the function app's host name)."
  }
}

variable "resource_group_name" {
  description = "Existing resource group that receives everything the module creates."
  type        = string
}

variable "location" {
  description = "Azure region of the function app, storage account and insights, e.g. \"westeurope\". Flex Consumption must be available there."
  type        = string
}

variable "storage_account_name" {
  description = "Name of the storage account created for the app (host state, the deployment package container and the ledger table): 3-24 lowercase letters and digits, globally unique."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]{3,24}$", var.storage_account_name))
    error_message = "storage_account_name: 3-24 lowercase letters and digits."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

# ---- The function app -------------------------------------------------------------------

variable "function_zip_path" {
  description = "Path to the function app package built by `make azure-zip` (target/azure/scalehook-azure.zip: host.json at the root, the `handler` binary, functions webhook and reconcile)."
  type        = string
}

variable "instance_memory_mb" {
  description = "Flex Consumption instance memory in MB (512, 2048 or 4096). The handler needs a few MB; 512 is the cheapest size that runs it."
  type        = number
  default     = 512

  validation {
    condition     = contains([512, 2048, 4096], var.instance_memory_mb)
    error_message = "instance_memory_mb: 512, 2048 or 4096."
  }
}

variable "maximum_instance_count" {
  description = "Upper bound on Flex Consumption instances (40-1000). Webhook traffic is light; the bound caps the cost of a flood of unsigned requests."
  type        = number
  default     = 40

  validation {
    condition     = var.maximum_instance_count >= 40 && var.maximum_instance_count <= 1000
    error_message = "maximum_instance_count: between 40 and 1000."
  }
}

variable "reconcile_schedule" {
  description = "NCRONTAB schedule (6 fields, with seconds, UTC) of the reconcile timer, given to the app as SCALEHOOK_RECONCILE_SCHEDULE."
  type        = string
  default     = "0 */5 * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.reconcile_schedule))) == 6
    error_message = "reconcile_schedule: an NCRONTAB expression with 6 fields (second minute hour day month weekday), e.g. \"0 */5 * * * *\"."
  }
}

variable "table_name" {
  description = "Name of the ledger table in the app's storage account."
  type        = string
  default     = "scalehookledger"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9]{2,62}$", var.table_name))
    error_message = "table_name: 3-63 letters and digits, starting with a letter."
  }
}

variable "log_retention_days" {
  description = "Retention of the Log Analytics workspace behind Application Insights (delivery log lines), in days."
  type        = number
  default     = 30

  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days: between 30 and 730."
  }
}

# ---- scalehook configuration (rendered to SCALEHOOK_CONFIG_TOML) ----------------------------

variable "pools" {
  description = "Runner pools, as in the [[pools]] tables of scalehook's config file: name, labels, min, max, standby, runners_per_instance and the resource id of the VM Scale Set (azure_vmss) serving the pool. A job goes to the first pool that has all its labels."
  type = list(object({
    name                 = string
    labels               = list(string)
    min                  = optional(number, 0)
    max                  = number
    standby              = optional(number, 0)
    runners_per_instance = optional(number, 1)
    azure_vmss           = string
  }))

  validation {
    condition     = length(var.pools) > 0
    error_message = "pools: at least one pool is required."
  }
  validation {
    condition     = alltrue([for p in var.pools : can(regex("^[A-Za-z0-9._-]+$", p.name))])
    error_message = "pools[*].name: use only letters, digits, '-', '_' and '.' (it becomes a log dimension and a storage key)."
  }
  validation {
    condition     = length(distinct([for p in var.pools : p.name])) == length(var.pools)
    error_message = "pools[*].name: pool names must be unique."
  }
  validation {
    condition     = alltrue([for p in var.pools : length(p.labels) > 0 && alltrue([for l in p.labels : trimspace(l) != ""])])
    error_message = "pools[*].labels: each pool needs at least one non-empty label."
  }
  validation {
    condition     = alltrue([for p in var.pools : p.max >= 1 && p.min >= 0 && p.min <= p.max && p.standby >= 0 && p.runners_per_instance >= 1])
    error_message = "pools[*]: need 0 <= min <= max, max >= 1, standby >= 0 and runners_per_instance >= 1."
  }
  validation {
    condition     = alltrue([for p in var.pools : alltrue([for n in [p.min, p.max, p.standby, p.runners_per_instance] : floor(n) == n])])
    error_message = "pools[*]: min, max, standby and runners_per_instance are whole numbers."
  }
  validation {
    condition     = alltrue([for p in var.pools : can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\\.Compute/virtualMachineScaleSets/[^/]+$", p.azure_vmss))])
    error_message = "pools[*].azure_vmss: a scale set resource id, /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/<name>."
  }
}

variable "allowed_repositories" {
  description = "When non-empty, only jobs of these owner/repo names are handled (case-insensitive)."
  type        = list(string)
  default     = []
}

variable "allowed_organizations" {
  description = "When non-empty, only jobs of repositories owned by these organizations or users are handled."
  type        = list(string)
  default     = []
}

variable "max_body_bytes" {
  description = "Largest accepted delivery body in bytes, or null for scalehook's default (1 MiB)."
  type        = number
  default     = null

  validation {
    condition     = var.max_body_bytes == null || try(var.max_body_bytes >= 1 && floor(var.max_body_bytes) == var.max_body_bytes, false)
    error_message = "max_body_bytes: a whole number of bytes, at least 1."
  }
}

variable "cloud_timeout_ms" {
  description = "Upper bound in ms on the cloud calls of one delivery (GitHub waits 10 s), or null for scalehook's default (7000)."
  type        = number
  default     = null

  validation {
    condition     = var.cloud_timeout_ms == null || try(var.cloud_timeout_ms >= 1 && var.cloud_timeout_ms <= 9000 && floor(var.cloud_timeout_ms) == var.cloud_timeout_ms, false)
    error_message = "cloud_timeout_ms: between 1 and 9000 (GitHub waits 10 s)."
  }
}

variable "ledger_ttl" {
  description = "Ledger time-to-lives in seconds; null fields keep scalehook's defaults (queued 48 h, in_progress 24 h, retention 4 days). retention must cover GitHub's 3-day redelivery window."
  type = object({
    queued_ttl_secs      = optional(number)
    in_progress_ttl_secs = optional(number)
    retention_secs       = optional(number)
  })
  default = {}

  validation {
    condition     = var.ledger_ttl.retention_secs == null || try(var.ledger_ttl.retention_secs >= 259200, false)
    error_message = "ledger_ttl.retention_secs: at least 259200 (GitHub's 3-day redelivery window)."
  }
  validation {
    condition     = alltrue([for k, v in var.ledger_ttl : v == null || try(v >= 1 && floor(v) == v, false)])
    error_message = "ledger_ttl: time-to-lives are whole numbers of seconds, at least 1."
  }
}

# ---- Webhook secret: a Key Vault reference (preferred) or a sensitive variable ----------

variable "webhook_secret_key_vault_secret" {
  description = "Key Vault secret(s) holding the webhook secret, read by the app through a Key Vault reference with its identity (the vault must use Azure RBAC). secret_name is the current secret; previous_secret_name, during a rotation, the one being replaced. Nothing secret enters the Terraform state. Set this or webhook_secret."
  type = object({
    key_vault_id         = string
    secret_name          = string
    previous_secret_name = optional(string)
  })
  default = null
}

variable "webhook_secret" {
  description = "The GitHub webhook secret as a sensitive value, set as the app setting SCALEHOOK_WEBHOOK_SECRET. Simpler than Key Vault, but the value is kept in the Terraform state and visible to readers of the app's settings. Set this or webhook_secret_key_vault_secret."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.webhook_secret == null || try(length(trimspace(var.webhook_secret)) >= 16, false)
    error_message = "webhook_secret: use a random secret of at least 16 characters (e.g. `openssl rand -hex 32`)."
  }
}

variable "webhook_secret_previous" {
  description = "During a rotation with webhook_secret: the secret being replaced, still accepted (SCALEHOOK_WEBHOOK_SECRET_PREVIOUS). null otherwise."
  type        = string
  default     = null
  sensitive   = true
}

# ---- Alerts -----------------------------------------------------------------------------

variable "alert_emails" {
  description = "E-mail addresses notified by the alerts (an action group is created when non-empty)."
  type        = list(string)
  default     = []
}

variable "action_group_ids" {
  description = "Existing action group ids notified by the alerts, in addition to alert_emails."
  type        = list(string)
  default     = []
}

variable "signature_failure_threshold" {
  description = "Alert when more deliveries than this are rejected for their signature in 5 minutes."
  type        = number
  default     = 10
}

variable "runbook_url" {
  description = "Where alert descriptions point operators: scalehook's runbook (docs/runbook.md), e.g. its URL in your fork or wiki; section anchors are appended."
  type        = string
  default     = "docs/runbook.md"
}

variable "grant_operation_status_read" {
  description = "Also grant Microsoft.Compute/locations/operations/read on the scale sets' subscription, so the handler can follow a scale operation to its end and report one that failed. Without it (the default) the grant stays on the scale sets alone and an accepted change is logged as in progress."
  type        = bool
  default     = false
}
