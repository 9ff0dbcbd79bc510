# A complete scalehook deployment on AWS: two runner Auto Scaling Groups and the module.
#
#   make lambda-zip                              # builds target/lambda/scalehook-arm64.zip
#   export TF_VAR_webhook_secret=$(openssl rand -hex 32)
#   terraform init && terraform apply
#   terraform output webhook_url                 # paste into GitHub with the same secret
#
# Runner instances must register with a runner name that contains their EC2 instance id
# (e.g. `--name "$(ec2-metadata -i | cut -d' ' -f2)"`) so scalehook can tell busy instances
# from idle ones and never removes a busy one.

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

variable "runner_ami_id" {
  description = "AMI of the runner instances (an image with the Actions runner that registers itself at boot)."
  type        = string
}

variable "runner_subnet_ids" {
  description = "Private subnets for the runner instances."
  type        = list(string)
}

resource "aws_launch_template" "runner" {
  name_prefix   = "github-runner-"
  image_id      = var.runner_ami_id
  instance_type = "m7g.large"

  metadata_options {
    http_tokens = "required"
  }
}

# The runner groups. scalehook owns desired_capacity from now on:
#
# WARNING: do not attach CPU- or target-tracking scaling policies to these groups. They would
# fight the webhook's capacity (scaling in instances that wait for a job, scaling out on
# builds that are already served) and scalehook would undo them on the next delivery.
#
# WARNING: ignore desired_capacity drift. scalehook changes it all day; without
# ignore_changes every `terraform apply` would reset the groups to the value below and
# could remove instances that run jobs.
resource "aws_autoscaling_group" "linux_x64" {
  name                = "github-runners-linux-x64"
  min_size            = 0
  max_size            = 20
  desired_capacity    = 1
  vpc_zone_identifier = var.runner_subnet_ids

  launch_template {
    id      = aws_launch_template.runner.id
    version = "$Latest"
  }

  # New instances may be removed by scalehook only once idle; it protects busy ones.
  protect_from_scale_in = true

  tag {
    key                 = "scalehook-pool"
    value               = "linux-x64"
    propagate_at_launch = true
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

resource "aws_autoscaling_group" "linux_gpu" {
  name                = "github-runners-linux-gpu"
  min_size            = 0
  max_size            = 4
  desired_capacity    = 0
  vpc_zone_identifier = var.runner_subnet_ids

  launch_template {
    id      = aws_launch_template.runner.id
    version = "$Latest"
  }

  protect_from_scale_in = true

  tag {
    key                 = "scalehook-pool"
    value               = "linux-gpu"
    propagate_at_launch = true
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

module "scalehook" {
  source = "../../aws"

  name            = "scalehook"
  lambda_zip_path = "${path.root}/../../../target/lambda/scalehook-arm64.zip"
  architecture    = "arm64"

  # Mirrors scalehook's [[pools]]; a pool's max should not exceed its group's max_size.
  pools = [
    {
      name                 = "linux-gpu"
      labels               = ["self-hosted", "linux", "gpu"]
      min                  = 0
      max                  = 4
      standby              = 0
      runners_per_instance = 1
      aws_asg              = aws_autoscaling_group.linux_gpu.name
    },
    {
      name                 = "linux-x64"
      labels               = ["self-hosted", "linux", "x64"]
      min                  = 0
      max                  = 20
      standby              = 1
      runners_per_instance = 1
      aws_asg              = aws_autoscaling_group.linux_x64.name
    },
  ]
  allowed_organizations = ["my-org"]

  webhook_secret         = var.webhook_secret
  webhook_secret_version = 1

  reconcile_interval_minutes = 5
  create_sns_topic           = true
  alarm_emails               = ["platform-oncall@example.com"]

  tags = { service = "scalehook" }
}

output "webhook_url" {
  description = "Payload URL for the GitHub webhook."
  value       = module.scalehook.webhook_url
}

output "alarm_names" {
  description = "The CloudWatch alarms to watch."
  value       = module.scalehook.alarm_names
}
