# ---- Naming -----------------------------------------------------------------------------

variable "name" {
  description = "Name of the deployment: the Lambda function, its role, table, log group, parameter and alarms are named after it."
  type        = string
  default     = "scalehook"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,48}$", var.name))
    error_message = "name: use 1-48 letters, digits, '-' or '_' (it prefixes Lambda, IAM and DynamoDB names)."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

# ---- The function -----------------------------------------------------------------------

variable "lambda_zip_path" {
  description = "Path to the Lambda zip: a release asset (scalehook-<version>-lambda-<arch>.zip, downloaded from the project's GitHub release) or your own `make lambda-zip` build (target/lambda/scalehook-<arch>.zip). `bootstrap` at its root. Its hash is the deployment trigger: a new zip, a new version of the code."
  type        = string
}

variable "lambda_zip_sha256" {
  description = "The zip's SHA-256 (hex) as published in the release's SHA256SUMS; when set, the plan stops unless lambda_zip_path has exactly this hash. null: no check (your own build)."
  type        = string
  default     = null

  validation {
    condition     = var.lambda_zip_sha256 == null || can(regex("^[0-9a-fA-F]{64}$", var.lambda_zip_sha256))
    error_message = "lambda_zip_sha256: 64 hex digits (a line of the release's SHA256SUMS)."
  }
}

variable "architecture" {
  description = "Lambda architecture matching the zip: \"arm64\" (Graviton, cheaper per GB-second) or \"x86_64\"."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture: \"arm64\" or \"x86_64\", the same as the zip's binary."
  }
}

variable "memory_mb" {
  description = "Lambda memory in MB. 128 is enough for scalehook (a few MB of heap, one delivery per invocation); Lambda gives CPU in proportion to memory, so raise it only if LatencyMs shows CPU-bound work."
  type        = number
  default     = 128

  validation {
    condition     = var.memory_mb >= 128 && var.memory_mb <= 10240
    error_message = "memory_mb: between 128 and 10240."
  }
}

variable "timeout_seconds" {
  description = "Lambda timeout in seconds. GitHub waits 10 s for a delivery and the core bounds its cloud calls at cloud_timeout_ms (7 s), so a delivery ends well before 30 s; reconcile touches every pool in turn and needs the headroom."
  type        = number
  default     = 30

  validation {
    condition     = var.timeout_seconds >= 10 && var.timeout_seconds <= 900
    error_message = "timeout_seconds: between 10 (GitHub's wait) and 900."
  }
}

variable "reserved_concurrency" {
  description = "Reserved concurrency for the function, or null for none. A cap bounds the cost of a flood of unsigned requests, but a delivery throttled by it is lost until redelivered (GitHub never retries): size it above your peak of concurrent webhook deliveries (20-50 suits most organisations). Accounts with the default quota of 10 cannot reserve any."
  type        = number
  default     = null

  validation {
    condition     = var.reserved_concurrency == null || try(var.reserved_concurrency >= 1, false)
    error_message = "reserved_concurrency: null, or at least 1 (0 would disable the function)."
  }
}

variable "log_retention_days" {
  description = "Retention of the function's CloudWatch log group (the delivery log lines and the EMF metrics source), in days."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: one of CloudWatch Logs' allowed values (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

variable "log_kms_key_arn" {
  description = "Optional KMS key ARN to encrypt the log group with (its key policy must allow the logs service). null: CloudWatch Logs' default encryption."
  type        = string
  default     = null
}

variable "endpoint" {
  description = "How GitHub reaches the function: \"function_url\" (a Lambda function URL, no extra service) or \"api_gateway\" (an API Gateway HTTP API with route ANY /webhook, stage throttling and access logs)."
  type        = string
  default     = "function_url"

  validation {
    condition     = contains(["function_url", "api_gateway"], var.endpoint)
    error_message = "endpoint: \"function_url\" or \"api_gateway\"."
  }
}

variable "api_gateway_throttle" {
  description = "Stage throttling when endpoint = \"api_gateway\": steady requests per second and burst. Keep it above GitHub's delivery rate: a throttled delivery is lost until redelivered."
  type = object({
    rate_limit  = number
    burst_limit = number
  })
  default = {
    rate_limit  = 50
    burst_limit = 100
  }
}

variable "reconcile_interval_minutes" {
  description = "Minutes between reconcile passes (EventBridge schedule `rate(N minutes)`). Reconcile expires stale ledger entries, restores standby capacity and repairs capacity after lost deliveries."
  type        = number
  default     = 5

  validation {
    condition     = var.reconcile_interval_minutes >= 1 && var.reconcile_interval_minutes <= 60 && floor(var.reconcile_interval_minutes) == var.reconcile_interval_minutes
    error_message = "reconcile_interval_minutes: a whole number from 1 to 60."
  }
}

# ---- scalehook configuration (rendered to SCALEHOOK_CONFIG_TOML) ----------------------------

variable "pools" {
  description = "Runner pools, as in the [[pools]] tables of scalehook's config file: name, labels, min, max, standby, runners_per_instance, ephemeral (one job per runner; needs github), runner_group_id / runner_group (the runner group JIT runners join, and its name for `runs-on: group:`) and the Auto Scaling Group name (aws_asg) serving the pool. A job goes to the first pool that has all its labels."
  type = list(object({
    name                 = string
    labels               = list(string)
    min                  = optional(number, 0)
    max                  = number
    standby              = optional(number, 0)
    runners_per_instance = optional(number, 1)
    aws_asg              = string
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

  # Names, labels and bounds are validated in ../modules/pool-config; the fleet id here.
  validation {
    condition     = alltrue([for p in var.pools : can(regex("^[^\\s:*]{1,255}$", p.aws_asg))])
    error_message = "pools[*].aws_asg: an Auto Scaling Group name (no spaces, ':' or '*'); the IAM policy is scoped to exactly these groups."
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
  description = "Largest accepted delivery body in bytes, or null for scalehook's default (1 MiB; workflow_job payloads are 8-14 KB)."
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

# ---- Ledger table -----------------------------------------------------------------------

variable "point_in_time_recovery" {
  description = "Enable DynamoDB point-in-time recovery on the ledger table. The ledger is rebuilt by deliveries and reconcile, so it is optional; it costs little for a table this small."
  type        = bool
  default     = true
}

variable "table_kms_key_arn" {
  description = "Optional customer-managed KMS key ARN for the ledger table. null: DynamoDB's default encryption with an AWS owned key."
  type        = string
  default     = null
}

# ---- Webhook secret: exactly one of the three sources -----------------------------------

variable "webhook_secret" {
  description = "The GitHub webhook secret. The module stores it in a Secrets Manager secret through a write-only argument, so it is never in the Terraform state nor in the Lambda environment. Several secrets, one per line with the current first, allow rotation. Leave null when using webhook_secret_ssm_parameter_name or webhook_secret_arn."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.webhook_secret == null || try(length(trimspace(var.webhook_secret)) >= 16, false)
    error_message = "webhook_secret: use a random secret of at least 16 characters (e.g. `openssl rand -hex 32`)."
  }
}

variable "webhook_secret_version" {
  description = "Bump this number whenever the secret changes (webhook_secret, or the value in your own parameter or secret): write-only values are not compared, so the version is what makes Terraform write the new value; it is also set on the function (SCALEHOOK_WEBHOOK_SECRET_VERSION), which retires warm instances still holding the old secret."
  type        = number
  default     = 1

  validation {
    condition     = var.webhook_secret_version >= 1 && floor(var.webhook_secret_version) == var.webhook_secret_version
    error_message = "webhook_secret_version: a whole number, at least 1."
  }
}

variable "webhook_secret_ssm_parameter_name" {
  description = "Name of an existing SSM SecureString parameter that holds the secret (one per line, current first). The function may read only that parameter."
  type        = string
  default     = null
}

variable "webhook_secret_arn" {
  description = "ARN of an existing Secrets Manager secret holding the webhook secret. The function may read only that secret."
  type        = string
  default     = null

  validation {
    condition     = var.webhook_secret_arn == null || can(regex("^arn:[^:]+:secretsmanager:", var.webhook_secret_arn))
    error_message = "webhook_secret_arn: a Secrets Manager secret ARN (arn:aws:secretsmanager:...)."
  }
}

variable "secret_kms_key_arn" {
  description = "Customer-managed KMS key ARN that encrypts the secret (the created or the existing parameter, or the Secrets Manager secret); the function is granted kms:Decrypt on it alone. null: the AWS managed key, which needs no grant."
  type        = string
  default     = null
}

# ---- GitHub App key and JIT provisioning ------------------------------------------------

variable "github_app_key_ssm_parameter_name" {
  description = "Name of an existing SSM SecureString parameter holding the GitHub App's private key (PEM). Needed with github; set this or github_app_key_secret_arn. The function may read only that parameter."
  type        = string
  default     = null
}

variable "github_app_key_secret_arn" {
  description = "ARN of an existing Secrets Manager secret holding the GitHub App's private key (PEM). Needed with github; set this or github_app_key_ssm_parameter_name. The function may read only that secret."
  type        = string
  default     = null

  validation {
    condition     = var.github_app_key_secret_arn == null || can(regex("^arn:[^:]+:secretsmanager:", var.github_app_key_secret_arn))
    error_message = "github_app_key_secret_arn: a Secrets Manager secret ARN (arn:aws:secretsmanager:...)."
  }
}

variable "github_app_key_kms_key_arn" {
  description = "Customer-managed KMS key ARN that encrypts the App key's parameter or secret; the function is granted kms:Decrypt on it alone. null: the AWS managed key."
  type        = string
  default     = null
}

variable "jit_parameter_prefix" {
  description = "SSM path of the JIT runner configurations (SCALEHOOK_JIT_PARAMETER_PREFIX): the same as the runner modules' jit_parameter_prefix (infra/aws/runners). With github, the function may write, tag and delete parameters under it (iam.tf)."
  type        = string
  default     = "/scalehook/jit"

  validation {
    condition     = can(regex("^(/[A-Za-z0-9_.-]+)+$", var.jit_parameter_prefix))
    error_message = "jit_parameter_prefix: an SSM path such as /scalehook/jit (no trailing slash)."
  }
}

variable "launch_event_max_age_seconds" {
  description = "How long Lambda keeps retrying a failed launch lifecycle event (the `launch` alias's asynchronous invocations, two retries at most). Keep it at most the runner modules' lifecycle_heartbeat_seconds: past the heartbeat the instance is abandoned and a retry has nothing to finish."
  type        = number
  default     = 300

  validation {
    condition     = var.launch_event_max_age_seconds >= 60 && var.launch_event_max_age_seconds <= 21600
    error_message = "launch_event_max_age_seconds: between 60 and 21600 (Lambda's bounds)."
  }
}

variable "jit_kms_key_arn" {
  description = "Customer managed KMS key scalehook encrypts the JIT runner parameters with (SCALEHOOK_JIT_KMS_KEY_ID); the function may use it for SSM encryptions of parameters under jit_parameter_prefix only. Give the runner modules the same key as kms_key_arn, so their instances may decrypt. null: the account's AWS managed key alias/aws/ssm."
  type        = string
  default     = null

  validation {
    condition     = var.jit_kms_key_arn == null || can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/", var.jit_kms_key_arn))
    error_message = "jit_kms_key_arn: a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>); an alias does not work in the key policy conditions."
  }
}

# ---- Alarms -----------------------------------------------------------------------------

variable "create_sns_topic" {
  description = "Create an SNS topic for the alarms (subscribe to it yourself, or list addresses in alarm_emails)."
  type        = bool
  default     = false
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the created SNS topic (each must confirm the subscription). Needs create_sns_topic = true."
  type        = list(string)
  default     = []
}

variable "alarm_actions" {
  description = "Existing SNS topic (or other alarm action) ARNs notified when an alarm fires and clears, in addition to the created topic."
  type        = list(string)
  default     = []
}

variable "sns_kms_key_arn" {
  description = "Customer-managed KMS key for the created SNS topic. Its key policy must let cloudwatch.amazonaws.com use it; the AWS managed alias/aws/sns key cannot be used by CloudWatch alarms. null: no encryption at rest."
  type        = string
  default     = null
}

variable "signature_failure_threshold" {
  description = "Alarm when more signature failures than this arrive in 5 minutes (a rotated secret not set in GitHub, or someone probing the URL)."
  type        = number
  default     = 10
}

variable "below_desired_alarm_minutes" {
  description = "Alarm when a pool's group has had fewer instances in service than desired for this many minutes (launches failing or slow). Needs group metrics collection on the groups (GroupDesiredCapacity, GroupInServiceInstances); set it above your instances' boot time."
  type        = number
  default     = 15

  validation {
    condition     = var.below_desired_alarm_minutes >= 5 && var.below_desired_alarm_minutes <= 1440 && floor(var.below_desired_alarm_minutes) == var.below_desired_alarm_minutes
    error_message = "below_desired_alarm_minutes: a whole number from 5 to 1440."
  }
}

variable "cloudfront_web_acl_arn" {
  description = "Edge protection: the ARN of an AWS WAF web ACL of scope CLOUDFRONT (created in us-east-1) to put in front of the webhook. When set, a CloudFront distribution fronts the function URL or HTTP API with this web ACL and webhook_url points at it. AWS WAF does not attach to HTTP APIs or function URLs themselves. null: no CloudFront."
  type        = string
  default     = null

  validation {
    condition     = var.cloudfront_web_acl_arn == null || can(regex("^arn:aws[a-z-]*:wafv2:us-east-1:[0-9]{12}:global/webacl/", var.cloudfront_web_acl_arn))
    error_message = "cloudfront_web_acl_arn: a WAFv2 web ACL of scope CLOUDFRONT (arn:aws:wafv2:us-east-1:<account>:global/webacl/...)."
  }
}

variable "at_max_alarm_periods" {
  description = "Alarm when a pool has been at its max with jobs queued for this many consecutive reconcile intervals."
  type        = number
  default     = 3
}

variable "runbook_url" {
  description = "Where alert descriptions point operators: scalehook's runbook (docs/runbook.md), e.g. its URL in your fork or wiki; section anchors are appended."
  type        = string
  default     = "docs/runbook.md"
}

variable "github_rate_limit_alarm_threshold" {
  description = "With github: alarm when the App installation's x-ratelimit-remaining stays below this for 10 minutes of reconcile passes. Default 500, 10 % of an installation's hourly budget on github.com (5000); scale it with a larger budget (e.g. 1500 for Enterprise Cloud's 15000)."
  type        = number
  default     = 500

  validation {
    condition     = var.github_rate_limit_alarm_threshold > 0
    error_message = "github_rate_limit_alarm_threshold: a positive number of requests."
  }
}
