# The pools and options shared by every deployment of scalehook, validated once here for
# both clouds. The cloud modules declare the same inputs (with their fleet field, aws_asg or
# azure_vmss) and pass them through; they validate only what is theirs (the fleet ids).

variable "fleet_key" {
  description = "Name of the pool's fleet field in scalehook's configuration: \"aws_asg\" (Auto Scaling group name) or \"azure_vmss\" (scale set resource id)."
  type        = string

  validation {
    condition     = contains(["aws_asg", "azure_vmss"], var.fleet_key)
    error_message = "fleet_key: \"aws_asg\" or \"azure_vmss\"."
  }
}

variable "pools" {
  description = "Runner pools, as in the [[pools]] tables of scalehook's config file, with the fleet id (group name or scale set id) in `fleet`. Order matters: a job goes to the first pool that has all its labels."
  type = list(object({
    name                 = string
    labels               = list(string)
    min                  = optional(number, 0)
    max                  = number
    standby              = optional(number, 0)
    runners_per_instance = optional(number, 1)
    fleet                = string
    ephemeral            = optional(bool, false)
    runner_group_id      = optional(number, 1)
    runner_group         = optional(string)
    # Label-less queued events of these repositories (owner/name) route here: GitHub sends
    # a `runs-on: group:` job's queued event with no labels and no group. Needs runner_group.
    label_less_queued_repositories = optional(list(string), [])
    # Issue 23: instances kept warm (AWS warm pool; 0: none), on-demand or spot, the
    # on-demand pool a spot pool's unmet demand spills to, re-run of interrupted jobs.
    warm_pool         = optional(number, 0)
    capacity          = optional(string, "on-demand")
    overflow          = optional(string)
    rerun_interrupted = optional(bool, false)
  }))

  validation {
    condition     = alltrue([for p in var.pools : contains(["on-demand", "spot"], p.capacity)])
    error_message = "pools[*].capacity: on-demand or spot."
  }
  validation {
    condition     = alltrue([for p in var.pools : p.warm_pool >= 0 && floor(p.warm_pool) == p.warm_pool && p.warm_pool <= p.max])
    error_message = "pools[*].warm_pool: a whole number from 0 to max."
  }
  validation {
    condition     = alltrue([for p in var.pools : !(p.warm_pool > 0 && p.capacity == "spot")])
    error_message = "pools[*].warm_pool: a pool is either warm or spot."
  }
  validation {
    condition     = alltrue([for p in var.pools : p.overflow == null || contains([for q in var.pools : q.name if q.name != p.name && q.capacity == "on-demand"], coalesce(p.overflow, "-"))])
    error_message = "pools[*].overflow: the name of another, on-demand pool."
  }
  validation {
    condition     = length(var.pools) > 0
    error_message = "pools: at least one pool is required."
  }
  validation {
    condition     = alltrue([for p in var.pools : can(regex("^[A-Za-z0-9._-]+$", p.name))])
    error_message = "pools[*].name: use only letters, digits, '-', '_' and '.' (it becomes a metric dimension and a storage key)."
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
    condition     = alltrue([for p in var.pools : p.runner_group_id >= 1 && floor(p.runner_group_id) == p.runner_group_id])
    error_message = "pools[*].runner_group_id: the runner group's numeric id (GitHub's default group is 1)."
  }
  validation {
    condition     = alltrue([for p in var.pools : p.runner_group == null || try(trimspace(p.runner_group) != "", false)])
    error_message = "pools[*].runner_group: a runner group name (jobs with `runs-on: group: <name>` route to the pool), or null."
  }
  validation {
    condition     = alltrue([for p in var.pools : length(p.label_less_queued_repositories) == 0 || (p.runner_group != null && alltrue([for r in p.label_less_queued_repositories : can(regex("^[^/\\s]+/[^/\\s]+$", r))]))])
    error_message = "pools[*].label_less_queued_repositories: owner/name repositories, on a pool with a runner_group."
  }
}

variable "github" {
  description = "The GitHub App scalehook works with (the [github] section: runner-safe scale-in, JIT runners, repair of lost deliveries), or null for webhook-only mode. hook_id (with hook_repository for a repository's webhook) names the organization or repository webhook redelivery reads instead of the App's own. The App's private key is not here: each cloud module takes a reference to it."
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

  validation {
    condition     = var.github == null || try(var.github.app_id >= 1 && var.github.installation_id >= 1 && floor(var.github.app_id) == var.github.app_id && floor(var.github.installation_id) == var.github.installation_id, false)
    error_message = "github.app_id and github.installation_id: the App's and the installation's numeric ids."
  }
  validation {
    condition     = var.github == null || try((var.github.organization == null) != (var.github.repository == null), false)
    error_message = "github: set exactly one of organization or repository (where the runners register)."
  }
  validation {
    condition     = var.github == null || try(var.github.repository == null || can(regex("^[^/\\s]+/[^/\\s]+$", var.github.repository)), false)
    error_message = "github.repository: owner/name."
  }
  validation {
    condition     = var.github == null || try(var.github.api_url == null || can(regex("^https?://", var.github.api_url)), false)
    error_message = "github.api_url: an http(s) URL such as https://api.github.com or https://ghe.example.com/api/v3."
  }
  validation {
    condition     = var.github == null || try(alltrue([for n in [var.github.boot_grace_secs, var.github.recheck_after_secs] : n == null ? true : (n >= 1 && floor(n) == n)]), false)
    error_message = "github.boot_grace_secs and github.recheck_after_secs: whole numbers of seconds, at least 1."
  }
  validation {
    condition     = var.github == null || try(var.github.hook_id == null ? true : (var.github.hook_id >= 1 && floor(var.github.hook_id) == var.github.hook_id), false)
    error_message = "github.hook_id: the webhook's numeric id (the number at the end of its settings URL, or X-GitHub-Hook-ID of a delivery), or null for the App's own webhook."
  }
  validation {
    condition     = var.github == null || try(var.github.hook_repository == null ? true : var.github.hook_id != null, false)
    error_message = "github.hook_repository: needs github.hook_id, the id of that repository's webhook."
  }
  validation {
    condition     = var.github == null || try(var.github.hook_repository == null ? true : can(regex("^[^/\\s]+/[^/\\s]+$", var.github.hook_repository)), false)
    error_message = "github.hook_repository: owner/name."
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
  description = "Ledger time-to-lives in seconds; null fields keep scalehook's defaults (queued_ttl_secs 172800 = 48 h, in_progress_ttl_secs 518400 = 6 days, retention_secs 345600 = 4 days). in_progress must outlast the longest job (GitHub stops self-hosted jobs after 5 days): an expired running record lets scale-in take a busy runner for idle. retention must cover GitHub's 3-day redelivery window."
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
