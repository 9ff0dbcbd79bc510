# ---- The pool -----------------------------------------------------------------------------

variable "pool" {
  description = "Name of the scalehook pool these runners serve (the `name` of its [[pools]] entry): the group, role and rule are named after it, and runners are named `<pool>-<instance id>`."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,40}$", var.pool))
    error_message = "pool: 1-40 letters, digits, '-', '_' or '.' (scalehook's pool name rules, short enough for IAM names)."
  }
}

variable "name_prefix" {
  description = "Prefix of the names this module creates (`<prefix>-<pool>`): the Auto Scaling group, the instance role and profile, the launch template and the EventBridge rule."
  type        = string
  default     = "github-runners"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,20}$", var.name_prefix))
    error_message = "name_prefix: 1-20 letters, digits, '-' or '_'."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates (and propagated to the instances)."
  type        = map(string)
  default     = {}
}

# ---- Instances ----------------------------------------------------------------------------

variable "ami_id" {
  description = "AMI of the runner instances. Its architecture must match instance_type and the pool's labels (x64 labels: an x86_64 AMI and an x86_64 type). It needs bash, curl, tar, sha256sum, iptables, the AWS CLI (Amazon Linux 2023 has all) and the runner's dependencies; the runner itself may be pre-baked in runner_dir or downloaded (runner_package)."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type. x86_64 pools: e.g. m7i.large (not m7g.*, which is arm64 Graviton); GPU pools: e.g. g6.xlarge with a GPU AMI."
  type        = string
}

variable "warm_pool" {
  description = "Keep `size` instances ready in the group's warm pool (Auto Scaling warm pools): launched, runner installed, then `pool_state` Stopped (pay for EBS only) or Hibernated (memory kept; needs a root volume larger than the RAM and an AMI and type that support hibernation). A warm instance holds no runner configuration: scalehook mints it when scale-out takes the instance. Used instances never return to the pool (reuse_on_scale_in = false). Set the pool's `warm_pool` in scalehook's configuration to the same size. null: no warm pool. A pool is either warm or spot (Auto Scaling allows no warm pool with a mixed instances policy)."
  type = object({
    size       = number
    pool_state = optional(string, "Stopped")
  })
  default = null

  validation {
    condition     = var.warm_pool == null || try(var.warm_pool.size >= 1 && var.warm_pool.size <= var.max_size && contains(["Stopped", "Hibernated"], var.warm_pool.pool_state), false)
    error_message = "warm_pool: size between 1 and max_size, pool_state Stopped or Hibernated."
  }

  validation {
    condition     = var.warm_pool == null || var.spot == null
    error_message = "warm_pool and spot: choose one (Auto Scaling allows no warm pool on a group with a mixed instances policy or Spot Instances)."
  }
}

variable "spot" {
  description = "Run the pool on Spot Instances through a mixed instances policy: several `instance_types` of one size class (instance_type comes first; more types, more Spot capacity pools), the price-capacity-optimized allocation strategy, and `on_demand_base` instances on demand first. Name an on-demand `overflow` pool in scalehook's configuration for the times Spot capacity cannot be had. null: on demand only."
  type = object({
    instance_types                  = list(string)
    on_demand_base                  = optional(number, 0)
    on_demand_percentage_above_base = optional(number, 0)
  })
  default = null

  validation {
    condition     = var.spot == null || try(length(var.spot.instance_types) >= 1 && var.spot.on_demand_base >= 0 && var.spot.on_demand_percentage_above_base >= 0 && var.spot.on_demand_percentage_above_base <= 100, false)
    error_message = "spot: at least one instance type, on_demand_base >= 0, on_demand_percentage_above_base between 0 and 100."
  }
}

variable "subnet_ids" {
  description = "Subnets of the runner instances (private subnets with a NAT or VPC endpoints for SSM and GitHub)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids: at least one subnet."
  }
}

variable "security_group_ids" {
  description = "Security groups of the runner instances: outbound HTTPS to GitHub and the SSM endpoint; no inbound rule is needed."
  type        = list(string)
  default     = []
}

variable "root_volume_gb" {
  description = "Size of the encrypted gp3 root volume in GB."
  type        = number
  default     = 64

  validation {
    condition     = var.root_volume_gb >= 8 && var.root_volume_gb <= 16384
    error_message = "root_volume_gb: between 8 and 16384."
  }
}

variable "root_device_name" {
  description = "Root device name of the AMI (/dev/xvda for Amazon Linux, /dev/sda1 for Ubuntu)."
  type        = string
  default     = "/dev/xvda"
}

variable "min_size" {
  description = "Minimum size of the group (scalehook's pool min should not be lower)."
  type        = number
  default     = 0
}

variable "max_size" {
  description = "Maximum size of the group: the pool's max in scalehook's configuration should not exceed it."
  type        = number
}

# ---- The runner ---------------------------------------------------------------------------

variable "jit_parameter_prefix" {
  description = "SSM path under which scalehook writes each instance's JIT runner configuration (`<prefix>/<instance id>`). Must match scalehook's SCALEHOOK_JIT_PARAMETER_PREFIX (default /scalehook/jit)."
  type        = string
  default     = "/scalehook/jit"

  validation {
    condition     = can(regex("^(/[A-Za-z0-9_.-]+)+$", var.jit_parameter_prefix))
    error_message = "jit_parameter_prefix: an SSM path such as /scalehook/jit (no trailing slash)."
  }
}

variable "kms_key_arn" {
  description = "The customer managed KMS key the JIT parameters are encrypted with: the scalehook module's jit_kms_key_arn (which makes scalehook encrypt with it, SCALEHOOK_JIT_KMS_KEY_ID); this module lets the instances decrypt their own parameter with it. null (and jit_kms_key_arn null): the account's AWS managed key alias/aws/ssm, whose key policy already lets SSM use it for principals allowed to read the parameter."
  type        = string
  default     = null
}

variable "runner_wait_seconds" {
  description = "How long a new instance waits for its JIT configuration before it powers off (and the group replaces it). Keep it above lifecycle_heartbeat_seconds."
  type        = number
  default     = 600

  validation {
    condition     = var.runner_wait_seconds >= 30 && var.runner_wait_seconds <= 3600
    error_message = "runner_wait_seconds: between 30 and 3600."
  }
}

variable "runner_package" {
  description = "Download the GitHub Actions runner at boot: `url` (a pinned release, e.g. https://github.com/actions/runner/releases/download/v2.X.Y/actions-runner-linux-x64-2.X.Y.tar.gz) and its `sha256` from the release notes. null: the runner is pre-baked in runner_dir."
  type = object({
    url    = string
    sha256 = string
  })
  default = null

  validation {
    condition     = var.runner_package == null || try(can(regex("^[0-9a-f]{64}$", var.runner_package.sha256)) && startswith(var.runner_package.url, "https://"), false)
    error_message = "runner_package: an https url and a 64-hex-digit sha256."
  }
}

variable "runner_dir" {
  description = "Where the runner is (pre-baked) or goes (downloaded)."
  type        = string
  default     = "/opt/actions-runner"
}

variable "runner_user" {
  description = "Unprivileged user the runner and its jobs run as (created at boot if the image lacks it)."
  type        = string
  default     = "runner"
}

variable "block_imds_for_runner" {
  description = "Deny the runner user (its jobs) the instance metadata service, so jobs never get the instance role's credentials. Turn off only if jobs need the instance role."
  type        = bool
  default     = true
}

variable "allow_privileged_runner_user" {
  description = "Start the runner even if its user (an image's existing user) is root, in sudo/wheel/admin/docker/lxd/adm, or has sudo rights. Off, the boot script refuses such a user and the instance powers off. On, a job can become root (or run a root container on the host network) and remove the metadata-service block, so it can use the instance's credentials (read and delete the pool's pending JIT parameters). Turn on only for pools whose jobs are trusted with that."
  type        = bool
  default     = false
}

# ---- Provisioning through scalehook ---------------------------------------------------------

variable "scalehook_function_arn" {
  description = "ARN of scalehook's Lambda function, unqualified (module output function_arn): the launch lifecycle events of this group are delivered to its scalehook_launch_alias."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]+$", var.scalehook_function_arn))
    error_message = "scalehook_function_arn: the function's unqualified ARN (arn:aws:lambda:<region>:<account>:function:<name>), the scalehook module's function_arn."
  }
}

variable "scalehook_launch_alias" {
  description = "The function's alias for launch events (module output launch_alias_name), whose asynchronous invocations are retried. Pass the output, not the literal: it orders this module after the alias."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_-]{0,127}$", var.scalehook_launch_alias))
    error_message = "scalehook_launch_alias: an alias name, the scalehook module's launch_alias_name."
  }
}

variable "lifecycle_heartbeat_seconds" {
  description = "How long a new instance waits in Pending:Wait for scalehook to provision it; with no answer it is abandoned (terminated, and the group launches another)."
  type        = number
  default     = 300

  validation {
    condition     = var.lifecycle_heartbeat_seconds >= 30 && var.lifecycle_heartbeat_seconds <= 7200
    error_message = "lifecycle_heartbeat_seconds: between 30 and 7200 (Auto Scaling's bounds)."
  }
}
