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

variable "package_url" {
  description = "HTTPS URL of the function app package the app runs, which the platform downloads: a release asset (scalehook-<version>-azure.zip from the project's GitHub release), published with One Deploy. null: publish the package yourself after apply, e.g. a local `make azure-zip` build: `az functionapp deploy -g <resource group> -n <name> --src-path target/azure/scalehook-azure.zip --type zip` (One Deploy, the only publishing method Flex Consumption takes; infra/azure/README.md, \"Publish the package\")."
  type        = string
  default     = null

  validation {
    condition     = var.package_url == null || can(regex("^https://", var.package_url))
    error_message = "package_url: an https:// URL the platform can download."
  }
}

variable "package_sha256" {
  description = "SHA-256 (hex) of the package at package_url, from the release's SHA256SUMS. A new value publishes again (a replace trigger of the One Deploy extension); it is not compared with the download (One Deploy takes no checksum): check the asset against SHA256SUMS (and its attestation) before passing its URL. Required with package_url."
  type        = string
  default     = null

  validation {
    condition     = var.package_sha256 == null || can(regex("^[0-9a-fA-F]{64}$", var.package_sha256))
    error_message = "package_sha256: 64 hex digits (a line of the release's SHA256SUMS)."
  }
  validation {
    condition     = (var.package_url == null) == (var.package_sha256 == null)
    error_message = "package_sha256 goes with package_url: give both (a release asset and its published checksum) or neither."
  }
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
  description = "Runner pools, as in the [[pools]] tables of scalehook's config file: name, labels, min, max, standby, runners_per_instance, ephemeral (one job per runner; needs github), runner_group_id / runner_group (the runner group JIT runners join, and its name for `runs-on: group:`) and the resource id of the VM Scale Set (azure_vmss) serving the pool. A job goes to the first pool that has all its labels."
  type = list(object({
    name                 = string
    labels               = list(string)
    min                  = optional(number, 0)
    max                  = number
    standby              = optional(number, 0)
    runners_per_instance = optional(number, 1)
    azure_vmss           = string
    ephemeral            = optional(bool, false)
    runner_group_id      = optional(number, 1)
    runner_group         = optional(string)
    # Label-less queued events of these repositories (owner/name) route to the pool.
    label_less_queued_repositories = optional(list(string), [])
    # Issue 23: instances kept warm (AWS warm pool; 0: none), on-demand or spot, the
    # on-demand pool a spot pool's unmet demand spills to, re-run of interrupted jobs.
    warm_pool         = optional(number, 0)
    capacity          = optional(string, "on-demand")
    overflow          = optional(string)
    rerun_interrupted = optional(bool, false)
  }))

  # Names, labels and bounds are validated in ../modules/pool-config; the fleet ids here.
  validation {
    condition     = alltrue([for p in var.pools : can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\\.Compute/virtualMachineScaleSets/[^/]+$", p.azure_vmss))])
    error_message = "pools[*].azure_vmss: a scale set resource id, /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/<name>."
  }
  validation {
    condition     = length(distinct([for p in var.pools : lower(p.azure_vmss)])) == length(var.pools)
    error_message = "pools[*].azure_vmss: one scale set per pool (scalehook sets each pool's capacity on its scale set; two pools on one would undo each other)."
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
}

variable "cloud_timeout_ms" {
  description = "Upper bound in ms on the cloud calls of one delivery (GitHub waits 10 s), or null for scalehook's default (7000)."
  type        = number
  default     = null
}

variable "ledger_ttl" {
  description = "Ledger time-to-lives in seconds; null fields keep scalehook's defaults (queued_ttl_secs 172800 = 48 h, in_progress_ttl_secs 518400 = 6 days, retention_secs 345600 = 4 days). in_progress must outlast the longest job (GitHub stops self-hosted jobs after 5 days): an expired running record lets scale-in take a busy runner for idle. retention must cover GitHub's 3-day redelivery window."
  type = object({
    queued_ttl_secs      = optional(number)
    in_progress_ttl_secs = optional(number)
    retention_secs       = optional(number)
  })
  default = {}
}

variable "github" {
  description = "The GitHub App ([github] section): app_id, installation_id, organization or repository (where runners register), and optionally api_url (GHES: https://<host>/api/v3), boot_grace_secs, recheck_after_secs, and hook_id (with hook_repository = \"owner/name\" for a repository's webhook): the organization or repository webhook redelivery reads, when GitHub sends to one instead of the App's own webhook (the recommended setup, no hook_id). null: webhook-only mode (scale-in is not runner-safe, lost deliveries are not repaired, no JIT runners). The App's private key is github_app_key_*, never here."
  type = object({
    app_id             = number
    installation_id    = number
    api_url            = optional(string)
    organization       = optional(string)
    repository         = optional(string)
    boot_grace_secs    = optional(number)
    recheck_after_secs = optional(number)
    hook_id            = optional(number)
    hook_repository    = optional(string)
  })
  default = null
}

# ---- GitHub App key and JIT provisioning ------------------------------------------------

variable "github_app_key_key_vault_secret" {
  description = "Key Vault secret holding the GitHub App's private key (PEM), read by the app through a Key Vault reference (SCALEHOOK_GITHUB_APP_KEY) with its identity, which gets Key Vault Secrets User on that secret only (the vault must use Azure RBAC). Needed with github."
  type = object({
    key_vault_id = string
    secret_name  = string
  })
  default = null
}

variable "jit_blob_endpoint" {
  description = "Blob endpoint of the storage account holding the pools' JIT containers (infra/azure/runners' storage_blob_endpoint, e.g. https://<account>.blob.core.windows.net/): scalehook writes each new VM's runner configuration to jit-<pool>/<computer name> there. null: scalehook provisions no VM."
  type        = string
  default     = null

  validation {
    condition     = var.jit_blob_endpoint == null || can(regex("^https://[a-z0-9]+\\.blob\\.", var.jit_blob_endpoint))
    error_message = "jit_blob_endpoint: the account's https blob endpoint, e.g. https://<account>.blob.core.windows.net/."
  }
}

# ---- Webhook secret: a Key Vault reference ------------------------------------------------

variable "webhook_secret_key_vault_secret" {
  description = "Key Vault secret(s) holding the webhook secret, read by the app through Key Vault references with its identity (the vault must use Azure RBAC; the identity gets Key Vault Secrets User on these secrets only). secret_name is the current secret; previous_secret_name, during a rotation, the one being replaced. Nothing secret enters the Terraform state or the app's settings."
  type = object({
    key_vault_id         = string
    secret_name          = string
    previous_secret_name = optional(string)
  })

  validation {
    condition     = can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\\.KeyVault/vaults/[^/]+$", var.webhook_secret_key_vault_secret.key_vault_id))
    error_message = "webhook_secret_key_vault_secret.key_vault_id: a Key Vault resource id, /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.KeyVault/vaults/<name>."
  }
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
  description = "Also grant Microsoft.Compute/locations/operations/read on the subscription the provider deploys to (the scale sets must be in it), so the handler can follow a scale operation to its end and report one that failed. Without it (the default) the grant stays on the scale sets alone and an accepted change is logged as in progress."
  type        = bool
  default     = false
}

variable "github_rate_limit_alarm_threshold" {
  description = "With github: alert when the App installation's x-ratelimit-remaining stays below this for 10 minutes of reconcile passes. Default 500, 10 % of an installation's hourly budget on github.com (5000); scale it with a larger budget (e.g. 1500 for Enterprise Cloud's 15000)."
  type        = number
  default     = 500

  validation {
    condition     = var.github_rate_limit_alarm_threshold > 0
    error_message = "github_rate_limit_alarm_threshold: a positive number of requests."
  }
}
