# A complete scalehook deployment on AWS: two runner pools (x86_64 and GPU) from
# infra/aws/runners, and the scalehook module. README.md, "From zero to a job running on
# AWS", walks through it, the GitHub App included.
#
#   make lambda-zip                              # builds target/lambda/scalehook-arm64.zip
#   export TF_VAR_webhook_secret=$(openssl rand -hex 32)
#   aws ssm put-parameter --name /scalehook/github-app-key --type SecureString \
#     --value "$(cat my-app.private-key.pem)"   # the App's private key, never in Terraform
#   terraform init && terraform apply -var runner_version=<v> -var runner_sha256=<sha256> \
#     -var github_app_id=<App id> -var github_installation_id=<installation id> \
#     -var 'runner_subnet_ids=["subnet-<a>","subnet-<b>"]' -var gpu_runner_group_id=<id>
#   terraform output webhook_url                 # the App's webhook URL, with the same secret
#                                                # (or an org/repo webhook's: then set hook_id)
#
# Nothing registers runners by hand: for each instance a group launches, scalehook mints an
# ephemeral just-in-time runner named `<pool>-<instance id>` with the pool's labels, and the
# instance's boot script (runner/aws/boot.sh) picks it up, runs one job and powers off.

terraform {
  required_version = ">= 1.11"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.28, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region of the runners and of scalehook."
  type        = string
  default     = "eu-west-1"
}

variable "webhook_secret" {
  description = "GitHub webhook secret (set TF_VAR_webhook_secret); never written to the state."
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

variable "runner_subnet_ids" {
  description = "Private subnets for the runner instances (outbound HTTPS to GitHub and SSM)."
  type        = list(string)
}

variable "gpu_runner_group_id" {
  description = "Id of the organization's runner group for the GPU runners (create it in the organization's Actions settings, give it the repositories that use GPUs): its own group keeps CPU jobs off the GPU instances."
  type        = number
}

variable "runner_version" {
  description = "GitHub Actions runner release the instances download at boot, pinned (e.g. 2.330.0)."
  type        = string
}

variable "runner_sha256" {
  description = "SHA-256 of actions-runner-linux-x64-<runner_version>.tar.gz, from the release notes; the boot script refuses any other file."
  type        = string
}

# x86_64 images: Amazon Linux 2023 for the general pool, and the Deep Learning Base AMI with
# the NVIDIA driver (Amazon Linux 2023) for the GPU pool. Both have bash, curl and the AWS CLI.
data "aws_ssm_parameter" "al2023_x64" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

data "aws_ssm_parameter" "gpu_x64" {
  name = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
}

locals {
  runner_package = {
    url    = "https://github.com/actions/runner/releases/download/v${var.runner_version}/actions-runner-linux-x64-${var.runner_version}.tar.gz"
    sha256 = var.runner_sha256
  }
}

# The runner groups (infra/aws/runners): each has a launch template whose user data waits
# for the instance's own JIT runner configuration, an instance role that can read only that,
# and a launch lifecycle hook delivered to scalehook. scalehook owns desired_capacity:
#
# WARNING: do not attach CPU- or target-tracking scaling policies to these groups. They would
# fight the webhook's capacity (scaling in instances that wait for a job, scaling out on
# builds that are already served) and scalehook would undo them on the next delivery.
#
# WARNING: ignore desired_capacity drift (the module does: lifecycle { ignore_changes =
# [desired_capacity] }); without it every `terraform apply` would reset the groups and could
# remove instances that run jobs.
module "runners_linux_x64" {
  source = "../../aws/runners"

  pool           = "linux-x64"
  ami_id         = data.aws_ssm_parameter.al2023_x64.insecure_value
  instance_type  = "m7i.large" # x86_64 (m7g.* is arm64 Graviton: its runner would be ARM64)
  subnet_ids     = var.runner_subnet_ids
  max_size       = 20
  runner_package = local.runner_package

  scalehook_function_arn = module.scalehook.function_arn
  scalehook_launch_alias = module.scalehook.launch_alias_name
  tags                   = { service = "scalehook" }
}

module "runners_linux_gpu" {
  source = "../../aws/runners"

  pool           = "linux-gpu"
  ami_id         = data.aws_ssm_parameter.gpu_x64.insecure_value
  instance_type  = "g6.xlarge" # one NVIDIA L4, x86_64
  subnet_ids     = var.runner_subnet_ids
  max_size       = 4
  root_volume_gb = 128
  runner_package = local.runner_package

  scalehook_function_arn = module.scalehook.function_arn
  scalehook_launch_alias = module.scalehook.launch_alias_name
  tags                   = { service = "scalehook" }
}

module "scalehook" {
  source = "../../aws"

  name            = "scalehook"
  lambda_zip_path = "${path.root}/../../../target/lambda/scalehook-arm64.zip"
  architecture    = "arm64"

  # Mirrors scalehook's [[pools]]; a pool's max should not exceed its group's max_size.
  # scalehook routes a job to the first pool having all its labels, but GitHub gives it to
  # any idle runner of the job's runner groups having all its labels: the GPU runners' labels
  # contain the x64 pool's, so they join a runner group of their own (gpu_runner_group_id)
  # and `[self-hosted, linux, x64]` jobs never take a GPU instance. scalehook refuses pools
  # whose labels contain another pool's in one runner group (docs/configuration.md).
  pools = [
    {
      name                 = "linux-x64"
      labels               = ["self-hosted", "linux", "x64"]
      min                  = 0
      max                  = 20
      standby              = 1
      runners_per_instance = 1
      aws_asg              = "github-runners-linux-x64"
      # One job per instance: the runner exits after it and the instance powers off.
      ephemeral = true
    },
    {
      name                 = "linux-gpu"
      labels               = ["self-hosted", "linux", "x64", "gpu"]
      min                  = 0
      max                  = 4
      standby              = 0
      runners_per_instance = 1
      aws_asg              = "github-runners-linux-gpu"
      ephemeral            = true
      runner_group_id      = var.gpu_runner_group_id
    },
  ]
  allowed_organizations = ["my-org"]

  webhook_secret         = var.webhook_secret
  webhook_secret_version = 1

  # The GitHub App: JIT runners for new instances, runner-safe scale-in, lost deliveries
  # repaired. Its key stays in SSM; the function may read that one parameter.
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
  github_app_key_ssm_parameter_name = "/scalehook/github-app-key"
  # The runner modules' jit_parameter_prefix (their default).
  jit_parameter_prefix = "/scalehook/jit"

  reconcile_interval_minutes = 5
  create_sns_topic           = true
  alarm_emails               = ["platform-oncall@example.com"]

  tags = { service = "scalehook" }
}

output "webhook_url" {
  description = "Payload URL of the GitHub App's webhook (App settings > Webhook), whose deliveries redelivery reads; or of the organization or repository webhook github.hook_id names."
  value       = module.scalehook.webhook_url
}

output "alarm_names" {
  description = "The CloudWatch alarms to watch."
  value       = module.scalehook.alarm_names
}
